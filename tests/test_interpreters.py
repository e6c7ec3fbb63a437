"""harness/interpreters.py: the interpreters table and chart of a recorded batch (issue 25),
on a synthetic batch whose figures are known, so every ratio can be checked."""

from __future__ import annotations

import json
import os

import pytest

from harness import interpreters

PYPY = {"name": "pypy3", "executable": "/usr/bin/pypy3", "implementation": "pypy",
        "soabi": "pypy39-pp73", "version": "3.9.16"}
COMPILED = {"part": "lib", "compiled": ["variants/alone_proc/events.py"], "interpreted": {"variants/__init__.py": "x"},
            "mypy": "2.4.1", "soabi": "cpython-311", "source_commit": "abcdef0123456789",
            "source_dirty": False}
# spec -> CPU µs per connection (conn/s = 1e6 / cpu: server-bound on one core)
CPU = {"raw_epoll": 20.0, "alone_proc": 30.0, "uvloop": 25.0, "c_epoll:diet": 5.0,
       "raw_epoll:python=pypy3": 10.0, "alone_proc:python=pypy3": 12.0,
       "alone_proc:compiled": 20.0, "alone_proc:compiled,diet": 10.0}


def _batch(tmp_path, rounds=6) -> str:
    runs_dir, batches = tmp_path / "runs", tmp_path / "batches"
    runs_dir.mkdir()
    batches.mkdir()
    ids = []
    for rnd in range(rounds):
        for pos, spec in enumerate(CPU):
            # per-round noise, the same factor for every spec of a round: paired ratios are exact
            cpu = CPU[spec] * (1 + 0.01 * rnd)
            rid = f"r{rnd}-{pos}"
            ids.append(rid)
            cfg = {"concurrency": 64, "size": 100, "duration": 3, "warmup": 2, "python": None,
                   "server_cpu": None, "rate": None,
                   "spec_python": PYPY if "pypy3" in spec else None,
                   "compiled": COMPILED if "compiled" in spec else None}
            rec = {"run_id": rid, "batch_id": "bX", "kind": "compare", "spec": spec,
                   "server": spec.split(":")[0], "link": "loopback", "round": rnd, "position": pos,
                   "status": "ok", "config": cfg, "env": {"server_python": {"version": "3.11.7"}},
                   "metrics": {"conn_per_s": 1e6 / cpu, "server_cpu_us_per_conn": cpu, "lost": 0,
                               "client_bound": False, "server_bound": True}}
            (runs_dir / f"{rid}.json").write_text(json.dumps(rec))
    (batches / "bX.json").write_text(json.dumps({"batch_id": "bX", "kind": "compare",
                                                 "time_utc": "2026-12-06T15:00:00Z", "run_ids": ids}))
    return str(tmp_path)


def test_table_pairs_each_spec_with_default_and_same_interpreter_raw_epoll(tmp_path):
    results = _batch(tmp_path)
    md, png = interpreters.write(results, "latest")
    rows = {r["spec"]: r for r in interpreters.table(
        [json.load(open(os.path.join(results, "runs", f))) for f in os.listdir(os.path.join(results, "runs"))])[0]}
    assert rows["alone_proc:python=pypy3"]["interp"] == "pypy"
    assert rows["alone_proc:python=pypy3"]["same_base"] == "raw_epoll:python=pypy3"
    assert rows["alone_proc:python=pypy3"]["cpu_ratio_same"] == pytest.approx(1.2)
    assert rows["alone_proc:python=pypy3"]["cpu_vs_default"].startswith("0.60")
    assert rows["alone_proc:compiled"]["interp"] == "mypyc-lib"
    assert rows["alone_proc:compiled"]["same_base"] == "raw_epoll"
    assert rows["alone_proc:compiled"]["cpu_ratio_same"] == pytest.approx(1.0)
    text = open(md).read()
    assert "mypyc 2.4.1 on the default CPython: the library compiled" in text
    assert "PyPy 3.9.16" in text and "CPython 3.11.7 (default)" in text
    # 20/25 = 0.80 <= 0.85: met; 10/5 = 2.0 > 1.3: missed
    assert "compiled alone_proc CPU/conn <= 0.85 x uvloop: 0.80" in text and "**met**" in text
    assert "c_epoll:diet: 2.00" in text and "**missed**" in text
    assert "the library's extra on PyPy, alone_proc:python=pypy3 / raw_epoll:python=pypy3: CPU 1.20" in text
    assert os.path.getsize(png) > 1000


def test_a_missing_batch_is_one_error_line(tmp_path, capsys):
    (tmp_path / "batches").mkdir()
    assert interpreters.main(["nope", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
