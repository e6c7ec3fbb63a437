"""Your own ae-style event loop, served by the shared echo app: spec ``loop:MODULE:ATTR``.

``MODULE:ATTR`` names a class (or factory) with the Events API -- the one the three
variants implement (docs/variants.md): ``create_file_event(fd, mask, proc, data)`` with
``proc(loop, fd, data, mask)``, ``delete_file_event(fd, mask)``,
``create_time_event(ms, proc, data)`` with ``proc(loop, id, data)`` returning the next
delay in ms or -1, ``main()`` and ``stop()``; masks are ae's (READABLE = 1,
WRITABLE = 2).  It is built as ``ATTR(setsize=N)`` (or ``ATTR()`` if it takes no
setsize) and then runs exactly master's server: the same state machine, accept policy,
idle sweep, READY/STATS lines (common.EventsEcho), so its figures compare with the
variants' like for like.  The module must be importable from where you run the harness
(the working directory is put on the server's PYTHONPATH) or from PYTHONPATH.
README.md, "Bring your own loop", has a worked example (examples/tinyloop.py).
"""
from __future__ import annotations

import importlib
import inspect

from harness.servers import loops

NAME = "loop"


def load(target: str):
    """The object MODULE:ATTR names (ATTR defaults to EventLoop); ImportError if not."""
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:              # the user's module: any error is "cannot load it"
        raise ImportError(f"cannot import {module!r}: {type(e).__name__}: {e}") from None
    try:
        return getattr(mod, attr or "EventLoop")
    except AttributeError:
        raise ImportError(f"module {module!r} has no {attr or 'EventLoop'!r}") from None


def add_options(p):
    p.add_argument("--loop", required=True, metavar="MODULE:ATTR",
                   help="the event loop class, e.g. mypkg.myloop:EventLoop")


def make_loop(args, setsize):
    cls = load(args.loop)
    try:
        takes = "setsize" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes = False
    try:
        return cls(setsize=setsize) if takes else cls()
    except Exception as e:
        raise ValueError(f"{args.loop}() failed: {type(e).__name__}: {e}") from None


if __name__ == "__main__":
    loops.serve_events(NAME, make_loop, add_options)
