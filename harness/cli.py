"""``python -m harness SUBCOMMAND ...``: the one entry point the Makefile calls.

The CLI only parses, validates and reports; the work is in runner.py (batches),
servers/ (the server table) and the modules other subcommands dispatch to.
Errors the user can fix are one line on stderr and an exit status — 2 for bad
input (unknown variant or spec, bad option), 1 when something needed is
missing (the C client, an interpreter, privileges), 130 after Ctrl-C/SIGTERM —
never a traceback.

The run settings' defaults live once, in ``runner.Settings``; argparse reads them
(sweep and soak override repeat and duration below), so ``make bench`` with no
variables, ``python -m harness bench`` and ``runner.run_batch`` behave the same
(the Makefile passes a flag only when its variable is set).  Server specs are parsed
once, here (``servers.parse_spec``), and travel as ``Spec`` objects.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys

from harness import cpubudget, runner
from harness.progress import Progress
from harness import servers as srv
from harness.servers import options as _server_options

# Subcommands implemented by other modules: name -> (module, leading argv, help).
DISPATCH = {
    "report": ("harness.report", [], "charts and REPORT.md from results/"),
    "profile": ("harness.profile", [], "line_profiler run of a variant's server"),
    "syscalls": ("harness.syscalls", [], "system calls per connection (strace -c)"),
    "reproduce": ("harness.reproduce", [], "rerun the study's comparisons, write REPRODUCTION.md"),
    "twohost-serve": ("harness.twohost", ["serve"],
                      "two-host mode, server machine: a server until Ctrl-C (make twohost-serve)"),
    "twohost-load": ("harness.twohost", ["load"],
                     "two-host mode, client machine: one load run (make twohost-load)"),
}
# Old names of the two-host subcommands, still accepted with a one-line note.
DEPRECATED = {"serve-run": "twohost-serve", "load-run": "twohost-load"}

EXIT_USAGE, EXIT_MISSING, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    pass


def _die(msg: str, code: int) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0: {text!r}")
    return v


# The servers' argparse types, written once (a finite number of seconds >= 0; int >= 1).
_nonneg_float = _server_options.seconds
_positive_int = _server_options.positive_int


def _diet(text):
    """--diet alone (True: each server's full set of levers) or --diet=L1+L2 (a tuple)."""
    if text is True:
        return True
    levers = _server_options.split_levers(text)
    bad = [lv for lv in levers if lv not in _server_options.LEVERS]
    if bad or not levers:
        raise argparse.ArgumentTypeError(f"unknown diet lever {', '.join(bad) or repr(text)}; "
                                         f"levers: {', '.join(_server_options.LEVERS)}")
    return tuple(lv for lv in _server_options.LEVERS if lv in levers)


_DIET_HELP = ("the syscall diet: alone, every lever each server supports; =L1+L2 those levers "
              f"where supported ({', '.join(_server_options.LEVERS)})")


def _server_cpu(text):
    try:
        return cpubudget.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# The CPU budget bench and compare use when none is given (SERVER_CPU=): 0.4 core keeps
# the C load client below ~80 % of its core even against the fastest server here
# (c_epoll), so every server of the default comparison is the bottleneck of its runs.
# See docs/performance.md ("Server-bound runs") for the measurements behind it.
DEFAULT_SERVER_CPU = 0.4


def _rate(text):
    text = text.strip().lower()
    mult = 1000 if text.endswith("k") else 1
    return _positive_float(text[:-1] if mult > 1 else text) * mult


def _link_value(parser_name: str):
    """argparse type for --delay/--loss: harness.link's parser, its message on error."""
    def convert(text):
        from harness import link
        try:
            return getattr(link, parser_name)(text)[0]
        except link.LinkError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parser_name.replace("parse_", "")
    return convert


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit 2 (its default, kept)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see --help)\n")


_DEFAULTS = runner.Settings()        # the run settings' defaults (one home: runner.Settings)


