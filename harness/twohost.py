"""Two-host mode: the server on one machine, the load client on another.

The study ran client and server on two machines joined by a real NIC.  An
emulated link (harness/link.py) rebuilds that on one machine; this module is for
doing it for real:

    server machine:  make twohost-serve VARIANT=master PORT=8000        (prints a RUN_ID)
    client machine:  make twohost-load HOST=<server address> PORT=8000 RUN_ID=<that id>

Each side can only measure its own half, so each writes its own record, and the
shared run id joins them: ``results/runs/<RUN_ID>-serve.json`` (kind "serve")
and ``<RUN_ID>-load.json`` (kind "load"), both with ``batch_id`` = RUN_ID (the
report groups by batch) and ``two_host = {"run_id", "side"}``.  Copy one file to
the other machine's results/runs/ to have the pair in one report.

* serve: starts the spec's server (through the server table, like every other
  run), prints the run id and the address, and waits for Ctrl-C or SIGTERM.
  Then it reads the server's CPU time from /proc, stops it (SIGTERM -> STATS
  line), and prints and saves the server-side figures: connections served,
  errors, CPU (user+sys) per connection.  The CPU baseline is read when the
  server is READY, so interpreter start-up is not charged to the connections;
  the window therefore includes idle time before and after the load, which costs
  (almost) no CPU in an epoll server -- a trade-off stated, not hidden.
* load: runs build/loadgen against --host/--port with the runner's own client
  code (harness.runner.run_client), prints the usual summary, and saves it.

Trade-off: the two records are not one record.  A joined record would need the
two sides to talk to each other beyond the echo protocol (a control channel),
which is exactly what the study's setup did not have; the run id is enough for
the report, and each side's figures stand on their own.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import sys
import time

from harness import client, cmdline, cpubudget, environment, kstats, metrics, procs, records, runrecord
from harness import servers as srv
from harness.cmdline import EXIT_INTERRUPTED, EXIT_MISSING, EXIT_USAGE

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


def link_label(label: str | None) -> str:
    """The link name of a two-host record.  A real network is never recorded under an
    emulated link's name (``100mbit``): the report would pool the two.  So the
    user's label gets a ``net-`` prefix; no label is ``network``."""
    label = (label or "").strip()
    return f"net-{label}" if label else "network"


class TwoHostError(Exception):
    """One-line, user-facing; ``code`` is the exit status."""

    def __init__(self, msg: str, code: int = EXIT_MISSING):
        super().__init__(msg)
        self.code = code


def _err(msg: str, code: int) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return code


def _run_id(given: str | None) -> str:
    if given is None:
        return records.new_id()
    if not _RUN_ID_RE.match(given):
        raise TwoHostError(f"bad run id {given!r}: use letters, digits, '.', '_' and '-' "
                           "(as printed by `make twohost-serve`)", EXIT_USAGE)
    return given


