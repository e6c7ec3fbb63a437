"""The benchmark runner: bench, compare, sweep and soak batches.

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

Where the parts are: harness/procs.py starts and stops processes (interpreters, pinning,
signals); harness/client.py runs the load client and turns its output into a run's
metrics; harness/tables.py writes the batch table; harness/soak.py is the soak mode.
This module plans a batch and runs it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from harness import calibration, cpubudget, environment, kstats, noise, records, runrecord
from harness import servers as srv
from harness.client import client_argv, run_client
from harness.metrics import CLIENT_BOUND_SHARE, compute_metrics
from harness.procs import RunnerError, Signals, check_loadgen, pinning, spread
from harness.servers import workers as wk
from harness.progress import Progress
from harness.summary import BASELINE
from harness.tables import fmt_count, fmt_ms, format_table, print_table, summarize

# The references and every variant, in the server table's order (servers.SERVERS.default_servers).
DEFAULT_SERVERS = srv.SERVERS.default_servers()


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM during a batch; ``records`` are the runs kept on disk."""

    def __init__(self, records_kept: list[dict], results: str):
        super().__init__("interrupted")
        self.records = records_kept
        self.results = results


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


@dataclass
class Settings:
    """A batch's run settings.  Their defaults live here, once: the command line's
    defaults (cmdline.add_common) and ``run_batch``'s are these (sweep and soak override
    repeat and duration, in cli.py)."""
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
    clients: int = 1            # load client processes sharing the concurrency (CLIENTS=)


@dataclass
class Planned:
    spec: srv.Spec
    round: int          # 0-based; round r starts at spec r mod n
    position: int       # 0-based position within the round
    rate: float | None = None
    concurrency: int | None = None      # this run's, else the batch's (sweep-concurrency)
    server_cpu: float | None = None     # this run's budget per worker, else the batch's (scale)


@dataclass
class RunPlan:
    """One run as Batch.run's phases pass it on: what runs and its record."""
    n: int
    spec: srv.Spec
    tag: str
    record: dict
    conc: int
    rate: float | None
    duration: float
    warmup: float
    loops: int
    loop_mode: str
    cores: float | None
    prefixes: list
    client_prefix: list
    server: Any = None
    group: Any = None


@dataclass
class Measured:
    """What the measure phase read: the client's result and the counters around the run."""
    cres: Any
    cpu: float | None
    wall: float
    k_server: tuple
    k_client: tuple
    link: tuple
    cgroup: tuple
    died: bool
    exit_code: int | None


