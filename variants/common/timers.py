"""Time events: a binary heap keyed by (when, id), with lazy deletion.

ae keeps time events in an unsorted linked list and walks all of it on every pass
(to find the nearest timer, and again to run the due ones): O(n) per pass, which is
fine for Redis's one or two timers and ruinous for a server with a 10 s idle timeout
per connection (10,000 connections = 10,000 timers scanned per pass).

Here the heap gives the nearest timer in O(1) and each due timer in O(log n). Deleting
a timer only marks it (O(1)) and removes it from the id index; its heap entry is
dropped when it reaches the top. So that deleted entries cannot pile up (the idle-timer
pattern deletes almost every timer it creates), the heap is rebuilt without them once
they are more than half of it: O(n) work after n/2 deletions, O(1) amortised.

Semantics, as in ae:
- ids are ints increasing from 0; times come from ``time.monotonic()``;
- a pass runs only the timers that existed when it started (id <= the last id at the
  start): a time event created during a pass first runs on a later pass;
- each timer runs at most once per pass, even if its proc asks for 0 ms;
- the proc returns NOMORE (or None) to end the event, or the ms until its next call;
- deletion is safe from inside any proc, the timer's own included: the pass checks the
  mark after the proc returns and does not reschedule a deleted timer;
- the finalizer runs once, when the event ends (NOMORE, deletion, or its proc raised).

Exception policy: a proc that raises ends its timer (it is deleted and its finalizer
runs; a timer that failed once is not retried blindly). With an error handler the pass
calls ``handler(loop, exc)`` and goes on; without one the exception propagates after
the due timers not yet run are put back in the heap (they run on the next pass).

``examined`` counts heap entries looked at (peeked or popped): the observable that the
tests use to check that a pass does not scan all pending timers.

Thread safety: none here. ``LockedTimers`` wraps the few state-changing primitives in
a lock for the mul_thread variant; procs and finalizers always run outside the lock.
"""
from __future__ import annotations

import heapq
from time import monotonic
from typing import Any, Optional

from .api_types import ErrorHandler, Finalizer, Lock, TimeProc
from .constants import NOMORE

# Rebuild the heap when dead entries exceed this many and half of the heap.
_COMPACT_MIN = 64


class TimeEvent:
    __slots__ = ("id", "when", "proc", "client_data", "finalizer", "deleted", "queued")

    def __init__(self, id: int, when: float, proc: TimeProc, client_data: Any,
                 finalizer: Optional[Finalizer]) -> None:
        self.id = id
        self.when = when
        self.proc = proc
        self.client_data = client_data
        self.finalizer = finalizer
        self.deleted = False
        self.queued = True      # True while an entry for it is in the heap


