"""The runner end to end: tiny real batches, failures, interrupts, concurrent batches.

Every batch writes into a tmp results directory (never the repository's).  Runs
are 1-2 s against loopback; nothing here asserts a speed.  Two throwaway servers
(one that crashes mid-run, one that cannot start) are written to tmp_path and
added to the server table only for the test that uses them (monkeypatch), so
the real table is never polluted."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import records, runner
from harness import servers as srv

ROOT = records.ROOT
PY = sys.executable

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not os.access(os.path.join(srv.BUILD, "loadgen"), os.X_OK),
                                 reason="build/loadgen not built: run `make build`")]

CONTRACT_KEYS = ("schema", "run_id", "batch_id", "kind", "time_utc", "spec", "server", "link", "round",
                 "position", "status", "error", "server_stderr_tail", "config", "client", "server_stats",
                 "snapshots", "metrics", "kernel", "link_stats", "env")
METRIC_KEYS = ("conn_per_s", "server_cpu_s", "server_cpu_us_per_conn", "client_cpu_share", "client_bound",
               "completed", "failed", "lost", "p50_us", "p99_us", "server_cpu_share")
ENV_KEYS = ("cpu_model", "cores", "kernel", "python", "packages", "git_commit", "somaxconn",
            "ip_local_port_range", "tcp_tw_reuse", "tcp_fin_timeout")


def _env(results):
    env = dict(os.environ, EVENTS_RESULTS_DIR=str(results), PYTHONPATH=ROOT)
    env.pop("EVENTS_LOADGEN", None)
    return env


def _harness(args, results, timeout=60, **kw):
    return subprocess.run([PY, "-m", "harness", *args], cwd=ROOT, env=_env(results), capture_output=True,
                          text=True, timeout=timeout, **kw)


def _run_files(results):
    d = results / "runs"
    return sorted(n for n in os.listdir(d) if n.endswith(".json")) if d.is_dir() else []


# --------------------------------------------------------------------------- a real tiny batch

def test_records_carry_diet_levers(tmp_path):
    """config.diet_levers: the levers applied (same names for every server; [] without),
    checked against the server's STATS; the table notes what a server cannot take."""
    out = io.StringIO()
    specs = runner.apply_options(["raw_epoll", "asyncio"], diet=("cork", "lazy_watch"))
    recs = runner.run_batch(specs + ["master"], kind="compare", repeat=1, duration=0.5,
                            warmup=0, concurrency=4, results_dir=str(tmp_path), out=out)
    by = {r["spec"]: r for r in recs}
    assert set(by) == {"raw_epoll:diet=cork+lazy_watch", "asyncio:diet=cork", "master"}
    for spec, levers in (("raw_epoll:diet=cork+lazy_watch", ["cork", "lazy_watch"]),
                         ("asyncio:diet=cork", ["cork"]), ("master", [])):
        r = by[spec]
        assert r["status"] == "ok", r["error"]
        assert r["config"]["diet_levers"] == levers == r["server_stats"]["diet_levers"]
    assert "Diet: asyncio: dontwait, lazy_watch not applied (the library owns the accepted socket)" \
        in out.getvalue()


def test_tiny_batch_end_to_end(tmp_path):
    if not os.access(os.path.join(srv.BUILD, "c_epoll"), os.X_OK):
        pytest.skip("build/c_epoll not built")
    out = io.StringIO()
    recs = runner.run_batch(["raw_epoll", "c_epoll"], kind="compare", repeat=1, duration=1, warmup=0,
                            concurrency=8, results_dir=str(tmp_path), out=out)
    assert [r["spec"] for r in recs] == ["raw_epoll", "c_epoll"]
    for r in recs:
        assert r["status"] == "ok", r["error"]
        assert all(k in r for k in CONTRACT_KEYS)
        assert all(k in r["metrics"] for k in METRIC_KEYS)
        assert all(k in r["env"] for k in ENV_KEYS)
        m, client = r["metrics"], r["client"]
        assert m["completed"] == client["completed_total"] > 0 and m["lost"] == 0
        assert m["conn_per_s"] > 0 and m["server_cpu_us_per_conn"] > 0
        assert r["server_stats"]["served"] == client["completed_total"]
        assert r["snapshots"] and "ListenOverflows" in r["kernel"]
        assert r["config"]["concurrency"] == 8 and r["link"] == "loopback"
        with open(tmp_path / "runs" / f"{r['run_id']}.json") as f:
            assert json.load(f)["run_id"] == r["run_id"]
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 3
    text = out.getvalue()
    assert "conn/s median" in text and "results:" in text and "[1/2 raw_epoll r0]" in text
    batches = os.listdir(tmp_path / "batches")
    assert sorted(n.rsplit(".", 1)[1] for n in batches) == ["json", "md"]


# --------------------------------------------------------------------------- failures

