"""A model-based test: every loop x poller against a reference model written from ae.c.

The reference
    ``Model`` below is Redis ae's aeProcessEvents/processTimeEvents re-read from the C
    (redis/redis at 4f8cdc2a, src/ae.c, src/ae_epoll.c, src/ae_select.c; each method
    cites the lines it mirrors), not from the libraries in variants/. Where the
    libraries differ from ae on purpose (docs/variants.md, "Where the variants differ
    from ae"), the model says so at that line, as a named difference:
    D1 the fired mask a proc receives is the poll's report ANDed with the fd's mask at
       its dispatch (ae: the raw report); D2 due timers run in (when, id) order (ae:
       newest first); D3 a finalizer runs when its event ends (ae: on the next timer
       pass); D4 "call it once" compares with the proc already called in this pass
       (ae: compares the fd's current read and write procs).
    Everything else is ae's: the same mask to both procs of a pass, the re-check
    ``fe->mask & mask`` deciding only whether the next proc runs, BARRIER read at the
    fd's dispatch, client data read at each call, hang-ups reported readable and
    writable, every reported fd counted, timers created by a time proc waiting for a
    later pass. (Issue 24: the model used to pass the re-checked mask to the second
    proc, i.e. it encoded the library's behaviour, and so missed that regression.)

The real side
    A hypothesis ``RuleBasedStateMachine`` drives one real loop with real fds
    (socketpairs and both ends of a pipe: data sent and drained, buffers filled and
    drained, peers hung up, channels reopened), registers random masks with one of five
    procs for each direction, and runs passes with random flags. The procs carry
    scripts drawn at the start: delete or add events of their own fd or of another fd
    (an add gives the fd new client data), drain their fd, create timers (periodic,
    NOMORE, with or without a finalizer), delete any live timer (their own included).
    Time is a fake clock the rules advance, so the timer semantics are exact; the
    wrapped poller never blocks and records the timeout the loop asked for. After each
    pass the model replays it from what the poller really reported (checked first
    against what the fds' states say must or must not be reported) and compares: the
    poll timeout, every call made (hooks; file procs with fd, client data and the mask
    received; timer procs with id and client data; finalizers) in order, the return
    count, the registered masks and the live timers. ``SCENARIOS`` are fixed scripts
    for the cases a random run may reach late (two procs firing together, BARRIER,
    hang-ups, a proc changing another fd, timers ending themselves): each runs on every
    configuration, seed-independent.

The loops: ``LOOPS``, a list of (name, factory). factory(backend) returns a
``LoopUnderTest`` (or None: this backend does not apply); append to the list to put
another loop under the model. ``LoopUnderTest`` reaches the few internals the test needs
(the kernel's poll, the live timer ids, the modules whose clock is faked) through
methods a loop built differently overrides.

Budget: a fixed seed and a bounded number of examples in ``make test``. For a longer
random run set EVENTS_MODEL_EXAMPLES (examples per configuration, default 16),
EVENTS_MODEL_STEPS (steps per example, default 30) and EVENTS_MODEL_SEED (an int:
that seed instead of the fixed one; "random": a new seed each run, printed on failure);
EVENTS_MODEL_SHRINK=0 reports a failure unshrunk, EVENTS_MODEL_SHRINK_S bounds the
shrinking (seconds per configuration, default 20).
"""

import importlib
import os
import select
import socket
import time
import types

import hypothesis
import hypothesis.internal.conjecture.engine
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, get_state_machine_test, initialize,
                                 invariant, rule)

from harness import servers
from variants.common import backends

R, W, BARRIER, NOMORE = 1, 2, 4, -1
FILE, TIME, DONT_WAIT, BEFORE, AFTER = 1, 2, 4, 8, 16


# -- the loops under test -----------------------------------------------------------------

class LoopUnderTest:
    """One loop and what the model test needs of it beyond the public API.

    ``procs``: "two" (a read and a write proc per fd, ae's rfileProc/wfileProc) or "one"
    (one proc per fd, called once per pass: alone_proc). ``oneshot``: the loop overlaps
    file and time procs (the test runs its file and time passes apart) and dispatches
    asynchronously (``settle`` waits for its workers). ``same_proc_rule``: D4 of the
    module docstring, "called" (the libraries) or "ae"."""

    procs = "two"
    oneshot = False
    same_proc_rule = "called"
    # Modules whose module-level ``monotonic`` the fake clock replaces.
    clock_modules = ("variants.common.timers",)

    def __init__(self, loop):
        self.loop = loop

    @property
    def backend(self):
        return self.loop.backend

    def wrap_poll(self, spy):
        """Route the loop's polls through ``spy(real_poll, timeout)``. The variants call
        the kernel through ``loop._kernel`` (the select.epoll itself for epoll, which
        cannot be patched): a stand-in takes its place. (Before b2a9bd4 they called
        ``loop._poller.poll``: patched instead, so that the test runs on older commits.)"""
        if not hasattr(self.loop, "_kernel"):
            real_poll = self.loop._poller.poll
            self.loop._poller.poll = lambda timeout: spy(real_poll, timeout)
            return
        kernel = self.loop._kernel
        self.loop._kernel = types.SimpleNamespace(
            register=kernel.register, modify=kernel.modify, unregister=kernel.unregister,
            poll=lambda timeout: spy(kernel.poll, timeout))

    def live_timers(self):
        return sorted(self.loop._timers.live)

    def internal_fds(self):
        """fds the loop polls for itself (not reported to the model)."""
        return ()

    def settle(self):
        """Wait until every proc of the last pass has run (asynchronous loops)."""

    def close(self):
        self.loop.close()


