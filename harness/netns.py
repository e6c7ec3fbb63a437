"""Network namespaces, as the emulated links use them: the iproute2 commands, the
privilege check (with a throw-away probe namespace), entering a namespace from a
thread (the round-trip probe), and the cleanup of namespaces left behind by a
killed run.  harness/link.py builds links out of these; the "why" of every choice
is in its docstring.

Names: ``evtlink-<pid>-<n>-<tag>-s`` (server) and ``-c`` (client), ``-p`` for a
probe.  The creating PID is in the name, and a record under ``/run/evtlink/``
(or the temp dir) adds the PID's start time, so a namespace left behind by a
killed run is recognised as stale even if its PID was recycled, and a concurrent
run's namespaces are never touched.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from harness import procfs
from harness.linkspec import LinkError, as_spec

PREFIX = "evtlink-"
_NAME_RE = re.compile(r"^evtlink-(\d+)-(.+)-([scp])$")
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
_counter = itertools.count(1)
# The privilege probe's success, cached for the process (tests set it to skip the probe).
probe_passed = False


def new_name(tag: str) -> str:
    """A fresh base name for this process's namespaces: ``evtlink-<pid>-<n>-<tag>``."""
    return f"{PREFIX}{os.getpid()}-{next(_counter)}-{tag}"


# ---------------------------------------------------------------- commands

def tool(name: str) -> str | None:
    # sbin is often missing from a non-root PATH; the tools live there.
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(name, path=path)


def ip() -> str:
    return tool("ip") or "ip"


def tc() -> str:
    return tool("tc") or "tc"