def _common(p: argparse.ArgumentParser, *, duration: float = _DEFAULTS.duration,
            repeat: int = _DEFAULTS.repeat) -> None:
    d = _DEFAULTS
    g = p.add_argument_group("benchmark options")
    g.add_argument("--link", default=d.link,
                   help="loopback (default), 1000mbit, 100mbit or any rate such as 20mbit")
    g.add_argument("--repeat", type=_positive_int, default=repeat,
                   help=f"interleaved rounds (default {repeat})")
    g.add_argument("--duration", type=_positive_float, default=duration,
                   help=f"measured seconds per run (default {duration:g})")
    g.add_argument("--warmup", type=_nonneg_float, default=d.warmup,
                   help=f"warm-up seconds excluded (default {d.warmup:g})")
    g.add_argument("--concurrency", type=_positive_int, default=d.concurrency,
                   help=f"connections in flight, closed loop (default {d.concurrency})")
    g.add_argument("--size", type=_positive_int, default=d.size,
                   help=f"bytes echoed per connection (default {d.size})")
    g.add_argument("--rate", type=_rate, default=None,
                   help="open loop: new connections per second (e.g. 20000 or 20k)")
    g.add_argument("--delay", type=_link_value("parse_delay"), default=None,
                   help="one-way link delay, e.g. 5ms (netem, else the delay line; needs --link)")
    g.add_argument("--loss", type=_link_value("parse_loss"), default=None,
                   help="random packet loss each direction, e.g. 1%% (needs --link)")
    g.add_argument("--python", default=None,
                   help="interpreter for the Python servers, e.g. python3.13 (default: the venv's)")
    g.add_argument("--diet", nargs="?", const=True, default=False, type=_diet, metavar="LEVERS",
                   help=_DIET_HELP)
    g.add_argument("--pool", choices=("faithful", "oneshot"), default=None,
                   help="mul_thread pool mode: faithful (the study's) or oneshot (improved)")
    g.add_argument("--timeout-ms", type=_positive_int, default=d.timeout_ms,
                   help=f"per-connection timeout (default {d.timeout_ms})")
    g.add_argument("--close", dest="close_mode", choices=("fin", "rst"), default=d.close_mode,
                   help="client close mode: fin (default) or rst (SO_LINGER 0)")
    g.add_argument("--idle-timeout", type=_nonneg_float, default=None,
                   help="server idle timeout in seconds (default: the server's, 10)")
    g.add_argument("--results-dir", default=None,
                   help="where runs are written (default results/, or $EVENTS_RESULTS_DIR)")
    g.add_argument("--server-cpu", type=_server_cpu, default=None, metavar="F|auto|off",
                   help="hold each server to F cores (its own cgroup with a CFS quota), so conn/s "
                        "measures the server; auto: calibrate so the client stays <= 70%% busy; "
                        f"off: no budget (default for bench/compare: {DEFAULT_SERVER_CPU:g} when "
                        "the machine allows it and no --rate is given, else off)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m harness",
                description="Events benchmark harness: servers, the load client, batches and reports.")
    sub = p.add_subparsers(dest="cmd", metavar="SUBCOMMAND", parser_class=_Parser)

    s = sub.add_parser("serve", help="run one echo server in the foreground")
    s.add_argument("spec", help=f"server spec NAME[:key=value,...]; names: {srv.valid_names()}")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0, help="0 = any free port (READY gives it)")
    s.add_argument("--size", type=_positive_int, default=100)
    s.add_argument("--idle-timeout", type=_nonneg_float, default=None)
    s.add_argument("--python", default=None)
    s.add_argument("--diet", nargs="?", const=True, default=False, type=_diet, metavar="LEVERS",
                   help=_DIET_HELP)
    s.add_argument("--server-cpu", type=_server_cpu, default=None, metavar="F|off",
                   help="hold the server to F cores (its own cgroup with a CFS quota; default off)")

    lo = sub.add_parser("load", help="run the C load client in the foreground, with a summary")
    lo.add_argument("--host", default="127.0.0.1")
    lo.add_argument("--port", type=int, required=True)
    lo.add_argument("--concurrency", type=_positive_int, default=64)
    lo.add_argument("--size", type=_positive_int, default=100)
    g = lo.add_mutually_exclusive_group()
    g.add_argument("--duration", type=_positive_float, default=None, help="seconds (default 10)")
    g.add_argument("--count", type=_positive_int, default=None, help="connections")
    lo.add_argument("--rate", type=_rate, default=None)
    lo.add_argument("--warmup", type=_nonneg_float, default=0.0)
    lo.add_argument("--timeout-ms", type=_positive_int, default=5000)
    lo.add_argument("--close", dest="close_mode", choices=("fin", "rst"), default="fin")
    lo.add_argument("--src-addrs", type=_positive_int, default=None)
    lo.add_argument("--run-id", default=None)
    lo.add_argument("--json", action="store_true", help="also print the client's FINAL JSON line")

    b = sub.add_parser("bench", help="a variant against raw_epoll, interleaved rounds")
    b.add_argument("--variant", default=None,
                   help=f"variant spec (default master); variants: {', '.join(srv.VARIANTS)}")
    _common(b)

    c = sub.add_parser("compare", help="any set of server specs, interleaved rounds")
    c.add_argument("--servers", default=None,
                   help=f"space-separated specs (default: {' '.join(runner.DEFAULT_SERVERS)}); "
                        "NAME@REV runs a variant's library at a git revision")
    c.add_argument("--loop", action="append", default=[], metavar="MODULE:ATTR",
                   help="also benchmark your own event loop class on the shared echo app")
    c.add_argument("--server-cmd", action="append", default=[], metavar="'COMMAND {port}'",
                   help="also benchmark any echo-protocol server started by this command")
    _common(c)

    w = sub.add_parser("sweep", help="open-loop sweep of offered rates: latency vs rate")
    w.add_argument("--variant", default=None, help="variant spec (default master)")
    w.add_argument("--servers", default=None,
                   help="specs to sweep instead (default: the variant and raw_epoll)")
    w.add_argument("--rates", default=None,
                   help="comma-separated offered rates (default 2k,5k,10k,15k,20k,25k,30k,40k)")
    _common(w, duration=5.0, repeat=1)

    k = sub.add_parser("soak", help="long runs: >= 1M connections, zero lost, flat RSS")
    k.add_argument("--variant", default=None, help="variant spec (default: all three in turn)")
    k.add_argument("--rss-interval", type=_positive_float, default=5.0, help="RSS sampling period (s)")
    k.add_argument("--min-connections", type=_positive_int, default=runner.SOAK_MIN_CONNECTIONS,
                   help="connections a variant must complete to pass (default 1,000,000)")
    _common(k, duration=600.0, repeat=1)

    for name, (_mod, _lead, help_) in DISPATCH.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