def _check_port(host: str, port: int) -> None:
    """A clear message before the server tries: port in use, or not our address.
    Same socket options as the servers (SO_REUSEADDR), so a port held only by
    TIME_WAIT sockets is not reported as in use."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise TwoHostError(f"cannot resolve host {host!r}: {e.strerror}", EXIT_USAGE) from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise TwoHostError(f"port {port} on {host} is in use: choose another "
                                   f"(make twohost-serve PORT=...), or stop what listens there") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise TwoHostError(f"{host} is not an address of this machine: give one of its "
                                   f"own addresses, or 0.0.0.0 for all (HOST=...)", EXIT_USAGE) from None
            if e.errno == errno.EACCES:
                raise TwoHostError(f"port {port} needs privileges (ports below 1024 do): "
                                   f"use a port >= 1024", EXIT_USAGE) from None
            raise TwoHostError(f"cannot bind {host}:{port}: {e.strerror}") from None


def _save(record: dict, root: str | None) -> str:
    # A second `make twohost-load` with the same RUN_ID becomes <id>-load-2, -3...: kept,
    # still recognisably part of the pair.  (write_record never overwrites anyway.)
    runs = os.path.join(records.results_dir(root), "runs")
    base, n = record["run_id"], 2
    while os.path.exists(os.path.join(runs, record["run_id"] + ".json")):
        record["run_id"] = f"{base}-{n}"
        n += 1
    path = records.write_record(record, root)
    return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path


def _base_record(kind: str, rid: str, spec: str, server: str | None, link: str) -> dict:
    # The runner's constructor (runrecord.new_run): one shape for every run record.
    return runrecord.new_run(run_id=f"{rid}-{kind}", batch_id=rid, kind=kind, spec=spec,
                             server=server, link=link, round=1, position=1,
                             two_host={"run_id": rid, "side": kind})


# --------------------------------------------------------------------------- serve

SERVE_DESCRIPTION = ("Two-host mode, server side: serve until Ctrl-C/SIGTERM, then save the "
                     "server-side figures.")


def serve_arguments(p) -> None:
    """twohost-serve's arguments, on the shared parser (cli.SUBCOMMANDS) or its own."""
    p.add_argument("spec", nargs="?", default="master",
                   help=f"server spec NAME[:key=value,...] (default master); names: {srv.valid_names()}")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--run-id", default=None, help="run id shared with the load side (default: new)")
    p.add_argument("--size", type=cmdline.positive_int, default=100)
    p.add_argument("--idle-timeout", type=cmdline.nonneg_float, default=None)
    p.add_argument("--python", default=None, help="interpreter for a Python server")
    p.add_argument("--link", default=None,
                   help="label for the real link, e.g. 1000mbit: recorded as net-1000mbit "
                        "(default 'network')")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--server-cpu", type=cmdline.server_cpu_value, default=None, metavar="F|off",
                   help="hold the server to F cores (its own cgroup with a CFS quota; default off)")


def serve(argv: list[str]) -> int:
    return cmdline.Subcommand("twohost-serve", SERVE_DESCRIPTION, serve_arguments, run_serve).main(argv)


