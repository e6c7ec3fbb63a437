"""How a Python echo server runs its event loops: one in the main thread, or N in threads
of one process (``--loops N --loop-mode threads --reuse-port``, spec ``loop_mode=threads``,
issue 26).

Design essay.  ``loops=N`` in procs mode is N copies of a server, each unaware of the
others (harness/servers/workers.py starts them).  In threads mode one process holds the N
loops, and what the N copies got for free must be said once, here, for every server that
has the mode (raw_epoll, the three Events variants, asyncio and uvloop):

* Each loop is a *member*: built in its own thread (an asyncio loop belongs to the thread
  that made it; the others are built there too, so nothing of one loop is ever touched by
  another thread before it runs), on its own SO_REUSEPORT listener of the one port, with
  its own poller (epoll object, EventLoop instance or asyncio loop) and its own counters.
  A server supplies only ``start(listener, wake) -> Member``: the member's counters, a
  ``run()`` that serves until asked to stop and then settles its counts (EchoCore.stopped),
  and a ``stop()`` callable from another thread.
* Signals: the main thread blocks SIGTERM/SIGINT before any loop thread exists (threads
  inherit the mask, so the signal can only be taken by the main thread's ``sigwait``) and
  runs no loop.  The single-loop servers' wake-up socket (common.on_signals) is replaced
  by one socketpair per member: ``stop()`` sets the loop's flag, then the runner writes a
  byte to that member's pair, so a loop blocked in its poll returns at once.  The member's
  loop must watch the read end (and drain it); asyncio has its own self-pipe and ignores it.
* Stopping is bounded: every member is asked to stop, the request repeated every 0.1 s
  (a stop that arrives before the thread entered its loop is reset by the loop's start:
  the Events loops set ``_stop = False`` in main()), and each thread is joined until one
  shared deadline.  STATS is printed then, whatever happened: a thread still running is
  named under ``loops_not_stopped`` (its counts may miss exchanges in progress) rather
  than hanging the process.  The exit is ``os._exit`` (common.finish's reasons: mul_thread's
  pools must not delay it).
* One STATS line: the members' counts summed, each member's own under ``workers``
  (counters.sum_stats with ``one_process``: the CPU fields are the process's, not summed),
  so a loop that served nothing is visible -- the same shape as N processes' STATS.
* A member whose loop raises (a bug, not a client's doing) kills the process with its
  traceback and exit status 1: a half-dead group would leave its listener in the port's
  SO_REUSEPORT group, and the connections hashed to it would hang unserved.

``serve_events`` is the Events variants' server (master, mul_thread, alone_proc, the
literal design and ``loop:`` specs): the loop built by ``events_member``, in the main
thread or, in threads mode, once per thread.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from harness.servers import common
from harness.servers.counters import pass_hook, sum_stats

THREADS = "threads"
START_TIMEOUT_S = 30.0      # every loop thread built and ready, or the server fails to start
STOP_TIMEOUT_S = 5.0        # every loop thread returned after SIGTERM, or STATS says which did not
STOP_REPEAT_S = 0.1         # how often the stop request is repeated meanwhile


@dataclass
class Member:
    """One event loop of a threads-mode server (module docstring)."""
    stats: Any                       # its counters: .as_dict() is one loop's STATS fields
    run: Callable[[], None]          # serve until stop(), then settle the counts (its thread)
    stop: Callable[[], None]         # ask run() to return soon (any thread; idempotent)


def threads_mode(args) -> bool:
    """``--loop-mode threads`` with more than one loop (one loop is the ordinary server)."""
    return getattr(args, "loop_mode", None) == THREADS and args.loops > 1


def reuse_port_listeners(args) -> list[socket.socket]:
    """``args.loops`` listeners on one port, each with SO_REUSEPORT: the first binds
    ``args.port`` (0: any free port), the others the port it got."""
    args.reuse_port = True
    first = common.listen(args)
    args.port = first.getsockname()[1]
    return [first] + [common.listen(args) for _ in range(args.loops - 1)]


def _fail(message: str) -> None:
    """One line on stderr and exit 1 at once (loop threads, and their pools, may exist)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    os._exit(1)


