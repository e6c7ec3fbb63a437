"""The types the Events API is annotated with, written once for the three variants.

A loop is passed to every callback as its first argument; here it is ``Any`` because
each variant has its own EventLoop class (events.py narrows these aliases to it).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

# proc(loop, fd, client_data, fired_mask); the return value is ignored.
FileProc = Callable[[Any, int, Any, int], object]
# proc(loop, id, client_data) -> NOMORE (or None) to end, or ms until the next call.
TimeProc = Callable[[Any, int, Any], Optional[float]]
# finalizer(loop, client_data), once when the time event ends.
Finalizer = Callable[[Any, Any], object]
# handler(loop, exc): called for an exception a proc raised.
ErrorHandler = Callable[[Any, Exception], object]
# The kernel's report: (fd, native events) pairs.
Events = list[tuple[int, int]]


class Lock(Protocol):
    """What the loop needs of a lock (threading.Lock/RLock, CountingLock)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: Any) -> Optional[bool]: ...


class Kernel(Protocol):
    """The object whose methods reach the kernel (``Poller.kernel``)."""

    def register(self, fd: int, native: int) -> None: ...

    def modify(self, fd: int, native: int) -> None: ...

    def unregister(self, fd: int) -> None: ...

    def poll(self, timeout: Optional[float]) -> Events: ...


class Poller(Protocol):
    """A backend's Poller (see backends/__init__.py for the contract)."""

    needs_wakeup: bool
    kernel: Kernel
    to_native: tuple[int, ...]
    to_ae: tuple[int, ...]

    def rearm(self, fd: int, native: int) -> None: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...