class OneshotLoop(LoopUnderTest):
    oneshot = True

    def internal_fds(self):
        return (self.loop._wake_r,)

    def settle(self):
        deadline = time.monotonic() + 5
        while any(self.loop._busy):
            assert time.monotonic() < deadline, "oneshot worker did not finish"
            time.sleep(0.0005)
        for lock in {id(lk): lk for lk in self.loop._fd_locks}.values():
            with lock:                  # the worker's re-arm is done under this lock
                pass


def variant_loop(package, adapter=LoopUnderTest, procs="two", **kw):
    """A factory for a library (``package``, e.g. variants.master): EventLoop(backend=...,
    **kw) in ``adapter``."""
    def factory(backend):
        module = importlib.import_module(package)
        spec = adapter(module.EventLoop(backend=backend, **kw))
        spec.procs = procs
        spec.clock_modules = LoopUnderTest.clock_modules + (package + ".events",)
        return spec
    return factory


def declared_loop(cfg):
    """A variant's loop configuration as the server table declares it (harness/servers),
    its passes serial (ae's pass: mul_thread with one worker)."""
    return variant_loop(cfg.package, OneshotLoop if cfg.asynchronous else LoopUnderTest,
                        procs="one" if cfg.unified else "two", **{**dict(cfg.serial), **dict(cfg.kwargs)})


class AblationLoop(LoopUnderTest):
    """variants/ablation's loops (issue 23): without the ``api`` step the kernel is reached
    through ae_epoll.c's aeApiState (``loop._apidata.kernel``); without ``timers`` the
    timers would be ae's linked list (``loop._timeEventHead``, LOOPS says why none is here)."""

    def wrap_poll(self, spy):
        if hasattr(self.loop, "_kernel"):
            return super().wrap_poll(spy)
        state = self.loop._apidata
        kernel = state.kernel
        state.kernel = types.SimpleNamespace(
            register=kernel.register, modify=kernel.modify, unregister=kernel.unregister,
            poll=lambda timeout: spy(kernel.poll, timeout))

    def live_timers(self):
        if hasattr(self.loop, "_timers"):
            return super().live_timers()
        ids, te = [], self.loop._timeEventHead
        while te is not None:
            if te.id != -1:                 # AE_DELETED_EVENT_ID: freed by the next scan
                ids.append(te.id)
            te = te.next
        return sorted(ids)


def ablation_loop(steps):
    """A factory for variants/ablation's loop with these steps taken."""
    def factory(backend):
        from variants import ablation
        cls = ablation.loop_class(steps)
        spec = AblationLoop(cls(backend=backend))
        spec.procs = "one" if cls.unified else "two"
        spec.clock_modules = LoopUnderTest.clock_modules + (cls.__module__,)
        return spec
    return factory


# The variants: every loop configuration the server table declares (a variant declared there
# is tested here with no edit of this file).
LOOPS = [(cfg.name, declared_loop(cfg)) for cfg in servers.SERVERS.loop_configs()] + [
    # The ae-literal design's file events (every step but ``timers`` left out), the whole
    # path to master, the unified proc on each. Without the ``timers`` step the timers are
    # ae's list: due ones run in list order and a finalizer runs at the next scan (ae's
    # AE_DELETED_EVENT_ID), not the model's time order; tests/test_conformance.py covers them.
    ("literal_timers", ablation_loop("timers")),
    ("literal_all", ablation_loop("all")),
    ("literal_timers_unified", ablation_loop("timers+unified")),
    ("literal_all_unified", ablation_loop("all+unified")),
]


def configs():
    return [(name, b) for name, _ in LOOPS for b in backends.available()]


def _factory(name):
    return dict(LOOPS)[name]


# Times are multiples of 125 ms so that ms / 1000.0 and their sums are exact floats:
# the model compares due times with ==, as the loop does with its clock.
DELAYS = (0, 125, 250, 500)
N_FILE_PROCS = 5
N_TIMER_PROCS = 3
KINDS = ("sock", "sock", "pipe_r", "pipe_w")   # the loop's end of each channel

# A pass that makes more calls than this is a runaway (e.g. a timer created in a pass
# running in that same pass, which creates another): fail instead of looping forever.
MAX_CALLS_PER_PASS = 200
# Procs that create timers could double them every pass: a "timer" op (in a proc or a
# rule) does nothing while this many are live, on both sides.
MAX_TIMERS = 12


class RunawayPass(AssertionError):
    pass


def _env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


# -- the real side: channels and the clock -------------------------------------------