def run_serve(a) -> int:
    if not 0 <= a.port <= 65535:
        return _err(f"port {a.port} out of range 0-65535", EXIT_USAGE)
    try:
        cmdline.check_common(a, link=False)      # --link here is a label for the real network
        cmdline.check_host(a.host)
    except cmdline.UsageError as e:
        return _err(str(e), EXIT_USAGE)
    try:
        spec = srv.parse_spec(a.spec)
        rid = _run_id(a.run_id)
        python = procs.resolve_python(a.python)
        srv.check_available(spec, python)
        if a.port:
            _check_port(a.host, a.port)
        if a.server_cpu == "auto":
            raise TwoHostError("--server-cpu auto needs the load client on this machine to calibrate: "
                               "give a number of cores (e.g. 0.4) or off", EXIT_USAGE)
        cores = a.server_cpu if isinstance(a.server_cpu, float) else None
        ctl = cpubudget.check() if cores is not None else None
        if ctl is not None:
            cpubudget.cleanup_stale(ctl)
    except cpubudget.BudgetError as e:
        return _err(f"SERVER_CPU={a.server_cpu}: cannot hold the server to a CPU budget: {e}", EXIT_MISSING)
    except srv.ServerError as e:
        return _err(str(e), EXIT_USAGE if str(e).startswith(("unknown", "server '", "option", "bad value"))
                    else EXIT_MISSING)
    except TwoHostError as e:
        return _err(str(e), e.code)
    except procs.RunnerError as e:
        return _err(str(e), EXIT_MISSING)

    stop = []

    def on_signal(signum, frame):
        stop.append(signum)
        # A second Ctrl-C while we are already stopping changes nothing:
        # the server is stopped and the figures saved regardless.

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    record = _base_record("serve", rid, spec.text, spec.name, link_label(a.link))
    record["config"] = {"size": a.size, "host": a.host, "port": a.port, "python": python,
                        "idle_timeout": a.idle_timeout, "argv": list(sys.argv),
                        "server_cpu": cores, "server_cpu_mode": "fixed" if cores else "off"}
    record["server_cgroup"] = None
    server = None
    group = None
    try:
        env = environment.capture(python=python)
        try:
            group = cpubudget.Group(ctl, cores) if ctl is not None else None
            server = srv.start(spec, host=a.host, port=a.port, size=a.size,
                               idle_timeout=a.idle_timeout, python=python,
                               cgroup_procs=group.procs_file if group else None)
        except cpubudget.BudgetError as e:
            return _err(f"cannot hold the server to a CPU budget: {e}", EXIT_MISSING)
        except srv.ServerError as e:
            msg = str(e)
            first = msg.split("\n", 1)[0]
            if "Address already in use" in msg:
                first = f"port {a.port} on {a.host} is in use: choose another (make twohost-serve PORT=...)"
            record.update(status="failed", error=first, env=env,
                          server_stderr_tail=msg.split("stderr:\n", 1)[1][-2000:] if "stderr:\n" in msg else None)
            print(f"error: {first}", file=sys.stderr, flush=True)
            if "stderr:\n" in msg and "Address already in use" not in msg:
                print(msg.split("stderr:\n", 1)[1][-2000:], file=sys.stderr, flush=True)
            return EXIT_MISSING
        record["config"]["server_argv"] = server.argv
        record["config"]["hash_seed"] = server.hash_seed
        record["server_ready"] = server.ready
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        g0 = group.stat() if group else None
        k0 = kstats.snapshot()
        port = server.port
        print(f"run id: {rid}", flush=True)
        print(f"listening: {server.host}:{port} ({spec.text}, pid {server.pid})"
              + (f", held to {cores:g} core" if cores else ""), flush=True)
        print(f"on the client machine: make twohost-load HOST=<this machine's address> PORT={port} "
              f"RUN_ID={rid}", flush=True)
        print("Ctrl-C (or SIGTERM) stops the server and saves its figures.", flush=True)
        while not stop and server.alive():
            time.sleep(0.2)
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        g1 = group.stat() if group else None
        k1 = kstats.snapshot()
        stats = server.stop()
        if group is not None:
            record["server_cgroup"] = group.record(g0, g1)
        # Ctrl-C in a terminal reaches the whole foreground group, so the server may
        # have stopped on the same SIGINT a moment before us: a server exits 0 after
        # its STATS line only on a signal, so that is a normal stop, not a death.
        died = not stop and not (server.proc.returncode == 0 and stats is not None)
        record.update(server_stats=stats, server_stderr_tail=server.stderr_tail() or None,
                      kernel=kstats.delta(k0, k1), env=env)
        if cpu1 is None and stats:              # gone already: its own final figure
            cpu1 = (stats.get("cpu_user_s") or 0) + (stats.get("cpu_sys_s") or 0)
        cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        served = (stats or {}).get("served")
        errors = (stats or {}).get("errors")
        m = record["metrics"]
        m.update(server_cpu_s=metrics.round_or_none(cpu, 4), completed=served, failed=errors,
                 server_cpu_us_per_conn=(metrics.round_or_none(cpu / served * 1e6, 2)
                                         if cpu is not None and served else None))
        record["serve_wall_s"] = round(t1 - t0, 3)
        if died:
            record.update(status="failed",
                          error=f"server exited by itself (exit code {server.proc.returncode})")
        elif stats is None:
            record["warnings"].append("server printed no STATS line on SIGTERM")
        print(format_serve(record), flush=True)
        path = _save(record, a.results_dir)
        print(f"saved {path}", flush=True)
        return 0 if not died else EXIT_MISSING
    finally:
        if server is not None:
            server.stop(timeout=5.0)           # idempotent
        if group is not None and not group.remove():
            print(f"warning: cgroup {group.path} could not be removed; the next budgeted run "
                  f"removes it", file=sys.stderr, flush=True)
        for s, h in old.items():
            signal.signal(s, h)


