"""The report never pools machine states, and every bench/compare batch gets its chart.

Fixture: the committed runs (tests/fixtures/runs: fixA loopback, fixB 100mbit, fixC a
sweep) plus a copy of fixA and fixC recorded "a week later on a faster machine" (batches
dayB and dayC: CPU per connection halved, conn/s doubled, as raw epoll's moved from 62 to
36 us between two recorded days).  A chart or table that pooled the two would show medians
and ranges neither batch measured; each test below names the batches a figure may draw.
"""

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest

from harness import batchchart, charts, frame, report

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "runs")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.timeout(120)


def _later(rec: dict, batch: str, speed: float = 2.0) -> dict:
    """``rec`` as run in batch ``batch`` a week later on a machine ``speed`` times faster."""
    r = copy.deepcopy(rec)
    r["run_id"] = f"{batch}-{rec['run_id']}"
    r["batch_id"] = batch
    r["time_utc"] = rec["time_utc"].replace("2026-11-", "2026-12-")
    m = r["metrics"]
    for k in ("conn_per_s",):
        if m.get(k) is not None:
            m[k] = m[k] * speed
    for k in ("server_cpu_us_per_conn", "p50_us", "p99_us"):
        if m.get(k) is not None:
            m[k] = m[k] / speed
    return r


