"""The summary engine (harness/summary.py): one rule for which runs count, one pairing,
one baseline rule, the interval and the verdict -- and the batch table and REPORT.md agree."""

import copy
import os
import re
import shutil

import pytest

from harness import frame, records, report, summary
from harness import tables

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "runs")
pytestmark = pytest.mark.timeout(60)


def _run(spec, rnd, cps, cpu, *, batch="b1", pos=0, status="ok", lost=0, rate=None):
    return {"run_id": f"{batch}-{spec}-{rnd}-{rate}", "batch_id": batch, "spec": spec,
            "server": spec.split("@")[0].split(":")[0], "link": "loopback", "round": rnd,
            "position": pos, "status": status, "error": None if status == "ok" else "boom",
            "config": {"concurrency": 64, "size": 100, "rate": rate, "python": None},
            "metrics": {"conn_per_s": cps, "server_cpu_us_per_conn": cpu, "lost": lost,
                        "failed": lost, "p99_us": 1000}}


def _batch(specs, ratios, n, **kw):
    """n rounds of specs (order rotated); spec i runs at ratios[i] of the first's rate."""
    out = []
    for rnd in range(n):
        drift = 1 + 0.2 * ((rnd * 7) % 5) / 5          # rounds drift a lot; ratios do not
        for pos in range(len(specs)):
            i = (rnd + pos) % len(specs)
            out.append(_run(specs[i], rnd, 10000 * drift * ratios[i][rnd % len(ratios[i])],
                            40 / drift, pos=pos, **kw))
    return out


def _rows(runs, **kw):
    return {r["spec"]: r for r in summary.summarize(runs, **kw)}


def test_interval_coverage_is_the_binomial_one():
    assert summary.coverage(5, 1) == pytest.approx(1 - 2 / 32)
    assert summary.median_interval([3, 1, 2, 5, 4]) == (1, 5, pytest.approx(0.9375))
    assert summary.median_interval([1, 2, 3, 4]) is None           # 87.5 %: no interval
    lo, hi, cov = summary.median_interval(list(range(1, 21)))      # n=20: x(6)..x(15)
    assert (lo, hi) == (6, 15) and cov >= 0.95
    assert summary.coverage(20, 7) < 0.95


def test_verdicts():
    assert summary.verdict((1.01, 1.07, 0.95), up="faster", down="slower") == "faster"
    assert summary.verdict((0.8, 0.9, 0.95), up="faster", down="slower") == "slower"
    assert summary.verdict((0.98, 1.0, 0.95), up="faster", down="slower") == "not distinguishable"
    assert summary.verdict(None, up="faster", down="slower") is None


def test_slower_spec_gets_an_interval_below_one_and_its_verdict():
    rows = _rows(_batch(["raw_epoll", "asyncio"], [[1.0], [0.60, 0.62, 0.58, 0.61, 0.59]], 5))
    a = rows["asyncio"]
    assert a["baseline"] == "raw_epoll" and rows["raw_epoll"]["is_baseline"]
    lo, hi, cov = a["ratio_conn_interval"]
    assert hi < 1 and a["verdict_conn"] == "slower" and cov == pytest.approx(0.9375)
    assert a["verdict_cpu"] == "not distinguishable"                 # same CPU in every round
    assert "slower" in tables.format_table(_batch(["raw_epoll", "asyncio"],
                                                  [[1.0], [0.6, 0.62, 0.58, 0.61, 0.59]], 5))


def test_a_a_revision_against_the_working_tree_is_not_distinguishable():
    runs = _batch(["master@HEAD", "master"], [[1.01, 0.98, 1.02, 0.99, 1.0], [1.0]], 5)
    rows = _rows(runs)
    head = rows["master@HEAD"]
    assert rows["master"]["is_baseline"] and head["baseline"] == "master"   # working tree is the base
    assert head["verdict_conn"] == "not distinguishable" and head["paired_rounds"] == 5
    text = tables.format_table(runs)
    line = next(ln for ln in text.splitlines() if ln.startswith("master@HEAD"))
    assert re.search(r"\d\.\d\d \[\d\.\d\d–\d\.\d\d\]", line) and "not distinguishable" in line
    assert "5 (94% CI)" in line


