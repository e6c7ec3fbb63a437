"""Kernel TCP counters around a run: /proc/net/netstat and /proc/net/snmp.

Why: a connection-rate benchmark can lose connections in places the client
never sees as such — a full accept queue (ListenOverflows/ListenDrops), SYN
retries that merely add a second to the latency, resets, TIME_WAIT recycling.
The counters are read just before and just after each run and the *deltas*
stored in the record, so "zero failures" can be checked against the kernel.

Trade-off: the counters are per network namespace, not per process.  On
loopback they include any other traffic on the machine during the run (other
benchmarks, a browser...), so a small non-zero delta is not proof of our loss;
inside the namespaces of an emulated link they are ours alone.  Files are read
through ``read(path)`` (the link's ``read_proc``) so that the right namespace
is read.

Both files use the same layout: pairs of lines ``Prefix: name name ...`` /
``Prefix: value value ...``.
"""

from __future__ import annotations

from typing import Callable

# Counters kept in every record (missing on this kernel -> absent from the dict).
# Accept queue, resets and aborts, SYN retries, TIME_WAIT handling, and opens
# (the opens give a sanity check against the client's own count).
COUNTERS = (
    "ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPBacklogDrop",
    "TCPAbortOnData", "TCPAbortOnClose", "TCPAbortOnTimeout", "TCPAbortOnMemory",
    "TCPAbortFailed", "EstabResets", "AttemptFails", "OutRsts", "RetransSegs",
    "TCPSynRetrans", "TCPTimeouts", "TCPTimeWaitOverflow", "TW", "TWRecycled",
    "TWKilled", "TCPMemoryPressures",
    "ActiveOpens", "PassiveOpens", "SyncookiesSent",
)
FILES = ("/proc/net/netstat", "/proc/net/snmp")


def parse(text: str) -> dict[str, int]:
    """All counters of a netstat/snmp file, as {name: value}.  When a name occurs
    under two prefixes, the first wins (the names we use are unique)."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        hp, _, hnames = head.partition(":")
        vp, _, vvalues = values.partition(":")
        if hp != vp:        # out of step: a malformed file; keep what parsed so far
            break
        for name, value in zip(hnames.split(), vvalues.split()):
            try:
                out.setdefault(name, int(value))
            except ValueError:
                pass
    return out


def _read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def snapshot(read: Callable[[str], str] | None = None) -> dict[str, int]:
    """The counters in COUNTERS now.  ``read(path) -> text``; default: this namespace."""
    read = read or _read_file
    allc: dict[str, int] = {}
    for path in FILES:
        try:
            for k, v in parse(read(path)).items():
                allc.setdefault(k, v)
        except Exception:      # a reader inside a namespace may fail in its own ways: counters are descriptive
            continue
    return {k: allc[k] for k in COUNTERS if k in allc}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after - before for the counters present in both (gauges such as CurrEstab are not kept)."""
    return {k: after[k] - before[k] for k in COUNTERS if k in before and k in after}
