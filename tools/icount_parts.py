"""The library's hot calls counted apart, in user-space instructions (callgrind).

    .venv/bin/python tools/icount_parts.py alone_proc master     (or: make icount-parts)

tools/icount.py counts a whole server per connection; this tool splits what an Events
loop adds on top of raw epoll into its two parts, each against the same work done the
raw way:

- **fd lifecycle**: what a connection costs the event API: ``create_file_event(fd,
  READABLE)``, ``create_file_event(fd, WRITABLE)``, ``delete_file_event(fd, READABLE |
  WRITABLE)`` on one end of a socketpair, against ``register``, ``modify``, ``unregister``
  called on a ``select.epoll`` directly, and against the same three C calls made through
  three Python methods (what the calls' frames alone cost), and against the floor: the
  same methods keeping three lists and nothing else (``_Bare``);
- **pass**: one pass of ``main()`` that finds one (then ten) ready fds and has one timer
  far in the future (the idle sweep of a benchmark server), against one pass of
  raw_epoll's loop (harness/servers/raw_epoll.py: poll with the sweep's timeout, find
  the connection by fd, call its transition, read the clock).  Both call the same
  counting proc; the difference between the two rows is the cost of nine more events.

Method: each workload runs under callgrind twice, N1 and N2 times; (Ir(N2) - Ir(N1)) /
(N2 - N1) is one iteration, start-up cancelled.  PYTHONHASHSEED=0.  Counts repeat to a
few instructions; they are counts, never timings (docs/performance.md, "The last
percent", has the figures and what they explain).  Each variant's counts, with the shared
raw-epoll rows, the method and the environment, are recorded in
results/icount/parts_VARIANT[@pythonX.Y].json.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("master", "alone_proc", "mul_thread")
READABLE, WRITABLE = 1, 2
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
FAR_MS = 10 ** 7                        # a timer that never falls due during the count


# --------------------------------------------------------------------------- workloads
# Each runs its part n times.  They are run in a child process (see child()).

def _proc(loop, fd, data, mask):
    pass


def raw_calls(n: int, variant: str) -> None:
    a, _b = socket.socketpair()
    fd = a.fileno()
    ep = select.epoll()
    for _ in range(n):
        ep.register(fd, EPOLLIN)
        ep.modify(fd, EPOLLOUT)
        ep.unregister(fd)


class _Wrappers:
    """Three Python methods around the same C calls: the frames' cost, no bookkeeping."""

    def __init__(self):
        self.ep = select.epoll()

    def create_file_event(self, fd, native, proc, data=None):
        self.ep.register(fd, native)

    def modify_file_event(self, fd, native, proc, data=None):
        self.ep.modify(fd, native)

    def delete_file_event(self, fd, mask):
        self.ep.unregister(fd)


def wrapped_calls(n: int, variant: str) -> None:
    w = _Wrappers()
    _lifecycle(n, w.create_file_event, w.modify_file_event, w.delete_file_event,
               EPOLLIN, EPOLLOUT)


def _lifecycle(n: int, create, switch, delete, read_mask=READABLE, write_mask=WRITABLE) -> None:
    """A connection's fd calls, n times: watch for readable, switch to writable, delete."""
    a, _b = socket.socketpair()
    fd = a.fileno()
    conn = object()
    for _ in range(n):
        create(fd, read_mask, _proc, conn)
        switch(fd, write_mask, _proc, conn)
        delete(fd, READABLE | WRITABLE)


