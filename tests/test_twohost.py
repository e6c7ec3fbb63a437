"""harness/twohost.py: `twohost-serve` and `twohost-load`, the two halves of a two-host run.

The two hosts are either loopback (no privilege needed) or the two namespaces of
an emulated link (root): never a real remote host.
"""

from __future__ import annotations

import io
import json
import os
import re
import queue
import signal
import socket
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import link  # noqa: E402

LOADGEN = os.path.join(ROOT, "build", "loadgen")
needs_loadgen = pytest.mark.skipif(not os.path.exists(LOADGEN),
                                   reason="build/loadgen is not built (make build)")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def _env(results: str) -> dict:
    env = dict(os.environ, EVENTS_RESULTS_DIR=results)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _read_listening(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[str, int]:
    """Read twohost-serve's stdout until its `listening: H:P` line (a reader thread,
    so a silent or hung twohost-serve fails the test after ``timeout``)."""
    found: queue.Queue = queue.Queue()
    seen: list[str] = []

    def reader():
        for line in proc.stdout:
            seen.append(line)
            m = re.match(r"listening: (\S+):(\d+) ", line)
            if m:
                found.put((m.group(1), int(m.group(2))))
                return
        found.put(None)

    threading.Thread(target=reader, daemon=True).start()
    try:
        got = found.get(timeout=timeout)
    except queue.Empty:
        got = None
    if got is None:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"twohost-serve printed no address: {''.join(seen)}\n{err}")
    return got


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[str, str]:
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _records(results: str) -> dict:
    d = os.path.join(results, "runs")
    return {n[:-5]: json.load(open(os.path.join(d, n))) for n in os.listdir(d) if n.endswith(".json")}


# ------------------------------------------------------------------ errors (no root)

def test_bad_run_id(tmp_path):
    r = subprocess.run(_cmd("twohost-serve", "raw_epoll", "--port", "0", "--run-id", "../x"),
                       capture_output=True, text=True, timeout=30, env=_env(str(tmp_path)), cwd=ROOT)
    assert r.returncode == 2
    assert "bad run id" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("old,new", [("serve-run", "twohost-serve"), ("load-run", "twohost-load")])
def test_old_subcommand_names_still_work_with_a_note(old, new, tmp_path):
    args = ("nosuch", "--port", "0") if new == "twohost-serve" else ("--host", "127.0.0.1", "--repeat", "2")
    r = subprocess.run(_cmd(old, *args), capture_output=True, text=True, timeout=30,
                       env=_env(str(tmp_path)), cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"note: `{old}` is now `{new}` (the old name will go)"
    assert lines[1].startswith("error:") and len(lines) == 2


def test_unknown_variant(tmp_path):
    r = subprocess.run(_cmd("twohost-serve", "nosuch", "--port", "0"), capture_output=True, text=True,
                       timeout=30, env=_env(str(tmp_path)), cwd=ROOT)
    assert r.returncode == 2 and "valid names" in r.stderr and "Traceback" not in r.stderr


def test_port_in_use_is_a_clear_message(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run(_cmd("twohost-serve", "raw_epoll", "--host", "127.0.0.1", "--port", str(port)),
                           capture_output=True, text=True, timeout=30, env=_env(str(tmp_path)), cwd=ROOT)
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("opt", [["--delay", "1ms"], ["--repeat", "3"], ["--diet"]])
def test_load_rejects_options_that_do_not_apply(tmp_path, opt):
    r = subprocess.run(_cmd("twohost-load", "--host", "127.0.0.1", "--port", "9", *opt),
                       capture_output=True, text=True, timeout=30, env=_env(str(tmp_path)), cwd=ROOT)
    assert r.returncode == 2 and "does not apply" in r.stderr and "Traceback" not in r.stderr


@needs_loadgen
def test_load_against_nothing_says_so(tmp_path):
    with socket.socket() as s:            # a port that is surely closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = subprocess.run(_cmd("twohost-load", "--host", "127.0.0.1", "--port", str(port), "--run-id",
                                "nothing", "--duration", "0.5", "--warmup", "0", "--concurrency", "2"),
                           capture_output=True, text=True, timeout=60, env=_env(str(tmp_path)), cwd=ROOT)
    assert r.returncode == 1
    assert "refused every connection" in r.stderr
    rec = _records(str(tmp_path))["nothing-load"]
    assert rec["status"] == "failed" and rec["kind"] == "load"


# ------------------------------------------------------------------ the two sides

def _pair(results: str, serve_prefix: list[str], load_prefix: list[str], host: str, rid: str):
    env = _env(results)
    serve = subprocess.Popen(serve_prefix + _cmd("twohost-serve", "raw_epoll", "--host", host, "--port",
                                                 "0", "--run-id", rid),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        lhost, port = _read_listening(serve)
        assert lhost == host
        load = subprocess.run(load_prefix + _cmd("twohost-load", "--host", host, "--port", str(port),
                                                 "--run-id", rid, "--duration", "1", "--warmup", "0",
                                                 "--concurrency", "8", "--link", "test-wire"),
                              capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        assert load.returncode == 0, load.stderr
        out, err = _stop(serve)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert serve.returncode == 0, err
    assert "µs per connection" in out and "saved" in out
    recs = _records(results)
    s, lo = recs[f"{rid}-serve"], recs[f"{rid}-load"]
    assert s["kind"] == "serve" and lo["kind"] == "load"
    assert s["batch_id"] == lo["batch_id"] == rid
    assert s["status"] == "ok" and lo["status"] == "ok"
    completed = lo["client"]["completed_total"]
    assert completed > 0 and lo["client"]["failed_total"] == 0
    # Every connection the client completed, the server served.
    assert s["server_stats"]["served"] == completed == s["metrics"]["completed"]
    assert s["metrics"]["server_cpu_us_per_conn"] > 0
    assert s["server_stats"]["errors"] == 0
    assert s["link"] == "network" and lo["link"] == "net-test-wire"
    return s, lo


@needs_loadgen
def test_two_hosts_over_loopback(tmp_path):
    _pair(str(tmp_path), [], [], "127.0.0.1", "pairlo")


@needs_loadgen
def test_two_hosts_as_two_namespaces(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to create the two namespaces (CI runs as root)")
    try:
        link.check_privileges("1000mbit")
    except link.LinkError as e:
        pytest.skip(f"emulated links unavailable here: {e}")
    with link.open_link("1000mbit", run_tag="twohost", out=io.StringIO()) as lk:
        before = lk.snapshot()
        s, lo = _pair(str(tmp_path), lk.server_prefix, lk.client_prefix, lk.server_host, "pairns")
        st = lk.stats_between(before, lk.snapshot(), lo["client"]["started_total"])
    # The traffic really crossed the veth between the two "hosts".
    assert st["packets_per_conn"]["total"] >= 6
    assert s["config"]["host"] == link.SERVER_ADDR


@needs_loadgen
def test_serve_stops_cleanly_on_ctrl_c(tmp_path):
    """Ctrl-C in a terminal reaches both twohost-serve and its server; that is a normal stop."""
    env = _env(str(tmp_path))
    serve = subprocess.Popen(_cmd("twohost-serve", "raw_epoll", "--host", "127.0.0.1", "--port", "0",
                                  "--run-id", "ctrlc"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=ROOT, start_new_session=True)
    try:
        _read_listening(serve)
        os.killpg(serve.pid, signal.SIGINT)       # the whole group, as a terminal does
        out, err = serve.communicate(timeout=20)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert serve.returncode == 0, err
    rec = _records(str(tmp_path))["ctrlc-serve"]
    assert rec["status"] == "ok" and rec["server_stats"]["served"] == 0
