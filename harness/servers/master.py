"""master's echo server: the Events library in ae's structure (a read proc and a
write proc per fd).

The state machine, the accept loop, the counters, the idle sweep (one periodic time
event) and ``--diet`` are ``common.EventsEcho`` / ``common.EchoCore``, the code
raw_epoll runs too; this file only builds the loop.  ``diff master.py alone_proc.py``
shows the one design difference between the variants' servers; ``diff master.py
mul_thread.py`` shows the loop's construction.

``--poll-delay SECONDS``: the study's "connection merging" experiment -- sleep that
long before each poll (a before-sleep hook), hoping more connections are ready per
poll.  (The study measured 80 conn/s with 0.1 s: the kernel does not add newly ready
sockets to the ones a level-triggered poll already holds... the harness measures it.)
"""

import time

from variants.master import EventLoop

from harness.servers import common

NAME = "master"


def add_options(p):
    common.add_backend_option(p)
    p.add_argument("--poll-delay", type=common.seconds_type, default=0.0, metavar="SECONDS",
                   help="sleep this long before each poll (connection-merging experiment)")


def make_loop(args, setsize):
    loop = EventLoop(setsize=setsize, backend=args.backend)
    if args.poll_delay:
        delay = args.poll_delay
        loop.set_before_sleep(lambda loop: time.sleep(delay))
    return loop


if __name__ == "__main__":
    common.serve_events(NAME, make_loop, add_options)
