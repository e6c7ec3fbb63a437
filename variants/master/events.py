"""Events, variant *master*: Redis ae's structure in Python.

What this variant is
    The plain design, kept as the reference the other two are diffed against. Each fd
    has a registered mask, a read proc, a write proc and one client_data (the last one
    given wins, as in ae). One thread does everything: poll, dispatch file events, run
    time events.

Triggering mode
    Level-triggered, as ae: an fd is reported on every pass while it is ready. That is
    what makes the exception policy simple: when a proc raises, the fired events of
    the pass not yet dispatched are not lost, the poller reports them again next pass.

Where the cost goes
    Per connection, an echo server makes about nine system calls (accept4, epoll_ctl x3,
    recv, send, close, a share of epoll_wait); each is a C call of a few microseconds
    that no library can avoid. What the library adds is Python bytecode between the
    poll and the procs: per fired fd, a table lookup translating the kernel's bits,
    two or three list reads, mask tests, and one Python call per proc (two when both
    directions fire). The study's master paid about 1.5x raw epoll's CPU per
    connection; the levers used here, each marked "why:" in the code, are:
    - the dispatch loop binds everything it touches to locals;
    - no object is allocated per event: the kernel's (fd, events) tuples are used as
      they come, masks are ints, per-fd state lives in parallel lists indexed by fd
      (ae's array of aeFileEvent), not in a dict of per-fd objects;
    - delete_file_event calls epoll_ctl only when the mask the kernel sees really
      changes (deleting BARRIER, or a bit not set, costs nothing); the fd leaves the
      poller only when no bit is left;
    - with no timers a pass does no timer work at all, and with timers it peeks at the
      nearest one and skips the timer pass unless that one is due.
    The two procs per fd are the design cost alone_proc removes: a write after a read
    on one fd means two Python calls and a second mask check.

Timers
    A heap with lazy deletion (variants/common/timers.py) instead of ae's list scan.

Exceptions
    A proc's exception propagates out of process_events()/main() once the loop's own
    state is consistent (the poller and the mask lists are updated before any proc
    runs, so there is nothing half-done). set_error_handler(handler) instead calls
    handler(loop, exc) and goes on with the next event. A time event whose proc raised
    is deleted (its finalizer runs).

Closed fds
    An fd closed without delete_file_event vanishes from the poller (epoll drops it;
    the poll and select backends drop it on POLLNVAL/EBADF, so it cannot make the
    loop spin) and is not reported to its old procs (with poll/select, unless the
    number is reused by a new file before the next poll: they watch numbers, not
    files). Registering a reused number works, as create_file_event always tells the
    kernel (see there).
"""
from __future__ import annotations

from time import monotonic
from typing import Any, Callable, Literal, Optional

from ..common import backends
from ..common.constants import (ALL_EVENTS, BARRIER, CALL_AFTER_SLEEP, CALL_BEFORE_SLEEP,
                                DONT_WAIT, FILE_EVENTS, NONE, READABLE, TIME_EVENTS, WRITABLE)
from ..common.api_types import ErrorHandler, Finalizer, Poller, TimeProc
from ..common.masks import POLLED_BITS, bad_event
from ..common.timers import Timers

# The callbacks, with this variant's loop as their first argument.
FileProc = Callable[["EventLoop", int, Any, int], object]   # proc(loop, fd, data, fired)
SleepHook = Callable[["EventLoop"], object]                 # hook(loop)


