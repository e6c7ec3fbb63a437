"""``make soak``: one long run per variant (>= 1,000,000 connections), the server's RSS
sampled during the run, and a verdict: enough connections, none lost, memory flat.
"""

from __future__ import annotations

import os
import sys

from harness.metrics import round_or_none
from harness.runner import Batch, Planned, Settings, mode_of, unique_specs

SOAK_MIN_CONNECTIONS = 1_000_000
SOAK_RSS_TOLERANCE = 0.05


def read_rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB (all threads), from /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class SoakObserver:
    """Samples the server's RSS every ``interval`` seconds during a soak run and
    gives the verdict: enough connections, zero lost, RSS flat.

    The baseline is the first sample at or after one minute (allocator pools,
    caches and the interpreter's free lists settle in the first seconds); for a
    soak shorter than 120 s it is the sample at 10 % of the duration instead,
    and the verdict says so."""

    def __init__(self, duration: float, warmup: float, interval: float = 5.0,
                 min_connections: int = SOAK_MIN_CONNECTIONS):
        self.duration, self.warmup, self.interval = duration, warmup, interval
        self.min_connections = min_connections
        total = duration + warmup
        self.baseline_at = 60.0 if duration >= 120 else 0.1 * total
        self.baseline_rule = "after the first minute" if duration >= 120 else \
            f"after 10% of the duration ({self.baseline_at:.1f}s; soak shorter than 120s)"
        self.samples: list[tuple[float, int]] = []
        self._next = 0.0
        self._pid = None

    def started(self, server):
        self._pid = server.pid
        self._sample(0.0)

    def _sample(self, elapsed):
        rss = read_rss_kb(self._pid)
        if rss is not None:
            self.samples.append((round(elapsed, 2), rss))
        self._next = elapsed + self.interval

    def tick(self, server, elapsed):
        # Sample at the interval, and exactly once as close as we can after the baseline time.
        crossed = elapsed >= self.baseline_at and not any(t >= self.baseline_at for t, _ in self.samples)
        if elapsed >= self._next or crossed:
            self._sample(elapsed)

    def finish(self, server, elapsed):
        """The end-of-run sample, taken after the client exits and before the server stops."""
        self._sample(elapsed)

    def status(self) -> str:
        return f"  rss={self.samples[-1][1] / 1024:.1f}MB" if self.samples else ""

    def annotate(self, record: dict) -> None:
        m = record["metrics"]
        base = next(((t, kb) for t, kb in self.samples if t >= self.baseline_at), None)
        end = self.samples[-1] if self.samples else None
        growth = (end[1] - base[1]) / base[1] if base and end and base[1] else None
        reasons = []
        if record["status"] != "ok":
            reasons.append(f"run failed: {record['error']}")
        completed = m.get("completed") or 0
        if completed < self.min_connections:
            reasons.append(f"only {completed:,} connections (< {self.min_connections:,})")
        if m.get("lost"):
            reasons.append(f"{m['lost']:,} connections lost")
        if growth is None:
            reasons.append("RSS could not be sampled at the baseline and the end")
        elif abs(growth) > SOAK_RSS_TOLERANCE:
            reasons.append(f"RSS not flat: {growth:+.1%} (limit ±{SOAK_RSS_TOLERANCE:.0%})")
        record["soak"] = {
            "pass": not reasons, "reasons": reasons, "baseline_rule": self.baseline_rule,
            "rss_baseline_kb": base[1] if base else None, "rss_baseline_at_s": base[0] if base else None,
            "rss_end_kb": end[1] if end else None, "rss_end_at_s": end[0] if end else None,
            "rss_growth": round_or_none(growth, 4), "rss_samples": self.samples,
            "connections": completed, "lost": m.get("lost"), "min_connections": self.min_connections,
        }


def soak(variants, *, duration: float = 600.0, out=sys.stdout, rss_interval: float = 5.0,
         min_connections: int = SOAK_MIN_CONNECTIONS, **kw) -> list[dict]:
    """One long run per variant (in turn), RSS sampled; prints PASS/FAIL per variant."""
    specs = unique_specs(variants)
    settings = Settings(kind="soak", duration=duration, repeat=1,
                        **{k: v for k, v in kw.items() if k in Settings.__dataclass_fields__})
    settings.server_cpu_mode = kw.get("server_cpu_mode") or mode_of(settings.server_cpu)
    plan = [Planned(s, 0, 0) for s in specs]
    batch = Batch(settings, total=len(plan), out=out, results_dir=kw.get("results_dir"))
    batch.appendix = lambda recs: f"\n```\n{format_soak(recs)}\n```\n"
    recs = batch.execute(plan, title=f"soak {' '.join(s.text for s in specs)}, {duration:g}s each",
                         observer_for=lambda item: SoakObserver(duration, settings.warmup, rss_interval,
                                                                min_connections))
    paths = batch.write_batch()
    print(file=out)
    print(format_soak(recs), file=out)
    print(f"results: {os.path.join(batch.root, 'runs')}" + (f"; batch summary {paths[1]}" if paths else ""),
          file=out)
    return recs


def format_soak(recs: list[dict]) -> str:
    lines = ["soak: connections, losses and server RSS per variant"]
    for r in recs:
        s = r.get("soak") or {}
        base, end = s.get("rss_baseline_kb"), s.get("rss_end_kb")
        lines.append(
            f"  {r['spec']:<28} {'PASS' if s.get('pass') else 'FAIL'}  "
            f"connections {s.get('connections') or 0:,}  lost {s.get('lost')}  "
            f"RSS {_mb(base)} ({s.get('baseline_rule', '?')}) -> {_mb(end)} at the end "
            f"({_pct(s.get('rss_growth'))})")
        for reason in s.get("reasons") or []:
            lines.append(f"      {reason}")
    return "\n".join(lines)


def _pct(x) -> str:
    return "?" if x is None else f"{x:+.1%}"


def _mb(kb) -> str:
    return "?" if kb is None else f"{kb / 1024:.1f} MB"
