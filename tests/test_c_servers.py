"""The C echo servers' shared per-connection module (c_echo_conn.c): the diet levers,
the idle policy, and the event-layer paths each server's layer must get right.

c_epoll and redis_ae run the same state machine on different event layers, so every
test here runs on both (redis_ae is skipped, with the reason, when it is not built:
`make redis_ae`).  The protocol and fault checks every server must pass are in
test_loadgen.py (C section), test_servers.py and test_server_faults.py; this file
covers what the shared module added: ``--diet[=LEVER,...]`` and the ``diet_levers``
STATS field, one idle-timeout policy for both servers, and lazy_watch's registration
paths (watch only when a call would block; no unregister before close where close()
is enough).  Bounded in time (socket and subprocess timeouts, small counts); nothing
here asserts speed.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
import time

import pytest

from harness import servers
from test_loadgen import check_final, client, loadgen

C_LEVERS = ["defer_accept", "cork", "lazy_watch"]     # canonical order; dontwait is built in
IDLE = 0.4                                           # --idle-timeout for the idle tests


@pytest.fixture(params=["c_epoll", "redis_ae"])
def c_server(request):
    """start(*extra_args, **kw) -> ServerProcess, for c_epoll and redis_ae."""
    name = request.param
    path = os.path.join(servers.BUILD, name)
    if name == "redis_ae" and not os.path.exists(path):
        pytest.skip("redis_ae is not built: run `make redis_ae`")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `make build`")
    started = []

    def start(*extra, **kw):
        srv = servers.start(name, extra=list(extra), **kw)
        started.append(srv)
        return srv
    start.name = name
    start.path = path
    yield start
    for srv in started:
        srv.stop()


# --------------------------------------------------------------------------- levers

@pytest.mark.parametrize("args, levers", [
    ([], []),
    (["--diet"], C_LEVERS),
    (["--diet=cork"], ["cork"]),
    (["--diet=defer_accept"], ["defer_accept"]),
    (["--diet=lazy_watch"], ["lazy_watch"]),
    (["--diet=lazy_watch,defer_accept"], ["defer_accept", "lazy_watch"]),   # canonical order
    (["--diet=cork,cork"], ["cork"]),
])
def test_levers_reported_and_echo_correct(c_server, args, levers):
    """STATS lists the levers that are on, and the echo is right with any of them."""
    srv = c_server(*args)
    payload = os.urandom(100)
    assert client(srv.port, payload) == payload
    assert client(srv.port, payload + b"surplus") == payload
    f = check_final(loadgen("--port", srv.port, "--count", 200, "-c", 8))
    assert f["completed"] == 200
    stats = srv.stop()
    assert stats["diet_levers"] == levers
    assert stats["served"] == 202 and stats["errors"] == 0 and stats["open_at_exit"] == 0


@pytest.mark.parametrize("arg, says", [
    ("--diet=bogus", "unknown lever 'bogus'"),
    ("--diet=dontwait", "dontwait is built into the C servers"),
    ("--diet=cork,dontwait", "dontwait is built into the C servers"),
    ("--diet=", "empty lever name"),
    ("--diet=cork,,lazy_watch", "empty lever name"),
])
def test_bad_lever_is_a_usage_error(c_server, arg, says):
    r = subprocess.run([c_server.path, arg], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "READY" not in r.stdout
    first = r.stderr.splitlines()[0]
    assert first.startswith(c_server.name + ": --diet: ") and says in first, r.stderr
    assert first.endswith("this server takes: defer_accept, cork, lazy_watch"), first


def test_levers_as_a_separate_word_get_a_hint(c_server):
    r = subprocess.run([c_server.path, "--diet", "cork"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--diet=LEVER" in r.stderr.splitlines()[0], r.stderr


def _server_sockets(pid):
    """Duplicates of the server's TCP sockets (pidfd_getfd, Linux >= 5.6), as
    (listening, socket) pairs; the caller closes them.  Skips where not allowed."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError) as e:
        pytest.skip(f"pidfd_open unavailable: {e}")
    out = []
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)          # SYS_pidfd_getfd, all arches
            if fd < 0:
                for s in out:
                    s[1].close()
                pytest.skip(f"pidfd_getfd not allowed here: {os.strerror(ctypes.get_errno())}")
            s = socket.socket(fileno=fd)
            out.append((bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)), s))
    finally:
        os.close(pidfd)
    return out