# --------------------------------------------------------------------------- helpers

def _parse(text: str) -> srv.Spec:
    """parse_spec, its errors (unknown name: it lists the valid ones; bad option) as usage errors."""
    try:
        return srv.parse_spec(text)
    except srv.ServerError as e:
        raise UsageError(str(e)) from None


def _variant(text: str | None, default: str = "master") -> srv.Spec:
    text = (text or default).strip()
    spec = _parse(text)
    if spec.name not in srv.VARIANTS:
        raise UsageError(f"{spec.name!r} is not a variant; variants: {', '.join(srv.VARIANTS)} "
                         f"(use `compare --servers` for other servers)")
    return spec


def _specs(text: str | None, default) -> list[srv.Spec]:
    items = text.split() if text is not None else list(default)
    if not items:
        raise UsageError(f"no servers given: name one or more of {srv.valid_names()}")
    specs = [_parse(t) for t in items]
    texts = [s.text for s in specs]
    dup = sorted({t for t in texts if texts.count(t) > 1})
    if dup:
        raise UsageError(f"{', '.join(dup)} named twice: give each server once (rounds repeat with --repeat)")
    return specs


def _batch_kwargs(a, *, budget_default: bool = False) -> dict:
    if (a.delay or a.loss) and (a.link or "loopback").strip().lower() == "loopback":
        raise UsageError("--delay/--loss (DELAY/LOSS) need an emulated link, e.g. --link 100mbit: "
                         "the host's loopback is never delayed or made lossy")
    cores, mode = resolve_server_cpu(a.server_cpu, budget_default=budget_default and not a.rate)
    return dict(link=a.link, repeat=a.repeat, duration=a.duration, warmup=a.warmup,
                concurrency=a.concurrency, size=a.size, rate=a.rate, delay=a.delay, loss=a.loss,
                python=runner.resolve_python(a.python), timeout_ms=a.timeout_ms,
                close_mode=a.close_mode, results_dir=a.results_dir, idle_timeout=a.idle_timeout,
                server_cpu=cores, server_cpu_mode=mode)


