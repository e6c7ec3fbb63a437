"""The benchmark runner: bench, compare, sweep and soak batches, and their tables.

Design essay.  Every figure this repository publishes is a *ratio from paired,
interleaved rounds*: on a shared 2-vCPU machine two runs of the same server
spread by ±15-25 %, while A-versus-B in the same round spreads by about ±2 %.
So a batch is a list of rounds; each round runs every spec once, in an order
rotated by one each round (round r starts at spec r mod n), each run in a fresh
server process, and ratios are taken per round before the median is taken.

One run is: start the server (behind the link's prefix and ``taskset``),
read the kernel TCP counters, the link's counters and the server's CPU time,
run the C load client to completion while showing its per-second SNAPSHOTs,
read everything again, stop the server (its STATS line), and write the record
at once.  A run is written the moment it ends, so an interrupted or crashed
batch keeps every completed run; nothing here ever rewrites a result.

Honesty rules, kept in code rather than in the README:
* server CPU per connection = (user+sys of the server over the client's life)
  / connections completed over that same life — numerator and denominator cover
  the same interval (warm-up and drain included in both);
* a run whose client used >= 90 % of a core is flagged ``client_bound``: its
  conn/s measures the client, and the table says how many runs were;
* lost connections (started, not completed) are counted and shown next to the
  rate, never folded into it;
* a run that broke (server died, client failed, timeout) is recorded as
  ``failed`` with the error and the server's stderr, and the batch goes on.

Interrupts.  Ctrl-C or SIGTERM must leave no process behind and lose no
completed run.  SIGTERM is turned into KeyboardInterrupt; while a child is being
*started* (between fork and the moment we hold its handle) the interrupt is
deferred, so there is never a child we could not stop.  On the way out the
current client and server are stopped by PID, the link's context manager
removes its namespaces, and the caller gets ``BatchInterrupted`` with the runs
that were kept.

Pinning.  With two or more CPUs the server runs on the first allowed CPU and
the client on the second, via ``taskset -c K`` placed after the link's prefix
(``ip netns exec`` and ``taskset`` both exec, so the PID we hold is the
server's and /proc/PID/stat is its CPU time).  Trade-off: on exactly two CPUs
the kernel's softirq work and everything else on the machine share those two
cores with us; that is the machine, and the environment record says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness import cpubudget, environment, kstats, noise, records, summary
from harness import servers as srv
from harness.progress import Progress

ROOT = records.ROOT
CLIENT_BOUND_SHARE = 0.90
# A budgeted server is "server-bound" when it used at least this share of its budget
# (CFS accounting lets a group overshoot a little within a period, never for long).
SERVER_BOUND_SHARE = 0.90
DEFAULT_SERVERS = ("raw_epoll", "master", "mul_thread", "alone_proc", "asyncio", "uvloop", "c_epoll")


class RunnerError(Exception):
    """A clear, user-facing reason the batch cannot run (one line, no traceback)."""


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM during a batch; ``records`` are the runs kept on disk."""

    def __init__(self, records_kept: list[dict], results: str):
        super().__init__("interrupted")
        self.records = records_kept
        self.results = results


# --------------------------------------------------------------------------- checks

def loadgen_path() -> str:
    # EVENTS_LOADGEN lets tests substitute a client that speaks the same protocol.
    return os.environ.get("EVENTS_LOADGEN") or os.path.join(srv.BUILD, "loadgen")


def check_loadgen() -> str:
    path = loadgen_path()
    if not os.access(path, os.X_OK):
        raise RunnerError(f"{os.path.relpath(path, ROOT)} is not built: run `make build` (needs gcc)")
    return path


