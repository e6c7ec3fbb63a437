"""The ae-literal design, and the steps that take it to today's master and alone_proc.

Why this package exists
    The 2016 study measured its master at 0.65 x raw epoll's conn/s and its unified-proc
    branch (alone_proc) at 0.90, and credited the gap to the unified proc. Our master is
    lean (variants/master/events.py) and both designs land near 0.92, so the repository
    compared two lean designs and could not say where the study's 35 % went. This
    package rebuilds the design a straight 2016 port of Redis's ae.c would have been
    (``EventLoop``, "literal") and names each difference to today's master as a *step*
    that can be taken alone or with others, so that a batch can measure each step's own
    effect (``make ablation``, harness/ablation.py; docs/variants.md).

The literal design (what each step removes, in the order of the path)
    switch    (the echo app on the loop, not the loop) a connection switched from reading
              to writing by delete_file_event(fd, READABLE) + create_file_event(fd,
              WRITABLE), as a server written against a two-proc API without the Redis
              idiom would: two epoll_ctl (DEL, ADD) where adding WRITABLE and keeping
              READABLE makes one (MOD); harness/servers/literal.py applies it
    adapter   procs reached through a handler object: ``handler.handle(...)`` calls the
              proc (a 2016 port's aeFileProc pointer as an object) -- a Python frame
              more per proc call
    locals    the dispatch loop reads the loop's attributes (``self._events``...) and
              process_events tests its flags every pass, as aeProcessEvents and aeMain
    fired     aeApiPoll builds ``eventLoop->fired``, a list of (fd, mask) per pass,
              which the dispatch then walks
    table     masks translated with ae's bit tests (EPOLLIN -> READABLE, ...) both
              ways, instead of one tuple index
    api       the kernel reached through ae_epoll.c's functions (aeApiAddEvent,
              aeApiDelEvent, aeApiPoll: one Python frame each call)
    ctl       epoll_ctl on every delete (aeApiDelEvent always calls the kernel)
    timers    time events in an unsorted linked list: aeSearchNearestTimer (O(n)) and
              processTimeEvents (scans them all, a clock read per timer) every pass
    lists     per-fd aeFileEvent objects with attributes (and ae's maxfd, with its
              downward scan when the highest fd goes), instead of parallel lists and a
              count of watched fds
    unified   (toward alone_proc) one proc per fd, called once with the fired mask

    Every step is a real code difference in one source, variants/ablation/ae.pyt,
    written like ae.c with ``#if STEP`` lines: ``loop_class(steps)`` compiles one class
    per set of steps (cached), and ``python -m variants.ablation --source STEPS`` prints
    it, so ``diff`` of two printed sources is exactly what a step changes. No step
    tests a flag at run time: each compiled class contains only its own code. With
    every step but ``unified`` the compiled loop is master's structure (its
    instruction count is compared with master's in results/ablation/).

Semantics: every set of steps is a correct ae (tests/test_conformance.py, the echo
tests): the same API, masks and exception policy as the three variants; both procs of
a pass get the pass's fired mask (ae's ``mask``); BARRIER as ae.
"""
from __future__ import annotations

import linecache
import os
import sys
import types
from functools import lru_cache
from time import monotonic
from typing import Any

from ..common import backends
from ..common.constants import *  # noqa: F401,F403
from ..common.constants import (ALL_EVENTS, BARRIER, CALL_AFTER_SLEEP, CALL_BEFORE_SLEEP,
                                DONT_WAIT, FILE_EVENTS, NOMORE, NONE, READABLE, TIME_EVENTS,
                                WRITABLE)
from ..common.constants import __all__ as _constants
from ..common.masks import ALL_BITS, POLLED_BITS, bad_event
from ..common.timers import Timers

# The path from the literal design toward master, in order; then alone_proc's step.
STEPS = ("switch", "adapter", "locals", "fired", "table", "api", "ctl", "timers", "lists")
# Steps of the echo app that runs on the loop, not of the loop: the loop's code is the same
# with or without them (harness/servers/literal.py applies them).
APP_STEPS = ("switch",)
UNIFIED = "unified"
ALL_STEPS = STEPS + (UNIFIED,)
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ae.pyt")

__all__ = ["EventLoop", "loop_class", "parse_steps", "steps_text", "source", "STEPS", "APP_STEPS",
           "UNIFIED", "ALL_STEPS"] + _constants


