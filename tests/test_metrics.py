"""The metrics table (harness/metrics.py): adding a statistic is adding one row.  A
synthetic statistic declared as a row is computed for each run, written to runs.csv,
aggregated by the summary engine, and shown in the batch table and in REPORT.md --
with no other change anywhere."""

import csv
import io

import pytest

from harness import frame, metrics, records, report, runrecord, summary, tables

pytestmark = pytest.mark.timeout(60)

SYNTH = metrics.Metric(
    "synthetic_stalls", lambda i: i.stats.get("stalls"), summary=("median", "max"),
    header="stalls", report_header="stalls (synthetic)", shown=True,
    cell=lambda row: f"{row['synthetic_stalls_median']:.1f} st",
    note="stalls: a synthetic statistic (tests/test_metrics.py).")


def _run(spec: str, rnd: int, stalls: int) -> dict:
    r = runrecord.new_run(run_id=f"s-{spec}-{rnd}", batch_id="syn", kind="compare", spec=spec,
                          server=spec, link="loopback", round=rnd, position=int(spec != "raw_epoll"),
                          config={"concurrency": 64, "size": 100})
    final = {"conn_per_s": 1000.0 + rnd, "started_total": 4000, "completed_total": 4000,
             "failed_total": 0, "client_cpu_share": 0.5, "latency_us": {"p50": 100, "p99": 900}}
    r["metrics"] = metrics.compute_metrics(final, 0.2, 4.0, stats={"stalls": stalls, "served": 4000})
    return r


@pytest.fixture
def with_synthetic(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", metrics.METRICS + (SYNTH,))
    return [_run(spec, rnd, stalls) for rnd in range(3)
            for spec, stalls in (("raw_epoll", 2 + rnd), ("master", 7 + rnd))]


def test_a_new_row_is_computed_written_aggregated_and_shown(with_synthetic, tmp_path):
    recs = with_synthetic
    assert recs[0]["metrics"]["synthetic_stalls"] == 2          # read from the STATS line
    # runs.csv: a column of its own, with each run's value
    for r in recs:
        records.append_csv(r, str(tmp_path))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert "synthetic_stalls" in records.csv_header()
    assert [row["synthetic_stalls"] for row in rows] == ["2", "7", "3", "8", "4", "9"]
    # the summary engine: aggregated as the row says
    by_spec = {r["spec"]: r for r in summary.summarize(recs)}
    assert by_spec["master"]["synthetic_stalls_median"] == 8
    assert by_spec["master"]["synthetic_stalls_max"] == 9
    assert by_spec["raw_epoll"]["synthetic_stalls_median"] == 3
    # the batch table: a column beside CPU per connection, and its note
    text = tables.format_table(recs)
    head = text.splitlines()[0]
    assert head.index("server CPU µs/conn") < head.index("stalls") < head.index("CPU ×raw_epoll")
    assert "8.0 st" in text and "stalls: a synthetic statistic" in text
    # REPORT.md's table (through the frame: the engine's names, no second vocabulary)
    md = report.table_md(frame.summarize(frame.frame(recs)))
    assert "| stalls (synthetic) |" in md and "8.0 st" in md and "3.0 st" in md


def test_without_the_row_nothing_shows(with_synthetic, monkeypatch):
    recs = with_synthetic
    monkeypatch.setattr(metrics, "METRICS", tuple(m for m in metrics.METRICS if m is not SYNTH))
    assert "synthetic_stalls" not in records.csv_header()
    assert "synthetic_stalls_median" not in summary.summarize(recs)[0]
    assert "stalls" not in tables.format_table(recs)


def test_one_vocabulary():
    """Every per-run figure is a key of a new record's metrics; every summary field of the
    table is in the engine's rows and, under the same name, in the report's frame."""
    names = [m.name for m in metrics.METRICS]
    assert len(names) == len(set(names))
    r = runrecord.new_run(run_id="x", batch_id="b", kind="compare", spec="raw_epoll",
                          server="raw_epoll", link="loopback", round=0, position=0)
    assert set(r["metrics"]) == {m.name for m in metrics.run_metrics()}
    r["metrics"].update(conn_per_s=100.0, lost=0)
    row = summary.summarize([r])[0]
    df = frame.summarize(frame.frame([r]))
    for field in metrics.summary_fields():
        assert field in row and field in df.columns, field