def resolve_server_cpu(value, *, budget_default: bool, out=sys.stderr) -> tuple:
    """(cores, float or "auto" or None; mode) from --server-cpu.  Given explicitly, a budget
    the machine cannot apply is an error; as the command's default, it falls back to
    none with one line saying why (the runs are then flagged client-bound as before)."""
    if value == "off" or (value is None and not budget_default):
        return None, "off"
    if value is None:
        try:
            cpubudget.check()
        except cpubudget.BudgetError as e:
            print(f"note: running without a server CPU budget ({e}); fast servers will be "
                  f"client-bound (SERVER_CPU=off silences this)", file=out, flush=True)
            return None, "off"
        return DEFAULT_SERVER_CPU, "default"
    try:
        cpubudget.check()
    except cpubudget.BudgetError as e:
        raise runner.RunnerError(f"SERVER_CPU={value}: cannot hold the server to a CPU budget: {e}; "
                                 f"SERVER_CPU=off runs without one") from None
    return value, ("auto" if value == "auto" else "fixed")


def _preflight(specs: list[srv.Spec], python: str | None, *, skip: bool) -> list[srv.Spec]:
    """Check each server can run here; for compare, skip (and say so) those that cannot."""
    ok = []
    for spec in specs:
        try:
            srv.check_available(spec, python)
            ok.append(spec)
        except srv.ServerError as e:
            if not skip:
                raise
            print(f"skipping {spec.text}: {e}", file=sys.stderr)
    if not ok:
        raise runner.RunnerError("none of the servers can run here")
    return ok


def _parse_rates(text: str | None) -> list[float]:
    if not text:
        return [2000, 5000, 10000, 15000, 20000, 25000, 30000, 40000]
    try:
        rates = [_rate(x) for x in text.split(",") if x.strip()]
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"--rates: {e}") from None
    if not rates:
        raise UsageError("--rates: no rates given")
    for r in rates:
        _check_range("--rates", r)
    return sorted(rates)


# --------------------------------------------------------------------------- argument checks
# Everything is checked before any server starts or any file is written: bad input is one
# `error:` line and exit 2, never a run recorded as failed.

# Ranges the load client (harness/loadgen/loadgen.c) accepts: refused here, before any work.
RANGES = {
    "--repeat": (1, 1000), "--duration": (0, 1e7), "--warmup": (0, 1e7), "--concurrency": (1, 1_000_000),
    "--size": (1, 16 * 1024 * 1024), "--rate": (0, 1e8), "--rates": (0, 1e8), "--timeout-ms": (1, 3_600_000),
    "--idle-timeout": (0, 1e7), "--count": (1, 1 << 50), "--src-addrs": (1, 254),
    "--rss-interval": (0, 1e7), "--min-connections": (1, 1 << 50),
}


def _check_range(flag: str, value) -> None:
    lo, hi = RANGES[flag]
    if value is not None and not lo <= value <= hi:
        raise UsageError(f"{flag} {_fmt(value)} is out of range: use {_fmt(lo)} to {_fmt(hi)}")


def _fmt(x) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _check_link(text: str | None, delay: str | None) -> None:
    """--link must name loopback or a rate; --delay (its format checked by argparse) needs an
    emulated link."""
    from harness import link as linkmod
    try:
        spec = linkmod.parse(text)
    except linkmod.LinkError as e:
        raise UsageError(f"--link: {e}") from None
    if delay is None:
        return
    if not spec.emulated:
        raise UsageError(f"--delay {delay} needs an emulated link (e.g. --link 100mbit / LINK=100mbit): "
                         "latency is never added to the host's loopback")


