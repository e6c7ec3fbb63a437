"""N event loops in threads of one process (issue 26, ``loop_mode=threads``) for raw_epoll and
the three Events variants: the mechanics, on any build and any number of cores.

Every loop serves (each loop's count > 0 under a load of many connections: the kernel
hashes each connection's 4-tuple to one of the SO_REUSEPORT listeners, so a loop can be
idle only by a very unlikely draw -- then the load is repeated, larger, on a new server),
the counts sum to what the client completed, nothing is lost, the one process exits on
SIGTERM with one STATS line and leaves nothing behind; the runner (harness/servers/loops.py)
stops a loop that was asked to stop before it started, and reports one that never stops
instead of hanging; a loop that raises kills the server (exit 1). Bad input stays one
``error:`` line. Bounded: counted loads, short runs; no figure here is a speed.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from harness import runner
from harness import servers as srv
from harness.servers import counters, loops
from harness.servers import workers as wk
from conftest import alive, need_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "build", "loadgen")
SERVERS = ("raw_epoll", "master", "mul_thread", "alone_proc")
COUNTS = (200, 1000, 5000)            # connections per attempt: more if a loop was idle

pytestmark = pytest.mark.timeout(180)


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _load(port: int, count: int) -> dict:
    r = subprocess.run([LOADGEN, "--port", str(port), "--count", str(count), "--concurrency", "32"],
                       capture_output=True, text=True, timeout=60)
    final = [ln for ln in r.stdout.splitlines() if ln.startswith("FINAL ")]
    assert final, r.stderr
    return json.loads(final[-1][6:])


def _serve_once(name: str, count: int):
    """Start NAME as 2 loops in threads, load it with ``count`` connections, stop it."""
    group = wk.start(wk.with_workers(name, 2, wk.THREADS))
    try:
        assert isinstance(group, wk.Workers) and group.pids() == [group.pid]   # one process
        tasks = _threads(group.pid)
        final = _load(group.port, count)
    finally:
        t0 = time.monotonic()
        stats = group.stop()
        stop_s = time.monotonic() - t0
    return group, final, stats, tasks, stop_s


@pytest.mark.parametrize("name", SERVERS)
def test_every_loop_serves_and_the_counts_sum(name):
    need_server(name)
    for count in COUNTS:
        group, final, stats, tasks, stop_s = _serve_once(name, count)
        assert stats is not None, group.stderr_text
        per = [w["served"] for w in stats["workers"]]
        if all(n > 0 for n in per):
            break
    assert all(n > 0 for n in per), (per, count)                 # every loop served
    assert tasks >= 3                                             # the main thread and 2 loops
    assert final["completed_total"] == final["started_total"] == count, final   # nothing lost
    assert final["failed_total"] == 0
    assert stats["served"] == stats["accepted"] == count == sum(per)
    assert len(stats["workers"]) == 2
    assert sum(w["accepted"] for w in stats["workers"]) == stats["accepted"]
    # Events per pass (harness/passes.py reads these): summed over the loops, each counted.
    for key in ("passes", "events"):
        assert all(isinstance(w[key], int) and w[key] > 0 for w in stats["workers"]), (key, stats)
        assert stats[key] == sum(w[key] for w in stats["workers"])
    if name == "raw_epoll":                                      # it counts its polls exactly
        assert sum(stats["events_hist"]) == stats["passes"]
        # the polls' events are the derived ones plus at most one wake-up per loop at the stop
        assert 0 <= stats["events_polled"] - stats["events"] <= 2
    assert "loops_not_stopped" not in stats
    assert stats["workers"][0]["cpu_user_s"] is None             # one process: CPU not split
    assert group.proc.returncode == 0 and stop_s < 10
    assert not alive(group.pid)                                  # no process, so no thread, left


@pytest.mark.parametrize("name", SERVERS)
def test_sigterm_at_once_and_with_idle_connections_exits_with_stats(name):
    """SIGTERM right after READY (a loop may not have entered its poll yet) and with a
    connection that never sends: STATS with both loops, exit 0, in bounded time."""
    need_server(name)
    argv = srv.command(name, idle_timeout=0, extra=["--reuse-port", "--loops", "2",
                                                    "--loop-mode", "threads"])
    for idle in (False, True):
        p = subprocess.Popen(argv, cwd=ROOT, env=srv.env_for(srv.server_by_name(name)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready = json.loads(p.stdout.readline()[6:])
            conn = socket.create_connection(("127.0.0.1", ready["port"])) if idle else None
            if conn:
                time.sleep(0.2)
            p.terminate()
            out, err = p.communicate(timeout=15)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        if conn:
            conn.close()
        stats = [json.loads(ln[6:]) for ln in out.splitlines() if ln.startswith("STATS ")]
        assert p.returncode == 0 and len(stats) == 1, err
        assert len(stats[0]["workers"]) == 2 and "loops_not_stopped" not in stats[0]
        assert stats[0]["accepted"] == (1 if idle else 0)


# --------------------------------------------------------------------------- the runner itself

class _Loop:
    """A stand-in loop with the Events loops' habit: ``run`` clears the stop flag first."""

    def __init__(self, obey=True):
        self.flag, self.obey, self.started = False, obey, threading.Event()
        self.stats = counters.Stats()

    def run(self):
        self.flag = False
        self.started.set()
        deadline = time.monotonic() + 20
        while not (self.flag and self.obey) and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self):
        self.flag = True


