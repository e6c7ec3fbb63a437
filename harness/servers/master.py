"""master's echo server: the Events library in ae's structure (a read proc and a
write proc per fd).

The state machine, the accept loop, the counters, the idle sweep (one periodic time
event) and ``--diet`` are ``common.EventsEcho`` / ``common.EchoCore``, the code
raw_epoll runs too; this file only builds the loop.  ``diff master.py alone_proc.py``
shows the one design difference between the variants' servers; ``diff master.py
mul_thread.py`` shows the loop's construction.

``--poll-delay SECONDS``: the study's "connection merging" experiment -- sleep that
long before each poll (a before-sleep hook), hoping more connections are ready per
poll.  The study got 80 conn/s with 0.1 s.  Expect a bound near C / (3 D) for C
connections in flight and a delay of D: a classic connection needs three passes
(accept, read, write), and every pass now costs at least D, so the batching gained
per pass cannot make up for the wait.  (Measured here with build/loadgen -c 64 and
0.1 s: 192 conn/s against a bound of 213; with ``--diet``, one pass per connection,
673.)
"""
from __future__ import annotations

import time

from variants.master import EventLoop

from harness.servers import loops

NAME = "master"


def make_loop(args, setsize):
    loop = EventLoop(setsize=setsize, backend=args.backend)
    if args.poll_delay:
        delay = args.poll_delay
        loop.set_before_sleep(lambda loop: time.sleep(delay))
    return loop


if __name__ == "__main__":
    loops.serve_events(NAME, make_loop)
