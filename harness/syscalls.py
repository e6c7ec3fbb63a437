"""``make syscalls VARIANT=x [DIET=1]``: system calls per connection of one server.

Method: start the server (through the server table, like every run), attach
``strace -f -c -p PID`` once it has printed READY (so start-up -- imports, the
listener -- is not counted; ``-f`` with ``-p`` attaches every thread, which
mul_thread needs), drive a fixed number of connections with ``build/loadgen
--count N``, detach strace with SIGINT, then stop the server.  strace's summary
table divided by the connections the client completed gives calls per
connection by name.  ``epoll_wait`` and the final ``accept4`` that returns
EAGAIN are shared by all connections served in one pass, hence fractions.

Caveats, stated rather than hidden: strace makes every system call several times
slower, which changes how many connections each ``epoll_wait`` returns (and so
that call's share); the other counts are properties of the code path and do not
move.  This is a count, never a timing: ``seconds`` in strace's table are
strace's, not the server's.

Reference, measured on this kind of machine (docs/methodology.md): the classic raw
epoll server about 9.3 calls per connection, asyncio about 13.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import client, procs, records, runner
from harness import servers as srv

DEFAULT_CONNECTIONS = 5000
DEFAULT_CONCURRENCY = 64
ATTACH_TIMEOUT = 15.0

NO_STRACE = "strace not found: apt-get install strace"


class SyscallError(Exception):
    """A clear one-line reason the measurement could not be made."""


def parse_strace_summary(text: str) -> tuple[dict[str, dict], dict]:
    """Parse the table ``strace -c`` prints: returns ({name: {calls, errors, seconds}},
    total row).  Rows have 5 or 6 columns (``errors`` is blank when zero)."""
    calls: dict[str, dict] = {}
    total: dict = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (5, 6) or not re.fullmatch(r"[\d.]+", parts[0]):
            continue
        try:
            row = {"seconds": float(parts[1]), "calls": int(parts[3]),
                   "errors": int(parts[4]) if len(parts) == 6 else 0}
        except ValueError:
            continue
        if parts[-1] == "total":
            total = row
        else:
            calls[parts[-1]] = row
    return calls, total


def per_connection(calls: dict[str, dict], connections: int) -> dict:
    """Calls per connection, by name (largest first) and in total."""
    by_name = {name: round(row["calls"] / connections, 3)
               for name, row in sorted(calls.items(), key=lambda kv: -kv[1]["calls"])}
    errors = {name: round(row["errors"] / connections, 3)
              for name, row in calls.items() if row["errors"]}
    return {"total": round(sum(r["calls"] for r in calls.values()) / connections, 3),
            "by_name": by_name, "errors_by_name": errors}


def safe_name(spec: str) -> str:
    """A spec as a file name: ``mul_thread:pool=oneshot`` -> ``mul_thread_pool=oneshot``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)


