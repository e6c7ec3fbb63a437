"""The C side of the harness: build/loadgen, build/c_epoll (and build/redis_ae if built).

The load client is what every benchmark number rests on, so its counts are tested
against servers whose behaviour we control: a correct one (c_epoll), and small
Python servers defined here that answer wrongly on purpose (wrong bytes, another
connection's bytes, half the bytes, nothing at all).  The C servers get the protocol
and robustness checks every server must pass (docs/architecture.md section 2, issue 6).

loadgen and c_epoll are built by ``make build`` (``make test`` depends on it); a
missing one is a failure, not a skip.  redis_ae is optional (it needs a Redis source
tree, ``make build REDIS_SRC=...``): its tests are skipped, with that reason, when it
is not built.  Every test is bounded: subprocess timeouts, socket
timeouts, small counts.  Nothing here asserts speed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import servers  # noqa: E402

LOADGEN = os.path.join(ROOT, "build", "loadgen")
C_EPOLL = os.path.join(ROOT, "build", "c_epoll")

FINAL_KEYS = {
    "run_id", "mode", "concurrency", "size", "rate", "duration_s", "warmup_s", "measured_s",
    "started", "completed", "failed", "failures", "started_total", "completed_total",
    "failed_total", "conn_per_s", "latency_us", "client_cpu_s", "client_wall_s",
    "client_cpu_share", "close_mode", "src_addrs",
}
CAUSES = {"refused", "reset", "timeout", "short_read", "mismatch", "addrnotavail", "other"}
SNAPSHOT_KEYS = {"t", "warmup", "connections", "complete", "failed", "in_flight", "timespan", "speed"}


def _require(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `make build` (make test does it first)")


# --------------------------------------------------------------------------- helpers

class Run:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.snapshots, self.final = [], None
        for line in proc.stdout.splitlines():
            tag, _, body = line.partition(" ")
            if tag == "SNAPSHOT":
                self.snapshots.append(json.loads(body))
            elif tag == "FINAL":
                assert self.final is None, "two FINAL lines"
                self.final = json.loads(body)


def loadgen(*args, timeout=30) -> Run:
    _require(LOADGEN)
    proc = subprocess.run([LOADGEN, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return Run(proc)


def check_final(run: Run) -> dict:
    """A FINAL that exists, has the contract's fields and keeps the invariant."""
    assert run.rc == 0, run.stderr
    f = run.final
    assert f is not None, run.stdout
    assert FINAL_KEYS <= f.keys(), FINAL_KEYS - f.keys()
    assert CAUSES <= f["failures"].keys()
    assert f["started_total"] == f["completed_total"] + f["failed_total"]
    assert sum(f["failures"].values()) == f["failed"]
    assert sum(f["failures_total"].values()) == f["failed_total"]
    assert set(f["latency_us"]) >= {"p50", "p90", "p99", "p999", "max", "mean"}
    return f


@pytest.fixture
def c_epoll():
    _require(C_EPOLL)
    started = []

    def start(**kw):
        srv = servers.start(kw.pop("spec", "c_epoll"), **kw)
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.stop()


class PyServer:
    """A tiny threaded TCP server with a chosen (mis)behaviour, on a free port.

    ``handler(conn, size, state)`` runs in the accept thread, one connection at a time,
    which is enough for the low concurrency these tests use."""

    def __init__(self, handler, size=100, backlog=128):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handler, self.size, self.state = handler, size, {"peers": []}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.state["peers"].append(peer[0])
            conn.settimeout(5)
            try:
                self.handler(conn, self.size, self.state)
            except OSError:
                pass
            finally:
                if not self.state.get("hold"):
                    conn.close()
                else:
                    self.state.setdefault("held", []).append(conn)

    def close(self):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()
        for c in self.state.get("held", []):
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def echo(conn, size, state):
    conn.sendall(recv_exact(conn, size))


