"""Linux epoll, level-triggered (the default backend).

The hot path is the kernel calls themselves: ``kernel`` *is* the ``select.epoll``
object, so the loop reaches epoll_ctl/epoll_wait through its C methods, without a
Python frame here.
Their errors are the kernel's: EEXIST (FileExistsError), ENOENT (FileNotFoundError),
EBADF; the loop handles them (see backends/__init__.py).

Oneshot mode adds EPOLLONESHOT to every registration: the kernel disarms an fd as it
reports it, so a worker thread can own the fd until it calls ``rearm`` (one
``epoll_ctl(MOD)``). A rearm from another thread takes effect in an ``epoll_wait``
already in progress, hence ``needs_wakeup = False``.
"""
from __future__ import annotations

import select
import sys
from typing import Any, Optional

from . import native_masks, translation_table

NAME = "epoll"


class _PyPyEpoll:
    """PyPy's ``epoll.poll`` refuses ``timeout=None`` (CPython reads it as "block"), and the
    loops pass None when no timer is due. Only PyPy gets this wrapper (select.epoll is final
    there): on CPython it would put a Python frame on every kernel call; under PyPy's JIT the
    calls are inlined."""

    def __init__(self) -> None:
        ep = select.epoll()
        self._ep = ep
        self.register = ep.register
        self.modify = ep.modify
        self.unregister = ep.unregister
        self.fileno = ep.fileno
        self.close = ep.close

    def poll(self, timeout: Optional[float] = None, maxevents: int = -1) -> list[tuple[int, int]]:
        return self._ep.poll(-1 if timeout is None else timeout, maxevents)


_EPOLL: Any = _PyPyEpoll if sys.implementation.name == "pypy" else select.epoll


def available() -> bool:
    return hasattr(select, "epoll")


class Poller:
    needs_wakeup = False

    def __init__(self, oneshot: bool = False) -> None:
        self.kernel: select.epoll = _EPOLL()
        extra = select.EPOLLONESHOT if oneshot else 0
        self.to_native = native_masks(select.EPOLLIN, select.EPOLLOUT, extra)
        self.to_ae = translation_table(select.EPOLLIN, select.EPOLLOUT,
                                       select.EPOLLERR | select.EPOLLHUP)

    def rearm(self, fd: int, native: int) -> None:
        try:
            self.kernel.modify(fd, native)
        except FileNotFoundError:
            # Deleted (unregistered) while a worker owned it, then registered again.
            self.kernel.register(fd, native)

    def fileno(self) -> int:
        return self.kernel.fileno()

    def close(self) -> None:
        self.kernel.close()