def resolve_python(python: str | None) -> str | None:
    """The interpreter for Python servers, as an absolute path (None = the venv's).
    A pyenv shim that is on PATH but not enabled fails when run; then the
    matching ``~/.pyenv/versions/*/bin/NAME`` is used, and we say so."""
    if not python:
        return None
    candidates = []
    found = shutil.which(python) if os.sep not in python else (python if os.path.exists(python) else None)
    if found:
        candidates.append(found)
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    vdir = os.path.join(pyenv, "versions")
    if os.sep not in python and os.path.isdir(vdir):
        for v in sorted(os.listdir(vdir), reverse=True):
            p = os.path.join(vdir, v, "bin", python)
            if os.access(p, os.X_OK):
                candidates.append(p)
    for path in candidates:
        try:
            r = subprocess.run([path, "-c", "import sys; print(sys.executable)"],
                               capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0 and r.stdout.strip():
            if path != found:
                print(f"note: {python!r} on PATH does not run; using {path}", file=sys.stderr)
            return r.stdout.strip()
    if not candidates:
        raise RunnerError(f"Python interpreter {python!r} not found (give a name on PATH or a path)")
    raise RunnerError(f"Python interpreter {python!r} does not run (tried {', '.join(candidates)})")


def apply_options(specs, *, diet: bool | tuple = False, pool: str | None = None) -> list[srv.Spec]:
    """Add the run-wide diet to every spec whose server takes it and ``pool=`` to
    mul_thread specs, without overriding what a spec already says.  ``diet=True``: each
    server's full set of levers; a tuple of levers: those of them each server supports
    (ServerError if one fits none of the servers).  Specs in, Specs out."""
    parsed = [srv.parse_spec(s) for s in specs]
    if isinstance(diet, tuple):
        unfit = [lv for lv in diet if not any(lv in p.server.diet.supported for p in parsed)]
        if unfit:
            raise srv.ServerError(
                f"diet lever {', '.join(unfit)} fits none of the servers "
                + "; ".join(f"{p.text} ({p.server.diet.reason(unfit[0])})" for p in parsed))
    out = []
    for spec in parsed:
        extra = []
        accepted = srv.accepted_options(spec.server)
        supported = spec.server.diet.supported
        levers = supported if diet is True else tuple(lv for lv in supported if lv in (diet or ()))
        if levers and "diet" in accepted and spec.get("diet") is None:
            extra.append(srv.diet_text(spec.server, levers))
        if pool and "pool" in accepted and spec.get("pool") is None:
            extra.append(f"pool={pool}")
        out.append(srv.with_options(spec, extra))
    return out


def pinning(server_cores: float | None = None) -> tuple[list[str], list[str]]:
    """(server prefix, client prefix): ``taskset -c`` on two different CPUs when we may use two.
    A CPU budget above one core leaves the server unpinned (it may then use the cores
    it was given); the client keeps its own CPU."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []
    taskset = shutil.which("taskset")
    if len(cpus) < 2 or not taskset:
        return [], []
    server = [] if server_cores is not None and server_cores > 1 else [taskset, "-c", str(cpus[0])]
    return server, [taskset, "-c", str(cpus[1])]


# --------------------------------------------------------------------------- signals

class _Signals:
    """SIGTERM -> KeyboardInterrupt for the batch; ``deferred()`` postpones an
    interrupt until a child we are starting is safely in our hands."""

    def __init__(self):
        self._old: dict = {}
        self._deferring = 0
        self._pending = False

    def _handler(self, signum, frame):
        if self._deferring:
            self._pending = True
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self           # signals can only be handled in the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @contextlib.contextmanager
    def deferred(self):
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._pending:
                self._pending = False
                raise KeyboardInterrupt("deferred signal")


# --------------------------------------------------------------------------- links

@contextlib.contextmanager
def open_link(name: str, *, run_tag: str, delay=None, loss=None, out=sys.stderr):
    """harness.link's context manager, with its LinkError turned into our one-line RunnerError.
    The link is opened once per batch; its teardown runs however the batch ends."""
    from harness import link as linkmod
    try:
        spec = linkmod.parse(name)
        linkmod.check_privileges(spec)
        with linkmod.open_link(spec, run_tag=run_tag, delay=delay, loss=loss, out=out) as lk:
            yield lk
    except linkmod.LinkError as e:
        raise RunnerError(str(e)) from None


# --------------------------------------------------------------------------- the client

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
                count: int | None = None, src_addrs: int | None = None) -> list[str]:
    argv = [loadgen, "--host", host, "--port", str(port), "--concurrency", str(concurrency),
            "--size", str(size), "--warmup", _num(warmup), "--timeout-ms", str(timeout_ms),
            "--close", close_mode]
    argv += ["--count", str(count)] if count else ["--duration", _num(duration)]
    if rate:
        argv += ["--rate", _num(rate)]
    if src_addrs:
        argv += ["--src-addrs", str(src_addrs)]
    if run_id:
        argv += ["--run-id", run_id]
    return argv


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def run_client(argv: list[str], *, timeout: float, on_snapshot=None, on_tick=None,
               server_alive=None, signals: _Signals | None = None) -> ClientResult:
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
                        _parse_client_line(raw.decode("utf-8", "replace"), res, on_snapshot)
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
                _stop_pid(proc)
            res.returncode = proc.returncode
            try:
                rest = proc.stdout.read() or b""   # lines written after we stopped reading
            except (OSError, ValueError):
                rest = b""
            for raw in (buf + rest).split(b"\n"):
                _parse_client_line(raw.decode("utf-8", "replace"), res, on_snapshot)
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


def _parse_client_line(line: str, res: ClientResult, on_snapshot) -> None:
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


def _stop_pid(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop one child we started, by its PID: SIGTERM, then SIGKILL; always reaped."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        proc.wait()


# --------------------------------------------------------------------------- metrics

def compute_metrics(final: dict | None, server_cpu_s: float | None, wall_s: float | None,
                    budget: float | None = None) -> dict:
    """The figures of one run.  ``budget``: the server's CPU budget in cores (None = none);
    ``server_bound`` says the budget, not the client, set the pace: the server used at
    least SERVER_BOUND_SHARE of it and the client was not saturated."""
    final = final or {}
    completed = final.get("completed_total")
    started = final.get("started_total")
    failed = final.get("failed_total")
    lat = final.get("latency_us") or {}
    share = final.get("client_cpu_share")
    per_conn = (server_cpu_s / completed * 1e6) if server_cpu_s is not None and completed else None
    server_share = server_cpu_s / wall_s if server_cpu_s is not None and wall_s else None
    client_bound = (share >= CLIENT_BOUND_SHARE) if share is not None else None
    server_bound = None
    if budget is not None and server_share is not None and client_bound is not None:
        server_bound = bool(server_share >= SERVER_BOUND_SHARE * budget and not client_bound)
    return {
        "conn_per_s": final.get("conn_per_s"),
        "server_cpu_s": _round(server_cpu_s, 4),
        "server_cpu_us_per_conn": _round(per_conn, 2),
        "server_cpu_share": _round(server_share, 4),
        "client_cpu_share": share,
        "client_bound": client_bound,
        "server_bound": server_bound,
        "started": started,
        "completed": completed,
        "failed": failed,
        # lost = started and not completed: failed ones plus any still unfinished.
        "lost": (started - completed) if started is not None and completed is not None else None,
        "p50_us": lat.get("p50"),
        "p99_us": lat.get("p99"),
    }


def _round(x, nd):
    return None if x is None else round(x, nd)


# --------------------------------------------------------------------------- one run

@dataclass
class Settings:
    """A batch's run settings.  Their defaults live here, once: the command line's
    defaults (cli.py) and ``run_batch``'s are these (sweep and soak override repeat
    and duration, in cli.py)."""
    kind: str = "compare"
    link: str = "loopback"
    # 6 rounds: the fewest that give a 95 % distribution-free interval for the median of
    # the per-round ratios (docs/statistics.md); 5 s runs keep `make bench` near 1.5 min.
    repeat: int = 6
    duration: float = 5.0
    warmup: float = 1.0
    concurrency: int = 64
    size: int = 100
    rate: float | None = None
    delay: str | None = None
    loss: str | None = None
    python: str | None = None
    timeout_ms: int = 5000
    close_mode: str = "fin"
    idle_timeout: float | None = None
    labels: dict | None = None
    # The server's CPU budget in cores (None: none), or "auto" until calibrated; and how
    # it was chosen: "fixed" (given), "default" (the command's default), "auto", "off".
    server_cpu: float | str | None = None
    server_cpu_mode: str = "off"


@dataclass
class Planned:
    spec: srv.Spec
    round: int          # 0-based; round r starts at spec r mod n
    position: int       # 0-based position within the round
    rate: float | None = None


class _Batch:
    """The state of one batch: its link, environment, signals and kept runs."""

    def __init__(self, settings: Settings, *, total: int, out, results_dir: str | None,
                 batch_id: str | None = None):
        self.s = settings
        self.total = total
        self.out = out
        self.progress = Progress(out)
        self.root = records.results_dir(results_dir)
        self.batch_id = batch_id or records.new_id("b")
        self.records: list[dict] = []
        self.paths: list[str] = []
        self.signals = _Signals()
        self.loadgen = check_loadgen()
        self.cpu_ctl = None
        self.calibration: dict | None = None
        self.noise: dict = {}
        if settings.server_cpu is not None:
            try:
                self.cpu_ctl = cpubudget.check()
            except cpubudget.BudgetError as e:
                raise RunnerError(f"cannot hold the server to a CPU budget: {e} "
                                  f"(SERVER_CPU=off runs without one)") from None
        self.server_prefix, self.client_prefix = pinning(self._cores())
        self.link: Any = None          # the open harness.link.Link while the batch runs
        self.env: dict | None = None

    def _cores(self) -> float | None:
        c = self.s.server_cpu
        return c if isinstance(c, float) else None

    def run(self, n: int, item: Planned, *, observer=None, probe: tuple | None = None) -> dict:
        """One run, recorded.  ``probe=(cores, duration, warmup)``: a calibration probe of
        SERVER_CPU=auto instead -- the same run, short, at that budget, not recorded."""
        s, lk = self.s, self.link
        spec = srv.parse_spec(item.spec)          # a Spec already (a str is parsed)
        rate = item.rate if item.rate is not None else s.rate
        run_id = records.new_id()
        cores = probe[0] if probe else self._cores()
        duration, warmup = (probe[1], probe[2]) if probe else (s.duration, s.warmup)
        where = "soak" if s.kind == "soak" else f"r{item.round}" + (f" @{rate:,.0f}/s" if item.rate else "")
        if probe:
            where = f"calibration @{cores:g} core"
        tag = f"[{n}/{self.total} {spec.text} {where}]"
        record = {
            "schema": records.SCHEMA, "run_id": run_id, "batch_id": self.batch_id, "kind": s.kind,
            "time_utc": records.utc_now(), "spec": spec.text, "server": spec.name, "link": lk.name,
            "round": item.round, "position": item.position, "status": "ok", "error": None,
            "server_stderr_tail": None,
            "config": {"concurrency": s.concurrency, "size": s.size, "duration": duration,
                       "warmup": warmup, "rate": rate, "timeout_ms": s.timeout_ms,
                       "close_mode": s.close_mode, "python": s.python, "delay": s.delay,
                       "loss": s.loss,
                       "idle_timeout": s.idle_timeout, "argv": list(sys.argv),
                       "server_argv": None, "client_argv": None,
                       "pinning": {"server": self.server_prefix[-1:], "client": self.client_prefix[-1:]},
                       "server_cpu": cores, "server_cpu_mode": s.server_cpu_mode,
                       "variant_commit": spec.commit, "diet_levers": list(spec.levers)},
            "client": None, "server_stats": None, "snapshots": [], "metrics": compute_metrics(None, None, None),
            "kernel": None, "link_stats": None, "env": self.env, "labels": s.labels or {},
            "warnings": [], "server_cgroup": None,
        }
        if s.server_cpu_mode == "auto" and not probe:
            record["config"]["server_cpu_calibration"] = self.calibration
        server = None
        group = None
        try:
            try:
                with self.signals.deferred():
                    if cores is not None:
                        group = cpubudget.Group(self.cpu_ctl, cores)
                    server = srv.start(spec, host=lk.server_host, port=0, size=s.size,
                                       idle_timeout=s.idle_timeout, python=s.python,
                                       prefix=list(lk.server_prefix) + self.server_prefix,
                                       cgroup_procs=group.procs_file if group else None)
            except cpubudget.BudgetError as e:
                raise RunnerError(f"cannot hold the server to a CPU budget: {e}") from None
            except srv.ServerError as e:
                msg = str(e)
                record.update(status="failed", error=msg.split("\n", 1)[0],
                              server_stderr_tail=msg.split("stderr:\n", 1)[1] if "stderr:\n" in msg else None)
                self.progress.line(f"{tag} FAILED to start: {msg}")
                return record if probe else self._keep(record)
            record["config"]["server_argv"] = server.argv
            argv = client_argv(self.loadgen, lk.server_host, server.port, concurrency=s.concurrency,
                               size=s.size, duration=duration, warmup=warmup, rate=rate,
                               timeout_ms=s.timeout_ms, close_mode=s.close_mode, run_id=run_id)
            record["config"]["client_argv"] = argv
            # The round trip through the link, idle, just before the run (None on loopback).
            record["rtt"] = _guarded(lk.probe_rtt, record)
            warn = rtt_warning(record["rtt"], lk.expected_rtt_ms)
            if warn:
                record["warnings"].append(warn)
                self.progress.line(f"{tag} warning: {warn}")
            k_server0 = kstats.snapshot(lambda p: lk.read_proc(p, "server"))
            k_client0 = kstats.snapshot(lambda p: lk.read_proc(p, "client")) if lk.name != "loopback" else None
            l0 = _guarded(lk.snapshot, record)
            g0 = group.stat() if group else None
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            if observer:
                observer.started(server)

            def show(snap):
                speed = snap.get("speed") or 0
                left = f"t={snap.get('t', 0):.0f}s/{duration + warmup:.0f}s"
                extra = observer.status() if observer else ""
                self.progress.update(f"{tag} {speed:,.0f} conn/s  {left}  failed={snap.get('failed', 0)}"
                                     + extra)

            timeout = duration + warmup + s.timeout_ms / 1000 + 30
            cres = run_client(list(lk.client_prefix) + self.client_prefix + argv, timeout=timeout,
                              on_snapshot=show, server_alive=server.alive, signals=self.signals,
                              on_tick=(lambda el: observer.tick(server, el)) if observer else None)
            cpu1, t1 = server.cpu_seconds(), time.monotonic()
            g1 = group.stat() if group else None
            if observer and server.alive():
                observer.finish(server, t1 - t0)
            l1 = _guarded(lk.snapshot, record)
            k_server1 = kstats.snapshot(lambda p: lk.read_proc(p, "server"))
            k_client1 = kstats.snapshot(lambda p: lk.read_proc(p, "client")) if lk.name != "loopback" else None
            self.progress.done()
            died = not server.alive()
            exit_code = server.proc.returncode if died else None
            record["server_stats"] = server.stop()
            record["server_ready"] = server.ready
            tail = server.stderr_tail()
            record["server_stderr_tail"] = tail or None
            cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
            record.update(client=cres.final, snapshots=cres.snapshots,
                          metrics=compute_metrics(cres.final, cpu, t1 - t0, cores),
                          kernel=kstats.delta(k_server0, k_server1))
            if k_client0 is not None:
                record["kernel_client"] = kstats.delta(k_client0, k_client1)
            if group is not None:
                record["server_cgroup"] = group.record(g0, g1)
            started = (cres.final or {}).get("started_total")
            try:
                record["link_stats"] = lk.stats_between(l0, l1, started)
            except Exception as e:            # descriptive only: keep the run
                record["warnings"].append(f"link stats unavailable: {e}")
            dl_share = ((record["link_stats"] or {}).get("delayline") or {}).get("cpu_share")
            if dl_share is not None and dl_share >= CLIENT_BOUND_SHARE:
                record["warnings"].append(f"delay line saturated: it used {dl_share:.0%} of a core, "
                                          "so the link emulation, not the server, may bind conn/s")
            if died:
                record.update(status="failed",
                              error=f"server exited during the run (exit code {exit_code})")
            elif cres.error:
                record.update(status="failed", error=cres.error)
            if cres.stderr.strip():
                record["client_stderr_tail"] = cres.stderr[-2000:]
            if record["server_stats"] is None and not died:
                record["warnings"].append("server printed no STATS line on SIGTERM")
            reported = (record["server_stats"] or {}).get("diet_levers")
            if reported is not None and list(reported) != list(spec.levers) \
                    and record["status"] == "ok":
                # A server that does not report the field is not checked.
                record.update(status="failed",
                              error=f"the server applied diet levers {reported}, the spec asked for "
                                    f"{list(spec.levers)}")
            if cres.returncode == 2 and not died:
                # Bad arguments fail every run the same way: stop the batch now.
                self._keep(record)
                raise RunnerError(cres.error)
            if observer:
                observer.annotate(record)
            if probe:
                return record
            self._report(tag, record)
            return self._keep(record)
        finally:
            self.progress.done()
            if server is not None:
                # Idempotent; matters on the way out of an error or an interrupt.  Deferred,
                # so a second Ctrl-C cannot cut the stop short and leave the server running.
                with self.signals.deferred():
                    server.stop(timeout=5.0)
            if group is not None:
                # After the server is gone (its group is then empty).  A group that will
                # not go is said, never hidden; cleanup_stale retries at the next start.
                with self.signals.deferred():
                    if not group.remove():
                        msg = f"cgroup {group.path} could not be removed (still in use)"
                        record["warnings"].append(msg)
                        self.progress.line(f"{tag} warning: {msg}")

    def _keep(self, record: dict) -> dict:
        self.paths.append(records.write_record(record, self.root))
        self.records.append(record)
        return record

    def _report(self, tag: str, r: dict) -> None:
        m = r["metrics"]
        if r["status"] == "ok":
            cpu = m.get("server_cpu_us_per_conn")
            self.progress.line(
                f"{tag} {_fmt(m.get('conn_per_s'))} conn/s, server CPU "
                f"{'?' if cpu is None else f'{cpu:.1f}'} µs/conn, p99 {_ms(m.get('p99_us'))} ms, "
                f"failed {m.get('failed')}, lost {m.get('lost')}"
                + (", CLIENT-BOUND" if m.get("client_bound") else ""))
        else:
            self.progress.line(f"{tag} FAILED: {r['error']}")
            if r.get("server_stderr_tail"):
                self.progress.line("  server stderr (tail):\n    "
                                   + "\n    ".join(r["server_stderr_tail"].strip().splitlines()[-15:]))

    def execute(self, plan: list[Planned], *, observer_for=None, title: str = "") -> list[dict]:
        self.signals.install()
        try:
            with open_link(self.s.link, run_tag=self.batch_id, delay=self.s.delay, loss=self.s.loss,
                           out=self.out) as lk:
                self.link = lk
                self.env = environment.capture(lk, self.s.python)
                self.noise["start"] = noise.sample(_noise_seconds())
                self.progress.line(f"batch {self.batch_id}: {title or self.s.kind}, link {lk.name}, "
                                   f"{len(plan)} runs; results -> {self.root}")
                if self.cpu_ctl is not None:
                    cpubudget.cleanup_stale(self.cpu_ctl, out=self.out)
                    if self.s.server_cpu == "auto":
                        self.s.server_cpu = self._calibrate(_unique(p.spec for p in plan))
                        self.server_prefix, self.client_prefix = pinning(self._cores())
                    self.progress.line(self._budget_line())
                for n, item in enumerate(plan, 1):
                    self.run(n, item, observer=observer_for(item) if observer_for else None)
                self.noise["end"] = noise.sample(_noise_seconds())
        except KeyboardInterrupt:
            self.progress.done()
            self._write_batch(interrupted=True)
            raise BatchInterrupted(self.records, self.root) from None
        finally:
            self.signals.restore()
        return self.records

    def warnings(self) -> list[str]:
        return noise.warnings(self.noise, baseline_spread(self.records))

    def _budget_line(self) -> str:
        how = {"default": " (the default; SERVER_CPU=off for none)", "auto": " (calibrated)"}
        return (f"server CPU budget: {self._cores():g} core per server run, "
                f"{self.cpu_ctl.describe()}, period {cpubudget.PERIOD_US // 1000} ms"
                + how.get(self.s.server_cpu_mode, ""))

    # The client's share of its core that SERVER_CPU=auto aims for against the fastest server:
    # "well below saturation" (the client-bound flag is at 90 %).
    AUTO_TARGET = 0.70
    AUTO_PROBE = (0.4, 2.0, 0.5)        # probe budget (cores), duration, warm-up (s)

    def _calibrate(self, specs: list[srv.Spec]) -> float:
        """SERVER_CPU=auto: the largest budget (in 0.05-core steps) at which the client stays
        at or below AUTO_TARGET of its core against every server of the batch.

        A short probe of each spec at AUTO_PROBE's budget gives its server CPU per
        connection (s) and the client's CPU per connection (c); at budget B the
        server-bound rate is B/s and the client's share B*c/s, so B = target * s / c,
        the minimum over specs (the fastest server sets it).  A check probe of that
        server at B follows; while the client is still above target B shrinks and is
        checked again (three check probes at most).  The
        probes are not recorded as runs; the batch summary and every run's config keep
        the calibration."""
        cores0, dur, warm = self.AUTO_PROBE
        probes, best = [], None
        for i, spec in enumerate(specs, 1):
            rec = self.run(i, Planned(spec, -1, i - 1), probe=(cores0, dur, warm))
            m = rec["metrics"]
            row = {"spec": spec.text, "cores": cores0, "status": rec["status"],
                   "conn_per_s": m.get("conn_per_s"), "client_cpu_share": m.get("client_cpu_share"),
                   "server_cpu_share": m.get("server_cpu_share"),
                   "server_cpu_us_per_conn": m.get("server_cpu_us_per_conn")}
            probes.append(row)
            self.progress.line(f"calibration {spec.text} @{cores0:g} core: {_fmt(row['conn_per_s'])} conn/s, "
                               f"client {_pct0(row['client_cpu_share'])} of its core"
                               + ("" if rec["status"] == "ok" else f" ({rec['error']})"))
            if rec["status"] != "ok" or not m.get("conn_per_s") or not m.get("client_cpu_share") \
                    or not m.get("server_cpu_us_per_conn"):
                continue
            client_us = m["client_cpu_share"] / m["conn_per_s"] * 1e6
            b = self.AUTO_TARGET * m["server_cpu_us_per_conn"] / client_us
            if best is None or b < best[0]:
                best = (b, spec)
        if best is None:
            raise RunnerError("SERVER_CPU=auto: no calibration probe completed; give a budget "
                              "(e.g. SERVER_CPU=0.4) or SERVER_CPU=off")
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        b = _step_down(min(best[0], float(max(1, ncpu - 1))))
        check = None
        for _ in range(3):
            rec = self.run(len(specs) + 1, Planned(best[1], -1, 0), probe=(b, dur, warm))
            share = rec["metrics"].get("client_cpu_share")
            check = {"spec": best[1].text, "cores": b, "status": rec["status"],
                     "conn_per_s": rec["metrics"].get("conn_per_s"), "client_cpu_share": share}
            self.progress.line(f"calibration check {best[1].text} @{b:g} core: {_fmt(check['conn_per_s'])} "
                               f"conn/s, client {_pct0(share)} of its core")
            if share is None or share <= self.AUTO_TARGET + 0.05 or b <= 0.05:
                break
            b = _step_down(b * self.AUTO_TARGET / share)
        self.calibration = {"target_client_share": self.AUTO_TARGET, "probe_cores": cores0,
                            "probe_duration_s": dur, "probes": probes, "fastest": best[1].text,
                            "check": check, "chosen_cores": b}
        return b

    def _write_batch(self, interrupted: bool = False) -> tuple[str, str] | None:
        if not self.records:
            return None
        link = self.link.name if self.link is not None else self.s.link   # e.g. 100mbit+5ms
        summary = {"batch_id": self.batch_id, "kind": self.s.kind, "link": link,
                   "time_utc": records.utc_now(), "interrupted": interrupted,
                   "settings": self.s.__dict__, "run_ids": [r["run_id"] for r in self.records],
                   "server_cpu_calibration": self.calibration, "noise": self.noise,
                   "warnings": self.warnings(),
                   "summary": summarize(self.records)}
        md = (f"# Batch {self.batch_id} ({self.s.kind}, link {link})\n\n"
              + ("Interrupted: only the runs below were completed.\n\n" if interrupted else "")
              + format_table(self.records, markdown=True)
              + "".join(f"\n{w}\n" for w in self.warnings())
              + (f"\n```\n{format_soak(self.records)}\n```\n" if self.s.kind == "soak" else ""))
        try:
            return records.write_batch(self.batch_id, summary, md, self.root)
        except FileExistsError:
            return None


def _noise_seconds() -> float:
    """How long each noise sample lasts (EVENTS_NOISE_SAMPLE_S; tests shorten it)."""
    try:
        return max(0.05, float(os.environ.get("EVENTS_NOISE_SAMPLE_S", "1.0")))
    except ValueError:
        return 1.0


def baseline_spread(recs: list[dict], baseline: str = srv.BASELINE) -> float | None:
    """(max - min) / median of the baseline's CPU per connection over the batch's clean
    closed-loop runs (None with fewer than two)."""
    xs = [r["metrics"].get("server_cpu_us_per_conn") for r in recs
          if r.get("spec") == baseline and r.get("status") == "ok" and not (r.get("metrics") or {}).get("lost")
          and not (r.get("config") or {}).get("rate")]
    xs = [x for x in xs if x]
    if len(xs) < 2:
        return None
    return (max(xs) - min(xs)) / statistics.median(xs)


def _step_down(cores: float) -> float:
    """Round a budget down to 0.05 core (at least 0.05: the kernel's 1 ms per 20 ms)."""
    return max(0.05, int(cores * 20 + 1e-9) / 20)


def _pct0(x) -> str:
    return "?" if x is None else f"{x:.0%}"


RTT_TOLERANCE, RTT_SLACK_MS = 0.20, 0.05
LOSSY_TIMEOUT_MS = 16000


def rtt_warning(rtt: dict | None, expected_ms: float | None) -> str | None:
    """A configured delay the measurement does not show: the probe's median RTT off by
    more than 20 % (and 0.05 ms, the stack's own round trip) from twice the one-way delay."""
    if expected_ms is None:
        return None
    got = (rtt or {}).get("median_ms")
    if got is None:
        return (f"RTT not measured ({(rtt or {}).get('error') or 'no probe answered'}): "
                f"the configured delay ({expected_ms:g} ms round trip) is unverified")
    if abs(got - expected_ms) > max(RTT_TOLERANCE * expected_ms, RTT_SLACK_MS):
        return (f"RTT mismatch: measured {got:.2f} ms, the configured delay gives "
                f"{expected_ms:.2f} ms (2 x one way, tolerance {RTT_TOLERANCE:.0%})")
    return None


def _guarded(fn, record):
    """Link counters are descriptive: if reading them fails, note it and keep the run."""
    try:
        return fn()
    except Exception as e:
        record["warnings"].append(f"link counters unavailable: {e}")
        return None


def _fmt(x) -> str:
    return "?" if x is None else f"{x:,.0f}"


def _budget(cores) -> str:
    return "off" if cores is None else f"{cores:g} core"


def _ms(us) -> str:
    return "?" if us is None else f"{us / 1000:.2f}"


# --------------------------------------------------------------------------- batches

def make_plan(specs: list, repeat: int, rates: list | None = None) -> list[Planned]:
    """Rounds of every spec, the order rotated by one each round; for a sweep, the
    rounds of each offered rate in increasing order."""
    plan = []
    n = len(specs)
    for rate in (rates or [None]):
        for r in range(repeat):
            for pos in range(n):
                plan.append(Planned(specs[(r + pos) % n], r, pos, rate))
    return plan


def _unique(specs) -> list[srv.Spec]:
    """Specs (texts are parsed), each once."""
    seen, out = set(), []
    for s in specs:
        spec = srv.parse_spec(s)
        if spec.text not in seen:
            seen.add(spec.text)
            out.append(spec)
    return out


def run_batch(specs, *, kind: str = "compare", out=sys.stdout, results_dir: str | None = None,
              rates: list | None = None, show_table: bool = True,
              server_cpu_mode: str | None = None, **settings_kw) -> list[dict]:
    """Run ``repeat`` interleaved rounds of ``specs`` (Specs, or texts parsed here) and
    return the run records (failed runs included).  ``settings_kw``: the fields of
    :class:`Settings` (link, repeat, duration, ...), defaults there.  Each record is on
    disk when its run ends.  Raises ServerError (unknown spec), RunnerError (cannot run),
    BatchInterrupted."""
    settings = Settings(kind=kind, **settings_kw)
    repeat, duration, warmup = settings.repeat, settings.duration, settings.warmup
    concurrency, size, loss, timeout_ms = settings.concurrency, settings.size, settings.loss, \
        settings.timeout_ms
    specs = _unique(specs)
    if not specs:
        raise RunnerError("no servers to run")
    if repeat < 1 or duration <= 0 or warmup < 0 or concurrency < 1 or size < 1:
        raise RunnerError("repeat, duration, concurrency and size must be positive (warmup >= 0)")
    if loss and timeout_ms < LOSSY_TIMEOUT_MS:
        # A lost SYN or SYN-ACK costs 1 s, then 2, 4, 8 (doubling): four handshake attempts
        # need 15 s.  Under random loss a slow connection is data, not a lost one.
        print(f"note: LOSS={loss}: per-connection timeout raised from {timeout_ms} to "
              f"{LOSSY_TIMEOUT_MS} ms so that retransmitted handshakes (1+2+4+8 s) are "
              "not counted as lost", file=out)
        settings.timeout_ms = LOSSY_TIMEOUT_MS
    settings.server_cpu_mode = server_cpu_mode or _mode_of(settings.server_cpu)
    plan = make_plan(specs, repeat, rates)
    batch = _Batch(settings, total=len(plan), out=out, results_dir=results_dir)
    recs = batch.execute(plan, title=f"{kind} {' '.join(s.text for s in specs)}, "
                                     f"{repeat} round(s) of {duration:g}s")
    paths = batch._write_batch()
    if show_table:
        print(file=out)
        print_table(recs, out=out)
        for w in batch.warnings():
            print(w, file=out)
        where = f"results: {len(recs)} run file(s) in {os.path.join(batch.root, 'runs')}, " \
                f"rows appended to {os.path.join(batch.root, 'runs.csv')}"
        if paths:
            where += f"; batch summary {paths[1]}"
        print(where, file=out)
    return recs


def _mode_of(server_cpu) -> str:
    return "off" if server_cpu is None else ("auto" if server_cpu == "auto" else "fixed")


# --------------------------------------------------------------------------- soak

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
            "rss_growth": _round(growth, 4), "rss_samples": self.samples,
            "connections": completed, "lost": m.get("lost"), "min_connections": self.min_connections,
        }


