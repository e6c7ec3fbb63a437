"""Small readers of /proc and of one-line kernel files, written once.

The CPU budget (a cgroup's files, the owner of a stale cgroup), the environment
record (/proc/cpuinfo, sysctls) and the link (the owner of a stale namespace, the
delay line's identity) read the same things; this is the one copy.

A process is identified by its PID *and* its start time (clock ticks since boot,
field 22 of /proc/PID/stat): together they survive PID reuse, so a record left
behind by a killed run is never mistaken for a live process that got its PID.
"""

from __future__ import annotations


def read_text(path: str) -> str | None:
    """The file's text, or None when it cannot be read (absent, no permission)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards)."""
    text = read_text(f"/proc/{pid}/stat")
    if text is None or ")" not in text:
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when it is gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def is_zombie(pid: int) -> bool:
    """True when the process is a zombie or gone."""
    fields = _stat_fields(pid)
    return not fields or fields[0] == "Z"
