"""The server table: every echo server the harness can run, by name.

A benchmark is a *spec*, ``NAME[:key=value,...]`` (``master:poll_delay=0.1``,
``mul_thread:pool=oneshot``, ``raw_epoll:diet``): a server from the table plus
configuration.  A new server is one entry in ``SERVERS``; a variant of a
benchmark is a spec, never a copied script (the vmbench/pyperformance rule).

``start()`` launches a server and waits for its READY line; ``ServerProcess.stop()``
sends SIGTERM and collects its STATS line.  The runner, the tests and the
profiler all launch servers through here, so every server is started the same way.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")


class ServerError(Exception):
    """A clear, user-facing error about a server (unknown name, failed start...)."""


@dataclass(frozen=True)
class Server:
    name: str
    kind: str                 # "python" or "c"
    target: str               # python module or path of the binary under build/
    doc: str
    options: tuple = ()       # spec keys this server accepts beyond the common ones
    variant: bool = False     # one of the three Events libraries
    requires: tuple = ()      # python modules that must import (e.g. uvloop)


# Options every server accepts through a spec.  Flag-only keys take no value.
COMMON_OPTIONS = ("idle_timeout", "backlog", "diet")
FLAG_OPTIONS = ("diet", "no_cork")

# no_cork: the diet without TCP_CORK, to measure its share (EchoCore servers only).
_VARIANT_OPTS = ("backend", "no_cork")

SERVERS: dict[str, Server] = {s.name: s for s in (
    Server("raw_epoll", "python", "harness.servers.raw_epoll",
           "Python select.epoll, no library: the classic register/modify/unregister pattern",
           options=("no_cork",)),
    Server("master", "python", "harness.servers.master",
           "Events master: ae structure, read proc + write proc per fd",
           options=_VARIANT_OPTS + ("poll_delay",), variant=True),
    Server("mul_thread", "python", "harness.servers.mul_thread",
           "Events mul_thread: fired file events run on a thread pool",
           options=_VARIANT_OPTS + ("workers", "pool"), variant=True),
    Server("alone_proc", "python", "harness.servers.alone_proc",
           "Events alone_proc: one unified proc per fd",
           options=_VARIANT_OPTS, variant=True),
    Server("asyncio", "python", "harness.servers.asyncio_server",
           "asyncio Protocol on the default event loop"),
    Server("uvloop", "python", "harness.servers.uvloop_server",
           "asyncio Protocol on uvloop", requires=("uvloop",)),
    Server("c_epoll", "c", "c_epoll",
           "single-threaded C epoll echo server: the ceiling on this machine"),
    Server("redis_ae", "c", "redis_ae",
           "C echo server on Redis ae (built by `make redis_ae`)"),
)}

VARIANTS = tuple(n for n, s in SERVERS.items() if s.variant)
BASELINE = "raw_epoll"


@dataclass(frozen=True)
class Spec:
    text: str                 # as the user wrote it, normalised
    name: str
    options: dict = field(default_factory=dict)

    @property
    def server(self) -> Server:
        return SERVERS[self.name]


def valid_names() -> str:
    return ", ".join(SERVERS)


def parse_spec(text: str) -> Spec:
    """Parse ``NAME[:key=value,...]``; raise ServerError with the valid choices."""
    text = text.strip()
    name, _, rest = text.partition(":")
    if name not in SERVERS:
        raise ServerError(f"unknown server or variant {name!r}; valid names: {valid_names()}")
    server = SERVERS[name]
    allowed = COMMON_OPTIONS + server.options
    options: dict[str, str | bool] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in allowed:
            raise ServerError(f"server {name!r} has no option {key!r}; "
                              f"its options: {', '.join(allowed)}")
        if key in FLAG_OPTIONS:
            if eq and value not in ("1", "true", "yes"):
                raise ServerError(f"option {key!r} is a flag: write '{name}:{key}'")
            options[key] = True
        else:
            if not eq or value == "":
                raise ServerError(f"option {key!r} of {name!r} needs a value: {key}=...")
            options[key] = value.strip()
            _check_value(name, key, value.strip())
    norm = name + (":" + ",".join(k if v is True else f"{k}={v}"
                                  for k, v in sorted(options.items())) if options else "")
    return Spec(norm, name, options)


def _check_value(name: str, key: str, value: str) -> None:
    """A spec value the server would refuse at start is refused here, before anything runs."""
    from argparse import ArgumentTypeError
    from harness.servers import common
    if key in ("idle_timeout", "poll_delay"):
        check, accepted = common.seconds, "a finite number of seconds >= 0"
    elif key in ("backlog", "workers"):
        check, accepted = common.positive_int, "an integer >= 1"
    elif key == "pool":
        check, accepted = (lambda v: v if v in ("faithful", "oneshot") else None), "faithful or oneshot"
    elif key == "backend":
        from variants.common import backends
        names = backends.available()
        check, accepted = (lambda v: v if v in names else None), " or ".join(names)
    else:
        return
    try:
        ok = check(value) is not None
    except ArgumentTypeError:
        ok = False
    if not ok:
        raise ServerError(f"bad value {value!r} for option {key!r} of {name!r}: use {accepted}")


def binary_path(server: Server) -> str:
    return os.path.join(BUILD, server.target)


def check_available(spec: Spec, python: str | None = None) -> None:
    """Raise ServerError, with what to do, if this server cannot run here."""
    server = spec.server
    if server.kind == "c":
        path = binary_path(server)
        if not os.path.exists(path):
            if server.name == "redis_ae":
                raise ServerError("redis_ae is not built: it needs a Redis source tree; "
                                  "run `make redis_ae` (fetches a Redis 6.2 source tree from PyPI) "
                                  "or `make build REDIS_SRC=/path/to/redis`. Skipped.")
            raise ServerError(f"{path} is not built: run `make build` (needs gcc)")
    elif server.variant and not os.path.isfile(os.path.join(ROOT, "variants", server.name,
                                                             "__init__.py")):
        raise ServerError(f"server {server.name!r} needs the package variants/{server.name}/, "
                          f"which is missing from {ROOT}")
    elif server.requires:
        py = python or sys.executable
        for mod in server.requires:
            r = subprocess.run([py, "-c", f"import {mod}"], capture_output=True, text=True)
            if r.returncode != 0:
                raise ServerError(f"server {server.name!r} needs the Python module {mod!r}, "
                                  f"which {py} cannot import (pip install {mod})")


def command(spec: Spec | str, *, host: str = "127.0.0.1", port: int = 0, size: int = 100,
            idle_timeout: float | None = None, python: str | None = None,
            extra: list[str] | tuple = ()) -> list[str]:
    """The argv that starts this server.  ``python`` is the interpreter for Python servers."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    server = spec.server
    if server.kind == "c":
        argv = [binary_path(server)]
    else:
        argv = [python or sys.executable, "-m", server.target]
    argv += ["--host", host, "--port", str(port), "--size", str(size)]
    if idle_timeout is not None:
        argv += ["--idle-timeout", str(idle_timeout)]
    for key, value in spec.options.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv + list(extra)


