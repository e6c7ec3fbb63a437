"""More than one core: N event loops behind one port (issue 26), started as one server.

Design essay.  The study's only answer to "use more cores" was a thread pool behind one
loop (mul_thread), and it cannot pay.  Production servers use cores differently: N
independent event loops, each with its own listening socket bound to the same port
with SO_REUSEPORT (nginx workers, uvloop servers, Redis-style shards); the kernel
hashes each new connection's 4-tuple to one of the listeners, so the loops share
nothing and never hand a connection over.  A spec says how many: ``NAME:loops=N``
(the harness's ``--server-workers N``/``WORKERS=N`` adds it to every spec), and for
raw_epoll, the three variants, asyncio and uvloop ``loop_mode=threads`` puts the N loops
in threads of one process (meaningful on a free-threaded build; under the GIL they take
turns, and the record says so; the C servers and ``loop:``/``cmd:``/``literal`` specs have
no threads mode).  Because the count is part of the spec, ``X`` and ``X:loops=2`` are two rows
of any batch, paired round by round like any two servers.

How a worker group starts and stops (``start`` / ``Workers.stop``):

* procs: the first worker binds port 0 with ``--reuse-port`` and says its port in READY;
  the others bind that port, each a full server (its own accept loop, idle sweep,
  counters, STATS).  Each worker has its own pinning prefix (harness/procs.py spreads
  them over the cores) and all join ONE CPU-budget cgroup before they exec, so the
  budget is the group's, N x the per-worker budget (harness/cpubudget.py).  If any
  worker fails to start, those already started are stopped and the start fails.
* threads: one process, ``--loops N --loop-mode threads --reuse-port``, its loops run by
  harness/servers/loops.py (written once for every server with the mode: each loop its
  own listener, poller and counters, a bounded stop); its STATS is already the sum with
  each loop's counts under ``workers``.
* ``alive()`` is true only while every worker lives: a worker that dies fails the run
  (the load client is stopped early, as for a single server).
* ``stop()`` stops every worker (SIGTERM each once, STATS collected; SIGKILL after the
  timeout), and returns their STATS summed (counters.sum_stats): counts summed,
  ``workers`` listing each one's own counts and PID, so an idle worker is visible.
  The CPU time is the sum of the workers' /proc/PID/stat.

``start`` with ``loops=1`` is ``servers.start`` unchanged: a ServerProcess.
"""

from __future__ import annotations

import socket

from harness import servers as srv
from harness.servers import options as opts
from harness.servers.counters import sum_stats
from harness.servers.running import Running

PROCS, THREADS = "procs", "threads"


def loops_of(spec: srv.Spec) -> tuple[int, str]:
    """(number of event loops, mode) of a spec: (1, procs) unless it says ``loops=N``."""
    return int(spec.get(opts.LOOPS.name) or 1), str(spec.get(opts.LOOP_MODE.name) or PROCS)


def threads_capable() -> tuple[str, ...]:
    """The servers with a threads mode (those that declare ``loop_mode``)."""
    return tuple(name for name, s in srv.SERVERS.items() if opts.LOOP_MODE in s.options)


