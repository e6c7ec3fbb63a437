"""asyncio's echo server: an ``asyncio.Protocol`` on the default event loop
(``uvloop_server.py`` runs this same code on uvloop).

asyncio owns its sockets, so the per-connection state machine is the Protocol's:
``data_received`` accumulates N bytes, ``write``s them and closes; surplus is
ignored.  Everything else is common.py's: options, the listener (handed to
``create_server(sock=...)``, so the socket settings are the same), the counters,
READY/STATS and the idle sweep's generation rule.

What the library decides for us, documented rather than fought:
* accept: asyncio accepts up to ``backlog`` connections per wake-up until EAGAIN
  (the rule the other servers copy); libuv accepts until EAGAIN.
* TCP_NODELAY is set on every accepted socket by both (a setsockopt per connection).
* EMFILE: asyncio (3.11) reports each failed accept to the exception handler
  (counted here as ``emfile``, like EchoCore's count of failed accepts), stops
  accepting and retries one second later; the pending connections wait in the
  backlog meanwhile.  It keeps looping ``backlog`` times per wake-up after the
  first EMFILE, each time scheduling a retry, so the count grows large: that is
  asyncio's behaviour, not the storm's size.  libuv sheds the pending connections
  with a reserve fd, as EchoCore does, but silently: uvloop's ``emfile`` stays 0.
* ``--diet``: only the listener's levers, ``defer_accept`` and ``cork`` (TCP_CORK is
  inherited by accepted sockets).  ``dontwait`` and ``lazy_watch`` are not possible:
  the library owns the accepted socket -- asyncio calls setblocking(False) on it and
  registers it for reading before the protocol sees it; libuv accepts with
  accept4(SOCK_NONBLOCK) (dontwait built in) and starts reading at once.  Asking
  for them is a usage error (options.py declares each server's levers).
* Idle timeout: one ``call_later`` sweep, re-armed each period (not a timer per
  connection), the same generation rule as EchoCore.
"""

from __future__ import annotations

import asyncio
import errno
import signal

from harness.servers import common, loops

NAME = "asyncio"


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("server", "transport", "buf", "seen", "done")

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.buf = b""
        self.seen = server.gen
        self.done = False

    def connection_made(self, transport):
        self.transport = transport
        server = self.server
        server.stats.accepted += 1
        server.live.add(self)

    def data_received(self, data):
        if self.done:
            return                                  # surplus after the request: discarded
        if self.buf:                                # in pieces: a bytearray grows in O(1)
            self.buf += data
            data = self.buf
        size = self.server.size
        if len(data) >= size:
            self.done = True
            self.transport.write(data if len(data) == size else data[:size])
            self.transport.close()                  # flushes what write() could not send
            self.server.stats.served += 1
        else:
            if not self.buf:
                self.buf = bytearray(data)
            self.seen = self.server.gen

    def eof_received(self):
        return None                                 # close our side too

    def connection_lost(self, exc):
        server = self.server
        server.live.discard(self)
        if not self.done:                           # closed or reset before the request
            server.stats.errors += 1

    def time_out(self):
        self.done = True
        self.server.stats.idle_timeouts += 1
        self.transport.abort()


class AsyncioEcho:
    def __init__(self, args, loop):
        self.args = args
        self.loop = loop
        self.size = args.size
        self.stats = common.Stats(args.diet)
        self.live = set()            # connections, for the idle sweep
        self.gen = 0
        self.stopping = False

    def sweep(self, interval):
        self.gen += 1
        for proto in common.stale(list(self.live), self.gen):
            if not proto.done:
                proto.time_out()
        self.loop.call_later(interval, self.sweep, interval)

    def exception_handler(self, loop, context):
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            self.stats.emfile += 1
            return
        loop.default_exception_handler(context)     # logged to stderr

    def on_signal(self):
        """First signal: stop at the end of this iteration; a second: exit now."""
        if self.stopping:
            common.finish(self.stats)
        self.stopping = True
        self.loop.stop()


def start_server(name: str, args, listener, new_loop) -> AsyncioEcho:
    """A new loop (set as this thread's) serving ``listener``, with the idle sweep armed."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    server = AsyncioEcho(args, loop)
    loop.set_exception_handler(server.exception_handler)
    try:
        loop.run_until_complete(loop.create_server(lambda: EchoProtocol(server),
                                                   sock=listener, backlog=args.backlog))
    except OSError as e:
        common.die(f"{name}: cannot serve: {e}")
    interval = common.sweep_interval(args)
    if interval:
        loop.call_later(interval, server.sweep, interval)
    return server


def member(name: str, args, listener, new_loop) -> loops.Member:
    """One loop of ``--loops N --loop-mode threads`` (issue 26; the runner, signals and
    STATS are loops.py's): its own asyncio loop, listener and counters.  Why threads: on
    a free-threaded build N loops in one process can use N cores with no copy of the
    interpreter per core; under the GIL they take turns (the harness flags such runs).
    The runner's wake-up socket is not needed: ``call_soon_threadsafe`` wakes the loop."""
    server = start_server(name, args, listener, new_loop)
    loop = server.loop
    return loops.Member(server.stats, loop.run_forever,
                        lambda: loop.call_soon_threadsafe(loop.stop))


def serve(name: str, new_loop=asyncio.new_event_loop, argv=None):
    args = common.parse_args(name, argv)
    if loops.threads_mode(args):
        loops.serve_threads(name, args, lambda listener, _wake: member(name, args, listener, new_loop))
    listener = common.listen(args)
    server = start_server(name, args, listener, new_loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        server.loop.add_signal_handler(sig, server.on_signal)
    common.ready(name, listener)
    server.loop.run_forever()
    common.finish(server.stats)


if __name__ == "__main__":
    serve(NAME)