def env_for(server: Server) -> dict:
    """The environment a server runs with (the repository root on PYTHONPATH)."""
    env = dict(os.environ)
    if server.kind == "python":
        # Servers import `variants` and `harness` from the repository root.
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONHASHSEED", "0")
    return env


class ServerProcess:
    """A running server.  ``stop()`` is idempotent and only ever signals our own PID."""

    def __init__(self, spec: Spec, proc: subprocess.Popen, ready: dict, argv: list[str], errfile):
        self.spec, self.proc, self.ready, self.argv = spec, proc, ready, argv
        self._errfile = errfile   # stderr goes to a temp file: a pipe could fill and block the server
        self.host, self.port, self.pid = ready.get("host"), int(ready["port"]), proc.pid
        self.stats: dict | None = None
        self.stderr_text = ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        """user+sys CPU of the server process (all threads), from /proc/PID/stat."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            return None

    def stop(self, timeout: float = 10.0) -> dict | None:
        """SIGTERM, wait for the STATS line and exit; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        note = ""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            note = f"\n[harness] server did not exit within {timeout}s of SIGTERM; killed"
        self.stderr_text = _read_err(self._errfile) + note
        for line in (out or "").splitlines():
            if line.startswith("STATS "):
                try:
                    self.stats = json.loads(line[6:])
                except ValueError:
                    pass
        return self.stats

    def stderr_tail(self, n: int = 2000) -> str:
        return self.stderr_text[-n:]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(spec: Spec | str, *, host: str = "127.0.0.1", port: int = 0, size: int = 100,
          idle_timeout: float | None = None, python: str | None = None,
          prefix: list[str] | tuple = (), extra: list[str] | tuple = (),
          ready_timeout: float = 15.0, cgroup_procs: str | None = None) -> ServerProcess:
    """Start a server (optionally behind ``prefix``, e.g. ``taskset -c 0`` or
    ``ip netns exec NS``; prefixes must exec so the PID stays the server's) and wait
    for its READY line.  ``cgroup_procs``: the ``cgroup.procs`` file of a CPU-budget
    group (harness/cpubudget.py) the server joins before it execs, so every thread
    and child it ever has is inside.  Raises ServerError with the server's stderr if
    it fails."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    check_available(spec, python)
    argv = list(prefix) + command(spec, host=host, port=port, size=size,
                                  idle_timeout=idle_timeout, python=python, extra=extra)
    errfile = tempfile.TemporaryFile(mode="w+", prefix="events-server-err-")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errfile, text=True, cwd=ROOT,
                                env=env_for(spec.server), preexec_fn=_preexec(cgroup_procs))
    except (OSError, subprocess.SubprocessError) as e:
        errfile.close()
        where = f" (joining the CPU-budget cgroup {cgroup_procs})" if cgroup_procs else ""
        raise ServerError(f"cannot start {spec.text}{where}: {e}") from None
    deadline = time.monotonic() + ready_timeout
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None           # stdout=PIPE
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.communicate()
                raise ServerError(f"{spec.text} did not print READY within {ready_timeout}s; "
                                  f"stderr:\n{_read_err(errfile).strip()[-2000:]}")
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if not line:                      # EOF: the server exited
                proc.communicate()
                raise ServerError(f"{spec.text} failed to start (exit code {proc.returncode}); "
                                  f"stderr:\n{_read_err(errfile).strip()[-2000:]}")
            if line.startswith("READY "):
                ready = json.loads(line[6:])
                break
    finally:
        sel.close()
    return ServerProcess(spec, proc, ready, argv, errfile)


def _preexec(cgroup_procs: str | None):
    """What the child does between fork and exec: die with its parent, and join the
    CPU-budget group if there is one (if joining fails the child raises: a server
    must never run unbudgeted in a budgeted run)."""
    if not cgroup_procs:
        return _die_with_parent
    from harness.cpubudget import preexec_cgroup
    join = preexec_cgroup(cgroup_procs)

    def both() -> None:
        _die_with_parent()
        join()
    return both


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel to SIGTERM the server if the process that
    started it dies (even by SIGKILL), so a killed runner never leaves a server behind."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)      # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass                                        # not Linux: best effort only


def _read_err(errfile) -> str:
    try:
        errfile.flush()
        errfile.seek(0)
        return errfile.read()
    except (OSError, ValueError):
        return ""
