"""Events, variant *mul_thread*: the fired file events run on a pool of worker threads.

What this variant changes, and why
    master's structure (a read proc and a write proc per fd), but procs do not run on
    the loop thread. Two pools, chosen with ``EventLoop(..., pool=...)``:

    ``pool="faithful"`` (default) is the study's design. After each poll the fired fds
    of the pass are submitted to a ``concurrent.futures.ThreadPoolExecutor`` of
    ``workers`` threads, and process_events() returns only when the whole batch has
    finished. All loop state (masks, procs, timers) is guarded by one global lock, so a
    proc on any worker may call any loop method; the dispatch takes it before each
    look at the state (ae's re-check of the mask before each call becomes a locked
    read). Time events run on the loop thread, after the batch.
    Each fd is submitted with what the poll reported and its worker ANDs that with
    the fd's mask when it dispatches the fd, as ae does; the masks are not computed
    for the whole batch up front. With ``workers=1`` a pass is therefore exactly ae's:
    the fds run one at a time, in the poll's order, and a proc that adds or deletes
    events of a later fd of the pass changes what that fd fires. With more workers the
    fds of a batch run concurrently: there is no "earlier proc of the pass", and a
    change one proc makes to another fd of the batch reaches that fd only if it
    happens before that fd's dispatch reads its mask. That is the batch's design.

    ``pool="oneshot"`` is the improved design (issue 7). The loop thread polls and
    hands each ready fd to a worker through a ``queue.SimpleQueue`` and goes straight
    back to polling: it never waits for a batch. The fd is registered one-shot
    (EPOLLONESHOT; the poll and select backends emulate it), so the kernel disarms it
    as it reports it and no second worker can get it; the worker re-arms it after its
    procs ran. Instead of one global lock, each fd hashes to one of 64 stripe locks,
    taken only for that fd's state (uncontended in practice: one worker owns a ready
    fd). A wake-up fd (eventfd, or a pipe) lets workers interrupt the loop's sleep when
    they create a timer due before it would wake, call stop(), or report an error.
    process_events() then counts the fds handed to workers, not procs finished. Time
    events still run on the loop thread, but now *while* workers run file procs: data
    a timer proc shares with file procs needs its own care (faithful never overlaps
    them: its timers run after the batch).

Why the faithful pool is slow, in numbers to measure (``count_locks=True`` and
``loop.lock_acquisitions`` give the lock operations per connection):
    - The GIL: only one thread runs Python bytecode at a time. A proc's recv()/send()
      on a loopback socket blocks for a microsecond or two; there is almost nothing to
      overlap, so the workers take turns and each turn costs a GIL hand-off (a futex
      wake-up and a context switch) on top of the work itself.
    - Locks: per fired fd, two or three acquisitions of the global lock in the
      dispatch, plus the pool's own (the executor's queue, each Future's condition,
      wait()'s waiter). The study measured one lock operation at about 1/4 of a send.
    - The batch barrier: each pass waits for its slowest proc, and the loop thread is
      blocked in wait() meanwhile. The study saw a poll return only 1-3 fds; here, with
      64 connections in flight, passes are larger (one epoll_wait per ~20 connections
      under strace, which slows the server and so inflates batches), so the barrier
      costs less here than the GIL and the locks do (results/profile/mul_thread.txt).
    oneshot removes the barrier and the global lock; the GIL hand-offs and one
    epoll_ctl(MOD) per event to re-arm remain, so on CPython with a GIL it beats
    faithful but not master. Without the GIL (``make python-ft``, then
    PYTHON=build/python-ft/bin/python3.13t) the hand-offs leave the kernel (futex calls
    per connection 37 -> 4.5 faithful, 66 -> 0.2 oneshot) but the pool is no cheaper:
    3.13t's unspecialized interpreter and shared refcounts cost more than the GIL did
    (docs/performance.md, "mul_thread without the GIL").

Triggering mode
    Level-triggered in faithful mode (as master). In oneshot mode level-triggered
    *and* one-shot: after a worker re-arms an fd, the kernel reports it again if it
    is still ready, so nothing is lost if a proc reads only part of what is there.

Where the cost goes
    On top of master's costs: the pool (task objects, queue operations, thread
    wake-ups), the locks, and the GIL hand-offs between the loop thread and workers.
    The levers of master are kept (locals, no per-event objects on the loop thread,
    no epoll_ctl for a delete that changes nothing, no timer work unless one is due).

Timers
    A heap with lazy deletion (variants/common/timers.py) behind the global lock.

Exceptions
    faithful: the batch always finishes; then each worker exception goes to the error
    handler (on the loop thread) or, without one, the first is raised out of
    process_events(). oneshot: a worker calls the handler itself; without one, it
    re-arms the fd, queues the exception and wakes the loop, and the next
    process_events() on the loop thread raises it. A time event whose proc raised is
    deleted (its finalizer runs).

Closed fds
    An fd closed without delete_file_event vanishes from the poller (epoll drops it;
    the poll and select backends drop it on POLLNVAL/EBADF, so it cannot make the
    loop spin) and is not reported to its old procs (with poll/select, unless the
    number is reused by a new file before the next poll: they watch numbers, not
    files). Registering a reused number works, as create_file_event always tells the
    kernel (see there).
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from time import monotonic
from typing import Any, Callable, Literal, Optional

from ..common import backends
from ..common.constants import (ALL_EVENTS, BARRIER, CALL_AFTER_SLEEP, CALL_BEFORE_SLEEP,
                                DONT_WAIT, FILE_EVENTS, NONE, READABLE, TIME_EVENTS, WRITABLE)
from ..common.locks import CountingLock
from ..common.api_types import ErrorHandler, Events, Finalizer, Poller, TimeProc
from ..common.masks import POLLED_BITS, bad_event
from ..common.timers import LockedTimers

# fd -> stripe lock: fd & _STRIPE picks one of _STRIPE + 1 locks (oneshot mode).
_STRIPE = 63
POOLS = ("faithful", "oneshot")
_AWAKE = float("-inf")      # _sleep_until while the loop thread is not sleeping
_FOREVER = float("inf")
_WAKE = (1).to_bytes(8, "little")   # a valid eventfd increment; 8 bytes to a pipe

# The callbacks, with this variant's loop as their first argument.
FileProc = Callable[["EventLoop", int, Any, int], object]   # proc(loop, fd, data, fired)
SleepHook = Callable[["EventLoop"], object]                 # hook(loop)


class EventLoop:
    """An ae-style event loop whose file event procs run on ``workers`` threads."""

    def __init__(self, setsize: int = 10240, backend: Optional[str] = None, workers: int = 4,
                 pool: str = "faithful", count_locks: bool = False) -> None:
        if type(setsize) is not int or setsize < 1:
            raise ValueError("setsize must be a positive int, got %r" % (setsize,))
        if type(workers) is not int or workers < 1:
            raise ValueError("workers must be a positive int, got %r" % (workers,))
        if pool not in POOLS:
            raise ValueError("unknown pool %r: choose one of %s" % (pool, ", ".join(POOLS)))
        module = backends.choose(backend)
        self.backend = module.NAME
        self.pool = pool
        self.workers = workers
        self._oneshot = oneshot = pool == "oneshot"
        self._poller: Poller = module.Poller(oneshot=oneshot)
        poller = self._poller
        self._to_native = poller.to_native
        # why: for epoll, the select.epoll object: the loop's register/modify/unregister/
        # poll calls are its C methods, reached without a Python wrapper and with the
        # interpreter's specialized method call (backends/__init__.py).
        self._kernel = poller.kernel
        self._to_ae = poller.to_ae
        # The global lock; an RLock so that nesting (resize, the timers) can never
        # deadlock: no user code runs under it, procs and finalizers run outside.
        # faithful: every stripe *is* the global lock; oneshot: 64 independent locks.
        wrap = CountingLock if count_locks else (lambda lock: lock)
        self.lock = wrap(threading.RLock())
        if oneshot:
            self._fd_locks = [wrap(threading.Lock()) for _ in range(_STRIPE + 1)]
        else:
            self._fd_locks = [self.lock] * (_STRIPE + 1)
        self._setsize = setsize
        # Per-fd state in parallel lists indexed by fd (ae's events[] array): a list
        # index is the cheapest lookup Python has, and nothing is allocated per fd.
        self._masks: list[int] = [NONE] * setsize
        # The procs are FileProc where fd's mask has their bit, None elsewhere (typed Any:
        # the dispatch calls them unchecked because the mask says they are set).
        self._rprocs: list[Any] = [None] * setsize
        self._wprocs: list[Any] = [None] * setsize
        self._cdata: list[Any] = [None] * setsize
        self._busy = [False] * setsize  # oneshot: a worker owns this fd (it is disarmed)
        # Registered fds, counted per stripe under that stripe's lock (faithful: the global
        # lock): oneshot's workers register and delete fds of different stripes at once,
        # and one shared ``+=`` would lose updates without the GIL (tests/test_races.py).
        # No fds and no timers = no poll.
        self._stripe_nfds = [0] * (_STRIPE + 1)
        self._timers = LockedTimers(self, self.lock)
        self._sleep_until = _AWAKE      # when the loop thread's current poll times out
        self._stop = False
        self._before_sleep: Optional[SleepHook] = None
        self._after_sleep: Optional[SleepHook] = None
        self._error_handler: Optional[ErrorHandler] = None
        self._closed = False
        self._wake_r = self._wake_w = -1
        if oneshot:
            # worker exceptions for the loop thread; (fd, native_events) handed to workers
            self._errors: queue.SimpleQueue[BaseException] = queue.SimpleQueue()
            self._queue: queue.SimpleQueue[Optional[tuple[int, int]]] = queue.SimpleQueue()
            self._open_wakeup()
            self._threads = [threading.Thread(target=self._worker, daemon=True,
                                              name="events-worker-%d" % i)
                             for i in range(workers)]
            for thread in self._threads:
                thread.start()
            self._dispatch = self._dispatch_handoff
        else:
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="events-worker")
            self._dispatch = self._dispatch_batch

    # -- file events --------------------------------------------------------------

    def create_file_event(self, fd: int, mask: int, proc: FileProc,
                          client_data: Any = None) -> None:
        """Add ``mask`` to fd's events; ``proc(loop, fd, client_data, mask)`` is called
        when one of them fires. Raises ValueError for an fd outside the setsize or a
        mask with a bit above BARRIER."""
        polled = POLLED_BITS            # why: tuple indexes, not int &: common/masks.py
        if not 0 <= fd < self._setsize or mask >= len(polled):
            raise ValueError(bad_event(fd, mask, self._setsize))
        with self._fd_locks[fd & _STRIPE]:
            old = self._masks[fd]
            new = old | mask
            if polled[mask]:
                # Even when these bits are set already: re-asserting them (one epoll_ctl,
                # off the hot path: servers change masks, they do not repeat them) puts
                # back a reused fd number that was closed without delete_file_event and
                # silently dropped by the kernel. delete_file_event skips unneeded calls.
                if not polled[old]:
                    self._stripe_nfds[fd & _STRIPE] += 1
                # A busy fd is disarmed and its worker re-arms it with the new mask:
                # arming it now would let a second worker run it concurrently.
                if not self._busy[fd]:
                    native = self._to_native[new]
                    if polled[old]:
                        try:
                            self._kernel.modify(fd, native)
                        except FileNotFoundError:   # that closed-and-reused number
                            self._kernel.register(fd, native)
                    else:
                        try:
                            self._kernel.register(fd, native)
                        except FileExistsError:     # the kernel still holds it (dup2)
                            self._kernel.modify(fd, native)
                    self._poller_changed()
            # The poller was updated first: if it raised, nothing here has changed
            # (but the fd count, which only decides whether to poll at all).
            self._masks[fd] = new
            if mask & READABLE:
                self._rprocs[fd] = proc
            if mask & WRITABLE:
                self._wprocs[fd] = proc
            self._cdata[fd] = client_data

    def delete_file_event(self, fd: int, mask: int) -> None:
        """Remove ``mask`` from fd's events; with none left fd leaves the poller.
        An fd that has no events (or is out of range) is a no-op."""
        if not 0 <= fd < self._setsize:
            return
        with self._fd_locks[fd & _STRIPE]:
            old = self._masks[fd]
            if not old:
                return
            if mask & WRITABLE:
                mask |= BARRIER         # BARRIER means nothing without WRITABLE (as ae)
            new = old & ~mask
            polled = POLLED_BITS
            if not polled[new]:
                new = NONE
            if polled[new] != polled[old]:  # why: no epoll_ctl when the kernel's mask stays
                try:
                    if not new:
                        # Unregistering is safe even while a worker owns the fd.
                        self._kernel.unregister(fd)
                    elif not self._busy[fd]:   # a busy fd gets its new mask at re-arm
                        self._kernel.modify(fd, self._to_native[new])
                        self._poller_changed()
                except OSError:
                    pass                # fd closed first: the kernel dropped it already
                if not new:
                    self._stripe_nfds[fd & _STRIPE] -= 1
            self._masks[fd] = new
            # Drop the procs no longer registered so that their closures can be freed.
            if not new & READABLE:
                self._rprocs[fd] = None
            if not new & WRITABLE:
                self._wprocs[fd] = None
            if not new:
                self._cdata[fd] = None

    def get_file_events(self, fd: int) -> int:
        """The mask registered for fd (NONE when none)."""
        if not 0 <= fd < self._setsize:
            return NONE
        with self._fd_locks[fd & _STRIPE]:
            return self._masks[fd]

    # -- time events --------------------------------------------------------------

    def create_time_event(self, milliseconds: float, proc: TimeProc, client_data: Any = None,
                          finalizer: Optional[Finalizer] = None) -> int:
        """Call ``proc(loop, id, client_data)`` in ``milliseconds``; it returns NOMORE
        (or None) to end, or the ms until its next call. ``finalizer(loop, client_data)``
        runs once when the event ends. Returns the event's id."""
        id = self._timers.create(milliseconds, proc, client_data, finalizer)
        # why: wake the loop only if it sleeps past the new timer (rarely: idle timers
        # are created later than the ones already pending).
        if monotonic() + milliseconds / 1000.0 < self._sleep_until:
            self._wakeup()
        return id

    def delete_time_event(self, id: int) -> None:
        """Delete a time event (its finalizer runs). KeyError for an unknown id.
        Safe from inside any proc, the event's own included."""
        self._timers.delete(id)

    # -- the loop -----------------------------------------------------------------

    def process_events(self, flags: int = ALL_EVENTS) -> int:
        """Poll once and dispatch; return the number of events processed (fds the poll
        reported plus time events run). Waits no longer than the nearest timer;
        DONT_WAIT never blocks."""
        if not flags & (FILE_EVENTS | TIME_EVENTS):
            return 0
        processed = 0
        timers = self._timers
        # As ae: poll when there are fds, or to sleep until a timer is due.
        # (oneshot always has one: its wake-up fd.)
        if self._oneshot or any(self._stripe_nfds) or (flags & TIME_EVENTS and not flags & DONT_WAIT):
            # As ae, the hook runs before the wait is computed: it may create (or delete)
            # timers, and the poll must not sleep past a timer the hook just created.
            if flags & CALL_BEFORE_SLEEP and self._before_sleep is not None:
                self._before_sleep(self)
            timeout: Optional[float] = None     # None: no timer, wait for an fd
            if flags & DONT_WAIT:
                timeout = 0.0
            else:
                # Set before reading the timers: a timer a worker creates from now on
                # either is seen here or sees this and wakes the poll.
                self._sleep_until = _FOREVER
                if flags & TIME_EVENTS and timers.live:  # why: no timers, no heap look-up
                    due = timers.nearest()
                    if due is not None:
                        timeout = max(0.0, due - monotonic())
                        self._sleep_until = due
            try:
                events = self._kernel.poll(timeout)
            finally:
                self._sleep_until = _AWAKE
            if flags & CALL_AFTER_SLEEP and self._after_sleep is not None:
                try:
                    self._after_sleep(self)
                except BaseException:
                    if self._oneshot:   # the report disarmed them: do not lose them
                        self._rearm_unserved(events)
                    raise
            if events and flags & FILE_EVENTS:
                processed = self._dispatch(events)
            elif events and self._oneshot:
                self._rearm_unserved(events)
        # As ae's processTimeEvents: the timers due now. One created earlier in this pass
        # (by a hook or a file proc) runs if due; one created by a time proc waits for a
        # later pass (the id guard in run_due).
        # why: most passes end before the nearest timer: one peek, no timer pass.
        if flags & TIME_EVENTS and timers.live:
            due = timers.nearest()
            if due is not None and monotonic() >= due:
                processed += timers.run_due(self._error_handler)
        return processed

    # -- faithful: the study's batch on a ThreadPoolExecutor ------------------------

    def _dispatch_batch(self, events: Events) -> int:
        """Run the fired fds of this pass on the pool; return when all have finished.
        As ae, every fd the poll reported counts, even one a proc of this pass deleted."""
        # Each fd is submitted with what the poll reported; its worker ANDs that with
        # the fd's mask when it dispatches the fd, as ae does (not here, for the whole
        # batch at once: a proc that runs before may add or delete this fd's events).
        # With one worker the tasks run in the poll's order, one at a time: ae's pass.
        to_ae = self._to_ae
        submit = self._executor.submit
        run = self._run_fd
        futures = [submit(run, fd, to_ae[native]) for fd, native in events]
        wait(futures)               # the batch barrier: each pass waits for its slowest proc
        first = None
        for future in futures:
            exc = future.exception()
            if exc is None:
                continue
            if self._error_handler is None or not isinstance(exc, Exception):
                first = first or exc    # KeyboardInterrupt & co. are never handled
            else:
                self._error_handler(self, exc)
        if first is not None:
            raise first
        return len(futures)

    # -- oneshot: hand ready fds to workers, never wait ----------------------------

    def _dispatch_handoff(self, events: Events) -> int:
        """Queue each ready fd for a worker; return how many were handed off."""
        busy = self._busy
        put = self._queue.put
        wake_fd = self._wake_r
        handed = 0
        for item in events:
            fd = item[0]
            if fd == wake_fd:
                self._drain_wakeup()
                continue
            if busy[fd]:
                # A duplicate: another thread re-armed this fd (create_file_event on
                # a not-yet-busy fd) just before it was reported. Its worker re-arms it.
                continue
            busy[fd] = True
            put(item)               # why: the kernel's own tuple is the work item
            handed += 1
        if not self._errors.empty():
            raise self._errors.get()
        return handed

    def _rearm_unserved(self, events: Events) -> None:
        """A pass without FILE_EVENTS: the one-shot fds it polled were disarmed by the
        report; arm them again so that a later pass sees them (level-triggered)."""
        busy = self._busy
        for fd, _ in events:
            if fd == self._wake_r:
                self._drain_wakeup()
            elif not busy[fd]:      # a busy fd is re-armed by its worker
                self._rearm(fd)

    def _worker(self) -> None:
        get = self._queue.get
        to_ae = self._to_ae
        run = self._run_fd
        rearm = self._rearm
        while True:
            item = get()
            if item is None:
                return
            fd, native = item
            try:
                run(fd, to_ae[native])
            except BaseException as exc:    # a worker thread must survive any proc
                self._worker_error(exc)
            finally:
                rearm(fd)

    def _rearm(self, fd: int) -> None:
        """A worker is done with fd: arm it again with its current mask."""
        with self._fd_locks[fd & _STRIPE]:
            self._busy[fd] = False
            mask = POLLED_BITS[self._masks[fd]]
            if mask:
                try:
                    self._poller.rearm(fd, self._to_native[mask])
                except OSError:
                    pass            # closed by its proc without deleting its events
                self._poller_changed()

    def _worker_error(self, exc: BaseException) -> None:
        handler = self._error_handler
        if handler is not None and isinstance(exc, Exception):
            try:
                handler(self, exc)
                return
            except Exception as handler_exc:
                exc = handler_exc
        self._errors.put(exc)
        self._wakeup()

    def _open_wakeup(self) -> None:
        if hasattr(os, "eventfd"):
            self._wake_r = self._wake_w = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        self._kernel.register(self._wake_r, self._to_native[READABLE])
        # The wake-up fd counts (no worker runs yet: no lock needed), so the loop always polls.
        self._stripe_nfds[self._wake_r & _STRIPE] += 1

    def _wakeup(self) -> None:
        """Interrupt the loop thread's poll (oneshot mode; a no-op in faithful mode)."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, _WAKE)
            except (BlockingIOError, OSError):
                pass                # full (a wake-up is pending anyway) or closed

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._poller.rearm(self._wake_r, self._to_native[READABLE])

    def _poller_changed(self) -> None:
        # poll/select: a change made by a worker does not reach a poll in progress.
        if self._oneshot and self._poller.needs_wakeup:
            self._wakeup()

    # -- one fd's procs, on a worker ------------------------------------------------

    def _run_fd(self, fd: int, reported: int) -> None:
        """ae's per-fd dispatch; each look at the loop state is under fd's lock."""
        lock = self._fd_locks[fd & _STRIPE]
        # As ae, fd's mask is read at its dispatch, not when the poll returned.
        with lock:
            mask = self._masks[fd]
            rproc = self._rprocs[fd]
            wproc = self._wprocs[fd]
            data = self._cdata[fd]
        fired = reported & mask
        if not fired:
            return                  # a stale event: an earlier proc deleted this fd
        invert = mask & BARRIER
        called = None
        # Normally the readable proc runs first (a request is read, then the reply may
        # be written in the same pass); BARRIER reverses the order.
        if not invert and fired & READABLE:
            called = rproc
            rproc(self, fd, data, fired)
            # Re-check the mask after each call (ae's fe->mask & mask): the proc may
            # have deleted the other event or the whole fd, or added one.
            # why: only when the poll reported WRITABLE: no second lock on a plain read.
            if reported & WRITABLE:
                with lock:
                    fired = reported & self._masks[fd]
                    wproc = self._wprocs[fd]
                    data = self._cdata[fd]
        # The re-check decides only WHETHER the next proc runs: it is given the pass's
        # fired mask (reported & mask), as ae gives rfileProc and wfileProc the same mask.
        if fired & WRITABLE and wproc != called:   # one proc for both: call it once
            called = wproc
            wproc(self, fd, data, reported & mask)
            if invert:
                with lock:
                    fired = reported & self._masks[fd]
                    rproc = self._rprocs[fd]
                    data = self._cdata[fd]
        if invert and fired & READABLE and rproc != called:
            rproc(self, fd, data, reported & mask)

    def main(self) -> None:
        """Run until stop(): process every kind of event, calling the sleep hooks."""
        self._stop = False
        flags = ALL_EVENTS | CALL_BEFORE_SLEEP | CALL_AFTER_SLEEP
        process = self.process_events
        while not self._stop:
            process(flags)

    def stop(self) -> None:
        """Make main() return after the current pass (from any thread)."""
        self._stop = True
        self._wakeup()

    def set_before_sleep(self, proc: Optional[SleepHook]) -> None:
        """``proc(loop)`` runs before each poll of main() (None removes it)."""
        self._before_sleep = proc

    def set_after_sleep(self, proc: Optional[SleepHook]) -> None:
        """``proc(loop)`` runs after each poll of main() (None removes it)."""
        self._after_sleep = proc

    def set_error_handler(self, handler: Optional[ErrorHandler]) -> None:
        """``handler(loop, exc)`` is called when a proc raises, and the loop goes on.
        None (the default) lets the exception propagate out of process_events()."""
        self._error_handler = handler

    # -- size and lifetime --------------------------------------------------------

    def resize(self, setsize: int) -> None:
        """Change the setsize. ValueError if a registered fd would not fit."""
        if type(setsize) is not int or setsize < 1:
            raise ValueError("setsize must be a positive int, got %r" % (setsize,))
        locks = list({id(lock): lock for lock in self._fd_locks}.values())
        for lock in locks:          # every fd's state changes: take every lock
            lock.acquire()
        try:
            used = [fd for fd, mask in enumerate(self._masks) if mask]
            if used and used[-1] >= setsize:
                raise ValueError("cannot resize to setsize %d: fd %d is registered"
                                 % (setsize, used[-1]))
            grow = setsize - self._setsize
            tables: tuple[tuple[list[Any], Any], ...] = (
                (self._masks, NONE), (self._rprocs, None), (self._wprocs, None),
                (self._cdata, None), (self._busy, False),
            )
            for table, empty in tables:
                if grow > 0:
                    table.extend([empty] * grow)
                else:
                    del table[setsize:]
            self._setsize = setsize
        finally:
            for lock in reversed(locks):
                lock.release()

    @property
    def _nfds(self) -> int:
        """Registered fds (the wake-up fd included)."""
        return sum(self._stripe_nfds)

    @property
    def lock_acquisitions(self) -> int:
        """Total acquisitions of the loop's locks (needs count_locks=True), for profiles.
        The pool's internal locks (executor queue, futures) are not included."""
        locks = {id(lock): lock for lock in [self.lock] + self._fd_locks}.values()
        return sum(getattr(lock, "count", 0) for lock in locks)

    def get_setsize(self) -> int:
        return self._setsize

    def close(self) -> None:
        """Release the poller; registered events and timers are forgotten."""
        if self._closed:
            return
        self._closed = True
        self._stop_workers()
        if self._wake_r >= 0:
            os.close(self._wake_r)
            if self._wake_w != self._wake_r:
                os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        self._poller.close()
        self._timers.clear()
        # Closed: nothing may use them again (None, so that a misuse fails at once).
        self._rprocs = self._wprocs = self._cdata = None  # type: ignore[assignment]

    def _stop_workers(self) -> None:
        me = threading.current_thread()
        if not self._oneshot:
            # From a worker (a proc closing the loop) the pool cannot wait for itself.
            on_worker = me.name.startswith("events-worker")
            self._executor.shutdown(wait=not on_worker)
            return
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread is not me:
                thread.join(5.0)

    def __enter__(self) -> "EventLoop":
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        return "<%s.EventLoop backend=%s pool=%s workers=%d setsize=%d fds=%d timers=%d>" % (
            __name__.rsplit(".", 2)[-2], self.backend, self.pool, self.workers,
            self._setsize, self._nfds, len(self._timers))
