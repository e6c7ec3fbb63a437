## The ae-literal event loop and its steps, one source (variants/ablation/__init__.py).
##
## This file is Python with C-preprocessor-style lines, as ae.c itself is C with #ifdefs:
##   #if STEP [STEP...]   keep the lines up to #else/#endif when every term holds
##                        (a term is a step name, or !name for "not that step")
##   #else / #endif
##   $name                a name the dispatch reads: the local `name` once the `locals`
##                        step binds it, else the attribute `self._name`
##   CALL(proc)           a proc call: `proc.handle` through the handler object (the
##                        literal design), `proc` itself once the `adapter` step is taken
## variants.ablation.source(steps) prints what one set of steps compiles to:
##   .venv/bin/python -m variants.ablation --source literal:steps=adapter+locals
## Names the compiled code finds in its namespace: the API constants, POLLED_BITS,
## ALL_BITS, bad_event, backends, Timers, monotonic, native_bits, STEPS, UNIFIED.
##
## (lines starting with ## are the template's own: they are not compiled)

#if !adapter
class Handler:
    """A 2016 port's handler object for a proc (ae's aeFileProc pointer, as an object):
    the loop calls handler.handle(...), which calls the proc -- one Python frame more per
    event. Handlers of one proc compare equal, so ae's `wfileProc != rfileProc` still
    calls a proc registered for both directions once per pass."""

    def __init__(self, proc):
        self.proc = proc

    def handle(self, loop, fd, client_data, mask):
        return self.proc(loop, fd, client_data, mask)

    def __eq__(self, other):
        return type(other) is Handler and other.proc == self.proc

    __hash__ = None
#endif


#if !lists
class FileEvent:
    """ae's aeFileEvent: one object per fd slot, its fields as instance attributes."""

    def __init__(self):
        self.mask = NONE
#if unified
        self.fileProc = None
#else
        self.rfileProc = None
        self.wfileProc = None
#endif
        self.clientData = None
#endif


#if !timers
DELETED_EVENT_ID = -1           # ae's AE_DELETED_EVENT_ID: freed by the next scan


class TimeEvent:
    """ae's aeTimeEvent: a node of the unsorted, singly linked list of timers."""

    def __init__(self, id, when_sec, when_ms, proc, client_data, finalizer, next):
        self.id = id
        self.when_sec = when_sec
        self.when_ms = when_ms
        self.timeProc = proc
        self.clientData = client_data
        self.finalizerProc = finalizer
        self.next = next


def aeGetTime():
    """ae's aeGetTime: the clock as (seconds, milliseconds) -- gettimeofday's two fields
    (the monotonic clock here, as later ae's getMonotonicUs, so a clock step cannot
    stall a timer)."""
    now = monotonic()
    sec = int(now)
    return sec, int((now - sec) * 1000)