def soak(variants, *, duration: float = 600.0, out=sys.stdout, rss_interval: float = 5.0,
         min_connections: int = SOAK_MIN_CONNECTIONS, **kw) -> list[dict]:
    """One long run per variant (in turn), RSS sampled; prints PASS/FAIL per variant."""
    specs = _unique(variants)
    settings = Settings(kind="soak", duration=duration, repeat=1,
                        **{k: v for k, v in kw.items() if k in Settings.__dataclass_fields__})
    settings.server_cpu_mode = kw.get("server_cpu_mode") or _mode_of(settings.server_cpu)
    plan = [Planned(s, 0, 0) for s in specs]
    batch = _Batch(settings, total=len(plan), out=out, results_dir=kw.get("results_dir"))
    recs = batch.execute(plan, title=f"soak {' '.join(s.text for s in specs)}, {duration:g}s each",
                         observer_for=lambda item: SoakObserver(duration, settings.warmup, rss_interval,
                                                                min_connections))
    paths = batch._write_batch()
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


# --------------------------------------------------------------------------- summary and table

def summarize(recs: list[dict], baseline: str | None = None) -> list[dict]:
    """The batch's rows, from the one summary engine (harness/summary.py: which runs
    count, the group and pairing keys, the baseline rule, the interval and the verdict).
    ``ok`` is kept as the name of the clean-run count for readers of older summaries."""
    rows = summary.summarize(recs, baseline)
    for r in rows:
        r["ok"] = r["clean"]
    return rows


