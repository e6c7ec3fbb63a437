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

Where the parts are: harness/linkspec.py parses a link's name (rate, delay, loss);
harness/netns.py runs iproute2, checks privileges, enters namespaces and removes
stale ones; harness/impairment.py is netem and the delay line; this module builds a
link out of them and measures what crossed it.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import time
from contextlib import contextmanager

from harness import impairment, netns, procfs
# The link's names, parsing and checks, re-exported: callers need only this module.
from harness.impairment import check_delayline, delayline_path, netem_available  # noqa: F401
from harness.linkspec import (LinkError, LinkSpec, as_spec, link_name, parse,  # noqa: F401
                              parse_delay, parse_loss)
from harness.netns import check_privileges, cleanup_stale  # noqa: F401

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
        base = netns.new_name(tag)
        self._base = base
        self.server_ns, self.client_ns = base + "-s", base + "-c"
        self.server_host, self.client_host = SERVER_ADDR, CLIENT_ADDR
        ip = netns.ip()
        self.server_prefix = [ip, "netns", "exec", self.server_ns]
        self.client_prefix = [ip, "netns", "exec", self.client_ns]
        self._delay, self._delay_s = parse_delay(delay)
        self._loss, self._loss_p = parse_loss(loss)
        # None: plain veth; "netem": veth + netem under tbf; "delayline": TUN + build/delayline.
        self.mechanism = mechanism
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        self._dl = impairment.DelayLine() if mechanism == "delayline" else None
        if self.mechanism and self._delay_s > 0:
            self.expected_rtt_ms = 2 * self._delay_s * 1e3
        self._out = out
        self._record = os.path.join(netns.state_dir(), base + ".json")
        self._closed = False
        self._created = False
        assert spec.rate_mbit is not None    # an emulated link always has a rate
        rate_bytes = spec.rate_mbit * 1e6 / 8
        self.burst_bytes = int(max(64 * 1024, rate_bytes * 0.002))
        self.limit_bytes = int(self.burst_bytes + rate_bytes * 0.050)
        self._info: dict = {}

    # -- setup

    def _sh(self, ns: str, script: str, *args: str, check: bool = True):
        return netns.run([netns.ip(), "netns", "exec", ns, "sh", "-c", script, "sh", *args], check=check)

    def _set_sysctl(self, ns: str, key: str, value: str) -> None:
        r = self._sh(ns, 'printf "%s\\n" "$1" > "/proc/sys/$2"', value, key, check=False)
        if r.returncode != 0:
            raise LinkError(f"cannot set {key.replace('/', '.')}={value} inside namespace {ns}: "
                            f"{netns.first_line(r.stderr)}")

    def _read_sysctls(self, ns: str) -> dict:
        script = 'for k; do printf "%s=" "$k"; tr "\\t\\n" "  " < "/proc/sys/$k"; echo; done'
        r = self._sh(ns, script, *RECORDED_SYSCTLS, check=False)
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k.rsplit("/", 1)[-1]] = " ".join(v.split()) or None
        return out

    def _create(self) -> None:
        ip, tc = netns.ip(), netns.tc()
        # The record first: if we die from here on, cleanup_stale knows whose it was.
        with open(self._record, "w") as f:
            json.dump({"pid": os.getpid(), "start_ticks": procfs.start_ticks(os.getpid()),
                       "namespaces": [self.server_ns, self.client_ns], "link": self.name,
                       "created": time.time()}, f)
        self._created = True
        netns.run([ip, "netns", "add", self.server_ns])
        netns.run([ip, "netns", "add", self.client_ns])
        if self.mechanism == "delayline":
            # Two TUN devices, created by the delay line inside the namespaces.
            assert self._dl is not None
            self._dl.start(server_ns=netns.ns_path(self.server_ns),
                           client_ns=netns.ns_path(self.client_ns), server_dev=SERVER_DEV,
                           client_dev=CLIENT_DEV, delay_s=self._delay_s, loss_p=self._loss_p,
                           seed=self.seed, record=self._record)
        else:
            # The pair is born inside the namespaces: it never appears on the host.
            netns.run([ip, "-n", self.server_ns, "link", "add", SERVER_DEV, "type", "veth",
                  "peer", "name", CLIENT_DEV, "netns", self.client_ns])
        for ns, dev, addr in ((self.server_ns, SERVER_DEV, SERVER_ADDR),
                              (self.client_ns, CLIENT_DEV, CLIENT_ADDR)):
            # Best effort: a kernel without IPv6 has no such file, and that is fine.
            self._sh(ns, 'echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"', dev, check=False)
            netns.run([ip, "-n", ns, "addr", "add", f"{addr}/{PREFIXLEN}", "dev", dev])
            netns.run([ip, "-n", ns, "link", "set", "lo", "up"])
            if self.mechanism == "delayline":
                netns.run([ip, "-n", ns, "link", "set", dev, "txqueuelen", str(impairment.TUN_TXQUEUELEN)])
            netns.run([tc, "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf",
                  "rate", f"{self.spec.rate_mbit:g}mbit", "burst", str(self.burst_bytes),
                  "limit", str(self.limit_bytes)])
        delay_note = self._add_delay(tc)
        for ns, dev in ((self.server_ns, SERVER_DEV), (self.client_ns, CLIENT_DEV)):
            netns.run([ip, "-n", ns, "link", "set", dev, "up"])
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
            out.update(seed=self.seed, tun_txqueuelen=impairment.TUN_TXQUEUELEN,
                       delayline_pid=self._dl.pid if self._dl else None,
                       delayline_argv=self._dl.argv if self._dl else None,
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
            r = netns.run([tc, "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:",
                      "netem", *args, "limit", "100000"], check=False)
            if r.returncode != 0:
                raise LinkError(f"cannot add {' '.join(args)} (netem): {netns.first_line(r.stderr)}")
        return (f"{self._delay or '0ms'} each direction (netem under tbf); round trip +2x"
                + (f"; loss {self._loss} each direction" if self._loss else ""))

    # -- the delay line

    @property
    def delayline_final(self) -> dict | None:
        """The delay line's last counters (its STATS line on SIGTERM), once closed."""
        return self._dl.final if self._dl is not None else None

    def delayline_stats(self) -> dict | None:
        """The delay line's cumulative counters now (SIGUSR1 -> one STATS line)."""
        return self._dl.stats() if self._dl is not None else None

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
                result.update(netns.probe_rtt(netns.ns_path(self.server_ns),
                                             netns.ns_path(self.client_ns), SERVER_ADDR,
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
            shown = [netns.run_json([netns.ip(), "-n", ns, "-j", "link", "show", "dev", dev])[0]
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
        with netns.signals_deferred():
            self._closed = True
            if not self._created:
                return
            try:
                if self._dl is not None:
                    self._dl.stop()
            except Exception as e:          # the namespaces below must go whatever happens
                print(f"link: stopping the delay line failed: {e}", file=self._out, flush=True)
            for ns in (self.client_ns, self.server_ns):
                try:
                    killed = netns.kill_inside(ns)
                    if killed:
                        print(f"link: {len(killed)} process(es) still running in {ns} at close "
                              f"were killed: {killed}", file=self._out, flush=True)
                    netns.delete_ns(ns)
                except Exception as e:      # keep going: the other namespace must go too
                    print(f"link: cleanup of {ns} failed: {e}", file=self._out, flush=True)
            try:
                left = [ns for ns in (self.client_ns, self.server_ns) if ns in netns.our_namespaces()]
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
            st = netns.run_json([netns.ip(), "-n", ns, "-s", "-j", "link", "show", "dev", dev])[0]["stats64"]
            qd = netns.run_json([netns.tc(), "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev])
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
            "delayline": impairment.delayline_delta(before.get("delayline"), after.get("delayline"), elapsed),
        }

    def info(self) -> dict:
        return dict(self._info) if self._info else {"link": self.name}

    def read_proc(self, path: str, side: str = "server") -> str:
        """A /proc file as seen from inside one namespace (``/proc/net/*`` is per namespace)."""
        _check_side(side)
        ns = self.server_ns if side == "server" else self.client_ns
        r = netns.run([netns.ip(), "netns", "exec", ns, "cat", path], check=False)
        if r.returncode != 0:
            raise OSError(f"cannot read {path} in {ns}: {netns.first_line(r.stderr)}")
        return r.stdout


@contextmanager
def open_link(spec, *, run_tag: str, delay: str | None = None, loss: str | None = None,
              out=None, via: str = "auto", seed: int | None = None):
    """The link for a run, torn down on the way out whatever happens.

    ``spec`` is a string or LinkSpec.  For loopback: a plain ``Link``.  For a rate:
    privileges are checked first (LinkError, never a silent loopback), stale
    namespaces of killed runs removed, then a ``NetnsLink`` is built."""
    spec = as_spec(spec)
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
    netns.check_privileges(spec)
    mechanism = None
    if delay is not None or loss_p:
        what = " ".join(f"{k}={v}" for k, v in (("DELAY", delay), ("LOSS", loss)) if v)
        if via == "netem" or (via == "auto" and impairment.netem_available()):
            mechanism = "netem"
        else:
            impairment.check_delayline(f"{what} on LINK={spec.name}")
            mechanism = "delayline"
    netns.cleanup_stale(out)
    link = NetnsLink(spec, run_tag, delay, out, loss=loss, mechanism=mechanism, seed=seed)
    atexit.register(link.close)
    try:
        link._create()
        yield link
    finally:
        link.close()
        atexit.unregister(link.close)
