"""The environment a batch ran in, captured once per batch and stored in every record.

A figure without its environment cannot be compared or reproduced (pyperf's
metadata rule).  We keep what changes connection-rate results: the CPU and how
many cores we may use, the kernel, the interpreters (the harness's and the
servers', which may differ: ``--python python3.13``), package versions, the
exact code (git commit + whether the tree was dirty), and the kernel limits that
bite a connection benchmark (somaxconn, the ephemeral port range, TIME_WAIT
reuse, FIN timeout, SYN backlog).  Those sysctls are per network namespace, so
they are read through the link, on both the server and the client side.

Every probe is best-effort: a missing file or tool gives ``None``, never an
error — the environment must not be the reason a benchmark does not run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

from harness import procfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PACKAGES = ("uvloop", "pandas", "numpy", "matplotlib", "line_profiler", "pytest")
SERVER_PACKAGES = ("uvloop",)      # what a server may import beyond the stdlib
SYSCTLS = {
    "somaxconn": "/proc/sys/net/core/somaxconn",
    "ip_local_port_range": "/proc/sys/net/ipv4/ip_local_port_range",
    "tcp_tw_reuse": "/proc/sys/net/ipv4/tcp_tw_reuse",
    "tcp_fin_timeout": "/proc/sys/net/ipv4/tcp_fin_timeout",
    "tcp_max_syn_backlog": "/proc/sys/net/ipv4/tcp_max_syn_backlog",
    "tcp_syncookies": "/proc/sys/net/ipv4/tcp_syncookies",
}

# Printed by the server interpreter: its version, implementation, whether it is a
# free-threaded build, and the packages a server may import.
_PROBE = r"""
import json, sys, sysconfig
from importlib import metadata
pk = {}
for name in %r:
    try: pk[name] = metadata.version(name)
    except Exception: pk[name] = None
print(json.dumps({"version": sys.version.split()[0], "implementation": sys.implementation.name,
  "executable": sys.executable, "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
  "packages": pk}))
"""


def cpu_model() -> str | None:
    text = procfs.read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _run(argv: list[str], timeout: float = 10.0) -> str | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    commit = _run(["git", "-C", ROOT, "rev-parse", "HEAD"])
    if commit is None:
        return None, None
    # Dirty means the *code* differs from the commit: regenerated reports under results/
    # (REPORT.md, charts) do not change what a run measures.
    status = _run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                   "--", ".", ":(exclude)results"])
    return commit, (bool(status) if status is not None else None)


def packages() -> dict:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def interpreter(python: str | None) -> dict | None:
    """Facts about the interpreter that runs the Python servers."""
    text = _run([python or sys.executable, "-c", _PROBE % (SERVER_PACKAGES,)])
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def sysctls(read=None) -> dict:
    out = {}
    for key, path in SYSCTLS.items():
        try:
            text = read(path) if read else procfs.read_text(path)
        except OSError:
            text = None
        value = " ".join(text.split()) if text else None
        # single numbers as ints (somaxconn 4096), ranges as text ("32768 60999")
        out[key] = int(value) if value and value.lstrip("-").isdigit() else value
    return out


def capture(link=None, python: str | None = None) -> dict:
    """The environment dict stored as ``record["env"]``.  ``link`` (optional) gives
    the namespaces: sysctls are read on the server side (flat keys, as in the
    contract) and on the client side (``client_sysctls``) when they differ."""
    commit, dirty = git_state()
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    server_read = (lambda p: link.read_proc(p, "server")) if link is not None else None
    client_read = (lambda p: link.read_proc(p, "client")) if link is not None else None
    env = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_affinity": affinity,
        "kernel": platform.release(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "server_python": interpreter(python),
        "packages": packages(),
        "git_commit": commit,
        "git_dirty": dirty,
        "loadgen": _file_facts(os.path.join(ROOT, "build", "loadgen")),
        "cpu_speed_us": cpu_speed_us(),
    }
    env.update(sysctls(server_read))
    if link is not None:
        client = sysctls(client_read)
        if client != {k: env[k] for k in SYSCTLS}:
            env["client_sysctls"] = client
        try:
            env["link"] = link.info()
        except Exception as e:     # info() is descriptive only: never fail the batch on it
            env["link"] = {"name": getattr(link, "name", None), "error": str(e)}
    return env


def cpu_speed_us() -> float:
    """A machine-speed probe: the best of 5 timings of ``sum(range(1000))`` in this
    interpreter, in microseconds (about 0.1 s).  The same kind of VM ran raw_epoll at
    24 us of server CPU per connection on 2026-11-26 and at 56-63 us on 2026-11-29 (another
    kernel build, fc-v669 then fc-v782): absolute conn/s and CPU per connection only
    compare between runs with a similar probe; paired ratios within a batch do not need it."""
    import timeit
    t = timeit.Timer("sum(range(1000))")
    return round(min(t.repeat(repeat=5, number=400)) / 400 * 1e6, 2)


def _file_facts(path: str) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"path": os.path.relpath(path, ROOT), "size": st.st_size,
            "mtime_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))}
