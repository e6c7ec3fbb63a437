"""make sweep-concurrency (harness/concurrency.py): the levels parsed and refused as the
issue asks, the plan paired and interleaved at every level, each level's bound, the
regime and the flips read from the rows, and the outputs drawn from recorded runs only.
One short real sweep runs end to end (two servers, two levels, no CPU budget)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import cmdline, concurrency, records
from harness import servers as srv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(120)


def test_levels_are_whole_positive_distinct_and_sorted():
    assert concurrency.parse_levels(None) == [1, 2, 4, 8, 16, 64, 256]
    assert concurrency.parse_levels("64 1,8") == [1, 8, 64]
    for bad, why in [("0", "at least 1"), ("-3", "at least 1"), ("1.5", "not a whole number"),
                     ("4 2 4", "4 given twice"), ("", "no levels"), ("1e3", "not a whole number"),
                     ("2000000", "out of range")]:
        with pytest.raises(cmdline.UsageError, match=why):
            concurrency.parse_levels(bad)


def test_raw_epoll_leads_and_is_added_when_missing():
    assert [s.text for s in concurrency.parse_servers("master uvloop")] == ["raw_epoll", "master", "uvloop"]
    assert [s.text for s in concurrency.parse_servers("master raw_epoll")] == ["raw_epoll", "master"]
    with pytest.raises(cmdline.UsageError, match="named twice"):
        concurrency.parse_servers("master master")


def test_plan_pairs_every_spec_at_every_level_in_every_round():
    specs = concurrency.parse_servers("raw_epoll master alone_proc")
    plan = concurrency.make_plan(specs, [1, 8, 64], 4)
    assert len(plan) == 3 * 3 * 4
    for r in range(4):
        for level in (1, 8, 64):
            got = [p.spec.text for p in plan if p.round == r and p.concurrency == level]
            assert sorted(got) == ["alone_proc", "master", "raw_epoll"]
    # Interleaved: the level order and the spec order both rotate from round to round.
    firsts = [next(p.concurrency for p in plan if p.round == r) for r in range(3)]
    assert firsts == [1, 8, 64]
    assert [p.spec.text for p in plan[:3]] != [p.spec.text for p in plan[9:12]]


def _row(**kw):
    row = {"clean": 5, "client_bound": 0, "server_bound": 0, "budget": "0.4 core", "server_cpu": 0.4}
    row.update(kw)
    return row


def test_bound_of_a_level():
    assert concurrency.bound_of(_row(server_bound=5)) == "server-bound"
    assert concurrency.bound_of(_row(client_bound=4, server_bound=1)) == "client-bound"
    assert concurrency.bound_of(_row(server_bound=2)) == "latency-bound"
    assert concurrency.bound_of(_row(budget="off", server_cpu=None)) == "no budget"
    assert concurrency.bound_of(_row(clean=0)) == "no clean runs"


def _run(batch, spec, rnd, level, cpu, events_per_pass, *, bound=True):
    hist = None
    stats = None
    if events_per_pass is not None:
        stats = {"served": 1000, "passes": 1000, "events": int(1000 * events_per_pass),
                 "events_hist": [0, 1000, 0, 0, 0, 0] if events_per_pass < 2 else [0, 0, 0, 1000, 0, 0]}
        hist = stats["events_hist"]
    m = {"conn_per_s": 0.4e6 / cpu, "server_cpu_us_per_conn": cpu, "lost": 0, "failed": 0,
         "client_bound": False, "server_bound": bound, "events_per_pass": events_per_pass,
         "events_hist": hist, "passes_per_conn": 1.0 if stats else None}
    return {"schema": records.SCHEMA, "run_id": f"{batch}-{spec}-{rnd}-{level}", "batch_id": batch,
            "kind": concurrency.KIND, "time_utc": f"2026-12-06T00:{rnd:02d}:{level % 60:02d}Z",
            "spec": spec, "server": spec, "link": "loopback", "round": rnd, "position": 0,
            "status": "ok", "config": {"concurrency": level, "size": 100, "rate": None,
                                       "python": None, "server_cpu": 0.4, "duration": 3.0},
            "metrics": m, "server_stats": stats}


def _sweep(batch="bfake"):
    """uvloop: less CPU than raw epoll at 1 in flight, more at 64 (a flip); master: more at both."""
    runs = []
    for rnd in range(6):
        for level, base_cpu, ev in ((1, 90.0, 1.0), (64, 40.0, 6.0)):
            runs.append(_run(batch, "raw_epoll", rnd, level, base_cpu, ev, bound=level > 1))
            runs.append(_run(batch, "master", rnd, level, base_cpu * (1.10 + 0.01 * rnd), ev,
                             bound=level > 1))
            runs.append(_run(batch, "uvloop", rnd, level,
                             base_cpu * ((0.80 + 0.01 * rnd) if level == 1 else (1.10 + 0.01 * rnd)),
                             None, bound=level > 1))
    return runs


def test_rows_name_the_regime_and_the_flips():
    rows = concurrency.sweep_rows(_sweep())
    assert concurrency.regime_levels(rows) == [1]
    flips = concurrency.flips(rows)
    assert flips["uvloop"] == {"less CPU": [1], "more CPU": [64]}
    assert flips["master"] == {"more CPU": [1, 64]}
    at = {(r["spec"], r["concurrency"]): r for r in rows}
    assert at[("raw_epoll", 1)]["bound"] == "latency-bound"
    assert at[("raw_epoll", 64)]["bound"] == "server-bound"
    assert at[("uvloop", 1)]["events_per_pass"] is None
    md = concurrency.markdown("bfake", rows, _sweep())
    assert "uvloop: **flips**" in md and "concurrency 1 in batch bfake" in md


def test_render_reads_the_recorded_runs_only(tmp_path):
    for r in _sweep("bdisk") + _sweep("bother"):
        records.write_record(r, str(tmp_path))
    png, md, js = concurrency.render(str(tmp_path), "bdisk")
    assert os.path.getsize(png) > 10_000
    data = json.loads(open(js).read())
    assert data["batch_id"] == "bdisk" and data["levels"] == [1, 64] and data["regime_levels"] == [1]
    assert {r["spec"] for r in data["rows"]} == {"raw_epoll", "master", "uvloop"}
    assert len(data["rows"]) == 6                       # the other batch's runs are not mixed in
    with pytest.raises(cmdline.UsageError, match="no recorded runs"):
        concurrency.render(str(tmp_path), "bmissing")
    # Two batches read as one sweep: every run still paired within its own batch and round.
    png, md, js = concurrency.render(str(tmp_path), "bdisk bother")
    assert os.path.basename(js) == "bdisk+bother.json"
    data = json.loads(open(js).read())
    assert data["batch_ids"] == ["bdisk", "bother"] and len(data["rows"]) == 6
    assert all(r["paired_rounds"] == 12 for r in data["rows"] if not r["is_baseline"])
    with pytest.raises(cmdline.UsageError, match="'bmissing'"):
        concurrency.render(str(tmp_path), "bdisk bmissing")


def test_a_short_sweep_end_to_end(tmp_path):
    try:
        srv.check_available(srv.parse_spec("master"), None)
    except srv.ServerError as e:
        pytest.skip(str(e))
    results = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "harness", "sweep-concurrency", "--servers", "master",
                        "--levels", "2 1", "--repeat", "1", "--duration", "0.3", "--warmup", "0",
                        "--server-cpu", "off", "--results-dir", str(results)],
                       cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    runs, _ = records.load_runs(str(results))
    assert sorted((x["spec"], x["config"]["concurrency"]) for x in runs) == \
        [("master", 1), ("master", 2), ("raw_epoll", 1), ("raw_epoll", 2)]
    assert all(x["metrics"]["events_per_pass"] for x in runs)
    batch = runs[0]["batch_id"]
    assert all(x["batch_id"] == batch for x in runs)
    for ext in ("png", "md", "json"):
        assert (results / "concurrency" / f"{batch}.{ext}").exists()
    assert (results / "batches" / f"{batch}.md").exists()