def aeAddMillisecondsToNow(milliseconds):
    cur_sec, cur_ms = aeGetTime()
    when_sec = cur_sec + int(milliseconds // 1000)
    when_ms = cur_ms + int(milliseconds % 1000)
    if when_ms >= 1000:
        when_sec += 1
        when_ms -= 1000
    return when_sec, when_ms
#endif


#if !api
class ApiState:
    """ae_epoll.c: aeApiState and the three functions ae.c calls through it. The loop
    reaches the kernel through these methods (one Python frame per call), as
    aeCreateFileEvent calls aeApiAddEvent, aeDeleteFileEvent aeApiDelEvent and
    aeProcessEvents aeApiPoll."""

    def __init__(self, poller):
        self.kernel = poller.kernel
        self.to_native = poller.to_native
        self.to_ae = poller.to_ae
        self.native_in, self.native_out, self.native_err, self.native_extra = native_bits(poller)

    def aeApiAddEvent(self, fd, old, mask):
        """ADD when the kernel does not watch fd yet, else MOD with the old events merged
        in: ae computes the op and always calls epoll_ctl."""
        mask |= old                     # merge old events
#if table
        native = self.to_native[mask]
#else
        native = self.native_extra
        if mask & READABLE:
            native |= self.native_in
        if mask & WRITABLE:
            native |= self.native_out
#endif
        if old & POLLED:
            try:
                self.kernel.modify(fd, native)
            except FileNotFoundError:   # a number closed without delete and reused
                self.kernel.register(fd, native)
        else:
            try:
                self.kernel.register(fd, native)
            except FileExistsError:     # the kernel still holds it (a dup2 case)
                self.kernel.modify(fd, native)

    def aeApiDelEvent(self, fd, old, mask):
        """``mask`` is what is left: MOD to it, or DEL when nothing is left."""
#if ctl
        if (mask & POLLED) == (old & POLLED):
            return                      # why: the kernel's mask stays, no epoll_ctl
#endif
        if mask & POLLED:
#if table
            native = self.to_native[mask]
#else
            native = self.native_extra
            if mask & READABLE:
                native |= self.native_in
            if mask & WRITABLE:
                native |= self.native_out
#endif
            try:
                self.kernel.modify(fd, native)
            except OSError:
                pass                    # fd closed first: the kernel dropped it already
        else:
            try:
                self.kernel.unregister(fd)
            except OSError:
                pass

    def aeApiPoll(self, timeout):
#if fired
        return self.kernel.poll(timeout)
#else
        events = self.kernel.poll(timeout)
        fired = []                      # ae's eventLoop->fired, built per pass
        for fd, native in events:
#if table
            fired.append((fd, self.to_ae[native]))
#else
            mask = 0
            if native & self.native_in:
                mask |= READABLE
            if native & self.native_out:
                mask |= WRITABLE
            if native & self.native_err:
                mask |= READABLE | WRITABLE
            fired.append((fd, mask))
#endif
        return fired
#endif
#endif


class EventLoop:
    """An ae-style event loop (docs/variants.md, "The ae-literal design and its steps");
    its steps are the class attribute ``steps``."""

    steps = STEPS
    unified = UNIFIED

    def __init__(self, setsize=10240, backend=None):
        if type(setsize) is not int or setsize < 1:
            raise ValueError("setsize must be a positive int, got %r" % (setsize,))
        module = backends.choose(backend)
        self.backend = module.NAME
        self._poller = module.Poller()
        poller = self._poller
        self._to_native = poller.to_native
        self._to_ae = poller.to_ae
        self._native_in, self._native_out, self._native_err, self._native_extra = native_bits(poller)
#if api
        self._kernel = poller.kernel
#else
        self._apidata = ApiState(poller)         # aeApiCreate
#endif
        self._setsize = setsize
#if lists
        # Per-fd state in parallel lists indexed by fd: no object per fd.
        self._masks = [NONE] * setsize
#if unified
        self._procs = [None] * setsize
#else
        self._rprocs = [None] * setsize
        self._wprocs = [None] * setsize
#endif
        self._cdata = [None] * setsize
        self._nfds = 0                  # fds the kernel watches
#else
        self._events = [FileEvent() for _ in range(setsize)]     # ae's events[setsize]
        self._maxfd = -1                # ae's maxfd: -1 when no fd has events
#endif
#if timers
        self._timers = Timers(self)
#else
        self._timeEventHead = None
        self._timeEventNextId = 0
#endif
        self._stop = False
        self._before_sleep = None
        self._after_sleep = None
        self._error_handler = None
        self._closed = False

    # -- file events ------------------------------------------------------------------

    def create_file_event(self, fd, mask, proc, client_data=None):
        if type(fd) is not int or not 0 <= fd < self._setsize or type(mask) is not int \
                or mask & ~ALL_BITS:
            raise ValueError(bad_event(fd, mask, self._setsize))
#if !adapter
        proc = Handler(proc)
#endif
#if lists
        old = self._masks[fd]
#else
        fe = self._events[fd]
        old = fe.mask
#endif
        new = old | mask
        if new & POLLED:
#if api
            # aeApiAddEvent, inline: the kernel reached without a Python frame.
#if table
            native = self._to_native[new]
#else
            native = self._native_extra
            if new & READABLE:
                native |= self._native_in
            if new & WRITABLE:
                native |= self._native_out
#endif
            if old & POLLED:
                try:
                    self._kernel.modify(fd, native)
                except FileNotFoundError:
                    self._kernel.register(fd, native)
            else:
                try:
                    self._kernel.register(fd, native)
                except FileExistsError:
                    self._kernel.modify(fd, native)
#else
            self._apidata.aeApiAddEvent(fd, old, mask)
#endif
#if lists
            if not old & POLLED:
                self._nfds += 1
        self._masks[fd] = new
#if unified
        self._procs[fd] = proc          # one proc per fd: the last one given
#else
        if mask & READABLE:
            self._rprocs[fd] = proc
        if mask & WRITABLE:
            self._wprocs[fd] = proc
#endif
        self._cdata[fd] = client_data
#else
        fe.mask = new
#if unified
        fe.fileProc = proc              # one proc per fd: the last one given
#else
        if mask & READABLE:
            fe.rfileProc = proc
        if mask & WRITABLE:
            fe.wfileProc = proc
#endif
        fe.clientData = client_data
        if fd > self._maxfd:
            self._maxfd = fd
#endif

    def delete_file_event(self, fd, mask):
        if type(fd) is not int or not 0 <= fd < self._setsize:
            return
#if lists
        old = self._masks[fd]
#else
        fe = self._events[fd]
        old = fe.mask
#endif
        if old == NONE:
            return
        if mask & WRITABLE:
            mask |= BARRIER             # as ae: BARRIER goes with WRITABLE
        new = old & ~mask
#if api
#if ctl
        if (new & POLLED) != (old & POLLED):    # why: no epoll_ctl when the kernel's mask stays
#else
        if True:                        # aeApiDelEvent, inline: MOD or DEL on every delete
#endif
            if new & POLLED:
#if table
                native = self._to_native[new]
#else
                native = self._native_extra
                if new & READABLE:
                    native |= self._native_in
                if new & WRITABLE:
                    native |= self._native_out
#endif
                try:
                    self._kernel.modify(fd, native)
                except OSError:
                    pass
            else:
                try:
                    self._kernel.unregister(fd)
                except OSError:
                    pass
#else
        self._apidata.aeApiDelEvent(fd, old, new)
#endif
#if lists
        if old & POLLED and not new & POLLED:
            self._nfds -= 1
        self._masks[fd] = new
        if new == NONE:
#if unified
            self._procs[fd] = None
#else
            self._rprocs[fd] = None
            self._wprocs[fd] = None
#endif
            self._cdata[fd] = None
#else
        fe.mask = new
        if new == NONE:
#if unified
            fe.fileProc = None
#else
            fe.rfileProc = fe.wfileProc = None
#endif
            fe.clientData = None
            if fd == self._maxfd:
                # ae: update the max fd, scanning down the table
                j = self._maxfd - 1
                events = self._events
                while j >= 0 and events[j].mask == NONE:
                    j -= 1
                self._maxfd = j
#endif

    def get_file_events(self, fd):
        if type(fd) is not int or not 0 <= fd < self._setsize:
            return NONE
#if lists
        return self._masks[fd]
#else
        return self._events[fd].mask
#endif

    # -- time events ------------------------------------------------------------------

#if timers
    def create_time_event(self, milliseconds, proc, client_data=None, finalizer=None):
        return self._timers.create(milliseconds, proc, client_data, finalizer)

    def delete_time_event(self, id):
        self._timers.delete(id)
#else
    def create_time_event(self, milliseconds, proc, client_data=None, finalizer=None):
        """ae's aeCreateTimeEvent: a new node at the head of the unsorted list."""
        id = self._timeEventNextId
        self._timeEventNextId += 1
        when_sec, when_ms = aeAddMillisecondsToNow(milliseconds)
        self._timeEventHead = TimeEvent(id, when_sec, when_ms, proc, client_data, finalizer,
                                        self._timeEventHead)
        return id

    def delete_time_event(self, id):
        """ae's aeDeleteTimeEvent: search the list (O(n)); the node is marked and freed,
        its finalizer run, by the next processTimeEvents. KeyError for an unknown id."""
        te = self._timeEventHead
        while te is not None:
            if te.id == id and id != DELETED_EVENT_ID:
                te.id = DELETED_EVENT_ID
                return
            te = te.next
        raise KeyError(id)

    def _aeSearchNearestTimer(self):
        """ae's aeSearchNearestTimer: O(n), every pass ("time events are unsorted")."""
        te = self._timeEventHead
        nearest = None
        while te is not None:
            if nearest is None or te.when_sec < nearest.when_sec or \
                    (te.when_sec == nearest.when_sec and te.when_ms < nearest.when_ms):
                nearest = te
            te = te.next
        return nearest

    def _processTimeEvents(self):
        """ae's processTimeEvents: scan every timer, every pass; run the due ones (not one
        created during this scan: maxId), free the ones marked deleted."""
        processed = 0
        prev = None
        te = self._timeEventHead
        maxId = self._timeEventNextId - 1
        while te is not None:
            if te.id == DELETED_EVENT_ID:
                nxt = te.next
                if prev is None:
                    self._timeEventHead = nxt
                else:
                    prev.next = nxt
                if te.finalizerProc is not None:
                    te.finalizerProc(self, te.clientData)
                te = nxt
                continue
            if te.id > maxId:
                prev = te
                te = te.next
                continue
            now_sec, now_ms = aeGetTime()
            if now_sec > te.when_sec or (now_sec == te.when_sec and now_ms >= te.when_ms):
                try:
                    retval = te.timeProc(self, te.id, te.clientData)
                except BaseException as exc:
                    # The event ends: unlinked now, its finalizer run, then the error.
                    # KeyboardInterrupt & co. end it too, and are never handled (as the
                    # variants' timers: variants/common/timers.py).
                    nxt = te.next
                    if prev is None:
                        self._timeEventHead = nxt
                    else:
                        prev.next = nxt
                    te.id = DELETED_EVENT_ID
                    if te.finalizerProc is not None:
                        te.finalizerProc(self, te.clientData)
                    if self._error_handler is None or not isinstance(exc, Exception):
                        raise
                    self._error_handler(self, exc)
                    processed += 1
                    te = nxt
                    continue
                processed += 1
                if te.id != DELETED_EVENT_ID:       # the proc may have deleted it
                    if retval is None or retval == NOMORE:
                        te.id = DELETED_EVENT_ID
                    else:
                        te.when_sec, te.when_ms = aeAddMillisecondsToNow(retval)
            prev = te
            te = te.next
        return processed
#endif

    # -- the loop ---------------------------------------------------------------------

    def process_events(self, flags=ALL_EVENTS):
#if locals
        if not flags & (FILE_EVENTS | TIME_EVENTS):
            return 0
        return self._process(flags & FILE_EVENTS, flags & TIME_EVENTS, flags & DONT_WAIT,
                             flags & CALL_BEFORE_SLEEP, flags & CALL_AFTER_SLEEP)

    def _process(self, file_events, time_events, dont_wait, before, after):
        """One pass, with the flags decoded into one argument each (main decodes them
        once, not per pass)."""
#else
        """ae's aeProcessEvents: one pass; the flags are tested where they are used."""
        if not flags & TIME_EVENTS and not flags & FILE_EVENTS:
            return 0
        file_events = flags & FILE_EVENTS
        time_events = flags & TIME_EVENTS
        dont_wait = flags & DONT_WAIT
        before = flags & CALL_BEFORE_SLEEP
        after = flags & CALL_AFTER_SLEEP
#endif
        processed = 0
#if lists
        if (time_events and not dont_wait) or self._nfds:
#else
        if (time_events and not dont_wait) or self._maxfd != -1:
#endif
            if before and self._before_sleep is not None:
                self._before_sleep(self)
            timeout = None
            if dont_wait:
                timeout = 0.0
            elif time_events:
#if timers
                due = self._timers.due
                if due is not None:
                    timeout = due - monotonic()
                    if timeout < 0.0:
                        timeout = 0.0
#else
                shortest = self._aeSearchNearestTimer()
                if shortest is not None:
                    now_sec, now_ms = aeGetTime()
                    timeout = (shortest.when_sec - now_sec) + (shortest.when_ms - now_ms) / 1000.0
                    if timeout < 0.0:
                        timeout = 0.0
#endif
#if api
            ready = self._kernel.poll(timeout)
#if !fired
            fired = []                  # ae's eventLoop->fired, built per pass
            for fd, native in ready:
#if table
                fired.append((fd, self._to_ae[native]))
#else
                mask = 0
                if native & self._native_in:
                    mask |= READABLE
                if native & self._native_out:
                    mask |= WRITABLE
                if native & self._native_err:
                    mask |= READABLE | WRITABLE
                fired.append((fd, mask))
#endif
            ready = fired
#endif
#else
            ready = self._apidata.aeApiPoll(timeout)
#endif
            if after and self._after_sleep is not None:
                self._after_sleep(self)
            if ready and file_events:
                processed = len(ready)
#if locals
                # why: locals are the fastest names in CPython; this loop runs per event.
#if lists
                masks = self._masks
#if unified
                procs = self._procs
#else
                rprocs = self._rprocs
                wprocs = self._wprocs
#endif
                cdata = self._cdata
#else
                events = self._events
#endif
#if fired
#if table
                to_ae = self._to_ae
#else
                native_in = self._native_in
                native_out = self._native_out
                native_err = self._native_err
#endif
#endif
#endif
#if fired
                for fd, native in ready:
#if table
                    mask = $to_ae[native]
#else
                    mask = 0
                    if native & $native_in:
                        mask |= READABLE
                    if native & $native_out:
                        mask |= WRITABLE
                    if native & $native_err:
                        mask |= READABLE | WRITABLE
#endif
#else
                for fd, mask in ready:
#endif
                    # As ae, an fd's mask is read at its own dispatch: an earlier proc of
                    # this pass may have deleted or added its events.
#if lists
                    fmask = $masks[fd]
#else
                    fe = $events[fd]
                    fmask = fe.mask
#endif
                    fired = mask & fmask
                    if not fired:
                        continue
                    try:
#if unified
#if lists
                        CALL($procs[fd])(self, fd, $cdata[fd], fired)
#else
                        CALL(fe.fileProc)(self, fd, fe.clientData, fired)
#endif
#else
                        invert = fmask & BARRIER
                        called = None
                        if not invert and fired & READABLE:
#if lists
                            called = $rprocs[fd]
                            CALL(called)(self, fd, $cdata[fd], fired)
                            fmask = $masks[fd]
#else
                            called = fe.rfileProc
                            CALL(called)(self, fd, fe.clientData, fired)
                            fmask = fe.mask
#endif
                        # Both procs get the pass's fired mask; the re-read fd mask only
                        # decides whether the second one runs (ae's fe->mask & mask).
                        if fmask & mask & WRITABLE:
#if lists
                            proc = $wprocs[fd]
                            if proc != called:
                                called = proc
                                CALL(proc)(self, fd, $cdata[fd], fired)
                                fmask = $masks[fd]
#else
                            proc = fe.wfileProc
                            if proc != called:
                                called = proc
                                CALL(proc)(self, fd, fe.clientData, fired)
                                fmask = fe.mask
#endif
                        if invert and fmask & mask & READABLE:
#if lists
                            proc = $rprocs[fd]
                            if proc != called:
                                CALL(proc)(self, fd, $cdata[fd], fired)
#else
                            proc = fe.rfileProc
                            if proc != called:
                                CALL(proc)(self, fd, fe.clientData, fired)
#endif
#endif
                    except Exception as exc:
                        if self._error_handler is None:
                            raise
                        self._error_handler(self, exc)
#if timers
        # why: most passes end before the nearest timer: one clock read, no timer pass.
        if time_events:
            due = self._timers.due
            if due is not None and monotonic() >= due:
                processed += self._timers.run_due(self._error_handler)
#else
        if time_events:
            processed += self._processTimeEvents()
#endif
        return processed

    def main(self):
        self._stop = False
#if locals
        process = self._process
        while not self._stop:
            process(FILE_EVENTS, TIME_EVENTS, 0, CALL_BEFORE_SLEEP, CALL_AFTER_SLEEP)
#else
        while not self._stop:           # ae's aeMain
            self.process_events(ALL_EVENTS | CALL_BEFORE_SLEEP | CALL_AFTER_SLEEP)
#endif

    def stop(self):
        self._stop = True

    def set_before_sleep(self, proc):
        self._before_sleep = proc

    def set_after_sleep(self, proc):
        self._after_sleep = proc

    def set_error_handler(self, handler):
        self._error_handler = handler

    # -- size and lifetime ------------------------------------------------------------

    def resize(self, setsize):
        if type(setsize) is not int or setsize < 1:
            raise ValueError("setsize must be a positive int, got %r" % (setsize,))
        used = [fd for fd in range(self._setsize) if self.get_file_events(fd)]
        if used and used[-1] >= setsize:
            raise ValueError("cannot resize to setsize %d: fd %d is registered"
                             % (setsize, used[-1]))
        grow = setsize - self._setsize
#if lists
#if unified
        tables = ((self._masks, NONE), (self._procs, None), (self._cdata, None))
#else
        tables = ((self._masks, NONE), (self._rprocs, None), (self._wprocs, None),
                  (self._cdata, None))
#endif
        for table, empty in tables:
            if grow > 0:
                table.extend([empty] * grow)
            else:
                del table[setsize:]
#else
        if grow > 0:
            self._events.extend(FileEvent() for _ in range(grow))
        else:
            del self._events[setsize:]
#endif
        self._setsize = setsize

    def get_setsize(self):
        return self._setsize

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._poller.close()
#if timers
        self._timers.clear()
#else
        self._timeEventHead = None
#endif

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<ablation.EventLoop steps=%s backend=%s setsize=%d>" % (
            "+".join(self.steps) or "literal", self.backend, self._setsize)
