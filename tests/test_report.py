"""make report, from hand-written run records (tests/fixtures/runs, schema 1).

The fixture: batch fixA (loopback, 3 rounds of raw_epoll/master/alone_proc, order
rotated; master lost 3 connections in round 1, alone_proc was client-bound in
round 0), batch fixB (100mbit; mul_thread failed), batch fixC (an open-loop sweep
of raw_epoll, the 40000/s step lost connections)."""

import os
import shutil

import pytest

from harness import charts, frame, report

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "runs")
CHARTS = ("ratios_loopback.png", "conn_per_s_loopback.png", "cpu_per_conn_loopback.png",
          "latency_loopback.png", "ratios_100mbit.png", "conn_per_s_100mbit.png",
          "conn_over_time.png", "latency_vs_rate.png")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def results(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "runs")
    return tmp_path


def _summary(results):
    records, problems = frame.load(str(results))
    assert not problems
    return frame.frame(records), frame.summarize(frame.frame(records))


def _row(summary, link, spec):
    rows = summary[(summary["link"] == link) & (summary["spec"] == spec)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_report_writes_markdown_and_every_chart(results, capsys):
    assert report.main(["--results-dir", str(results)]) == 0
    md = (results / "REPORT.md").read_text()
    for name in CHARTS:
        png = results / "charts" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(charts/{name})" in md
    assert "### link: loopback" in md and "### link: 100mbit" in md
    assert "## Environment of the runs" in md and "Fixture CPU @ 3.0GHz (16)" in md
    # The rule is stated, and the excluded runs are listed with their reason.
    assert "Medians use clean runs only" in md
    assert "| fixA-r1-master |" in md and "lost 3 connections" in md
    assert "| fixB-mul_thread |" in md and "status failed: server exited with code 1" in md
    assert "| fixA-r0-alone_proc |" in md          # client-bound table


def test_marked_runs_are_excluded_from_medians(results):
    df, summary = _summary(results)
    master = _row(summary, "loopback", "master")
    # master: 20000, (15000 lost 3 -> excluded), 21000
    assert master["runs"] == 3 and master["clean"] == 2 and master["excluded"] == 1
    assert master["conn_per_s_median"] == pytest.approx(20500)
    assert master["conn_per_s_min"] == 20000 and master["server_cpu_us_per_conn_median"] == pytest.approx(44.5)
    # client-bound runs stay in the median but are counted
    alone = _row(summary, "loopback", "alone_proc")
    assert alone["clean"] == 3 and alone["client_bound"] == 1
    assert alone["conn_per_s_median"] == pytest.approx(24000)
    failed = _row(summary, "100mbit", "mul_thread")
    assert failed["clean"] == 0 and failed["conn_per_s_median"] != failed["conn_per_s_median"]   # NaN
    # the open-loop sweep never enters the closed-loop table
    assert _row(summary, "loopback", "raw_epoll")["runs"] == 3


def test_ratios_are_paired_per_round(results):
    df, summary = _summary(results)
    master = _row(summary, "loopback", "master")
    # rounds 0 and 2 only (round 1 excluded): 20000/25000 = 0.8, 21000/26000 = 0.8077
    assert master["paired_rounds"] == 2
    assert master["ratio_conn_to_baseline"] == pytest.approx((0.8 + 21000 / 26000) / 2)
    # not the ratio of medians (20500 / 25000 = 0.82)
    assert master["ratio_conn_to_baseline"] != pytest.approx(20500 / 25000, abs=1e-3)
    assert master["ratio_cpu_to_baseline"] == pytest.approx((45 / 36 + 44 / 35) / 2)
    # 100mbit: the only pair is in another batch than loopback's
    assert _row(summary, "100mbit", "master")["ratio_conn_to_baseline"] == pytest.approx(2700 / 3100)


def test_no_runs_is_a_clear_message(tmp_path, capsys):
    assert report.main(["--results-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no runs recorded yet: run make bench" in err
    assert not (tmp_path / "REPORT.md").exists()


def test_environment_variable_names_the_results_dir(results, monkeypatch):
    monkeypatch.setenv("EVENTS_RESULTS_DIR", str(results))
    assert report.main([]) == 0
    assert (results / "REPORT.md").exists()


def test_corrupt_run_file_is_reported_and_the_rest_used(results, capsys):
    (results / "runs" / "broken.json").write_text('{"schema": 1, "run_id": ')
    assert report.main(["--results-dir", str(results)]) == 0
    err = capsys.readouterr().err
    assert "broken.json" in err and "Traceback" not in err
    md = (results / "REPORT.md").read_text()
    assert "broken.json" in md and "from 16 run records" in md


def _with_cpu_split(records, user_share=0.25):
    """The fixtures with user/sys CPU recorded, run by the venv's Python (`make syscalls`
    measures that interpreter, so only those rows get syscall counts)."""
    for r in records:
        r["config"]["python"] = None
        ss = r.setdefault("server_stats", {})
        cpu = (r.get("metrics") or {}).get("server_cpu_s") or 1.0
        ss["cpu_user_s"], ss["cpu_sys_s"] = cpu * user_share, cpu * (1 - user_share)
    return records


def test_cpu_split_divides_cpu_into_user_and_sys(results):
    import json
    records, _ = frame.load(str(results))
    (results / "syscalls").mkdir()
    (results / "syscalls" / "master.json").write_text(
        json.dumps({"per_connection": {"total": 9.06, "by_name": {}}}))
    split = frame.cpu_split(frame.frame(_with_cpu_split(records)), str(results))
    master = split[split["spec"] == "master"].iloc[0]
    # Clean loopback master runs only (the lost-connection run is out): 45 and its pair.
    assert master["runs"] == 2
    assert master["user_us"] == pytest.approx(master["cpu_us"] * 0.25)
    assert master["user_us"] + master["sys_us"] == pytest.approx(master["cpu_us"])
    assert master["syscalls"] == pytest.approx(9.06)
    assert split[split["spec"] == "raw_epoll"]["syscalls"].isna().all()   # not measured
    assert "mul_thread" not in set(split["spec"])                        # 100mbit only


def test_report_draws_the_cpu_split_when_recorded(results):
    import json
    for path in (results / "runs").glob("*.json"):
        rec = _with_cpu_split([json.loads(path.read_text())])[0]
        path.write_text(json.dumps(rec))
    assert report.main(["--results-dir", str(results)]) == 0
    md = (results / "REPORT.md").read_text()
    assert "## Where the server's CPU goes (loopback, batch `fixA`)" in md
    assert (results / "charts" / "cpu_split.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_cpu_split_omits_that_chart(results):
    assert report.main(["--results-dir", str(results)]) == 0     # fixtures: no user/sys
    assert not (results / "charts" / "cpu_split.png").exists()
    assert "Where the server's CPU goes" not in (results / "REPORT.md").read_text()


def test_head_to_head_pairs_only_rounds_where_both_ran_clean(results):
    df, _ = _summary(results)
    h2h = frame.head_to_head(df, [("alone_proc", "master", "x"), ("uvloop", "master", "y")])
    assert list(h2h["a"]) == ["alone_proc"]           # no uvloop run: no row, no guess
    row = h2h.iloc[0]
    # fixA: master's round 1 lost connections, so only rounds 0 and 2 pair.
    assert row["paired_rounds"] == 2 and row["link"] == "loopback"
    assert 0 < row["ratio_cpu_to_baseline"] < 10 and 0 < row["ratio_conn_to_baseline"] < 10


def test_other_interpreters_get_their_own_chart(results):
    import copy
    import json
    records, _ = frame.load(str(results))
    extra = []
    for r in records:
        if r.get("batch_id") == "fixA":
            r2 = copy.deepcopy(r)
            r2["run_id"], r2["batch_id"] = r["run_id"] + "-py312", "fixA312"
            r2["config"]["python"] = "/opt/py/bin/python3"
            r2.setdefault("env", {})["server_python"] = {"version": "3.12.1",
                                                         "implementation": "cpython"}
            extra.append(r2)
    for r2 in extra:
        (results / "runs" / (r2["run_id"] + ".json")).write_text(json.dumps(r2))
    summary = frame.summarize(frame.frame(records + extra))
    assert {"python3.12", "python3"} <= set(summary["python"])
    assert report.main(["--results-dir", str(results)]) == 0
    assert (results / "charts" / "interpreters.png").read_bytes()[:4] == b"\x89PNG"
    assert "(charts/interpreters.png)" in (results / "REPORT.md").read_text()


def test_default_interpreter_keeps_links_without_a_default(results):
    _, summary = _summary(results)                     # fixtures name an interpreter
    assert len(charts.default_interpreter(summary)) == len(summary)
