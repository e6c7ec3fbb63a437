"""A model-based test: every variant x poller against a small reference model of ae.

A hypothesis ``RuleBasedStateMachine`` drives one real loop with real fds (socketpairs
and both ends of a pipe: data sent and drained, buffers filled and drained, peers hung
up, channels reopened), registers random masks, and runs passes with random flags.
The procs it registers carry scripts drawn at the start: delete or add events of their
own fd or of another fd, drain their fd, create timers (periodic, NOMORE, with or
without a finalizer), delete any live timer (their own included). Time is a fake clock
the rules advance, so the timer semantics are exact; the wrapped poller never blocks
and records the timeout the loop asked for.

After each pass the model replays it from what the poller really reported (checked
first against what the fds' states say must or must not be reported) and compares:
the poll timeout, every call made (hooks, file procs with fd, client data and fired
mask, timer procs with id and client data, finalizers) in order, the return count, the
registered masks and the live timers. The model is the contract of docs/variants.md:
ae's aeProcessEvents/processTimeEvents, with the library's documented differences
(fired mask ANDed with the fd's mask, due timers in (when, id) order, finalizer run
when the event ends).

Configurations: master, alone_proc, mul_thread faithful with one worker (ae's pass,
one proc at a time in the poll's order), mul_thread oneshot with one worker (its
file and time passes are run separately: it overlaps them on purpose).

Budget: a fixed seed and a bounded number of examples in ``make test``. For a longer
random run set EVENTS_MODEL_EXAMPLES (examples per configuration, default 16),
EVENTS_MODEL_STEPS (steps per example, default 30) and EVENTS_MODEL_SEED (an int:
that seed instead of the fixed one; "random": a new seed each run, printed on failure).
"""

import importlib
import os
import select
import socket
import time
import types

import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, get_state_machine_test, initialize,
                                 invariant, rule)

from variants.common import backends

R, W, BARRIER, NOMORE = 1, 2, 4, -1
FILE, TIME, DONT_WAIT, BEFORE, AFTER = 1, 2, 4, 8, 16

MODEL_VARIANTS = ("master", "alone_proc", "mul_thread", "mul_thread_oneshot")
CONFIGS = [(v, b) for v in MODEL_VARIANTS for b in backends.available()]
MODULES = ("variants.common.timers", "variants.master.events",
           "variants.alone_proc.events", "variants.mul_thread.events")

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


# -- the reference model ----------------------------------------------------------------

class Model:
    """ae's contract on plain data. Keys: fds (the real numbers), timer ids."""

    def __init__(self, kind, oneshot):
        self.kind = kind                # "two" (read + write proc) or "one" (alone_proc)
        self.oneshot = oneshot
        self.masks = {}                 # fd -> mask
        self.rproc = {}                 # fd -> proc name ("two")
        self.wproc = {}
        self.proc = {}                  # fd -> proc name ("one")
        self.cdata = {}
        self.timers = {}                # id -> [when_ms, tproc name, cdata, finalizer]
        self.next_id = 0
        self.log = []

    # API, as the loop documents it
    def create_file_event(self, fd, mask, proc, cdata):
        self.masks[fd] = self.masks.get(fd, 0) | mask
        if self.kind == "one":
            self.proc[fd] = proc
        else:
            if mask & R:
                self.rproc[fd] = proc
            if mask & W:
                self.wproc[fd] = proc
        self.cdata[fd] = cdata

    def delete_file_event(self, fd, mask):
        old = self.masks.get(fd, 0)
        if not old:
            return
        if mask & W:
            mask |= BARRIER
        new = old & ~mask
        if not new & (R | W):
            new = 0
        self.masks[fd] = new
        if self.kind == "two":
            if not new & R:
                self.rproc.pop(fd, None)
            if not new & W:
                self.wproc.pop(fd, None)
        elif not new:
            self.proc.pop(fd, None)
        if not new:
            self.cdata.pop(fd, None)

    def create_time_event(self, now, ms, tproc, cdata, fin):
        tid = self.next_id
        self.next_id += 1
        self.timers[tid] = [now + ms, tproc, cdata, fin]
        return tid

    def delete_time_event(self, tid):
        when, tproc, cdata, fin = self.timers.pop(tid)
        if fin:
            self.log.append(("fin", cdata))

    def nfds(self):
        return sum(1 for m in self.masks.values() if m)