CRASHER = """\
#!{py}
# Test-only server: serves echo for a moment, then dies as a crash would.
import json, os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(128); s.settimeout(0.05)
print("READY " + json.dumps({{"server": "crasher", "host": "127.0.0.1",
      "port": s.getsockname()[1], "pid": os.getpid()}}), flush=True)
end = time.monotonic() + 0.5
while time.monotonic() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    c.settimeout(1); data = b""
    try:
        while len(data) < 100:
            chunk = c.recv(100 - len(data))
            if not chunk: break
            data += chunk
        c.sendall(data)
    except OSError:
        pass
    c.close()
sys.stderr.write("boom: simulated crash in the event loop\\n"); sys.stderr.flush()
os._exit(3)
"""

NOSTART = """\
#!{py}
import sys
sys.stderr.write("cannot bind: simulated start failure\\n")
sys.exit(1)
"""


@pytest.fixture
def fake_servers(tmp_path, monkeypatch):
    """Two test-only table entries.  kind "c" runs the target as a program; an
    absolute target path is used as is (os.path.join keeps it)."""
    for name, text in (("crasher", CRASHER), ("nostart", NOSTART)):
        path = tmp_path / f"{name}.py"
        path.write_text(text.format(py=PY))
        path.chmod(0o755)
        monkeypatch.setitem(srv.SERVERS, name, srv.Server(name, "c", str(path), "test only"))


def test_server_dying_mid_run_is_recorded_and_batch_goes_on(tmp_path, fake_servers):
    out = io.StringIO()
    res = tmp_path / "results"
    recs = runner.run_batch(["crasher", "nostart", "raw_epoll"], repeat=1, duration=2, warmup=0,
                            concurrency=4, timeout_ms=1000, results_dir=str(res), out=out)
    by = {r["spec"]: r for r in recs}
    crash = by["crasher"]
    assert crash["status"] == "failed" and "server exited during the run" in crash["error"]
    assert "exit code 3" in crash["error"]
    assert "boom: simulated crash" in crash["server_stderr_tail"]
    nostart = by["nostart"]
    assert nostart["status"] == "failed" and "failed to start" in nostart["error"]
    assert "simulated start failure" in nostart["server_stderr_tail"]
    assert by["raw_epoll"]["status"] == "ok"
    assert len(_run_files(res)) == 3                     # every run kept, failed ones too
    text = out.getvalue()
    assert "FAILED" in text and "boom: simulated crash" in text and "simulated start failure" in text
    assert "0/1" in text                                  # runs ok/failed column


# --------------------------------------------------------------------------- CLI errors

def test_cli_unknown_variant_lists_valid_names(tmp_path):
    r = _harness(["bench", "--variant", "nosuch"], tmp_path)
    assert r.returncode == 2
    assert "nosuch" in r.stderr and "master, mul_thread, alone_proc" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = _harness(["compare", "--servers", "raw_epoll bogus:x=1"], tmp_path)
    assert r.returncode == 2 and "valid names" in r.stderr
    r = _harness(["bench", "--variant", "master:nokey=1"], tmp_path)
    assert r.returncode == 2 and "no option 'nokey'" in r.stderr
    r = _harness(["bench", "--duration", "zero"], tmp_path)
    assert r.returncode == 2 and "not a number" in r.stderr
    assert _run_files(tmp_path) == []


