"""CPU budgets: a server held to F cores by a cgroup of its own, so conn/s measures it.

Why.  On a 2-vCPU machine the load client costs about as much CPU per connection
as a fast server (over loopback the kernel does most of the TCP work in the
sending process), so with every server free to use a whole core the client
saturates first and the fast servers all come out at the client's rate.  Give the
server *less* CPU than the client can drive and the server becomes the bottleneck
again: its conn/s is then ``budget / CPU-per-connection``, a figure of the server,
and the conn/s ratio of two servers is the inverse of their CPU ratio (measured
here within 1 %).  The kernel's CFS bandwidth control is the tool: a cgroup with a
quota of ``F x period`` microseconds of CPU per ``period``.

How, and the trade-offs:

* One group per run, ``events-<pid>-<start ticks>-<n>`` under the cpu controller's
  root (cgroup v2 ``cpu.max`` where the unified hierarchy has the cpu controller,
  else v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).  A fresh group per run
  means its throttling counters belong to that run alone.
* The server joins the group *before it execs* (``preexec_cgroup``: the child
  writes its own PID to ``cgroup.procs``), so every thread it will ever start
  (mul_thread's pool) and any child it forks are inside from their first
  instruction; prefixes such as ``ip netns exec`` and ``taskset`` exec and stay
  in the group.  Moving a running server later would leave its start-up
  outside, and a thread created before the move in v1's per-thread ``tasks``.
* Period 20 ms (``PERIOD_US``): short enough that a throttled server waits at
  most ~20 ms x (1 - F) at a time (a long period adds long stalls to p99), long
  enough that the per-period accounting is cheap.  Throttling is bursty by
  nature: the server runs flat out for F x 20 ms, then waits.  Latency figures of
  a budgeted run contain those waits; conn/s and CPU per connection are the
  figures it is for.
* CPU per connection depends on load (a busier loop serves more events per
  epoll_wait): a budgeted server is busier per unit of CPU, and measured here it
  spent 10-15 % more CPU per connection at 0.4 core than unbudgeted.  So budgeted
  and unbudgeted runs are different experiments: the record carries
  ``config.server_cpu`` and the tables never pool the two.
* Removal: after the server has exited, the group is empty and ``rmdir`` removes
  it (retried briefly: an exiting task leaves the group a moment after it is
  reaped).  ``cleanup_stale()`` at every start removes groups whose creating
  process is gone (a SIGKILLed runner; its servers die with it through
  PR_SET_PDEATHSIG), never a live run's group and never a group without our
  prefix.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass

from harness import procfs

PERIOD_US = 20_000            # CFS period: see the essay
PREFIX = "events-"
_NAME_RE = re.compile(r"^events-(\d+)-(\d+)-\d+$")
_counter = 0


class BudgetError(Exception):
    """Why a CPU budget cannot be applied here (one line, for the user)."""


@dataclass(frozen=True)
class Controller:
    """Where the cpu controller lives: ``version`` 1 or 2 and the directory under which
    our groups are created."""
    version: int
    root: str

    def describe(self) -> str:
        return f"cgroup v{self.version} cpu controller at {self.root}"


def _mounts() -> list[tuple[str, str, list[str]]]:
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4:
                    out.append((parts[1], parts[2], parts[3].split(",")))
    except OSError:
        pass
    return out


def detect(mounts: list[tuple[str, str, list[str]]] | None = None) -> Controller:
    """The cpu controller we can use, or BudgetError saying why none.  v2 first (where
    the unified hierarchy has the cpu controller), then v1."""
    mounts = _mounts() if mounts is None else mounts
    reasons = []
    for path, fstype, _opts in mounts:
        if fstype != "cgroup2":
            continue
        try:
            with open(os.path.join(path, "cgroup.controllers")) as f:
                controllers = f.read().split()
        except OSError:
            continue
        if "cpu" in controllers:
            return Controller(2, path)
        reasons.append(f"the cgroup v2 hierarchy at {path} has no cpu controller")
    for path, fstype, opts in mounts:
        if fstype == "cgroup" and "cpu" in opts:
            if os.path.exists(os.path.join(path, "cpu.cfs_quota_us")):
                return Controller(1, path)
            reasons.append(f"{path} has no cpu.cfs_quota_us (kernel without CFS bandwidth control)")
    if not reasons:
        reasons.append("no cgroup filesystem with a cpu controller is mounted")
    raise BudgetError("; ".join(reasons))


def check(ctl: Controller | None = None) -> Controller:
    """detect() plus the privilege to create groups there (root, a writable root)."""
    ctl = ctl or detect()
    if not os.access(ctl.root, os.W_OK):
        raise BudgetError(f"no permission to create cgroups under {ctl.root} (run as root)")
    if ctl.version == 2:
        _enable_cpu_v2(ctl.root)
    return ctl


def _enable_cpu_v2(root: str) -> None:
    path = os.path.join(root, "cgroup.subtree_control")
    try:
        with open(path) as f:
            if "cpu" in f.read().split():
                return
        with open(path, "w") as f:
            f.write("+cpu")
    except OSError as e:
        raise BudgetError(f"cannot enable the cpu controller for child groups ({path}: "
                          f"{e.strerror})") from None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class Group:
    """One cgroup with a CPU quota of ``cores`` cores; ``remove()`` is idempotent."""

    def __init__(self, ctl: Controller, cores: float, period_us: int = PERIOD_US):
        global _counter
        if not cores > 0:
            raise BudgetError(f"a CPU budget must be > 0 cores, not {cores!r}")
        _counter += 1
        self.ctl, self.cores, self.period_us = ctl, float(cores), int(period_us)
        self.quota_us = max(1000, int(round(self.cores * self.period_us)))   # the kernel's minimum is 1 ms
        self.name = f"{PREFIX}{os.getpid()}-{procfs.start_ticks(os.getpid()) or 0}-{_counter}"
        self.path = os.path.join(ctl.root, self.name)
        self.removed = False
        try:
            os.mkdir(self.path)
            if ctl.version == 2:
                _write(os.path.join(self.path, "cpu.max"), f"{self.quota_us} {self.period_us}")
            else:
                _write(os.path.join(self.path, "cpu.cfs_period_us"), str(self.period_us))
                _write(os.path.join(self.path, "cpu.cfs_quota_us"), str(self.quota_us))
        except OSError as e:
            self.remove()
            raise BudgetError(f"cannot create cgroup {self.path}: {e.strerror}") from None

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def pids(self) -> list[int]:
        text = procfs.read_text(self.procs_file) or ""
        return [int(p) for p in text.split() if p.isdigit()]

    def stat(self) -> dict:
        """Cumulative counters: nr_periods, nr_throttled, throttled_s (and usage_s on v2)."""
        text = procfs.read_text(os.path.join(self.path, "cpu.stat")) or ""
        raw = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                raw[parts[0]] = int(parts[1])
        out: dict = {"nr_periods": raw.get("nr_periods"), "nr_throttled": raw.get("nr_throttled")}
        if "throttled_usec" in raw:                       # v2
            out["throttled_s"] = raw["throttled_usec"] / 1e6
        elif "throttled_time" in raw:                     # v1, nanoseconds
            out["throttled_s"] = raw["throttled_time"] / 1e9
        else:
            out["throttled_s"] = None
        if "usage_usec" in raw:
            out["usage_s"] = raw["usage_usec"] / 1e6
        return out

    def info(self) -> dict:
        return {"cgroup_version": self.ctl.version, "path": self.path, "cores": self.cores,
                "quota_us": self.quota_us, "period_us": self.period_us}

    def record(self, before: dict | None, after: dict | None) -> dict:
        """A run record's ``server_cgroup``: the quota and the throttling over the run
        (``stat()`` before and after); the machine's path is left out."""
        info = self.info()
        info.pop("path", None)
        return {**info, **delta(before, after)}

    def remove(self, timeout: float = 3.0) -> bool:
        """rmdir the group.  Its processes must have exited (we stop our server first);
        an exiting task may linger a moment, hence the retries.  Returns True when gone."""
        if self.removed:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(self.path)
                self.removed = True
                return True
            except FileNotFoundError:
                self.removed = True
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.02)


