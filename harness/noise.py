"""The noise guard: was the machine quiet while a batch ran?

On a 2-vCPU machine another process using half a core moves a server's figures by
more than the differences a benchmark is after, and a CPU-budgeted server that shares
its CPU with someone else does not even get its budget.  Paired, interleaved rounds
cancel most of that, not all, and never silently.  So every batch samples the
machine for one second before its first run and after its last: the share of all CPUs
busy (from /proc/stat), the hypervisor's steal time, the load average, the processes
other than this one that used CPU in that second, and the CPU frequency governor where
the kernel exposes it.  The batch summary keeps both samples; the table warns when
others used more than BUSY_SHARE of the machine, or when the baseline's CPU per
connection spread across rounds by more than SPREAD_LIMIT.

Trade-off: two one-second samples see a neighbour that is busy at the start or the
end, not one that came and went in between; the per-run figures (client CPU share,
server-bound flag, throttling) and the baseline's spread cover the middle.
"""

from __future__ import annotations

import os
import time

BUSY_SHARE = 0.10       # of all CPUs, used by others while we were idle: "busy"
SPREAD_LIMIT = 0.10     # baseline CPU/conn (max - min) / median across rounds: "noisy"
TOP_MIN_SHARE = 0.05    # list processes using at least this share of one CPU


def _cpu_times() -> tuple[int, int, int] | None:
    """(busy, total, steal) jiffies of all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)       # idle + iowait
    total = sum(fields[:8])                                         # guest time is inside user
    steal = fields[7] if len(fields) > 7 else 0
    return total - idle, total, steal


def _proc_times(exclude: set[int]) -> dict[int, tuple[str, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
            comm = text[text.index("(") + 1:text.rindex(")")]
            rest = text.rsplit(")", 1)[1].split()
            out[int(name)] = (comm, int(rest[11]) + int(rest[12]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:120]
    except OSError:
        return ""


def _governor() -> str | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            return f.read().strip()
    except OSError:
        return None


def sample(seconds: float = 1.0) -> dict:
    """One sample of what the machine did for ``seconds`` while this process slept."""
    me = {os.getpid()}
    c0, p0 = _cpu_times(), _proc_times(me)
    t0 = time.monotonic()
    time.sleep(seconds)
    c1, p1 = _cpu_times(), _proc_times(me)
    wall = time.monotonic() - t0
    hz = os.sysconf("SC_CLK_TCK")
    out: dict = {"seconds": round(wall, 2), "busy_share": None, "steal_share": None,
                 "loadavg": None, "top": [], "governor": _governor(), "cpus": os.cpu_count()}
    try:
        out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if c0 and c1 and c1[1] > c0[1]:
        total = c1[1] - c0[1]
        out["busy_share"] = round((c1[0] - c0[0]) / total, 3)
        out["steal_share"] = round((c1[2] - c0[2]) / total, 3)
    top: list[dict] = []
    for pid, (comm, ticks) in p1.items():
        if pid in p0 and p0[pid][0] == comm:
            share = (ticks - p0[pid][1]) / hz / wall
            if share >= TOP_MIN_SHARE:
                top.append({"pid": pid, "comm": comm, "cpu_share": round(share, 2),
                            "cmdline": _cmdline(pid)})
    out["top"] = sorted(top, key=lambda p: -p["cpu_share"])[:8]
    return out


def busy(s: dict | None) -> bool:
    return bool(s) and s.get("busy_share") is not None and s["busy_share"] > BUSY_SHARE


def describe(s: dict) -> str:
    tops = ", ".join(f"{p['comm']} {p['cpu_share']:.0%}" for p in s.get("top") or [])
    return (f"{s['busy_share']:.0%} of the machine's CPU was in use by others"
            + (f" ({tops} of a CPU)" if tops else "")
            + (f", steal {s['steal_share']:.0%}" if s.get("steal_share") else ""))


def warnings(noise: dict | None, baseline_spread: float | None) -> list[str]:
    """The table's warnings about the conditions of a batch (none when quiet)."""
    out = []
    for when in ("start", "end"):
        s = (noise or {}).get(when)
        if busy(s):
            out.append(f"warning: the machine was busy at the {when} of the batch: {describe(s)}; "
                       f"figures of this batch are noisier than usual")
    if baseline_spread is not None and baseline_spread > SPREAD_LIMIT:
        out.append(f"warning: the baseline's CPU per connection spread by {baseline_spread:.0%} across "
                   f"rounds (limit {SPREAD_LIMIT:.0%}): the machine was not steady; more rounds help")
    return out
