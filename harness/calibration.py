"""SERVER_CPU=auto: the CPU budget a batch holds its servers to, calibrated per batch.

The largest budget (in 0.05-core steps) at which the load client stays at or below
AUTO_TARGET of its core against every server of the batch.  A short probe of each spec
at AUTO_PROBE's budget gives its server CPU per connection (s) and the client's CPU per
connection (c); at budget B the server-bound rate is B/s and the client's share B*c/s,
so B = target * s / c, the minimum over specs (the fastest server sets it).  A check
probe of that server at B follows; while the client is still above target B shrinks and
is checked again (three check probes at most).  The probes are not recorded as runs;
the batch summary and every run's config keep the calibration.

The runs themselves are the batch's (runner.Batch.run with ``probe=``), passed in as a
function, so this module needs nothing of the runner's.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from harness.procs import RunnerError
from harness.tables import fmt_count

# The client's share of its core that SERVER_CPU=auto aims for against the fastest server:
# "well below saturation" (the client-bound flag is at 90 %).
AUTO_TARGET = 0.70
AUTO_PROBE = (0.4, 2.0, 0.5)        # probe budget (cores), duration, warm-up (s)


def calibrate(run: Callable[[int, Any, int, tuple], dict], specs: list, progress) -> tuple[float, dict]:
    """(the budget in cores, the calibration record).  ``run(n, spec, position, probe)``
    runs one probe (probe = (cores, duration, warm-up)) and returns its record."""
    cores0, dur, warm = AUTO_PROBE
    probes, best = [], None
    for i, spec in enumerate(specs, 1):
        rec = run(i, spec, i - 1, (cores0, dur, warm))
        m = rec["metrics"]
        row = {"spec": spec.text, "cores": cores0, "status": rec["status"],
               "conn_per_s": m.get("conn_per_s"), "client_cpu_share": m.get("client_cpu_share"),
               "server_cpu_share": m.get("server_cpu_share"),
               "server_cpu_us_per_conn": m.get("server_cpu_us_per_conn")}
        probes.append(row)
        progress.line(f"calibration {spec.text} @{cores0:g} core: {fmt_count(row['conn_per_s'])} conn/s, "
                      f"client {pct0(row['client_cpu_share'])} of its core"
                      + ("" if rec["status"] == "ok" else f" ({rec['error']})"))
        if rec["status"] != "ok" or not m.get("conn_per_s") or not m.get("client_cpu_share") \
                or not m.get("server_cpu_us_per_conn"):
            continue
        client_us = m["client_cpu_share"] / m["conn_per_s"] * 1e6
        b = AUTO_TARGET * m["server_cpu_us_per_conn"] / client_us
        if best is None or b < best[0]:
            best = (b, spec)
    if best is None:
        raise RunnerError("SERVER_CPU=auto: no calibration probe completed; give a budget "
                          "(e.g. SERVER_CPU=0.4) or SERVER_CPU=off")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    b = step_down(min(best[0], float(max(1, ncpu - 1))))
    check = None
    for _ in range(3):
        rec = run(len(specs) + 1, best[1], 0, (b, dur, warm))
        share = rec["metrics"].get("client_cpu_share")
        check = {"spec": best[1].text, "cores": b, "status": rec["status"],
                 "conn_per_s": rec["metrics"].get("conn_per_s"), "client_cpu_share": share}
        progress.line(f"calibration check {best[1].text} @{b:g} core: {fmt_count(check['conn_per_s'])} "
                      f"conn/s, client {pct0(share)} of its core")
        if share is None or share <= AUTO_TARGET + 0.05 or b <= 0.05:
            break
        b = step_down(b * AUTO_TARGET / share)
    return b, {"target_client_share": AUTO_TARGET, "probe_cores": cores0,
               "probe_duration_s": dur, "probes": probes, "fastest": best[1].text,
               "check": check, "chosen_cores": b}


def step_down(cores: float) -> float:
    """Round a budget down to 0.05 core (at least 0.05: the kernel's 1 ms per 20 ms)."""
    return max(0.05, int(cores * 20 + 1e-9) / 20)


def pct0(x) -> str:
    return "?" if x is None else f"{x:.0%}"
