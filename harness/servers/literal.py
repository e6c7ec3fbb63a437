"""The ae-literal design's echo server: spec ``literal[:steps=STEP+STEP...]``.

The loop is variants/ablation's: the design a straight 2016 port of Redis's ae.c would
have been, with the named steps toward today's master and alone_proc taken
(``literal:steps=adapter+locals``, ``literal:steps=all`` = every step toward master,
``literal:steps=unified`` = the unified proc on the literal design).  The server is
master's exactly (``common.EventsEcho``: state machine, accept policy, idle sweep,
READY/STATS), as alone_proc's is: with the unified step the transitions are the fd's
one proc, as there.  An unknown step is refused when the spec is parsed
(options.STEPS), before anything runs.

The one step of the app rather than the loop, ``switch``, is here: without it a
connection goes from reading to writing by ``delete_file_event(fd, READABLE)`` then
``create_file_event(fd, WRITABLE)`` (``DeleteCreateEcho``), two ``epoll_ctl`` (DEL, ADD)
where master's server adds WRITABLE and keeps READABLE, one ``MOD`` (the Redis idiom,
``common.EventsEcho``).  The protocol is EchoCore's either way.
"""

from variants.ablation import loop_class, parse_steps

from harness.servers import common, loops
from harness.servers.common import READABLE, WRITABLE, WRITING

NAME = "literal"


class DeleteCreateEcho(common.EventsEcho):
    """master's server with the read->write switch a two-proc server without the Redis
    idiom makes: drop READABLE (the fd leaves the kernel), then add WRITABLE (it comes
    back): two epoll_ctl instead of one."""

    def watch_write(self, conn):
        self.loop.delete_file_event(conn.fd, READABLE)
        conn.watched = WRITING
        self.loop.create_file_event(conn.fd, WRITABLE, self.write_proc, conn)


def make_loop(args, setsize):
    return loop_class(args.steps)(setsize=setsize, backend=args.backend)


def make_echo(args, listener, loop):
    switch = "switch" in parse_steps(args.steps)
    return (common.EventsEcho if switch else DeleteCreateEcho)(args, listener, loop)


if __name__ == "__main__":
    loops.serve_events(NAME, make_loop, echo_class=make_echo)