def check_common(a, *, link: bool = True) -> None:
    """The options of ``_common`` (and any other numeric option present): ranges, link, delay,
    results folder. Raises UsageError. Used by every subcommand that runs the load client."""
    for flag in RANGES:
        value = getattr(a, flag[2:].replace("-", "_"), None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_range(flag, value)
    if link and hasattr(a, "link"):
        _check_link(a.link, getattr(a, "delay", None))
    rd = getattr(a, "results_dir", None)
    if rd is not None and (not rd.strip() or (os.path.exists(rd) and not os.path.isdir(rd))):
        raise UsageError(f"--results-dir {rd!r} is not a folder: give a folder (it is created if missing)")


def _check_applies(a, specs: list[srv.Spec]) -> list[srv.Spec]:
    """--pool changes only mul_thread specs: refuse it when there is none; a --diet lever
    no server takes is refused too.  Returns the specs with --diet/--pool applied."""
    names = ", ".join(p.text for p in specs)
    if a.pool and not any("pool" in srv.accepted_options(p.server) for p in specs):
        raise UsageError(f"--pool/POOL applies to mul_thread only, not to {names}")
    try:
        return runner.apply_options(specs, diet=a.diet, pool=getattr(a, "pool", None))
    except srv.ServerError as e:
        raise UsageError(f"--diet/DIET: {e}") from None


def check_host(host: str) -> None:
    """--host must be an address or a name that resolves (before any process starts)."""
    import socket
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host!r}: cannot resolve it ({getattr(e, 'strerror', None) or e}); "
                         "give an IP address or a host name") from None


def _check_args(a) -> None:
    """What argparse cannot say: ranges, link and delay, options that do not apply."""
    check_common(a)
    if a.cmd in ("serve", "load"):
        lo = 0 if a.cmd == "serve" else 1          # serve: 0 = any free port
        if not lo <= a.port <= 65535:
            raise UsageError(f"--port {a.port} is out of range: use {lo} to 65535")
        check_host(a.host)
    if a.cmd == "soak":
        for flag, given, why in (("--repeat/REPEAT", a.repeat != 1, "a soak is one long run per variant"),
                                 ("--rate/RATE", a.rate is not None, "a soak is a closed-loop run")):
            if given:
                raise UsageError(f"{flag} does not apply to soak: {why}; set its length with --duration/DURATION")
    if a.cmd == "sweep" and a.rate is not None:
        raise UsageError("sweep takes --rates a,b,c (RATES=...), not --rate/RATE")


# --------------------------------------------------------------------------- subcommands

def cmd_serve(a) -> int:
    spec = _parse(a.spec)
    if a.diet:
        try:
            spec = runner.apply_options([spec], diet=a.diet)[0]
        except srv.ServerError as e:
            raise UsageError(f"--diet: {e}") from None
    python = runner.resolve_python(a.python)
    srv.check_available(spec, python)
    argv = srv.command(spec, host=a.host, port=a.port, size=a.size,
                       idle_timeout=a.idle_timeout, python=python)
    if a.server_cpu == "auto":
        raise UsageError("serve --server-cpu auto: calibration needs the load client; give a number "
                         "of cores (e.g. 0.4) or off")
    if isinstance(a.server_cpu, float):
        return _serve_budgeted(spec, argv, a.server_cpu)
    # exec: the server *is* this process, so its READY/STATS lines, signals and
    # exit status reach the caller unchanged (no forwarding layer to get wrong).
    sys.stdout.flush()
    try:
        os.chdir(srv.workdir(spec))          # NAME@REV: the revision's variants first on sys.path
        os.execve(argv[0], argv, srv.env_for(spec.server, spec))
    except OSError as e:
        raise runner.RunnerError(f"cannot start {spec.text}: {e}") from None
    return 1  # not reached


def _serve_budgeted(spec, argv: list[str], cores: float) -> int:
    """``serve`` with a CPU budget: the server runs as our child inside its cgroup (not by
    exec, so that someone is left to remove the group when it exits); its output goes
    straight to ours, and SIGINT/SIGTERM are passed on to it."""
    import signal
    import subprocess
    try:
        ctl = cpubudget.check()
        cpubudget.cleanup_stale(ctl)
        group = cpubudget.Group(ctl, cores)
    except cpubudget.BudgetError as e:
        raise runner.RunnerError(f"SERVER_CPU={cores:g}: cannot hold the server to a CPU budget: {e}; "
                                 f"SERVER_CPU=off runs without one") from None
    proc = None
    old = {}
    try:
        def forward(signum, frame):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signum)
        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        print(f"serve: {spec.text} held to {cores:g} core ({ctl.describe()})", file=sys.stderr,
              flush=True)
        try:
            proc = subprocess.Popen(argv, env=srv.env_for(spec.server, spec), cwd=srv.workdir(spec),
                                    preexec_fn=cpubudget.preexec_cgroup(group.procs_file))
        except (OSError, subprocess.SubprocessError) as e:
            raise runner.RunnerError(f"cannot start {spec.text} in its cgroup: {e}") from None
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for sig, h in old.items():
            signal.signal(sig, h)
        if not group.remove():
            print(f"warning: cgroup {group.path} could not be removed", file=sys.stderr)


