"""raw_epoll: the baseline -- ``select.epoll`` directly, no event library.

This is the study's "Python raw epoll" server, the yardstick every ratio is taken
against: the classic level-triggered pattern

    accept -> register(fd, EPOLLIN) -> recv -> modify(fd, EPOLLOUT) -> send
           -> unregister(fd) -> close

The protocol, the accept loop, the counters and the ``--diet`` mode come from
``common.EchoCore`` -- the same code the variant servers run -- so what this file
adds is only what an event library would do for them: the three ``epoll`` calls
and the dispatch loop.

Idle sweep: ``epoll.poll`` is given the time left until the next sweep as its
timeout, and one clock read per pass decides whether the sweep is due (the same
thing an ae loop does for its nearest timer).  With ``--idle-timeout 0`` the loop
blocks without a timeout and reads no clock.

Events per pass: the loop bumps ``polls[len(events)]`` once per pass (one list
increment), so STATS has the exact histogram of events per poll (counters.py).

``--loops N --loop-mode threads``: N of these loops in threads of one process, each with
its own epoll object, listener and counters (``member``; the runner is loops.py).
"""

from __future__ import annotations

import select
import time

from harness.servers import common, loops
from harness.servers.common import READABLE, READING, WRITABLE, WRITING

NAME = "raw_epoll"
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT    # why: one name look-up, not two


class RawEpollEcho(common.EchoCore):
    def __init__(self, args, listener):
        super().__init__(args, listener)
        self.ep = select.epoll()
        self.running = True

    def stop(self):
        self.running = False

    def watch_read(self, conn):
        conn.watched = READING
        self.ep.register(conn.fd, EPOLLIN)

    def watch_write(self, conn):
        if conn.watched:
            self.ep.modify(conn.fd, EPOLLOUT)
        else:                                   # diet: first registration, for writable
            self.ep.register(conn.fd, EPOLLOUT)
        conn.watched = WRITING

    def unwatch(self, conn):
        self.ep.unregister(conn.fd)

    def run(self, interval: float, wake):
        """Serve until stop(); ``wake`` is the signal wake-up socket (common.on_signals), or
        in threads mode the one the runner writes to after stop() (loops.py)."""
        lfd = self.listener.fileno()
        self.ep.register(lfd, select.EPOLLIN)
        self.ep.register(wake.fileno(), select.EPOLLIN)
        poll = self.ep.poll
        conns = self.conns
        on_accept, on_readable, on_writable = self.on_accept, self.on_readable, self.on_writable
        monotonic = time.monotonic
        timeout = interval or -1
        next_sweep = monotonic() + interval if interval else None
        polls = self.stats.count_polls()        # events per pass, exact (counters.py)
        while self.running:
            events = poll(timeout)
            polls[len(events)] += 1
            for fd, _ev in events:
                if fd == lfd:
                    on_accept()
                    continue
                conn = conns.get(fd)
                if conn is None:                # the wake-up socket, or closed earlier in
                    if fd == wake.fileno():     # this pass (idle sweep)
                        common.drain(wake)
                    continue
                # Dispatch on what we asked for: EPOLLERR/EPOLLHUP arrive with either,
                # and the recv or send then reports the error.
                if conn.watched == READING:
                    on_readable(None, fd, conn, READABLE)
                else:
                    on_writable(None, fd, conn, WRITABLE)
            if next_sweep is not None:
                now = monotonic()
                if now >= next_sweep:
                    self.sweep()
                    next_sweep = now + interval
                timeout = next_sweep - now


def member(args, listener, wake) -> loops.Member:
    """One loop of ``--loops N --loop-mode threads`` (harness/servers/loops.py): its own
    epoll object, counters and listener, woken by the runner through ``wake``."""
    server = RawEpollEcho(args, listener)

    def run() -> None:
        server.run(common.sweep_interval(args), wake)
        server.stopped()
    return loops.Member(server.stats, run, server.stop)


def main(argv=None):
    args = common.parse_args(NAME, argv)
    if loops.threads_mode(args):
        loops.serve_threads(NAME, args, lambda listener, wake: member(args, listener, wake))
    listener = common.listen(args)
    server = RawEpollEcho(args, listener)
    wake = common.on_signals(server.stats, server.stop)
    common.ready(NAME, listener)
    server.run(common.sweep_interval(args), wake)
    server.stopped()
    common.finish(server.stats)


if __name__ == "__main__":
    main()
