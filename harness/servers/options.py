"""Server options, declared once: the spec check and every Python server's argparse.

An :class:`Option` is one knob of a server: its name (spec key ``poll_delay``,
command-line flag ``--poll-delay``), how a value is checked and converted, its
default, the allowed values, a help line.  The server table
(``harness/servers/__init__.py``) attaches to each server the options it takes
(:data:`COMMON` plus its own); from that one declaration come

* the spec check: ``parse_spec("mul_thread:pool=bogus")`` is refused at the
  command line, before any server starts, with the allowed values;
* each Python server's argparse (``common.parse_args`` adds every declared option);
* the argv the harness builds for any server, C servers included
  (``servers.command``).

Run-wide, ``--diet``/``DIET=1`` adds ``diet`` to every spec that does not say it:
each server's full supported set.  ``--diet=cork+defer_accept``/``DIET=cork+defer_accept``
adds those levers where supported (a server that supports none of them runs without
diet; a lever no server of the batch supports is refused).  The batch table says,
per server, which levers it could not take and why.

The diet levers (``--diet``, issue 16)
--------------------------------------
``diet`` is a set of independent levers, one meaning each, in this canonical order:

* ``defer_accept``: TCP_DEFER_ACCEPT on the listener; the kernel wakes us only when
  the request's first data has arrived, so the next step almost always succeeds (a
  client that never sends is accepted after about a second, then the idle timeout
  applies).
* ``cork``: TCP_CORK on the listener, inherited by every accepted socket: the reply
  waits in the kernel until ``close``, and the data and the FIN leave in one segment
  -- one packet less each way, so less TCP work in both kernels; no extra syscall and
  no added latency (close follows the last send at once).  The biggest single saving:
  0.68x classic raw_epoll's CPU per connection without it (spec
  ``raw_epoll:diet,no_cork``; ``no_cork`` is a spec alias for the diet without
  cork), 0.52x with it (docs/performance.md).
* ``dontwait``: no ``setblocking(False)`` (an ``ioctl(FIONBIO)`` per connection);
  every recv/send passes MSG_DONTWAIT instead, which is just as non-blocking.
* ``lazy_watch``: recv right after accept, send right after the request is complete;
  register with the poller only when a call would block, so a connection that
  completes within one accept needs no ``epoll_ctl`` at all (one that was registered
  is unregistered before close: the event libraries keep their own fd table).

asyncio and uvloop take ``defer_accept`` and ``cork`` only (the library owns the
accepted socket); the C servers take ``defer_accept``, ``cork`` and ``lazy_watch``
(their accept4 has SOCK_NONBLOCK built in).

System calls per completed connection (raw_epoll, all four levers; ``strace -f -c``
around ``build/loadgen --count 20000 -c 16``; master and alone_proc the same):
classic 9.32 (accept4 1.13, ioctl 1, getsockname 1, epoll_ctl 3, recvfrom 1,
sendto 1, close 1, epoll_wait 0.19); diet 5.00 (accept4 1.00, getsockname 1,
recvfrom 1, sendto 1, close 1, epoll_wait 0.001).  ``getsockname`` is CPython
building a socket object for the accepted fd.  Server CPU per connection (server
on CPU 0, loadgen -c 64 on CPU 1, indicative only): raw_epoll 24.5 us, with the
diet 14.2 us (0.58x); master and alone_proc with the diet 0.59x of classic raw_epoll.

A server declares the levers it supports (:class:`Diet`) and, for each of the
others, one line saying why not ("built in: ..." or "not possible: ...").
On a server's command line ``--diet`` alone is every lever it supports and
``--diet=L1,L2`` those only; an unknown or unsupported lever is a usage error.
In a spec ``NAME:diet`` is every supported lever and ``NAME:diet=cork+defer_accept``
those (``+`` joins levers: ``,`` separates options); ``no_cork`` is an alias kept
for recorded results: ``NAME:diet,no_cork`` = the full set without ``cork``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

LEVERS = ("defer_accept", "cork", "dontwait", "lazy_watch")


class OptionError(ValueError):
    """A value an option does not accept; the message says what it accepts."""


# The number checks, written once for both places a value arrives: a spec (``mul_thread:
# workers=0`` -> "mul_thread: workers=0 must be an integer >= 1") and a command line
# (``--repeat 0`` -> "--repeat: '0' must be an integer >= 1"). Each raises OptionError
# with the reason; ``argparse_type`` turns it into argparse's error.

def _int_at_least_1(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionError("is not an integer") from None
    if value < 1:
        raise OptionError("must be an integer >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError("is not a number of seconds") from None
    if not value >= 0 or not math.isfinite(value):
        raise OptionError("must be a finite number of seconds >= 0")
    return value


def check_positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError("is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise OptionError("must be a finite number > 0")
    return value


def argparse_type(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from a check above: its reason, after the value given."""
    def convert(text):
        import argparse
        try:
            return check(text)
        except OptionError as e:
            raise argparse.ArgumentTypeError(f"{text!r} {e}") from None
    return convert


