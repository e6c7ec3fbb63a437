"""Linux epoll, level-triggered (the default backend).

The hot path is the kernel call itself: ``Poller.poll`` *is* the bound
``select.epoll.poll`` (assigned in ``__init__``), so a pass costs no Python frame here.

Oneshot mode adds EPOLLONESHOT to every registration: the kernel disarms an fd as it
reports it, so a worker thread can own the fd until it calls ``rearm`` (one
``epoll_ctl(MOD)``). A rearm from another thread takes effect in an ``epoll_wait``
already in progress, hence ``needs_wakeup = False``.
"""

import errno
import select

from . import native_masks, translation_table

NAME = "epoll"


def available():
    return hasattr(select, "epoll")


# Errors meaning "the kernel does not have this fd (any more)": a closed fd was
# dropped from the epoll set (ENOENT), or the number is not open at all (EBADF).
_GONE = (errno.ENOENT, errno.EBADF)


class Poller:
    needs_wakeup = False

    def __init__(self, oneshot=False):
        self._ep = select.epoll()
        extra = select.EPOLLONESHOT if oneshot else 0
        self._native = native_masks(select.EPOLLIN, select.EPOLLOUT, extra)
        self.to_ae = translation_table(select.EPOLLIN, select.EPOLLOUT,
                                       select.EPOLLERR | select.EPOLLHUP)
        # No wrapper: the loop calls epoll_wait through the C method directly.
        self.poll = self._ep.poll

    def register(self, fd, mask):
        try:
            self._ep.register(fd, self._native[mask])
        except FileExistsError:
            # The kernel still holds this fd number (e.g. a dup of a closed fd keeps the
            # old registration, or a oneshot fd was deleted while disarmed): overwrite.
            self._ep.modify(fd, self._native[mask])

    def modify(self, fd, mask):
        try:
            self._ep.modify(fd, self._native[mask])
        except FileNotFoundError:
            # The fd was closed without being unregistered, epoll dropped it, and the
            # number came back with a new socket: add it again.
            self._ep.register(fd, self._native[mask])

    # Re-arming a oneshot fd is an EPOLL_CTL_MOD with the same flags.
    rearm = modify

    def unregister(self, fd):
        try:
            self._ep.unregister(fd)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise

    def fileno(self):
        return self._ep.fileno()

    def close(self):
        self._ep.close()