def run(argv: list[str], *, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LinkError(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
    except OSError as e:
        raise LinkError(f"cannot run `{argv[0]}`: {e}") from None
    if check and r.returncode != 0:
        raise LinkError(f"`{' '.join(argv)}` failed: {first_line(r.stderr or r.stdout)}")
    return r


def first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else "(no message)"


def run_json(argv: list[str]):
    r = run(argv)
    try:
        return json.loads(r.stdout or "null")
    except ValueError:
        raise LinkError(f"`{' '.join(argv)}` printed no JSON (iproute2 too old for -j?)") from None


# ---------------------------------------------------------------- privileges

def effective_caps() -> int:
    """This process's effective capability mask (tests monkeypatch this)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_privileges(spec) -> None:
    """Raise LinkError naming what is missing to emulate ``spec``; no-op for loopback.

    Checked in order: capabilities (creating a namespace needs CAP_SYS_ADMIN,
    veth and qdiscs CAP_NET_ADMIN: root has both unless a container dropped
    them), the ``ip`` and ``tc`` tools, then a real probe -- a throw-away
    namespace with a veth pair and a tbf qdisc -- because a kernel can lack
    netns, veth or sch_tbf and only trying tells.  The probe's success is cached
    for the process."""
    global probe_passed
    spec = as_spec(spec)
    if not spec.emulated:
        return
    what = f"LINK={spec.name}"
    caps = effective_caps()
    missing = [n for n, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))
               if not caps >> bit & 1]
    if missing:
        euid = os.geteuid()
        who = "root" if euid == 0 else f"uid {euid}, not root"
        raise LinkError(f"{what} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to create network "
                        f"namespaces and tc qdiscs); this process is {who} and lacks "
                        f"{' and '.join(missing)}: run it as root (e.g. sudo make bench ... "
                        f"{what}) or use LINK=loopback")
    absent = [t for t in ("ip", "tc") if tool(t) is None]
    if absent:
        raise LinkError(f"{what} needs the {' and '.join(repr(t) for t in absent)} command(s) "
                        "from iproute2, not found: install iproute2 (apt-get install iproute2) "
                        "or use LINK=loopback")
    if probe_passed:
        return
    ns = new_name("probe") + "-p"
    try:
        r = run([ip(), "netns", "add", ns], check=False)
        if r.returncode != 0:
            raise LinkError(f"{what} needs network namespaces, and `ip netns add` failed here "
                            f"({first_line(r.stderr)}): run as root on a kernel with "
                            "CONFIG_NET_NS, or use LINK=loopback")
        r = run([ip(), "netns", "exec", ns, "true"], check=False)
        if r.returncode != 0:
            raise LinkError(f"{what}: `ip netns exec` does not work here ({first_line(r.stderr)}); "
                            "it needs to mount /sys in a new mount namespace: run as root outside "
                            "a restricted container, or use LINK=loopback")
        r = run([ip(), "-n", ns, "link", "add", "evp0", "type", "veth", "peer", "name", "evp1"],
                 check=False)
        if r.returncode != 0:
            raise LinkError(f"{what} needs veth interfaces, which this kernel refused "
                            f"({first_line(r.stderr)}): load the veth module (modprobe veth) "
                            "or use LINK=loopback")
        r = run([tc(), "-n", ns, "qdisc", "add", "dev", "evp0", "root", "tbf",
                  "rate", "10mbit", "burst", "64kb", "limit", "128kb"], check=False)
        if r.returncode != 0:
            raise LinkError(f"{what} needs the tbf queueing discipline, which tc could not add "
                            f"({first_line(r.stderr)}): load it (modprobe sch_tbf) or use "
                            "LINK=loopback")
        probe_passed = True
    finally:
        run([ip(), "netns", "del", ns], check=False)


def ns_path(ns: str) -> str:
    for base in ("/run/netns", "/var/run/netns"):
        p = os.path.join(base, ns)
        if os.path.exists(p):
            return p
    raise LinkError(f"namespace {ns} has no file under /run/netns (iproute2 keeps them there)")


_CLONE_NEWNET = 0x40000000
_TCPI_RTT_OFFSET = 68           # struct tcp_info: 8 bytes of u8 fields, then u32s; tcpi_rtt is the 16th


def setns_thread(path: str) -> None:
    """Move the *calling thread* into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def probe_rtt(server_ns: str, client_ns: str, host: str, samples: int,
                         timeout: float) -> dict:
    """Run in a thread of its own: it is left inside the client namespace."""
    setns_thread(server_ns)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    times, kernel, errors = [], [], []
    timeouts = 0
    try:
        lsock.bind((host, 0))
        lsock.listen(samples + 8)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        setns_thread(client_ns)
        for _ in range(samples):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(timeout)
            try:
                t0 = time.perf_counter()
                c.connect((host, port))
                times.append((time.perf_counter() - t0) * 1e3)
                info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                if len(info) >= _TCPI_RTT_OFFSET + 4:
                    kernel.append(struct.unpack_from("I", info, _TCPI_RTT_OFFSET)[0] / 1e3)
            except socket.timeout:
                timeouts += 1
            except OSError as e:
                errors.append(e.strerror or str(e))
            finally:
                c.close()
            try:
                lsock.accept()[0].close()
            except OSError:
                pass
    finally:
        lsock.close()
    r3 = lambda x: None if x is None else round(x, 3)
    return {"method": "tcp_connect", "samples": samples, "ok": len(times), "timeouts": timeouts,
            "errors": errors[:3], "median_ms": r3(statistics.median(times) if times else None),
            "min_ms": r3(min(times) if times else None), "max_ms": r3(max(times) if times else None),
            "kernel_rtt_median_ms": r3(statistics.median(kernel) if kernel else None)}


# ---------------------------------------------------------------- stale namespaces

def state_dir() -> str:
    for base in ("/run", tempfile.gettempdir()):
        d = os.path.join(base, "evtlink")
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    return tempfile.gettempdir()


def _owner_alive(pid: int, start: int | None) -> bool:
    now = procfs.start_ticks(pid)
    if now is None:
        return False
    return start is None or now == start


def our_namespaces() -> list[str]:
    r = run([ip(), "netns", "list"], check=False)
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    return [n for n in names if _NAME_RE.match(n)]


def kill_inside(ns: str, grace: float = 2.0) -> list[int]:
    """Kill the processes inside one of *our* namespaces.  Only this harness starts
    processes there (servers, load clients), so they are ours; without this a
    leftover process would keep the namespace, and its veth, alive unnamed."""
    r = run([ip(), "netns", "pids", ns], check=False)
    pids = [int(p) for p in r.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            if all(procfs.start_ticks(p) is None or procfs.is_zombie(p) for p in pids):
                break
            time.sleep(0.05)
        else:
            continue
        break
    return pids


def delete_ns(ns: str) -> None:
    run([ip(), "netns", "del", ns], check=False)


def cleanup_stale(out=None) -> list[str]:
    """Remove our namespaces whose creating process is gone (killed with SIGKILL,
    or the machine's power cut mid-run).  Returns the names removed.  Namespaces
    of live runs, and any namespace without our prefix, are left alone."""
    out = out if out is not None else sys.stderr
    if tool("ip") is None:
        return []
    state = state_dir()
    removed = []
    for ns in our_namespaces():
        m = _NAME_RE.match(ns)
        assert m is not None                 # our_namespaces() lists only names that match
        pid = int(m.group(1))
        base = ns[:-2]
        start = None
        try:
            with open(os.path.join(state, base + ".json")) as f:
                start = json.load(f).get("start_ticks")
        except (OSError, ValueError, AttributeError):
            pass
        if _owner_alive(pid, start):
            continue
        killed = kill_inside(ns)
        delete_ns(ns)
        removed.append(ns)
        extra = f"; killed {len(killed)} leftover process(es) inside: {killed}" if killed else ""
        print(f"link: removed stale namespace {ns} (the run that created it, PID {pid}, "
              f"is gone){extra}", file=out, flush=True)
    # Records whose namespaces are gone, and whose owner is gone, are just litter.
    try:
        for name in os.listdir(state):
            m = re.match(r"^evtlink-(\d+)-.+\.json$", name)
            if m and procfs.start_ticks(int(m.group(1))) is None:
                _kill_stale_delayline(os.path.join(state, name), out)
                try:
                    os.unlink(os.path.join(state, name))
                except OSError:
                    pass
    except OSError:
        pass
    return removed


def _kill_stale_delayline(record: str, out) -> None:
    """A delay line whose harness is gone (it exits by itself via PR_SET_PDEATHSIG;
    this is the belt to that braces), identified by PID *and* start time."""
    try:
        with open(record) as f:
            dl = json.load(f).get("delayline") or {}
        pid, start = int(dl["pid"]), dl.get("start_ticks")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if start is not None and procfs.start_ticks(pid) == start and not procfs.is_zombie(pid):
        try:
            os.kill(pid, signal.SIGKILL)
            print(f"link: killed stale delay line PID {pid}", file=out, flush=True)
        except OSError:
            pass


# ---------------------------------------------------------------- signals

@contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM while tearing down, then deliver them.  Only the main
    thread can set handlers; elsewhere this is a no-op (the teardown is short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, lambda s, f: pending.append(s))
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)
