"""harness/link.py: link specs, privilege errors, namespaces, shaping, cleanup.

Tests that build namespaces need root (CI runs as root) and skip with the reason
otherwise.  Every network packet here stays inside namespaces the test created.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import impairment, link, netns  # noqa: E402
from harness import tables  # noqa: E402
from harness import servers as srv  # noqa: E402
from conftest import alive  # noqa: E402

LOADGEN = os.path.join(ROOT, "build", "loadgen")


def _netns_list() -> list[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _host_state() -> tuple[str, str]:
    """The host's interfaces and qdiscs: must be identical before and after a link."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    names = "\n".join(sorted(line.split(":")[1].strip() for line in links.splitlines() if ":" in line))
    qd = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True, timeout=10).stdout
    # Counters change with traffic; keep the qdisc lines (kind, handle, device) only.
    return names, "\n".join(sorted(l for l in qd.splitlines() if l.startswith("qdisc")))


@pytest.fixture(scope="module")
def netns_ok():
    if os.geteuid() != 0:
        pytest.skip("emulated links need root (CI runs as root)")
    try:
        link.check_privileges("100mbit")
    except link.LinkError as e:
        pytest.skip(f"emulated links unavailable here: {e}")


def _ours_from(pid: int) -> list[str]:
    return [n for n in _netns_list() if n.startswith(f"{netns.PREFIX}{pid}-")]


# ------------------------------------------------------------------ parsing (no root)

@pytest.mark.parametrize("text,name,rate", [
    ("loopback", "loopback", None), ("", "loopback", None), (None, "loopback", None),
    ("1000mbit", "1000mbit", 1000.0), ("100mbit", "100mbit", 100.0), ("1gbit", "1000mbit", 1000.0),
    ("20mbit", "20mbit", 20.0), ("2.5gbit", "2500mbit", 2500.0), ("500kbit", "0.5mbit", 0.5),
    (" 100MBit ", "100mbit", 100.0),
])
def test_parse_accepts(text, name, rate):
    spec = link.parse(text)
    assert (spec.name, spec.rate_mbit) == (name, rate)
    assert spec.emulated == (rate is not None)


@pytest.mark.parametrize("text", ["100", "100mbps", "fast", "-5mbit", "0mbit", "1000gbit", "100 mb", "lo"])
def test_parse_rejects_with_accepted_forms(text):
    with pytest.raises(link.LinkError) as e:
        link.parse(text)
    msg = str(e.value)
    assert "\n" not in msg
    assert "loopback" in msg and "100mbit" in msg


def test_missing_privilege_is_a_clear_error_never_a_fallback(monkeypatch):
    monkeypatch.setattr(netns, "effective_caps", lambda: 0)
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(link.LinkError) as e:
        link.check_privileges("100mbit")
    msg = str(e.value)
    assert "\n" not in msg
    assert "root" in msg and "CAP_NET_ADMIN" in msg and "uid 1000" in msg and "LINK=loopback" in msg
    # open_link must refuse too: never hand back a loopback link under a rate's name.
    with pytest.raises(link.LinkError):
        with link.open_link("100mbit", run_tag="t", out=io.StringIO()):
            pytest.fail("open_link yielded without privileges")
    link.check_privileges("loopback")        # loopback needs nothing


def test_root_without_capability_is_named(monkeypatch):
    monkeypatch.setattr(netns, "effective_caps", lambda: 1 << netns.CAP_NET_ADMIN)  # no SYS_ADMIN
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    with pytest.raises(link.LinkError, match="lacks CAP_SYS_ADMIN"):
        link.check_privileges("1gbit")


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(netns, "effective_caps", lambda: (1 << 40) - 1)
    monkeypatch.setattr(netns, "tool", lambda name: None if name == "tc" else "/usr/sbin/" + name)
    with pytest.raises(link.LinkError) as e:
        link.check_privileges("100mbit")
    assert "'tc'" in str(e.value) and "iproute2" in str(e.value)