class Channel:
    """One fd the loop watches and the peer the test drives, with what the test knows
    of its state: bytes waiting for the loop, whether the loop's send side is full,
    whether the peer is gone."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "sock":
            a, b = socket.socketpair()
            self.fd, self.peer = a.detach(), b.detach()     # raw fds: os.read/os.write
        else:
            r, w = os.pipe()
            self.fd, self.peer = (r, w) if kind == "pipe_r" else (w, r)
        os.set_blocking(self.fd, False)
        os.set_blocking(self.peer, False)
        self.pending = 0                # bytes readable at self.fd
        self.full = False               # self.fd's send buffer is full
        self.hup = False                # the peer is closed
        self.closed = False

    @property
    def can_read(self):
        return self.kind != "pipe_w"

    @property
    def can_write(self):
        return self.kind != "pipe_r"

    def send(self, n):
        os.write(self.peer, b"x" * n)
        self.pending += n

    def fill(self):
        try:
            while True:
                os.write(self.fd, b"y" * 65536)
        except BlockingIOError:
            pass
        self.full = True

    def drain_peer(self):
        try:
            while os.read(self.peer, 1 << 20):
                pass
        except BlockingIOError:
            pass
        self.full = False

    def drain(self):
        """Read everything waiting at the loop's end (what a proc's "drain" does)."""
        if not self.can_read:
            return
        try:
            while os.read(self.fd, 1 << 20):
                pass
        except OSError:                 # EAGAIN; or ECONNRESET: the peer left data unread
            pass
        self.pending = 0

    def hang_up(self):
        os.close(self.peer)
        self.hup = True

    def close(self):
        if self.closed:
            return
        self.closed = True
        for fd in (self.fd, self.peer):
            if fd == self.peer and self.hup:
                continue
            try:
                os.close(fd)
            except OSError:
                pass


class FakeClock:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms / 1000.0


# -- the reference model: ae.c on plain data ----------------------------------------------

def ae_mask(backend, native):
    """aeApiPoll's translation of the kernel's report into ae's bits. ae_epoll.c L102-105:
    EPOLLIN -> READABLE, EPOLLOUT -> WRITABLE, EPOLLERR and EPOLLHUP -> READABLE|WRITABLE
    (a hung-up fd fires both procs). The poll backend (ae has none) follows the epoll
    rule for POLLERR/POLLHUP. ae_select.c L72-75: an fd is readable (writable) only if it
    was in the read (write) set; the select backend reports ae's bits already."""
    if backend == "select":
        return native
    if backend == "epoll":
        rd, wr, err = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
    else:
        rd, wr, err = select.POLLIN, select.POLLOUT, select.POLLERR | select.POLLHUP
    mask = (R if native & rd else 0) | (W if native & wr else 0)
    return mask | (R | W if native & err else 0)


class Model:
    """ae's event loop state (aeEventLoop) as dicts. Keys: fds, timer ids. Procs are
    their numbers; ``log`` collects every call in order."""

    def __init__(self, procs, same_proc_rule):
        self.procs = procs              # "two" or "one" (LoopUnderTest.procs)
        self.same_proc_rule = same_proc_rule
        self.masks = {}                 # fd -> fe->mask
        self.rproc = {}                 # fd -> fe->rfileProc ("two")
        self.wproc = {}                 # fd -> fe->wfileProc ("two")
        self.proc = {}                  # fd -> the one proc ("one")
        self.cdata = {}                 # fd -> fe->clientData
        self.timers = {}                # id -> [when_ms, tproc, cdata, has_finalizer]
        self.next_id = 0                # eventLoop->timeEventNextId
        self.log = []

    def create_file_event(self, fd, mask, proc, cdata):
        """ae.c L154-157: fe->mask |= mask; the proc of each bit given; clientData."""
        self.masks[fd] = self.masks.get(fd, 0) | mask
        if self.procs == "one":
            self.proc[fd] = proc        # alone_proc: one proc per fd, the last one given
        else:
            if mask & R:
                self.rproc[fd] = proc
            if mask & W:
                self.wproc[fd] = proc
        self.cdata[fd] = cdata

    def delete_file_event(self, fd, mask):
        """ae.c L167-174: no-op on AE_NONE; deleting WRITABLE deletes BARRIER too;
        fe->mask &= ~mask. (Library: BARRIER alone, or BARRIER without WRITABLE, is
        dropped: it means nothing then.)"""
        old = self.masks.get(fd, 0)
        if not old:
            return
        if mask & W:
            mask |= BARRIER
        new = old & ~mask
        if not new & (R | W):
            new = 0
        elif not new & W:
            new &= ~BARRIER
        self.masks[fd] = new
        if not new:
            self.cdata.pop(fd, None)

    def create_time_event(self, now, ms, tproc, cdata, fin):
        """ae.c L204-210: id = timeEventNextId++, when = now + ms."""
        tid = self.next_id
        self.next_id += 1
        self.timers[tid] = [now + ms, tproc, cdata, fin]
        return tid

    def delete_time_event(self, tid):
        """ae.c L223-229 marks it deleted; D3: its finalizer runs now (ae: L273-289,
        when the next timer pass unlinks it)."""
        when, tproc, cdata, fin = self.timers.pop(tid)
        if fin:
            self.log.append(("fin", cdata))

    def nfds(self):
        return sum(1 for m in self.masks.values() if m)


