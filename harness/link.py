"""Emulated links: two network namespaces joined by a veth pair, shaped with tbf.

Why.  The 2016 study ran its client and its server on two machines joined by a
100 Mb/s, then a 1000 Mb/s NIC.  On one machine we rebuild that: a *server host*
and a *client host*, each a network namespace with its own TCP stack, sysctls and
counters, joined by a veth pair whose two ends are rate-limited by a token-bucket
filter (``tbf``) at the link's rate, one per direction, like a full-duplex NIC.
The link is a *spec* (``loopback``, ``100mbit``, ``1gbit``, ``2.5gbit`` ...), so a
linked run is configuration, not another script.

How it is built, and why that way:

* Names.  Namespaces are ``evtlink-<pid>-<n>-<run_tag>-s`` (server) and ``-c``
  (client).  The creating PID is in the name, and a record under
  ``/run/evtlink/`` (or the temp dir) adds the PID's start time, so a namespace
  left behind by a killed run is recognised as stale even if its PID was
  recycled, and a concurrent run's namespaces are never touched.
  ``cleanup_stale()`` runs at every ``open_link()``.
* The veth pair is created *directly inside* the two namespaces
  (``ip -n S link add ... peer ... netns C``): it never exists in the host's
  namespace, so no host interface, route, qdisc or sysctl is ever changed.  The
  addresses (10.203.0.1/30 server, .2 client) exist only inside those two
  namespaces, which have no other interface: traffic can only ever go between
  them, whatever the host's own use of 10.203/16.
* Shaping: tbf as the root qdisc of each veth end (egress of each host = one
  direction).  ``burst`` is max(64 KiB, 2 ms at the rate): at least one GSO
  super-packet (up to 64 KiB; a smaller bucket forces tbf to re-segment every such
  skb), and a couple of milliseconds of line-rate burst so the kernel's timer
  granularity does not eat into the rate at 1 Gb/s and above.  The queue
  (``limit``) holds burst + 50 ms at the rate, about what a real NIC's 1000-packet
  transmit queue holds at 100 Mb/s: a link under sustained overload queues and
  then drops, as a real one does, and the drops show in the qdisc counters.
  Trade-off: a short-connection load puts a few hundred small packets in flight,
  so neither value matters there; they matter for the bulk transfer that checks
  the shaping.
* Delay and loss (``DELAY=5ms`` one way, ``LOSS=1%`` random drop, each direction):
  ``netem`` under tbf when the kernel has it; otherwise -- this kernel has tbf and
  htb but no netem -- the *delay line*, ``build/delayline``
  (harness/delayline/delayline.c, whose header says how it works).  Then the
  two namespaces are joined not by a veth pair but by a TUN device in each
  (same names, same addresses, tbf on each as before) and that program in
  between: it reads each packet a stack sends, holds it for the one-way delay
  (a FIFO per direction: constant delay, so order is kept), drops it with the
  loss probability from a seeded PRNG, and writes it into the other namespace.
  Which mechanism was used is recorded (``info()["impairment"]``), with the
  delay line's per-direction packet/byte/drop counters and its CPU time in every
  run's ``link_stats``.  Without DELAY/LOSS nothing changes: the veth link, no
  user-space hop.  The delay line starts with the link, is stopped (SIGTERM,
  its last counters read) before the namespaces go, lives in the server
  namespace (so the stale-namespace cleanup below kills an orphaned one) and
  exits by itself when the harness dies (PR_SET_PDEATHSIG).
* Round-trip time, measured: ``probe_rtt()`` times a few TCP connects from
  the client namespace to a listener in the server namespace (a connect returns
  after SYN -> SYN-ACK: one round trip), from a thread of this process that
  enters the namespaces with setns(2) (no extra processes).  The runner records it
  per run and warns when it is off from twice the configured delay.
* Per-namespace sysctls, set *inside* the namespaces: the client gets
  ``tcp_tw_reuse=1`` and a wide ``ip_local_port_range`` (measured here: without
  them the client's ~28k ports sit in TIME_WAIT within seconds and the rate
  collapses to ~500 conn/s; loopback hides this because ``tcp_tw_reuse=2``
  applies to loopback only); the server gets the host's ``somaxconn`` and
  ``tcp_max_syn_backlog`` (a fresh namespace has its own defaults, which need
  not equal the host's).  IPv6 is disabled on the veth so no router
  solicitations or DAD packets pollute the packet counters.  All of them are
  read back and recorded in ``info()``.
* Cleanup always: the context manager's ``finally`` (normal exit, exceptions,
  KeyboardInterrupt, the runner's SIGTERM-as-exception) with SIGINT/SIGTERM
  deferred while it runs, so a second Ctrl-C cannot leave half a link; an
  ``atexit`` fallback; and ``cleanup_stale()`` for SIGKILL.  Deleting a
  namespace deletes its veth end (and with it the peer) and its qdiscs; any
  process still inside one of our namespaces at cleanup is one this harness
  started there, and is killed so that the namespace really goes away.

``open_link("loopback")`` gives a ``Link`` with the same interface and nothing to
set up, so callers never branch on the link kind.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import typing
import time
from contextlib import contextmanager
from dataclasses import dataclass

PREFIX = "evtlink-"
_NAME_RE = re.compile(r"^evtlink-(\d+)-(.+)-([scp])$")
SERVER_ADDR, CLIENT_ADDR, PREFIXLEN = "10.203.0.1", "10.203.0.2", 30
SERVER_DEV, CLIENT_DEV = "evt-srv", "evt-cli"

CLIENT_PORT_RANGE = "1024 65535"
# Sysctls recorded on both sides (paths under /proc/sys).
RECORDED_SYSCTLS = (
    "net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog", "net/ipv4/tcp_tw_reuse",
    "net/ipv4/ip_local_port_range", "net/ipv4/tcp_fin_timeout",
    "net/ipv4/tcp_syncookies", "net/ipv4/tcp_congestion_control",
)
# Copied from the host into the server namespace.
HOST_COPIED_SYSCTLS = ("net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog")

CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
_ACCEPTED = ("accepted links: 'loopback' (the default), or a rate such as "
             "'1000mbit', '100mbit', '20mbit', '1gbit', '2.5gbit', '500kbit'")
_counter = itertools.count(1)
_probe_ok = False
_netem_ok: bool | None = None
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUN_PATH = "/dev/net/tun"
TUN_TXQUEUELEN = 10000          # the TUN ring the delay line reads from: a burst must fit
MAX_LOSS = 0.5
MAX_DELAY_S = 10.0


class LinkError(Exception):
    """A one-line, user-facing message: what is missing and what to do."""


@dataclass(frozen=True)
class LinkSpec:
    name: str                    # canonical: "loopback", "100mbit", "1000mbit", "2500mbit"
    rate_mbit: float | None      # None for loopback

    @property
    def emulated(self) -> bool:
        return self.rate_mbit is not None


_UNITS = {"kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(kbit|mbit|gbit)$", re.IGNORECASE)
MIN_MBIT, MAX_MBIT = 0.1, 100_000.0


def parse(spec: str | None) -> LinkSpec:
    """``loopback`` (or empty) or a rate ``<number>kbit|mbit|gbit``.  Rates are
    named in Mb/s (``1gbit`` -> ``1000mbit``) so the same link always gets the
    same name in the results."""
    text = (spec or "loopback").strip().lower()
    if text == "loopback":
        return LinkSpec("loopback", None)
    m = _RATE_RE.match(text)
    if not m:
        raise LinkError(f"unknown link {spec!r}; {_ACCEPTED} (bits per second; "
                        "tc's 'mbps' means megabytes and is not accepted)")
    mbit = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not MIN_MBIT <= mbit <= MAX_MBIT:
        raise LinkError(f"link rate {spec!r} is out of range: use {MIN_MBIT:g}mbit to "
                        f"{MAX_MBIT / 1000:g}gbit; {_ACCEPTED}")
    return LinkSpec(f"{mbit:g}mbit", mbit)


def link_name(rate_name: str, delay: str | None, loss: str | None) -> str:
    """The recorded name of a link: ``100mbit``, ``100mbit+5ms``, ``100mbit+5ms+loss1%``."""
    return "+".join([rate_name] + ([delay] if delay else []) + ([f"loss{loss}"] if loss else []))


def _as_spec(spec) -> LinkSpec:
    return spec if isinstance(spec, LinkSpec) else parse(spec)


_DELAY_RE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_LOSS_RE = re.compile(r"^(\d+(?:\.\d+)?)%$")


def parse_delay(text) -> tuple[str | None, float]:
    """``5ms``, ``100us``, ``0.1ms``, ``1s`` (one way) -> (canonical text, seconds);
    empty or None -> (None, 0.0).  LinkError, one line, otherwise."""
    if text is None or str(text).strip() == "":
        return None, 0.0
    t = str(text).strip().lower()
    m = _DELAY_RE.match(t)
    if not m:
        raise LinkError(f"bad delay {text!r}: write the one-way delay like 5ms, 0.1ms, 100us or 1s")
    sec = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    if sec > MAX_DELAY_S:
        raise LinkError(f"delay {text!r} is too long: at most {MAX_DELAY_S:g}s one way")
    return t, sec


def parse_loss(text) -> tuple[str | None, float]:
    """``1%``, ``0.5%`` (random drop, each direction) -> (canonical text, fraction);
    empty or None -> (None, 0.0).  LinkError, one line, otherwise."""
    if text is None or str(text).strip() == "":
        return None, 0.0
    t = str(text).strip()
    m = _LOSS_RE.match(t)
    if not m:
        raise LinkError(f"bad loss {text!r}: write the drop probability per packet as a "
                        "percentage, like 1% or 0.5%")
    frac = float(m.group(1)) / 100
    if frac > MAX_LOSS:
        raise LinkError(f"loss {text!r} is too high: at most {MAX_LOSS:.0%} (TCP barely "
                        "connects beyond that)")
    return t, frac


# ---------------------------------------------------------------- commands

def _tool(name: str) -> str | None:
    # sbin is often missing from a non-root PATH; the tools live there.
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(name, path=path)


def _ip() -> str:
    return _tool("ip") or "ip"


def _tc() -> str:
    return _tool("tc") or "tc"


def _run(argv: list[str], *, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LinkError(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
    except OSError as e:
        raise LinkError(f"cannot run `{argv[0]}`: {e}") from None
    if check and r.returncode != 0:
        raise LinkError(f"`{' '.join(argv)}` failed: {_first_line(r.stderr or r.stdout)}")
    return r


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else "(no message)"


def _json(argv: list[str]):
    r = _run(argv)
    try:
        return json.loads(r.stdout or "null")
    except ValueError:
        raise LinkError(f"`{' '.join(argv)}` printed no JSON (iproute2 too old for -j?)") from None


# ---------------------------------------------------------------- privileges

def _effective_caps() -> int:
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
    global _probe_ok
    spec = _as_spec(spec)
    if not spec.emulated:
        return
    what = f"LINK={spec.name}"
    caps = _effective_caps()
    missing = [n for n, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))
               if not caps >> bit & 1]
    if missing:
        euid = os.geteuid()
        who = "root" if euid == 0 else f"uid {euid}, not root"
        raise LinkError(f"{what} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to create network "
                        f"namespaces and tc qdiscs); this process is {who} and lacks "
                        f"{' and '.join(missing)}: run it as root (e.g. sudo make bench ... "
                        f"{what}) or use LINK=loopback")
    absent = [t for t in ("ip", "tc") if _tool(t) is None]
    if absent:
        raise LinkError(f"{what} needs the {' and '.join(repr(t) for t in absent)} command(s) "
                        "from iproute2, not found: install iproute2 (apt-get install iproute2) "
                        "or use LINK=loopback")
    if _probe_ok:
        return
    ns = f"{PREFIX}{os.getpid()}-{next(_counter)}-probe-p"
    try:
        r = _run([_ip(), "netns", "add", ns], check=False)
        if r.returncode != 0:
            raise LinkError(f"{what} needs network namespaces, and `ip netns add` failed here "
                            f"({_first_line(r.stderr)}): run as root on a kernel with "
                            "CONFIG_NET_NS, or use LINK=loopback")
        r = _run([_ip(), "netns", "exec", ns, "true"], check=False)
        if r.returncode != 0:
            raise LinkError(f"{what}: `ip netns exec` does not work here ({_first_line(r.stderr)}); "
                            "it needs to mount /sys in a new mount namespace: run as root outside "
                            "a restricted container, or use LINK=loopback")
        r = _run([_ip(), "-n", ns, "link", "add", "evp0", "type", "veth", "peer", "name", "evp1"],
                 check=False)
        if r.returncode != 0:
            raise LinkError(f"{what} needs veth interfaces, which this kernel refused "
                            f"({_first_line(r.stderr)}): load the veth module (modprobe veth) "
                            "or use LINK=loopback")
        r = _run([_tc(), "-n", ns, "qdisc", "add", "dev", "evp0", "root", "tbf",
                  "rate", "10mbit", "burst", "64kb", "limit", "128kb"], check=False)
        if r.returncode != 0:
            raise LinkError(f"{what} needs the tbf queueing discipline, which tc could not add "
                            f"({_first_line(r.stderr)}): load it (modprobe sch_tbf) or use "
                            "LINK=loopback")
        _probe_ok = True
    finally:
        _run([_ip(), "netns", "del", ns], check=False)


# ---------------------------------------------------------------- delay and loss

def delayline_path() -> str:
    # EVENTS_DELAYLINE lets tests substitute a build elsewhere.
    return os.environ.get("EVENTS_DELAYLINE") or os.path.join(ROOT, "build", "delayline")


def netem_available() -> bool:
    """Whether tc can add a netem qdisc here: tried on ``lo`` of a throw-away
    namespace (only trying tells), cached for the process."""
    global _netem_ok
    if _netem_ok is None:
        ns = f"{PREFIX}{os.getpid()}-{next(_counter)}-netem-p"
        try:
            if _run([_ip(), "netns", "add", ns], check=False).returncode != 0:
                _netem_ok = False
            else:
                r = _run([_tc(), "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem",
                          "delay", "1ms"], check=False)
                _netem_ok = r.returncode == 0
        finally:
            _run([_ip(), "netns", "del", ns], check=False)
    return _netem_ok


def check_delayline(what: str) -> str:
    """The delay line's binary, or LinkError naming what is missing (/dev/net/tun,
    the build) and what to do."""
    path = delayline_path()
    if not os.path.exists(TUN_PATH):
        raise LinkError(f"{what}: this kernel has no netem, and the delay line that replaces it "
                        f"needs {TUN_PATH}, which does not exist here: load the tun module "
                        "(modprobe tun; in a container pass the device through), or run "
                        "without DELAY/LOSS")
    try:
        os.close(os.open(TUN_PATH, os.O_RDWR))       # opening alone creates no device
    except OSError as e:
        raise LinkError(f"{what}: the delay line (no netem here) cannot open {TUN_PATH}: "
                        f"{e.strerror}: run as root, or run without DELAY/LOSS") from None
    if not os.access(path, os.X_OK):
        raise LinkError(f"{what}: this kernel has no netem and the delay line "
                        f"{os.path.relpath(path, ROOT)} is not built: run `make build` "
                        "(needs gcc), or run without DELAY/LOSS")
    return path


def _ns_path(ns: str) -> str:
    for base in ("/run/netns", "/var/run/netns"):
        p = os.path.join(base, ns)
        if os.path.exists(p):
            return p
    raise LinkError(f"namespace {ns} has no file under /run/netns (iproute2 keeps them there)")


_CLONE_NEWNET = 0x40000000
_TCPI_RTT_OFFSET = 68           # struct tcp_info: 8 bytes of u8 fields, then u32s; tcpi_rtt is the 16th


def _setns_thread(path: str) -> None:
    """Move the *calling thread* into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _probe_in_namespaces(server_ns: str, client_ns: str, host: str, samples: int,
                         timeout: float) -> dict:
    """Run in a thread of its own: it is left inside the client namespace."""
    _setns_thread(server_ns)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    times, kernel, errors = [], [], []
    timeouts = 0
    try:
        lsock.bind((host, 0))
        lsock.listen(samples + 8)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        _setns_thread(client_ns)
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

