"""``make combine BATCHES=...`` (harness/combine.py): one table over several batches, each
run paired within its own round, with clear errors and a warning when a spec's code
differs between batches."""

import json
import os
import subprocess
import sys

import pytest

from harness import combine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(60)


def _write_batch(results, batch_id, rounds, ratio, commit="c0ffee", dirty=False):
    """A batch of raw_epoll and alone_proc, ``rounds`` rounds, alone_proc at ``ratio`` of
    raw_epoll's CPU per connection; each round's level drifts (pairs cancel it)."""
    os.makedirs(os.path.join(results, "runs"), exist_ok=True)
    os.makedirs(os.path.join(results, "batches"), exist_ok=True)
    ids = []
    for rnd in range(rounds):
        level = 50 + 10 * (rnd % 3)
        for pos, (spec, cpu) in enumerate((("raw_epoll", level), ("alone_proc", level * ratio))):
            run_id = f"{batch_id}-{rnd}-{spec}"
            run = {"run_id": run_id, "batch_id": batch_id, "spec": spec, "server": spec,
                   "link": "loopback", "round": rnd, "position": pos, "status": "ok",
                   "config": {"concurrency": 64, "size": 100, "rate": None, "python": None,
                              "server_cpu": 0.4},
                   "env": {"git_commit": commit, "git_dirty": dirty},
                   "metrics": {"conn_per_s": 1e6 / cpu * 0.4, "server_cpu_us_per_conn": cpu,
                               "lost": 0, "failed": 0, "p99_us": 1000,
                               "client_bound": False, "server_bound": True}}
            with open(os.path.join(results, "runs", run_id + ".json"), "w") as f:
                json.dump(run, f)
            ids.append(run_id)
    with open(os.path.join(results, "batches", batch_id + ".json"), "w") as f:
        json.dump({"batch_id": batch_id, "run_ids": ids}, f)


def _combine(results, *ids):
    return subprocess.run([sys.executable, "-m", "harness", "combine", *ids,
                           "--results-dir", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_two_batches_give_one_row_per_spec_with_every_round_paired(tmp_path):
    _write_batch(str(tmp_path), "bA", 4, 1.10)
    _write_batch(str(tmp_path), "bB", 3, 1.10)
    r = _combine(tmp_path, "bA", "bB")
    assert r.returncode == 0, r.stderr
    assert "2 batch(es), 14 runs" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("alone_proc"))
    assert "1.10" in row            # the CPU ratio, the same in every round
    assert " 7 " in row             # 4 + 3 paired rounds
    assert "warning: " not in r.stdout


def test_a_spec_that_ran_different_code_is_named(tmp_path):
    _write_batch(str(tmp_path), "bA", 3, 1.0, commit="aaaaaaaaaaaa1")
    _write_batch(str(tmp_path), "bB", 3, 1.0, commit="bbbbbbbbbbbb2", dirty=True)
    r = _combine(tmp_path, "bA", "bB")
    assert r.returncode == 0, r.stderr
    assert ("warning: alone_proc ran from aaaaaaaaaaaa, bbbbbbbbbbbb + uncommitted changes: "
            "check that it ran the same code") in r.stdout


def test_an_unknown_batch_is_a_clear_error(tmp_path):
    _write_batch(str(tmp_path), "bA", 2, 1.0)
    r = _combine(tmp_path, "bA", "b-nope")
    assert r.returncode == 2
    assert "error: no batch 'b-nope'" in r.stderr
    assert "Traceback" not in r.stderr


def test_make_combine_without_batches_says_what_to_give():
    r = subprocess.run(["make", "-s", "combine"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={k: v for k, v in os.environ.items()
                                        if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")})
    assert r.returncode == 2
    assert 'give the batches: make combine BATCHES="' in r.stderr


def test_code_warnings_are_quiet_for_one_clean_commit():
    runs = [{"spec": "x", "env": {"git_commit": "abc", "git_dirty": False}}] * 2
    assert combine.code_warnings(runs) == []
