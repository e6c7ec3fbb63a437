"""The command line's shared pieces, used by every subcommand on the one parser of
harness/cli.py (its own commands and those other modules declare in COMMANDS: report,
reproduce, profile, syscalls, combine, check-docs, twohost, sweep-concurrency, scale): the
argparse types (numbers, rates, CPU budgets, link delay and loss), the parser that
reports an error in one line, the benchmark options every load-running command takes
(``add_common``), their checks (ranges, link, host, results folder), and the exit
statuses -- 2 for bad input, 1 when something needed is missing, 130 after Ctrl-C.

The run settings' defaults live once, in ``runner.Settings``; ``add_common`` reads them
(sweep and soak override repeat and duration in cli.py), so ``make bench`` with no
variables, ``python -m harness bench`` and ``runner.run_batch`` behave the same (the
Makefile passes a flag only when its variable is set).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable

from harness import cpubudget, procs, records, runner
from harness.servers import ServerError, check_available, parse_spec, valid_names
from harness.servers import options as _server_options

EXIT_USAGE, EXIT_MISSING, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """Bad input the user can fix: one `error:` line and exit 2."""


def die(msg: str, code: int) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


@dataclass(frozen=True)
class Subcommand:
    """A subcommand another module implements, on the one parser of `python -m harness`
    (cli.SUBCOMMANDS): its help, its arguments and what it runs (the parsed arguments ->
    the exit status; errors through ``handled``).  ``main`` is the same command run as
    `python -m harness.MODULE`, with the same parser and the same errors."""
    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    def main(self, argv=None) -> int:
        p = Parser(prog=f"python -m harness {self.name}", description=self.description)
        self.add_arguments(p)
        return self.run(p.parse_args(sys.argv[1:] if argv is None else argv))


def handled(check, work, *, bad_input: tuple = (), failed: tuple = ()) -> int:
    """The one error path of a subcommand: ``check()`` refuses bad input (UsageError, a
    server spec that does not parse, or ``bad_input``: one `error:` line, exit 2, nothing
    run), then ``work()`` returns the exit status, and an error it could not avoid
    (RunnerError, a server that cannot run here, or ``failed``) is one `error:` line and
    exit 1 -- never a traceback."""
    try:
        check()
    except (UsageError, ServerError) + bad_input as e:
        return die(str(e), EXIT_USAGE)
    except (procs.RunnerError,) + failed as e:   # e.g. no CPU budget possible on this machine
        return die(str(e), EXIT_MISSING)
    try:
        return int(work() or 0)
    except UsageError as e:                 # bad input only the work could see
        return die(str(e), EXIT_USAGE)
    except (procs.RunnerError, ServerError) + failed as e:
        return die(str(e), EXIT_MISSING)


# The argparse types, written once with the servers' spec checks (harness/servers/options.py).
positive_float = _server_options.positive_number     # a finite number > 0
nonneg_float = _server_options.seconds               # a finite number of seconds >= 0
positive_int = _server_options.positive_int          # an integer >= 1


def diet_levers(text):
    """--diet alone (True: each server's full set of levers) or --diet=L1+L2 (a tuple)."""
    if text is True:
        return True
    levers = _server_options.split_levers(text)
    bad = [lv for lv in levers if lv not in _server_options.LEVERS]
    if bad or not levers:
        raise argparse.ArgumentTypeError(f"unknown diet lever {', '.join(bad) or repr(text)}; "
                                         f"levers: {', '.join(_server_options.LEVERS)}")
    return tuple(lv for lv in _server_options.LEVERS if lv in levers)


DIET_HELP = ("the syscall diet: alone, every lever each server supports; =L1+L2 those levers "
             f"where supported ({', '.join(_server_options.LEVERS)})")


def server_cpu_value(text):
    try:
        return cpubudget.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# The CPU budget bench and compare use when none is given (SERVER_CPU=): 0.4 core keeps
# the C load client below ~80 % of its core even against the fastest server here
# (c_epoll), so every server of the default comparison is the bottleneck of its runs.
# See docs/performance.md ("Server-bound runs") for the measurements behind it.
DEFAULT_SERVER_CPU = 0.4


def _rate(text: str) -> float:
    """Connections per second, ``5000`` or ``5k``."""
    t = text.strip().lower()
    mult = 1000 if t.endswith("k") else 1
    return _server_options.check_positive_number(t[:-1] if mult > 1 else t) * mult


rate_value = _server_options.argparse_type(_rate)    # argparse type: conn/s, 5000 or 5k


def link_value(parser_name: str):
    """argparse type for --delay/--loss: harness.link's parser, its message on error."""
    def convert(text):
        from harness import link
        try:
            return getattr(link, parser_name)(text)[0]
        except link.LinkError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parser_name.replace("parse_", "")
    return convert


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit 2 (its default, kept)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see --help)\n")


