"""poll(2): portable to every POSIX system, no fd limit, O(registered fds) per call.

``select.poll`` takes milliseconds and reports closed fds as POLLNVAL on every call;
this wrapper converts the timeout (rounding up, so the loop never wakes just before a
timer is due and spins) and drops POLLNVAL fds so that a closed fd is not reported
forever (the loop would spin at 100 % CPU).

Oneshot mode is emulated: an fd reported by poll() is unregistered at once and
``rearm`` registers it again. An in-progress poll() does not see a rearm made by
another thread, hence ``needs_wakeup = True``.
"""

import math
import select

from . import native_masks, translation_table

NAME = "poll"


def available():
    return hasattr(select, "poll")


class Poller:
    needs_wakeup = True

    def __init__(self, oneshot=False):
        self._p = select.poll()
        self._oneshot = oneshot
        self._native = native_masks(select.POLLIN, select.POLLOUT)
        self.to_ae = translation_table(select.POLLIN, select.POLLOUT,
                                       select.POLLERR | select.POLLHUP)

    def register(self, fd, mask):
        # select.poll's register() adds or overwrites, so it also serves as modify/rearm
        # (and never fails on a reused fd number).
        self._p.register(fd, self._native[mask])

    modify = register
    rearm = register

    def unregister(self, fd):
        try:
            self._p.unregister(fd)
        except KeyError:
            pass

    def poll(self, timeout):
        ms = -1 if timeout is None else math.ceil(timeout * 1000)
        events = self._p.poll(ms)
        unregister = self._p.unregister
        if self._oneshot:
            for fd, _ in events:
                unregister(fd)
        for fd, native in events:
            if native & select.POLLNVAL:
                # A closed fd: drop it silently (as epoll does) and leave it out.
                return self._drop_invalid(events)
        return events

    def _drop_invalid(self, events):
        kept = []
        for fd, native in events:
            if native & select.POLLNVAL:
                self.unregister(fd)
            else:
                kept.append((fd, native))
        return kept

    def fileno(self):
        return -1

    def close(self):
        self._p = None
