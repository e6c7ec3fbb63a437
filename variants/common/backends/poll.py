"""poll(2): portable to every POSIX system, no fd limit, O(registered fds) per call.

``select.poll`` takes milliseconds and reports closed fds as POLLNVAL on every call;
this wrapper converts the timeout (rounding up, so the loop never wakes just before a
timer is due and spins) and drops POLLNVAL fds so that a closed fd is not reported
forever (the loop would spin at 100 % CPU).

Oneshot mode is emulated: an fd reported by poll() is unregistered at once and
``rearm`` registers it again. An in-progress poll() does not see a rearm made by
another thread, hence ``needs_wakeup = True``.
"""
from __future__ import annotations

import math
import select
from typing import Optional

from ..api_types import Events
from . import native_masks, translation_table

NAME = "poll"


def available() -> bool:
    return hasattr(select, "poll")


class Poller:
    needs_wakeup = True

    def __init__(self, oneshot: bool = False) -> None:
        self._p: Optional[select.poll] = select.poll()
        p = self._p
        self._oneshot = oneshot
        self.to_native = native_masks(select.POLLIN, select.POLLOUT)
        self.kernel = self              # no C object does what these methods do
        self.to_ae = translation_table(select.POLLIN, select.POLLOUT,
                                       select.POLLERR | select.POLLHUP)
        # select.poll's register() adds or overwrites (never fails on a reused number);
        # modify() raises FileNotFoundError for an fd it does not hold, as epoll's does.
        self.register = p.register
        self.modify = p.modify
        self.rearm = p.register

    def unregister(self, fd: int) -> None:
        try:
            self._p.unregister(fd)       # type: ignore[union-attr]
        except KeyError:
            pass

    def poll(self, timeout: Optional[float]) -> Events:
        ms = -1 if timeout is None else math.ceil(timeout * 1000)
        events: Events = self._p.poll(ms)  # type: ignore[union-attr]
        if self._oneshot:
            unregister = self.unregister    # tolerant: another thread may have done it
            for fd, _ in events:
                unregister(fd)
        for fd, native in events:
            if native & select.POLLNVAL:
                # A closed fd: drop it silently (as epoll does) and leave it out.
                return self._drop_invalid(events)
        return events

    def _drop_invalid(self, events: Events) -> Events:
        kept = []
        for fd, native in events:
            if native & select.POLLNVAL:
                self.unregister(fd)
            else:
                kept.append((fd, native))
        return kept

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self._p = None