def format_serve(r: dict) -> str:
    st = r.get("server_stats") or {}
    m = r.get("metrics") or {}
    us = m.get("server_cpu_us_per_conn")
    cpu = m.get("server_cpu_s")
    return (f"serve {r['two_host']['run_id']}: {r['spec']} served {_n(st.get('served'))} connections "
            f"(accepted {_n(st.get('accepted'))}, errors {_n(st.get('errors'))}, idle timeouts "
            f"{_n(st.get('idle_timeouts'))}) in {r.get('serve_wall_s', 0):.1f} s; server CPU "
            f"{'?' if cpu is None else f'{cpu:.2f} s'} = {'?' if us is None else f'{us:.1f} µs'} "
            f"per connection" + _budget_text(r.get("server_cgroup"))
            + (f"; {r['error']}" if r.get("error") else ""))


def _budget_text(g: dict | None) -> str:
    if not g:
        return ""
    thr = g.get("throttled_s")
    return (f"; held to {g['cores']:g} core, throttled in {_n(g.get('nr_throttled'))} of "
            f"{_n(g.get('nr_periods'))} periods ({'?' if thr is None else f'{thr:.1f}'} s)")


def _n(x) -> str:
    return "?" if x is None else f"{x:,}"


# --------------------------------------------------------------------------- load

LOAD_DESCRIPTION = "Two-host mode, client side: one load run against a `make twohost-serve`."


def load_arguments(p) -> None:
    """twohost-load's arguments, on the shared parser (cli.SUBCOMMANDS) or its own."""
    p.add_argument("--host", default=None, help="the server machine's address (required)")
    p.add_argument("--port", type=int, default=8000, help="the port `make twohost-serve` printed (default 8000)")
    p.add_argument("--run-id", default=None, help="the run id `make twohost-serve` printed")
    # The benchmark options of every other run (their defaults live in cli, once).
    cmdline.add_common(p, duration=10.0, repeat=1)


def load(argv: list[str]) -> int:
    return cmdline.Subcommand("twohost-load", LOAD_DESCRIPTION, load_arguments, run_load).main(argv)


