"""alone_proc's echo server: the Events library with one unified proc per fd.

The state machine, the accept loop, the counters, the idle sweep (one periodic time
event) and the diet levers are ``common.EchoCore``, the code raw_epoll runs too, and
the watch calls are master's (``common.EventsEcho``).  What differs is the library's
API: the last proc given for an fd is its only proc, called once per pass with the
fired mask.  So ``watch_write`` (``create_file_event(fd, WRITABLE, on_writable)``)
makes ``on_writable`` the connection's one proc; READABLE stays registered (the Redis
idiom, one ``epoll_ctl MOD``), and when only READABLE fires while we wait to write,
``on_writable`` sees a mask without WRITABLE and drops READABLE.  No adapter proc sits
between the loop and the state machine: the library calls the transitions directly.
"""
from __future__ import annotations

from variants.alone_proc import EventLoop

from harness.servers import loops

NAME = "alone_proc"


def make_loop(args, setsize):
    return EventLoop(setsize=setsize, backend=args.backend)


if __name__ == "__main__":
    loops.serve_events(NAME, make_loop)