def format_table(recs: list[dict], *, markdown: bool = False) -> str:
    rows = summarize(recs)
    if not rows:
        return "(no runs)\n"
    sweep = any(r["rate"] is not None for r in rows)
    budgeted = any(r["budget"] != "off" for r in rows)
    links = len({r["link"] for r in rows}) > 1
    shapes = len({(r["concurrency"], r["size"]) for r in rows}) > 1
    # Shown only when measured (linked runs): the round trip and the packets the link dropped.
    rtt = any(r.get("rtt_ms_median") is not None for r in rows)
    drops = any(r.get("rtt_expected_ms") is not None or r.get("link_drops") for r in rows)
    pythons = len({r["python"] for r in rows}) > 1
    bases = {r["baseline"] for r in rows}
    several = len(bases) > 1
    base = "base" if several else (next(iter(bases)) or srv.BASELINE)
    head = ["spec"] + (["link"] if links else []) + (["conc/size"] if shapes else []) \
        + (["python"] if pythons else []) \
        + (["offered/s"] if sweep else []) + (["CPU budget"] if budgeted else []) \
        + (["baseline"] if several else []) + [
        "runs clean/excl.", "conn/s median [min–max]", f"conn/s ×{base} [CI]", "verdict",
        "server CPU µs/conn", f"CPU ×{base} [CI]", "CPU verdict", "conn/s × CPU", "pairs",
        "p99 ms", "failed/lost", "client-bound"] \
        + (["server-bound"] if budgeted else []) + (["RTT ms"] if rtt else []) + (["pkt drops"] if drops else [])
    body = []
    for r in rows:
        cps = "?" if r["conn_per_s_median"] is None else \
            f"{r['conn_per_s_median']:,.0f} [{r['conn_per_s_min']:,.0f}–{r['conn_per_s_max']:,.0f}]"
        if r["rate"] and r["conn_per_s_median"] is not None \
                and r["conn_per_s_median"] < summary.SUSTAINED_SHARE * r["rate"]:
            cps += " short"
        cpu = r["server_cpu_us_per_conn_median"]
        isb = r["is_baseline"]
        body.append([r["spec"]] + ([str(r["link"])] if links else [])
                    + ([f"{r['concurrency']}/{r['size']}"] if shapes else [])
                    + ([r["python"]] if pythons else [])
                    + ([_fmt(r["rate"])] if sweep else [])
                    + ([_budget(r["server_cpu"])] if budgeted else [])
                    + ([str(r["baseline"])] if several else []) + [
            f"{r['clean']}/{r['excluded']}", cps,
            "1 (baseline)" if isb else summary.ratio_text(r["ratio_conn_to_baseline"],
                                                          r["ratio_conn_interval"]),
            "–" if isb else summary.verdict_text(r, "conn"),
            "?" if cpu is None else f"{cpu:.1f}",
            "1 (baseline)" if isb else summary.ratio_text(r["ratio_cpu_to_baseline"],
                                                          r["ratio_cpu_interval"]),
            "–" if isb else summary.verdict_text(r, "cpu"),
            # Open loop: conn/s is the offered rate, so it cannot cross-check CPU.
            "–" if isb or r["rate"] else summary.consistency_text(r["consistency"]),
            summary.pairs_text(r),
            _ms(r["p99_us_median"]), f"{r['failed']}/{r['lost']}", f"{r['client_bound']}/{r['clean']}"]
            + ([f"{r['server_bound']}/{r['clean']}"] if budgeted else [])
            + ([_rtt_cell(r)] if rtt else [])
            + ([_fmt(r.get("link_drops"))] if drops else []))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        fmt = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                    for i, (c, w) in enumerate(zip(row, widths)))
        lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(row) for row in body]
    notes = [f"Ratios: median over rounds of (spec ÷ {base} in the same round). " + summary.INTERVAL_NOTE,
             "runs clean/excl.: runs that failed or lost connections are excluded from every median "
             f"and ratio, and counted here. client-bound: runs whose client used ≥{CLIENT_BOUND_SHARE:.0%} "
             "of a core (their conn/s measures the client)."]
    notes.append(f"conn/s × CPU: the conn/s ratio times the CPU ratio, 1.00 when conn/s is what CPU per "
                 f"connection predicts; '!' marks a gap over {summary.CONSISTENCY_TOLERANCE:.0%} "
                 "(expected for client-bound runs, a warning for server-bound ones).")
    if sweep:
        notes.append(f"Open loop: 'short' marks an offered rate the server did not sustain (< "
                     f"{summary.SUSTAINED_SHARE:.0%} of it completed); CPU per connection compares servers "
                     "like for like only at a rate all of them sustain.")
    commits = {r["spec"]: r["variant_commit"] for r in rows if r.get("variant_commit")}
    if commits:
        notes.append("Revisions: " + ", ".join(f"{s} = {c[:12]}" for s, c in commits.items())
                     + " (library code from git; the plain name runs the working tree).")
    if budgeted:
        notes.append(f"CPU budget: the server ran in a cgroup with a CFS quota of that many cores; "
                     f"server-bound: runs where it used ≥{SERVER_BOUND_SHARE:.0%} of its budget and the "
                     "client was not saturated (their conn/s measures the server).")
    if any(r["failed_runs"] for r in rows):
        notes.append("Failed runs are kept on disk with their error and the server's stderr.")
    if rtt:
        notes.append("RTT: median of a TCP-connect probe through the link before each run "
                     "(idle link); in brackets, twice the configured one-way delay; '!' marks "
                     "runs where they differ by more than 20 %. pkt drops: packets the link "
                     "dropped (random loss, queues), summed over runs.")
        for r in rows:
            if r.get("rtt_ms_median") and r["concurrency"] and r["rate"] is None:
                notes.append(f"Round-trip bound on {r['link']}: a connection costs at least two "
                             f"round trips (handshake, then request and echo), so {r['concurrency']} "
                             f"in flight cannot exceed {r['concurrency']} ÷ (2 × "
                             f"{r['rtt_ms_median']:.2f} ms) ≈ "
                             f"{r['concurrency'] / (2 * r['rtt_ms_median'] / 1e3):,.0f} conn/s.")
                break
    notes += diet_notes(recs)
    for r in rows:
        if r.get("rtt_warnings"):
            notes.append(f"WARNING: {r['spec']} on {r['link']}: {r['rtt_warnings']} run(s) measured an "
                         f"RTT of {_ms_f(r.get('rtt_ms_median'))} ms where the configured delay "
                         f"gives {_ms_f(r.get('rtt_expected_ms'))} ms: the delay is not what the "
                         "link applied (see the runs' warnings).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def diet_notes(recs: list[dict]) -> list[str]:
    """When a run of the table ran a diet: per server that did, the levers it cannot take
    and why (the same lever names for every server; options.py)."""
    names = list(dict.fromkeys(r.get("server") for r in recs
                               if (r.get("config") or {}).get("diet_levers")))
    notes = []
    for name in names:
        server = srv.SERVERS.get(name) or srv.OWN_SERVERS.get(name)
        missing = server.diet.missing() if server else ()
        if server and missing:
            notes.append(f"Diet: {name}: {', '.join(missing)} not applied ({server.diet.summary}).")
    return notes


def _ms_f(x) -> str:
    return "?" if x is None else f"{x:.2f}"


def _rtt_cell(r: dict) -> str:
    cell = _ms_f(r.get("rtt_ms_median"))
    if r.get("rtt_expected_ms") is not None:
        cell += f" ({r['rtt_expected_ms']:g})"
    return cell + (" !" if r.get("rtt_warnings") else "")


def print_table(recs: list[dict], out=sys.stdout) -> None:
    print(format_table(recs), file=out, end="")
    out.flush()
