"""N event loops behind one port (issue 26): the mechanics, on any number of cores.

Every worker serves (per-worker counts > 0 under load), the counts sum to what the
client completed, nothing is lost, and every process and cgroup is gone afterwards --
on success, when a worker dies during a run, and after Ctrl-C to the harness.  Bounded:
short counted loads, short runs.  No figure here is a speed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import cmdline, cpubudget, procs, runner
from harness import servers as srv
from harness.servers import counters
from harness.servers import workers as wk
from conftest import alive, need_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "build", "loadgen")

pytestmark = pytest.mark.timeout(180)


def _load(port: int, count: int = 3000) -> dict:
    r = subprocess.run([LOADGEN, "--port", str(port), "--count", str(count), "--concurrency", "32"],
                       capture_output=True, text=True, timeout=60)
    final = [ln for ln in r.stdout.splitlines() if ln.startswith("FINAL ")]
    assert final, r.stderr
    return json.loads(final[-1][6:])


@pytest.mark.parametrize("spec,mode", [("raw_epoll", "procs"), ("master", "procs"),
                                       ("alone_proc", "procs"), ("mul_thread", "procs"),
                                       ("c_epoll", "procs"), ("redis_ae", "procs"),
                                       ("asyncio", "procs"), ("uvloop", "procs"),
                                       ("asyncio", "threads"), ("uvloop", "threads")])
def test_every_worker_serves_and_the_counts_sum(spec, mode):
    need_server(spec)
    group = wk.start(wk.with_workers(spec, 3, mode))
    pids = group.pids()
    try:
        assert isinstance(group, wk.Workers) and group.alive()
        assert len(pids) == (3 if mode == "procs" else 1)
        final = _load(group.port)
    finally:
        stats = group.stop()
    assert final["completed_total"] == final["started_total"] == 3000, final   # nothing lost
    assert stats is not None and stats["served"] == 3000 and stats["accepted"] == 3000
    per = [w["served"] for w in stats["workers"]]
    assert len(per) == 3 and sum(per) == 3000
    assert all(n > 0 for n in per), per                  # every worker served
    assert not any(alive(p) for p in pids)


def test_sum_stats_sums_counts_and_histograms_and_shows_an_idle_worker():
    a = {"accepted": 5, "served": 5, "errors": 0, "idle_timeouts": 0, "emfile": 0, "passes": 3,
         "events": 11, "events_hist": [0, 1, 2, 0, 0, 0], "diet_levers": ["cork"], "cpu_user_s": 0.5,
         "cpu_sys_s": 0.25}
    b = dict(a, accepted=0, served=0, passes=1, events=0, events_hist=[1, 0, 0, 0, 0, 0], cpu_user_s=0.1)
    s = counters.sum_stats([a, b])
    assert (s["served"], s["passes"], s["events"]) == (5, 4, 11)
    assert s["events_hist"] == [1, 1, 2, 0, 0, 0] and s["diet_levers"] == ["cork"]
    assert s["cpu_user_s"] == pytest.approx(0.6)
    assert [w["served"] for w in s["workers"]] == [5, 0]
    assert counters.sum_stats([a, dict(a, passes=None)])["passes"] is None
    threads = counters.sum_stats([a, b], one_process=True)
    assert threads["cpu_user_s"] == 0.5 and threads["workers"][0]["cpu_user_s"] is None


def test_spread_keeps_the_client_apart_and_says_when_it_cannot():
    prefixes, client, info = procs.spread(2, 0.2)
    assert len(prefixes) == 2 and info["workers"] == 2 and info["cpus"] >= 1
    if not client:
        pytest.skip("one CPU or no taskset: no pinning")
    assert info["shared_cores"] is False
    assert all(info["client"][0] not in p[-1].split(",") for p in prefixes)
    many = len(os.sched_getaffinity(0))
    _, _, info = procs.spread(many, None)      # unbudgeted: one core each, the client's too
    assert info["shared_cores"] is True


def test_no_reuseport_is_a_usage_error(monkeypatch):
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(srv.ServerError, match="SO_REUSEPORT is not available"):
        wk.check_reuse_port()

    class A:
        server_workers, worker_mode, server_cpu, rate = 2, "procs", 0.2, None
    with pytest.raises(cmdline.UsageError, match="SO_REUSEPORT"):
        cmdline.apply_workers(A(), [srv.parse_spec("raw_epoll")])


def test_a_worker_that_fails_to_start_leaves_nothing(monkeypatch):
    need_server("raw_epoll")
    started = []
    real = srv.start

    def start(spec, **kw):
        if started:
            raise srv.ServerError("the second worker cannot start")
        started.append(real(spec, **kw))
        return started[-1]
    monkeypatch.setattr(srv, "start", start)
    with pytest.raises(srv.ServerError):
        wk.start(wk.with_workers("raw_epoll", 2))
    assert started and not started[0].alive()


# --------------------------------------------------------------------------- through the runner

def _controller_or_none():
    try:
        return cpubudget.check()
    except cpubudget.BudgetError:
        return None


class _KillOne:
    """An observer that SIGKILLs the second worker once the run has started."""

    def __init__(self):
        self.pids = []

    def started(self, server):
        self.pids = server.pids()
        os.kill(self.pids[1], signal.SIGKILL)

    def tick(self, server, elapsed):
        pass

    def finish(self, server, elapsed):
        pass

    def status(self) -> str:
        return ""

    def annotate(self, record):
        pass


def _batch(tmp_path, spec, observer=None, **kw):
    ctl = _controller_or_none()
    settings = runner.Settings(kind="compare", repeat=1, duration=1.0, warmup=0.2, concurrency=16,
                               server_cpu=0.2 if ctl else None, server_cpu_mode="fixed" if ctl else "off",
                               **kw)
    batch = runner.Batch(settings, total=1, out=open(os.devnull, "w"), results_dir=str(tmp_path))
    recs = batch.execute([runner.Planned(srv.parse_spec(spec), 0, 0)],
                         observer_for=(lambda item: observer) if observer else None)
    return recs[0], ctl


def test_a_run_of_two_workers_is_recorded_with_each_share_and_cleaned_up(tmp_path):
    need_server("raw_epoll")
    rec, ctl = _batch(tmp_path, "raw_epoll:loops=2")
    assert rec["status"] == "ok", rec["error"]
    assert rec["config"]["workers"] == 2 and rec["config"]["worker_mode"] == "procs"
    m = rec["metrics"]
    assert m["lost"] == 0 and m["completed"] > 0
    assert rec["server_stats"]["served"] == sum(w["served"] for w in rec["workers"])
    assert len(rec["workers"]) == 2 and all(w["served"] > 0 and w["share"] > 0 for w in rec["workers"])
    assert rec["config"]["pinning"]["cpus"] >= 1
    if ctl is not None:
        assert rec["config"]["server_cpu"] == pytest.approx(0.4)          # 2 x 0.2, one group
        assert rec["server_cgroup"]["cores"] == pytest.approx(0.4)
        assert not cpubudget.ours(ctl) or all(not n.startswith(f"events-{os.getpid()}-")
                                              for n in cpubudget.ours(ctl))
    pids = rec["server_ready"]["pids"]
    assert len(pids) == 2 and not any(alive(p) for p in pids)


def test_a_worker_that_dies_fails_the_run_and_leaves_nothing(tmp_path):
    need_server("raw_epoll")
    obs = _KillOne()
    rec, ctl = _batch(tmp_path, "raw_epoll:loops=2", observer=obs)
    assert rec["status"] == "failed" and "server exited during the run" in rec["error"]
    assert obs.pids and not any(alive(p) for p in obs.pids)
    if ctl is not None:
        assert all(not n.startswith(f"events-{os.getpid()}-") for n in cpubudget.ours(ctl))


def _children(ppid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_ctrl_c_stops_every_worker_and_removes_the_cgroup(tmp_path):
    need_server("raw_epoll")
    env = dict(os.environ, EVENTS_RESULTS_DIR=str(tmp_path / "results"))
    p = subprocess.Popen([sys.executable, "-m", "harness", "compare", "--servers", "raw_epoll",
                          "--server-workers", "2", "--repeat", "1", "--duration", "30",
                          "--server-cpu", "0.2"],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        servers: list[int] = []
        while time.monotonic() < deadline and p.poll() is None:
            kids = _children(p.pid)
            servers = [k for k in kids if "raw_epoll" in open(f"/proc/{k}/cmdline").read()]
            if len(servers) == 2 and any("loadgen" in open(f"/proc/{k}/cmdline").read() for k in kids):
                break
            time.sleep(0.1)
        if p.poll() is not None:
            pytest.skip(f"the batch did not run here: {p.stderr.read()[-500:]}")
        assert len(servers) == 2
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130
    time.sleep(0.2)
    assert not any(alive(s) for s in servers)
    ctl = _controller_or_none()
    if ctl is not None:
        assert all(not n.startswith(f"events-{p.pid}-") for n in cpubudget.ours(ctl))


def test_clients_through_the_runner_record_one_stream(tmp_path):
    """CLIENTS=2: the run's FINAL is one merged stream, the record says how many clients."""
    need_server("raw_epoll")
    rec, _ctl = _batch(tmp_path, "raw_epoll:loops=2", clients=2)
    assert rec["status"] == "ok", rec["error"]
    assert rec["config"]["clients"] == 2 and rec["client"]["clients"] == 2
    assert rec["metrics"]["lost"] == 0
    assert rec["server_stats"]["served"] == rec["client"]["completed_total"]