class _Bare:
    """The floor: three lists and the kernel call, none of a library's checks (no range
    check, no fd count, no BARRIER, no kernel-mask tests).  Not a usable library: the
    cheapest bookkeeping an ae-style API can have, for comparison."""

    def __init__(self):
        self.ep = select.epoll()
        self.masks = [0] * (1 << 16)
        self.procs = [None] * (1 << 16)
        self.cdata = [None] * (1 << 16)
        self.to_native = (0, EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLOUT)

    def create_file_event(self, fd, mask, proc, data=None):
        masks = self.masks
        old = masks[fd]
        new = old | mask
        if old:
            self.ep.modify(fd, self.to_native[new])
        else:
            self.ep.register(fd, self.to_native[new])
        masks[fd] = new
        self.procs[fd] = proc
        self.cdata[fd] = data

    def delete_file_event(self, fd, mask):
        self.ep.unregister(fd)
        self.masks[fd] = 0
        self.procs[fd] = None
        self.cdata[fd] = None


def bare_calls(n: int, variant: str) -> None:
    loop = _Bare()
    _lifecycle(n, loop.create_file_event, loop.create_file_event, loop.delete_file_event)


def _loop(variant: str):
    return importlib.import_module("variants." + variant).EventLoop(setsize=1 << 16)


def loop_calls(n: int, variant: str) -> None:
    loop = _loop(variant)
    _lifecycle(n, loop.create_file_event, loop.create_file_event, loop.delete_file_event)


def _ready(k: int) -> list:
    """k socket pairs whose first ends stay readable (the byte is never read)."""
    pairs = [socket.socketpair() for _ in range(k)]
    for _a, b in pairs:
        b.send(b"x")
    return pairs


def raw_pass(n: int, variant: str, ready: int = 1) -> None:
    pairs = _ready(ready)
    ep = select.epoll()
    for a, _b in pairs:
        ep.register(a.fileno(), EPOLLIN)
    from harness.servers.common import READING, Conn
    conns = {}
    for a, _b in pairs:
        conns[a.fileno()] = conn = Conn(a, a.fileno(), 0)
        conn.watched = READING
    left = [n * ready]

    def on_readable(loop, fd, conn, mask):
        left[0] -= 1

    # raw_epoll.run's pass, with its idle-sweep clock.
    poll, monotonic, lfd = ep.poll, time.monotonic, -1
    interval = FAR_MS / 1000
    next_sweep = monotonic() + interval
    timeout = interval
    while left[0] > 0:
        for fd, _ev in poll(timeout):
            if fd == lfd:
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            if conn.watched == READING:
                on_readable(None, fd, conn, READABLE)
            else:
                on_readable(None, fd, conn, WRITABLE)
        now = monotonic()
        if now >= next_sweep:
            next_sweep = now + interval
        timeout = next_sweep - now


def loop_pass(n: int, variant: str, ready: int = 1) -> None:
    pairs = _ready(ready)
    loop = _loop(variant)
    left = [n * ready]

    def on_readable(lp, fd, conn, mask):
        left[0] -= 1
        if not left[0]:
            lp.stop()

    for a, _b in pairs:
        loop.create_file_event(a.fileno(), READABLE, on_readable, a)
    loop.create_time_event(FAR_MS, lambda lp, id, data: FAR_MS)
    loop.main()


def empty(n: int, variant: str) -> None:
    for _ in range(n):
        pass


def raw_pass10(n: int, variant: str) -> None:
    raw_pass(n, variant, 10)


def loop_pass10(n: int, variant: str) -> None:
    loop_pass(n, variant, 10)


WORKLOADS = {f.__name__: f for f in (raw_calls, wrapped_calls, bare_calls, loop_calls, raw_pass,
                                     loop_pass, raw_pass10, loop_pass10, empty)}


def child(name: str, n: int, variant: str) -> None:
    sys.path.insert(0, ROOT)
    WORKLOADS[name](n, variant)


# --------------------------------------------------------------------------- counting

def count(name: str, n: int, variant: str, python: str) -> int:
    icount = _icount()                           # the same callgrind run as tools/icount.py
    with tempfile.TemporaryDirectory(prefix="events-parts-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        r = subprocess.run(icount.callgrind(out) + [python, os.path.abspath(__file__), "--child", name,
                                             str(n), variant],
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONHASHSEED": "0"})
        if r.returncode != 0:
            raise RuntimeError(f"{name} ({variant}) failed: {r.stderr.strip()[-300:]}")
        return icount.total(out, name)