def test_loopback_link_interface():
    with link.open_link("loopback", run_tag="t") as lk:
        assert lk.name == "loopback" and lk.server_host == "127.0.0.1"
        assert lk.server_prefix == [] and lk.client_prefix == []
        assert lk.snapshot() == {} and lk.stats_between({}, {}, 10) is None
        assert lk.info() == {"link": "loopback"}
        assert "TcpExt:" in lk.read_proc("/proc/net/netstat", "client")
        with pytest.raises(ValueError):
            lk.read_proc("/proc/net/netstat", "middle")


@pytest.mark.parametrize("delay", ["fast", "10", "-1ms"])
def test_bad_delay_rejected(delay):
    with pytest.raises(link.LinkError, match="0.1ms"):
        with link.open_link("100mbit", run_tag="t", delay=delay):
            pass


def test_delay_on_loopback_rejected():
    with pytest.raises(link.LinkError, match="emulated link"):
        with link.open_link("loopback", run_tag="t", delay="1ms"):
            pass


# ------------------------------------------------------------------ namespaces (root)

def test_namespaces_created_and_removed(netns_ok):
    before = _host_state()
    out = io.StringIO()
    with link.open_link("100mbit", run_tag="create", delay="0.1ms", out=out) as lk:
        names = _netns_list()
        assert lk.server_ns in names and lk.client_ns in names
        assert lk.server_prefix == [lk.server_prefix[0], "netns", "exec", lk.server_ns]
        info = lk.info()
        assert info["link"] == lk.name == "100mbit+0.1ms" and info["rate_mbit"] == 100.0
        # Per-namespace settings, read back from inside the namespaces.
        assert info["sysctls"]["client"]["tcp_tw_reuse"] == "1"
        assert info["sysctls"]["client"]["ip_local_port_range"] == "1024 65535"
        with open("/proc/sys/net/core/somaxconn") as f:
            assert info["sysctls"]["server"]["somaxconn"] == f.read().strip()
        # Delay: netem where it exists, otherwise the delay line; which one is recorded.
        assert info["impairment"]["mechanism"] in ("netem", "delayline")
        assert info["impairment"]["delay"] == "0.1ms" and "0.1ms each direction" in info["delay"]
        # The namespaces see their own /proc/net, not the host's.
        assert "TcpExt:" in lk.read_proc("/proc/net/netstat", "server")
        assert link.SERVER_DEV in lk.read_proc("/proc/net/dev", "server")
        assert _host_state() == before              # nothing appeared on the host
    assert lk.server_ns not in _netns_list() and lk.client_ns not in _netns_list()
    assert _ours_from(os.getpid()) == []
    assert _host_state() == before


def test_cleanup_on_exception(netns_ok):
    with pytest.raises(RuntimeError):
        with link.open_link("20mbit", run_tag="exc", out=io.StringIO()) as lk:
            assert lk.server_ns in _netns_list()
            raise RuntimeError("boom")
    assert _ours_from(os.getpid()) == []


_BULK_SERVER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1)
    print(s.getsockname()[1], flush=True)
    s.settimeout(10); c, _ = s.accept(); c.settimeout(10)
    n, t0 = 0, None
    while True:
        b = c.recv(65536)
        if not b: break
        if t0 is None: t0 = time.monotonic()
        n += len(b)
    print(n, n * 8 / (time.monotonic() - t0) / 1e6, flush=True)
""")
_BULK_CLIENT = textwrap.dedent("""
    import socket, sys
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    buf = b"x" * 65536
    for _ in range(int(sys.argv[3])): c.sendall(buf)
    c.close()
