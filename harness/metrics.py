"""The metrics table: every figure of a run, declared once.

Design.  A figure such as the 99th percentile latency used to be written in seven
modules under three names (``p99_us`` in the run record, ``p99_us_median`` in the
summary, ``p99_med`` in the report's frame).  Here each figure is one row of
:data:`METRICS`, and everything else iterates over the table:

* ``read``: how one run's value is computed from the load client's FINAL line, the
  server's STATS line and the CPU time measured around the run (``compute_metrics``,
  called by the runner and by two-host mode); rows without ``read`` are read from
  other parts of the run record (its config, cgroup, kernel or link counters);
* ``of_run``: how a recorded run gives the value back (default: ``metrics[name]``);
* ``summary``: how the summary engine aggregates it over the runs of a row
  (``median``/``min``/``max`` of the clean runs give the fields ``NAME_median``...;
  ``sum`` adds every run's value, excluded runs too, so losses are shown;
  ``sum_clean`` adds the clean runs', ``count`` counts the clean runs where it is
  true, ``hist`` adds the clean runs' histograms; the last four keep ``NAME``);
* ``csv``: whether it is a column of runs.csv (under ``NAME``; the table's order is
  the columns' order, and a new column starts a new runs-N.csv, records.append_csv);
* ``header``/``report_header``/``label``: its name in the batch table, in REPORT.md
  and on a chart's axis; ``cell`` formats a summary row's value for a table;
  ``shown`` puts it in the batch table's columns beside CPU per connection (when some
  row has a value), and in REPORT.md's too when it has a ``report_header``; ``note``
  says under such a table how to read it.

The vocabulary is the record's: the engine's fields and the frame's columns are
``NAME`` and ``NAME_<agg>``, nothing else.  Adding a statistic is adding a row.

Base layer: imports only passes.py (events per pass), so the client, the records,
the summary engine and the writers can all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness import passes

CLIENT_BOUND_SHARE = 0.90
# A budgeted server is "server-bound" when it used at least this share of its budget
# (CFS accounting lets a group overshoot a little within a period, never for long).
SERVER_BOUND_SHARE = 0.90

AGGREGATES = ("median", "min", "max", "sum", "sum_clean", "count", "hist")


def round_or_none(x, nd):
    return None if x is None else round(x, nd)


def _missing(v) -> bool:
    return v is None or v != v        # None, or NaN from a frame


@dataclass(frozen=True)
class Inputs:
    """What one run's figures are computed from."""
    final: dict                       # the load client's FINAL line ({} when none)
    stats: dict                       # the server's STATS line ({} when none)
    server_cpu_s: float | None        # the server's CPU time over the run (user + sys)
    wall_s: float | None              # the run's wall time
    budget: float | None              # the server's CPU budget in cores (None: none)

    @property
    def server_share(self) -> float | None:
        cpu, wall = self.server_cpu_s, self.wall_s
        return cpu / wall if cpu is not None and wall else None

    @property
    def client_bound(self) -> bool | None:
        share = self.final.get("client_cpu_share")
        return (share >= CLIENT_BOUND_SHARE) if share is not None else None


@dataclass(frozen=True)
class Metric:
    name: str
    read: Callable[[Inputs], Any] | None = None
    of_run: Callable[[dict], Any] | None = None
    summary: tuple[str, ...] = ()
    csv: bool = True
    header: str = ""
    report_header: str = ""
    label: str = ""
    cell: Callable[[Any], str] | None = None
    shown: bool = False
    note: str = ""                    # how to read its column, under a table that shows it

    def value(self, run: dict) -> Any:
        """This figure of a recorded run."""
        if self.of_run is not None:
            return self.of_run(run)
        return (run.get("metrics") or {}).get(self.name)

    def field(self, agg: str) -> str:
        """The summary row's field this aggregation fills."""
        return f"{self.name}_{agg}" if agg in ("median", "min", "max") else self.name

    def fields(self) -> list[str]:
        return [self.field(a) for a in self.summary]

    def text(self, row) -> str:
        """A summary row's (or a frame row's) value as a table cell."""
        if self.cell is not None:
            return self.cell(row)
        v = row[self.field(self.summary[0])]
        return "?" if _missing(v) else f"{v:g}"


# --------------------------------------------------------------------------- the reads

def _final(key):
    return lambda i: i.final.get(key)


def _latency(key):
    return lambda i: (i.final.get("latency_us") or {}).get(key)


def _per_conn(i: Inputs):
    done = i.final.get("completed_total")
    return round_or_none(i.server_cpu_s / done * 1e6 if i.server_cpu_s is not None and done else None, 2)


def _server_bound(i: Inputs):
    share, bound = i.server_share, i.client_bound
    if i.budget is None or share is None or bound is None:
        return None
    return bool(share >= SERVER_BOUND_SHARE * i.budget and not bound)


def _lost(i: Inputs):
    # lost = started and not completed: failed ones plus any still unfinished.
    started, done = i.final.get("started_total"), i.final.get("completed_total")
    return (started - done) if started is not None and done is not None else None


def _passes(key):
    # Events per pass (issue 28) from the STATS line; records made before issue 28 carry
    # none in their metrics and are read from their STATS line (passes.of_run).
    return (lambda i: passes.of_stats(i.stats)[key]), (lambda r: passes.of_run(r)[key])


def _record(part, key):
    return lambda r: (r.get(part) or {}).get(key)


