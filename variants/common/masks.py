"""Mask arithmetic the three variants share, as tables where the hot path needs it.

Why tables: ``create_file_event`` and ``delete_file_event`` run three times per
connection of an echo server, and each asked "which bits of this mask does the kernel
see?" (``mask & (READABLE | WRITABLE)``) three or four times. CPython 3.11 does not
specialize int ``&``, ``|`` or ``~`` (each is a generic number-protocol call), while a
tuple index by a small int is one specialized instruction. Indexing by the whole mask
also checks it: a mask with a bit above BARRIER raises IndexError, which the loop turns
into a clear ValueError. (A negative mask indexes from the end, which is its low three
bits, what C's ``&`` would take; ae does not check masks at all.) ``make icount-parts``
counts what this saves (docs/performance.md, "The last percent"); the trade-off is one
table to read where an ``&`` was plain.
"""
from __future__ import annotations

from .constants import BARRIER, READABLE, WRITABLE

ALL_BITS = READABLE | WRITABLE | BARRIER   # every bit a file event mask may hold

# POLLED_BITS[mask] == mask & (READABLE | WRITABLE): the part of a mask the poller sees
# (BARRIER is the loop's own, never the kernel's), for every valid mask 0..7.
POLLED_BITS = tuple(mask & (READABLE | WRITABLE) for mask in range(ALL_BITS + 1))


def bad_event(fd: object, mask: object, setsize: int) -> str:
    """The ValueError message for a create_file_event whose fd or mask is out of range."""
    if not (type(fd) is int and 0 <= fd < setsize):
        return "fd %r is out of range: setsize is %d" % (fd, setsize)
    return ("mask %r is not a combination of READABLE, WRITABLE and BARRIER (0..%d)"
            % (mask, ALL_BITS))
