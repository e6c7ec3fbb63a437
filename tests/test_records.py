"""Run records, the CSV, summaries and the small pure parts of the runner.

No servers, no load: these run in well under a second each."""

import csv
import json
import multiprocessing
import os

import pytest

from harness import kstats, records, runner
from harness import metrics, soak, tables

pytestmark = pytest.mark.timeout(60)


def _record(spec="raw_epoll", *, batch="b1", rnd=0, pos=0, cps=20000.0, cpu_us=40.0, status="ok",
            completed=200000, started=None, share=0.5, p99=3000, rate=None, run_id=None, link="loopback"):
    started = completed if started is None else started
    return {
        "schema": 1, "run_id": run_id or records.new_id(), "batch_id": batch, "kind": "compare",
        "time_utc": records.utc_now(), "spec": spec, "server": spec.split(":")[0], "link": link,
        "round": rnd, "position": pos, "status": status, "error": None if status == "ok" else "boom\nmore",
        "server_stderr_tail": None,
        "config": {"concurrency": 64, "size": 100, "duration": 10, "warmup": 1, "rate": rate,
                   "timeout_ms": 5000, "close_mode": "fin", "python": None, "argv": []},
        "client": {}, "server_stats": {}, "snapshots": [],
        "metrics": {"conn_per_s": cps, "server_cpu_s": cpu_us * completed / 1e6,
                    "server_cpu_us_per_conn": cpu_us, "client_cpu_share": share,
                    "client_bound": share >= 0.9, "completed": completed,
                    "failed": started - completed, "lost": started - completed,
                    "p50_us": 1000, "p99_us": p99, "server_cpu_share": 0.9},
        "kernel": {"ListenOverflows": 0}, "link_stats": None,
        "env": {"git_commit": "abc"},
    }


# --------------------------------------------------------------------------- ids and files

def test_run_ids_are_unique_and_sortable():
    ids = {records.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    a = records.new_id()
    assert a.split("-")[1] == str(os.getpid())


def test_write_record_json_and_csv(tmp_path):
    r1, r2 = _record(), _record("master", pos=1, started=200010)
    p1 = records.write_record(r1, str(tmp_path))
    records.write_record(r2, str(tmp_path))
    assert os.path.dirname(p1) == str(tmp_path / "runs")
    with open(p1) as f:
        assert json.load(f)["run_id"] == r1["run_id"]
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["spec"] for r in rows] == ["raw_epoll", "master"]
    assert rows[1]["lost"] == "10" and rows[1]["server_cpu_us_per_conn"] == "40.0"
    assert list(rows[0].keys()) == records.csv_header()
    # no temp files left behind
    assert [n for n in os.listdir(tmp_path / "runs") if not n.endswith(".json")] == []


def test_records_name_no_machine_path(tmp_path):
    """What results/ keeps names paths relative to the repository, or by their last
    component, never this machine's: a clone elsewhere reads the same records."""
    home = os.path.expanduser("~")
    r = _record()
    r["env"] = {"python_executable": os.path.join(records.ROOT, ".venv", "bin", "python"),
                "server_python": {"executable": os.path.join(home, ".pyenv", "bin", "python3.12")},
                "system": "/usr/bin/python3", "note": "not a path", "list": [records.ROOT],
                "checkout": "/elsewhere/events/build/loadgen",
                "cgroup": "/sys/fs/cgroup/cpu/events-1",
                "cmdline": "/opt/x/bin/python -c import sys; sys.path = ['/tmp/tmpab12/site']"}
    path = records.write_record(r, str(tmp_path))
    with open(path) as f:
        env = json.load(f)["env"]
    assert env["python_executable"] == os.path.join(".venv", "bin", "python")
    assert env["server_python"]["executable"] == "python3.12"
    assert env["system"] == "/usr/bin/python3" and env["note"] == "not a path"
    assert env["list"] == ["."] and env["checkout"] == "loadgen"
    assert env["cgroup"] == "/sys/fs/cgroup/cpu/events-1"
    assert env["cmdline"] == "/opt/x/bin/python -c import sys; sys.path = ['site']"
    with open(path) as f:
        text = f.read()
    assert records.ROOT not in text and home + "/" not in text
    # the record in memory is left as it was
    assert r["env"]["python_executable"].startswith(records.ROOT)


