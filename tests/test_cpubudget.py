"""CPU budgets (harness/cpubudget.py): the quota reaches every thread of the server, the
group goes away after the run (also after SIGTERM and Ctrl-C, and a killed run's at the
next start), the fallback without privileges is one line, and runs record the budget.

The tests that create cgroups need root and a cpu controller; elsewhere they skip with
the reason.  Runs are 1-2 s on loopback; nothing here asserts a speed."""

import io
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import cmdline, cpubudget, records, runner
from harness import procs
from harness import servers as srv

ROOT = records.ROOT
PY = sys.executable

pytestmark = pytest.mark.timeout(120)


def _controller():
    try:
        return cpubudget.check()
    except cpubudget.BudgetError as e:
        pytest.skip(f"no usable cpu controller here: {e}")


def _our_groups(ctl, pid=None):
    names = cpubudget.ours(ctl)
    if pid is not None:
        names = [n for n in names if n.startswith(f"{cpubudget.PREFIX}{pid}-")]
    return names


def _cgroup_of(tid: int, ctl) -> str | None:
    """The cpu-controller cgroup path of a thread, from /proc/<tid>/cgroup."""
    try:
        with open(f"/proc/{tid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _hid, controllers, path = line.split(":", 2)
        if ctl.version == 2 and controllers == "":
            return path
        if ctl.version == 1 and "cpu" in controllers.split(","):
            return path
    return None


# --------------------------------------------------------------------------- parsing, detection

@pytest.mark.parametrize("text,expected", [("0.4", 0.4), ("1", 1.0), (" 0.25 ", 0.25), ("auto", "auto"),
                                           ("OFF", "off"), (None, None)])
def test_parse_accepts(text, expected):
    assert cpubudget.parse(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-1", "nan", "inf", "lots", "0.01", str((os.cpu_count() or 1) + 1)])
def test_parse_refuses_with_what_is_accepted(text):
    with pytest.raises(ValueError) as e:
        cpubudget.parse(text)
    assert "auto" in str(e.value) or "budget" in str(e.value) or "CPU" in str(e.value)


def test_cli_refuses_a_bad_budget_before_anything_runs(tmp_path):
    r = subprocess.run([PY, "-m", "harness", "bench", "--server-cpu", "nan"], cwd=ROOT, capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, EVENTS_RESULTS_DIR=str(tmp_path)))
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "--server-cpu" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_detect_prefers_v2_with_cpu_then_v1(tmp_path):
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("memory pids\n")
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    mounts = [(str(v2), "cgroup2", ["rw"]), (str(v1), "cgroup", ["rw", "cpu"])]
    assert cpubudget.detect(mounts) == cpubudget.Controller(1, str(v1))
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cpubudget.detect(mounts) == cpubudget.Controller(2, str(v2))
    with pytest.raises(cpubudget.BudgetError) as e:
        cpubudget.detect([(str(v2 / "nothing"), "cgroup2", [])])
    assert "cpu controller" in str(e.value)


# --------------------------------------------------------------------------- fallback without privileges

def test_default_budget_falls_back_in_one_line(monkeypatch):
    def refuse(ctl=None):
        raise cpubudget.BudgetError("no permission to create cgroups under /sys/fs/cgroup/cpu (run as root)")
    monkeypatch.setattr(cpubudget, "check", refuse)
    err = io.StringIO()
    assert cmdline.resolve_server_cpu(None, budget_default=True, out=err) == (None, "off")
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: running without a server CPU budget")
    assert "run as root" in lines[0] and "client-bound" in lines[0]
    # Given explicitly, the same situation is an error, not a silent unbudgeted run.
    with pytest.raises(procs.RunnerError) as e:
        cmdline.resolve_server_cpu(0.4, budget_default=True, out=err)
    assert "SERVER_CPU=0.4" in str(e.value) and "SERVER_CPU=off" in str(e.value)
    assert cmdline.resolve_server_cpu("off", budget_default=True) == (None, "off")
    # No default budget where the command has none (sweep, soak) or an offered rate is given.
    assert cmdline.resolve_server_cpu(None, budget_default=False) == (None, "off")


# --------------------------------------------------------------------------- real groups

def test_quota_applies_to_every_thread_and_the_group_goes(server):
    ctl = _controller()
    group = cpubudget.Group(ctl, 0.3)
    s = None
    try:
        if ctl.version == 2:
            assert (open(os.path.join(group.path, "cpu.max")).read().split()
                    == [str(group.quota_us), str(group.period_us)])
        else:
            assert int(open(os.path.join(group.path, "cpu.cfs_quota_us")).read()) == 6000
            assert int(open(os.path.join(group.path, "cpu.cfs_period_us")).read()) == 20000
        # mul_thread starts its pool's threads after exec: they must all be in the group.
        s = server("mul_thread:workers=3", cgroup_procs=group.procs_file)
        for _ in range(20):                            # the pool starts its threads on demand
            with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
                c.sendall(b"x" * 100)
                got = b""
                while len(got) < 100:
                    chunk = c.recv(100)
                    assert chunk
                    got += chunk
        tids = [int(t) for t in os.listdir(f"/proc/{s.pid}/task")]
        assert len(tids) >= 2, tids                    # the loop + at least one worker
        rel = "/" + group.name
        assert all(_cgroup_of(t, ctl) == rel for t in tids), [(t, _cgroup_of(t, ctl)) for t in tids]
        assert s.pid in group.pids()
        st = group.stat()
        assert {"nr_periods", "nr_throttled", "throttled_s"} <= set(st)
        s.stop()
        assert group.remove() and not os.path.exists(group.path)
    finally:
        if s is not None:
            s.stop()
        group.remove()


def test_budgeted_runs_record_quota_and_throttling(tmp_path):
    ctl = _controller()
    if not os.access(os.path.join(srv.BUILD, "loadgen"), os.X_OK):
        pytest.skip("build/loadgen not built")
    out = io.StringIO()
    recs = runner.run_batch(["raw_epoll"], kind="bench", repeat=1, duration=1.5, warmup=0,
                            concurrency=16, results_dir=str(tmp_path), out=out,
                            server_cpu=0.2, server_cpu_mode="fixed")
    (r,) = recs
    assert r["status"] == "ok", r["error"]
    assert r["config"]["server_cpu"] == 0.2 and r["config"]["server_cpu_mode"] == "fixed"
    g = r["server_cgroup"]
    assert g["quota_us"] == 4000 and g["period_us"] == 20000 and g["cgroup_version"] == ctl.version
    assert g["nr_periods"] > 0 and g["nr_throttled"] is not None and g["throttled_s"] is not None
    m = r["metrics"]
    assert "server_bound" in m and "client_bound" in m
    # Held to 0.2 core, the server cannot have used much more than that (CFS may overshoot a
    # period's worth at the edges of the run).
    assert m["server_cpu_share"] < 0.2 * 1.5
    assert "server CPU budget: 0.2 core" in out.getvalue() and "CPU budget" in out.getvalue()
    assert _our_groups(ctl, os.getpid()) == []
    header = (tmp_path / "runs.csv").read_text().splitlines()[0].split(",")
    assert {"server_cpu", "server_bound", "throttled_s"} <= set(header)


def test_unbudgeted_runs_say_so(tmp_path):
    if not os.access(os.path.join(srv.BUILD, "loadgen"), os.X_OK):
        pytest.skip("build/loadgen not built")
    (r,) = runner.run_batch(["raw_epoll"], kind="compare", repeat=1, duration=1, warmup=0, concurrency=8,
                            results_dir=str(tmp_path), out=io.StringIO())
    assert r["config"]["server_cpu"] is None and r["config"]["server_cpu_mode"] == "off"
    assert r["server_cgroup"] is None and r["metrics"]["server_bound"] is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_group_removed_after_interrupt(tmp_path, sig):
    ctl = _controller()
    if not os.access(os.path.join(srv.BUILD, "loadgen"), os.X_OK):
        pytest.skip("build/loadgen not built")
    env = dict(os.environ, EVENTS_RESULTS_DIR=str(tmp_path), PYTHONPATH=ROOT)
    p = subprocess.Popen([PY, "-m", "harness", "bench", "--variant", "master", "--server-cpu", "0.3",
                          "--repeat", "2", "--duration", "20", "--warmup", "0", "--concurrency", "8"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = False
        while time.monotonic() < deadline and not seen:
            seen = bool(_our_groups(ctl, p.pid))
            time.sleep(0.1)
        assert seen, "the budgeted run never created its group"
        time.sleep(1.0)                                   # mid-run: server and client running
        p.send_signal(sig)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, out[-2000:]
    assert _our_groups(ctl, p.pid) == [], out[-2000:]


def test_stale_group_of_a_killed_run_is_removed_at_the_next_start():
    ctl = _controller()
    # A PID that is not running: a child that has exited and been reaped.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(ctl.root, f"{cpubudget.PREFIX}{dead.pid}-12345-1")
    live = cpubudget.Group(ctl, 0.5)                     # ours, alive: must stay
    os.mkdir(stale)
    try:
        err = io.StringIO()
        removed = cpubudget.cleanup_stale(ctl, out=err)
        assert os.path.basename(stale) in removed and not os.path.exists(stale)
        assert os.path.exists(live.path)
        assert "removed stale cgroup" in err.getvalue()
    finally:
        if os.path.exists(stale):
            os.rmdir(stale)
        live.remove()


def test_serve_run_with_a_budget(tmp_path):
    """Two-host server side: the server held to its budget, the record says so, and the
    group is gone after SIGTERM."""
    ctl = _controller()
    env = dict(os.environ, EVENTS_RESULTS_DIR=str(tmp_path), PYTHONPATH=ROOT)
    p = subprocess.Popen([PY, "-m", "harness", "twohost-serve", "raw_epoll", "--host", "127.0.0.1", "--port", "0",
                          "--server-cpu", "0.25", "--results-dir", str(tmp_path)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline and "listening" not in line:
            line = p.stdout.readline()
        assert "held to 0.25 core" in line, line
        assert _our_groups(ctl, p.pid)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    assert _our_groups(ctl, p.pid) == []
    recs, _ = records.load_runs(str(tmp_path / "runs"))
    (rec,) = recs
    assert rec["config"]["server_cpu"] == 0.25 and rec["server_cgroup"]["quota_us"] == 5000


def test_serve_in_the_foreground_with_a_budget():
    """`serve SPEC --server-cpu F`: the server runs as our child inside its group (READY on
    our stdout), SIGTERM reaches it (STATS, exit 0) and the group is removed."""
    ctl = _controller()
    p = subprocess.Popen([PY, "-m", "harness", "serve", "raw_epoll", "--port", "0", "--server-cpu", "0.25"],
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("READY "), line
        assert _our_groups(ctl, p.pid)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "STATS " in out and "held to 0.25 core" in err
    assert _our_groups(ctl, p.pid) == []
