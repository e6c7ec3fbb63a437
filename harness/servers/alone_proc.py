"""alone_proc's echo server: the Events library with one unified proc per fd.

The state machine, the accept loop, the counters, the idle sweep (one periodic time
event) and ``--diet`` are ``common.EchoCore``, the code raw_epoll runs too.  What
differs from master's server is only what the API differs in: one proc per fd,
called once per pass with the fired mask, dispatching on the connection's state.
"""

from variants.alone_proc import EventLoop

from harness.servers import common
from harness.servers.common import READABLE, READING, WRITABLE, WRITING

NAME = "alone_proc"


class UnifiedEcho(common.EventsEcho):
    """One proc for everything on a connection fd (the last proc given wins, so
    registering WRITABLE with the same proc keeps it)."""

    def watch_read(self, conn):
        conn.watched = READING
        self.loop.create_file_event(conn.fd, READABLE, self.proc, conn)

    def watch_write(self, conn):
        conn.watched = WRITING
        self.loop.create_file_event(conn.fd, WRITABLE, self.proc, conn)

    def proc(self, loop, fd, conn, mask):
        if conn.watched == READING:
            self.on_readable(conn)
        elif mask & WRITABLE:
            self.on_writable(conn)
        else:                       # readable while waiting to write: stop listening
            loop.delete_file_event(fd, READABLE)


def make_loop(args, setsize):
    return EventLoop(setsize=setsize, backend=args.backend)


if __name__ == "__main__":
    common.serve_events(NAME, make_loop, echo_class=UnifiedEcho)