def delta(before: dict | None, after: dict | None) -> dict:
    """Counter differences over a run (None where either side is missing)."""
    out = {}
    for key in ("nr_periods", "nr_throttled", "throttled_s", "usage_s"):
        a, b = (before or {}).get(key), (after or {}).get(key)
        if a is None and b is None and key == "usage_s":
            continue
        out[key] = None if a is None or b is None else round(b - a, 6)
    return out


def preexec_cgroup(procs_file: str):
    """A function for the child between fork and exec: join the group.  If that fails
    the child must not run unbudgeted, so it raises (Popen reports the failure)."""
    def join():
        fd = os.open(procs_file, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
    return join


def join_self(procs_file: str) -> None:
    """Move this process into the group (``serve``: it then execs the server)."""
    preexec_cgroup(procs_file)()


def ours(ctl: Controller) -> list[str]:
    try:
        return sorted(n for n in os.listdir(ctl.root) if _NAME_RE.match(n))
    except OSError:
        return []


def cleanup_stale(ctl: Controller | None = None, out=None) -> list[str]:
    """Remove our groups whose creating process is gone; returns the names removed.
    A group still holding a task (a server that outlived its runner) is left, and
    said so: we stop only processes we started, and that one is no longer ours."""
    out = out if out is not None else sys.stderr
    try:
        ctl = ctl or detect()
    except BudgetError:
        return []
    removed = []
    for name in ours(ctl):
        m = _NAME_RE.match(name)
        pid, start = int(m.group(1)), int(m.group(2))
        now = procfs.start_ticks(pid)
        if now is not None and (start == 0 or now == start):
            continue                                  # a live run's group
        path = os.path.join(ctl.root, name)
        try:
            os.rmdir(path)
            removed.append(name)
            print(f"cpu budget: removed stale cgroup {path} (the run that created it, PID {pid}, "
                  f"is gone)", file=out, flush=True)
        except FileNotFoundError:
            pass
        except OSError as e:
            print(f"cpu budget: stale cgroup {path} not removed ({e.strerror}: a process is "
                  f"still in it)", file=out, flush=True)
    return removed


def parse(text: str | float | None) -> float | str | None:
    """``--server-cpu`` value: a number of cores (> 0, finite), ``auto``, ``off``, or
    None (the command's default).  Raises ValueError with what is accepted."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = str(text).strip().lower()
        if t in ("auto", "off"):
            return t
        if t in ("", "none"):
            raise ValueError("give a number of cores (e.g. 0.4), auto or off")
        try:
            value = float(t)
        except ValueError:
            raise ValueError(f"{text!r} is not a number of cores: give e.g. 0.4, auto or off") from None
    if value != value or value in (float("inf"), float("-inf")) or value <= 0:
        raise ValueError(f"{text!r}: a CPU budget must be a finite number of cores > 0 "
                         f"(e.g. 0.4), auto or off")
    ncpu = os.cpu_count() or 1
    if value > ncpu:
        raise ValueError(f"{text!r}: this machine has {ncpu} CPU(s); a budget above that "
                         f"limits nothing")
    if value * PERIOD_US < 1000:
        raise ValueError(f"{text!r}: the smallest budget is {1000 / PERIOD_US:g} core "
                         f"(the kernel's minimum quota is 1 ms per {PERIOD_US // 1000} ms period)")
    return value