def serve_threads(name: str, args, start: Callable[[socket.socket, socket.socket], Member]) -> None:
    """Serve with ``args.loops`` members in threads of this process (module docstring);
    prints READY once every member is built, one STATS line after SIGTERM/SIGINT, and
    exits (never returns)."""
    listeners = reuse_port_listeners(args)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    n = len(listeners)
    wakes = [socket.socketpair() for _ in range(n)]
    for pair in wakes:
        for s in pair:
            s.setblocking(False)
    members: list = [None] * n
    failed: list[str] = []
    up = threading.Barrier(n + 1)

    def run(i: int) -> None:
        try:
            members[i] = start(listeners[i], wakes[i][0])
        except BaseException as e:              # SystemExit too: common.die in a thread
            failed.append(f"loop {i}: {type(e).__name__}: {e}")
            up.abort()
            return
        try:
            up.wait()
        except threading.BrokenBarrierError:
            return
        try:
            members[i].run()
        except BaseException:
            traceback.print_exc()
            _fail(f"{name}: loop {i} of {n} raised (above); the server stops")

    threads = [threading.Thread(target=run, args=(i,), name=f"{name}-loop-{i}", daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    try:
        up.wait(timeout=START_TIMEOUT_S)
    except threading.BrokenBarrierError:
        _fail(f"{name}: a loop thread did not start ({'; '.join(failed) or 'timed out'})")
    common.ready(name, listeners[0])
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    stuck = stop_all(members, [w for _, w in wakes], threads)
    stats = sum_stats([m.stats.as_dict() for m in members], one_process=True)
    if stuck:
        stats["loops_not_stopped"] = stuck
    try:
        common.say("STATS", stats)
    finally:
        os._exit(0)


def stop_all(members: list, wakes: list, threads: list, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Ask every member to stop and wake it, repeatedly, until every thread has ended or
    ``timeout`` has passed; the indexes of the threads still running."""
    deadline = time.monotonic() + timeout
    while True:
        live = [i for i, t in enumerate(threads) if t.is_alive()]
        if not live or time.monotonic() >= deadline:
            return live
        for i in live:
            try:
                members[i].stop()
                wakes[i].send(b"\0")
            except (OSError, RuntimeError):     # wake buffer full; a loop already closed
                pass
        threads[live[0]].join(min(STOP_REPEAT_S, max(0.0, deadline - time.monotonic())))


# --------------------------------------------------------------------------- Events variants

def events_member(name: str, args, listener: socket.socket, wake: socket.socket | None, make_loop,
                  echo_class) -> Member:
    """An Events loop serving ``listener`` with the shared echo app (master's server:
    common.EventsEcho), woken through ``wake`` (None: the process's only loop, woken by
    its signals, common.on_signals).  ``make_loop(args, setsize)`` builds the
    variant's EventLoop; the setsize is the fd limit (capped), so no fd this process can
    open is refused by the loop.  mul_thread: each member's loop has its own pool of
    ``--workers`` threads (nothing is shared between loops)."""
    try:
        loop = make_loop(args, min(common.fd_limit(), 1 << 16))
    except (ValueError, OSError, ImportError) as e:
        common.die(f"{name}: cannot create the event loop: {e}")
    server = echo_class(args, listener, loop)
    if wake is None:                 # the process's one loop: the signals wake it
        wake = common.on_signals(server.stats, loop.stop)
    if hasattr(loop, "set_after_sleep"):        # passes, counted by the library's own hook
        loop.set_after_sleep(pass_hook(server.stats))
    loop.create_file_event(wake.fileno(), common.READABLE, _drain_proc, wake)
    loop.create_file_event(listener.fileno(), common.READABLE, server.on_accept)
    interval = common.sweep_interval(args)
    if interval:
        ms = max(1, round(interval * 1000))
        loop.create_time_event(ms, server.sweep_proc, ms)

    def run() -> None:
        loop.main()
        server.stopped()
    return Member(server.stats, run, loop.stop)


def serve_events(name: str, make_loop, add_options=None, echo_class=common.EventsEcho, argv=None):
    """Run an echo server on an Events variant: one loop in the main thread (SIGTERM/SIGINT
    through common.on_signals), or with ``--loops N --loop-mode threads`` N loops in
    threads.  ``add_options(parser)`` declares the server's own options."""
    args = common.parse_args(name, argv, add_options)
    if threads_mode(args):
        serve_threads(name, args, lambda listener, wake: events_member(
            name, args, listener, wake, make_loop, echo_class))
    listener = common.listen(args)
    member = events_member(name, args, listener, None, make_loop, echo_class)
    common.ready(name, listener)
    member.run()
    common.finish(member.stats)


def _drain_proc(loop, fd, sock, mask):
    common.drain(sock)