class ModelMachine(RuleBasedStateMachine):
    """Set up by ``configure`` before hypothesis creates instances (see run_model)."""

    cfg = None
    clock = None

    def __init__(self):
        super().__init__()
        variant, backend = self.cfg
        self.variant = variant
        self.oneshot = variant == "mul_thread_oneshot"
        pkg = importlib.import_module("variants." + variant.replace("_oneshot", ""))
        kw = {}
        if variant.startswith("mul_thread"):
            kw = dict(workers=1, pool="oneshot" if self.oneshot else "faithful")
        self.loop = pkg.EventLoop(backend=backend, **kw)
        self.clock.ms = 0
        self.channels = [Channel(kind) for kind in KINDS]
        self.kind = "one" if variant == "alone_proc" else "two"
        self.model = Model(self.kind, self.oneshot)
        self.log = []                   # what really happened
        self.polls = []                 # (timeout, reported) of each real poll
        self.real_counter = 0           # cdata labels of timers created by the real side
        self.model_counter = 0
        # The loop's calls reach the kernel through ``loop._kernel`` (the select.epoll
        # itself for epoll, which cannot be patched): put a stand-in in its place.
        kernel = self.loop._kernel
        real_poll = kernel.poll
        wake = getattr(self.loop, "_wake_r", -1)

        def poll(timeout):
            events = real_poll(0)       # the fake clock: never block
            # What the fds' states were at the poll (procs of the pass may change them).
            states = [(ch.fd, ch.kind, ch.pending, ch.full, ch.hup) for ch in self.channels]
            self.polls.append((timeout, [(fd, n) for fd, n in events if fd != wake], states))
            return events

        self.loop._kernel = types.SimpleNamespace(
            register=kernel.register, modify=kernel.modify, unregister=kernel.unregister,
            poll=poll)

    def teardown(self):
        self.loop.close()
        for ch in self.channels:
            ch.close()

    # -- scripts: drawn once per example, shared by the real procs and the model ----

    def draw_scripts(self, data):
        target = st.sampled_from(["self", 0, 1, 2, 3])
        masks = st.sampled_from([R, W, R | W, W | BARRIER, R | W | BARRIER])
        op = st.one_of(
            st.tuples(st.just("del"), target, masks),
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
            st.tuples(st.just("deltimer"), st.integers(0, 3)))
        self.fscripts = [data.draw(ops) for _ in range(N_FILE_PROCS)]
        self.tscripts = [(data.draw(st.lists(timer_op, max_size=3)), data.draw(
            st.sampled_from([NOMORE, None, 0, 125, 250]))) for _ in range(N_TIMER_PROCS)]
        self.hscript = data.draw(ops)
        self.fprocs = [self._file_proc(i) for i in range(N_FILE_PROCS)]
        self.tprocs = [self._timer_proc(i) for i in range(N_TIMER_PROCS)]

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
            self._run_ops_real(ops, None)
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

    def _run_ops_real(self, ops, fd):
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
                live = sorted(loop._timers.live)
                if live:
                    loop.delete_time_event(live[op[1] % len(live)])
            elif op[0] == "timer" and len(loop._timers.live) < MAX_TIMERS:
                self.real_counter += 1
                loop.create_time_event(op[1], self.tprocs[op[2]], "t%d" % self.real_counter,
                                       self._fin if op[3] else None)

    def _run_ops_model(self, ops, fd):
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
        # Every channel starts registered (most often for both directions) so that
        # passes report several fds from the first step on.
        for ch in range(len(self.channels)):
            mask = data.draw(st.sampled_from([R | W, R | W, R | W | BARRIER, R, W]))
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
        self._settle()
        expected_n = self._replay(flags)
        assert n == expected_n, "process_events returned %d, ae's count is %d" % (
            n, expected_n)
        self._compare_logs()

    def _settle(self):
        if not self.oneshot:
            return
        deadline = time.monotonic() + 5
        while any(self.loop._busy):
            assert time.monotonic() < deadline, "oneshot worker did not finish"
            time.sleep(0.0005)
        for lock in {id(lk): lk for lk in self.loop._fd_locks}.values():
            with lock:                  # the worker's re-arm is done under this lock
                pass

    def _replay(self, flags):
        m = self.model
        processed = 0
        polls = bool(m.nfds() or self.oneshot or (flags & TIME and not flags & DONT_WAIT))
        if polls:
            if flags & BEFORE and self.hooks_on:
                m.log.append(("before",))
                self._run_ops_model(self.hscript, None)
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
            reported = [(fd, self._to_ae(native)) for fd, native in reported]
            self._check_report(reported, states)
            if flags & AFTER and self.hooks_on:
                m.log.append(("after",))
            if reported and flags & FILE:
                processed = len(reported)
                self._dispatch(reported)
        else:
            assert self.polls == [], "no poll expected"
        if flags & TIME and m.timers:
            processed += self._time_pass()
        return processed

    def _to_ae(self, native):
        """The poller's report in ae's bits, written here independently of backends/."""
        backend = self.loop.backend
        if backend == "select":
            return native
        if backend == "epoll":
            rd, wr, err = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
        else:
            rd, wr, err = select.POLLIN, select.POLLOUT, select.POLLERR | select.POLLHUP
        mask = (R if native & rd else 0) | (W if native & wr else 0)
        return mask | (R | W if native & err else 0)

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
                if mask & R or self.loop.backend != "select":
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

    def _call(self, proc, fd, fired):
        m = self.model
        m.log.append(("file", proc, fd, m.cdata.get(fd), fired))
        self._run_ops_model(self.fscripts[proc], fd)

    def _dispatch(self, reported):
        """ae's aeProcessEvents inner loop (fired mask: the report ANDed with the mask)."""
        m = self.model
        for fd, rep in reported:
            mask = m.masks.get(fd, 0)
            fired = rep & mask
            if not fired:
                continue
            if self.kind == "one":
                self._call(m.proc[fd], fd, fired)
                continue
            invert = mask & BARRIER
            called = None
            if not invert and fired & R:
                called = m.rproc[fd]
                self._call(called, fd, fired)
                fired = rep & m.masks.get(fd, 0)
            if fired & W and m.wproc[fd] != called:
                called = m.wproc[fd]
                self._call(called, fd, fired)
                fired = rep & m.masks.get(fd, 0)
            if invert and fired & R and m.rproc[fd] != called:
                self._call(m.rproc[fd], fd, fired)

    def _time_pass(self):
        """ae's processTimeEvents: the timers due now that existed when it started (a
        timer created by a time proc waits for a later pass), in (when, id) order."""
        m = self.model
        now = self.clock.ms
        max_id = m.next_id - 1
        ran = set()
        processed = 0
        while True:
            due = sorted((t[0], tid) for tid, t in m.timers.items()
                         if t[0] <= now and tid <= max_id and tid not in ran)
            if not due:
                return processed
            tid = due[0][1]
            ran.add(tid)
            when, tproc, cdata, fin = m.timers[tid]
            m.log.append(("timer", tproc, tid, cdata))
            ops, ret = self.tscripts[tproc]
            self._run_ops_model(ops, None)
            processed += 1
            if tid not in m.timers:
                continue                # deleted by its own proc: finalizer ran
            if ret is None or ret == NOMORE:
                m.delete_time_event(tid)
            else:
                m.timers[tid][0] = now + ret

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
        assert sorted(self.loop._timers.live) == sorted(self.model.timers)


