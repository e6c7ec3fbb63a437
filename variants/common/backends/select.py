"""select(2): the lowest common denominator; fds must be below FD_SETSIZE (1024).

Kept as the fallback every platform has. Cost per call is O(registered fds) twice
(building the lists, and the kernel scanning them), which is why it is last in the
preference order. Error and hang-up conditions show as readable/writable.

The interest sets are copied to lists for each call so that another thread (the
mul_thread variant) may change them while select() runs; such changes reach the next
call, hence ``needs_wakeup = True``. A closed fd makes select() fail with EBADF: the
bad fds are found with fstat() (only on that error path) and dropped.
"""
from __future__ import annotations

import os
import select as _select
from typing import Optional

from ..api_types import Events
from . import native_masks, translation_table

NAME = "select"
FD_SETSIZE = 1024


def available() -> bool:
    return hasattr(_select, "select")


class Poller:
    needs_wakeup = True

    def __init__(self, oneshot: bool = False) -> None:
        self._r: set[int] = set()
        self._w: set[int] = set()
        self._oneshot = oneshot
        # Native words are ae masks already: READABLE=1, WRITABLE=2 (BARRIER ignored).
        self.to_native = native_masks(1, 2)
        self.kernel = self              # no C object does what these methods do
        self.to_ae = translation_table(1, 2, 0)

    def register(self, fd: int, mask: int) -> None:
        """Watch fd for mask (also serves as modify and rearm: sets are idempotent)."""
        if fd >= FD_SETSIZE:
            raise ValueError("fd %d is too large for the select backend (FD_SETSIZE %d): "
                             "use the epoll or poll backend" % (fd, FD_SETSIZE))
        if mask & 1:
            self._r.add(fd)
        else:
            self._r.discard(fd)
        if mask & 2:
            self._w.add(fd)
        else:
            self._w.discard(fd)

    modify = register
    rearm = register

    def unregister(self, fd: int) -> None:
        self._r.discard(fd)
        self._w.discard(fd)

    def poll(self, timeout: Optional[float]) -> Events:
        try:
            rlist, wlist, _ = _select.select(list(self._r), list(self._w), [], timeout)
        except OSError:
            # EBADF: some fd was closed without being unregistered. Drop it (as epoll
            # would) and report no events; the next pass polls the rest.
            self._drop_closed()
            return []
        ready = dict.fromkeys(rlist, 1)
        for fd in wlist:
            ready[fd] = ready.get(fd, 0) | 2
        if self._oneshot:
            for fd in ready:
                self.unregister(fd)
        return list(ready.items())

    def _drop_closed(self) -> None:
        for fd in list(self._r | self._w):
            try:
                os.fstat(fd)
            except OSError:
                self.unregister(fd)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self._r.clear()
        self._w.clear()