def parse_steps(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The steps of ``text`` (``adapter+locals``; ``all`` = every step toward master;
    ``literal`` or empty = none), in the path's order. ValueError naming the valid
    steps for an unknown one."""
    items = text if not isinstance(text, str) else \
        [p.strip() for p in text.replace(",", "+").split("+") if p.strip()]
    chosen: set[str] = set()
    for item in items:
        if item == "all":
            chosen.update(STEPS)
        elif item == "literal":
            continue
        elif item in ALL_STEPS:
            chosen.add(item)
        else:
            raise ValueError(f"names an unknown step {item!r}; the steps: "
                             f"{', '.join(ALL_STEPS)} (or all)")
    return tuple(s for s in ALL_STEPS if s in chosen)


def steps_text(steps: tuple[str, ...]) -> str:
    """The canonical text of a set of steps (``adapter+locals``; ``literal`` for none)."""
    return "+".join(steps) or "literal"


def _expand(template: str, on: frozenset[str]) -> str:
    """The template with its ``#if``/``#else``/``#endif`` lines resolved, ``$name`` and
    ``CALL(...)`` substituted (ae.pyt's header says what they mean)."""
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []     # (parent active, this branch's condition)
    active = True
    for number, line in enumerate(template.splitlines(), 1):
        s = line.strip()
        if s.startswith("##"):
            continue                            # the template's own comments
        if s.startswith("#if "):
            terms = s[4:].split()
            for t in terms:
                if t.lstrip("!") not in ALL_STEPS:
                    raise ValueError(f"ae.pyt:{number}: unknown step {t!r}")
            cond = all((t[1:] not in on) if t.startswith("!") else (t in on) for t in terms)
            stack.append((active, cond))
            active = active and cond
            continue
        if s in ("#else", "#endif"):
            if not stack:
                raise ValueError(f"ae.pyt:{number}: {s} without #if")
            parent, cond = stack.pop()
            if s == "#else":
                stack.append((parent, not cond))
                active = parent and not cond
            else:
                active = parent
            continue
        if active:
            out.append(line)
    if stack:
        raise ValueError("ae.pyt: #if without #endif")
    text = "\n".join(out) + "\n"
    text = text.replace("$", "" if "locals" in on else "self._")
    call = "" if "adapter" in on else ".handle"
    parts = text.split("CALL(")
    for i in range(1, len(parts)):            # CALL(expr) -> expr or expr.handle
        depth, j = 1, 0
        while depth:
            depth += {"(": 1, ")": -1}.get(parts[i][j], 0)
            j += 1
        parts[i] = parts[i][:j - 1] + call + parts[i][j:]
    return "".join(parts)


def source(steps: str | tuple[str, ...] = ()) -> str:
    """The Python source of the loop with these steps taken."""
    with open(TEMPLATE, encoding="utf-8") as f:
        return _expand(f.read(), frozenset(parse_steps(steps)))


def native_bits(poller: Any) -> tuple[int, int, int, int]:
    """(in, out, error, extra) native bits of a backend, read off its tables, for ae's
    bit-test translation (the literal design's aeApiAddEvent and aeApiPoll)."""
    extra = poller.to_native[NONE]
    native_in = poller.to_native[READABLE] & ~extra
    native_out = poller.to_native[WRITABLE] & ~extra
    err = 0
    for bit in range(len(poller.to_ae).bit_length()):
        if (1 << bit) < len(poller.to_ae) and poller.to_ae[1 << bit] == READABLE | WRITABLE:
            err |= 1 << bit
    return native_in, native_out, err, extra


@lru_cache(maxsize=None)
def _compile(steps: tuple[str, ...]) -> type[Any]:
    text = source(steps)
    name = steps_text(steps)
    filename = f"<variants/ablation/ae.pyt steps={name}>"
    # Tracebacks and profilers show the compiled lines.
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    # A module of its own (variants.ablation.steps_<name>), so that what patches a module's
    # names (a test's fake clock) reaches the compiled code as it reaches the variants'.
    module = types.ModuleType(f"{__name__}.steps_{name.replace('+', '_')}")
    module.__file__ = filename
    namespace = module.__dict__
    namespace.update(
        ALL_EVENTS=ALL_EVENTS, BARRIER=BARRIER, CALL_AFTER_SLEEP=CALL_AFTER_SLEEP,
        CALL_BEFORE_SLEEP=CALL_BEFORE_SLEEP, DONT_WAIT=DONT_WAIT, FILE_EVENTS=FILE_EVENTS,
        NOMORE=NOMORE, NONE=NONE, READABLE=READABLE, TIME_EVENTS=TIME_EVENTS,
        WRITABLE=WRITABLE, POLLED=READABLE | WRITABLE, POLLED_BITS=POLLED_BITS,
        ALL_BITS=ALL_BITS, bad_event=bad_event, backends=backends, Timers=Timers,
        monotonic=monotonic, native_bits=native_bits,
        STEPS=tuple(s for s in steps if s != UNIFIED), UNIFIED=UNIFIED in steps)
    exec(compile(text, filename, "exec"), namespace)
    sys.modules[module.__name__] = module
    cls: type[Any] = namespace["EventLoop"]
    cls.__qualname__ = f"EventLoop[{name}]"
    return cls


def loop_class(steps: str | tuple[str, ...] = ()) -> type[Any]:
    """The EventLoop class with these steps taken (compiled once per set)."""
    return _compile(parse_steps(steps))


EventLoop = loop_class(())      # the literal design
