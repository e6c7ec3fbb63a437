"""A lock wrapper that counts acquisitions, for profiling the mul_thread variant.

The study blamed locks for mul_thread's slowdown ("each lock operation costs about 1/4
of a send"). To report lock operations per connection, build the loop with
``EventLoop(..., count_locks=True)``: every lock the loop takes is then wrapped in a
``CountingLock`` and ``loop.lock_acquisitions`` sums them. The wrapper costs a Python
call per acquisition, so it is off by default and never used in timed runs.
"""
from __future__ import annotations

from typing import Any, Literal

from .api_types import Lock


class CountingLock:
    __slots__ = ("_lock", "count")

    def __init__(self, lock: Lock) -> None:
        self._lock = lock
        self.count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self.count += 1     # under the lock itself, so the count is exact
        return got

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "CountingLock":
        self._lock.acquire()
        self.count += 1
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        self._lock.release()
        return False