class Timers:
    def __init__(self, loop: Any) -> None:
        self._loop = loop
        # (when, id, TimeEvent); ids are unique, so never compares events
        self._heap: list[tuple[float, int, TimeEvent]] = []
        self._events: dict[int, TimeEvent] = {}     # id -> TimeEvent, live events only
        # The same dict, public and read-only by convention: ``if timers.live`` is a
        # C-level test the loop makes every pass (``len(timers)`` is a Python call).
        self.live = self._events
        self._dead = 0          # entries in the heap whose event was deleted
        self._last_id = -1
        self.examined = 0
        # When the nearest live timer is due (None: no timer), kept up to date by every
        # change, so that the loop reads one attribute per pass instead of calling
        # nearest(). Public and read-only by convention, as ``live``.
        self.due: Optional[float] = None

    def __len__(self) -> int:
        return len(self._events)

    def create(self, milliseconds: float, proc: TimeProc, client_data: Any = None,
               finalizer: Optional[Finalizer] = None) -> int:
        if not milliseconds >= 0:
            raise ValueError("milliseconds must be >= 0, got %r" % (milliseconds,))
        self._last_id += 1
        ev = TimeEvent(self._last_id, monotonic() + milliseconds / 1000.0,
                       proc, client_data, finalizer)
        self._events[ev.id] = ev
        heapq.heappush(self._heap, (ev.when, ev.id, ev))
        if self.due is None or ev.when < self.due:
            self.due = ev.when
        return ev.id

    def delete(self, id: int) -> None:
        ev = self._unlink(id)
        if ev.finalizer is not None:
            ev.finalizer(self._loop, ev.client_data)

    def nearest(self) -> Optional[float]:
        """Monotonic time of the nearest live timer, or None when there is none."""
        return self._peek()

    def _peek(self) -> Optional[float]:
        heap = self._heap
        while heap:
            self.examined += 1
            when, _, ev = heap[0]
            if not ev.deleted:
                return when
            self._drop_top()
        return None

    def run_due(self, on_error: Optional[ErrorHandler] = None) -> int:
        """Run the timers that are due; return how many procs ran."""
        loop = self._loop
        now = monotonic()
        max_id = self._last_id
        held: list[TimeEvent] = []  # to go back into the heap after the pass (see _push_back)
        processed = 0
        try:
            while True:
                ev = self._pop_due(now, max_id, held)
                if ev is None:
                    break
                try:
                    ret = ev.proc(loop, ev.id, ev.client_data)
                    processed += 1
                    if ev.deleted:
                        continue        # the proc (or another) deleted it; finalizer ran
                    if ret is None or ret == NOMORE:
                        self.delete(ev.id)
                    else:
                        ev.when = monotonic() + ret / 1000.0
                        held.append(ev)
                except BaseException as exc:
                    # Also reached when the proc returned a bad value or a finalizer raised.
                    # KeyboardInterrupt & co. end the timer too, and are never handled.
                    if not ev.deleted:
                        self.delete(ev.id)
                    if on_error is None or not isinstance(exc, Exception):
                        raise
                    on_error(loop, exc)
        finally:
            self._push_back(held)
        return processed

    def clear(self) -> None:
        """Forget every timer without running procs or finalizers (as aeDeleteEventLoop)."""
        self._heap.clear()
        self._events.clear()
        self._dead = 0
        self.due = None

    # -- the state-changing primitives (LockedTimers wraps these) --------------

    def _unlink(self, id: int) -> TimeEvent:
        try:
            ev = self._events.pop(id)
        except KeyError:
            raise KeyError("no time event with id %r" % (id,)) from None
        ev.deleted = True
        if ev.queued:
            self._dead += 1
            if self._dead > _COMPACT_MIN and self._dead * 2 > len(self._heap):
                self._compact()
        if self.due is not None and ev.when <= self.due:
            self.due = self._peek()     # it was the nearest: the next live one is
        return ev

    def _pop_due(self, now: float, max_id: int, held: list[TimeEvent]) -> Optional[TimeEvent]:
        """Pop the next live timer due at ``now`` with id <= max_id; None when done."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            self.examined += 1
            ev = heapq.heappop(heap)[2]
            ev.queued = False
            if ev.deleted:
                self._dead -= 1
            elif ev.id > max_id:
                held.append(ev)         # created during this pass: runs on a later one
            else:
                return ev
        return None

    def _push_back(self, held: list[TimeEvent]) -> None:
        heap = self._heap
        for ev in held:
            if not ev.deleted:
                ev.queued = True
                heapq.heappush(heap, (ev.when, ev.id, ev))
        # The end of a timer pass (run_due's finally): the popped timers are back.
        self.due = self._peek()

    def _drop_top(self) -> None:
        heapq.heappop(self._heap)[2].queued = False
        self._dead -= 1

    def _compact(self) -> None:
        # In place: a caller may hold a reference to the list.
        self._heap[:] = [entry for entry in self._heap if not entry[2].deleted]
        heapq.heapify(self._heap)
        self._dead = 0


class LockedTimers(Timers):
    """Timers whose state changes happen under ``lock`` (procs run outside it)."""

    def __init__(self, loop: Any, lock: Lock) -> None:
        super().__init__(loop)
        self._lock = lock

    def create(self, milliseconds: float, proc: TimeProc, client_data: Any = None,
               finalizer: Optional[Finalizer] = None) -> int:
        with self._lock:
            return super().create(milliseconds, proc, client_data, finalizer)

    def nearest(self) -> Optional[float]:
        with self._lock:
            return super().nearest()

    def clear(self) -> None:
        with self._lock:
            super().clear()

    def _unlink(self, id: int) -> TimeEvent:
        with self._lock:
            return super()._unlink(id)

    def _pop_due(self, now: float, max_id: int, held: list[TimeEvent]) -> Optional[TimeEvent]:
        with self._lock:
            return super()._pop_due(now, max_id, held)

    def _push_back(self, held: list[TimeEvent]) -> None:
        with self._lock:
            super()._push_back(held)