class ModelMachine(RuleBasedStateMachine):
    """Set up by ``run_model`` before hypothesis creates instances."""

    cfg = None
    clock = None
    monkeypatch = None

    def __init__(self):
        super().__init__()
        name, backend = self.cfg
        self.lut = _factory(name)(backend)
        self.loop = self.lut.loop
        for module in self.lut.clock_modules:
            self.monkeypatch.setattr(importlib.import_module(module), "monotonic", self.clock)
        self.oneshot = self.lut.oneshot
        self.clock.ms = 0
        self.channels = [Channel(kind) for kind in KINDS]
        self.model = Model(self.lut.procs, self.lut.same_proc_rule)
        self.log = []                   # what really happened
        self.polls = []                 # (timeout, reported, states) of each real poll
        self.real_counter = 0           # cdata labels of timers created by the real side
        self.model_counter = 0
        internal = set(self.lut.internal_fds())

        def spy(real_poll, timeout):
            events = real_poll(0)       # the fake clock: never block
            # What the fds' states were at the poll (procs of the pass may change them).
            states = [(ch.fd, ch.kind, ch.pending, ch.full, ch.hup) for ch in self.channels]
            self.polls.append((timeout, [(fd, n) for fd, n in events if fd not in internal],
                               states))
            return events

        self.lut.wrap_poll(spy)

    def teardown(self):
        self.lut.close()
        for ch in self.channels:
            ch.close()

    # -- scripts: drawn once per example, shared by the real procs and the model ----

    def draw_scripts(self, data):
        # "self" most often: a proc changing its own fd's events between its two procs
        # of a pass is where ae's dispatch is subtle (a server's read-then-write).
        target = st.sampled_from(["self", "self", "self", 0, 1, 2, 3])
        masks = st.sampled_from([R, W, R | W, W | BARRIER, R | W | BARRIER])
        op = st.one_of(
            st.tuples(st.just("del"), target, masks),
            st.tuples(st.just("del"), st.just("self"), st.sampled_from([R, W])),
            # A proc closing another connection: a later fd of the pass may be left with
            # nothing to fire (its stale report must not reach a proc).
            st.tuples(st.just("del"), st.integers(0, 3), st.just(R | W | BARRIER)),
            st.tuples(st.just("add"), target, masks, st.integers(0, N_FILE_PROCS - 1)),
            st.just(("drain",)),
            st.tuples(st.just("deltimer"), st.integers(0, 3)),
            st.tuples(st.just("timer"), st.sampled_from(DELAYS),
                      st.integers(0, N_TIMER_PROCS - 1), st.booleans()),
        )
        ops = st.lists(op, max_size=3)
        # Timer procs lean to timer work: creating a due timer from inside a timer pass
        # and deleting timers of the same pass are where processTimeEvents is subtle.
        timer_op = st.one_of(
            op,
            st.tuples(st.just("timer"), st.sampled_from((0, 0, 125)),
                      st.integers(0, N_TIMER_PROCS - 1), st.booleans()),
            st.tuples(st.just("deltimer"), st.integers(0, 3)),
            st.just(("delself",)))          # a time proc deleting its own event
        # A file proc often starts by deleting its own event: a server's read proc that
        # switches the fd to writing (or a BARRIER write proc that switches back), the
        # case where the second proc of the pass must still get the pass's mask.
        lead = st.sampled_from([[], [("del", "self", R)], [("del", "self", W)]])
        self.set_scripts(
            [data.draw(lead) + data.draw(ops) for _ in range(N_FILE_PROCS)],
            [(data.draw(st.lists(timer_op, max_size=3)),
              data.draw(st.sampled_from([NOMORE, None, 0, 125, 250])))
             for _ in range(N_TIMER_PROCS)],
            # The before-sleep hook leans to timer work too: a timer it creates must bound
            # the poll that follows it (the wait is computed after the hook).
            data.draw(st.lists(timer_op, max_size=3)))

    def set_scripts(self, fscripts, tscripts, hscript=()):
        """fscripts[i]: the ops of file proc i; tscripts[i]: (ops, return value) of timer
        proc i; hscript: the ops of the before-sleep hook."""
        self.fscripts = list(fscripts)
        self.tscripts = list(tscripts)
        self.hscript = list(hscript)
        self.fprocs = [self._file_proc(i) for i in range(len(self.fscripts))]
        self.tprocs = [self._timer_proc(i) for i in range(len(self.tscripts))]

    calls = 0

    def _count_call(self):
        self.calls += 1
        if self.calls > MAX_CALLS_PER_PASS:
            raise RunawayPass("more than %d calls in one pass" % MAX_CALLS_PER_PASS)

    def _fin(self, loop, cdata):
        self.log.append(("fin", cdata))

    def _file_proc(self, i):
        def proc(loop, fd, cdata, mask):
            self._count_call()
            self.log.append(("file", i, fd, cdata, mask))
            self._run_ops_real(self.fscripts[i], fd)
        return proc

    def _timer_proc(self, i):
        def proc(loop, tid, cdata):
            self._count_call()
            self.log.append(("timer", i, tid, cdata))
            ops, ret = self.tscripts[i]
            self._run_ops_real(ops, None, tid)
            return ret
        return proc

    def _hook(self, loop):
        self.log.append(("before",))
        self._run_ops_real(self.hscript, None)

    def _resolve(self, target, fd):
        if target == "self":
            return fd if fd is not None else self.channels[0].fd
        return self.channels[target].fd

    def _channel_of(self, fd):
        for ch in self.channels:
            if ch.fd == fd:
                return ch
        return None

    def _run_ops_real(self, ops, fd, tid=None):
        loop = self.loop
        for op in ops:
            if op[0] == "del":
                loop.delete_file_event(self._resolve(op[1], fd), op[2])
            elif op[0] == "add":
                target = self._resolve(op[1], fd)
                loop.create_file_event(target, op[2], self.fprocs[op[3]],
                                       "d%d:%s" % (op[3], op[1]))
            elif op[0] == "drain":
                ch = self._channel_of(fd) if fd is not None else self.channels[0]
                if ch is not None:
                    ch.drain()
            elif op[0] == "deltimer":
                live = self.lut.live_timers()
                if live:
                    loop.delete_time_event(live[op[1] % len(live)])
            elif op[0] == "delself":
                if tid in self.lut.live_timers():
                    loop.delete_time_event(tid)
            elif op[0] == "timer" and len(self.lut.live_timers()) < MAX_TIMERS:
                self.real_counter += 1
                loop.create_time_event(op[1], self.tprocs[op[2]], "t%d" % self.real_counter,
                                       self._fin if op[3] else None)

    def _run_ops_model(self, ops, fd, tid=None):
        m = self.model
        for op in ops:
            if op[0] == "del":
                m.delete_file_event(self._resolve(op[1], fd), op[2])
            elif op[0] == "add":
                m.create_file_event(self._resolve(op[1], fd), op[2], op[3],
                                    "d%d:%s" % (op[3], op[1]))
            elif op[0] == "drain":
                pass                    # the real proc already drained; state is shared
            elif op[0] == "deltimer":
                live = sorted(m.timers)
                if live:
                    m.delete_time_event(live[op[1] % len(live)])
            elif op[0] == "delself":
                if tid in m.timers:
                    m.delete_time_event(tid)
            elif op[0] == "timer" and len(m.timers) < MAX_TIMERS:
                self.model_counter += 1
                m.create_time_event(self.clock.ms, op[1], op[2], "t%d" % self.model_counter,
                                    op[3])

    # -- the world changes (applied by the step rule before its pass) ------------------

    def create_file_event(self, ch, mask, proc):
        fd = self.channels[ch].fd
        cdata = "u%d" % proc
        self.loop.create_file_event(fd, mask, self.fprocs[proc], cdata)
        self.model.create_file_event(fd, mask, proc, cdata)

    def register_pair(self, ch, rproc, wproc, barrier):
        """A server's connection: a read proc and a different write proc on one socket,
        with data waiting, so that both fire in the next pass."""
        self.create_file_event(ch, R, rproc)
        self.create_file_event(ch, W | (BARRIER if barrier else 0), wproc)
        self.send(ch, 1)

    def delete_file_event(self, ch, mask):
        fd = self.channels[ch].fd
        self.loop.delete_file_event(fd, mask)
        self.model.delete_file_event(fd, mask)

    def create_time_event(self, ms, proc, fin):
        if len(self.model.timers) >= MAX_TIMERS:
            return
        self.real_counter += 1
        self.model_counter += 1
        tid = self.loop.create_time_event(ms, self.tprocs[proc], "t%d" % self.real_counter,
                                          self._fin if fin else None)
        expected = self.model.create_time_event(self.clock.ms, ms, proc,
                                                "t%d" % self.model_counter, fin)
        assert tid == expected, "time event id %r, ae's is %r" % (tid, expected)

    def delete_time_event(self, k):
        live = sorted(self.model.timers)
        if live:
            tid = live[k % len(live)]
            self.loop.delete_time_event(tid)
            self.model.delete_time_event(tid)

    def send(self, ch, n):
        c = self.channels[ch]
        if c.can_read and not c.hup:
            c.send(n)

    def fill(self, ch):
        c = self.channels[ch]
        if c.can_write and not c.hup:
            c.fill()

    def drain_peer(self, ch):
        c = self.channels[ch]
        if c.can_write and not c.hup:
            c.drain_peer()

    def hang_up(self, ch):
        c = self.channels[ch]
        if not c.hup:
            c.hang_up()

    def reopen(self, ch):
        old = self.channels[ch]
        self.loop.delete_file_event(old.fd, R | W | BARRIER)
        self.model.delete_file_event(old.fd, R | W | BARRIER)
        old.close()
        self.channels[ch] = new = Channel(old.kind)
        for fd in (new.fd, new.peer):
            assert self.loop.get_file_events(fd) == 0
            self.model.masks.pop(fd, None)

    def advance(self, ms):
        self.clock.ms += ms

    def hooks(self, on):
        self.loop.set_before_sleep(self._hook if on else None)
        self.loop.set_after_sleep((lambda lp: self.log.append(("after",))) if on else None)
        self.hooks_on = on

    hooks_on = False

    CHANGES = st.one_of(
        st.tuples(st.just("create_file_event"), st.integers(0, 3),
                  st.sampled_from([R, W, R | W, R | W | BARRIER]),
                  st.integers(0, N_FILE_PROCS - 1)),
        st.tuples(st.just("register_pair"), st.integers(0, 1), st.integers(0, N_FILE_PROCS - 1),
                  st.integers(0, N_FILE_PROCS - 1), st.booleans()),
        st.tuples(st.just("delete_file_event"), st.integers(0, 3),
                  st.sampled_from([R, W, R | W, BARRIER, R | W | BARRIER])),
        st.tuples(st.just("create_time_event"), st.sampled_from(DELAYS),
                  st.integers(0, N_TIMER_PROCS - 1), st.booleans()),
        st.tuples(st.just("delete_time_event"), st.integers(0, 7)),
        st.tuples(st.just("send"), st.integers(0, 3), st.sampled_from([1, 100, 5000])),
        st.tuples(st.just("fill"), st.integers(0, 3)),
        st.tuples(st.just("drain_peer"), st.integers(0, 3)),
        st.tuples(st.just("hang_up"), st.integers(0, 3)),
        st.tuples(st.just("reopen"), st.integers(0, 3)),
        st.tuples(st.just("advance"), st.sampled_from([0, 125, 250, 500, 1000])),
        st.tuples(st.just("hooks"), st.booleans()),
    )

    def _apply(self, changes):
        for change in changes:
            getattr(self, change[0])(*change[1:])
        self._compare_logs()            # deleting a timer runs its finalizer

    @initialize(data=st.data(), changes=st.lists(CHANGES, min_size=2, max_size=8))
    def setup(self, data, changes):
        self.draw_scripts(data)
        if data.draw(st.booleans()):
            self.hooks(True)
        # Every channel starts registered, most often for both directions and with two
        # different procs, so that passes report several fds with two procs each from
        # the first step on.
        for ch in range(len(self.channels)):
            mask = data.draw(st.sampled_from([R | W, R | W, R | W | BARRIER, R, W]))
            if mask & R and mask & W and data.draw(st.booleans()):
                self.create_file_event(ch, R, data.draw(st.integers(0, N_FILE_PROCS - 1)))
                mask &= ~R
            self.create_file_event(ch, mask, data.draw(st.integers(0, N_FILE_PROCS - 1)))
        self._apply(changes)

    # -- the step: some changes, then one pass replayed in the model ---------------------

    @rule(changes=st.lists(CHANGES, max_size=3),
          flags=st.sampled_from([FILE | TIME | DONT_WAIT, FILE | TIME, FILE | DONT_WAIT,
                                 TIME | DONT_WAIT, TIME, FILE]),
          sleep_hooks=st.booleans())
    def step(self, changes, flags, sleep_hooks):
        self._apply(changes)
        if self.oneshot and flags & FILE and flags & TIME:
            flags &= ~TIME              # oneshot overlaps file and time procs on purpose
        if sleep_hooks:
            flags |= BEFORE | AFTER
        self.polls.clear()
        self.calls = 0
        n = self.loop.process_events(flags)
        self.lut.settle()
        expected_n = self._replay(flags)
        assert n == expected_n, "process_events returned %d, ae's count is %d" % (
            n, expected_n)
        self._compare_logs()

    def _replay(self, flags):
        """ae.c aeProcessEvents, L342-451, on the model."""
        m = self.model
        processed = 0
        # L347: nothing to do without FILE_EVENTS or TIME_EVENTS.
        if not flags & (FILE | TIME):
            assert self.polls == [], "no poll expected"
            return 0
        # L353-354: poll when an fd is registered, or to sleep until a timer. (oneshot
        # always polls: its wake-up fd is registered.)
        polls = bool(m.nfds() or self.oneshot or (flags & TIME and not flags & DONT_WAIT))
        if polls:
            # L359-360: the before-sleep hook runs first, then the wait is computed.
            if flags & BEFORE and self.hooks_on:
                m.log.append(("before",))
                self._run_ops_model(self.hscript, None)
            # L367-377: 0 with DONT_WAIT; else until the earliest timer; else no limit.
            if flags & DONT_WAIT:
                timeout = 0.0
            elif flags & TIME and m.timers:
                nearest = min(t[0] for t in m.timers.values())
                timeout = max(0.0, (nearest - self.clock.ms) / 1000.0)
            else:
                timeout = None
            assert len(self.polls) == 1, "expected one poll, got %d" % len(self.polls)
            got_timeout, reported, states = self.polls[0]
            assert got_timeout == timeout, "poll timeout %r, ae's is %r" % (
                got_timeout, timeout)
            reported = [(fd, ae_mask(self.lut.backend, native)) for fd, native in reported]
            self._check_report(reported, states)
            # L388-389: the after-sleep hook, with or without FILE_EVENTS.
            if flags & AFTER and self.hooks_on:
                m.log.append(("after",))
            # L383-385, L391-443: file events only when asked.
            if flags & FILE:
                for fd, mask in reported:
                    self._dispatch(fd, mask)
                    processed += 1      # L442: every reported fd counts
        else:
            assert self.polls == [], "no poll expected"
        # L446-447
        if flags & TIME:
            processed += self._time_pass()
        return processed

    def _check_report(self, reported, states):
        """What the fds' states say the poll must (not) report, given the masks."""
        got = dict(reported)
        assert len(got) == len(reported), "an fd reported twice: %r" % (reported,)
        for fd, kind, pending, full, hup in states:
            mask = self.model.masks.get(fd, 0)
            bits = got.pop(fd, 0)
            if not mask & (R | W):
                assert not bits, "fd %d reported with no events registered" % fd
                continue
            if hup:
                # A hang-up or error is reported whatever was asked (select: to readers).
                if mask & R or self.lut.backend != "select":
                    assert bits, "hung-up fd %d (mask %d) not reported" % (fd, mask)
                continue
            if mask & R:
                assert bool(bits & R) == (pending > 0), (
                    "fd %d (%s) readable=%s with %d bytes waiting" % (
                        fd, kind, bits & R, pending))
            if mask & W:
                writable = kind != "pipe_r" and not full
                assert bool(bits & W) == writable, (
                    "fd %d (%s) writable=%s, expected %s" % (fd, kind, bits & W, writable))
        assert not got, "unknown fds reported: %r" % (got,)

    def _call(self, proc, fd, mask):
        """fe->xfileProc(eventLoop, fd, fe->clientData, mask): client data read now."""
        m = self.model
        m.log.append(("file", proc, fd, m.cdata.get(fd), mask))
        self._run_ops_model(self.fscripts[proc], fd)

    def _dispatch(self, fd, raw):
        """One fd of ae.c's aeProcessEvents loop, L392-443; ``raw`` is fired[j].mask."""
        m = self.model
        fe_mask = m.masks.get(fd, 0)
        # D1: the mask the procs receive is the report ANDed with fe->mask at the fd's
        # dispatch (ae passes ``raw``). The SAME value goes to every proc of this fd in
        # this pass (L417, L425, L437 all pass ``mask``).
        mask = raw & fe_mask
        if self.model.procs == "one":
            if mask:                    # alone_proc: one call with everything that fired
                self._call(m.proc[fd], fd, mask)
            return
        invert = fe_mask & BARRIER      # L408: BARRIER read at the fd's dispatch
        fired = 0                       # L395: procs called for this fd
        called = None                   # D4: the proc called (the libraries' rule)
        # L416-420: the read proc first, unless inverted. "fe->mask & mask": re-read.
        if not invert and m.masks.get(fd, 0) & raw & R:
            called = m.rproc[fd]
            self._call(called, fd, mask)
            fired += 1
        # L423-428: the write proc, if still registered, and not the same proc again.
        if m.masks.get(fd, 0) & raw & W:
            if self._not_again(fd, fired, called, m.wproc[fd]):
                called = m.wproc[fd]
                self._call(called, fd, mask)
                fired += 1
        # L432-440: inverted: the read proc after the write proc.
        if invert and m.masks.get(fd, 0) & raw & R:
            if self._not_again(fd, fired, called, m.rproc[fd]):
                self._call(m.rproc[fd], fd, mask)

    def _not_again(self, fd, fired, called, proc):
        """L424/L435: ``!fired || fe->wfileProc != fe->rfileProc`` (ae); D4: the proc
        about to run is not the one already called in this pass."""
        m = self.model
        if self.model.same_proc_rule == "ae":
            return not fired or m.wproc.get(fd) != m.rproc.get(fd)
        return proc != called

    def _time_pass(self):
        """ae.c processTimeEvents, L261-322."""
        m = self.model
        if not m.timers:
            return 0
        now = self.clock.ms             # L268 (ae refreshes it after each proc, L315:
        #                                 with the fake clock it does not move)
        max_id = m.next_id - 1          # L267: timers created during the pass wait
        ran = set()                     # each timer at most once per pass (a list walk)
        processed = 0
        while True:
            # L273-275: deleted events are skipped (D3: already gone from the model).
            # L291-294: id > maxId skipped. L296: due when when <= now.
            # D2: (when, id) order; ae walks its list head first, newest first.
            due = sorted((t[0], tid) for tid, t in m.timers.items()
                         if t[0] <= now and tid <= max_id and tid not in ran)
            if not due:
                return processed
            tid = due[0][1]
            ran.add(tid)
            when, tproc, cdata, fin = m.timers[tid]
            m.log.append(("timer", tproc, tid, cdata))     # L300-302
            ops, ret = self.tscripts[tproc]
            self._run_ops_model(ops, None, tid)
            processed += 1              # L304
            if tid not in m.timers:
                continue                # deleted by a proc of the pass: finalizer ran
            if ret is None or ret == NOMORE:
                m.delete_time_event(tid)                   # L318-319 (None: library)
            else:
                m.timers[tid][0] = now + ret               # L316-317

    def _compare_logs(self):
        assert self.log == self.model.log, "calls differ:\n real  %r\n model %r" % (
            self.log, self.model.log)

    @invariant()
    def state_agrees(self):
        if not hasattr(self, "fscripts"):
            return                      # before draw_scripts
        for ch in self.channels:
            assert self.loop.get_file_events(ch.fd) == self.model.masks.get(ch.fd, 0), (
                "mask of fd %d" % ch.fd)
        assert self.lut.live_timers() == sorted(self.model.timers)