def wrong_bytes(conn, size, state):
    conn.sendall(bytes(b ^ 0xFF for b in recv_exact(conn, size)))


def previous_connections_bytes(conn, size, state):
    """Echo the bytes of the connection before (the first one gets its own)."""
    data = recv_exact(conn, size)
    conn.sendall(state.get("prev", data))
    state["prev"] = data


def half_then_close(conn, size, state):
    conn.sendall(recv_exact(conn, size)[: size // 2])


def never_answer(conn, size, state):
    state["hold"] = True        # keep the socket open, say nothing


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def client(port, payload, *, timeout=5.0, shut=False):
    """Send payload to 127.0.0.1:port, return everything read until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


# --------------------------------------------------------------------------- loadgen

def test_count_mode_on_a_correct_server(c_epoll):
    srv = c_epoll()
    f = check_final(loadgen("--port", srv.port, "--count", 2000, "--run-id", "t-count"))
    assert (f["started"], f["completed"], f["failed"]) == (2000, 2000, 0)
    assert f["started_total"] == f["completed_total"] == 2000
    assert f["mode"] == "closed" and f["run_id"] == "t-count" and f["close_mode"] == "fin"
    lat = f["latency_us"]
    assert lat["n"] == 2000
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert f["client_cpu_s"] >= 0 and f["client_wall_s"] > 0
    stats = srv.stop()
    assert stats["served"] == 2000 and stats["errors"] == 0


def test_snapshots_and_final_parse_as_json(c_epoll):
    srv = c_epoll()
    run = loadgen("--port", srv.port, "--duration", 1.3, "-c", 8)
    f = check_final(run)
    assert f["duration_s"] == pytest.approx(1.3)
    assert f["measured_s"] == pytest.approx(1.3, abs=0.05)
    assert run.snapshots, run.stdout
    for snap in run.snapshots:
        assert SNAPSHOT_KEYS <= snap.keys()
        assert snap["connections"] == snap["complete"] + snap["failed"] + snap["in_flight"]
    assert f["completed"] > 0 and f["failed"] == 0


def test_warmup_is_excluded(c_epoll):
    srv = c_epoll()
    run = loadgen("--port", srv.port, "--duration", 1, "--warmup", 1.2, "-c", 4)
    f = check_final(run)
    assert f["warmup_s"] == pytest.approx(1.2)
    assert f["measured_s"] == pytest.approx(1.0, abs=0.05)
    assert 0 < f["completed"] < f["completed_total"]
    assert f["started"] < f["started_total"]
    assert f["latency_us"]["n"] == f["completed"]
    assert run.snapshots[0]["warmup"] is True          # t = 1 s < 1.2 s of warm-up
    assert run.snapshots[-1]["warmup"] is False


def test_mismatch_detected():
    with PyServer(wrong_bytes) as srv:
        f = check_final(loadgen("--port", srv.port, "--count", 30, "-c", 2))
    assert f["completed"] == 0
    assert f["failures"]["mismatch"] == 30


def test_another_connections_bytes_are_a_mismatch():
    with PyServer(previous_connections_bytes) as srv:
        f = check_final(loadgen("--port", srv.port, "--count", 20, "-c", 1))
    assert f["completed"] == 1 and f["failures"]["mismatch"] == 19


def test_short_read_detected():
    with PyServer(half_then_close) as srv:
        f = check_final(loadgen("--port", srv.port, "--count", 30, "-c", 2))
    assert f["completed"] == 0
    assert f["failures"]["short_read"] == 30


def test_refused_when_nothing_listens():
    f = check_final(loadgen("--port", free_port(), "--count", 50, "-c", 4))
    assert f["failures"]["refused"] == 50 and f["completed"] == 0


def test_timeout_against_a_silent_server():
    with PyServer(never_answer) as srv:
        t = time.monotonic()
        f = check_final(loadgen("--port", srv.port, "--count", 5, "-c", 5, "--timeout-ms", 300))
        assert time.monotonic() - t < 5
    assert f["failures"]["timeout"] == 5 and f["completed"] == 0
    assert f["timeout_phase"]["read"] == 5


def test_duration_drains_in_flight_connections():
    """After the deadline nothing starts; in-flight connections end (here by timeout)
    and are counted, so the invariant holds even with everything stuck."""
    with PyServer(never_answer) as srv:
        f = check_final(loadgen("--port", srv.port, "--duration", 0.2, "-c", 3,
                                "--timeout-ms", 400))
    assert f["started_total"] == 3 and f["failures_total"]["timeout"] == 3
    assert f["client_wall_s"] >= 0.4


def test_close_rst(c_epoll):
    srv = c_epoll()
    f = check_final(loadgen("--port", srv.port, "--count", 500, "--close", "rst"))
    assert f["close_mode"] == "rst"
    assert f["completed"] == 500 and f["failed"] == 0
    assert srv.stop()["served"] == 500


def test_src_addrs_round_robin():
    with PyServer(echo) as srv:
        f = check_final(loadgen("--port", srv.port, "--count", 30, "-c", 1, "--src-addrs", 3))
        peers = list(srv.state["peers"])
    assert f["src_addrs"] == 3 and f["completed"] == 30
    assert set(peers) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    assert peers.count("127.0.0.2") == 10


def test_open_loop_schedule(c_epoll):
    srv = c_epoll()
    f = check_final(loadgen("--port", srv.port, "--rate", 400, "--duration", 1))
    assert f["mode"] == "open" and f["rate"] == pytest.approx(400)
    assert f["latency_origin"] == "scheduled_start"
    # Every slot of the schedule is either started or reported missed.
    assert 399 <= f["started_total"] + f["schedule_missed"] <= 401
    assert f["failed_total"] == 0


def test_open_loop_count(c_epoll):
    srv = c_epoll()
    f = check_final(loadgen("--port", srv.port, "--rate", 2000, "--count", 300))
    assert f["started_total"] == 300 and f["completed"] == 300


def test_sigint_stops_and_reports():
    _require(LOADGEN)
    with PyServer(echo) as srv:
        proc = subprocess.Popen([LOADGEN, "--port", str(srv.port), "--duration", "60", "-c", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    run = Run(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    f = check_final(run)
    assert f["interrupted"] is True and f["completed_total"] > 0


_NETNS_SCRIPT = r"""
import json, subprocess, sys
loadgen, c_epoll = sys.argv[1], sys.argv[2]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
# Four ephemeral ports and no TIME_WAIT reuse: connect() runs out of ports at once.
for key, value in (("net.ipv4.ip_local_port_range", "40000 40003"), ("net.ipv4.tcp_tw_reuse", "0")):
    subprocess.run(["sysctl", "-qw", f"{key}={value}"], check=True)
srv = subprocess.Popen([c_epoll, "--port", "0"], stdout=subprocess.PIPE, text=True)
try:
    port = json.loads(srv.stdout.readline()[6:])["port"]
    r = subprocess.run([loadgen, "--port", str(port), "--duration", "1", "-c", "4"],
                       capture_output=True, text=True, timeout=20)
finally:
    srv.terminate()
    srv.wait(timeout=10)
print(r.stdout, end="")
"""


def test_addrnotavail_counted_not_spun_on():
    """Ephemeral ports exhausted (in a private network namespace, gone when its
    process exits): EADDRNOTAVAIL is counted, and the client backs off instead of
    spinning."""
    _require(LOADGEN)
    _require(C_EPOLL)
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", _NETNS_SCRIPT, LOADGEN, C_EPOLL],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and ("unshare" in proc.stderr or "Operation not permitted" in proc.stderr):
        pytest.skip(f"cannot create a network namespace here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    f = check_final(Run(subprocess.CompletedProcess(proc.args, 0, proc.stdout, "")))
    assert f["failures_total"]["addrnotavail"] > 0
    assert f["backoffs"] >= f["failures_total"]["addrnotavail"]
    assert f["client_cpu_share"] < 0.5, "client spins on EADDRNOTAVAIL"


@pytest.mark.parametrize("args, message", [
    ([], "--port is required"),
    (["--port", "0"], "--port"),
    (["--port", "80", "--close", "maybe"], "--close"),
    (["--port", "80", "--count", "0"], "--count"),
    (["--port", "80", "--rate", "-5"], "--rate"),
    (["--port", "80", "--duration", "abc"], "--duration"),
    (["--port", "80", "-c", "0"], "--concurrency"),
    (["--port", "80", "--bogus"], "unknown option"),
    (["--port", "80", "--size"], "needs a value"),
    (["--port", "80", "--host", "10.1.2.3", "--src-addrs", "2"], "loopback"),
    (["--port", "80", "--host", "no-such-host.invalid"], "cannot resolve"),
    (["--port", "80", "extra"], "unexpected argument"),
])
def test_bad_arguments_exit_2(args, message):
    run = loadgen(*args, timeout=15)
    assert run.rc == 2
    assert run.final is None and "Traceback" not in run.stderr
    first = run.stderr.splitlines()[0]
    assert first.startswith("loadgen: ") and message in first, run.stderr


# --------------------------------------------------------------------------- C servers
# c_epoll always (make build); redis_ae when it was built with REDIS_SRC=..., else skipped.

@pytest.fixture(params=["c_epoll", "redis_ae"])
def c_server(request, c_epoll):
    name = request.param
    path = os.path.join(ROOT, "build", name)
    if name == "redis_ae" and not os.path.exists(path):
        pytest.skip("redis_ae is not built: run `make redis_ae`")
    _require(path)

    def start(spec="", **kw):
        return c_epoll(spec=name + (":" + spec if spec else ""), **kw)
    start.name = name
    return start


def test_c_server_ready_and_stats(c_server):
    srv = c_server()
    assert srv.ready["server"] == c_server.name and srv.ready["host"] == "127.0.0.1"
    assert srv.ready["pid"] == srv.pid and srv.port > 0
    stats = srv.stop()
    assert srv.proc.returncode == 0
    assert set(stats) >= {"accepted", "served", "errors", "idle_timeouts", "emfile",
                          "cpu_user_s", "cpu_sys_s"}


@pytest.mark.parametrize("spec", ["", "diet"])
def test_c_server_echo(c_server, spec):
    srv = c_server(spec, size=100)
    payload = bytes(range(100))
    assert client(srv.port, payload) == payload
    f = check_final(loadgen("--port", srv.port, "--count", 300, "-c", 8))
    assert f["completed"] == 300
    stats = srv.stop()
    assert stats["served"] == 301 and stats["errors"] == 0


def test_c_server_other_size(c_server):
    srv = c_server(size=70000)       # more than one recv/send on each side
    f = check_final(loadgen("--port", srv.port, "--count", 20, "-c", 4, "--size", 70000))
    assert f["completed"] == 20


def test_c_server_discards_surplus(c_server):
    srv = c_server()
    payload = os.urandom(100)
    assert client(srv.port, payload + b"x" * 50) == payload
    assert client(srv.port, bytes(100)) == bytes(100)     # still serving
    stats = srv.stop()
    assert stats["served"] == 2


def test_c_server_survives_resets_and_early_close(c_server):
    srv = c_server()
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"partial")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                                    # RST mid-request
    for _ in range(5):
        assert client(srv.port, b"half", shut=True) == b""   # EOF before N bytes
    assert client(srv.port, bytes(100)) == bytes(100)
    time.sleep(0.3)             # let the server see the last resets before SIGTERM
    stats = srv.stop()
    assert stats["errors"] == 10 and stats["served"] == 1


def test_c_server_idle_timeout(c_server):
    srv = c_server(idle_timeout=0.5)
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    partial = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    partial.sendall(b"only a part")
    t = time.monotonic()
    assert partial.recv(100) == b"" and silent.recv(100) == b""   # closed by the server
    assert 0.3 < time.monotonic() - t < 3
    silent.close()
    partial.close()
    assert client(srv.port, bytes(100)) == bytes(100)
    stats = srv.stop()
    assert stats["idle_timeouts"] == 2 and stats["served"] == 1


def test_c_server_emfile_storm(c_server):
    """With 32 descriptors, a storm of 60 silent connections: the server sheds the
    excess (counted), does not spin, and serves again once descriptors free up."""
    srv = c_server(prefix=["prlimit", "--nofile=32:32", "--"], idle_timeout=0)
    socks = []
    try:
        for _ in range(60):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
        time.sleep(0.3)
        cpu0 = srv.cpu_seconds()
        time.sleep(1.0)
        assert srv.cpu_seconds() - cpu0 < 0.5, "server spins at EMFILE"
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    assert client(srv.port, bytes(100)) == bytes(100)
    stats = srv.stop()
    assert stats["emfile"] > 0 and stats["served"] >= 1


def test_c_server_sigint(c_server):
    srv = c_server()
    srv.proc.send_signal(signal.SIGINT)
    out, _ = srv.proc.communicate(timeout=5)
    assert srv.proc.returncode == 0 and out.startswith("STATS {")


@pytest.mark.parametrize("args", [["--port", "x"], ["--size", "0"], ["--idle-timeout", "-1"],
                                  ["--nope"]])
def test_c_server_bad_arguments(c_server, args):
    path = os.path.join(ROOT, "build", c_server.name)
    r = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "READY" not in r.stdout
    assert r.stderr.startswith(c_server.name + ": "), r.stderr


# --------------------------------------------------------------------------- --clients (issue 26)

def test_clients_share_the_load_in_one_stream(c_epoll):
    """--clients 3: three processes, one SNAPSHOT stream and one FINAL with everything merged;
    the count and the concurrency are the totals asked for, nothing lost."""
    srv = c_epoll(spec="c_epoll:loops=1")
    run = loadgen("--port", srv.port, "--count", 3000, "-c", 30, "--clients", 3)
    f = check_final(run)
    assert f["clients"] == 3 and f["concurrency"] == 30 and f["count"] == 3000
    assert f["started_total"] == f["completed_total"] == 3000 and f["failed_total"] == 0
    assert f["latency_us"]["n"] == 3000
    assert 0 <= f["client_cpu_share"] <= f["client_cpu_share_max"]
    stats = srv.stop()
    assert stats["served"] == 3000


def test_clients_by_duration_and_a_signal_reaches_every_process(c_epoll):
    srv = c_epoll()
    proc = subprocess.Popen([LOADGEN, "--port", str(srv.port), "--duration", "20", "-c", "8",
                             "--clients", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.2)
    kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == proc.pid]
    assert len(kids) == 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    run = Run(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    f = check_final(run)
    assert f["interrupted"] is True and f["clients"] == 2 and f["completed_total"] > 0
    assert not any(os.path.exists(f"/proc/{k}") and _ppid(k) == proc.pid for k in kids)


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


@pytest.mark.parametrize("args,fragment", [
    (["--clients", "0"], "--clients needs an integer in [1, 64]"),
    (["--clients", "65"], "--clients needs an integer in [1, 64]"),
    (["--clients", "4", "-c", "2"], "--clients 4 is more than --concurrency 2"),
    (["--clients", "4", "--count", "3"], "--clients 4 is more than --count 3"),
])
def test_clients_bad_arguments(args, fragment):
    run = loadgen("--port", 9, *args)
    assert run.rc == 2 and fragment in run.stderr and run.final is None