class Batch:
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
        self.signals = Signals()
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
        # (records) -> markdown added to the batch's .md file (the soak's verdicts)
        self.appendix: Callable[[list[dict]], str] | None = None
        self.env: dict | None = None

    def _cores(self) -> float | None:
        c = self.s.server_cpu
        return c if isinstance(c, float) else None

    def run(self, n: int, item: Planned, *, observer=None, probe: tuple | None = None) -> dict:
        """One run, recorded.  ``probe=(cores, duration, warmup)``: a calibration probe of
        SERVER_CPU=auto instead -- the same run, short, at that budget, not recorded.
        The phases: plan (what runs, its record), start (the server in its budget),
        measure (the load client, the counters around it), collect (the figures into the
        record), judge (ok or failed), keep (written, reported); stop in every case."""
        p = self._plan(n, item, probe)
        try:
            if not self._start(p):
                return p.record if probe else self._keep(p.record)
            got = self._measure(p, observer)
            self._collect(p, got)
            self._judge(p, got)
            if observer:
                observer.annotate(p.record)
            if probe:
                return p.record
            self._report(p.tag, p.record)
            return self._keep(p.record)
        finally:
            self._stop(p)

    def _plan(self, n: int, item: Planned, probe: tuple | None) -> RunPlan:
        """What runs: the spec, its budget, pinning, duration and warm-up, and its record."""
        s, lk = self.s, self.link
        spec = srv.parse_spec(item.spec)          # a Spec already (a str is parsed)
        rate = item.rate if item.rate is not None else s.rate
        conc = item.concurrency or s.concurrency
        run_id = records.new_id()
        # N event loops (spec loops=N, harness/servers/workers.py): one cgroup holds them all,
        # at N x the per-worker budget, and the pinning spreads them (procs.spread).
        loops, loop_mode = wk.loops_of(spec)
        per_worker = item.server_cpu if item.server_cpu is not None else self._cores()
        cores = probe[0] if probe else (None if per_worker is None else per_worker * loops)
        prefixes, client_prefix, pin = [self.server_prefix], self.client_prefix, None
        if loops > 1 or s.clients > 1:
            prefixes, client_prefix, pin = spread(loops, per_worker, loop_mode == wk.THREADS, s.clients)
        duration, warmup = (probe[1], probe[2]) if probe else (s.duration, s.warmup)
        if not probe:                 # PyPy's JIT: a longer default warm-up (interp.PYPY_WARMUP)
            warmup = srv.interp.warmup_for(spec, warmup, s.python, Settings.warmup)
        where = "soak" if s.kind == "soak" else f"r{item.round}" + (f" @{rate:,.0f}/s" if item.rate else "") \
            + (f" c={conc}" if item.concurrency else "")
        if probe:
            where = f"calibration @{cores:g} core"
        tag = f"[{n}/{self.total} {spec.text} {where}]"
        record = runrecord.new_run(
            run_id=run_id, batch_id=self.batch_id, kind=s.kind, spec=spec.text, server=spec.name,
            link=lk.name, round=item.round, position=item.position, env=self.env,
            labels=s.labels or {},
            config={"concurrency": conc, "size": s.size, "duration": duration,
                    "warmup": warmup, "rate": rate, "timeout_ms": s.timeout_ms,
                    "close_mode": s.close_mode, "python": s.python, "delay": s.delay,
                    "loss": s.loss,
                    "idle_timeout": s.idle_timeout, "argv": list(sys.argv),
                    "server_argv": None, "client_argv": None,
                    "pinning": pin or {"server": self.server_prefix[-1:], "client": self.client_prefix[-1:]},
                    "workers": loops, "worker_mode": loop_mode, "server_cpu_per_worker": per_worker,
                    "clients": s.clients,
                    "server_cpu": cores, "server_cpu_mode": s.server_cpu_mode,
                    "variant_commit": spec.commit, "diet_levers": list(spec.levers),
                    **srv.interp.record_config(spec)})     # python=, compiled (issue 25)
        if s.server_cpu_mode == "auto" and not probe:
            record["config"]["server_cpu_calibration"] = self.calibration
        return RunPlan(n, spec, tag, record, conc, rate, duration, warmup, loops, loop_mode, cores,
                       prefixes, client_prefix)

    def _start(self, p: RunPlan) -> bool:
        """The server, in its CPU budget's cgroup; False (the record says why) if it did not start."""
        s, lk, record = self.s, self.link, p.record
        try:
            with self.signals.deferred():
                if p.cores is not None:
                    p.group = cpubudget.Group(self.cpu_ctl, p.cores)
                p.server = wk.start(p.spec, host=lk.server_host, size=s.size,
                                    idle_timeout=s.idle_timeout, python=s.python,
                                    prefixes=[list(lk.server_prefix) + x for x in p.prefixes],
                                    cgroup_procs=p.group.procs_file if p.group else None)
        except cpubudget.BudgetError as e:
            raise RunnerError(f"cannot hold the server to a CPU budget: {e}") from None
        except srv.ServerError as e:
            msg = str(e)
            record.update(status="failed", error=msg.split("\n", 1)[0],
                          server_stderr_tail=msg.split("stderr:\n", 1)[1] if "stderr:\n" in msg else None)
            self.progress.line(f"{p.tag} FAILED to start: {msg}")
            return False
        record["config"]["server_argv"] = p.server.argv
        record["config"]["hash_seed"] = p.server.hash_seed      # setup randomization (servers.random_hash_seed)
        return True

    def _measure(self, p: RunPlan, observer) -> Measured:
        """The load client against the server, with the kernel's, the link's and the
        cgroup's counters and the server's CPU time read around it."""
        s, lk, record, server, group = self.s, self.link, p.record, p.server, p.group
        tag, duration, warmup = p.tag, p.duration, p.warmup
        argv = client_argv(self.loadgen, lk.server_host, server.port, concurrency=p.conc,
                           size=s.size, duration=duration, warmup=warmup, rate=p.rate,
                           timeout_ms=s.timeout_ms, close_mode=s.close_mode, run_id=record["run_id"],
                           clients=s.clients)
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
        cres = run_client(list(lk.client_prefix) + p.client_prefix + argv, timeout=timeout,
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
        return Measured(cres, (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
                        t1 - t0, (k_server0, k_server1), (k_client0, k_client1), (l0, l1), (g0, g1),
                        died, exit_code)

    def _collect(self, p: RunPlan, got: Measured) -> None:
        """The run's figures into its record: the server's STATS, the metrics table's
        figures (harness/metrics.py), the kernel's, the cgroup's and the link's counters."""
        lk, record, server, group, cres = self.link, p.record, p.server, p.group, got.cres
        record["server_stats"] = server.stop()
        record["server_ready"] = server.ready
        tail = server.stderr_tail()
        record["server_stderr_tail"] = tail or None
        record.update(client=cres.final, snapshots=cres.snapshots,
                      # Events per pass from the STATS line (None where not counted).
                      metrics=compute_metrics(cres.final, got.cpu, got.wall, p.cores,
                                              stats=record["server_stats"]),
                      kernel=kstats.delta(*got.k_server))
        if p.loops > 1 or self.s.clients > 1:
            record["warnings"] += worker_warnings(record, p.loop_mode, self.env)
        if got.k_client[0] is not None:
            record["kernel_client"] = kstats.delta(*got.k_client)
        if group is not None:
            record["server_cgroup"] = group.record(*got.cgroup)
        started = (cres.final or {}).get("started_total")
        try:
            record["link_stats"] = lk.stats_between(*got.link, started)
        except Exception as e:            # descriptive only: keep the run
            record["warnings"].append(f"link stats unavailable: {e}")
        dl_share = ((record["link_stats"] or {}).get("delayline") or {}).get("cpu_share")
        if dl_share is not None and dl_share >= CLIENT_BOUND_SHARE:
            record["warnings"].append(f"delay line saturated: it used {dl_share:.0%} of a core, "
                                      "so the link emulation, not the server, may bind conn/s")

    def _judge(self, p: RunPlan, got: Measured) -> None:
        """ok or failed, and why: the server died, the client failed, the server applied
        other diet levers than the spec asked for.  A client that refused its arguments
        stops the batch (every run would fail the same way)."""
        record, cres, died, spec = p.record, got.cres, got.died, p.spec
        if died:
            record.update(status="failed",
                          error=f"server exited during the run (exit code {got.exit_code})")
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

    def _stop(self, p: RunPlan) -> None:
        """The server stopped and its cgroup removed, whatever happened before."""
        record, tag, server, group = p.record, p.tag, p.server, p.group
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
                f"{tag} {fmt_count(m.get('conn_per_s'))} conn/s, server CPU "
                f"{'?' if cpu is None else f'{cpu:.1f}'} µs/conn, p99 {fmt_ms(m.get('p99_us'))} ms, "
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
                        self.s.server_cpu, self.calibration = calibration.calibrate(
                            lambda n, spec, pos, probe: self.run(n, Planned(spec, -1, pos), probe=probe),
                            unique_specs(p.spec for p in plan), self.progress)
                        self.server_prefix, self.client_prefix = pinning(self._cores())
                    self.progress.line(self._budget_line())
                for n, item in enumerate(plan, 1):
                    self.run(n, item, observer=observer_for(item) if observer_for else None)
                self.noise["end"] = noise.sample(_noise_seconds())
        except KeyboardInterrupt:
            self.progress.done()
            self.write_batch(interrupted=True)
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

    def write_batch(self, interrupted: bool = False) -> tuple[str, str] | None:
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
              + (self.appendix(self.records) if self.appendix else ""))
        try:
            return records.write_batch(self.batch_id, summary, md, self.root)
        except FileExistsError:
            return None


def worker_warnings(record: dict, mode: str, env: dict | None) -> list[str]:
    """What a run of N event loops must say beside its figures: each worker's share of the
    connections served (``workers``: an idle worker is visible), a worker that served
    nothing, the server and the client sharing cores, threads under the GIL."""
    stats = record.get("server_stats") or {}
    served = [w.get("served") for w in stats.get("workers") or []]
    total = sum(x for x in served if x)
    record["workers"] = [{**w, "share": round(w["served"] / total, 4) if total and w.get("served") is not None
                          else None} for w in stats.get("workers") or []]
    out = []
    idle = [i for i, x in enumerate(served) if not x]
    if idle and total:
        out.append(f"worker(s) {', '.join(map(str, idle))} of {len(served)} served nothing")
    if (record["config"].get("pinning") or {}).get("shared_cores"):
        out.append("the server's workers and the load client shared cores (more cores were "
                   "needed than the client's leaves)")
    if mode == wk.THREADS and not ((env or {}).get("server_python") or {}).get("free_threaded"):
        out.append("threads mode on a GIL build: the loops take turns on one interpreter lock")
    return out


def _noise_seconds() -> float:
    """How long each noise sample lasts (EVENTS_NOISE_SAMPLE_S; tests shorten it)."""
    try:
        return max(0.05, float(os.environ.get("EVENTS_NOISE_SAMPLE_S", "1.0")))
    except ValueError:
        return 1.0


def baseline_spread(recs: list[dict], baseline: str = BASELINE) -> float | None:
    """(max - min) / median of the baseline's CPU per connection over the batch's clean
    closed-loop runs (None with fewer than two)."""
    xs = [r["metrics"].get("server_cpu_us_per_conn") for r in recs
          if r["spec"] == baseline and r["status"] == "ok" and not r["metrics"].get("lost")
          and not r["config"].get("rate")]
    xs = [x for x in xs if x]
    if len(xs) < 2:
        return None
    return (max(xs) - min(xs)) / statistics.median(xs)


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


def unique_specs(specs) -> list[srv.Spec]:
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
    specs = unique_specs(specs)
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
    settings.server_cpu_mode = server_cpu_mode or mode_of(settings.server_cpu)
    plan = make_plan(specs, repeat, rates)
    batch = Batch(settings, total=len(plan), out=out, results_dir=results_dir)
    recs = batch.execute(plan, title=f"{kind} {' '.join(s.text for s in specs)}, "
                                     f"{repeat} round(s) of {duration:g}s")
    paths = batch.write_batch()
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


def mode_of(server_cpu) -> str:
    return "off" if server_cpu is None else ("auto" if server_cpu == "auto" else "fixed")
