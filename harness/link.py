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
* Delay: ``netem`` under tbf when the kernel has it.  This kernel has tbf and htb
  but no netem: the run then says so once and goes on *without* delay, and
  ``info()["delay"]`` records "requested X, not applied: netem unavailable" so no
  result is ever mistaken for a delayed one.  Without delay the emulated link is
  a fast, short wire with a rate limit; it cannot reproduce a LAN's round-trip
  time (see docs/links.md).
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
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
_netem_warned = False
_probe_ok = False


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


def _as_spec(spec) -> LinkSpec:
    return spec if isinstance(spec, LinkSpec) else parse(spec)


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
                try:
                    os.unlink(os.path.join(state, name))
                except OSError:
                    pass
    except OSError:
        pass
    return removed


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


_DELAY_RE = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")


class NetnsLink(Link):
    """Two namespaces and a tbf-shaped veth pair.  Build with ``open_link``."""

    def __init__(self, spec: LinkSpec, run_tag: str, delay: str | None, out):
        super().__init__(spec)
        tag = re.sub(r"[^A-Za-z0-9_.-]", "", run_tag or "run")[:40] or "run"
        base = f"{PREFIX}{os.getpid()}-{next(_counter)}-{tag}"
        self._base = base
        self.server_ns, self.client_ns = base + "-s", base + "-c"
        self.server_host, self.client_host = SERVER_ADDR, CLIENT_ADDR
        ip = _ip()
        self.server_prefix = [ip, "netns", "exec", self.server_ns]
        self.client_prefix = [ip, "netns", "exec", self.client_ns]
        self._delay = delay
        self._out = out
        self._record = os.path.join(_state_dir(), base + ".json")
        self._closed = False
        self._created = False
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
        # The pair is born inside the namespaces: it never appears on the host.
        _run([ip, "-n", self.server_ns, "link", "add", SERVER_DEV, "type", "veth",
              "peer", "name", CLIENT_DEV, "netns", self.client_ns])
        for ns, dev, addr in ((self.server_ns, SERVER_DEV, SERVER_ADDR),
                              (self.client_ns, CLIENT_DEV, CLIENT_ADDR)):
            # Best effort: a kernel without IPv6 has no such file, and that is fine.
            self._sh(ns, 'echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"', dev, check=False)
            _run([ip, "-n", ns, "addr", "add", f"{addr}/{PREFIXLEN}", "dev", dev])
            _run([ip, "-n", ns, "link", "set", "lo", "up"])
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
        self._info = {
            "link": self.name, "kind": "netns-veth-tbf", "rate_mbit": self.spec.rate_mbit,
            "namespaces": {"server": self.server_ns, "client": self.client_ns},
            "addresses": {"server": SERVER_ADDR, "client": CLIENT_ADDR},
            "devices": {"server": SERVER_DEV, "client": CLIENT_DEV},
            "tbf": {"rate": f"{self.spec.rate_mbit:g}mbit", "burst_bytes": self.burst_bytes,
                    "limit_bytes": self.limit_bytes, "directions": "both (root qdisc of each end)"},
            "delay": delay_note,
            "sysctls": {"server": self._read_sysctls(self.server_ns),
                        "client": self._read_sysctls(self.client_ns)},
            "sysctls_set": {"client": {"tcp_tw_reuse": "1",
                                       "ip_local_port_range": CLIENT_PORT_RANGE},
                            "server": {k.rsplit("/", 1)[-1]: "as on the host"
                                       for k in HOST_COPIED_SYSCTLS}},
        }

    def _add_delay(self, tc: str) -> str | None:
        global _netem_warned
        if not self._delay:
            return None
        unavailable = None
        for ns, dev in ((self.server_ns, SERVER_DEV), (self.client_ns, CLIENT_DEV)):
            r = _run([tc, "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:",
                      "netem", "delay", self._delay, "limit", "100000"], check=False)
            if r.returncode != 0:
                err = _first_line(r.stderr)
                if "unknown" in err.lower() or "no such file" in err.lower():
                    unavailable = "netem unavailable"
                    break
                raise LinkError(f"cannot add delay {self._delay} (netem): {err}")
        if unavailable:
            if not _netem_warned:
                print(f"link: DELAY={self._delay} requested, but this kernel has no netem qdisc: "
                      f"running WITHOUT added latency (recorded with the results)",
                      file=self._out, flush=True)
                _netem_warned = True
            return f"requested {self._delay}, not applied: {unavailable}"
        return f"{self._delay} each direction (netem under tbf); round trip +2x"

    def _wait_carrier(self, timeout: float = 5.0) -> None:
        # A veth end reports LOWER_UP once both ends are up; until then a connect
        # could race the link coming up.
        deadline = time.monotonic() + timeout
        while True:
            states = [_json([_ip(), "-n", ns, "-j", "link", "show", "dev", dev])[0].get("operstate")
                      for ns, dev in ((self.server_ns, SERVER_DEV), (self.client_ns, CLIENT_DEV))]
            if all(s == "UP" for s in states):
                return
            if time.monotonic() > deadline:
                raise LinkError(f"the veth pair of link {self.name} did not come up within "
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
        snap = {"t": time.monotonic()}
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


@contextmanager
def open_link(spec, *, run_tag: str, delay: str | None = None, out=None):
    """The link for a run, torn down on the way out whatever happens.

    ``spec`` is a string or LinkSpec.  For loopback: a plain ``Link``.  For a rate:
    privileges are checked first (LinkError, never a silent loopback), stale
    namespaces of killed runs removed, then a ``NetnsLink`` is built."""
    spec = _as_spec(spec)
    out = out if out is not None else sys.stderr
    if delay is not None and delay != "":
        delay = str(delay).strip()
        if not _DELAY_RE.match(delay):
            raise LinkError(f"bad delay {delay!r}: write it like 0.1ms, 100us or 1ms")
    else:
        delay = None
    if not spec.emulated:
        if delay:
            raise LinkError(f"DELAY={delay} needs an emulated link (e.g. LINK=100mbit): "
                            "latency is never added to the host's loopback")
        yield Link(spec)
        return
    check_privileges(spec)
    cleanup_stale(out)
    link = NetnsLink(spec, run_tag, delay, out)
    atexit.register(link.close)
    try:
        link._create()
        yield link
    finally:
        link.close()
        atexit.unregister(link.close)
