"""The ae-literal design's echo server: spec ``literal[:steps=STEP+STEP...]``.

The loop is variants/ablation's: the design a straight 2016 port of Redis's ae.c would
have been, with the named steps toward today's master and alone_proc taken
(``literal:steps=adapter+locals``, ``literal:steps=all`` = every step toward master,
``literal:steps=unified`` = the unified proc on the literal design).  The server is
master's exactly (``common.EventsEcho``: state machine, accept policy, idle sweep,
READY/STATS), as alone_proc's is: with the unified step the transitions are the fd's
one proc, as there.  An unknown step is refused when the spec is parsed
(options.STEPS), before anything runs.
"""

from variants.ablation import loop_class

from harness.servers import common

NAME = "literal"


def make_loop(args, setsize):
    return loop_class(args.steps)(setsize=setsize, backend=args.backend)


if __name__ == "__main__":
    common.serve_events(NAME, make_loop)
