"""The C load client (build/loadgen) as a child process: its command line, its output
read live (one SNAPSHOT line a second, one FINAL line at the end; docs/architecture.md
section 3).  The figures of one run are computed from it by the metrics table
(harness/metrics.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from harness.metrics import CLIENT_BOUND_SHARE
from harness.procs import ROOT, Signals, stop_pid


@dataclass
class ClientResult:
    final: dict | None = None
    snapshots: list = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""
    error: str | None = None          # why the run is not usable, if it is not
    wall_s: float = 0.0


def client_argv(loadgen: str, host: str, port: int, *, concurrency: int, size: int,
                duration: float | None, warmup: float, rate: float | None,
                timeout_ms: int, close_mode: str, run_id: str | None = None,
                count: int | None = None, src_addrs: int | None = None,
                clients: int = 1) -> list[str]:
    argv = [loadgen, "--host", host, "--port", str(port), "--concurrency", str(concurrency),
            "--size", str(size), "--warmup", _num(warmup), "--timeout-ms", str(timeout_ms),
            "--close", close_mode]
    argv += ["--count", str(count)] if count else ["--duration", _num(duration)]
    if rate:
        argv += ["--rate", _num(rate)]
    if src_addrs:
        argv += ["--src-addrs", str(src_addrs)]
    if clients > 1:                     # N client processes, one output stream (loadgen.c)
        argv += ["--clients", str(clients)]
    if run_id:
        argv += ["--run-id", run_id]
    return argv


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def run_client(argv: list[str], *, timeout: float, on_snapshot=None, on_tick=None,
               server_alive=None, signals: Signals | None = None) -> ClientResult:
    """Run the load client to completion, parsing SNAPSHOT lines live and the FINAL line.
    ``server_alive()`` is polled: if the server dies the client is stopped early
    (it would only collect refusals).  ``on_tick(elapsed)`` is called about once a
    second.  The client is always gone when this returns or raises."""
    res = ClientResult()
    errf = tempfile.TemporaryFile(mode="w+b", prefix="events-loadgen-err-")
    proc = None
    buf = b""
    t0 = time.monotonic()
    try:
        # Deferred: an interrupt arriving during Popen is raised only once `proc` is
        # assigned, inside this try, so the finally below always stops the client.
        with signals.deferred() if signals else contextlib.nullcontext():
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=errf, cwd=ROOT)
            except OSError as e:
                res.error = f"cannot start the load client: {e}"
        if proc is None:
            return res
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        fd = proc.stdout.fileno()
        last_tick = t0
        eof = False
        try:
            while not eof:
                now = time.monotonic()
                if now - t0 > timeout:
                    res.error = f"load client did not finish within {timeout:.0f}s; killed"
                    break
                if server_alive is not None and not server_alive():
                    res.error = "server exited during the run"
                    break
                for _key, _ in sel.select(0.25):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        eof = True
                        break
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        parse_client_line(raw.decode("utf-8", "replace"), res, on_snapshot)
                if on_tick and now - last_tick >= 1.0:
                    last_tick = now
                    on_tick(now - t0)
            if eof:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    res.error = "load client closed its output but did not exit; killed"
        finally:
            sel.close()
    finally:
        res.wall_s = time.monotonic() - t0
        if proc is not None:
            with signals.deferred() if signals else contextlib.nullcontext():
                stop_pid(proc)
            res.returncode = proc.returncode
            try:
                rest = proc.stdout.read() or b""   # lines written after we stopped reading
            except (OSError, ValueError):
                rest = b""
            for raw in (buf + rest).split(b"\n"):
                parse_client_line(raw.decode("utf-8", "replace"), res, on_snapshot)
            proc.stdout.close()
        errf.seek(0)
        res.stderr = errf.read().decode("utf-8", "replace")[-4000:]
        errf.close()
    if res.error is None:
        if res.returncode == 2:
            res.error = "load client rejected its arguments: " + (res.stderr.strip() or "exit 2")
        elif res.returncode != 0:
            res.error = f"load client failed (exit {res.returncode}): {res.stderr.strip()[-500:]}"
        elif res.final is None:
            res.error = "load client printed no FINAL line"
    return res


def parse_client_line(line: str, res: ClientResult, on_snapshot) -> None:
    line = line.strip()
    if line.startswith("SNAPSHOT "):
        try:
            snap = json.loads(line[9:])
        except ValueError:
            return
        res.snapshots.append(snap)
        if on_snapshot:
            on_snapshot(snap)
    elif line.startswith("FINAL "):
        try:
            res.final = json.loads(line[6:])
        except ValueError:
            res.error = "load client printed an unreadable FINAL line"


def format_final(f: dict) -> str:
    lat = f.get("latency_us") or {}
    fails = {k: v for k, v in (f.get("failures") or {}).items() if v}
    lost = (f.get("started_total") or 0) - (f.get("completed_total") or 0)
    share = f.get("client_cpu_share")
    return "\n".join([
        f"mode {f.get('mode')}, concurrency {f.get('concurrency')}, size {f.get('size')} B, "
        f"measured {f.get('measured_s')} s (warm-up {f.get('warmup_s')} s), close {f.get('close_mode')}",
        f"rate        {_count(f.get('conn_per_s'))} conn/s"
        + (f"  (offered {_count(f.get('rate'))}/s)" if f.get("rate") else ""),
        f"connections started {_count(f.get('started_total'))}, completed {_count(f.get('completed_total'))}, "
        f"failed {_count(f.get('failed_total'))}, lost {_count(lost)}"
        + (f"  failures: {', '.join(f'{k} {v}' for k, v in fails.items())}" if fails else ""),
        f"latency ms  p50 {_ms(lat.get('p50'))}  p90 {_ms(lat.get('p90'))}  p99 {_ms(lat.get('p99'))}  "
        f"p99.9 {_ms(lat.get('p999'))}  max {_ms(lat.get('max'))}",
        f"client CPU  {'?' if share is None else f'{share:.0%}'} of a core"
        + ("  (CLIENT-BOUND: the rate measures the client)"
           if share is not None and share >= CLIENT_BOUND_SHARE else ""),
    ])


def _count(x) -> str:
    return "?" if x is None else f"{x:,.0f}"


def _ms(us) -> str:
    return "?" if us is None else f"{us / 1000:.2f}"