_DEFAULTS = runner.Settings()        # the run settings' defaults (one home: runner.Settings)


def add_common(p: argparse.ArgumentParser, *, duration: float = _DEFAULTS.duration,
            repeat: int = _DEFAULTS.repeat) -> None:
    d = _DEFAULTS
    g = p.add_argument_group("benchmark options")
    g.add_argument("--link", default=d.link,
                   help="loopback (default), 1000mbit, 100mbit or any rate such as 20mbit")
    g.add_argument("--repeat", type=positive_int, default=repeat,
                   help=f"interleaved rounds (default {repeat})")
    g.add_argument("--duration", type=positive_float, default=duration,
                   help=f"measured seconds per run (default {duration:g})")
    g.add_argument("--warmup", type=nonneg_float, default=d.warmup,
                   help=f"warm-up seconds excluded (default {d.warmup:g})")
    g.add_argument("--concurrency", type=positive_int, default=d.concurrency,
                   help=f"connections in flight, closed loop (default {d.concurrency})")
    g.add_argument("--size", type=positive_int, default=d.size,
                   help=f"bytes echoed per connection (default {d.size})")
    g.add_argument("--rate", type=rate_value, default=None,
                   help="open loop: new connections per second (e.g. 20000 or 20k)")
    g.add_argument("--delay", type=link_value("parse_delay"), default=None,
                   help="one-way link delay, e.g. 5ms (netem, else the delay line; needs --link)")
    g.add_argument("--loss", type=link_value("parse_loss"), default=None,
                   help="random packet loss each direction, e.g. 1%% (needs --link)")
    g.add_argument("--python", default=None,
                   help="interpreter for the Python servers, e.g. python3.13 (default: the venv's)")
    g.add_argument("--diet", nargs="?", const=True, default=False, type=diet_levers, metavar="LEVERS",
                   help=DIET_HELP)
    g.add_argument("--pool", choices=("faithful", "oneshot"), default=None,
                   help="mul_thread pool mode: faithful (the study's) or oneshot (improved)")
    g.add_argument("--timeout-ms", type=positive_int, default=d.timeout_ms,
                   help=f"per-connection timeout (default {d.timeout_ms})")
    g.add_argument("--close", dest="close_mode", choices=("fin", "rst"), default=d.close_mode,
                   help="client close mode: fin (default) or rst (SO_LINGER 0)")
    g.add_argument("--idle-timeout", type=nonneg_float, default=None,
                   help="server idle timeout in seconds (default: the server's, 10)")
    g.add_argument("--results-dir", default=None,
                   help="where runs are written (default results/, or $EVENTS_RESULTS_DIR)")
    g.add_argument("--server-workers", type=positive_int, default=1, metavar="N",
                   help="N event loops per server (WORKERS=N; spec loops=N): N processes, each a "
                        "full server on its own SO_REUSEPORT listener of one port; --server-cpu is "
                        "then per worker, one cgroup of N x F (not mul_thread's workers=, its pool)")
    g.add_argument("--clients", type=positive_int, default=1, metavar="N",
                   help="N load client processes sharing --concurrency (CLIENTS=N; build/loadgen "
                        "--clients): one SNAPSHOT/FINAL stream, client-bound when the mean "
                        "process saturates its core")
    g.add_argument("--worker-mode", choices=("procs", "threads"), default="procs",
                   help="procs (default): N server processes; threads (WORKER_MODE=threads; raw_epoll, "
                        "the variants, asyncio, uvloop): N loops in threads of one process, flagged "
                        "on a GIL build")
    g.add_argument("--server-cpu", type=server_cpu_value, default=None, metavar="F|auto|off",
                   help="hold each server to F cores (its own cgroup with a CFS quota), so conn/s "
                        "measures the server; auto: calibrate so the client stays <= 70%% busy; "
                        f"off: no budget (default for bench/compare: {DEFAULT_SERVER_CPU:g} when "
                        "the machine allows it and no --rate is given, else off)")


# Ranges the load client (harness/loadgen/loadgen.c) accepts: refused here, before any work.
RANGES = {
    "--repeat": (1, 1000), "--duration": (0, 1e7), "--warmup": (0, 1e7), "--concurrency": (1, 1_000_000),
    "--size": (1, 16 * 1024 * 1024), "--rate": (0, 1e8), "--rates": (0, 1e8), "--timeout-ms": (1, 3_600_000),
    "--idle-timeout": (0, 1e7), "--count": (1, 1 << 50), "--src-addrs": (1, 254),
    "--rss-interval": (0, 1e7), "--min-connections": (1, 1 << 50), "--clients": (1, 64),
}


def check_range(flag: str, value) -> None:
    lo, hi = RANGES[flag]
    if value is not None and not lo <= value <= hi:
        raise UsageError(f"{flag} {fmt_bound(value)} is out of range: use {fmt_bound(lo)} to {fmt_bound(hi)}")