@pytest.mark.parametrize("args, cork, defer", [
    ([], False, False),
    (["--diet=cork"], True, False),
    (["--diet=defer_accept"], False, True),
    (["--diet"], True, True),
])
def test_listener_levers_are_set_on_the_sockets(c_server, args, cork, defer):
    """cork: TCP_CORK on the listener and (inherited) on an accepted socket;
    defer_accept: TCP_DEFER_ACCEPT on the listener.  Read from the server's own
    sockets, so this checks what the kernel was told, not what the server reports."""
    srv = c_server(*args)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"part")                   # accepted (even with defer_accept), then waits
        time.sleep(0.2)
        socks = _server_sockets(srv.pid)
        try:
            listeners = [x for lst, x in socks if lst]
            accepted = [x for lst, x in socks if not lst]
            assert len(listeners) == 1 and len(accepted) == 1, socks
            for x in listeners + accepted:
                assert bool(x.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)) == cork
            assert bool(listeners[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)) == defer
        finally:
            for _, x in socks:
                x.close()


# --------------------------------------------------------------------------- idle policy

def _closed_after(sock, t0, limit=5.0):
    sock.settimeout(limit)
    try:
        data = sock.recv(100)
    except socket.timeout:
        return None
    assert data == b"", "the server sent data to a client that never finished a request"
    return time.monotonic() - t0


@pytest.mark.parametrize("args", [[], ["--diet=cork,lazy_watch"]])
def test_idle_policy_is_the_sweep(c_server, args):
    """Both servers close a quiet client the same way (common.py's sweep): an orderly
    close (EOF, not a reset), never before --idle-timeout after its last progress, at
    most 1.25 timeouts after it (+ scheduling slack), counted in idle_timeouts."""
    srv = c_server(*args, idle_timeout=IDLE)
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    t_silent = time.monotonic()
    partial = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    partial.sendall(b"x" * 60)
    t_partial = time.monotonic()
    try:
        quiet_for = [_closed_after(silent, t_silent), _closed_after(partial, t_partial)]
    finally:
        silent.close()
        partial.close()
    for q in quiet_for:
        assert q is not None and IDLE - 0.02 <= q < IDLE * 1.25 + 1.5, quiet_for
    assert client(srv.port, bytes(100)) == bytes(100)          # still serving
    stats = srv.stop()
    assert stats["idle_timeouts"] == 2 and stats["errors"] == 0 and stats["served"] == 1


def test_progress_postpones_the_timeout(c_server):
    """Each piece of a slow request is progress: a request sent in pieces over more
    than two timeouts (each gap well under one) is served, not timed out."""
    srv = c_server(idle_timeout=IDLE)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        for k in range(10):
            s.sendall(bytes([k]) * 10)
            time.sleep(IDLE / 4)
        got = b""
        while len(got) < 100:
            chunk = s.recv(100)
            assert chunk
            got += chunk
    assert got == b"".join(bytes([k]) * 10 for k in range(10))
    stats = srv.stop()
    assert stats["idle_timeouts"] == 0 and stats["served"] == 1


# --------------------------------------------------------------------------- lazy_watch paths

@pytest.mark.parametrize("args", [[], ["--diet"], ["--diet=lazy_watch"]])
def test_registered_then_fd_reused(c_server, args):
    """A request in two pieces makes lazy_watch register the fd (watch READ); closing it
    must leave the event layer clean for the next connection on that fd number (ae:
    its own table must hear of the close; epoll: close() drops the fd).  Then many
    connections reuse the fd numbers."""
    srv = c_server(*args)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"a" * 50)
            time.sleep(0.05)
            s.sendall(b"b" * 50)
            got = b""
            while chunk := s.recv(200):
                got += chunk
        assert got == b"a" * 50 + b"b" * 50
    f = check_final(loadgen("--port", srv.port, "--count", 300, "-c", 4))
    assert f["completed"] == 300
    stats = srv.stop()
    assert stats["served"] == 303 and stats["errors"] == 0


@pytest.mark.parametrize("args", [[], ["--diet"], ["--diet=lazy_watch"]])
def test_blocked_reply_then_fd_reused(c_server, args):
    """A reply larger than the socket buffers to a client that reads late: the send
    would block, so the connection is watched for WRITE (lazy_watch: its first watch,
    or a switch from READ), finished, closed; the next connections on that fd number
    are served."""
    size = 14 << 20                              # above tcp_wmem + tcp_rmem maxima
    srv = c_server(*args, size=size)
    data = os.urandom(size)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
        sender.start()
        time.sleep(0.5)                          # request in, reply stuck
        got = bytearray()
        while chunk := s.recv(1 << 20):
            got += chunk
        sender.join(5)
    assert bytes(got) == data
    for _ in range(2):
        small = os.urandom(size)
        assert client(srv.port, small, timeout=10) == small
    stats = srv.stop()
    assert stats["served"] == 3 and stats["errors"] == 0