def format_final(f: dict) -> str:
    lat = f.get("latency_us") or {}
    fails = {k: v for k, v in (f.get("failures") or {}).items() if v}
    lost = (f.get("started_total") or 0) - (f.get("completed_total") or 0)
    share = f.get("client_cpu_share")
    return "\n".join([
        f"mode {f.get('mode')}, concurrency {f.get('concurrency')}, size {f.get('size')} B, "
        f"measured {f.get('measured_s')} s (warm-up {f.get('warmup_s')} s), close {f.get('close_mode')}",
        f"rate        {_num(f.get('conn_per_s'))} conn/s"
        + (f"  (offered {_num(f.get('rate'))}/s)" if f.get("rate") else ""),
        f"connections started {_num(f.get('started_total'))}, completed {_num(f.get('completed_total'))}, "
        f"failed {_num(f.get('failed_total'))}, lost {_num(lost)}"
        + (f"  failures: {', '.join(f'{k} {v}' for k, v in fails.items())}" if fails else ""),
        f"latency ms  p50 {_ms(lat.get('p50'))}  p90 {_ms(lat.get('p90'))}  p99 {_ms(lat.get('p99'))}  "
        f"p99.9 {_ms(lat.get('p999'))}  max {_ms(lat.get('max'))}",
        f"client CPU  {'?' if share is None else f'{share:.0%}'} of a core"
        + ("  (CLIENT-BOUND: the rate measures the client)"
           if share is not None and share >= runner.CLIENT_BOUND_SHARE else ""),
    ])


def _num(x) -> str:
    return "?" if x is None else f"{x:,.0f}"


def _ms(us) -> str:
    return "?" if us is None else f"{us / 1000:.2f}"