def _state_dir() -> str:
    for base in ("/run", tempfile.gettempdir()):
        d = os.path.join(base, "evtlink")
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    return tempfile.gettempdir()


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the PID, an identity
    that survives PID reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _owner_alive(pid: int, start: int | None) -> bool:
    now = _start_ticks(pid)
    if now is None:
        return False
    return start is None or now == start


def _our_namespaces() -> list[str]:
    r = _run([_ip(), "netns", "list"], check=False)
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    return [n for n in names if _NAME_RE.match(n)]


def _kill_inside(ns: str, grace: float = 2.0) -> list[int]:
    """Kill the processes inside one of *our* namespaces.  Only this harness starts
    processes there (servers, load clients), so they are ours; without this a
    leftover process would keep the namespace, and its veth, alive unnamed."""
    r = _run([_ip(), "netns", "pids", ns], check=False)
    pids = [int(p) for p in r.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            if all(_start_ticks(p) is None or _is_zombie(p) for p in pids):
                break
            time.sleep(0.05)
        else:
            continue
        break
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _delete_ns(ns: str) -> None:
    _run([_ip(), "netns", "del", ns], check=False)


def cleanup_stale(out=None) -> list[str]:
    """Remove our namespaces whose creating process is gone (killed with SIGKILL,
    or the machine's power cut mid-run).  Returns the names removed.  Namespaces
    of live runs, and any namespace without our prefix, are left alone."""
    out = out if out is not None else sys.stderr
    if _tool("ip") is None:
        return []
    state = _state_dir()
    removed = []
    for ns in _our_namespaces():
        m = _NAME_RE.match(ns)
        assert m is not None                 # _our_namespaces() lists only names that match
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
        killed = _kill_inside(ns)
        _delete_ns(ns)
        removed.append(ns)
        extra = f"; killed {len(killed)} leftover process(es) inside: {killed}" if killed else ""
        print(f"link: removed stale namespace {ns} (the run that created it, PID {pid}, "
              f"is gone){extra}", file=out, flush=True)
    # Records whose namespaces are gone, and whose owner is gone, are just litter.
    try:
        for name in os.listdir(state):
            m = re.match(r"^evtlink-(\d+)-.+\.json$", name)
            if m and _start_ticks(int(m.group(1))) is None:
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
    if start is not None and _start_ticks(pid) == start and not _is_zombie(pid):
        try:
            os.kill(pid, signal.SIGKILL)
            print(f"link: killed stale delay line PID {pid}", file=out, flush=True)
        except OSError:
            pass


# ---------------------------------------------------------------- signals

@contextmanager
def _signals_deferred():
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


# ---------------------------------------------------------------- links

class Link:
    """The loopback link: nothing to set up, and the interface every link has."""

    def __init__(self, spec: LinkSpec):
        self.spec = spec
        self.name = spec.name
        self.server_host = "127.0.0.1"
        self.client_host = "127.0.0.1"
        self.server_prefix: list[str] = []
        self.client_prefix: list[str] = []
        # The round trip the configured delay should give (2 x one way), None without delay.
        self.expected_rtt_ms: float | None = None

    def probe_rtt(self, samples: int = 10) -> dict | None:
        return None

    def snapshot(self) -> dict:
        return {}

    def stats_between(self, before: dict, after: dict, connections: int | None) -> dict | None:
        return None

    def info(self) -> dict:
        return {"link": "loopback"}

    def read_proc(self, path: str, side: str = "server") -> str:
        _check_side(side)
        with open(path) as f:
            return f.read()

    def close(self) -> None:
        pass


def _check_side(side: str) -> None:
    if side not in ("server", "client"):
        raise ValueError(f"side must be 'server' or 'client', not {side!r}")


class NetnsLink(Link):
    """Two namespaces and a tbf-shaped veth pair.  Build with ``open_link``."""

    def __init__(self, spec: LinkSpec, run_tag: str, delay: str | None, out, *,
                 loss: str | None = None, mechanism: str | None = None, seed: int | None = None):
        super().__init__(spec)
        # A delayed or lossy link is another experiment: its name says so (100mbit+5ms,
        # 100mbit+5ms+loss1%), so no table or report ever pools it with the plain link.
        self.name = link_name(spec.name, parse_delay(delay)[0], parse_loss(loss)[0])
        tag = re.sub(r"[^A-Za-z0-9_.-]", "", run_tag or "run")[:40] or "run"
        base = f"{PREFIX}{os.getpid()}-{next(_counter)}-{tag}"
        self._base = base
        self.server_ns, self.client_ns = base + "-s", base + "-c"
        self.server_host, self.client_host = SERVER_ADDR, CLIENT_ADDR
        ip = _ip()
        self.server_prefix = [ip, "netns", "exec", self.server_ns]
        self.client_prefix = [ip, "netns", "exec", self.client_ns]
        self._delay, self._delay_s = parse_delay(delay)
        self._loss, self._loss_p = parse_loss(loss)
        # None: plain veth; "netem": veth + netem under tbf; "delayline": TUN + build/delayline.
        self.mechanism = mechanism
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        self._dl: subprocess.Popen | None = None
        self._dl_buf = b""
        self._dl_err: typing.IO[bytes] | None = None
        self.delayline_final: dict | None = None
        if self.mechanism and self._delay_s > 0:
            self.expected_rtt_ms = 2 * self._delay_s * 1e3
        self._out = out
        self._record = os.path.join(_state_dir(), base + ".json")
        self._closed = False
        self._created = False
        assert spec.rate_mbit is not None    # an emulated link always has a rate
        rate_bytes = spec.rate_mbit * 1e6 / 8
        self.burst_bytes = int(max(64 * 1024, rate_bytes * 0.002))
        self.limit_bytes = int(self.burst_bytes + rate_bytes * 0.050)
        self._info: dict = {}

    # -- setup

    def _sh(self, ns: str, script: str, *args: str, check: bool = True):
        return _run([_ip(), "netns", "exec", ns, "sh", "-c", script, "sh", *args], check=check)

    def _set_sysctl(self, ns: str, key: str, value: str) -> None:
        r = self._sh(ns, 'printf "%s\\n" "$1" > "/proc/sys/$2"', value, key, check=False)
        if r.returncode != 0:
            raise LinkError(f"cannot set {key.replace('/', '.')}={value} inside namespace {ns}: "
                            f"{_first_line(r.stderr)}")

    def _read_sysctls(self, ns: str) -> dict:
        script = 'for k; do printf "%s=" "$k"; tr "\\t\\n" "  " < "/proc/sys/$k"; echo; done'
        r = self._sh(ns, script, *RECORDED_SYSCTLS, check=False)
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k.rsplit("/", 1)[-1]] = " ".join(v.split()) or None
        return out

    def _create(self) -> None:
        ip, tc = _ip(), _tc()
        # The record first: if we die from here on, cleanup_stale knows whose it was.
        with open(self._record, "w") as f:
            json.dump({"pid": os.getpid(), "start_ticks": _start_ticks(os.getpid()),
                       "namespaces": [self.server_ns, self.client_ns], "link": self.name,
                       "created": time.time()}, f)
        self._created = True
        _run([ip, "netns", "add", self.server_ns])
        _run([ip, "netns", "add", self.client_ns])
        if self.mechanism == "delayline":
            # Two TUN devices, created by the delay line inside the namespaces.
            self._start_delayline()
        else:
            # The pair is born inside the namespaces: it never appears on the host.
            _run([ip, "-n", self.server_ns, "link", "add", SERVER_DEV, "type", "veth",
                  "peer", "name", CLIENT_DEV, "netns", self.client_ns])
        for ns, dev, addr in ((self.server_ns, SERVER_DEV, SERVER_ADDR),
                              (self.client_ns, CLIENT_DEV, CLIENT_ADDR)):
            # Best effort: a kernel without IPv6 has no such file, and that is fine.
            self._sh(ns, 'echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"', dev, check=False)
            _run([ip, "-n", ns, "addr", "add", f"{addr}/{PREFIXLEN}", "dev", dev])
            _run([ip, "-n", ns, "link", "set", "lo", "up"])
            if self.mechanism == "delayline":
                _run([ip, "-n", ns, "link", "set", dev, "txqueuelen", str(TUN_TXQUEUELEN)])
            _run([tc, "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf",
                  "rate", f"{self.spec.rate_mbit:g}mbit", "burst", str(self.burst_bytes),
                  "limit", str(self.limit_bytes)])
        delay_note = self._add_delay(tc)
        for ns, dev in ((self.server_ns, SERVER_DEV), (self.client_ns, CLIENT_DEV)):
            _run([ip, "-n", ns, "link", "set", dev, "up"])
        # Per-namespace settings, inside the namespaces only.
        self._set_sysctl(self.client_ns, "net/ipv4/tcp_tw_reuse", "1")
        self._set_sysctl(self.client_ns, "net/ipv4/ip_local_port_range", CLIENT_PORT_RANGE)
        for key in HOST_COPIED_SYSCTLS:
            try:
                with open(f"/proc/sys/{key}") as f:
                    host_value = " ".join(f.read().split())
            except OSError:
                continue
            self._set_sysctl(self.server_ns, key, host_value)
        self._wait_carrier()
        kind = {None: "netns-veth-tbf", "netem": "netns-veth-tbf-netem",
                "delayline": "netns-tun-tbf-delayline"}[self.mechanism]
        self._info = {
            "link": self.name, "kind": kind, "rate_mbit": self.spec.rate_mbit,
            "namespaces": {"server": self.server_ns, "client": self.client_ns},
            "addresses": {"server": SERVER_ADDR, "client": CLIENT_ADDR},
            "devices": {"server": SERVER_DEV, "client": CLIENT_DEV},
            "tbf": {"rate": f"{self.spec.rate_mbit:g}mbit", "burst_bytes": self.burst_bytes,
                    "limit_bytes": self.limit_bytes, "directions": "both (root qdisc of each end)"},
            "delay": delay_note,
            "impairment": self._impairment(),
            "sysctls": {"server": self._read_sysctls(self.server_ns),
                        "client": self._read_sysctls(self.client_ns)},
            "sysctls_set": {"client": {"tcp_tw_reuse": "1",
                                       "ip_local_port_range": CLIENT_PORT_RANGE},
                            "server": {k.rsplit("/", 1)[-1]: "as on the host"
                                       for k in HOST_COPIED_SYSCTLS}},
        }

    def _impairment(self) -> dict | None:
        if not self.mechanism:
            return None
        out = {"mechanism": self.mechanism, "delay": self._delay,
               "delay_ms_one_way": round(self._delay_s * 1e3, 6),
               "expected_rtt_ms": self.expected_rtt_ms, "loss": self._loss,
               "loss_fraction": self._loss_p, "directions": "both, independently"}
        if self.mechanism == "delayline":
            out.update(seed=self.seed, tun_txqueuelen=TUN_TXQUEUELEN,
                       delayline_pid=self._dl.pid if self._dl else None,
                       delayline_argv=list(typing.cast(list, self._dl.args)) if self._dl else None,
                       rate_by="tbf on each TUN device's egress (before the delay line)")
        return out

    def _add_delay(self, tc: str) -> str | None:
        if self.mechanism is None:
            return None
        if self.mechanism == "delayline":
            return (f"{self._delay or '0ms'} each direction (delay line over TUN, no netem here); "
                    f"round trip +2x" + (f"; loss {self._loss} each direction" if self._loss else ""))
        args = []
        if self._delay:
            args += ["delay", self._delay]
        if self._loss:
            args += ["loss", self._loss]
        for ns, dev in ((self.server_ns, SERVER_DEV), (self.client_ns, CLIENT_DEV)):
            r = _run([tc, "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:",
                      "netem", *args, "limit", "100000"], check=False)
            if r.returncode != 0:
                raise LinkError(f"cannot add {' '.join(args)} (netem): {_first_line(r.stderr)}")
        return (f"{self._delay or '0ms'} each direction (netem under tbf); round trip +2x"
                + (f"; loss {self._loss} each direction" if self._loss else ""))

    # -- the delay line

    def _start_delayline(self, timeout: float = 5.0) -> None:
        argv = [delayline_path(), "--client-ns", _ns_path(self.client_ns),
                "--server-ns", _ns_path(self.server_ns), "--client-dev", CLIENT_DEV,
                "--server-dev", SERVER_DEV, "--delay-us", f"{self._delay_s * 1e6:.3f}",
                "--loss", repr(self._loss_p), "--seed", str(self.seed)]
        self._dl_err = tempfile.TemporaryFile(mode="w+b", prefix="evtlink-delayline-err-")
        with _signals_deferred():       # never a delay line we hold no handle of
            try:
                self._dl = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=self._dl_err)
            except OSError as e:
                raise LinkError(f"cannot start the delay line {argv[0]}: {e.strerror or e}") from None
        try:
            with open(self._record) as f:
                rec = json.load(f)
            rec["delayline"] = {"pid": self._dl.pid, "start_ticks": _start_ticks(self._dl.pid)}
            with open(self._record, "w") as f:
                json.dump(rec, f)
        except (OSError, ValueError):
            pass
        line = self._dl_line(self._dl, "READY ", timeout)
        if line is None:
            raise LinkError(f"the delay line did not start: {self._dl_stderr() or 'no READY line'}")

    def _dl_stderr(self) -> str:
        if self._dl_err is None:
            return ""
        try:
            self._dl_err.seek(0)
            return _first_line(self._dl_err.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return ""

    def _dl_line(self, proc: subprocess.Popen, prefix: str, timeout: float) -> dict | None:
        """The next line starting with ``prefix`` from the delay line, parsed; None on
        EOF or timeout."""
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._dl_buf:
                raw, self._dl_buf = self._dl_buf.split(b"\n", 1)
                text = raw.decode("utf-8", "replace")
                if text.startswith(prefix):
                    try:
                        return json.loads(text[len(prefix):])
                    except ValueError:
                        return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._dl_buf += chunk

    def delayline_stats(self) -> dict | None:
        """The delay line's cumulative counters now (SIGUSR1 -> one STATS line)."""
        if self._dl is None:
            return None
        if self._dl.poll() is not None:
            raise LinkError(f"the delay line exited (status {self._dl.returncode}): "
                            f"{self._dl_stderr() or 'no message'}")
        self._dl.send_signal(signal.SIGUSR1)
        st = self._dl_line(self._dl, "STATS ", 3.0)
        if st is None:
            raise LinkError("the delay line did not answer SIGUSR1 with its counters")
        return st

    def _stop_delayline(self) -> None:
        dl, self._dl = self._dl, None
        if dl is None:
            return
        try:
            if dl.poll() is None:
                dl.send_signal(signal.SIGTERM)
                self.delayline_final = self._dl_line(dl, "STATS ", 3.0)
            try:
                dl.wait(timeout=3)
            except subprocess.TimeoutExpired:
                dl.kill()
                dl.wait()
        finally:
            self._dl = None
            try:
                dl.stdout.close()
            except OSError:
                pass
            if self._dl_err is not None:
                self._dl_err.close()
                self._dl_err = None

    # -- round-trip time

    def probe_rtt(self, samples: int = 10, timeout: float = 4.0) -> dict | None:
        """Round-trip time through the link, idle: ``samples`` sequential TCP connects
        from the client namespace to a listener in the server namespace, each timed
        (connect() returns when the SYN-ACK is in: one round trip), and the kernel's
        own estimate (TCP_INFO tcpi_rtt) of each.  Runs in a short-lived thread that
        enters the namespaces with setns(2); the rest of the process is untouched.
        A connect that exceeds ``timeout`` (a lost SYN under LOSS costs 1 s) is
        counted, not averaged in: the median is the figure."""
        result: dict = {}

        def work():
            try:
                result.update(_probe_in_namespaces(_ns_path(self.server_ns),
                                                   _ns_path(self.client_ns), SERVER_ADDR,
                                                   samples, timeout))
            except Exception as e:          # descriptive: the run goes on without it
                result["error"] = f"{type(e).__name__}: {e}"

        t = threading.Thread(target=work, name="evtlink-rtt-probe", daemon=True)
        t.start()
        t.join(samples * (timeout + 1) + 5)
        if t.is_alive():
            return {"method": "tcp_connect", "error": "probe did not finish"}
        result["expected_ms"] = self.expected_rtt_ms
        return result

    def _wait_carrier(self, timeout: float = 5.0) -> None:
        # A veth end reports LOWER_UP once both ends are up; until then a connect
        # could race the link coming up.
        deadline = time.monotonic() + timeout
        while True:
            shown = [_json([_ip(), "-n", ns, "-j", "link", "show", "dev", dev])[0]
                     for ns, dev in ((self.server_ns, SERVER_DEV), (self.client_ns, CLIENT_DEV))]
            states = [d.get("operstate") for d in shown]
            # A TUN device reports no link state (UNKNOWN); LOWER_UP says its fd is attached.
            if all(st == "UP" or (st == "UNKNOWN" and "LOWER_UP" in d.get("flags", []))
                   for st, d in zip(states, shown)):
                return
            if time.monotonic() > deadline:
                raise LinkError(f"the devices of link {self.name} did not come up within "
                                f"{timeout:g}s (state {states})")
            time.sleep(0.02)

    # -- teardown

    def close(self) -> None:
        """Idempotent, never raises, and not interruptible by SIGINT/SIGTERM."""
        if self._closed:
            return
        with _signals_deferred():
            self._closed = True
            if not self._created:
                return
            try:
                self._stop_delayline()
            except Exception as e:          # the namespaces below must go whatever happens
                print(f"link: stopping the delay line failed: {e}", file=self._out, flush=True)
            for ns in (self.client_ns, self.server_ns):
                try:
                    killed = _kill_inside(ns)
                    if killed:
                        print(f"link: {len(killed)} process(es) still running in {ns} at close "
                              f"were killed: {killed}", file=self._out, flush=True)
                    _delete_ns(ns)
                except Exception as e:      # keep going: the other namespace must go too
                    print(f"link: cleanup of {ns} failed: {e}", file=self._out, flush=True)
            try:
                left = [ns for ns in (self.client_ns, self.server_ns) if ns in _our_namespaces()]
            except Exception:
                left = []
            if left:
                print(f"link: could not remove namespace(s) {left}; remove them with "
                      f"`ip netns del NAME`", file=self._out, flush=True)
            else:
                try:
                    os.unlink(self._record)
                except OSError:
                    pass

    # -- measurement

    def snapshot(self) -> dict:
        """Counters of both veth ends and both tbf qdiscs, with a monotonic timestamp."""
        snap: dict = {"t": time.monotonic()}
        for side, ns, dev in (("server", self.server_ns, SERVER_DEV),
                              ("client", self.client_ns, CLIENT_DEV)):
            st = _json([_ip(), "-n", ns, "-s", "-j", "link", "show", "dev", dev])[0]["stats64"]
            qd = _json([_tc(), "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev])
            root = next((q for q in qd if q.get("root")), qd[0] if qd else {})
            snap[side] = {
                "tx_packets": st["tx"]["packets"], "tx_bytes": st["tx"]["bytes"],
                "rx_packets": st["rx"]["packets"], "rx_bytes": st["rx"]["bytes"],
                "tx_dropped": st["tx"].get("dropped", 0), "rx_dropped": st["rx"].get("dropped", 0),
                "qdisc": {
                    "kind": root.get("kind"),
                    # drops anywhere on the device: tbf itself, or netem under it
                    "drops": sum(q.get("drops", 0) for q in qd),
                    "overlimits": root.get("overlimits", 0),
                    "requeues": root.get("requeues", 0),
                    "backlog": root.get("backlog", 0), "qlen": root.get("qlen", 0),
                },
            }
        if self.mechanism == "delayline":
            snap["delayline"] = self.delayline_stats()
        return snap

    def stats_between(self, before: dict, after: dict, connections: int | None) -> dict | None:
        """What crossed the link between two snapshots.  ``connections`` is the
        number of connections whose packets those are (for a whole run, the
        client's ``started_total``); per-connection figures are None without it.
        Bytes are Ethernet frames as the veth counts them (headers included, no FCS)."""
        if not before or not after:
            return None
        elapsed = after["t"] - before["t"]

        def d(side, key):
            return after[side][key] - before[side][key]

        def dq(side, key):
            return after[side]["qdisc"][key] - before[side]["qdisc"][key]

        # The client end's tx is the client->server direction, the server end's tx the other.
        packets = {"client_to_server": d("client", "tx_packets"),
                   "server_to_client": d("server", "tx_packets")}
        byts = {"client_to_server": d("client", "tx_bytes"),
                "server_to_client": d("server", "tx_bytes")}
        packets["total"] = sum(packets.values())
        byts["total"] = sum(byts.values())
        n = connections if connections and connections > 0 else None
        per = (lambda v: {k: round(x / n, 3) for k, x in v.items()}) if n else (lambda v: None)
        mbit = {k: round(byts[k] * 8 / elapsed / 1e6, 3) if elapsed > 0 else None
                for k in ("client_to_server", "server_to_client")}
        qdisc = {direction: {"drops": dq(side, "drops"), "overlimits": dq(side, "overlimits"),
                             "requeues": dq(side, "requeues"),
                             "backlog_end": after[side]["qdisc"]["backlog"]}
                 for direction, side in (("client_to_server", "client"),
                                         ("server_to_client", "server"))}
        return {
            "link": self.name, "rate_mbit": self.spec.rate_mbit,
            "elapsed_s": round(elapsed, 3), "connections": connections,
            "packets": packets, "bytes": byts,
            "packets_per_conn": per(packets), "bytes_per_conn": per(byts),
            "mbit_per_s": mbit,
            "utilisation": {k: (round(v / self.spec.rate_mbit, 4) if v is not None else None)
                            for k, v in mbit.items()},
            "qdisc_drops": sum(q["drops"] for q in qdisc.values()),
            "qdisc_overlimits": sum(q["overlimits"] for q in qdisc.values()),
            "qdisc_requeues": sum(q["requeues"] for q in qdisc.values()),
            "qdisc": qdisc,
            "veth_dropped": sum(d(s, k) for s in ("client", "server")
                                for k in ("tx_dropped", "rx_dropped")),
            "device_dropped": {direction: after[side]["tx_dropped"] - before[side]["tx_dropped"]
                               for direction, side in (("client_to_server", "client"),
                                                       ("server_to_client", "server"))},
            "impairment": self._impairment(),
            "delayline": _delayline_delta(before.get("delayline"), after.get("delayline"), elapsed),
        }

    def info(self) -> dict:
        return dict(self._info) if self._info else {"link": self.name}

    def read_proc(self, path: str, side: str = "server") -> str:
        """A /proc file as seen from inside one namespace (``/proc/net/*`` is per namespace)."""
        _check_side(side)
        ns = self.server_ns if side == "server" else self.client_ns
        r = _run([_ip(), "netns", "exec", ns, "cat", path], check=False)
        if r.returncode != 0:
            raise OSError(f"cannot read {path} in {ns}: {_first_line(r.stderr)}")
        return r.stdout


_DL_COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "dropped_loss",
                "dropped_queue", "write_errors")


def _delayline_delta(a: dict | None, b: dict | None, elapsed: float) -> dict | None:
    """What the delay line did between two of its STATS lines: per direction, its
    packets, bytes and drops by cause, the mean lateness of a packet against its due
    time, and its CPU time (and share of one core)."""
    if not a or not b:
        return None
    out: dict = {}
    for direction in ("client_to_server", "server_to_client"):
        x, y = a[direction], b[direction]
        dd = {k: y[k] - x[k] for k in _DL_COUNTERS}
        sent = dd["packets_out"]
        dd["late_mean_us"] = round((y["late_sum_us"] - x["late_sum_us"]) / sent, 3) if sent else None
        dd["late_max_us_cumulative"] = y["late_max_us"]
        dd["max_queued_cumulative"] = y["max_queued"]
        out[direction] = dd
    cpu = (b["cpu_user_s"] + b["cpu_sys_s"]) - (a["cpu_user_s"] + a["cpu_sys_s"])
    out["dropped_loss"] = sum(out[d]["dropped_loss"] for d in ("client_to_server", "server_to_client"))
    out["dropped_other"] = sum(out[d]["dropped_queue"] + out[d]["write_errors"]
                               for d in ("client_to_server", "server_to_client"))
    out["cpu_s"] = round(cpu, 6)
    out["cpu_share"] = round(cpu / elapsed, 4) if elapsed > 0 else None
    out["pid"] = b.get("pid")
    return out


@contextmanager
def open_link(spec, *, run_tag: str, delay: str | None = None, loss: str | None = None,
              out=None, via: str = "auto", seed: int | None = None):
    """The link for a run, torn down on the way out whatever happens.

    ``spec`` is a string or LinkSpec.  For loopback: a plain ``Link``.  For a rate:
    privileges are checked first (LinkError, never a silent loopback), stale
    namespaces of killed runs removed, then a ``NetnsLink`` is built."""
    spec = _as_spec(spec)
    out = out if out is not None else sys.stderr
    delay, delay_s = parse_delay(delay)
    loss, loss_p = parse_loss(loss)
    if via not in ("auto", "netem", "delayline"):
        raise ValueError(f"via must be auto, netem or delayline, not {via!r}")
    if not spec.emulated:
        for name, value in (("DELAY", delay), ("LOSS", loss)):
            if value:
                raise LinkError(f"{name}={value} needs an emulated link (e.g. LINK=100mbit): "
                                "the host's loopback is never delayed or made lossy")
        yield Link(spec)
        return
    check_privileges(spec)
    mechanism = None
    if delay is not None or loss_p:
        what = " ".join(f"{k}={v}" for k, v in (("DELAY", delay), ("LOSS", loss)) if v)
        if via == "netem" or (via == "auto" and netem_available()):
            mechanism = "netem"
        else:
            check_delayline(f"{what} on LINK={spec.name}")
            mechanism = "delayline"
    cleanup_stale(out)
    link = NetnsLink(spec, run_tag, delay, out, loss=loss, mechanism=mechanism, seed=seed)
    atexit.register(link.close)
    try:
        link._create()
        yield link
    finally:
        link.close()
        atexit.unregister(link.close)