def run_model(cfg, monkeypatch, machine=ModelMachine, examples=None, steps=None):
    """Run the state machine for one configuration; raise on the first disagreement."""
    clock = FakeClock()
    for name in MODULES:
        monkeypatch.setattr(importlib.import_module(name), "monotonic", clock)
    factory = type("Machine", (machine,), {"cfg": cfg, "clock": clock})
    seed_env = os.environ.get("EVENTS_MODEL_SEED", "").strip()
    conf = settings(
        max_examples=examples or _env_int("EVENTS_MODEL_EXAMPLES", 16),
        stateful_step_count=steps or _env_int("EVENTS_MODEL_STEPS", 30),
        derandomize=not seed_env, database=None, deadline=None, print_blob=False,
        suppress_health_check=list(HealthCheck),
        # EVENTS_MODEL_SHRINK=0: report the first failing run as found (faster, longer).
        phases=[p for p in Phase
                if p is not Phase.shrink or _env_int("EVENTS_MODEL_SHRINK", 1)])
    test = get_state_machine_test(factory, settings=conf)
    if seed_env and seed_env != "random":
        test = hypothesis.seed(int(seed_env))(test)
    test()


@pytest.mark.parametrize("cfg", CONFIGS, ids=["%s-%s" % c for c in CONFIGS])
def test_variants_follow_the_ae_model(cfg, monkeypatch):
    run_model(cfg, monkeypatch)