""")


def test_shaping_is_observable(netns_ok):
    """A 4 MiB bulk transfer through 100mbit arrives at about 100 Mb/s: the loose
    band is behaviour (shaping happens), not the speed of our code."""
    with link.open_link("100mbit", run_tag="shape", out=io.StringIO()) as lk:
        before = lk.snapshot()
        rx = subprocess.Popen(lk.server_prefix + [sys.executable, "-c", _BULK_SERVER, lk.server_host],
                              stdout=subprocess.PIPE, text=True)
        try:
            port = rx.stdout.readline().strip()
            subprocess.run(lk.client_prefix + [sys.executable, "-c", _BULK_CLIENT, lk.server_host,
                                               port, "64"], check=True, timeout=20)
            out, _ = rx.communicate(timeout=20)
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
        nbytes, mbit = out.split()
        assert int(nbytes) == 64 * 65536
        assert 60 <= float(mbit) <= 110, f"bulk transfer at {mbit} Mb/s through a 100mbit link"
        st = lk.stats_between(before, lk.snapshot(), 1)
        assert st["bytes"]["client_to_server"] >= 64 * 65536
        assert st["qdisc"]["client_to_server"]["overlimits"] > 0      # tbf did hold packets back
        assert st["qdisc_drops"] >= 0 and st["elapsed_s"] > 0


@pytest.mark.skipif(not os.path.exists(LOADGEN), reason="build/loadgen is not built (make build)")
def test_echo_run_across_the_link(netns_ok):
    with link.open_link("100mbit", run_tag="echo", out=io.StringIO()) as lk:
        server = srv.start("raw_epoll", host=lk.server_host, port=0, prefix=lk.server_prefix)
        try:
            # `ip netns exec` execs: the PID we hold is the server itself.
            with open(f"/proc/{server.pid}/cmdline") as f:
                assert "harness.servers.raw_epoll" in f.read().replace("\0", " ")
            before = lk.snapshot()
            r = subprocess.run(lk.client_prefix + [LOADGEN, "--host", lk.server_host, "--port",
                                                   str(server.port), "--concurrency", "8",
                                                   "--count", "1000", "--warmup", "0"],
                               capture_output=True, text=True, timeout=30)
            after = lk.snapshot()
        finally:
            stats = server.stop()
        final = json.loads([l for l in r.stdout.splitlines() if l.startswith("FINAL ")][0][6:])
        assert final["completed_total"] == 1000 and final["failed_total"] == 0
        assert stats["served"] == 1000
        st = lk.stats_between(before, after, final["started_total"])
        # TCP's handshake, data, echo and two FINs with their ACKs: about 9 packets.
        ppc = st["packets_per_conn"]
        assert 6 <= ppc["total"] <= 14, st
        assert ppc["client_to_server"] >= 3 and ppc["server_to_client"] >= 3
        assert 500 <= st["bytes_per_conn"]["total"] <= 1500, st
        assert st["qdisc_drops"] == 0


_HOLDER = textwrap.dedent("""
    import json, subprocess, sys, time, signal
    sys.path.insert(0, sys.argv[1])
    from harness import link
    if sys.argv[2] == "exit":
        # Leaves without closing the context: the atexit fallback must clean up.
        cm = link.open_link("100mbit", run_tag="holder")
        lk = cm.__enter__()
        print(json.dumps([lk.server_ns, lk.client_ns, 0]), flush=True)
        sys.exit(0)
    if sys.argv[2] == "term":
        # What the runner does: SIGTERM becomes an exception, so finally blocks run.
        def to_exc(s, f): raise KeyboardInterrupt("SIGTERM")
        signal.signal(signal.SIGTERM, to_exc)
    with link.open_link("100mbit", run_tag="holder") as lk:
        sleeper = subprocess.Popen(lk.server_prefix + ["sleep", "60"])
        print(json.dumps([lk.server_ns, lk.client_ns, sleeper.pid]), flush=True)
        time.sleep(60)
