"""The noise guard (harness/noise.py) and the batch's exit status."""

import subprocess
import sys
import time

import pytest

from harness import cli, noise, runner

pytestmark = pytest.mark.timeout(60)


def test_sample_sees_a_busy_neighbour():
    hog = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(0.3)
        s = noise.sample(0.6)
    finally:
        hog.kill()
        hog.wait()
    assert {"busy_share", "steal_share", "loadavg", "top", "governor", "cpus"} <= set(s)
    assert s["busy_share"] is not None and s["busy_share"] > noise.BUSY_SHARE
    assert any(p["pid"] == hog.pid and p["cpu_share"] > 0.2 for p in s["top"]), s["top"]
    assert noise.busy(s)
    (w,) = noise.warnings({"start": s}, None)
    assert w.startswith("warning: the machine was busy at the start") and "python" in w


def test_quiet_batch_has_no_warning_and_a_noisy_baseline_has_one():
    quiet = {"busy_share": 0.01, "steal_share": 0.0, "top": []}
    assert noise.warnings({"start": quiet, "end": quiet}, 0.03) == []
    (w,) = noise.warnings({"start": quiet}, 0.25)
    assert "spread by 25%" in w


def _rec(spec, status="ok", lost=0, cpu=20.0):
    return {"spec": spec, "status": status, "config": {},
            "metrics": {"lost": lost, "server_cpu_us_per_conn": cpu}}


def test_baseline_spread():
    recs = [_rec("raw_epoll", cpu=20), _rec("raw_epoll", cpu=22), _rec("master", cpu=40),
            _rec("raw_epoll", status="failed", cpu=90)]
    assert runner.baseline_spread(recs) == pytest.approx(2 / 21)
    assert runner.baseline_spread(recs[:1]) is None


def test_exit_status_gates_on_failed_and_lossy_runs(capsys):
    assert cli.outcome([_rec("raw_epoll"), _rec("master")]) == 0
    assert cli.outcome([_rec("raw_epoll"), _rec("master", lost=2)]) == 1
    assert cli.outcome([_rec("raw_epoll", status="failed")]) == 1
    assert "1 run(s) failed" in capsys.readouterr().err