def check_reuse_port() -> None:
    """ServerError when this system cannot bind two listeners to one port (no SO_REUSEPORT
    in this Python, or the kernel refuses it)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise srv.ServerError("SO_REUSEPORT is not available in this Python/OS: more than one "
                              "worker per port cannot run here (WORKERS=1)")
    try:
        with socket.socket() as a, socket.socket() as b:
            for s in (a, b):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", a.getsockname()[1]))
    except OSError as e:
        raise srv.ServerError(f"SO_REUSEPORT does not work here ({e.strerror or e}): more than "
                              "one worker per port cannot run (WORKERS=1)") from None


def with_workers(spec: srv.Spec | str, n: int, mode: str = PROCS) -> srv.Spec:
    """``spec`` with ``loops=n`` (and ``loop_mode=threads``) unless it says its own;
    ServerError for a server that takes no such option (a command server; threads mode
    on a server without one)."""
    spec = srv.parse_spec(spec)
    items = []
    if n > 1 and spec.get(opts.LOOPS.name) is None:
        items.append(f"{opts.LOOPS.name}={n}")
    if mode == THREADS and spec.get(opts.LOOP_MODE.name) is None:
        if opts.LOOP_MODE.name not in srv.accepted_options(spec.server):
            raise srv.ServerError(f"WORKER_MODE=threads: {spec.name} has no threads mode (one "
                                  f"loop per thread: {', '.join(threads_capable())}); use "
                                  f"WORKER_MODE=procs")
        items.append(f"{opts.LOOP_MODE.name}={THREADS}")
    if items and opts.LOOPS.name not in srv.accepted_options(spec.server):
        raise srv.ServerError(f"{spec.text}: a command server cannot be started as N workers "
                              f"(WORKERS=1)")
    return srv.with_options(spec, items)


class Workers(Running):
    """N servers on one port, used as one ServerProcess (the runner's interface)."""

    def __init__(self, spec: srv.Spec, members: list, mode: str, n: int):
        self.spec, self.members, self.mode, self.n = spec, members, mode, n
        first = members[0]
        self.host, self.port, self.pid = first.host, first.port, first.pid
        self.argv = first.argv
        self.hash_seed = first.hash_seed
        self.ready = {**first.ready, "workers": n, "worker_mode": mode,
                      "pids": [m.pid for m in members]}
        self.stats: dict | None = None
        self.stderr_text = ""

    @property
    def proc(self):
        """The first worker that exited, else the first worker (its returncode)."""
        return next((m.proc for m in self.members if not m.alive()), self.members[0].proc)

    def pids(self) -> list[int]:
        return [m.pid for m in self.members]

    def alive(self) -> bool:
        return all(m.alive() for m in self.members)

    def cpu_seconds(self) -> float | None:
        times = [m.cpu_seconds() for m in self.members]
        return None if any(t is None for t in times) else sum(times)

    def stop(self, timeout: float = 10.0) -> dict | None:
        """Stop every worker (idempotent); their STATS summed, each one's under ``workers``."""
        lines = [m.stats if m.stats is not None else m.stop(timeout) for m in self.members]
        texts = [m.stderr_text for m in self.members]
        self.stderr_text = "".join(f"[worker {i} pid {m.pid}]\n{t}" if t.strip() else ""
                                   for i, (m, t) in enumerate(zip(self.members, texts)))
        if self.mode == THREADS:
            self.stats = lines[0]
            return self.stats
        got = [(m, s) for m, s in zip(self.members, lines) if s is not None]
        if not got:
            return None
        self.stats = sum_stats([s for _, s in got])
        for entry, (m, _) in zip(self.stats["workers"], got):
            entry["pid"] = m.pid
        missing = [m.pid for m, s in zip(self.members, lines) if s is None]
        if missing:
            self.stats["workers_without_stats"] = missing      # counts above miss them
        return self.stats


def start(spec: srv.Spec | str, *, host: str = "127.0.0.1", size: int = 100,
          idle_timeout: float | None = None, python: str | None = None,
          prefixes: list | None = None, ready_timeout: float = 15.0,
          cgroup_procs: str | None = None):
    """Start the spec's server as its ``loops`` workers (module docstring): a ServerProcess
    for one loop, else a Workers.  ``prefixes``: one command prefix per worker (pinning),
    the first used for every worker it does not cover.  ServerError if any cannot start
    (nothing is left running)."""
    spec = srv.parse_spec(spec)
    n, mode = loops_of(spec)
    prefixes = list(prefixes or [[]])
    kw: dict = dict(host=host, size=size, idle_timeout=idle_timeout, python=python,
              ready_timeout=ready_timeout, cgroup_procs=cgroup_procs)
    if n == 1:
        return srv.start(spec, port=0, prefix=prefixes[0], **kw)
    check_reuse_port()
    if mode == THREADS:
        one = srv.start(spec, port=0, prefix=prefixes[0],
                        extra=["--reuse-port", "--loops", str(n), "--loop-mode", THREADS], **kw)
        return Workers(spec, [one], THREADS, n)
    members: list = []
    try:
        for i in range(n):
            port = members[0].port if members else 0
            members.append(srv.start(spec, port=port, prefix=prefixes[i % len(prefixes)],
                                     extra=["--reuse-port"], **kw))
    except BaseException:
        for m in members:
            m.stop(timeout=5.0)
        raise
    return Workers(spec, members, PROCS, n)