class EventLoop:
    """An ae-style event loop: file events (per fd a read and a write proc) and timers."""

    def __init__(self, setsize: int = 10240, backend: Optional[str] = None) -> None:
        if type(setsize) is not int or setsize < 1:
            raise ValueError("setsize must be a positive int, got %r" % (setsize,))
        module = backends.choose(backend)
        self.backend = module.NAME
        self._poller: Poller = module.Poller()
        poller = self._poller
        self._to_native = poller.to_native
        # why: for epoll, the select.epoll object: the loop's register/modify/unregister/
        # poll calls are its C methods, reached without a Python wrapper and with the
        # interpreter's specialized method call (backends/__init__.py).
        self._kernel = poller.kernel
        self._setsize = setsize
        # Per-fd state in parallel lists indexed by fd (ae's events[] array): a list
        # index is the cheapest lookup Python has, and nothing is allocated per fd.
        self._masks: list[int] = [NONE] * setsize
        # The procs are FileProc where fd's mask has their bit, None elsewhere (typed Any:
        # the dispatch calls them unchecked because the mask says they are set).
        self._rprocs: list[Any] = [None] * setsize
        self._wprocs: list[Any] = [None] * setsize
        self._cdata: list[Any] = [None] * setsize
        self._nfds = 0                  # registered fds: no fds and no timers = no poll
        self._timers = Timers(self)
        self._stop = False
        self._before_sleep: Optional[SleepHook] = None
        self._after_sleep: Optional[SleepHook] = None
        self._error_handler: Optional[ErrorHandler] = None
        self._closed = False

    # -- file events --------------------------------------------------------------

    def create_file_event(self, fd: int, mask: int, proc: FileProc,
                          client_data: Any = None) -> None:
        """Add ``mask`` to fd's events; ``proc(loop, fd, client_data, mask)`` is called
        when one of them fires. Raises ValueError for an fd outside the setsize or a
        mask with a bit above BARRIER."""
        masks = self._masks
        polled = POLLED_BITS            # why: tuple indexes, not int &: common/masks.py
        # why: the list and the table do the upper range checks (IndexError) for free;
        # only a negative fd, which would index from the end, needs a test of its own (a
        # negative mask, all bits set in Python's ints, is taken as ae takes it in C).
        try:
            if fd < 0:
                raise IndexError
            old = masks[fd]
            watched = polled[mask]
        except IndexError:
            raise ValueError(bad_event(fd, mask, self._setsize)) from None
        new = old | mask
        if watched:
            # Even when these bits are set already: re-asserting them (one epoll_ctl, off
            # the hot path: servers change masks, they do not repeat them) puts back a
            # reused fd number that was closed without delete_file_event and silently
            # dropped by the kernel. delete_file_event skips unneeded calls instead.
            native = self._to_native[new]
            if polled[old]:
                try:
                    self._kernel.modify(fd, native)
                except FileNotFoundError:   # that closed-and-reused number: add it
                    self._kernel.register(fd, native)
            else:
                try:
                    self._kernel.register(fd, native)
                except FileExistsError:     # the kernel still holds it (a dup2 case)
                    self._kernel.modify(fd, native)
                self._nfds += 1
        # The poller was updated first: if it raised, nothing here has changed.
        masks[fd] = new
        if mask & READABLE:
            self._rprocs[fd] = proc
        if mask & WRITABLE:
            self._wprocs[fd] = proc
        self._cdata[fd] = client_data

    def delete_file_event(self, fd: int, mask: int) -> None:
        """Remove ``mask`` from fd's events; with none left fd leaves the poller.
        An fd that has no events (or is out of range) is a no-op."""
        masks = self._masks
        try:
            old = masks[fd] if fd >= 0 else NONE
        except IndexError:
            return
        if not old:
            return
        new = old & ~mask
        polled = POLLED_BITS
        if not polled[new]:
            # Nothing the kernel watches is left (the close path): fd leaves the poller,
            # and its procs go, so that their closures can be freed.
            if polled[old]:
                try:
                    self._kernel.unregister(fd)
                except OSError:
                    pass                # fd closed first: the kernel dropped it already
                self._nfds -= 1
            masks[fd] = NONE
            self._rprocs[fd] = None
            self._wprocs[fd] = None
            self._cdata[fd] = None
            return
        if not new & WRITABLE:
            new &= ~BARRIER             # BARRIER means nothing without WRITABLE (as ae)
        if polled[new] != polled[old]:  # why: no epoll_ctl when the kernel's mask stays
            try:
                self._kernel.modify(fd, self._to_native[new])
            except OSError:
                pass                    # fd closed first: the kernel dropped it already
        masks[fd] = new
        # Drop the proc no longer registered so that its closure can be freed.
        if not new & READABLE:
            self._rprocs[fd] = None
        if not new & WRITABLE:
            self._wprocs[fd] = None

    def get_file_events(self, fd: int) -> int:
        """The mask registered for fd (NONE when none)."""
        if not 0 <= fd < self._setsize:
            return NONE
        return self._masks[fd]

    # -- time events --------------------------------------------------------------

    def create_time_event(self, milliseconds: float, proc: TimeProc, client_data: Any = None,
                          finalizer: Optional[Finalizer] = None) -> int:
        """Call ``proc(loop, id, client_data)`` in ``milliseconds``; it returns NOMORE
        (or None) to end, or the ms until its next call. ``finalizer(loop, client_data)``
        runs once when the event ends. Returns the event's id."""
        return self._timers.create(milliseconds, proc, client_data, finalizer)

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
        return self._process(flags & FILE_EVENTS, flags & TIME_EVENTS, flags & DONT_WAIT,
                             flags & CALL_BEFORE_SLEEP, flags & CALL_AFTER_SLEEP)

    def _process(self, file_events: int, time_events: int, dont_wait: int,
                 before: int, after: int) -> int:
        """One pass, ae's aeProcessEvents, with the flags decoded into one argument each.
        why: main() decodes its flags once, not with nine bit tests per pass."""
        processed = 0
        timers = self._timers
        # As ae: poll to sleep until a timer is due, or when there are fds.
        if (time_events and not dont_wait) or self._nfds:
            # As ae, the hook runs before the wait is computed: it may create (or delete)
            # timers, and the poll must not sleep past a timer the hook just created.
            if before and self._before_sleep is not None:
                self._before_sleep(self)
            timeout: Optional[float] = None     # None: no timer, wait for an fd
            if dont_wait:
                timeout = 0.0
            elif time_events:
                due = timers.due                # why: kept up to date, no heap look-up
                if due is not None:
                    timeout = due - monotonic()
                    if timeout < 0.0:
                        timeout = 0.0
            events = self._kernel.poll(timeout)
            if after and self._after_sleep is not None:
                self._after_sleep(self)
            if events and file_events:
                # As ae, every fd the poll reported counts, even one whose events an
                # earlier proc of this pass deleted (ae's processed++ per fired entry).
                processed = len(events)
                # The one place where file procs are called.
                # why: locals are the fastest names in CPython; this loop runs once per
                # event. (Inline, not a method: one Python call per pass less.)
                masks = self._masks
                rprocs = self._rprocs
                wprocs = self._wprocs
                cdata = self._cdata
                to_ae = self._poller.to_ae
                for fd, native in events:
                    reported = to_ae[native]
                    # As ae, an fd's mask is read at its own dispatch, not when the poll
                    # returned: an earlier proc of this pass may have deleted or added
                    # its events.
                    mask = masks[fd]
                    fired = reported & mask
                    if not fired:
                        continue        # a stale event: an earlier proc deleted this fd
                    try:
                        invert = mask & BARRIER
                        called = None
                        # Normally the readable proc runs first (a request is read, then
                        # the reply may be written in the same pass); BARRIER reverses it.
                        if not invert and fired & READABLE:
                            called = rprocs[fd]
                            called(self, fd, cdata[fd], fired)
                            # Re-check the mask after each call (ae's fe->mask & mask):
                            # the proc may have deleted the other event or the whole fd.
                            # The re-check decides only WHETHER the next proc runs; it is
                            # given the pass's fired mask, as ae gives both procs `mask`
                            # (reported & mask: mask is fd's mask at its dispatch).
                            # why: recomputed there, not kept in a second local, so that
                            # a plain read (no second proc) pays nothing for it.
                            fired = reported & masks[fd]
                        if fired & WRITABLE:
                            proc = wprocs[fd]
                            if proc != called:  # one proc for both: call it once
                                called = proc
                                proc(self, fd, cdata[fd], reported & mask)
                                fired = reported & masks[fd]
                        if invert and fired & READABLE:
                            proc = rprocs[fd]
                            if proc != called:
                                proc(self, fd, cdata[fd], reported & mask)
                    except Exception as exc:
                        # why: try costs nothing in CPython 3.11+ until something raises.
                        if self._error_handler is None:
                            raise
                        self._error_handler(self, exc)
        # As ae's processTimeEvents: the timers due now. One created earlier in this pass
        # (by a hook or a file proc) runs if due; one created by a time proc waits for a
        # later pass (the id guard in run_due).
        # why: most passes end before the nearest timer: one clock read, no timer pass.
        if time_events:
            due = timers.due
            if due is not None and monotonic() >= due:
                processed += timers.run_due(self._error_handler)
        return processed

    def main(self) -> None:
        """Run until stop(): process every kind of event, calling the sleep hooks."""
        self._stop = False
        process = self._process
        while not self._stop:
            # process_events(ALL_EVENTS | CALL_BEFORE_SLEEP | CALL_AFTER_SLEEP), decoded.
            process(FILE_EVENTS, TIME_EVENTS, 0, CALL_BEFORE_SLEEP, CALL_AFTER_SLEEP)

    def stop(self) -> None:
        """Make main() return after the current pass."""
        self._stop = True

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
        used = [fd for fd, mask in enumerate(self._masks) if mask]
        if used and used[-1] >= setsize:
            raise ValueError("cannot resize to setsize %d: fd %d is registered"
                             % (setsize, used[-1]))
        grow = setsize - self._setsize
        tables: tuple[tuple[list[Any], Any], ...] = (
            (self._masks, NONE), (self._rprocs, None), (self._wprocs, None),
            (self._cdata, None),
        )
        for table, empty in tables:
            if grow > 0:
                table.extend([empty] * grow)
            else:
                del table[setsize:]
        self._setsize = setsize

    def get_setsize(self) -> int:
        return self._setsize

    def close(self) -> None:
        """Release the poller; registered events and timers are forgotten."""
        if self._closed:
            return
        self._closed = True
        self._poller.close()
        self._timers.clear()
        # Closed: nothing may use them again (None, so that a misuse fails at once).
        self._rprocs = self._wprocs = self._cdata = None  # type: ignore[assignment]

    def __enter__(self) -> "EventLoop":
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        return "<%s.EventLoop backend=%s setsize=%d fds=%d timers=%d>" % (
            __name__.rsplit(".", 2)[-2], self.backend, self._setsize, self._nfds,
            len(self._timers))