@pytest.fixture
def two_days(tmp_path):
    """results/ with the fixtures and their faster copies (dayB of fixA, dayC of fixC),
    each batch with its batch file."""
    shutil.copytree(FIXTURES, tmp_path / "runs")
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*.json"))]
    later = [_later(r, "dayB") for r in recs if r["batch_id"] == "fixA"]
    later += [_later(r, "dayC") for r in recs if r["batch_id"] == "fixC"]
    for r in later:
        (tmp_path / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    (tmp_path / "batches").mkdir()
    for b in sorted({r["batch_id"] for r in recs + later}):
        ids = [r["run_id"] for r in recs + later if r["batch_id"] == b]
        kind = next(r["kind"] for r in recs + later if r["batch_id"] == b)
        (tmp_path / "batches" / f"{b}.json").write_text(json.dumps(
            {"batch_id": b, "kind": kind, "link": "loopback", "interrupted": False,
             "time_utc": "2026-12-01T00:00:00Z" if b.startswith("day") else "2026-11-26T00:00:00Z",
             "run_ids": ids}))
    return tmp_path


def _df(results):
    recs, problems = frame.load(str(results))
    assert not problems
    return frame.frame(recs, frame.incomplete_batches(str(results)))


def _day(df, batch, spec, col="conn_per_s"):
    d = df[(df["batch"] == batch) & (df["spec"] == spec) & ~df["excluded"]]
    return sorted(d[col])


def test_table_rows_come_from_one_batch_each(two_days):
    df = _df(two_days)
    s = frame.summarize(df)
    loop = s[s["link"] == "loopback"]
    assert set(loop["batch"]) == {"dayB"}                  # the latest; fixA not pooled in
    for _, row in loop.iterrows():
        day = _day(df, "dayB", row["spec"])
        assert (row["conn_per_s_min"], row["conn_per_s_max"]) == (day[0], day[-1])
    # Every batch's rows are there when asked for: one row per batch, never a mix.
    every = frame.summarize(df, latest=False)
    master = every[(every["link"] == "loopback") & (every["spec"] == "master")]
    assert sorted(master["batch"]) == ["dayB", "fixA"]
    a, b = (master[master["batch"] == x].iloc[0] for x in ("fixA", "dayB"))
    assert b["conn_per_s_median"] == pytest.approx(2 * a["conn_per_s_median"])
    assert b["server_cpu_us_per_conn_median"] == pytest.approx(a["server_cpu_us_per_conn_median"] / 2)


def test_an_interrupted_batch_is_not_the_latest(two_days):
    meta = json.loads((two_days / "batches" / "dayB.json").read_text())
    meta["interrupted"] = True
    (two_days / "batches" / "dayB.json").write_text(json.dumps(meta))
    df = _df(two_days)
    loop = frame.summarize(df)
    assert set(loop[loop["link"] == "loopback"]["batch"]) == {"fixA"}
    assert frame.headline_batches(frame.summarize(df, latest=False))["loopback"] == "fixA"


def test_headline_batch_per_link_and_its_designs_only(two_days):
    # A revision spec and an option spec ran in the latest batch: in the tables, not the headline.
    for rec in [json.loads(p.read_text()) for p in (two_days / "runs").glob("dayB-*master.json")]:
        for spec in ("master@abc1234", "master:diet"):
            r = copy.deepcopy(rec)
            r["run_id"], r["spec"] = rec["run_id"] + spec.replace("@", "-").replace(":", "-"), spec
            (two_days / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    df = _df(two_days)
    every = frame.summarize(df, latest=False)
    chosen = frame.headline_batches(every)
    assert chosen == {"loopback": "dayB", "100mbit": "fixB"}
    rows = frame.headline_rows(every, "loopback", "dayB")
    assert set(rows["batch"]) == {"dayB"}
    assert set(rows["spec"]) == {"raw_epoll", "master", "alone_proc"}
    assert {"master@abc1234", "master:diet"} <= set(frame.summarize(df)["spec"])
    assert frame.is_headline_spec("alone_proc") and not frame.is_headline_spec("alone_proc@d3bc2e9")
    assert not frame.is_headline_spec("loop:mod:Cls") and not frame.is_headline_spec("master:diet")


def _capture(monkeypatch, module, name, log):
    real = getattr(module, name)

    def spy(*args, **kwargs):
        log.setdefault(name, []).append((args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, spy)


def test_every_chart_draws_one_batch_per_link(two_days, monkeypatch):
    from tests.test_report import _with_cpu_split
    for p in (two_days / "runs").glob("*.json"):           # user/sys recorded: cpu_split drawn
        p.write_text(json.dumps(_with_cpu_split([json.loads(p.read_text())])[0]))
    log: dict = {}
    for name in ("bar_chart", "chart_latency", "chart_cpu_split", "chart_over_time",
                 "chart_cpu_vs_rate", "chart_latency_vs_rate", "chart_interpreters"):
        _capture(monkeypatch, charts, name, log)
    _capture(monkeypatch, batchchart, "draw", log)
    assert report.main(["--results-dir", str(two_days)]) == 0

    def batches_of(frame_, link=None):
        d = frame_ if link is None else frame_[frame_["link"] == link]
        return set(d["batch"])

    for (rows, runs, _path), kw in log["bar_chart"]:
        link = rows["link"].iloc[0]
        want = {"loopback": "dayB", "100mbit": "fixB"}[link]
        assert batches_of(rows) == batches_of(runs) == {want} and kw["batch"] == want
        assert rows["conn_per_s_median"].max() <= runs["conn_per_s"].max()
    for (rows, _path), kw in log["chart_latency"]:
        assert len(batches_of(rows)) == 1 and kw["batch"] in batches_of(rows)
    for (meta, rows, _path), _ in log["draw"]:
        assert {r["batch_id"] if "batch_id" in r else meta["batch_id"] for r in rows} == {meta["batch_id"]}
        assert meta["batch_id"] in ("dayB", "fixB")
        assert meta["batch_id"] in batchchart.title_of(meta, rows)
    (split, _), _ = log["chart_cpu_split"][0]
    assert set(split["batch"]) == {"dayB"}
    (over, _), _ = log["chart_over_time"][0]
    for link in set(over["link"]):
        assert len(batches_of(over, link)) == 1
    for name in ("chart_cpu_vs_rate", "chart_latency_vs_rate"):
        (sw, _), _ = log[name][0]
        assert batches_of(sw) == {"dayC"}, name            # the latest sweep, not both
    md = (two_days / "REPORT.md").read_text()
    assert "`dayB`" in md and "| dayB |" in md and "| dayC |" in md and "| fixC |" in md


def test_interpreters_chart_one_budget_one_batch_each(two_days):
    recs, _ = frame.load(str(two_days))
    extra = []
    # python3.12 at no budget (batch p12) and at 1.5 core later (p12b); python3.13 at no budget.
    for tag, py, budget in (("p12", "3.12.1", None), ("p12b", "3.12.1", 1.5), ("p13", "3.13.0", None)):
        for r in recs:
            if r["batch_id"] == "fixA":
                r2 = copy.deepcopy(r)
                r2["run_id"], r2["batch_id"] = f"{tag}-{r['run_id']}", tag
                r2["config"]["python"] = f"/opt/{tag}/bin/python3"
                r2["config"]["server_cpu"] = budget
                if tag == "p12b":
                    r2["time_utc"] = r["time_utc"].replace("2026-11-", "2026-12-")
                r2.setdefault("env", {})["server_python"] = {"version": py, "implementation": "cpython"}
                extra.append(r2)
    every = frame.summarize(frame.frame(recs + extra), latest=False)
    rows = charts.interpreter_rows(every)
    assert set(rows["budget"]) == {"off"}                  # the budget most interpreters ran at
    assert rows.groupby("python")["batch"].nunique().max() == 1
    assert "p12b" not in set(rows["batch"])


def test_batch_chart_is_drawn_from_the_batch_and_named_by_it(two_days):
    path = batchchart.write(str(two_days), "dayB")
    assert path == str(two_days / "batches" / "dayB.png")
    assert (two_days / "batches" / "dayB.png").read_bytes()[:4] == b"\x89PNG"
    meta, rows, runs = batchchart.load(str(two_days), "dayB")
    assert {r["batch_id"] for r in runs} == {"dayB"}
    assert {r["spec"] for r in rows} == {"raw_epoll", "master", "alone_proc"}
    assert "batch dayB" in batchchart.title_of(meta, rows)
    with pytest.raises(batchchart.BatchError, match="no closed-loop rows"):
        batchchart.load(str(two_days), "dayC")               # a sweep: the report draws it
    with pytest.raises(batchchart.BatchError, match="no batch 'nope'"):
        batchchart.resolve(str(two_days), "nope")


def test_latest_is_the_newest_batch_file(two_days):
    assert batchchart.resolve(str(two_days), "latest") in ("dayB", "dayC")
    meta = json.loads((two_days / "batches" / "fixA.json").read_text())
    meta["time_utc"] = "2027-01-01T00:00:00Z"
    (two_days / "batches" / "fixA.json").write_text(json.dumps(meta))
    assert batchchart.resolve(str(two_days), "latest") == "fixA"


def test_after_batch_without_matplotlib_says_how_to_draw_it(two_days, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import matplotlib -> ImportError
    line = batchchart.after_batch(str(two_days), "dayB", "compare")
    assert line.startswith("note: ") and "make chart BATCH=dayB" in line
    assert not (two_days / "batches" / "dayB.png").exists()
    assert batchchart.after_batch(str(two_days), "dayC", "sweep") == ""   # not a bench/compare


def test_after_batch_draws_the_chart(two_days):
    line = batchchart.after_batch(str(two_days), "dayB", "bench")
    assert line.startswith("batch chart ") and (two_days / "batches" / "dayB.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["chart", "nope"], "error: no batch 'nope'"),
    (["chart", "dayC"], "error: batch dayC has no closed-loop rows"),
])
def test_chart_command_bad_batch_is_one_line_exit_2(two_days, argv, message):
    p = subprocess.run([sys.executable, "-m", "harness", *argv, "--results-dir", str(two_days)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith(message) and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (two_days / "batches" / "dayC.png").exists()


def test_chart_command_latest(two_days):
    p = subprocess.run([sys.executable, "-m", "harness", "chart", "dayB", "--results-dir", str(two_days)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (two_days / "batches" / "dayB.png").exists()
