"""``python -m harness SUBCOMMAND ...``: the one entry point the Makefile calls.

The CLI only parses, validates and reports; the work is in runner.py (batches),
soak.py, servers/ (the server table) and the modules other subcommands dispatch to.
What every subcommand's parser shares (types, options, checks, exit statuses) is in
cmdline.py.
Errors the user can fix are one line on stderr and an exit status — 2 for bad
input (unknown variant or spec, bad option), 1 when something needed is
missing (the C client, an interpreter, privileges), 130 after Ctrl-C/SIGTERM —
never a traceback.

The run settings' defaults live once, in ``runner.Settings`` (cmdline.add_common reads
them; sweep and soak override repeat and duration below).  Server specs are parsed
once, here (``servers.parse_spec``), and travel as ``Spec`` objects.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from harness import ablation, client, cmdline, cpubudget, procs, runner, soak
from harness.cmdline import (DIET_HELP, EXIT_INTERRUPTED, EXIT_MISSING, EXIT_USAGE, Parser,
                             UsageError, add_common, check_common, check_host, check_range, die,
                             diet_levers, nonneg_float, positive_float, positive_int, rate_value,
                             server_cpu_value, settings_kwargs, spec_of, specs_of)
from harness.progress import Progress
from harness.summary import BASELINE
from harness import servers as srv

# Subcommands other modules implement on this parser: name -> (module, help).  The module's
# COMMANDS[name] gives (description, add_arguments(parser), run_command(args)), as
# cmdline.Subcommand does for `python -m harness.MODULE`; only the chosen one is imported
# (report needs the plotting stack, the others do not).
SUBCOMMANDS = {
    "report": ("harness.report", "charts and REPORT.md from results/"),
    "profile": ("harness.profile", "line_profiler run of a variant's server"),
    "syscalls": ("harness.syscalls", "system calls per connection (strace -c)"),
    "combine": ("harness.combine", "one batch table from several recorded batches"),
    "check-docs": ("harness.checkdocs", "recompute every marked figure in README.md and docs/ from results/"),
    "twohost-serve": ("harness.twohost",
                      "two-host mode, server machine: a server until Ctrl-C (make twohost-serve)"),
    "twohost-load": ("harness.twohost", "two-host mode, client machine: one load run (make twohost-load)"),
    "reproduce": ("harness.reproduce", "rerun the study's comparisons, write REPRODUCTION.md"),
    "sweep-concurrency": ("harness.concurrency",
                          "CPU per connection against connections in flight (paired rounds)"),
    "scale": ("harness.scale", "conn/s and CPU per connection against N event loops "
                               "(SO_REUSEPORT workers; paired rounds)"),
}
# Old names of the two-host subcommands, still accepted with a one-line note.
DEPRECATED = {"serve-run": "twohost-serve", "load-run": "twohost-load"}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; ``chosen``: the subcommand given, whose module's
    arguments are added when another module implements it (SUBCOMMANDS)."""
    p = Parser(prog="python -m harness",
                description="Events benchmark harness: servers, the load client, batches and reports.")
    sub = p.add_subparsers(dest="cmd", metavar="SUBCOMMAND", parser_class=Parser)

    s = sub.add_parser("serve", help="run one echo server in the foreground")
    s.add_argument("spec", help=f"server spec NAME[:key=value,...]; names: {srv.valid_names()}")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0, help="0 = any free port (READY gives it)")
    s.add_argument("--size", type=positive_int, default=100)
    s.add_argument("--idle-timeout", type=nonneg_float, default=None)
    s.add_argument("--python", default=None)
    s.add_argument("--diet", nargs="?", const=True, default=False, type=diet_levers, metavar="LEVERS",
                   help=DIET_HELP)
    s.add_argument("--server-cpu", type=server_cpu_value, default=None, metavar="F|off",
                   help="hold the server to F cores (its own cgroup with a CFS quota; default off)")

    lo = sub.add_parser("load", help="run the C load client in the foreground, with a summary")
    lo.add_argument("--host", default="127.0.0.1")
    lo.add_argument("--port", type=int, required=True)
    lo.add_argument("--concurrency", type=positive_int, default=64)
    lo.add_argument("--size", type=positive_int, default=100)
    g = lo.add_mutually_exclusive_group()
    g.add_argument("--duration", type=positive_float, default=None, help="seconds (default 10)")
    g.add_argument("--count", type=positive_int, default=None, help="connections")
    lo.add_argument("--rate", type=rate_value, default=None)
    lo.add_argument("--warmup", type=nonneg_float, default=0.0)
    lo.add_argument("--timeout-ms", type=positive_int, default=5000)
    lo.add_argument("--close", dest="close_mode", choices=("fin", "rst"), default="fin")
    lo.add_argument("--src-addrs", type=positive_int, default=None)
    lo.add_argument("--run-id", default=None)
    lo.add_argument("--json", action="store_true", help="also print the client's FINAL JSON line")

    b = sub.add_parser("bench", help="a variant against raw_epoll, interleaved rounds")
    b.add_argument("--variant", default=None,
                   help=f"variant spec (default master); variants: {', '.join(srv.VARIANTS)}")
    add_common(b)

    c = sub.add_parser("compare", help="any set of server specs, interleaved rounds")
    c.add_argument("--servers", default=None,
                   help=f"space-separated specs (default: {' '.join(runner.DEFAULT_SERVERS)}); "
                        "NAME@REV runs a variant's library at a git revision")
    c.add_argument("--loop", action="append", default=[], metavar="MODULE:ATTR",
                   help="also benchmark your own event loop class on the shared echo app")
    c.add_argument("--server-cmd", action="append", default=[], metavar="'COMMAND {port}'",
                   help="also benchmark any echo-protocol server started by this command")
    add_common(c)

    ab = sub.add_parser("ablation", help="the ae-literal design and its steps toward master, "
                                         "one batch (harness/ablation.py)")
    add_common(ab)

    ch = sub.add_parser("chart", help="redraw a batch's chart, results/batches/ID.png (make chart)")
    ch.add_argument("batch", help="a batch id from results/batches/, or 'latest'")
    ch.add_argument("--results-dir", help="results directory (default: $EVENTS_RESULTS_DIR "
                                          "or results/ of the repository)")

    w = sub.add_parser("sweep", help="open-loop sweep of offered rates: latency vs rate")
    w.add_argument("--variant", default=None, help="variant spec (default master)")
    w.add_argument("--servers", default=None,
                   help="specs to sweep instead (default: the variant and raw_epoll)")
    w.add_argument("--rates", default=None,
                   help="comma-separated offered rates (default 2k,5k,10k,15k,20k,25k,30k,40k)")
    add_common(w, duration=5.0, repeat=1)

    k = sub.add_parser("soak", help="long runs: >= 1M connections, zero lost, flat RSS")
    k.add_argument("--variant", default=None, help="variant spec (default: all three in turn)")
    k.add_argument("--rss-interval", type=positive_float, default=5.0, help="RSS sampling period (s)")
    k.add_argument("--min-connections", type=positive_int, default=soak.SOAK_MIN_CONNECTIONS,
                   help="connections a variant must complete to pass (default 1,000,000)")
    add_common(k, duration=600.0, repeat=1)

    for name, (module, help_) in SUBCOMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=help_)
            continue
        description, add_arguments, run_command = importlib.import_module(module).COMMANDS[name]
        sp = sub.add_parser(name, help=help_, description=description)
        add_arguments(sp)
        sp.set_defaults(run_command=run_command)
    return p


