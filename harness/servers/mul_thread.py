"""mul_thread's echo server: the Events library running fired file events on a pool.

The state machine, the accept loop, the counters, the idle sweep (one periodic time
event) and ``--diet`` are ``common.EventsEcho`` -- master's server exactly (same
read proc and write proc); only the loop differs: ``--workers N`` threads and
``--pool faithful`` (the study's design: each pass's batch runs on the pool and the
loop waits for all of it) or ``--pool oneshot`` (the improved design of issue 7).
Procs on worker threads touch only their own connection plus the shared counters (kept
per thread: ``common.ThreadStats``) and the connection table (see common.py, "Threads").
"""
from __future__ import annotations

from variants.mul_thread import EventLoop

from harness.servers import common, loops

NAME = "mul_thread"


class Echo(common.EventsEcho):
    stats_class = common.ThreadStats    # exact counts without the GIL too


def make_loop(args, setsize):
    return EventLoop(setsize=setsize, backend=args.backend, workers=args.workers, pool=args.pool)


if __name__ == "__main__":
    loops.serve_events(NAME, make_loop, echo_class=Echo)
