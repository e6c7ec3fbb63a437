"""Processes: finding the load client and the servers' interpreter, pinning them to
CPUs, turning signals into a clean stop, and stopping a child we started.

Interrupts.  Ctrl-C or SIGTERM must leave no process behind and lose no
completed run.  SIGTERM is turned into KeyboardInterrupt; while a child is being
*started* (between fork and the moment we hold its handle) the interrupt is
deferred, so there is never a child we could not stop.  On the way out the
current client and server are stopped by PID, the link's context manager
removes its namespaces, and the caller gets ``BatchInterrupted`` with the runs
that were kept.

Pinning.  With two or more CPUs the server runs on the first allowed CPU and
the client on the second, via ``taskset -c K`` placed after the link's prefix
(``ip netns exec`` and ``taskset`` both exec, so the PID we hold is the
server's and /proc/PID/stat is its CPU time).  Trade-off: on exactly two CPUs
the kernel's softirq work and everything else on the machine share those two
cores with us; that is the machine, and the environment record says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading

from harness import records
from harness import servers as srv

ROOT = records.ROOT


class RunnerError(Exception):
    """A clear, user-facing reason the batch cannot run (one line, no traceback)."""


def loadgen_path() -> str:
    # EVENTS_LOADGEN lets tests substitute a client that speaks the same protocol.
    return os.environ.get("EVENTS_LOADGEN") or os.path.join(srv.BUILD, "loadgen")


def check_loadgen() -> str:
    path = loadgen_path()
    if not os.access(path, os.X_OK):
        raise RunnerError(f"{os.path.relpath(path, ROOT)} is not built: run `make build` (needs gcc)")
    return path


def resolve_python(python: str | None) -> str | None:
    """The interpreter for Python servers, as an absolute path (None = the venv's).
    A pyenv shim that is on PATH but not enabled fails when run; then the
    matching ``~/.pyenv/versions/*/bin/NAME`` is used, and we say so."""
    if not python:
        return None
    candidates = []
    found = shutil.which(python) if os.sep not in python else (python if os.path.exists(python) else None)
    if found:
        candidates.append(found)
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    vdir = os.path.join(pyenv, "versions")
    if os.sep not in python and os.path.isdir(vdir):
        for v in sorted(os.listdir(vdir), reverse=True):
            p = os.path.join(vdir, v, "bin", python)
            if os.access(p, os.X_OK):
                candidates.append(p)
    for path in candidates:
        try:
            r = subprocess.run([path, "-c", "import sys; print(sys.executable)"],
                               capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0 and r.stdout.strip():
            if path != found:
                print(f"note: {python!r} on PATH does not run; using {path}", file=sys.stderr)
            return r.stdout.strip()
    if not candidates:
        raise RunnerError(f"Python interpreter {python!r} not found (give a name on PATH or a path)")
    raise RunnerError(f"Python interpreter {python!r} does not run (tried {', '.join(candidates)})")


def pinning(server_cores: float | None = None) -> tuple[list[str], list[str]]:
    """(server prefix, client prefix): ``taskset -c`` on two different CPUs when we may use two.
    A CPU budget above one core leaves the server unpinned (it may then use the cores
    it was given); the client keeps its own CPU."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []
    taskset = shutil.which("taskset")
    if len(cpus) < 2 or not taskset:
        return [], []
    server = [] if server_cores is not None and server_cores > 1 else [taskset, "-c", str(cpus[0])]
    return server, [taskset, "-c", str(cpus[1])]


def spread(workers: int, per_worker_cores: float | None, threads: bool = False,
           clients: int = 1) -> tuple:
    """Pinning for N event loops (issue 26): (one server prefix per worker, the client's
    prefix, what was done, for the record).

    The client keeps its CPU (the second allowed one, as ``pinning``; ``clients`` processes:
    the CPUs from the second on, as many as there are clients while one is left); the workers are
    spread round-robin over the other CPUs (threads mode: the process gets the set).  When
    the workers need more cores than those -- the budget's ceil(N x per-worker), or N
    cores with no budget -- they may use every CPU, the client's included, and the record
    says the server and the client shared cores."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []
    taskset = shutil.which("taskset")
    info: dict = {"cpus": len(cpus) or os.cpu_count(), "workers": workers, "server": [],
                  "client": [], "shared_cores": None}
    if len(cpus) < 2 or not taskset:
        return [[] for _ in range(workers)], [], info
    client_set = cpus[1:1 + max(1, min(clients, len(cpus) - 1))]
    own = [c for c in cpus if c not in client_set]
    need = workers if per_worker_cores is None else -(-workers * per_worker_cores // 1)
    pool = own if need <= len(own) else cpus
    sets = [[pool[i % len(pool)]] for i in range(workers)]
    if threads:
        sets = [pool[:max(1, min(len(pool), workers))]]
    ctext = ",".join(map(str, client_set))
    info.update(server=[",".join(map(str, s)) for s in sets], client=[ctext],
                shared_cores=any(c in s for s in sets for c in client_set))
    return [[taskset, "-c", t] for t in info["server"]], [taskset, "-c", ctext], info


# --------------------------------------------------------------------------- signals

class Signals:
    """SIGTERM -> KeyboardInterrupt for the batch; ``deferred()`` postpones an
    interrupt until a child we are starting is safely in our hands."""

    def __init__(self):
        self._old: dict = {}
        self._deferring = 0
        self._pending = False

    def _handler(self, signum, frame):
        if self._deferring:
            self._pending = True
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self           # signals can only be handled in the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @contextlib.contextmanager
    def deferred(self):
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._pending:
                self._pending = False
                raise KeyboardInterrupt("deferred signal")


def stop_pid(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop one child we started, by its PID: SIGTERM, then SIGKILL; always reaped."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        proc.wait()