# --------------------------------------------------------------------------- helpers

def _variant(text: str | None, default: str = "master") -> srv.Spec:
    text = (text or default).strip()
    spec = spec_of(text)
    if spec.name not in srv.VARIANTS:
        raise UsageError(f"{spec.name!r} is not a variant; variants: {', '.join(srv.VARIANTS)} "
                         f"(use `compare --servers` for other servers)")
    return spec


def _specs(text: str | None, default) -> list[srv.Spec]:
    return specs_of(text, default, hint=" (rounds repeat with --repeat)")


def _batch_kwargs(a, *, budget_default: bool = False) -> dict:
    return dict(settings_kwargs(a, budget_default=budget_default), results_dir=a.results_dir)


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
        raise procs.RunnerError("none of the servers can run here")
    return ok


def _parse_rates(text: str | None) -> list[float]:
    if not text:
        return [2000, 5000, 10000, 15000, 20000, 25000, 30000, 40000]
    try:
        rates = [rate_value(x) for x in text.split(",") if x.strip()]
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"--rates: {e}") from None
    if not rates:
        raise UsageError("--rates: no rates given")
    for r in rates:
        check_range("--rates", r)
    return sorted(rates)


# --------------------------------------------------------------------------- argument checks
# Everything is checked before any server starts or any file is written: bad input is one
# `error:` line and exit 2, never a run recorded as failed.


