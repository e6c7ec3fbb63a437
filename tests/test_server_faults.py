"""Fault behaviour of every echo server (issue 6, server side): bad clients, fd
exhaustion, signals.  Short versions of the storms; every socket has a timeout.
"""

import os
import shutil
import signal
import socket
import threading
import time

import pytest

from conftest import server_specs
from test_servers import assert_conserved, connect, exchange, payload, read_until_eof, reset, settle

ALL = server_specs()
IDLE = 0.5          # --idle-timeout for the idle tests, seconds


def closed_by_server_after(sock, limit=5.0):
    """Seconds until the server closes ``sock`` (EOF or reset); None if it does not."""
    sock.settimeout(limit)
    t0 = time.monotonic()
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        return None
    assert data == b"", "the server sent data to a client that never finished a request"
    return time.monotonic() - t0


@pytest.mark.parametrize("name", ALL)
def test_reset_mid_request(server, name):
    srv = server(name)
    s = connect(srv.port)
    s.sendall(b"r" * 50)
    time.sleep(0.1)                  # the server has accepted and read the first half
    reset(s)
    good = settle(srv.port)
    stats = srv.stop()
    assert srv.proc.returncode == 0
    assert stats["served"] == good and stats["errors"] == 1
    assert_conserved(stats)


@pytest.mark.parametrize("name", ALL)
def test_partial_request_then_idle_is_closed(server, name):
    srv = server(name, idle_timeout=IDLE)
    s = connect(srv.port)
    s.sendall(b"p" * 50)
    t0 = time.monotonic()
    # Served meanwhile: an idle client does not block anyone.
    assert exchange(srv.port, payload(1, 100)) == payload(1, 100)
    waited = closed_by_server_after(s)
    s.close()
    assert waited is not None, "the idle connection was never closed"
    total = time.monotonic() - t0
    assert total >= IDLE * 0.9, f"closed after {total:.2f}s, before the idle timeout"
    stats = srv.stop()
    assert stats["idle_timeouts"] == 1 and stats["served"] == 1 and stats["errors"] == 0
    assert_conserved(stats)


@pytest.mark.parametrize("name", ALL + ["raw_epoll:diet", "alone_proc:diet"])
def test_connect_and_never_send_is_closed(server, name):
    """(diet: TCP_DEFER_ACCEPT holds such a client in the kernel for about a second,
    then the server accepts it and the idle timeout applies as usual.)"""
    srv = server(name, idle_timeout=IDLE)
    socks = [connect(srv.port) for _ in range(20)]
    t0 = time.monotonic()
    try:
        for s in socks:
            assert closed_by_server_after(s, limit=max(0.1, 5.0 - (time.monotonic() - t0))) \
                is not None, "an idle connection was never closed"
    finally:
        for s in socks:
            s.close()
    assert time.monotonic() - t0 >= IDLE * 0.9
    assert exchange(srv.port, payload(2, 100)) == payload(2, 100)
    stats = srv.stop()
    assert stats["idle_timeouts"] == 20 and stats["served"] == 1 and stats["errors"] == 0
    assert_conserved(stats)


@pytest.mark.parametrize("name", ALL)
def test_idle_timeout_zero_disables(server, name):
    srv = server(name, idle_timeout=0)
    s = connect(srv.port)
    s.sendall(b"q" * 10)
    assert closed_by_server_after(s, limit=1.2) is None     # still open after 1.2 s
    s.sendall(b"q" * 90)
    assert read_until_eof(s) == b"q" * 100
    s.close()
    stats = srv.stop()
    assert stats["idle_timeouts"] == 0 and stats["served"] == 1


@pytest.mark.parametrize("surplus", [0, 65536])
@pytest.mark.parametrize("name", ALL)
def test_reply_waits_for_a_slow_reader(server, name, surplus):
    """A reply larger than the socket buffers and a client that does not read yet
    (optionally sending more than N bytes meanwhile): the server waits for writable
    without spinning -- surplus keeps the socket readable, a level-triggered poller
    must not be left watching that -- and keeps serving.

    Without surplus the client gets exactly its N bytes.  With surplus it gets a
    correct prefix: closing a socket with unread bytes makes the kernel send RST and
    drop what it has not transmitted yet (TCP semantics, the same in every server)."""
    size = 14 << 20                              # above tcp_wmem + tcp_rmem maxima here
    srv = server(name, size=size)
    data = payload(5, size)
    s = connect(srv.port, timeout=10)
    try:
        def send():
            try:
                s.sendall(data + b"X" * surplus)
            except OSError:
                pass
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(0.4)                          # the server has the request, its reply is stuck
        cpu0 = srv.cpu_seconds()
        time.sleep(0.8)
        cpu1 = srv.cpu_seconds()
        if cpu0 is not None and cpu1 is not None:
            assert cpu1 - cpu0 < 0.4, f"server used {cpu1 - cpu0:.2f}s CPU in 0.8s: spinning"
        got = read_until_eof(s)
        sender.join(5)
    finally:
        s.close()
    if surplus:
        assert got and data.startswith(got)
    else:
        assert len(got) == size and got == data
    small = payload(6, size)
    assert exchange(srv.port, small) == small
    stats = srv.stop()
    assert stats["served"] == 2 and stats["errors"] == 0


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
@pytest.mark.parametrize("name", ALL)
def test_emfile_storm(server, name):
    """fd limit 64: hold ~60 idle connections, then a storm of 140 requests.  The server
    must neither die nor spin, and serve again once the idle clients go away."""
    srv = server(name, idle_timeout=30, prefix=["prlimit", "--nofile=64:64", "--"])
    idle, storm = [], []
    try:
        for _ in range(60):
            idle.append(connect(srv.port))
        for i in range(140):
            s = connect(srv.port)
            storm.append(s)
            try:
                s.sendall(payload(i, 100))
            except OSError:
                pass                               # already shed: fine
        time.sleep(0.5)
        assert srv.alive(), srv.stop() and srv.stderr_tail()
        cpu0 = srv.cpu_seconds()
        time.sleep(1.0)
        cpu1 = srv.cpu_seconds()
        assert srv.alive()
        if cpu0 is not None and cpu1 is not None:
            assert cpu1 - cpu0 < 0.5, f"server used {cpu1 - cpu0:.2f}s CPU in 1s: spinning"
    finally:
        for s in idle + storm:
            s.close()
    # Descriptors free up as the server sees those closes; then it serves again
    # (asyncio retries accepting once a second).
    deadline = time.monotonic() + 10
    while True:
        try:
            if exchange(srv.port, payload(7, 100), timeout=3) == payload(7, 100):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the server did not serve again after the storm"
        time.sleep(0.2)
    for i in range(20):
        assert exchange(srv.port, payload(i, 100)) == payload(i, 100)
    stats = srv.stop()
    assert srv.proc.returncode == 0
    if name != "uvloop":                           # libuv sheds silently (asyncio_server.py)
        assert stats["emfile"] >= 1, stats
    assert stats["served"] >= 21


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("name", ALL)
def test_signal_exits_zero_with_stats(server, name, sig):
    srv = server(name)
    assert exchange(srv.port, payload(1, 100)) == payload(1, 100)
    s = connect(srv.port)                          # a connection in flight
    s.sendall(b"h" * 30)
    time.sleep(0.1)
    try:
        os.kill(srv.pid, sig)
        srv.proc.wait(timeout=5)
    finally:
        s.close()
    stats = srv.stop()
    assert srv.proc.returncode == 0
    assert stats is not None, srv.stderr_tail()
    assert stats["served"] == 1 and stats["accepted"] == 2
    assert "Traceback" not in srv.stderr_text
