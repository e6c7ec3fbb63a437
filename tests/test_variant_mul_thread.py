"""mul_thread's own behaviour: the faithful batch pool and the oneshot pool."""

import socket
import threading
import time

import pytest

from variants.common import backends
from variants.mul_thread import (ALL_EVENTS, DONT_WAIT, NOMORE, READABLE, WRITABLE,
                                 EventLoop)
from test_conformance import pump, settle

NOW = ALL_EVENTS | DONT_WAIT
BACKENDS = backends.available()


def pairs(n):
    out = []
    for _ in range(n):
        a, b = socket.socketpair()
        a.setblocking(False)
        out.append((a, b))
    return out


def close_all(ps):
    for a, b in ps:
        a.close()
        b.close()


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown pool 'nope'.*faithful, oneshot"):
        EventLoop(pool="nope")
    with pytest.raises(ValueError, match="workers"):
        EventLoop(workers=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_faithful_procs_run_on_workers_and_the_batch_completes(backend):
    ps = pairs(6)
    done, threads = [], set()
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(lp, fd, sock, mask):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threads.add(threading.current_thread().name)
        sock.recv(9)
        time.sleep(0.05)
        lp.delete_file_event(fd, READABLE)     # a loop method, from a worker
        with lock:
            active[0] -= 1
        done.append(fd)

    try:
        with EventLoop(backend=backend, workers=3) as loop:
            for a, b in ps:
                loop.create_file_event(a.fileno(), READABLE, slow, a)
                b.send(b"x")
            time.sleep(0.01)
            n = loop.process_events(NOW)
            # process_events returned only after the whole batch had finished.
            assert n == len(ps) and len(done) == len(ps)
            assert threading.current_thread().name not in threads
            assert all(name.startswith("events-worker") for name in threads)
            assert 1 < peak[0] <= 3
    finally:
        close_all(ps)


def test_faithful_time_events_run_on_the_loop_thread():
    where = []
    with EventLoop() as loop:
        loop.create_time_event(0, lambda lp, id, d: (where.append(threading.current_thread()),
                                                     NOMORE)[1])
        pump(loop, lambda: where, flags=ALL_EVENTS)
    assert where == [threading.current_thread()]


@pytest.mark.parametrize("pool", ["faithful", "oneshot"])
def test_lock_acquisitions_are_counted(pool):
    (a, b), = ps = pairs(1)
    try:
        with EventLoop(pool=pool, count_locks=True) as loop:
            loop.create_file_event(a.fileno(), READABLE,
                                   lambda lp, fd, d, m: (a.recv(9), d.append(1)), [])
            before = loop.lock_acquisitions
            b.send(b"x")
            pump(loop, lambda: loop._cdata[a.fileno()])
            # per fired fd: the locked read of its state (oneshot: + the re-arm)
            assert loop.lock_acquisitions - before >= 1
        with EventLoop(pool=pool) as loop:
            assert loop.lock_acquisitions == 0            # counting is opt-in
    finally:
        close_all(ps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_oneshot_loop_thread_does_not_wait_for_the_batch(backend):
    (a, b), = ps = pairs(1)
    release = threading.Event()
    done = []

    def slow(lp, fd, d, mask):
        a.recv(9)
        release.wait(5)
        done.append(1)

    try:
        with EventLoop(backend=backend, pool="oneshot") as loop:
            loop.create_file_event(a.fileno(), READABLE, slow)
            b.send(b"x")
            start = time.monotonic()
            while not loop._busy[a.fileno()] and time.monotonic() - start < 2:
                loop.process_events(NOW)            # until handed to a worker
            assert loop._busy[a.fileno()]
            loop.process_events(NOW)                # returns while the worker still runs
            assert time.monotonic() - start < 2 and not done
            release.set()
            settle(loop)
            assert done == [1]
    finally:
        release.set()
        close_all(ps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_oneshot_never_runs_one_fd_on_two_workers(backend):
    (a, b), = ps = pairs(1)
    running, overlap, calls = [0], [], []

    def proc(lp, fd, d, mask):
        running[0] += 1
        if running[0] > 1:
            overlap.append(1)
        try:
            a.recv(1)               # one byte per call: the fd stays readable
        except BlockingIOError:
            pass
        time.sleep(0.002)
        calls.append(1)
        running[0] -= 1

    try:
        with EventLoop(backend=backend, pool="oneshot", workers=4) as loop:
            loop.create_file_event(a.fileno(), READABLE, proc)
            b.send(b"x" * 20)
            pump(loop, lambda: len(calls) >= 20, timeout=10)
            assert not overlap
    finally:
        close_all(ps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_oneshot_serves_many_fds(backend):
    n = 200 if backend != "select" else 100
    ps = pairs(n)
    answered = []

    def echo(lp, fd, sock, mask):
        data = sock.recv(100)
        if data:
            sock.send(data.upper())
        lp.delete_file_event(fd, READABLE)
        answered.append(fd)

    try:
        with EventLoop(backend=backend, pool="oneshot", workers=4) as loop:
            for a, b in ps:
                loop.create_file_event(a.fileno(), READABLE, echo, a)
            for i, (a, b) in enumerate(ps):
                b.send(b"msg%d" % i)
            pump(loop, lambda: len(answered) == n, timeout=20)
            for i, (a, b) in enumerate(ps):
                b.settimeout(5)
                assert b.recv(100) == b"MSG%d" % i
            assert sorted(answered) == sorted(a.fileno() for a, _ in ps)
    finally:
        close_all(ps)


def test_oneshot_proc_can_switch_its_fd_to_writable():
    (a, b), = ps = pairs(1)
    seen = []

    def on_read(lp, fd, d, mask):
        seen.append(("r", a.recv(9)))
        lp.delete_file_event(fd, READABLE)          # while the fd is busy (disarmed)
        lp.create_file_event(fd, WRITABLE, on_write)

    def on_write(lp, fd, d, mask):
        seen.append("w")
        lp.delete_file_event(fd, WRITABLE)

    try:
        with EventLoop(pool="oneshot") as loop:
            loop.create_file_event(a.fileno(), READABLE, on_read)
            b.send(b"hi")
            pump(loop, lambda: "w" in seen)
            assert seen == [("r", b"hi"), "w"]
    finally:
        close_all(ps)


def test_oneshot_worker_exception_reaches_the_loop_thread():
    (a, b), = ps = pairs(1)

    def bad(lp, fd, d, mask):
        a.recv(9)
        raise KeyError("from a worker")

    try:
        with EventLoop(pool="oneshot") as loop:
            loop.create_file_event(a.fileno(), READABLE, bad)
            b.send(b"x")
            with pytest.raises(KeyError, match="from a worker"):
                pump(loop, lambda: False, flags=ALL_EVENTS)
            errors = []
            loop.set_error_handler(lambda lp, exc: errors.append(threading.current_thread()))
            b.send(b"y")
            pump(loop, lambda: errors)
            assert errors[0] is not threading.current_thread()   # called on the worker
    finally:
        close_all(ps)


def test_oneshot_stop_and_timers_from_a_worker_wake_the_loop():
    (a, b), = ps = pairs(1)

    def on_read(lp, fd, d, mask):
        a.recv(9)
        # The loop is asleep with no timer; this one must wake it, and its proc stops.
        lp.create_time_event(10, lambda lp2, id, d2: (lp2.stop(), NOMORE)[1])

    try:
        with EventLoop(pool="oneshot") as loop:
            loop.create_file_event(a.fileno(), READABLE, on_read)
            threading.Timer(0.05, b.send, (b"x",)).start()
            start = time.monotonic()
            loop.main()
            assert time.monotonic() - start < 5
    finally:
        close_all(ps)


def test_oneshot_stop_from_another_thread_ends_main():
    with EventLoop(pool="oneshot") as loop:
        threading.Timer(0.05, loop.stop).start()
        start = time.monotonic()
        loop.main()
        assert time.monotonic() - start < 5


@pytest.mark.parametrize("pool", ["faithful", "oneshot"])
def test_close_stops_the_workers(pool):
    loop = EventLoop(pool=pool, workers=3)
    (a, b), = ps = pairs(1)
    try:
        loop.create_file_event(a.fileno(), READABLE, lambda lp, fd, d, m: a.recv(9))
        b.send(b"x")
        pump(loop, lambda: True)
        loop.process_events(NOW)
        settle(loop)
        before = {t for t in threading.enumerate() if t.name.startswith("events-worker")}
        loop.close()
        time.sleep(0.05)
        assert not any(t.is_alive() for t in before)
    finally:
        close_all(ps)