positive_int = argparse_type(_int_at_least_1)      # an integer >= 1
seconds = argparse_type(_seconds)                  # a finite number of seconds >= 0
positive_number = argparse_type(check_positive_number)  # a finite number > 0


def format_value(value: Any) -> str:
    """A typed value as it goes on a command line or into a spec's text."""
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


@dataclass(frozen=True)
class Option:
    name: str                          # spec key; the flag is --name-with-dashes
    help: str
    convert: Callable[[str], Any] | None = None   # text -> typed value (OptionError if bad)
    default: Any = None
    choices: tuple | Callable[[], tuple] | None = None   # a callable is asked when needed
    flag: bool = False                 # takes no value
    metavar: str | None = None

    @property
    def arg(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> tuple | None:
        c = self.choices
        return c() if callable(c) else c

    def parse(self, text: str) -> Any:
        """The typed value of ``text``; OptionError saying what is accepted."""
        allowed = self.allowed()
        if allowed is not None:
            if text not in allowed:
                raise OptionError(f"{self.name}={text} is not one of {', '.join(allowed)}")
            return text
        if self.convert is None:
            return text
        try:
            return self.convert(text)
        except OptionError as e:
            raise OptionError(f"{self.name}={text} {e}") from None

    def add_to(self, parser) -> None:
        """Declare this option on an argparse parser (the server's command line)."""
        import argparse

        def typed(text):
            try:
                return self.parse(text)
            except OptionError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        typed.__name__ = self.name
        if self.flag:
            parser.add_argument(self.arg, action="store_true", help=self.help)
        else:
            parser.add_argument(self.arg, type=typed, default=self.default, help=self.help,
                                metavar=self.metavar or self.name.upper())


@dataclass(frozen=True)
class Diet:
    """The diet levers a server supports; for every other lever, why not (one line)."""
    supported: tuple = LEVERS
    why_not: tuple = ()                # ((lever, reason), ...)
    summary: str = ""                  # why not, in a few words (batch tables)

    def reason(self, lever: str) -> str:
        return dict(self.why_not).get(lever, "not supported")

    def check(self, server: str, levers) -> tuple:
        """``levers`` (any order) checked and put in canonical order; OptionError if one is
        unknown or not supported here."""
        for lever in levers:
            if lever not in LEVERS:
                raise OptionError(f"{server}: unknown diet lever {lever!r}; levers: {', '.join(LEVERS)}")
            if lever not in self.supported:
                raise OptionError(f"{server}: diet lever {lever} is not available here "
                                  f"({self.reason(lever)}); it takes: {', '.join(self.supported)}")
        return tuple(lv for lv in LEVERS if lv in levers)

    def missing(self) -> tuple:
        return tuple(lv for lv in LEVERS if lv not in self.supported)


def split_levers(text: str) -> tuple:
    """``cork+defer_accept`` or ``cork,defer_accept`` -> the names (unchecked)."""
    return tuple(p.strip() for p in text.replace("+", ",").split(",") if p.strip())


def diet_argparse(parser, server: str, diet: Diet) -> Callable[[Any], tuple]:
    """``--diet[=L1,L2]`` on a server's command line; returns the function that turns the
    parsed value into the levers applied (canonical order; () without --diet), or calls
    ``parser.error`` naming the allowed levers."""
    parser.add_argument("--diet", nargs="?", const="", default=None, metavar="LEVERS",
                        help=f"the syscall diet: every lever this server supports "
                             f"({', '.join(diet.supported)}), or =L1,L2 for those only")

    def levers(value) -> tuple:
        if value is None:
            return ()
        if value == "":
            return diet.supported
        try:
            return diet.check(server, split_levers(value))
        except OptionError as e:
            parser.error(f"--diet={value}: {e}")
            raise                                      # not reached (error exits)
    return levers


# --------------------------------------------------------------------------- declarations

DIET = Option("diet", "the syscall diet: diet = every lever the server supports, "
              "diet=L1+L2 those only", flag=True)
# More than one core (issue 26): ``loops=N`` runs N event loops, each a full server on its
# own SO_REUSEPORT listener bound to one port (harness/servers/workers.py); ``loop_mode``
# (declared by the servers that have it: raw_epoll, the three variants, asyncio, uvloop;
# harness/servers/loops.py runs them) puts the N loops in threads of one process.
# The harness's --server-workers/WORKERS and --worker-mode/WORKER_MODE add them to specs.
LOOPS = Option("loops", "N event loops on SO_REUSEPORT listeners of one port (the harness "
               "starts N processes; loop_mode=threads: N threads of one process)",
               _int_at_least_1, 1)
LOOP_MODE = Option("loop_mode", "procs: N server processes; threads: N loops in threads of "
                   "one process (meaningful on a free-threaded build)",
                   choices=("procs", "threads"), default="procs")
REUSE_PORT = Option("reuse_port", "SO_REUSEPORT on the listener (the harness sets it for loops=N)",
                    flag=True)
COMMON = (
    Option("idle_timeout", "close a connection quiet for this long (0 disables)",
           _seconds, 10.0, metavar="SECONDS"),
    Option("backlog", "listen() backlog (the kernel caps it at somaxconn)", _int_at_least_1, 4096),
    DIET,
    LOOPS,
)


def _interpreter(text: str) -> str:
    from harness.servers import interp           # resolves (runs) the interpreter once
    try:
        return interp.check_name(text)
    except interp.InterpError as e:
        raise OptionError(str(e).split(": ", 1)[-1]) from None


# Where a Python server's code runs (issue 25, harness/servers/interp.py): the launcher's
# keys, never passed to the server.  ``compiled`` is declared by the servers that have a
# compiled build (the variants).
PYTHON = Option("python", "the interpreter for this spec: a name on PATH or a path "
                "(pypy3, /usr/bin/python3.11); default: the batch's", _interpreter,
                metavar="PYTHON")
COMPILED = Option("compiled", "run on the mypyc-compiled library (raw_epoll: the compiled "
                  "server and echo app) of build/compiled (make compiled)", flag=True)
COMPILED_APP = Option("compiled_app", "run on the mypyc-compiled library, echo app and "
                      "server of build/compiled/app (make compiled)", flag=True)
# Spec keys the launcher acts on (never passed to a server as such: it gets --reuse-port).
LAUNCHER_KEYS = (LOOPS.name, LOOP_MODE.name, PYTHON.name, COMPILED.name, COMPILED_APP.name)
# The alias of recorded results: diet without cork (a spec key only, never a server flag).
NO_CORK = "no_cork"


def _backends() -> tuple:
    from variants.common import backends          # only the variant servers need it
    return tuple(backends.available())


BACKEND = Option("backend", "the variant's poller (default: the library's choice, the first)",
                 choices=_backends)
POLL_DELAY = Option("poll_delay", "sleep this long before each poll (connection-merging experiment)",
                    _seconds, 0.0, metavar="SECONDS")
WORKERS = Option("workers", "pool threads", _int_at_least_1, 4)
POOL = Option("pool", "faithful: the study's batch-per-pass pool; oneshot: the improved one",
              choices=("faithful", "oneshot"), default="faithful")



def _steps(text: str) -> str:
    """The ablation's steps (variants/ablation), checked, in the path's canonical order."""
    from variants import ablation                  # only the literal server needs it
    try:
        return ablation.steps_text(ablation.parse_steps(text))
    except ValueError as e:
        raise OptionError(str(e)) from None


STEPS = Option("steps", "the ae-literal design's steps taken, joined with '+' (variants/ablation: "
               "switch, adapter, locals, fired, table, api, ctl, timers, lists, unified; all)",
               _steps, "literal", metavar="STEP+STEP")

# Who supports which lever, and why the others do not apply.
ECHO_CORE_DIET = Diet()                # common.EchoCore: all four
ASYNCIO_DIET = Diet(("defer_accept", "cork"), (
    ("dontwait", "not possible: asyncio calls setblocking(False) on every accepted socket itself"),
    ("lazy_watch", "not possible: asyncio registers each accepted socket for reading "
                   "before the protocol sees it")), "the library owns the accepted socket")
UVLOOP_DIET = Diet(("defer_accept", "cork"), (
    ("dontwait", "built in: libuv accepts with accept4(SOCK_NONBLOCK), no extra call"),
    ("lazy_watch", "not possible: libuv starts reading each accepted socket "
                   "before the protocol sees it")), "the library owns the accepted socket")
C_DIET = Diet(("defer_accept", "cork", "lazy_watch"), (
    ("dontwait", "built in: accept4(SOCK_NONBLOCK), no per-connection call"),),
    "built in: accept4(SOCK_NONBLOCK)")
NO_DIET = Diet((), tuple((lv, "a command server's options are its own") for lv in LEVERS),
               "a command server's options are its own")