def test_cli_missing_interpreter_and_client(tmp_path):
    r = _harness(["bench", "--python", "python3.99-nonexistent"], tmp_path)
    assert r.returncode == 1 and "python3.99-nonexistent" in r.stderr and "not found" in r.stderr
    assert "Traceback" not in r.stderr
    env = dict(_env(tmp_path), EVENTS_LOADGEN=str(tmp_path / "no-loadgen"))
    r = subprocess.run([PY, "-m", "harness", "bench"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "run `make build` (needs gcc)" in r.stderr
    r = _harness(["report-nonexistent"], tmp_path)
    assert r.returncode == 2


def test_serve_and_load_subcommands(tmp_path):
    p = subprocess.Popen([PY, "-m", "harness", "serve", "raw_epoll", "--port", "0", "--idle-timeout", "5"],
                         cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        ready = json.loads(p.stdout.readline().split(" ", 1)[1])
        assert ready["pid"] == p.pid                       # exec: the server is the process we started
        r = _harness(["load", "--port", str(ready["port"]), "--duration", "1", "--concurrency", "4"],
                     tmp_path)
        assert r.returncode == 0, r.stderr
        assert "conn/s" in r.stdout and "lost 0" in r.stdout
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=15)
        assert p.returncode == 0 and out.startswith("STATS ")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# --------------------------------------------------------------------------- interrupts

def _children(pid):
    """PIDs of every live descendant of pid (from /proc)."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, pp in parent.items():
            if pp == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_completed_runs_and_leaves_no_process(tmp_path, sig):
    p = subprocess.Popen([PY, "-m", "harness", "compare", "--servers", "raw_epoll raw_epoll:idle_timeout=5",
                          "--repeat", "6", "--duration", "1", "--warmup", "0", "--concurrency", "4"],
                         cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    kids = set()
    try:
        deadline = time.monotonic() + 60
        while not _run_files(tmp_path) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert _run_files(tmp_path), "no run completed"
        # Wait until the next run's server and client are both up, then interrupt.
        while time.monotonic() < deadline and len(_children(p.pid)) < 2:
            time.sleep(0.05)
        kids = _children(p.pid)
        assert kids
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 130, err
        assert "interrupted: kept" in err
        time.sleep(0.2)
        assert [k for k in kids if _alive(k)] == []
        recs, problems = records.load_runs(str(tmp_path))
        assert problems == [] and len(recs) >= 1 and all(r["status"] == "ok" for r in recs)
        assert len(recs) < 12
        assert all(r["run_id"] in err for r in recs)
    finally:
        for k in kids | ({p.pid} if p.poll() is None else set()):
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if p.poll() is None:
            p.wait()


def test_two_batches_at_once_do_not_collide(tmp_path):
    args = [PY, "-m", "harness", "compare", "--servers", "raw_epoll", "--repeat", "2", "--duration", "1",
            "--warmup", "0", "--concurrency", "4"]
    procs = [subprocess.Popen(args, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            out, err = p.communicate(timeout=90)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    recs, problems = records.load_runs(str(tmp_path))
    assert problems == [] and len(recs) == 4
    assert len({r["run_id"] for r in recs}) == 4 and len({r["batch_id"] for r in recs}) == 2
    lines = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0] == ",".join(records.csv_header())
    # Each batch: its summary (.json), its table (.md) and its chart (.png, harness/batchchart.py).
    names = sorted(os.listdir(tmp_path / "batches"))
    assert len(names) == 6 and {n.rsplit(".", 1)[1] for n in names} == {"json", "md", "png"}


# --------------------------------------------------------------------------- sweep, soak, link

def test_sweep_records_latency_per_offered_rate(tmp_path):
    r = _harness(["sweep", "--servers", "raw_epoll", "--rates", "300,600", "--duration", "1", "--warmup", "0"],
                 tmp_path)
    assert r.returncode == 0, r.stderr
    recs, _ = records.load_runs(str(tmp_path))
    assert sorted(x["config"]["rate"] for x in recs) == [300, 600]
    assert all(x["kind"] == "sweep" and x["client"]["mode"] == "open" for x in recs)
    assert all(x["metrics"]["p99_us"] is not None for x in recs)
    assert "offered/s" in r.stdout


def test_short_soak_reports_rss_and_verdict(tmp_path):
    r = _harness(["soak", "--variant", "alone_proc", "--duration", "3", "--warmup", "0", "--rss-interval", "1",
                  "--min-connections", "100", "--concurrency", "4"], tmp_path)
    recs, _ = records.load_runs(str(tmp_path))
    assert len(recs) == 1 and recs[0]["kind"] == "soak"
    soak = recs[0]["soak"]
    assert soak["rss_baseline_kb"] > 0 and soak["rss_end_kb"] > 0 and len(soak["rss_samples"]) >= 3
    assert "10% of the duration" in soak["baseline_rule"]
    verdict = "PASS" if soak["pass"] else "FAIL"
    assert "alone_proc" in r.stdout and verdict in r.stdout
    assert r.returncode == (0 if soak["pass"] else 1)
    # the default minimum (1,000,000) cannot be met in 3 s: the verdict says so
    r = _harness(["soak", "--variant", "alone_proc", "--duration", "1", "--warmup", "0", "--concurrency", "4"],
                 tmp_path)
    assert r.returncode == 1 and "FAIL" in r.stdout and "< 1,000,000" in r.stdout


def test_linked_batch_records_link_stats(tmp_path):
    from harness import link
    try:
        link.check_privileges(link.parse("100mbit"))
    except link.LinkError as e:
        pytest.skip(f"no emulated link here: {e}")
    recs = runner.run_batch(["raw_epoll"], link="100mbit", repeat=1, duration=1, warmup=0, concurrency=4,
                            results_dir=str(tmp_path), out=io.StringIO())
    r = recs[0]
    assert r["status"] == "ok" and r["link"] == "100mbit"
    assert r["link_stats"]["packets_per_conn"]["total"] > 0
    assert "kernel_client" in r and r["env"]["link"]["link"] == "100mbit"
    ns = r["env"]["link"]["namespaces"]
    assert not any(os.path.exists(f"/run/netns/{n}") for n in ns.values())


def test_dispatch_to_a_missing_module_is_a_clear_error(monkeypatch, capsys):
    from harness import cli
    monkeypatch.setitem(cli.SUBCOMMANDS, "reproduce", ("harness.no_such_module", "test"))
    assert cli.main(["reproduce"]) == 1
    err = capsys.readouterr().err
    assert "`reproduce` is not available" in err and "harness/no_such_module.py" in err