def _machine_class(cfg, monkeypatch, machine=ModelMachine):
    return type("Machine", (machine,), {"cfg": cfg, "clock": FakeClock(),
                                        "monkeypatch": monkeypatch})


def _skip_unsupported(cfg):
    probe = _factory(cfg[0])(cfg[1])
    if probe is None:
        pytest.skip("%s does not run on %s" % cfg)
    probe.close()


def run_model(cfg, monkeypatch, machine=ModelMachine, examples=None, steps=None):
    """Run the state machine for one configuration; raise on the first disagreement."""
    _skip_unsupported(cfg)
    factory = _machine_class(cfg, monkeypatch, machine)
    seed_env = os.environ.get("EVENTS_MODEL_SEED", "").strip()
    conf = settings(
        max_examples=examples or _env_int("EVENTS_MODEL_EXAMPLES", 16),
        stateful_step_count=steps or _env_int("EVENTS_MODEL_STEPS", 30),
        derandomize=not seed_env, database=None, deadline=None, print_blob=False,
        suppress_health_check=list(HealthCheck),
        # EVENTS_MODEL_SHRINK=0: report the first failing run as found (faster, longer).
        phases=[p for p in Phase
                if p is not Phase.shrink or _env_int("EVENTS_MODEL_SHRINK", 1)])
    # A failure is shrunk for at most EVENTS_MODEL_SHRINK_S seconds (hypothesis's own bound
    # is 5 minutes, and pytest-timeout cannot stop it: hypothesis catches the timeout as
    # one more failure to shrink).
    monkeypatch.setattr(hypothesis.internal.conjecture.engine, "MAX_SHRINKING_SECONDS",
                        _env_int("EVENTS_MODEL_SHRINK_S", 20), raising=False)
    test = get_state_machine_test(factory, settings=conf)
    if seed_env and seed_env != "random":
        test = hypothesis.seed(int(seed_env))(test)
    test()