def _run_members(members):
    threads = [threading.Thread(target=m.run, daemon=True) for m in members]
    pairs = [socket.socketpair() for _ in members]
    return threads, pairs


def test_stop_all_repeats_a_stop_that_came_too_early_and_names_a_loop_that_never_stops():
    early, stuck = _Loop(), _Loop(obey=False)
    early.stop()                                   # asked before it ran: run() clears it
    members = [loops.Member(m.stats, m.run, m.stop) for m in (early, stuck)]
    threads, pairs = _run_members(members)
    try:
        for t in threads:
            t.start()
        assert early.started.wait(5) and stuck.started.wait(5)
        t0 = time.monotonic()
        left = loops.stop_all(members, [w for _, w in pairs], threads, timeout=1.0)
        assert left == [1]                         # the stuck one named, the early one stopped
        assert not threads[0].is_alive()
        assert time.monotonic() - t0 < 3           # bounded
    finally:
        stuck.obey = True
        for t in threads:
            t.join(5)
        for a, b in pairs:
            a.close()
            b.close()


_SCRIPT = """
import sys
from harness.servers import common, counters, loops
args = common.parse_args("raw_epoll", ["--port", "0", "--loops", "2", "--loop-mode", "threads"])
def start(listener, wake):
    if sys.argv[1] == "start":
        raise ValueError("no loop today")
    def run():
        raise RuntimeError("a bug in the loop")
    return loops.Member(counters.Stats(), run, lambda: None)
loops.serve_threads("demo", args, start)
"""


@pytest.mark.parametrize("how,message", [("start", "a loop thread did not start (loop "),
                                         ("run", "demo: loop ")])
def test_a_loop_that_cannot_start_or_raises_ends_the_server_with_status_1(how, message):
    r = subprocess.run([sys.executable, "-c", _SCRIPT, how], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr and "STATS" not in r.stdout
    if how == "run":
        assert "RuntimeError: a bug in the loop" in r.stderr


# --------------------------------------------------------------------------- through the harness

def test_threads_capable_lists_the_four_and_the_spec_round_trips():
    capable = wk.threads_capable()
    assert set(SERVERS) | {"asyncio", "uvloop"} <= set(capable)
    spec = wk.with_workers("alone_proc", 2, wk.THREADS)
    assert spec.text == "alone_proc:loop_mode=threads,loops=2"
    assert wk.loops_of(srv.parse_spec("alone_proc:loops=2,loop_mode=threads")) == (2, wk.THREADS)
    argv = srv.command(spec)
    assert "--loop-mode" not in argv and "--loops" not in argv     # the launcher's keys


def test_a_threads_run_is_recorded_with_each_loop_and_flagged_under_the_gil(tmp_path):
    need_server("alone_proc")
    settings = runner.Settings(kind="compare", repeat=1, duration=1.0, warmup=0.2, concurrency=32,
                               server_cpu=None, server_cpu_mode="off")
    batch = runner.Batch(settings, total=1, out=open(os.devnull, "w"), results_dir=str(tmp_path))
    rec = batch.execute([runner.Planned(srv.parse_spec("alone_proc:loops=2,loop_mode=threads"), 0, 0)])[0]
    assert rec["status"] == "ok", rec["error"]
    assert rec["config"]["workers"] == 2 and rec["config"]["worker_mode"] == "threads"
    assert rec["metrics"]["lost"] == 0
    assert len(rec["workers"]) == 2 and sum(w["served"] for w in rec["workers"]) == rec["server_stats"]["served"]
    assert rec["metrics"]["events_per_pass"] is not None
    gil = not (rec["env"].get("server_python") or {}).get("free_threaded")
    flagged = any("threads mode on a GIL build" in w for w in rec["warnings"])
    assert flagged == gil
    assert not any(alive(p) for p in rec["server_ready"]["pids"])


@pytest.mark.parametrize("argv,fragment", [
    (["compare", "--servers", "c_epoll:loop_mode=threads"], "server 'c_epoll' has no option 'loop_mode'"),
    (["compare", "--servers", "literal", "--server-workers", "2", "--worker-mode", "threads"],
     "literal has no threads mode"),
    (["scale", "--variant", "c_epoll", "--worker-mode", "threads"], "c_epoll has no threads mode"),
])
def test_threads_for_a_server_without_them_is_one_error_line(argv, fragment, tmp_path):
    results = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, EVENTS_RESULTS_DIR=str(results)),
                       stdin=subprocess.DEVNULL)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr
    assert not results.exists() or not any(results.rglob("*"))
