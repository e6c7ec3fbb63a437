"""Pollers, one small module each, chosen in one place: :func:`choose`.

Every backend module has the same shape::

    NAME            the name ``loop.backend`` reports
    available()     True when this platform has the underlying call
    Poller(oneshot=False)
        to_native            tuple: ae mask (0..7; BARRIER, 4, is ignored) -> the native
                             word register/modify take
        to_ae                tuple: native events -> ae mask (to_ae[native_events])
        kernel               what the loop calls to reach the kernel: the select.epoll
                             itself for epoll, the Poller for the others (see below)
            register(fd, native) start watching fd; FileExistsError if it is watched
            modify(fd, native)   change what fd is watched for; FileNotFoundError if the
                                 poller does not hold fd (e.g. it dropped a closed fd)
            unregister(fd)       stop watching fd; may raise OSError for an fd the poller
                                 does not hold, or a closed one (callers ignore it)
            poll(timeout)        wait up to timeout seconds (None: forever, 0: do not
                                 block) and return a list of (fd, native_events)
        rearm(fd, native)    oneshot mode: watch fd again after it was reported (adds it
                             back if the poller dropped it; OSError for a closed fd)
        needs_wakeup         True when a change made by another thread does not reach a
                             poll() already in progress (the loop must be woken)
        fileno(), close()

Why native words and raised errors instead of ae masks and tolerant wrappers: for
epoll, ``register``, ``modify``, ``unregister`` and ``poll`` *are* the C methods of
``select.epoll`` (no Python frame between the loop and the kernel: about 0.2 us per
call, three calls per connection). The loop calls them as ``kernel.register(...)`` on
the select.epoll object itself: CPython 3.11 specializes a method call on a C type
(``LOAD_METHOD``), but not the call of a bound method kept in an instance attribute,
which takes the generic look-up every time (about 420 user-space instructions per
connection of an echo server: `make icount`, docs/performance.md). The loop
translates masks with one tuple index and handles the two errors that mean "closed fd"
in a ``try`` that costs nothing until raised. ``poll`` returns the kernel's own list of
``(fd, events)`` tuples for the same reason: translating in the backend would build a
second list and tuple per event.
(Linux reports only the requested bits plus ERR/HUP, so the tables are small.)

Error and hang-up conditions translate to READABLE|WRITABLE; the loop then ANDs with
the fd's registered mask, so exactly the registered procs fire and can see the error
from recv()/send(), as in ae.

EINTR: since PEP 475, Python retries a poll interrupted by a signal whose handler
returned normally (with the timeout recomputed), and propagates the exception when the
handler raised. A signal therefore means "no events" for the loop, or ends it through
the handler's exception; backends need no EINTR code.

An fd closed without being unregistered: epoll drops it silently; the poll and select
backends drop it when the kernel reports it invalid (POLLNVAL / EBADF). All backends
then behave the same: the fd vanishes from the poller without being reported, and a
later ``modify`` of its reused number raises FileNotFoundError, which the loop answers
with ``register``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# Preference order: the first available backend is the default (epoll on Linux).
_ORDER = ("epoll", "poll", "select")


def available() -> list[str]:
    """Names of the backends this platform supports, best first."""
    names = []
    for name in _ORDER:
        module = importlib.import_module("." + name, __name__)
        if module.available():
            names.append(name)
    return names


def choose(name: str | None = None) -> ModuleType:
    """Return the backend module called ``name`` (default: the best available)."""
    names = available()
    if name is None:
        return importlib.import_module("." + names[0], __name__)
    if name not in names:
        raise ValueError("unknown backend %r: available backends are %s"
                         % (name, ", ".join(names)))
    return importlib.import_module("." + name, __name__)


def translation_table(native_in: int, native_out: int, native_error: int) -> tuple[int, ...]:
    """Build ``to_ae``: a tuple indexed by a native event word, giving the ae mask.

    ``native_error`` holds the bits (ERR, HUP) that fire both READABLE and WRITABLE.
    Written once for every backend so that the error rule is the same everywhere.
    """
    from ..constants import READABLE, WRITABLE
    size = 1 << (native_in | native_out | native_error).bit_length()
    table = []
    for native in range(size):
        mask = 0
        if native & native_in:
            mask |= READABLE
        if native & native_out:
            mask |= WRITABLE
        if native & native_error:
            mask |= READABLE | WRITABLE
        table.append(mask)
    return tuple(table)


def native_masks(native_in: int, native_out: int, extra: int = 0) -> tuple[int, ...]:
    """Build ``to_native``: ae mask -> native registration word, as a tuple indexed by
    any mask 0..7. BARRIER (4) is the loop's own bit: the upper half repeats the lower,
    so the loop indexes by a stored mask without masking BARRIER off first (an int
    ``&`` less per call: variants/common/masks.py)."""
    four = (extra, native_in | extra, native_out | extra, native_in | native_out | extra)
    return four * 2
