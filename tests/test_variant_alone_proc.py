"""alone_proc's own behaviour: one unified proc per fd, one call per ready fd per pass."""

import socket
import threading

import pytest

from variants.alone_proc import (ALL_EVENTS, BARRIER, DONT_WAIT, READABLE, WRITABLE,
                                 EventLoop)
from variants.common import backends
from test_conformance import pump, pair  # noqa: F401  (pair is a fixture)

NOW = ALL_EVENTS | DONT_WAIT


@pytest.fixture(params=backends.available())
def loop(request):
    with EventLoop(backend=request.param) as loop:
        yield loop


def test_one_call_with_the_combined_mask(loop, pair):  # noqa: F811
    a, b = pair
    calls = []

    def proc(lp, fd, d, mask):
        calls.append(mask)
        a.recv(9)

    loop.create_file_event(a.fileno(), READABLE | WRITABLE, proc)
    b.send(b"x")
    assert loop.process_events(NOW) == 1
    assert calls == [READABLE | WRITABLE]


def test_fired_mask_is_only_what_fired(loop, pair):  # noqa: F811
    a, b = pair
    calls = []
    loop.create_file_event(a.fileno(), READABLE | WRITABLE, lambda lp, fd, d, m: calls.append(m))
    loop.process_events(NOW)                    # nothing to read: writable only
    assert calls == [WRITABLE]


def test_bits_or_and_the_last_proc_wins(loop, pair):  # noqa: F811
    a, b = pair
    calls = []
    loop.create_file_event(a.fileno(), READABLE, lambda *args: calls.append("reader"), "r")
    loop.create_file_event(a.fileno(), WRITABLE,
                           lambda lp, fd, d, m: calls.append(("writer", d, m)), "w")
    assert loop.get_file_events(a.fileno()) == READABLE | WRITABLE
    b.send(b"x")
    loop.process_events(NOW)
    assert calls == [("writer", "w", READABLE | WRITABLE)]


def test_barrier_is_kept_but_there_is_still_one_call(loop, pair):  # noqa: F811
    a, b = pair
    calls = []
    loop.create_file_event(a.fileno(), READABLE | WRITABLE | BARRIER,
                           lambda lp, fd, d, m: calls.append(m))
    assert loop.get_file_events(a.fileno()) == READABLE | WRITABLE | BARRIER
    b.send(b"x")
    loop.process_events(NOW)
    assert calls == [READABLE | WRITABLE]       # BARRIER is never a fired bit


def test_delete_of_some_bits_keeps_the_proc(loop, pair):  # noqa: F811
    a, b = pair
    calls = []
    loop.create_file_event(a.fileno(), READABLE | WRITABLE,
                           lambda lp, fd, d, m: (calls.append(m), a.recv(9)))
    loop.delete_file_event(a.fileno(), WRITABLE)
    b.send(b"x")
    loop.process_events(NOW)
    assert calls == [READABLE]


def test_echo_server_with_one_proc_per_connection(loop):
    n, size = 50, 100
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    lsock.setblocking(False)
    served = []
    bufs = {}

    def on_conn(lp, fd, s, mask):
        # One proc sees both directions: read the request, answer at once, close.
        if mask & READABLE:
            data = s.recv(size)
            bufs[fd] = bufs.get(fd, b"") + data
            if len(bufs[fd]) >= size or not data:
                s.send(bufs.pop(fd))
                lp.delete_file_event(fd, READABLE | WRITABLE)
                s.close()
                served.append(1)

    def on_accept(lp, fd, d, mask):
        try:
            s, _ = lsock.accept()
        except BlockingIOError:
            return
        s.setblocking(False)
        lp.create_file_event(s.fileno(), READABLE, on_conn, s)

    loop.create_file_event(lsock.fileno(), READABLE, on_accept)
    replies = []

    def client():
        for i in range(n):
            c = socket.create_connection(lsock.getsockname(), timeout=5)
            c.sendall(b"%c" % (65 + i % 26) * size)
            got = b""
            while len(got) < size:
                chunk = c.recv(size)
                if not chunk:
                    break
                got += chunk
            replies.append(got == b"%c" % (65 + i % 26) * size)
            c.close()

    t = threading.Thread(target=client)
    t.start()
    pump(loop, lambda: len(served) == n, timeout=20)
    t.join(10)
    lsock.close()
    assert replies == [True] * n