def _link(key):
    # link figures may be split by direction ({"client_to_server", ..., "total"}): keep the total
    def get(r):
        v = (r.get("link_stats") or {}).get(key)
        return v.get("total") if isinstance(v, dict) else v
    return get


def _events_cell(row) -> str:
    mean = row["events_per_pass_median"]
    hist = row["events_hist"] if "events_hist" in row else None
    return passes.text(None if _missing(mean) else float(mean),
                       list(hist) if isinstance(hist, (list, tuple)) else None)


_EV_READ, _EV_RUN = _passes("events_per_pass")
_HIST_READ, _HIST_RUN = _passes("events_hist")
_PPC_READ, _PPC_RUN = _passes("passes_per_conn")

# --------------------------------------------------------------------------- the table

# Order: the metrics dict of a run record, then runs.csv's columns (rows read from the
# record have their place among them).
METRICS: tuple[Metric, ...] = (
    Metric("conn_per_s", _final("conn_per_s"), summary=("median", "min", "max"),
           header="conn/s median [min–max]", report_header="conn/s median [min-max]",
           label="connections per second (conn/s)"),
    Metric("server_cpu_s", lambda i: round_or_none(i.server_cpu_s, 4)),
    Metric("server_cpu_us_per_conn", _per_conn, summary=("median", "min", "max"),
           header="server CPU µs/conn", report_header="CPU us/conn median",
           label="server CPU (user+sys) µs per connection"),
    Metric("server_cpu_share", lambda i: round_or_none(i.server_share, 4)),
    Metric("client_cpu_share", _final("client_cpu_share")),
    Metric("client_bound", lambda i: i.client_bound, summary=("count",), header="client-bound",
           report_header="client-bound"),
    # The CPU budget in cores: a condition of the run (config), shown beside its effect.
    Metric("server_cpu", of_run=_record("config", "server_cpu")),
    Metric("server_bound", _server_bound, summary=("count",), header="server-bound",
           report_header="server-bound"),
    Metric("throttled_s", of_run=_record("server_cgroup", "throttled_s")),
    Metric("started", _final("started_total"), csv=False),
    Metric("completed", _final("completed_total")),
    Metric("failed", _final("failed_total"), summary=("sum",), report_header="failed conns"),
    Metric("lost", _lost, summary=("sum",)),
    Metric("p50_us", _latency("p50"), summary=("median",), label="latency (µs)"),
    Metric("p99_us", _latency("p99"), summary=("median",), header="p99 ms", label="latency (µs)"),
    Metric("events_per_pass", _EV_READ, _EV_RUN, summary=("median",), csv=False,
           header="events/pass", report_header="events/pass", label="events per pass",
           cell=_events_cell, shown=True,
           note="events/pass: events the server dispatched per poll of its loop (median over "
                "runs); in brackets, the share of polls returning 1–3 events (the study's "
                "regime). n/a: the library owns the loop and it was not counted."),
    Metric("events_hist", _HIST_READ, _HIST_RUN, summary=("hist",), csv=False),
    Metric("passes_per_conn", _PPC_READ, _PPC_RUN, csv=False),
    Metric("listen_overflows", of_run=_record("kernel", "ListenOverflows"), summary=("sum_clean",)),
    Metric("listen_drops", of_run=_record("kernel", "ListenDrops")),
    Metric("packets_per_conn", of_run=_link("packets_per_conn")),
    Metric("bytes_per_conn", of_run=_link("bytes_per_conn")),
    Metric("qdisc_drops", of_run=_link("qdisc_drops")),
)


def by_name(name: str) -> Metric:
    return next(m for m in METRICS if m.name == name)


def run_metrics() -> list[Metric]:
    """The rows computed for each run (a run record's ``metrics``)."""
    return [m for m in METRICS if m.read is not None]


def shown() -> list[Metric]:
    """The rows the tables show beside CPU per connection."""
    return [m for m in METRICS if m.shown]


def compute_metrics(final: dict | None, server_cpu_s: float | None, wall_s: float | None,
                    budget: float | None = None, stats: dict | None = None) -> dict:
    """The figures of one run, one per row with a ``read``.  ``budget``: the server's CPU
    budget in cores (None = none); ``server_bound`` says the budget, not the client, set
    the pace: the server used at least SERVER_BOUND_SHARE of it and the client was not
    saturated.  ``stats``: the server's STATS line (events per pass)."""
    inputs = Inputs(final or {}, stats or {}, server_cpu_s, wall_s, budget)
    return {m.name: m.read(inputs) for m in run_metrics() if m.read is not None}


def aggregate(metric: Metric, runs: list[dict], clean: list[dict]) -> dict:
    """The summary fields of ``metric`` over one row's ``runs`` (``clean``: those that count)."""
    out = {}
    for agg in metric.summary:
        if agg == "sum":
            v: Any = sum(metric.value(r) or 0 for r in runs)
        elif agg == "sum_clean":
            v = sum(metric.value(r) or 0 for r in clean)
        elif agg == "count":
            v = sum(1 for r in clean if metric.value(r))
        elif agg == "hist":
            v = passes.add_hists([metric.value(r) for r in clean])
        else:
            xs = [x for x in (metric.value(r) for r in clean) if x is not None]
            v = (_median(xs) if agg == "median" else min(xs) if agg == "min" else max(xs)) if xs else None
        out[metric.field(agg)] = v
    return out


def summary_fields() -> list[str]:
    return [f for m in METRICS for f in m.fields()]


def _median(xs):
    import statistics
    return statistics.median(xs)