def test_write_record_never_overwrites(tmp_path):
    r = _record(run_id="fixed-id")
    records.write_record(r, str(tmp_path))
    again = _record("master", run_id="fixed-id")
    path = records.write_record(again, str(tmp_path))
    assert again["run_id"] != "fixed-id" and os.path.basename(path) != "fixed-id.json"
    with open(tmp_path / "runs" / "fixed-id.json") as f:
        assert json.load(f)["spec"] == "raw_epoll"


def test_csv_with_other_columns_is_not_rewritten(tmp_path):
    (tmp_path / "runs.csv").write_text("old,columns\n1,2\n")
    records.write_record(_record(), str(tmp_path))
    assert (tmp_path / "runs.csv").read_text() == "old,columns\n1,2\n"
    with open(tmp_path / "runs-2.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_csv_names_the_interpreter_never_its_path():
    """runs.csv is read on other machines: the interpreter is a label there (the JSON record
    keeps the path it ran)."""
    col = records.csv_header().index("python")
    r = _record()
    r["config"]["python"] = "/root/.pyenv/versions/3.12.1/bin/python3.12"
    r["env"] = {"server_python": {"version": "3.12.1", "implementation": "cpython"}}
    assert records.csv_row(r)[col] == "python3.12"
    r["env"]["server_python"]["free_threaded"] = True
    assert records.csv_row(r)[col] == "python3.12t"
    r["config"]["python"] = None
    assert records.csv_row(r)[col] == ""
    # Another build of the venv's own X.Y is told apart by its full version.
    r["config"]["python"] = "/usr/bin/python3.11"
    r["env"] = {"python": "3.11.7", "server_python": {"version": "3.11.2", "implementation": "cpython"}}
    assert records.csv_row(r)[col] == "python3.11.2"
    r["env"]["server_python"]["version"] = "3.11.7"
    assert records.csv_row(r)[col] == "python3.11"


def test_results_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("EVENTS_RESULTS_DIR", str(tmp_path / "x"))
    assert records.results_dir() == str(tmp_path / "x")
    assert records.results_dir(str(tmp_path / "y")) == str(tmp_path / "y")
    monkeypatch.delenv("EVENTS_RESULTS_DIR")
    assert records.results_dir() == os.path.join(records.ROOT, "results")


def _writer(root, n, tag):
    for i in range(n):
        records.write_record(_record("raw_epoll", rnd=i, cps=float(tag * 1000 + i)), root)


def test_concurrent_writers_do_not_collide(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 40, t)) for t in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    recs, problems = records.load_runs(str(tmp_path))
    assert problems == [] and len(recs) == 160
    assert len({r["run_id"] for r in recs}) == 160
    with open(tmp_path / "runs.csv") as f:
        lines = f.read().splitlines()
    assert len(lines) == 161 and lines.count(",".join(records.csv_header())) == 1
    rows = list(csv.reader(lines))
    assert all(len(row) == len(records.csv_header()) for row in rows)
    assert sorted(float(r[records.csv_header().index("conn_per_s")]) for r in rows[1:]) == \
        sorted(float(t * 1000 + i) for t in range(4) for i in range(40))


