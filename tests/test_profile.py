"""make profile, make syscalls (tiny runs) and the REPRODUCTION.md writer (fixtures).

The profile and syscall tests start real servers on port 0 and drive 300
connections with build/loadgen over loopback; a few seconds each.  They check
what the commands produce, never how fast anything was."""

import json
import os
import shutil

import pytest

from harness import frame, profile, reproduce, reproduction, study, syscalls
from harness import procs

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

needs_loadgen = pytest.mark.skipif(not os.access(procs.loadgen_path(), os.X_OK),
                                   reason="build/loadgen is not built (make build)")
needs_strace = pytest.mark.skipif(shutil.which("strace") is None,
                                  reason="strace is not installed (apt-get install strace)")


# --------------------------------------------------------------------------- profile

@needs_loadgen
@pytest.mark.timeout(90)
@pytest.mark.parametrize("spec", ["raw_epoll", "master", "mul_thread"])
def test_profile_tiny_run(tmp_path, spec, capsys):
    assert profile.main(["--variant", spec, "--connections", "300",
                         "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    d = tmp_path / "profile"
    txt = (d / f"{spec}.txt").read_text()
    assert "Timer unit:" in txt                        # the line_profiler output
    assert "The study's finding" in txt
    assert "HOLDS" in txt or "does NOT hold" in txt or "is BORDERLINE" in txt
    assert (d / f"{spec}.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((d / f"{spec}.json").read_text())
    assert res["connections"] == 300
    cats = res["categories"]
    # One recv, one send, one register/modify/unregister and one close per connection:
    # counted once each, at the innermost line, never twice through a wrapper.
    for name in ("recv", "send", "register", "modify", "unregister", "close"):
        assert cats[name]["per_connection"] == pytest.approx(1.0, abs=0.05), name
        assert 0 < cats[name]["share"] < 1
    assert "recv" in out
    if spec == "mul_thread":
        # the loop's locks, counted by the variant's CountingLock, per connection
        assert res["locks"]["acquisitions"] > 0 and res["locks"]["per_connection"] > 0
        assert "acquisitions per connection" in txt or "acquisitions/conn" in txt
    else:
        assert "locks" not in res


def test_profile_rejects_a_c_server(tmp_path, capsys):
    assert profile.main(["--variant", "c_epoll", "--connections", "10",
                         "--results-dir", str(tmp_path)]) == 1
    assert "not a Python server" in capsys.readouterr().err


def test_profile_rejects_a_loop_it_cannot_see(tmp_path, capsys):
    assert profile.main(["--variant", "asyncio", "--results-dir", str(tmp_path)]) == 1
    assert "not ours to profile" in capsys.readouterr().err


def test_profile_unknown_variant_is_one_line(tmp_path, capsys):
    assert profile.main(["--variant", "nosuch", "--results-dir", str(tmp_path)]) == 2   # bad input
    err = capsys.readouterr().err
    assert "unknown server or variant 'nosuch'" in err and "Traceback" not in err


# --------------------------------------------------------------------------- syscalls

STRACE_SAMPLE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.004000           1      3000           epoll_ctl
 20.00    0.002000           1      1010        10 accept4
  5.00    0.000500           0        50           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.006500           1      4060        10 total
"""


def test_parse_strace_summary():
    calls, total = syscalls.parse_strace_summary(STRACE_SAMPLE)
    assert calls["epoll_ctl"]["calls"] == 3000 and calls["accept4"]["errors"] == 10
    assert total["calls"] == 4060
    pc = syscalls.per_connection(calls, 1000)
    assert pc["total"] == pytest.approx(4.06)
    assert list(pc["by_name"]) == ["epoll_ctl", "accept4", "epoll_wait"]
    assert pc["errors_by_name"] == {"accept4": 0.01}
    assert syscalls.safe_name("mul_thread:pool=oneshot,workers=4") == "mul_thread_pool=oneshot_workers=4"


@needs_loadgen
@needs_strace
@pytest.mark.timeout(90)
def test_syscalls_tiny_run(tmp_path, capsys):
    assert syscalls.main(["--variant", "raw_epoll", "--connections", "300",
                          "--results-dir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "syscalls" / "raw_epoll.json").read_text())
    assert res["connections"] == 300
    by = res["per_connection"]["by_name"]
    # The classic pattern: one each of recv/send/close and three epoll_ctl per connection.
    assert by["epoll_ctl"] == pytest.approx(3.0, abs=0.05)
    assert by["close"] == pytest.approx(1.0, abs=0.05)
    assert res["per_connection"]["total"] > 6
    assert "system calls per connection" in (tmp_path / "syscalls" / "raw_epoll.md").read_text()


def test_syscalls_without_strace_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(syscalls.shutil, "which", lambda name: None)
    assert syscalls.main(["--variant", "raw_epoll", "--results-dir", str(tmp_path)]) == 1
    assert "strace not found: apt-get install strace" in capsys.readouterr().err


# --------------------------------------------------------------------------- reproduce

def _fixture_records():
    records, problems = frame.load(FIXTURES)
    assert not problems
    return records


def test_reproduction_md_from_fixture_records(tmp_path):
    path = reproduction.write_reproduction(_fixture_records(), str(tmp_path))
    md = open(path).read()
    # the study's figures beside ours, absolute and as ratios
    assert "| Python raw epoll | 3,200 | 1.00 | raw_epoll | 3,100 [3,100-3,100] | 1 |" in md
    assert "| Events (master) | 2,800 | 0.88 | master | 2,700 [2,700-2,700] | 0.87 |" in md
    assert "| Events with unified proc (alone_proc) | 18,125 | 0.90 | alone_proc | not run |" in md
    assert "no clean run (1 excluded)" in md                 # mul_thread failed
    assert "## Which of the study's findings hold here" in md
    assert "## What differs from the study, and why" in md and "No link delay" in md
    assert "redis_ae is not built here" in md               # c_epoll substitutes


def test_reproduction_never_files_loopback_under_a_link_name(tmp_path):
    # All experiments fell back to loopback: the 100mbit rows must show loopback runs
    # (fixA), labelled as such, and never the fixture's 100mbit runs.
    link_of = {"100mbit": "loopback", "1000mbit": "loopback"}
    md = open(reproduction.write_reproduction(_fixture_records(), str(tmp_path),
                                           link_of=link_of)).read()
    assert "Our link: **loopback (instead of 100mbit: no privilege)**" in md
    assert "| Events (master) | 2,800 | 0.88 | master | 20,500 [20,000-21,000] |" in md
    assert "3,100 [3,100-3,100]" not in md
    assert "Loopback instead of 100mbit, 1000mbit" in md


def test_reproduce_plan_pairs_each_link_in_one_batch():
    exps = reproduction.experiments("c_epoll")
    batches = reproduce.plan(exps, {"100mbit": "100mbit", "1000mbit": "1000mbit"})
    assert [(lk, specs) for lk, specs, _ in batches] == [
        ("100mbit", ["raw_epoll", "master", "c_epoll", "mul_thread", "master:poll_delay=0.1"]),
        ("1000mbit", ["raw_epoll", "master", "alone_proc", "c_epoll"])]
    merged = reproduce.plan(exps, {"100mbit": "loopback", "1000mbit": "loopback"})
    assert len(merged) == 1 and merged[0][0] == "loopback"
    assert merged[0][2] == ["100mbit", "1000mbit"]


def test_study_figures_transcribed():
    assert study.lookup("1000mbit", "alone_proc").conn_per_s == 18125
    assert study.ratio_to_raw_epoll(study.lookup("1000mbit", "master")) == pytest.approx(13107 / 20118)
    assert study.lookup("100mbit", "master:poll_delay=0.1").conn_per_s == 80
    assert study.lookup("1000mbit", "redis_ae").values == (37816, 32258, 19659, 19152)


def test_report_rewrites_the_latest_reproduction_only(tmp_path):
    records = _fixture_records()
    for r in records:       # fixB (100mbit) is an older reproduction, fixA a newer one
        rid = {"fixA": "repro-new", "fixB": "repro-old"}.get(r.get("batch_id"))
        if rid:
            r["labels"] = {"reproduction": rid,
                           "intended_link": "100mbit" if rid == "repro-old" else "1000mbit"}
            r["time_utc"] = ("2026-11-27T00:00:00Z" if rid == "repro-new"
                             else "2026-11-20T00:00:00Z")
    path = reproduction.refresh_latest(records, str(tmp_path))
    md = open(path).read()
    # Only the newest reproduction's batch, its link read from the records.
    assert "(batches fixA)" in md
    assert "Our link: **loopback (instead of 1000mbit: no privilege)**" in md
    assert reproduction.refresh_latest([r for r in records if r.get("batch_id") == "fixC"],
                                    str(tmp_path)) is None