def per_iteration(name: str, variant: str, python: str, n1: int, n2: int) -> float:
    return (count(name, n2, variant, python) - count(name, n1, variant, python)) / (n2 - n1)


def _icount():
    """tools/icount.py, beside this file (imported on use: the children stay lean)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import icount
    return icount


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/icount_parts.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", default=["alone_proc", "master"], metavar="VARIANT",
                    help=f"one or more of {', '.join(VARIANTS)} (default: alone_proc master)")
    ap.add_argument("--n1", type=int, default=2000, help="iterations of the short run")
    ap.add_argument("--n2", type=int, default=12000, help="iterations of the long run")
    ap.add_argument("--python", help="the interpreter to count (default: this one)")
    ap.add_argument("--results-dir", help="where results/icount/parts_VARIANT.json goes "
                    "(default: results)")
    ap.add_argument("--child", nargs=3, metavar=("WORKLOAD", "N", "VARIANT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child[0], int(a.child[1]), a.child[2])
        return 0
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variant {unknown[0]!r}: use {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if not 0 < a.n1 < a.n2:
        print("error: need 0 < --n1 < --n2", file=sys.stderr)
        return 2
    if shutil.which("valgrind") is None:
        print("error: valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    python = a.python or sys.executable

    def it(name: str, variant: str = "master") -> float:
        return per_iteration(name, variant, python, a.n1, a.n2)

    try:
        base = it("empty")                              # the for loop itself
        shared = {"raw_calls": it("raw_calls") - base, "wrapped_calls": it("wrapped_calls") - base,
                  "bare_calls": it("bare_calls") - base,
                  "raw_pass": it("raw_pass"), "raw_pass10": it("raw_pass10")}
        print(f"instructions per iteration (callgrind, user space; {a.n1} and {a.n2} iterations)")
        print(f"{'fd lifecycle: epoll register + modify + unregister, direct':<64} "
              f"{shared['raw_calls']:>8,.0f}")
        print(f"{'  the same three calls through three Python methods':<64} "
              f"{shared['wrapped_calls']:>8,.0f}")
        print(f"{'  the floor: those methods with bare bookkeeping (three lists)':<64} "
              f"{shared['bare_calls']:>8,.0f}")
        own: dict[str, dict[str, float]] = {}
        for v in a.variants:
            own[v] = {"loop_calls": it("loop_calls", v) - base}
            if v != "mul_thread":           # it hands fds to threads: icount.py counts it whole
                own[v].update(loop_pass=it("loop_pass", v), loop_pass10=it("loop_pass10", v))
            print(f"{f'  {v}: create R + create W + delete':<64} {own[v]['loop_calls']:>8,.0f}"
                  f"   (+{own[v]['loop_calls'] - shared['raw_calls']:,.0f} on the direct calls)",
                  flush=True)
        for suffix, what in (("", "one ready fd"), ("10", "ten ready fds")):
            raw_p = shared["raw_pass" + suffix]
            print(f"{f'pass with {what}: raw_epoll loop':<64} {raw_p:>8,.0f}")
            for v in a.variants:
                p = own[v].get("loop_pass" + suffix)
                if p is None:
                    print(f"{f'  {v}: main() pass':<64} {'n/a':>8}   (it hands fds to threads; "
                          "tools/icount.py counts it whole)")
                else:
                    print(f"{f'  {v}: main() pass':<64} {p:>8,.0f}   ({p - raw_p:+,.0f})")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    method = {"tool": "tools/icount_parts.py", "n1": a.n1, "n2": a.n2, "pythonhashseed": "0",
              "empty_loop": round(base)}
    for v in a.variants:
        rows = {k: round(x) for k, x in {**shared, **own[v]}.items()}
        path = _icount().record("icount_parts", "parts_" + v, rows, method, a.python,
                                a.results_dir)
        print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