""")


def _start_holder(mode: str):
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, ROOT, mode], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line:
        p.wait(timeout=10)
        pytest.fail(f"holder did not open a link: {p.stderr.read()}")
    return p, json.loads(line)


def test_stale_namespaces_of_a_killed_run_are_removed(netns_ok):
    p, (sns, cns, sleeper) = _start_holder("kill")
    try:
        # A live run's namespaces are never touched by someone else's cleanup.
        assert sns not in link.cleanup_stale(io.StringIO())
        assert sns in _netns_list() and cns in _netns_list()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert sns in _netns_list() and cns in _netns_list()      # SIGKILL: no cleanup ran
        out = io.StringIO()
        removed = link.cleanup_stale(out)
        assert {sns, cns} <= set(removed)
        assert sns not in _netns_list() and cns not in _netns_list()
        assert "stale" in out.getvalue()
        deadline = time.monotonic() + 5
        while alive(sleeper) and time.monotonic() < deadline:  # the orphan inside is gone too
            time.sleep(0.05)
        assert not alive(sleeper)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        link.cleanup_stale(io.StringIO())


def test_sigterm_as_exception_cleans_up(netns_ok):
    p, (sns, cns, sleeper) = _start_holder("term")
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
        names = _netns_list()
        assert sns not in names and cns not in names
        assert not alive(sleeper)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        link.cleanup_stale(io.StringIO())


def test_cleanup_is_not_interrupted_by_a_second_signal(netns_ok, monkeypatch):
    """Ctrl-C during teardown is held until the namespaces are gone, then delivered."""
    got = []
    old = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    real_delete = netns.delete_ns

    def delete_and_interrupt(ns):
        os.kill(os.getpid(), signal.SIGINT)    # arrives in the middle of the teardown
        real_delete(ns)

    monkeypatch.setattr(netns, "delete_ns", delete_and_interrupt)
    try:
        with link.open_link("100mbit", run_tag="sigint", out=io.StringIO()) as lk:
            pass
        assert lk.server_ns not in _netns_list() and lk.client_ns not in _netns_list()
        assert got == [signal.SIGINT]           # delivered once, after the teardown
    finally:
        signal.signal(signal.SIGINT, old)


def test_exit_without_closing_cleans_up(netns_ok):
    p, (sns, cns, _) = _start_holder("exit")
    p.wait(timeout=15)
    names = _netns_list()
    assert sns not in names and cns not in names


def test_failed_setup_leaves_nothing(netns_ok, monkeypatch):
    link.check_privileges("100mbit")                 # probe done (and cached) with the real tc
    monkeypatch.setattr(netns, "tc", lambda: "false")   # then every tc call fails mid-setup
    with pytest.raises(link.LinkError, match="failed"):
        with link.open_link("100mbit", run_tag="broken", out=io.StringIO()):
            pytest.fail("a half-built link was handed out")
    assert _ours_from(os.getpid()) == []


# ------------------------------------------------------------------ delay and loss (issue #15)

DELAYLINE = os.path.join(ROOT, "build", "delayline")
needs_delayline = pytest.mark.skipif(not os.access(DELAYLINE, os.X_OK),
                                     reason="build/delayline is not built (make build)")


@pytest.mark.parametrize("text,canon,sec", [
    ("5ms", "5ms", 0.005), ("0.1ms", "0.1ms", 0.0001), ("100us", "100us", 0.0001),
    ("1s", "1s", 1.0), (" 5MS ", "5ms", 0.005), ("0ms", "0ms", 0.0), (None, None, 0.0), ("", None, 0.0),
])
def test_parse_delay(text, canon, sec):
    got = link.parse_delay(text)
    assert got[0] == canon and got[1] == pytest.approx(sec)


@pytest.mark.parametrize("text", ["fast", "10", "-1ms", "5 ms", "1h", "5msec"])
def test_parse_delay_rejects(text):
    with pytest.raises(link.LinkError) as e:
        link.parse_delay(text)
    assert "\n" not in str(e.value) and "5ms" in str(e.value)
    with pytest.raises(link.LinkError, match="at most 10s"):
        link.parse_delay("11s")


@pytest.mark.parametrize("text,frac", [("1%", 0.01), ("0.5%", 0.005), ("0%", 0.0), ("50%", 0.5),
                                       (None, 0.0)])
def test_parse_loss(text, frac):
    assert link.parse_loss(text)[1] == pytest.approx(frac)


@pytest.mark.parametrize("text", ["1", "0.01", "abc", "-1%", "51%", "1 %", "%"])
def test_parse_loss_rejects(text):
    with pytest.raises(link.LinkError) as e:
        link.parse_loss(text)
    assert "\n" not in str(e.value) and "%" in str(e.value)


def test_loss_on_loopback_rejected():
    with pytest.raises(link.LinkError, match="emulated link"):
        with link.open_link("loopback", run_tag="t", loss="1%"):
            pass


def _cli(args, tmp_path):
    env = dict(os.environ, EVENTS_RESULTS_DIR=str(tmp_path / "results"))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,needle", [
    (["--link", "100mbit", "--loss", "1"], "bad loss"),
    (["--link", "100mbit", "--loss", "80%"], "too high"),
    (["--link", "100mbit", "--delay", "5"], "bad delay"),
    (["--loss", "1%"], "emulated link"),
    (["--delay", "5ms"], "emulated link"),
])
def test_cli_bad_delay_or_loss_is_one_line_exit_2(args, needle, tmp_path):
    r = _cli(["bench", "--variant", "master", "--repeat", "1", "--duration", "1", *args], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))


def test_no_tun_device_is_a_clear_error(monkeypatch):
    """Without netem and without /dev/net/tun: one line naming the device, never a
    link without the delay that was asked for."""
    monkeypatch.setattr(netns, "effective_caps", lambda: (1 << 40) - 1)
    monkeypatch.setattr(netns, "probe_passed", True)
    monkeypatch.setattr(netns, "tool", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(impairment, "netem_available", lambda: False)
    monkeypatch.setattr(impairment, "TUN_PATH", "/nonexistent/net/tun")
    with pytest.raises(link.LinkError) as e:
        with link.open_link("100mbit", run_tag="t", delay="5ms", loss="1%", out=io.StringIO()):
            pytest.fail("a link without the requested delay was handed out")
    msg = str(e.value)
    assert "\n" not in msg and "/nonexistent/net/tun" in msg and "netem" in msg
    assert "DELAY=5ms LOSS=1%" in msg and "without DELAY/LOSS" in msg


def test_delayline_not_built_is_a_clear_error(monkeypatch, tmp_path):
    if not os.path.exists(impairment.TUN_PATH):
        pytest.skip("no /dev/net/tun here: the no-TUN message comes first")
    if os.geteuid() != 0:
        pytest.skip("opening /dev/net/tun needs root")
    monkeypatch.setenv("EVENTS_DELAYLINE", str(tmp_path / "delayline"))
    with pytest.raises(link.LinkError, match="make build"):
        link.check_delayline("DELAY=5ms on LINK=100mbit")


def test_no_root_with_delay_names_root(monkeypatch):
    monkeypatch.setattr(netns, "effective_caps", lambda: 0)
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(link.LinkError, match="needs root"):
        with link.open_link("100mbit", run_tag="t", delay="5ms", loss="1%", out=io.StringIO()):
            pass


def test_rtt_warning_rule():
    from harness import runner
    assert runner.rtt_warning({"median_ms": 10.3}, 10.0) is None
    assert runner.rtt_warning({"median_ms": 0.3}, None) is None          # no delay configured
    assert "RTT mismatch" in runner.rtt_warning({"median_ms": 0.3}, 10.0)
    assert "RTT mismatch" in runner.rtt_warning({"median_ms": 12.5}, 10.0)
    assert "not measured" in runner.rtt_warning({"error": "boom"}, 10.0)
    # Sub-millisecond delays: the stack's own ~50 us round trip is not a mismatch.
    assert runner.rtt_warning({"median_ms": 0.24}, 0.2) is None


def _fake_record(spec, rtt_ms, warnings=(), drops=3):
    return {"spec": spec, "server": spec, "link": "100mbit", "status": "ok", "batch_id": "b",
            "round": 0, "config": {"concurrency": 64, "size": 100, "rate": None},
            "metrics": {"conn_per_s": 3000.0, "server_cpu_us_per_conn": 50.0, "p50_us": 20000,
                        "p99_us": 1030000, "failed": 0, "lost": 0, "client_bound": False},
            "rtt": {"median_ms": rtt_ms, "expected_ms": 10.0}, "warnings": list(warnings),
            "link_stats": {"qdisc_drops": 0, "delayline": {"dropped_loss": drops, "dropped_other": 0}}}


def test_table_shows_rtt_drops_and_a_mismatch_warning():
    recs = [_fake_record("raw_epoll", 10.2),
            _fake_record("master", 0.3, ["RTT mismatch: measured 0.30 ms, ..."], drops=5)]
    table = tables.format_table(recs)
    assert "RTT ms" in table and "pkt drops" in table
    assert "10.20 (10)" in table and "0.30 (10) !" in table
    assert "WARNING: master on 100mbit: 1 run(s)" in table
    assert "Round-trip bound" in table
    # Loopback records: no such columns.
    plain = [dict(r, rtt=None, link_stats=None, warnings=[]) for r in recs]
    assert "RTT ms" not in tables.format_table(plain)


def _udp_burst(lk, n: int, *, gap_every: int = 20) -> list[int]:
    """Send n numbered datagrams client -> server through the link; the sequence
    numbers the server received, in arrival order."""
    rx_src = textwrap.dedent("""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)    # SO_RCVBUFFORCE: no drop at the socket
        s.bind((sys.argv[1], 0)); print(s.getsockname()[1], flush=True)
        s.settimeout(5); got = []
        try:
            while True:
                got.append(int(s.recv(64)))
                s.settimeout(1)
        except socket.timeout:
            pass
        print(" ".join(map(str, got)), flush=True)
    """)
    tx_src = textwrap.dedent("""
        import socket, sys, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(int(sys.argv[3])):
            s.sendto(b"%d" % i, (sys.argv[1], int(sys.argv[2])))
            if i % int(sys.argv[4]) == 0: time.sleep(0.001)
    """)
    rx = subprocess.Popen(lk.server_prefix + [sys.executable, "-c", rx_src, lk.server_host],
                          stdout=subprocess.PIPE, text=True)
    try:
        port = rx.stdout.readline().strip()
        subprocess.run(lk.client_prefix + [sys.executable, "-c", tx_src, lk.server_host, port,
                                           str(n), str(gap_every)], check=True, timeout=30)
        out, _ = rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    return [int(x) for x in out.split()]


@needs_delayline
def test_delay_measured_within_tolerance(netns_ok):
    before = _host_state()
    with link.open_link("100mbit", run_tag="delay", delay="10ms", out=io.StringIO(),
                        via="delayline") as lk:
        info = lk.info()
        assert info["kind"] == "netns-tun-tbf-delayline"
        assert info["impairment"]["mechanism"] == "delayline" and lk.expected_rtt_ms == 20.0
        rtt = lk.probe_rtt(samples=5)
        assert rtt["ok"] == 5, rtt
        # Twice the one-way delay plus the stack's and the delay line's own microseconds.
        assert 19.0 <= rtt["median_ms"] <= 25.0, rtt
        assert 19.0 <= rtt["kernel_rtt_median_ms"] <= 25.0, rtt
        assert _host_state() == before           # TUN devices live in the namespaces only
        pid = info["impairment"]["delayline_pid"]
    assert not alive(pid)
    assert lk.delayline_final and lk.delayline_final["final"] is True
    assert _ours_from(os.getpid()) == [] and _host_state() == before


@needs_delayline
def test_loss_is_counted_and_order_kept(netns_ok):
    """Every datagram sent is either received or counted as dropped by the delay line,
    and those received arrive in the order sent (FIFO per direction, constant delay)."""
    n = 1000
    with link.open_link("100mbit", run_tag="loss", delay="2ms", loss="20%", seed=42,
                        out=io.StringIO(), via="delayline") as lk:
        before = lk.snapshot()
        got = _udp_burst(lk, n)
        st = lk.stats_between(before, lk.snapshot(), None)
    c2s = st["delayline"]["client_to_server"]
    assert got == sorted(got) and len(set(got)) == len(got), "reordered or duplicated"
    assert c2s["packets_in"] == n
    assert c2s["dropped_loss"] + len(got) == n                  # nothing lost silently
    assert c2s["dropped_queue"] == 0 and c2s["write_errors"] == 0
    assert 0.12 * n <= c2s["dropped_loss"] <= 0.28 * n           # 20 % +- 8 points
    assert st["delayline"]["cpu_s"] >= 0 and st["delayline"]["dropped_loss"] >= c2s["dropped_loss"]
    assert st["impairment"]["loss_fraction"] == 0.2


@needs_delayline
def test_order_kept_without_loss(netns_ok):
    with link.open_link("100mbit", run_tag="order", delay="1ms", out=io.StringIO(),
                        via="delayline") as lk:
        got = _udp_burst(lk, 2000, gap_every=50)
    assert got == list(range(2000))


@needs_delayline
@pytest.mark.skipif(not os.path.exists(LOADGEN), reason="build/loadgen is not built (make build)")
def test_echo_survives_loss(netns_ok):
    """With 1 % loss each way every connection completes: retransmits slow it, never lose it.
    The client's timeout is the harness's under loss (16 s: four handshake attempts)."""
    from harness import runner
    with link.open_link("100mbit", run_tag="lossy", delay="1ms", loss="1%", out=io.StringIO(),
                        via="delayline") as lk:
        server = srv.start("raw_epoll", host=lk.server_host, port=0, prefix=lk.server_prefix)
        try:
            before = lk.snapshot()
            r = subprocess.run(lk.client_prefix + [LOADGEN, "--host", lk.server_host, "--port",
                                                   str(server.port), "--concurrency", "16",
                                                   "--count", "400", "--warmup", "0",
                                                   "--timeout-ms", str(runner.LOSSY_TIMEOUT_MS)],
                               capture_output=True, text=True, timeout=60)
            st = lk.stats_between(before, lk.snapshot(), 400)
        finally:
            server.stop()
    final = json.loads([l for l in r.stdout.splitlines() if l.startswith("FINAL ")][0][6:])
    assert final["completed_total"] == 400 and final["failed_total"] == 0, final
    assert st["delayline"]["dropped_loss"] > 0                   # there was loss to survive


_DL_HOLDER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from harness import link
    with link.open_link("100mbit", run_tag="dlholder", delay="1ms", loss="1%",
                        via="delayline") as lk:
        print(json.dumps([lk.server_ns, lk.client_ns, lk.info()["impairment"]["delayline_pid"]]),
              flush=True)
        time.sleep(60)
""")