def test_too_few_rounds_say_so():
    rows = _rows(_batch(["raw_epoll", "master"], [[1.0], [0.8]], 3))
    assert rows["master"]["ratio_conn_interval"] is None and rows["master"]["verdict_conn"] is None
    assert summary.verdict_text(rows["master"]) == "too few rounds (n=3)"


def test_failed_and_lossy_runs_are_excluded_and_counted_the_same_everywhere():
    runs = _batch(["raw_epoll", "master"], [[1.0], [0.8]], 3)
    runs[1]["status"] = "failed"
    runs[3]["metrics"]["lost"] = 4
    rows = _rows(runs)
    spec1, spec3 = runs[1]["spec"], runs[3]["spec"]
    assert sum(r["excluded"] for r in rows.values()) == 2
    assert rows[spec1]["failed_runs"] >= 1 and rows[spec3]["lossy_runs"] >= 1
    df = frame.frame(runs)
    assert int(df["excluded"].sum()) == 2 and summary.counts(runs[0])


def test_baseline_rule_without_raw_epoll_is_the_first_working_tree_spec():
    assert summary.choose_baseline(["master@HEAD~1", "alone_proc", "master"]) == "alone_proc"
    assert summary.choose_baseline(["master", "raw_epoll:diet"]) == "raw_epoll:diet"
    assert summary.choose_baseline(["a@x", "b@y"]) == "a@x"


def test_pairs_never_cross_batches_or_rates():
    a = _batch(["raw_epoll", "master"], [[1.0], [0.5]], 5, batch="A")
    b = [_run("master", r, 99999, 1, batch="B") for r in range(5)]    # no raw_epoll in B
    rows = summary.summarize(a + b)
    mb = [r for r in rows if r["spec"] == "master" and r["baseline"] == "master"]
    ma = [r for r in rows if r["spec"] == "master" and r["baseline"] == "raw_epoll"]
    assert len(mb) == 1 and mb[0]["is_baseline"] and mb[0]["runs"] == 5
    assert ma[0]["ratio_conn_to_baseline"] == pytest.approx(0.5)
    sweep = [_run("raw_epoll", 0, 1000, 40, rate=1000), _run("master", 0, 500, 40, rate=2000)]
    assert all(r["paired_rounds"] == 0 or r["is_baseline"] for r in summary.summarize(sweep))


def test_batch_table_and_report_agree_on_the_fixtures(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "runs")
    recs, _ = records.load_runs(str(tmp_path / "runs"))
    assert report.main(["--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "REPORT.md").read_text()
    for batch in ("fixA", "fixB"):
        mine = [r for r in recs if r["batch_id"] == batch]
        table = tables.format_table(mine, markdown=True)
        rows = tables.summarize(mine)
        df_rows = frame.summarize(frame.frame(mine))
        for r in rows:
            line = next(ln for ln in table.splitlines() if ln.startswith(f"| {r['spec']} |"))
            rep = df_rows[df_rows["spec"] == r["spec"]].iloc[0]
            assert (rep["clean"], rep["excluded"]) == (r["clean"], r["excluded"])
            assert f"{r['clean']}/{r['excluded']}" in line
            if r["is_baseline"] or r["ratio_conn_to_baseline"] is None:
                continue
            text = summary.ratio_text(r["ratio_conn_to_baseline"], r["ratio_conn_interval"])
            assert text in line
            rep_line = next(ln for ln in md.splitlines()
                            if ln.startswith(f"| {batch} | {r['spec']} |"))
            assert f"| {text} |" in rep_line and f"({r['clean']}/{r['excluded']})" in rep_line


def test_report_rows_for_an_a_a_batch_say_their_baseline():
    runs = _batch(["master@HEAD", "master"], [[1.0], [1.0]], 5, batch="AA")
    for r in runs:
        r["config"]["variant_commit"] = "f" * 40 if "@" in r["spec"] else None
    s = frame.summarize(frame.frame(copy.deepcopy(runs)))
    head = s[s["spec"] == "master@HEAD"].iloc[0]
    assert head["label"] == "master@HEAD ÷ master" and head["verdict_conn"] == "not distinguishable"
    assert "not distinguishable" in report.table_md(s)
