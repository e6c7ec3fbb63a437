"""Races that the GIL hides: shared state that mul_thread's worker threads update.

Under the GIL an ``x += 1`` on an attribute is never interrupted (CPython 3.10+ switches
threads only at calls and backward jumps), so these tests pass on a GIL build whether or
not the code is right. On a free-threaded build (``make python-ft``, then ``make test-ft``)
two workers really run at once and a read-modify-write that no lock guards loses
updates: each test below failed there before its fix (see docs/performance.md,
"mul_thread without the GIL"). Each is bounded: a fixed number of operations, and a
join with a timeout.
"""

import argparse
import os
import socket
import sys
import threading

import pytest

from variants.common import backends
from variants.mul_thread import READABLE, WRITABLE, EventLoop

THREADS = 4
GIL = getattr(sys, "_is_gil_enabled", lambda: True)()


def run_threads(target, n=THREADS, timeout=60.0):
    """Start n threads on target(i), released together; fail if one is still running."""
    start = threading.Barrier(n)
    errors = []

    def body(i):
        try:
            start.wait(timeout)
            target(i)
        except BaseException as exc:     # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "threads still running after %.0f s" % timeout
    if errors:
        raise errors[0]


@pytest.mark.parametrize("backend", backends.available())
def test_oneshot_fd_count_is_exact_under_concurrent_registration(backend):
    """oneshot guards each fd with its stripe's lock, so workers register and delete fds
    of different stripes at the same time; the count of registered fds (which decides
    whether a pass polls at all) was one ``+=`` shared by all stripes and lost updates."""
    rounds = 3000
    socks = [socket.socketpair() for _ in range(THREADS)]
    try:
        with EventLoop(backend=backend, pool="oneshot", workers=1) as loop:
            base = loop._nfds                        # the wake-up fd
            fds = [a.fileno() for a, _ in socks]
            assert len({fd & 63 for fd in fds}) == THREADS   # different stripes

            def churn(i):
                fd = fds[i]
                for _ in range(rounds):
                    loop.create_file_event(fd, READABLE, lambda *a: None)
                    loop.create_file_event(fd, WRITABLE, lambda *a: None)
                    loop.delete_file_event(fd, READABLE | WRITABLE)

            run_threads(churn)
            assert loop._nfds == base
            assert "fds=%d " % base in repr(loop)
            # and half of them left registered: counted exactly too
            run_threads(lambda i: loop.create_file_event(fds[i], READABLE, lambda *a: None)
                        if i % 2 else None)
            assert loop._nfds == base + THREADS // 2
    finally:
        for a, b in socks:
            a.close()
            b.close()


class _Sock:
    """A connected socket that takes every send whole and closes without a syscall."""
    def send(self, buf, flags=0):
        return len(buf)

    def close(self):
        pass


def test_mul_thread_server_counts_every_exchange_exactly():
    """mul_thread's echo server counts served exchanges with ``stats.served += 1`` on
    whichever worker finished the exchange; STATS must equal the client's count."""
    from harness.servers import common, mul_thread

    args = argparse.Namespace(size=4, diet=(), backlog=16)
    listener = socket.socket()
    try:
        loop = EventLoop(pool="oneshot", workers=1)
        server = mul_thread.Echo(args, listener, loop)
        per_thread = 20000

        def serve(i):
            sock = _Sock()
            for _ in range(per_thread):
                conn = common.Conn(sock, -1, 0)
                conn.buf = b"ping"
                server.on_writable(loop, -1, conn, common.WRITABLE)   # sends, counts, closes
                conn = common.Conn(sock, -1, 0)
                server.drop(conn)            # counts an error, closes

        run_threads(serve)
        stats = server.stats.as_dict()
        assert stats["served"] == THREADS * per_thread
        assert stats["errors"] == THREADS * per_thread
        loop.close()
        if server._reserve is not None:
            os.close(server._reserve)
    finally:
        listener.close()
