"""Linux epoll, level-triggered (the default backend).

The hot path is the kernel calls themselves: ``register``, ``modify``, ``unregister``
and ``poll`` *are* the bound methods of the ``select.epoll`` object (assigned in
``__init__``), so the loop reaches epoll_ctl/epoll_wait without a Python frame here.
Their errors are the kernel's: EEXIST (FileExistsError), ENOENT (FileNotFoundError),
EBADF; the loop handles them (see backends/__init__.py).

Oneshot mode adds EPOLLONESHOT to every registration: the kernel disarms an fd as it
reports it, so a worker thread can own the fd until it calls ``rearm`` (one
``epoll_ctl(MOD)``). A rearm from another thread takes effect in an ``epoll_wait``
already in progress, hence ``needs_wakeup = False``.
"""

import select

from . import native_masks, translation_table

NAME = "epoll"


def available() -> bool:
    return hasattr(select, "epoll")


class Poller:
    needs_wakeup = False

    def __init__(self, oneshot: bool = False) -> None:
        self._ep = ep = select.epoll()
        extra = select.EPOLLONESHOT if oneshot else 0
        self.to_native = native_masks(select.EPOLLIN, select.EPOLLOUT, extra)
        self.to_ae = translation_table(select.EPOLLIN, select.EPOLLOUT,
                                       select.EPOLLERR | select.EPOLLHUP)
        # why: no wrappers, the loop calls epoll_ctl/epoll_wait through the C methods.
        self.kernel = ep                # the loop's hot path calls ep's methods directly
        self.register = ep.register
        self.modify = ep.modify
        self.unregister = ep.unregister
        self.poll = ep.poll

    def rearm(self, fd: int, native: int) -> None:
        try:
            self._ep.modify(fd, native)
        except FileNotFoundError:
            # Deleted (unregistered) while a worker owned it, then registered again.
            self._ep.register(fd, native)

    def fileno(self) -> int:
        return self._ep.fileno()

    def close(self) -> None:
        self._ep.close()
