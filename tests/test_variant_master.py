"""master's own behaviour: a read proc and a write proc per fd, on the caller's thread."""

import socket
import threading

from variants.master import (ALL_EVENTS, DONT_WAIT, READABLE, WRITABLE, EventLoop)
from test_conformance import pump, pair  # noqa: F401  (pair is a fixture)

NOW = ALL_EVENTS | DONT_WAIT


def test_two_procs_and_the_last_client_data_wins(pair):  # noqa: F811
    a, b = pair
    seen = []
    with EventLoop() as loop:
        loop.create_file_event(a.fileno(), READABLE,
                               lambda lp, fd, d, m: (seen.append(("r", d)), a.recv(9)), "one")
        loop.create_file_event(a.fileno(), WRITABLE,
                               lambda lp, fd, d, m: seen.append(("w", d)), "two")
        b.send(b"x")
        loop.process_events(NOW)
    # One client_data per fd, as in ae: the last one given.
    assert seen == [("r", "two"), ("w", "two")]


def test_registering_a_bit_again_replaces_its_proc(pair):  # noqa: F811
    a, b = pair
    seen = []
    with EventLoop() as loop:
        loop.create_file_event(a.fileno(), READABLE, lambda *args: seen.append("old"))
        loop.create_file_event(a.fileno(), READABLE,
                               lambda lp, fd, d, m: (seen.append("new"), a.recv(9)))
        b.send(b"x")
        pump(loop, lambda: seen)
    assert seen == ["new"]


def test_procs_run_on_the_calling_thread(pair):  # noqa: F811
    a, b = pair
    threads = []
    with EventLoop() as loop:
        loop.create_file_event(a.fileno(), READABLE,
                               lambda lp, fd, d, m: (threads.append(threading.current_thread()),
                                                     a.recv(9)))
        b.send(b"x")
        pump(loop, lambda: threads)
    assert threads == [threading.current_thread()]


def test_echo_server_pattern():
    """The classic ae echo pattern: accept, read, register WRITABLE, write, close."""
    n, size = 50, 100
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    lsock.setblocking(False)
    served = []
    with EventLoop() as loop:
        def on_write(lp, fd, conn, mask):
            conn.send(conn.buf)
            lp.delete_file_event(fd, READABLE | WRITABLE)
            conn.close()
            served.append(1)

        def on_read(lp, fd, conn, mask):
            data = conn.recv(size - len(conn.buf))
            conn.buf += data
            if len(conn.buf) >= size or not data:
                lp.delete_file_event(fd, READABLE)
                lp.create_file_event(fd, WRITABLE, on_write, conn)

        def on_accept(lp, fd, data, mask):
            try:
                s, _ = lsock.accept()
            except BlockingIOError:
                return
            s.setblocking(False)
            conn = Conn(s.detach())
            lp.create_file_event(conn.fileno(), READABLE, on_read, conn)

        loop.create_file_event(lsock.fileno(), READABLE, on_accept)
        replies = []

        def client():
            for i in range(n):
                c = socket.create_connection(lsock.getsockname(), timeout=5)
                c.sendall(bytes([i % 256]) * size)
                got = b""
                while len(got) < size:
                    chunk = c.recv(size)
                    if not chunk:
                        break
                    got += chunk
                replies.append(got == bytes([i % 256]) * size)
                c.close()

        t = threading.Thread(target=client)
        t.start()
        pump(loop, lambda: len(served) == n, timeout=20, flags=ALL_EVENTS | DONT_WAIT)
        t.join(10)
    lsock.close()
    assert replies == [True] * n


class Conn(socket.socket):
    """A socket with a buffer (what a server keeps per connection)."""

    def __init__(self, fileno):
        super().__init__(fileno=fileno)
        self.buf = b""