@needs_delayline
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_delayline_gone_when_its_harness_is(netns_ok, sig):
    """SIGTERM (the default action: no Python cleanup at all) or SIGKILL of the harness:
    the delay line exits by itself (PDEATHSIG), and the next cleanup removes the namespaces."""
    p = subprocess.Popen([sys.executable, "-c", _DL_HOLDER, ROOT], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line:
            p.wait(timeout=10)
            pytest.fail(f"holder did not open a link: {p.stderr.read()}")
        sns, cns, dl = json.loads(line)
        assert alive(dl)
        p.send_signal(sig)
        p.wait(timeout=10)
        deadline = time.monotonic() + 5
        while alive(dl) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(dl), "the delay line outlived its harness"
        link.cleanup_stale(io.StringIO())
        names = _netns_list()
        assert sns not in names and cns not in names
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        link.cleanup_stale(io.StringIO())


@needs_delayline
def test_stale_delayline_is_killed_by_cleanup(netns_ok, tmp_path):
    """A delay line whose harness is gone but which survived (no PDEATHSIG: started by
    hand here) is found in the stale server namespace and killed with it."""
    sns, cns = f"{netns.PREFIX}999999-1-stale-s", f"{netns.PREFIX}999999-1-stale-c"
    for ns in (sns, cns):
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    dl = subprocess.Popen(["setsid", DELAYLINE, "--client-ns", f"/run/netns/{cns}",
                           "--server-ns", f"/run/netns/{sns}", "--delay-us", "1000"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert dl.stdout.readline().startswith("READY ")
        out = io.StringIO()
        removed = link.cleanup_stale(out)
        assert {sns, cns} <= set(removed), out.getvalue()
        dl.wait(timeout=10)
        names = _netns_list()
        assert sns not in names and cns not in names
    finally:
        if dl.poll() is None:
            dl.kill()
            dl.wait()
        for ns in (sns, cns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@needs_delayline
def test_delayline_rejects_bad_arguments():
    r = subprocess.run([DELAYLINE, "--client-ns", "/x", "--server-ns", "/y", "--loss", "2"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--loss" in r.stderr
    r = subprocess.run([DELAYLINE, "--client-ns", "/nonexistent", "--server-ns", "/nonexistent"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "error:" in r.stderr


@needs_delayline
def test_loss_only_link_expects_no_rtt(netns_ok):
    """LOSS without DELAY: the delay line runs with no delay; nothing to check the RTT against."""
    with link.open_link("100mbit", run_tag="lossonly", loss="1%", out=io.StringIO(),
                        via="delayline") as lk:
        assert lk.name == "100mbit+loss1%" and lk.expected_rtt_ms is None
        rtt = lk.probe_rtt(samples=3)
        assert rtt["median_ms"] is not None and rtt["median_ms"] < 5, rtt