# -- fixed scenarios: the cases the contract is about, on every configuration ---------------
# Each: file proc scripts, timer proc scripts, then the steps: ("register", channel, mask,
# proc), a world change (as in CHANGES), or ("pass", flags). Channels 0, 1: socketpairs;
# 2: a pipe's read end; 3: a pipe's write end. Every pass is replayed in the model.

SCENARIOS = {
    # Issue 24: both procs fire in one pass; the first deletes its own event and gives
    # the fd new client data; the second gets the new data and the pass's mask R|W.
    "two_procs_same_mask": (
        [[("del", "self", R), ("add", "self", W, 1)], [("del", "self", W)]], [],
        [("register", 0, R, 0), ("register", 0, W, 1), ("send", 0, 1),
         ("pass", FILE | DONT_WAIT)]),
    # BARRIER: the write proc first, then the read proc, both with R|W.
    "barrier_write_first": (
        [[("del", "self", R)], [("del", "self", W), ("add", "self", R, 0)]], [],
        [("register", 0, R, 0), ("register", 0, W | BARRIER, 1), ("send", 0, 1),
         ("pass", FILE | DONT_WAIT), ("pass", FILE | DONT_WAIT)]),
    # The first proc deletes the other event: the second does not run.
    "recheck_prevents": (
        [[("del", "self", W)], []], [],
        [("register", 0, R, 0), ("register", 0, W, 1), ("send", 0, 1),
         ("pass", FILE | DONT_WAIT)]),
    # One proc for both directions: called once.
    "same_proc_once": (
        [[("drain",)]], [],
        [("register", 0, R | W, 0), ("send", 0, 1), ("pass", FILE | DONT_WAIT)]),
    # A hung-up fd registered for reading: its read proc adds a write proc, which runs in
    # the same pass where the poll reported the hang-up as READABLE|WRITABLE (epoll, poll).
    "hangup_adds_writer": (
        [[("add", "self", W, 1)], [("del", "self", R | W)]], [],
        [("register", 0, R, 0), ("hang_up", 0), ("pass", FILE | DONT_WAIT)]),
    # A proc deletes a later fd of the pass (never called, still counted) and adds an
    # event, with new client data, to another.
    "other_fds": (
        [[("del", 1, R | W), ("add", 3, W, 2)], [], [("del", "self", W)]], [],
        [("register", 0, R, 0), ("register", 1, R | W, 1), ("register", 3, W, 1),
         ("send", 0, 1), ("send", 1, 1), ("pass", FILE | DONT_WAIT),
         ("pass", FILE | DONT_WAIT)]),
    # Timers: due ones in (when, id) order; one deletes itself and returns NOMORE (it
    # ends once: one finalizer, no second delete), one ends with NOMORE, one periodic creates a due timer that
    # waits for the next pass; a TIME pass without DONT_WAIT polls with the wait until it.
    "timers": (
        [], [([("timer", 0, 2, True)], 250), ([("deltimer", 1)], NOMORE), ([], NOMORE)],
        [("create_time_event", 125, 0, True), ("create_time_event", 0, 1, True),
         ("create_time_event", 0, 2, False), ("advance", 125),
         ("pass", TIME | DONT_WAIT), ("pass", TIME | DONT_WAIT), ("advance", 250),
         ("pass", TIME | DONT_WAIT), ("pass", TIME)]),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("cfg", configs(), ids=["%s-%s" % c for c in configs()])
def test_scenarios_follow_the_ae_model(cfg, scenario, monkeypatch):
    _skip_unsupported(cfg)
    fscripts, tscripts, steps = SCENARIOS[scenario]
    machine = _machine_class(cfg, monkeypatch)()
    try:
        machine.set_scripts(fscripts, tscripts)
        for step in steps:
            if step[0] == "register":
                machine.create_file_event(*step[1:])
            elif step[0] == "pass":
                time.sleep(0.002)       # socket data and hang-ups reach the peer
                machine.step([], step[1], False)
            else:
                machine._apply([step])
            machine.state_agrees()
        assert machine.log, "the scenario made no call"
    finally:
        machine.teardown()


@pytest.mark.parametrize("cfg", configs(), ids=["%s-%s" % c for c in configs()])
def test_variants_follow_the_ae_model(cfg, monkeypatch):
    run_model(cfg, monkeypatch)
