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

from harness import link  # noqa: E402
from harness import servers as srv  # noqa: E402

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
    return [n for n in _netns_list() if n.startswith(f"{link.PREFIX}{pid}-")]


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
    monkeypatch.setattr(link, "_effective_caps", lambda: 0)
    monkeypatch.setattr(link.os, "geteuid", lambda: 1000)
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
    monkeypatch.setattr(link, "_effective_caps", lambda: 1 << link.CAP_NET_ADMIN)  # no SYS_ADMIN
    monkeypatch.setattr(link.os, "geteuid", lambda: 0)
    with pytest.raises(link.LinkError, match="lacks CAP_SYS_ADMIN"):
        link.check_privileges("1gbit")


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(link, "_effective_caps", lambda: (1 << 40) - 1)
    monkeypatch.setattr(link, "_tool", lambda name: None if name == "tc" else "/usr/sbin/" + name)
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
        assert info["link"] == "100mbit" and info["rate_mbit"] == 100.0
        # Per-namespace settings, read back from inside the namespaces.
        assert info["sysctls"]["client"]["tcp_tw_reuse"] == "1"
        assert info["sysctls"]["client"]["ip_local_port_range"] == "1024 65535"
        with open("/proc/sys/net/core/somaxconn") as f:
            assert info["sysctls"]["server"]["somaxconn"] == f.read().strip()
        # Delay: applied where netem exists, otherwise said plainly and recorded.
        if "not applied" in (info["delay"] or ""):
            assert info["delay"] == "requested 0.1ms, not applied: netem unavailable"
            assert "netem" in out.getvalue()
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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
        while _alive(sleeper) and time.monotonic() < deadline:  # the orphan inside is gone too
            time.sleep(0.05)
        assert not _alive(sleeper)
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
        assert not _alive(sleeper)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        link.cleanup_stale(io.StringIO())


def test_cleanup_is_not_interrupted_by_a_second_signal(netns_ok, monkeypatch):
    """Ctrl-C during teardown is held until the namespaces are gone, then delivered."""
    got = []
    old = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    real_delete = link._delete_ns

    def delete_and_interrupt(ns):
        os.kill(os.getpid(), signal.SIGINT)    # arrives in the middle of the teardown
        real_delete(ns)

    monkeypatch.setattr(link, "_delete_ns", delete_and_interrupt)
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
    monkeypatch.setattr(link, "_tc", lambda: "false")   # then every tc call fails mid-setup
    with pytest.raises(link.LinkError, match="failed"):
        with link.open_link("100mbit", run_tag="broken", out=io.StringIO()):
            pytest.fail("a half-built link was handed out")
    assert _ours_from(os.getpid()) == []