def _wait_attached(proc: subprocess.Popen, errpath: str, timeout: float) -> None:
    """strace prints 'Process N attached' on stderr once it traces the server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(errpath, errors="replace") as f:
            text = f.read()
        if "attached" in text:
            return
        if proc.poll() is not None:
            raise SyscallError("strace could not attach to the server: "
                               + (text.strip().splitlines() or ["(no message)"])[-1])
        time.sleep(0.05)
    raise SyscallError(f"strace did not attach within {timeout:.0f}s")


def measure(spec: str, *, connections: int = DEFAULT_CONNECTIONS,
            concurrency: int = DEFAULT_CONCURRENCY, size: int = 100,
            python: str | None = None, out=None) -> dict:
    out = out or sys.stdout
    """Run one measurement; returns the result dict written to the JSON file."""
    strace = shutil.which("strace")
    if not strace:
        raise SyscallError(NO_STRACE)
    loadgen = procs.check_loadgen()
    spec_obj = srv.parse_spec(spec)
    tmpdir = tempfile.mkdtemp(prefix="events-strace-")
    outpath, errpath = os.path.join(tmpdir, "summary.txt"), os.path.join(tmpdir, "stderr.txt")
    server = tracer = None
    try:
        server = srv.start(spec_obj, size=size, python=python)
        with open(errpath, "w") as errf:
            tracer = subprocess.Popen([strace, "-f", "-c", "-o", outpath, "-p", str(server.pid)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=errf)
        _wait_attached(tracer, errpath, ATTACH_TIMEOUT)
        print(f"strace attached to {spec_obj.text} (pid {server.pid}); "
              f"driving {connections:,} connections, {concurrency} in flight", file=out)
        argv = client.client_argv(loadgen, "127.0.0.1", server.port, concurrency=concurrency,
                                  size=size, duration=None, warmup=0, rate=None, timeout_ms=5000,
                                  close_mode="fin", count=connections)
        # Generous: strace slows the server several times over.
        res = client.run_client(argv, timeout=60 + connections / 200, server_alive=server.alive)
        tracer.send_signal(signal.SIGINT)         # detach: strace writes its summary and exits
        try:
            tracer.wait(timeout=15)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
            raise SyscallError("strace did not exit after SIGINT; killed, no summary") from None
        if res.error:
            raise SyscallError(f"the load client failed: {res.error}")
        stats = server.stop()
        with open(outpath, errors="replace") as f:
            calls, total = parse_strace_summary(f.read())
        final = res.final or {}
        completed = final.get("completed_total") or 0
        if not calls or not completed:
            raise SyscallError("no system calls or no completed connections were recorded")
        return {
            "spec": spec_obj.text, "time_utc": records.utc_now(),
            "connections": completed, "failed": final.get("failed_total"),
            "concurrency": concurrency, "size": size,
            "per_connection": per_connection(calls, completed),
            "strace_total": total, "raw": calls, "server_stats": stats,
            "method": "strace -f -c -p PID attached after READY; calls / connections completed",
            "reference": {"raw_epoll (classic)": 9.3, "asyncio": 13},
        }
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        if server is not None:
            server.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


def format_md(result: dict) -> str:
    pc = result["per_connection"]
    lines = [f"# System calls per connection: {result['spec']}\n",
             f"{result['connections']:,} connections ({result['concurrency']} in flight, "
             f"{result['size']} B), measured {result['time_utc']} with "
             f"`{result['method']}`.\n",
             f"**Total: {pc['total']:.2f} system calls per connection** "
             f"(reference here: classic raw epoll about 9.3, asyncio about 13).\n",
             "| syscall | per connection | of which errors |", "|---|---|---|"]
    for name, v in pc["by_name"].items():
        lines.append(f"| {name} | {v:.3f} | {pc['errors_by_name'].get(name, 0):.3f} |")
    lines.append("")
    lines.append("epoll_wait and the accept4 that ends each accept loop with EAGAIN are shared "
                 "by the connections of one pass; strace's slowdown changes how many that is.\n")
    return "\n".join(lines)


def write(result: dict, results: str) -> tuple[str, str]:
    d = os.path.join(results, "syscalls")
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, safe_name(result["spec"]))
    for path, text in ((base + ".json", json.dumps(result, indent=1) + "\n"),
                       (base + ".md", format_md(result))):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)        # the latest measurement of a spec replaces the previous
    return base + ".json", base + ".md"


DESCRIPTION = "System calls per connection of a server (strace -c)."


def main(argv=None) -> int:
    from harness import cmdline
    return cmdline.Subcommand("syscalls", DESCRIPTION, add_arguments, run_command).main(argv)


def add_arguments(ap) -> None:
    """`syscalls`' arguments, on the shared parser (cli.SUBCOMMANDS) or its own (main)."""
    from harness import cmdline
    ap.add_argument("--variant", "--server", dest="spec", default="raw_epoll",
                    help="server spec, e.g. raw_epoll, master, mul_thread:pool=oneshot")
    ap.add_argument("--connections", type=cmdline.positive_int, default=DEFAULT_CONNECTIONS)
    ap.add_argument("--concurrency", type=cmdline.positive_int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--size", type=cmdline.positive_int, default=100)
    ap.add_argument("--diet", action="store_true", help="the syscall-diet mode of the server")
    ap.add_argument("--python", help="interpreter for Python servers")
    ap.add_argument("--results-dir")


def run_command(args) -> int:
    """`syscalls` with its parsed arguments: the one error path (cmdline.handled)."""
    from harness import cmdline

    def check():
        srv.parse_spec(args.spec)
        cmdline.check_common(args)

    def work():
        spec = runner.apply_options([args.spec], diet=args.diet)[0].text
        result = measure(spec, connections=args.connections, concurrency=args.concurrency,
                         size=args.size, python=procs.resolve_python(args.python))
        jpath, mpath = write(result, records.results_dir(args.results_dir))
        print(format_md(result))
        print(f"wrote {jpath} and {mpath}")
    return cmdline.handled(check, work, failed=(SyscallError,))


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"syscalls": (DESCRIPTION, add_arguments, run_command)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