def run_load(a) -> int:
    # Server-side or emulation-only options have no meaning here: say so, do not ignore.
    for flag, value, why in (
            ("--repeat/REPEAT", a.repeat != 1, "one load run per run id: run `make twohost-load` again"),
            ("--delay/DELAY", a.delay, "the delay of a real network is whatever it is"),
            ("--loss/LOSS", a.loss, "the loss of a real network is whatever it is"),
            ("--python/PYTHON", a.python, "give it to `make twohost-serve` on the server machine"),
            ("--diet/DIET", a.diet, "a server option: make twohost-serve VARIANT=raw_epoll:diet"),
            ("--pool/POOL", a.pool, "a server option: make twohost-serve VARIANT=mul_thread:pool=oneshot"),
            ("--idle-timeout", a.idle_timeout is not None, "a server option: give it to `make twohost-serve`"),
            ("--server-cpu/SERVER_CPU", a.server_cpu is not None,
             "the budget is the server's: make twohost-serve SERVER_CPU=0.4 on the server machine")):
        if value:
            return _err(f"{flag} does not apply to a two-host load run: {why}", EXIT_USAGE)
    if not a.host:
        return _err("twohost-load needs the server machine's address: make twohost-load HOST=<address> "
                    "PORT=<the port make twohost-serve printed> RUN_ID=<its run id>", EXIT_USAGE)
    if not 1 <= a.port <= 65535:
        return _err(f"port {a.port} out of range 1-65535", EXIT_USAGE)
    try:
        cmdline.check_common(a, link=False)      # --link here is a label for the real network
        cmdline.check_host(a.host)
    except cmdline.UsageError as e:
        return _err(str(e), EXIT_USAGE)
    link = link_label(a.link if a.link != "loopback" else None)
    try:
        rid = _run_id(a.run_id)
        loadgen = procs.check_loadgen()
    except TwoHostError as e:
        return _err(str(e), e.code)
    except procs.RunnerError as e:
        return _err(str(e), EXIT_MISSING)
    if a.run_id is None:
        print(f"note: no RUN_ID given; this run is {rid}, which no serve record shares "
              f"(pass RUN_ID=<the id `make twohost-serve` printed> to join them)", file=sys.stderr, flush=True)
    argv_c = client.client_argv(loadgen, a.host, a.port, concurrency=a.concurrency, size=a.size,
                                duration=a.duration, warmup=a.warmup, rate=a.rate,
                                timeout_ms=a.timeout_ms, close_mode=a.close_mode, run_id=rid)
    record = _base_record("load", rid, "remote", None, link)
    record["config"] = {"concurrency": a.concurrency, "size": a.size, "duration": a.duration,
                        "warmup": a.warmup, "rate": a.rate, "timeout_ms": a.timeout_ms,
                        "close_mode": a.close_mode, "python": None, "host": a.host, "port": a.port,
                        "argv": list(sys.argv), "client_argv": argv_c}
    record["env"] = environment.capture()
    from harness.progress import Progress
    prog = Progress(sys.stdout)

    def show(snap):
        prog.update(f"{snap.get('speed') or 0:,.0f} conn/s  t={snap.get('t', 0):.0f}s/"
                    f"{a.duration + a.warmup:g}s  failed={snap.get('failed', 0)}")

    k0 = kstats.snapshot()
    signals = procs.Signals().install()
    try:
        res = client.run_client(argv_c, timeout=a.duration + a.warmup + a.timeout_ms / 1000 + 30,
                                on_snapshot=show, signals=signals)
    except KeyboardInterrupt:
        prog.done()
        print("interrupted; the load client was stopped, nothing saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signals.restore()
    prog.done()
    record.update(client=res.final, snapshots=res.snapshots, kernel=kstats.delta(k0, kstats.snapshot()),
                  metrics=metrics.compute_metrics(res.final, None, res.wall_s))
    if res.stderr.strip():
        record["client_stderr_tail"] = res.stderr[-2000:]
    if res.returncode == 2:
        return _err(res.error or "load client rejected its arguments", EXIT_USAGE)
    fin = res.final or {}
    refused = (fin.get("failures") or {}).get("refused") or 0
    if res.error:
        record.update(status="failed", error=res.error)
    elif fin and not fin.get("completed_total") and refused:
        record.update(status="failed",
                      error=f"{a.host}:{a.port} refused every connection: is `make twohost-serve` running "
                            f"there, on that port?")
    if res.final:
        print(client.format_final(res.final), flush=True)
    if record["error"]:
        print(f"error: {record['error']}", file=sys.stderr, flush=True)
    print(f"saved {_save(record, a.results_dir)}", flush=True)
    return 0 if record["status"] == "ok" else EXIT_MISSING


# --------------------------------------------------------------------------- entry

def main(argv: list[str]) -> int:
    """``python -m harness.twohost serve ...`` or ``... load ...``; under cli.py the two are
    twohost-serve and twohost-load on its parser (COMMANDS)."""
    argv = list(argv)
    if not argv or argv[0] not in ("serve", "load"):
        return _err("two-host mode: `python -m harness twohost-serve SPEC ...` (server side) or "
                    "`python -m harness twohost-load --host H ...` (client side)", EXIT_USAGE)
    try:
        return serve(argv[1:]) if argv[0] == "serve" else load(argv[1:])
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"twohost-serve": (SERVE_DESCRIPTION, serve_arguments, run_serve),
            "twohost-load": (LOAD_DESCRIPTION, load_arguments, run_load)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