def _check_applies(a, specs: list[srv.Spec]) -> list[srv.Spec]:
    """--pool changes only mul_thread specs: refuse it when there is none; a --diet lever
    no server takes is refused too.  Returns the specs with --diet/--pool applied."""
    names = ", ".join(p.text for p in specs)
    if a.pool and not any("pool" in srv.accepted_options(p.server) for p in specs):
        raise UsageError(f"--pool/POOL applies to mul_thread only, not to {names}")
    try:
        specs = runner.apply_options(specs, diet=a.diet, pool=getattr(a, "pool", None))
    except srv.ServerError as e:
        raise UsageError(f"--diet/DIET: {e}") from None
    return cmdline.apply_workers(a, specs)          # WORKERS/WORKER_MODE (issue 26)


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
    spec = spec_of(a.spec)
    if a.diet:
        try:
            spec = runner.apply_options([spec], diet=a.diet)[0]
        except srv.ServerError as e:
            raise UsageError(f"--diet: {e}") from None
    python = procs.resolve_python(a.python)
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
        raise procs.RunnerError(f"cannot start {spec.text}: {e}") from None
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
        raise procs.RunnerError(f"SERVER_CPU={cores:g}: cannot hold the server to a CPU budget: {e}; "
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
            raise procs.RunnerError(f"cannot start {spec.text} in its cgroup: {e}") from None
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


def cmd_load(a) -> int:
    loadgen = procs.check_loadgen()
    argv = client.client_argv(loadgen, a.host, a.port, concurrency=a.concurrency, size=a.size,
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
    signals = procs.Signals().install()
    try:
        res = client.run_client(argv, timeout=timeout, on_snapshot=show, signals=signals)
    except KeyboardInterrupt:
        prog.done()
        print("interrupted; the load client was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signals.restore()
    prog.done()
    if res.final:
        print(client.format_final(res.final))
        if a.json:
            print("FINAL " + json.dumps(res.final))
    if res.error:
        return die(res.error, EXIT_USAGE if res.returncode == 2 else EXIT_MISSING)
    return 0


def cmd_bench(a) -> int:
    variant = _variant(a.variant)
    print(f"bench: variant {variant}" + (" (default; choose with VARIANT=... or --variant)"
                                         if not a.variant else "") + f" against {BASELINE}")
    kw = _batch_kwargs(a, budget_default=True)
    specs = _check_applies(a, [variant, spec_of(BASELINE)])
    _preflight(specs, kw["python"], skip=False)
    procs.check_loadgen()
    return outcome(_charted(runner.run_batch(specs, kind="bench", **kw), kw, "bench"))


def cmd_compare(a) -> int:
    own = [spec_of(f"loop:{x}") for x in a.loop] + [spec_of(f"cmd:{x}") for x in a.server_cmd]
    specs = (_specs(a.servers, runner.DEFAULT_SERVERS) if a.servers or not own else []) + own
    kw = _batch_kwargs(a, budget_default=True)
    specs = _check_applies(a, specs)
    procs.check_loadgen()
    specs = _preflight(specs, kw["python"], skip=True)
    return outcome(_charted(runner.run_batch(specs, kind="compare", **kw), kw, "compare"))


def _charted(recs: list[dict], kw: dict, kind: str) -> list[dict]:
    """Draw the batch's chart beside its summary (harness/batchchart.py) and say where,
    or say why not and how to draw it later."""
    from harness import batchchart, records
    batch_id = next((r.get("batch_id") for r in recs if r.get("batch_id")), None)
    line = batchchart.after_batch(records.results_dir(kw.get("results_dir")), batch_id, kind)
    if line:
        print(line)
    return recs


def cmd_chart(a) -> int:
    from harness import batchchart, records
    results = records.results_dir(a.results_dir)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return die("make chart needs matplotlib: install the report extra (make chart does; "
                   "pip install -e '.[report]')", EXIT_MISSING)
    try:
        path = batchchart.write(results, a.batch)
    except batchchart.BatchError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {records.shown_path(path)}")
    return 0


def cmd_ablation(a) -> int:
    kw = _batch_kwargs(a, budget_default=True)
    specs = _check_applies(a, [spec_of(s) for s in ablation.SPECS])
    procs.check_loadgen()
    _preflight(specs, kw["python"], skip=False)
    recs = runner.run_batch(specs, kind="ablation", **kw)
    ablation.report(recs, kw["results_dir"])
    return outcome(recs)


def outcome(recs: list[dict]) -> int:
    """Exit status of a batch, after its table: 1 when any run failed or lost connections
    (so scripts and CI can gate on it), else 0."""
    # A batch's records (runrecord.new_run): every field is there.
    failed = sum(1 for r in recs if r["status"] != "ok")
    lossy = sum(1 for r in recs if r["status"] == "ok" and r["metrics"].get("lost"))
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
            print(f"sweep: variant {variant} (default; choose with --variant) and {BASELINE}")
        specs = [variant, spec_of(BASELINE)]
    rates = _parse_rates(a.rates)
    if a.rate:
        raise UsageError("sweep takes --rates a,b,c, not --rate")
    kw = _batch_kwargs(a)
    specs = _check_applies(a, specs)
    _preflight(specs, kw["python"], skip=False)
    procs.check_loadgen()
    runner.run_batch(specs, kind="sweep", rates=rates, **kw)
    return 0


def cmd_soak(a) -> int:
    variants = [_variant(a.variant)] if a.variant else [spec_of(v) for v in srv.VARIANTS]
    print(f"soak: {', '.join(v.text for v in variants)}"
          + ("" if a.variant else " (all variants; choose with --variant)")
          + f", {a.duration:g}s each")
    kw = _batch_kwargs(a)
    for key in ("repeat", "rate", "duration"):
        kw.pop(key)
    specs = _check_applies(a, variants)
    _preflight(specs, kw["python"], skip=False)
    procs.check_loadgen()
    recs = soak.soak(specs, duration=a.duration, rss_interval=a.rss_interval,
                     min_connections=a.min_connections, **kw)
    return 0 if recs and all((r.get("soak") or {}).get("pass") for r in recs) else 1


COMMANDS = {"serve": cmd_serve, "load": cmd_load, "bench": cmd_bench, "compare": cmd_compare,
            "ablation": cmd_ablation, "chart": cmd_chart,
            "sweep": cmd_sweep, "soak": cmd_soak}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DEPRECATED:
        print(f"note: `{argv[0]}` is now `{DEPRECATED[argv[0]]}` (the old name will go)", file=sys.stderr)
        argv[0] = DEPRECATED[argv[0]]
    if argv and argv[0] in SUBCOMMANDS:
        module = SUBCOMMANDS[argv[0]][0]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            return die(f"`{argv[0]}` is not available: {module.replace('.', '/')}.py is not in this "
                       "checkout", EXIT_MISSING)
    parser = build_parser(argv[0] if argv else None)
    a = parser.parse_args(argv)
    if not a.cmd:
        parser.print_help()
        return die(f"no subcommand given: choose one of {', '.join(COMMANDS)}, "
                   f"{', '.join(SUBCOMMANDS)}", EXIT_USAGE)
    try:
        if a.cmd in SUBCOMMANDS:
            return int(a.run_command(a) or 0)
        # The one error path (cmdline.handled, as profile and syscalls use it): bad input
        # exit 2, a server that cannot run here or a run that could not be done exit 1.
        return cmdline.handled(lambda: _check_args(a), lambda: COMMANDS[a.cmd](a))
    except runner.BatchInterrupted as e:
        print(f"\ninterrupted: kept {len(e.records)} completed run(s) in {os.path.join(e.results, 'runs')}"
              + (": " + ", ".join(r["run_id"] for r in e.records) if e.records else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
