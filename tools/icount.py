"""User-space instructions per connection of a server, counted by callgrind.

    .venv/bin/python tools/icount.py raw_epoll alone_proc master      (or: make icount SERVERS=...)

Why: on this 2-vCPU machine a timed batch resolves differences of a few per cent at
best (docs/statistics.md), but a library change worth 1 % of the CPU per connection is
still worth knowing about.  ``valgrind --tool=callgrind`` counts the instructions a
process executes in user space; for the same binary and the same inputs the count
repeats to about 0.05 % however busy the machine is.  It does not see the kernel (the
system calls' own cost), so it measures exactly what an event library adds on top of
raw epoll, and nothing else.

Method: each server runs under callgrind twice, once driven by ``build/loadgen --count
SMALL`` and once by ``--count LARGE`` (16 connections in flight); start-up and shut-down
are the same in both runs, so (Ir(LARGE) - Ir(SMALL)) / (LARGE - SMALL) is the cost of
one connection.  Under valgrind the server runs about 50 times slower, so every
``epoll_wait`` returns many events: per-pass costs weigh less here than in a real run.
A count, never a timing; docs/performance.md ("The last percent") has the figures.
Each spec's count is recorded in results/icount/SPEC[@pythonX.Y].json with the method and
the environment (the latest count of a spec replaces the previous one).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import procs  # noqa: E402
from harness import servers as srv  # noqa: E402
from harness.syscalls import safe_name  # noqa: E402

_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.M)


def callgrind(out: str) -> list[str]:
    """The command prefix that runs a program under callgrind, its output to ``out``."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]


def total(out: str, what: str) -> int:
    """The instructions counted in callgrind's output file ``out``."""
    with open(out) as f:
        m = _TOTAL.search(f.read())
    if m is None:
        raise RuntimeError(f"{what}: no total in callgrind's output")
    return int(m.group(1))


def instructions(spec: str, count: int, concurrency: int, python: str | None,
                 keep: str | None = None) -> tuple[int, int]:
    """Run ``spec`` under callgrind for ``count`` connections: (instructions, served).
    With ``keep``, callgrind's output is kept there as ``SPEC.COUNT.callgrind``."""
    with tempfile.TemporaryDirectory(prefix="events-icount-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        if keep:
            out = os.path.join(keep, f"{safe_name(spec)}.{count}.callgrind")
        server = srv.start(spec, prefix=callgrind(out), python=python, ready_timeout=180)
        try:
            client = subprocess.run(
                [procs.check_loadgen(), "--host", server.host, "--port", str(server.port),
                 "-c", str(concurrency), "--count", str(count), "--timeout-ms", "60000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
        finally:
            stats = server.stop(timeout=120) or {}
        if client.returncode != 0:
            raise RuntimeError(f"{spec}: the load client failed: {client.stderr.strip()[-300:]}")
        return total(out, spec), int(stats.get("served") or count)


def valgrind_version() -> str | None:
    try:
        r = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None


def python_label(python: str | None) -> str:
    """"" for the venv's interpreter, else ``@pythonX.Y[t]`` (a file-name suffix), or
    ``@pythonX.Y.Z[t]`` for another build of the venv's own X.Y (as harness/summary.py)."""
    if not python:
        return ""
    from harness import environment, summary
    facts = environment.interpreter(python) or {}
    label = summary.interpreter_label(facts.get("version"), facts.get("free_threaded"),
                                      "%d.%d.%d" % sys.version_info[:3])
    return "@" + (label or os.path.basename(python))


def record(kind: str, name: str, rows, method: dict, python: str | None,
           results_dir: str | None) -> str:
    """Write ``results/icount/NAME.json``: the counts, how they were made and the
    environment.  The latest count of a name replaces the previous one (git keeps the
    history), as ``make syscalls`` does for its files."""
    from harness import environment, records
    path = os.path.join(records.results_dir(results_dir), "icount",
                        safe_name(name) + python_label(python) + ".json")
    records.write_json(path, {"schema": 1, "kind": kind, "time_utc": records.utc_now(),
                              "method": method, "valgrind": valgrind_version(), "rows": rows,
                              "env": environment.capture(python=python)}, replace=True)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/icount.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="+", metavar="SPEC", help="server specs, e.g. alone_proc master:diet")
    ap.add_argument("--small", type=int, default=2000, help="connections of the short run")
    ap.add_argument("--large", type=int, default=8000, help="connections of the long run")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--python", help="interpreter for Python servers")
    ap.add_argument("--keep", metavar="DIR", help="keep callgrind's outputs in DIR, for "
                    "callgrind_annotate (a per-C-function split of the difference)")
    ap.add_argument("--results-dir", help="where results/icount/SPEC.json goes (default: results)")
    a = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("error: valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    if a.keep and not os.path.isdir(a.keep):
        print(f"error: --keep {a.keep}: no such directory", file=sys.stderr)
        return 2
    if not 0 < a.small < a.large:
        print("error: need 0 < --small < --large", file=sys.stderr)
        return 2
    try:
        specs = [srv.parse_spec(s) for s in a.specs]
        procs.check_loadgen()
    except (srv.ServerError, procs.RunnerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # A fixed hash seed, unless you set one: a count must repeat (the timed batches draw a
    # fresh seed per run instead, docs/statistics.md).
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(f"{'spec':<36} instructions/connection  (callgrind, user space; "
          f"{a.small} and {a.large} connections, {a.concurrency} in flight)")
    for spec in specs:
        try:
            i1, n1 = instructions(spec.text, a.small, a.concurrency, a.python, a.keep)
            i2, n2 = instructions(spec.text, a.large, a.concurrency, a.python, a.keep)
        except (srv.ServerError, RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        per = (i2 - i1) / (n2 - n1)
        path = record("icount", spec.text, [{
            "spec": spec.text, "instructions_per_connection": round(per),
            "small": {"instructions": i1, "served": n1},
            "large": {"instructions": i2, "served": n2}}],
            {"tool": "tools/icount.py", "small": a.small, "large": a.large,
             "concurrency": a.concurrency, "pythonhashseed": os.environ["PYTHONHASHSEED"]},
            a.python, a.results_dir)
        print(f"{spec.text:<36} {per:>12,.0f}   {os.path.relpath(path)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