def fmt_bound(x) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def check_link(text: str | None, delay: str | None) -> None:
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
    """The options of ``add_common`` (and any other numeric option present): ranges, link, delay,
    results folder. Raises UsageError. Used by every subcommand that runs the load client."""
    for flag in RANGES:
        value = getattr(a, flag[2:].replace("-", "_"), None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_range(flag, value)
    if getattr(a, "clients", 1) > getattr(a, "concurrency", 1 << 30):
        raise UsageError(f"--clients {a.clients} is more than --concurrency {a.concurrency}: each "
                         "client process needs a connection in flight (CLIENTS <= CONCURRENCY)")
    if link and hasattr(a, "link"):
        check_link(a.link, getattr(a, "delay", None))
    rd = getattr(a, "results_dir", None)
    if rd is not None and (not rd.strip() or (os.path.exists(rd) and not os.path.isdir(rd))):
        raise UsageError(f"--results-dir {rd!r} is not a folder: give a folder (it is created if missing)")


def apply_workers(a, specs: list) -> list:
    """--server-workers/--worker-mode (WORKERS/WORKER_MODE) added to every spec (spec loops=N,
    harness/servers/workers.py), then every spec's workers checked against the budget.
    UsageError: a server with no threads mode, no SO_REUSEPORT, too many workers."""
    from harness import servers as srv
    from harness.servers import workers
    n, mode = getattr(a, "server_workers", 1), getattr(a, "worker_mode", "procs")
    try:
        specs = [workers.with_workers(s, n, mode) for s in specs]
        if any(workers.loops_of(s)[0] > 1 for s in specs):
            workers.check_reuse_port()
    except srv.ServerError as e:
        raise UsageError(str(e)) from None
    per = getattr(a, "server_cpu", None)
    per = DEFAULT_SERVER_CPU if per is None and not getattr(a, "rate", None) else per
    for s in specs:
        check_workers_budget(workers.loops_of(s)[0], per if isinstance(per, float) else None, s.text)
    return specs


def check_workers_budget(n: int, per_worker: float | None, what: str = "") -> None:
    """UsageError when N workers cannot each have ``per_worker`` cores: under the kernel's
    smallest quota (0.05 core per worker), or more in all than the CPUs this process may use."""
    if per_worker is None or n < 2:
        return
    where = f"{what}: " if what else ""
    if per_worker < 1000 / cpubudget.PERIOD_US - 1e-9:
        raise UsageError(f"{where}{n} workers at {per_worker:.3g} core each: a worker's budget must "
                         f"be at least {1000 / cpubudget.PERIOD_US:g} core (fewer workers or more CPU)")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n * per_worker > ncpu + 1e-9:
        raise UsageError(f"{where}{n} workers x {per_worker:g} core = {n * per_worker:g} cores: more "
                         f"than the {ncpu} CPU(s) here (fewer workers, or a smaller SERVER_CPU per worker)")


def check_host(host: str) -> None:
    """--host must be an address or a name that resolves (before any process starts)."""
    import socket
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host!r}: cannot resolve it ({getattr(e, 'strerror', None) or e}); "
                         "give an IP address or a host name") from None


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
        raise procs.RunnerError(f"SERVER_CPU={value}: cannot hold the server to a CPU budget: {e}; "
                                f"SERVER_CPU=off runs without one") from None
    return value, ("auto" if value == "auto" else "fixed")


def spec_of(text: str):
    """parse_spec, its errors (unknown name: it lists the valid ones; bad option) as usage errors."""
    try:
        return parse_spec(text)
    except ServerError as e:
        raise UsageError(str(e)) from None


def specs_of(text: str | None, default, *, noun: str = "server", hint: str = "") -> list:
    """The specs of a --servers list (spaces; ``default`` when not given), each once: an
    empty list, a spec that does not parse or one named twice is a UsageError."""
    items = text.split() if text is not None else list(default)
    if not items:
        raise UsageError(f"no servers given: name one or more of {valid_names()}")
    specs = [spec_of(t) for t in items]
    texts = [s.text for s in specs]
    dup = sorted({t for t in texts if texts.count(t) > 1})
    if dup:
        raise UsageError(f"{', '.join(dup)} named twice: give each {noun} once{hint}")
    return specs


def add_level_arguments(p, *, replaced: str, from_batch_help: str) -> None:
    """The arguments every command that runs at several levels of one knob shares
    (sweep-concurrency's levels replace --concurrency, scale's worker counts
    --server-workers): ``--from-batch``, the common options with short runs, and the
    replaced knob's default None, so that giving it by mistake is told from not giving it."""
    p.add_argument("--from-batch", default=None, metavar="BATCH_ID", help=from_batch_help)
    add_common(p, repeat=5, duration=3.0)
    p.set_defaults(**{replaced: None})