def test_load_runs_reports_and_skips_corrupt_files(tmp_path):
    good = _record()
    records.write_record(good, str(tmp_path))
    runs = tmp_path / "runs"
    (runs / "truncated.json").write_text('{"schema": 1, "run_id": "x", "kin')
    (runs / "list.json").write_text("[1, 2]")
    (runs / "nofield.json").write_text(json.dumps({"schema": 1, "run_id": "y"}))
    (runs / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (runs / ".tmp-abc.part").write_text("half")
    recs, problems = records.load_runs(str(tmp_path))
    assert [r["run_id"] for r in recs] == [good["run_id"]]
    reasons = dict((os.path.basename(p), why) for p, why in problems)
    assert set(reasons) == {"truncated.json", "list.json", "nofield.json", "binary.json"}
    assert "JSON" in reasons["truncated.json"] and "missing field" in reasons["nofield.json"]
    # the runs directory itself is accepted too; a missing directory is simply empty
    assert len(records.load_runs(str(runs))[0]) == 1
    assert records.load_runs(str(tmp_path / "nothing")) == ([], [])


def test_write_batch(tmp_path):
    j, m = records.write_batch("bX", {"a": 1}, "| t |\n", str(tmp_path))
    assert json.load(open(j)) == {"a": 1} and open(m).read() == "| t |\n"


# --------------------------------------------------------------------------- summaries

def _batch():
    recs = []
    # three rounds; master uses 1.2x raw's CPU and reaches 0.8x its rate in every round,
    # although the absolute figures drift a lot from round to round.
    for rnd, scale in enumerate((1.0, 1.5, 0.7)):
        recs.append(_record("raw_epoll", rnd=rnd, cps=25000 * scale, cpu_us=30 * scale, share=0.95))
        recs.append(_record("master", rnd=rnd, cps=20000 * scale, cpu_us=36 * scale))
    recs.append(_record("alone_proc", rnd=0, status="failed", cps=None, cpu_us=0))
    recs.append(_record("alone_proc", rnd=1, completed=1000, started=1003))
    return recs


def test_summarize_pairs_rounds():
    rows = {r["spec"]: r for r in tables.summarize(_batch())}
    raw, master, alone = rows["raw_epoll"], rows["master"], rows["alone_proc"]
    assert raw["conn_per_s_median"] == 25000 and raw["conn_per_s_min"] == 17500
    assert raw["ratio_cpu_to_baseline"] == 1.0 and raw["client_bound"] == 3
    assert master["ratio_cpu_to_baseline"] == pytest.approx(1.2)
    assert master["ratio_conn_to_baseline"] == pytest.approx(0.8)
    assert master["paired_rounds"] == 3
    # one failed run, one that lost connections: both excluded, both counted, losses shown
    assert alone["clean"] == 0 and alone["excluded"] == 2 and alone["failed_runs"] == 1
    assert alone["lossy_runs"] == 1 and alone["lost"] == 3 and alone["ratio_conn_to_baseline"] is None


def test_table_shows_every_spec_ratios_and_losses():
    text = tables.format_table(_batch())
    lines = text.splitlines()
    assert any(line.startswith("master") and "1.20" in line and "0.80" in line for line in lines)
    alone = next(line for line in lines if line.startswith("alone_proc"))
    assert "0/2" in alone and "3/3" in alone          # runs clean/excluded, failed/lost
    master = next(line for line in lines if line.startswith("master"))
    assert "too few rounds (n=3)" in master           # 3 rounds: no interval, said so
    raw = next(line for line in lines if line.startswith("raw_epoll"))
    assert "3/3" in raw                                 # 3 of 3 runs client-bound
    md = tables.format_table(_batch(), markdown=True)
    assert md.startswith("| spec |") and "| master |" in md


def test_summary_of_a_sweep_groups_by_rate():
    recs = [_record("raw_epoll", rate=r, cps=r * 0.99, rnd=0) for r in (1000, 2000)]
    rows = tables.summarize(recs)
    assert sorted(r["rate"] for r in rows) == [1000, 2000]
    assert "offered/s" in tables.format_table(recs)


def test_compute_metrics():
    final = {"started_total": 1010, "completed_total": 1000, "failed_total": 7, "conn_per_s": 500.0,
             "client_cpu_share": 0.93, "latency_us": {"p50": 10, "p99": 99}}
    m = metrics.compute_metrics(final, 0.05, 2.0)
    assert m["lost"] == 10 and m["failed"] == 7             # 3 unfinished count as lost
    assert m["server_cpu_us_per_conn"] == 50.0 and m["server_cpu_share"] == 0.025
    assert m["client_bound"] is True and m["p99_us"] == 99
    assert metrics.compute_metrics({**final, "client_cpu_share": 0.5}, None, 1)["client_bound"] is False
    assert metrics.compute_metrics(None, None, None)["conn_per_s"] is None


def test_plan_rotates_order_each_round():
    plan = runner.make_plan(["a", "b", "c"], 4)
    order = [[p.spec for p in plan if p.round == r] for r in range(4)]
    assert order == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    sweep = runner.make_plan(["a", "b"], 1, rates=[10, 20])
    assert [(p.spec, p.rate) for p in sweep] == [("a", 10), ("b", 10), ("a", 20), ("b", 20)]


def test_apply_options():
    out = runner.apply_options(["raw_epoll", "mul_thread", "mul_thread:pool=faithful"],
                               diet=True, pool="oneshot")
    assert [s.text for s in out] == ["raw_epoll:diet", "mul_thread:diet,pool=oneshot",
                                     "mul_thread:diet,pool=faithful"]
    assert [s.text for s in runner.apply_options(["master"])] == ["master"]
    # a subset of levers: where supported (asyncio takes cork only of these two)
    out = runner.apply_options(["raw_epoll", "asyncio", "c_epoll"], diet=("cork", "dontwait"))
    assert [s.text for s in out] == ["raw_epoll:diet=cork+dontwait", "asyncio:diet=cork", "c_epoll:diet=cork"]
    assert [s.levers for s in out] == [("cork", "dontwait"), ("cork",), ("cork",)]
    with pytest.raises(runner.srv.ServerError, match="fits none"):
        runner.apply_options(["asyncio"], diet=("lazy_watch",))


# --------------------------------------------------------------------------- kernel counters

NETSTAT = """TcpExt: SyncookiesSent ListenOverflows ListenDrops TW
TcpExt: 0 5 7 100
IpExt: InNoRoutes InOctets
IpExt: 0 123
"""
SNMP = """Tcp: RtoAlgorithm ActiveOpens EstabResets AttemptFails CurrEstab
Tcp: 1 50 2 1 9
"""


def test_kstats_parse_and_delta():
    files = {"/proc/net/netstat": NETSTAT, "/proc/net/snmp": SNMP}
    before = kstats.snapshot(lambda p: files[p])
    assert before["ListenOverflows"] == 5 and before["EstabResets"] == 2
    assert "CurrEstab" not in before                     # a gauge, not a counter
    files["/proc/net/netstat"] = NETSTAT.replace("0 5 7 100", "0 9 7 130")
    after = kstats.snapshot(lambda p: files[p])
    d = kstats.delta(before, after)
    assert d["ListenOverflows"] == 4 and d["TW"] == 30 and d["ListenDrops"] == 0
    assert kstats.parse("garbage") == {}


def test_kstats_reads_this_machine():
    snap = kstats.snapshot()
    assert "ListenOverflows" in snap and "ActiveOpens" in snap


# --------------------------------------------------------------------------- soak verdict

class _Srv:
    pid = os.getpid()


def test_soak_verdict_short_and_long():
    obs = soak.SoakObserver(duration=20, warmup=0, interval=1, min_connections=100)
    assert obs.baseline_at == pytest.approx(2.0) and "10%" in obs.baseline_rule
    obs.samples = [(0.0, 9000), (1.0, 9500), (2.0, 10000), (10.0, 10200), (20.0, 10400)]
    rec = {"status": "ok", "error": None, "metrics": {"completed": 500, "lost": 0}}
    obs.annotate(rec)
    assert rec["soak"]["pass"] and rec["soak"]["rss_baseline_kb"] == 10000
    assert rec["soak"]["rss_growth"] == pytest.approx(0.04)
    obs.samples.append((21.0, 11000))
    rec = {"status": "ok", "error": None, "metrics": {"completed": 50, "lost": 2}}
    obs.annotate(rec)
    assert not rec["soak"]["pass"] and len(rec["soak"]["reasons"]) == 3   # count, lost, RSS
    assert "FAIL" in soak.format_soak([{"spec": "master", **rec}])
    long = soak.SoakObserver(duration=600, warmup=1)
    assert long.baseline_at == 60 and long.baseline_rule == "after the first minute"


def test_soak_samples_rss_of_a_process():
    obs = soak.SoakObserver(duration=10, warmup=0, interval=5)
    obs.started(_Srv())
    obs.tick(_Srv(), 1.0)                  # crosses the 1 s baseline: sampled
    obs.tick(_Srv(), 2.0)                  # before the next interval: not sampled
    assert len(obs.samples) == 2 and obs.samples[0][1] > 0


def test_summary_keeps_links_apart():
    recs = [_record("raw_epoll", link="loopback"), _record("raw_epoll", link="100mbit", cps=9000)]
    rows = tables.summarize(recs)
    assert sorted(r["link"] for r in rows) == ["100mbit", "loopback"]
    assert "100mbit" in tables.format_table(recs)


def test_git_dirty_means_code_not_regenerated_results(tmp_path, monkeypatch):
    import subprocess
    from harness import environment
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "REPORT.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    monkeypatch.setattr(environment, "ROOT", str(tmp_path))
    assert environment.git_state()[1] is False
    (tmp_path / "results" / "REPORT.md").write_text("regenerated\n")
    assert environment.git_state()[1] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert environment.git_state()[1] is True