def cmd_load(a) -> int:
    loadgen = runner.check_loadgen()
    argv = runner.client_argv(loadgen, a.host, a.port, concurrency=a.concurrency, size=a.size,
                              duration=a.duration or (None if a.count else 10.0), warmup=a.warmup,
                              rate=a.rate, timeout_ms=a.timeout_ms, close_mode=a.close_mode,
                              run_id=a.run_id, count=a.count, src_addrs=a.src_addrs)
    prog = Progress(sys.stdout)
    total = f"/{(a.duration or 10) + a.warmup:g}s" if not a.count else ""

    def show(snap):
        prog.update(f"{snap.get('speed') or 0:,.0f} conn/s  t={snap.get('t', 0):.0f}s{total}  "
                    f"complete={snap.get('complete', 0):,}  failed={snap.get('failed', 0)}")

    timeout = (a.duration or 10) + a.warmup + a.timeout_ms / 1000 + 30
    if a.count:
        timeout = 24 * 3600     # bounded by the count; Ctrl-C stops it
    signals = runner._Signals().install()
    try:
        res = runner.run_client(argv, timeout=timeout, on_snapshot=show, signals=signals)
    except KeyboardInterrupt:
        prog.done()
        print("interrupted; the load client was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signals.restore()
    prog.done()
    if res.final:
        print(format_final(res.final))
        if a.json:
            print("FINAL " + json.dumps(res.final))
    if res.error:
        return _die(res.error, EXIT_USAGE if res.returncode == 2 else EXIT_MISSING)
    return 0


def cmd_bench(a) -> int:
    variant = _variant(a.variant)
    print(f"bench: variant {variant}" + (" (default; choose with VARIANT=... or --variant)"
                                         if not a.variant else "") + f" against {srv.BASELINE}")
    kw = _batch_kwargs(a, budget_default=True)
    specs = _check_applies(a, [variant, _parse(srv.BASELINE)])
    _preflight(specs, kw["python"], skip=False)
    runner.check_loadgen()
    return _outcome(runner.run_batch(specs, kind="bench", **kw))


def cmd_compare(a) -> int:
    own = [_parse(f"loop:{x}") for x in a.loop] + [_parse(f"cmd:{x}") for x in a.server_cmd]
    specs = (_specs(a.servers, runner.DEFAULT_SERVERS) if a.servers or not own else []) + own
    kw = _batch_kwargs(a, budget_default=True)
    specs = _check_applies(a, specs)
    runner.check_loadgen()
    specs = _preflight(specs, kw["python"], skip=True)
    return _outcome(runner.run_batch(specs, kind="compare", **kw))


def _outcome(recs: list[dict]) -> int:
    """Exit status of a batch, after its table: 1 when any run failed or lost connections
    (so scripts and CI can gate on it), else 0."""
    failed = sum(1 for r in recs if r.get("status") != "ok")
    lossy = sum(1 for r in recs if r.get("status") == "ok" and (r.get("metrics") or {}).get("lost"))
    if failed or lossy:
        print(f"exit 1: {failed} run(s) failed, {lossy} run(s) lost connections "
              f"(kept on disk, excluded from medians)", file=sys.stderr)
        return EXIT_MISSING
    return 0


def cmd_sweep(a) -> int:
    if a.servers is not None and a.variant is not None:
        raise UsageError("sweep takes --variant (VARIANT=) or --servers, not both")
    if a.servers is not None:
        specs = _specs(a.servers, ())
    else:
        variant = _variant(a.variant)
        if not a.variant:
            print(f"sweep: variant {variant} (default; choose with --variant) and {srv.BASELINE}")
        specs = [variant, _parse(srv.BASELINE)]
    rates = _parse_rates(a.rates)
    if a.rate:
        raise UsageError("sweep takes --rates a,b,c, not --rate")
    kw = _batch_kwargs(a)
    specs = _check_applies(a, specs)
    _preflight(specs, kw["python"], skip=False)
    runner.check_loadgen()
    runner.run_batch(specs, kind="sweep", rates=rates, **kw)
    return 0


def cmd_soak(a) -> int:
    variants = [_variant(a.variant)] if a.variant else [_parse(v) for v in srv.VARIANTS]
    print(f"soak: {', '.join(v.text for v in variants)}"
          + ("" if a.variant else " (all variants; choose with --variant)")
          + f", {a.duration:g}s each")
    kw = _batch_kwargs(a)
    for key in ("repeat", "rate", "duration"):
        kw.pop(key)
    specs = _check_applies(a, variants)
    _preflight(specs, kw["python"], skip=False)
    runner.check_loadgen()
    recs = runner.soak(specs, duration=a.duration, rss_interval=a.rss_interval,
                       min_connections=a.min_connections, **kw)
    return 0 if recs and all((r.get("soak") or {}).get("pass") for r in recs) else 1


def dispatch(name: str, argv: list[str]) -> int:
    module, lead, _ = DISPATCH[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return _die(f"`{name}` is not available: {module.replace('.', '/')}.py is not in this checkout",
                        EXIT_MISSING)
        raise
    rc = mod.main(lead + list(argv))
    return int(rc or 0)


COMMANDS = {"serve": cmd_serve, "load": cmd_load, "bench": cmd_bench, "compare": cmd_compare,
            "sweep": cmd_sweep, "soak": cmd_soak}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DEPRECATED:
        print(f"note: `{argv[0]}` is now `{DEPRECATED[argv[0]]}` (the old name will go)", file=sys.stderr)
        argv[0] = DEPRECATED[argv[0]]
    if argv and argv[0] in DISPATCH:
        return dispatch(argv[0], argv[1:])
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.cmd:
        parser.print_help()
        return _die(f"no subcommand given: choose one of {', '.join(COMMANDS)}, {', '.join(DISPATCH)}", EXIT_USAGE)
    try:
        _check_args(a)
        return COMMANDS[a.cmd](a)
    except UsageError as e:
        return _die(str(e), EXIT_USAGE)
    except srv.ServerError as e:          # a server that cannot run here (not built, module missing)
        return _die(str(e), EXIT_MISSING)
    except runner.RunnerError as e:
        return _die(str(e), EXIT_MISSING)
    except runner.BatchInterrupted as e:
        print(f"\ninterrupted: kept {len(e.records)} completed run(s) in {os.path.join(e.results, 'runs')}"
              + (": " + ", ".join(r["run_id"] for r in e.records) if e.records else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