def check_level_arguments(a, *, replaced: str, value, message: str) -> bool:
    """The first checks of such a command: UsageError(``message``) when the replaced knob
    was given, else it is set to ``value`` (each run sets its own level) and the common
    options are checked; True when only a redraw is asked (``--from-batch``)."""
    if getattr(a, replaced) is not None:
        raise UsageError(message)
    setattr(a, replaced, value)
    check_common(a)
    return bool(a.from_batch)


def redraw(a, render) -> int:
    """``--from-batch``: only redraw that batch's chart and summary from its recorded runs
    (``render(results_dir, batch_id)``), print their paths; exit status 0."""
    print("\n".join(records.shown_path(p) for p in render(records.results_dir(a.results_dir),
                                                             a.from_batch)))
    return 0


def run_and_render(make_batch, plan, title: str, render, *, specs, python) -> int:
    """Run a batch whose table is a chart of its own (make sweep-concurrency, make scale):
    every spec must be able to run here (``python``: the batch's interpreter) and the load
    client be built; ``make_batch()`` builds it (a budget it cannot apply is a RunnerError);
    the plan is run, the batch written, ``render(results_dir, batch_id) -> (png, md, json)``
    called and the summary printed; exit status 0, or EXIT_MISSING when a run failed or lost
    connections, EXIT_INTERRUPTED on Ctrl-C (the runs so far are kept)."""
    for spec in specs:
        check_available(spec, python)
    try:
        procs.check_loadgen()
        batch = make_batch()
        batch.execute(plan, title=title)
    except procs.RunnerError as e:
        return die(str(e), EXIT_MISSING)
    except runner.BatchInterrupted as e:
        print(f"\ninterrupted: kept {len(e.records)} run(s)", file=sys.stderr)
        return EXIT_INTERRUPTED
    batch.write_batch()
    png, md, _js = render(batch.root, batch.batch_id)
    with open(md) as f:
        print("\n" + f.read())
    print(f"batch {batch.batch_id}: chart {records.shown_path(png)}, summary {records.shown_path(md)}")
    failed = sum(1 for r in batch.records if r["status"] != "ok" or r["metrics"].get("lost"))
    return EXIT_MISSING if failed else 0


def parse_counts(text: str, *, knob: str, what: str, one: str, unit: str, lo: int, hi: int,
                 example: str) -> list[int]:
    """A list of whole numbers such as ``CONCURRENCY="1 2 4"`` or ``WORKERS="1 2"`` (spaces or
    commas), ascending.  UsageError, naming ``knob``, for an empty list, an item that is not a
    whole number >= ``lo`` or is above ``hi``, or a number given twice (rounds repeat with
    REPEAT).  ``what`` names the list's items ("levels"), ``one`` an item ("a level"),
    ``unit`` a number's unit ("connections in flight")."""
    items = text.replace(",", " ").split()
    if not items:
        raise UsageError(f"{knob}: no {what} given (e.g. \"{example}\")")
    values = []
    for item in items:
        try:
            value = int(item, 10)
        except ValueError:
            raise UsageError(f"{knob}: {item!r} is not a whole number of {unit}") from None
        if value < lo:
            raise UsageError(f"{knob}: {value} {unit}: {one} must be at least {lo}")
        if value > hi:
            raise UsageError(f"{knob}: {value:,} is out of range: use {lo} to {hi:,}")
        values.append(value)
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise UsageError(f"{knob}: {', '.join(map(str, dup))} given twice: give each once "
                         "(rounds repeat with REPEAT)")
    return sorted(values)


def settings_kwargs(a, *, budget_default: bool = False) -> dict:
    """The fields of runner.Settings that every batch command reads from its parsed
    arguments (the link, rounds, load, interpreter and CPU budget), checked: DELAY/LOSS on
    loopback is a UsageError; ``budget_default``: the command holds the server to the
    default budget when none is given (and no --rate)."""
    if (a.delay or a.loss) and (a.link or "loopback").strip().lower() == "loopback":
        raise UsageError("--delay/--loss (DELAY/LOSS) need an emulated link, e.g. --link 100mbit: "
                         "the host's loopback is never delayed or made lossy")
    cores, mode = resolve_server_cpu(a.server_cpu, budget_default=budget_default and not a.rate)
    return dict(link=a.link, repeat=a.repeat, duration=a.duration, warmup=a.warmup,
                concurrency=a.concurrency, size=a.size, rate=a.rate, delay=a.delay, loss=a.loss,
                python=procs.resolve_python(a.python), timeout_ms=a.timeout_ms,
                close_mode=a.close_mode, idle_timeout=a.idle_timeout,
                server_cpu=cores, server_cpu_mode=mode, clients=getattr(a, "clients", 1))
