"""The summary engine: every table of runs in this repository is computed here.

Design essay.  The batch table ``bench``/``compare`` print, the batch summaries under
results/batches/, results/REPORT.md and results/REPRODUCTION.md used to be computed
twice (the runner in plain Python, the report in pandas), with two rules for which runs
count and two pairings; the same batch then gave two answers.  Now there is one module,
pure Python on the run records (so the runner needs no pandas), written once on the data
model the way pyperf writes its statistics once on its Benchmark objects.  The data model
is two declarations: the run record (harness/runrecord.py: its fields, its schema, older
records upgraded) and its figures (harness/metrics.py: each figure's aggregation over the
runs of a row, hence the row's fields ``NAME_median``...).  The report wraps its rows in
a DataFrame under the same names; it never recomputes them.

The rules, each stated once:

* **Which runs count** (``exclusion``): a run counts when its status is ``ok``, it lost
  no connection (``metrics.lost`` is 0) and it recorded a conn/s.  Any other run is
  *excluded*: from every median and every ratio, and it is counted (``excluded``,
  ``failed_runs``, ``lossy_runs``) and listed -- never dropped silently.  Client-bound
  runs count (flagged): their CPU per connection is a true figure.
* **Group key** (one experiment, one row): link, spec, concurrency, size, interpreter,
  CPU budget, offered rate -- plus the baseline the row's ratios are taken against.
  ``master@HEAD`` and ``master`` are different specs, hence different rows.
* **Baseline rule** (``baselines``): per batch and conditions, ``raw_epoll`` when it ran
  there; else the first raw_epoll spec (``raw_epoll:diet``...); else the first spec of
  the batch that runs the working tree (no ``@REV``); else the first spec.  So
  ``compare --servers "master@HEAD master"`` compares HEAD *to your working tree*, and
  ``compare --servers "raw_epoll asyncio"`` compares asyncio to raw_epoll.
  Decided on what was *planned* to run, not on what succeeded, so a failing baseline
  leaves rows without pairs rather than silently changing the reference.
* **Pairing key** (``pair_key``): batch, round, and the group's conditions.  A ratio is
  a run divided by the baseline's counting run of the same key (their median if a
  round has several); it is never formed across batches or rounds.
* **Interval** (``median_interval``): the distribution-free interval for the median of
  the per-round ratios from order statistics (the sign-test interval, binomial with
  p = 1/2): the narrowest symmetric ``[x(k), x(n+1-k)]`` covering >= 95 %.  It needs
  n >= 6; at n = 5 the widest one, [min-max], covers 1 - 2/32 = 93.75 %, and we print it
  with its coverage; under 5 rounds there is no interval worth the name and we say so.
  A bootstrap was rejected: at n = 5 its percentile interval is also [min-max] (the
  resampled median falls on the extremes ~5.8 % of the time each side) but it would
  claim 95 %.  docs/statistics.md has the arithmetic.
* **Verdict**: ``faster`` when the conn/s interval lies above 1, ``slower`` when below,
  ``not distinguishable`` when it holds 1.00; on CPU per connection ``less CPU`` /
  ``more CPU`` / ``not distinguishable``.  The baseline's row says ``baseline``.
"""

from __future__ import annotations

import math
import os
import statistics

from harness import metrics, runrecord

BASELINE = "raw_epoll"
LEVEL = 0.95            # the interval we aim for
MIN_COVERAGE = 0.90     # below this (n < 5 rounds) no interval is printed


# --------------------------------------------------------------------------- which runs count

def exclusion(run: dict) -> str | None:
    """Why a run does not count ("" never), or None when it counts."""
    m = run.get("metrics") or {}
    status = run.get("status") or "ok"
    reasons = []
    if status != "ok":
        err = (run.get("error") or "").strip().splitlines()
        reasons.append(f"status {status}" + (f": {err[0][:100]}" if err else ""))
    if m.get("lost"):
        reasons.append(f"lost {int(m['lost'])} connections")
    if status == "ok" and m.get("conn_per_s") is None:
        reasons.append("no conn/s recorded")
    return "; ".join(reasons) or None


def counts(run: dict) -> bool:
    return exclusion(run) is None


# --------------------------------------------------------------------------- keys

def python_label(run: dict) -> str:
    """The interpreter the user named (PYTHON=...) as pythonX.Y[t], from the version the
    server recorded; "default" is the venv's.  pythonX.Y.Z when the venv's is another
    X.Y.Z of the same X.Y (Debian's 3.11.2 beside the venv's 3.11.7): two builds of one
    version are two experiments, not one row."""
    named = (run.get("config") or {}).get("python")
    if not named:
        return "default"
    env = run.get("env") or {}
    sp = env.get("server_python") or {}
    if sp.get("implementation", "cpython") == "cpython":
        label = interpreter_label(sp.get("version"), sp.get("free_threaded"), env.get("python"))
        if label:
            return label
    return os.path.basename(str(named))


def interpreter_label(version, free_threaded, default_version) -> str | None:
    """``pythonX.Y[t]`` for a CPython ``version``, or ``pythonX.Y.Z[t]`` when it is another
    build of the default interpreter's X.Y; None without a version."""
    ver = str(version or "")
    if ver.count(".") < 1:
        return None
    short = ".".join(ver.split(".")[:2])
    default = str(default_version or "")
    if ver != default and ".".join(default.split(".")[:2]) == short:
        short = ver
    return "python" + short + ("t" if free_threaded else "")


def budget_label(cores) -> str:
    """"off", or the budget in cores as text ("0.4")."""
    try:
        return "off" if cores is None else f"{float(cores):g}"
    except (TypeError, ValueError):
        return "off"


def rate_of(run: dict) -> float | None:
    rate = (run.get("config") or {}).get("rate")
    try:
        return float(rate) if rate else None
    except (TypeError, ValueError):
        return None


def _int(x, default=-1):
    try:
        return int(x)
    except (TypeError, ValueError):
        return default


CONDITIONS = ("link", "concurrency", "size", "python", "budget", "rate")


def conditions(run: dict) -> tuple:
    """What makes two runs the same experiment, apart from the spec."""
    c = run.get("config") or {}
    return (run.get("link") or "loopback", _int(c.get("concurrency")), _int(c.get("size")),
            python_label(run), budget_label(c.get("server_cpu")), rate_of(run))


def pair_key(run: dict) -> tuple:
    return (run.get("batch_id"), _int(run.get("round"))) + conditions(run)


def spec_of(run: dict) -> str:
    return run.get("spec") or run.get("server") or "?"


def is_revision(spec: str) -> bool:
    return "@" in spec.split(":", 1)[0]


def batch_order(runs: list[dict]) -> dict:
    """batch_id -> its specs in the order they were given (round 0 runs them in order)."""
    first: dict = {}
    for i, r in enumerate(runs):
        b, s = r.get("batch_id"), spec_of(r)
        k = (_int(r.get("round"), 1 << 30), _int(r.get("position"), 1 << 30), i)
        d = first.setdefault(b, {})
        if s not in d or k < d[s]:
            d[s] = k
    return {b: sorted(d, key=d.get) for b, d in first.items()}


def choose_baseline(specs: list[str]) -> str | None:
    """The baseline rule, on the specs of one batch in their given order."""
    if not specs:
        return None
    if BASELINE in specs:
        return BASELINE
    for s in specs:
        if s.split(":", 1)[0] == BASELINE:
            return s
    return next((s for s in specs if not is_revision(s)), specs[0])


def baselines(runs: list[dict]) -> dict:
    """(batch_id, conditions) -> the baseline spec there."""
    order = batch_order(runs)
    present: dict = {}
    for r in runs:
        present.setdefault((r.get("batch_id"), conditions(r)), set()).add(spec_of(r))
    return {k: choose_baseline([s for s in order[k[0]] if s in specs])
            for k, specs in present.items()}


# --------------------------------------------------------------------------- statistics

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def coverage(n: int, k: int) -> float:
    """P(x(k) <= true median <= x(n+1-k)) for n independent draws of a continuous
    distribution: 1 - 2 P(Binomial(n, 1/2) <= k - 1)."""
    return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n


def median_interval(xs, level: float = LEVEL, min_coverage: float = MIN_COVERAGE):
    """(low, high, coverage) for the median of ``xs``, or None with too few values.
    The narrowest order-statistic interval covering >= level; when none does (n < 6),
    [min, max] if its coverage is at least min_coverage (n = 5: 93.75 %)."""
    s = sorted(x for x in xs if x is not None)
    n = len(s)
    if n < 2:
        return None
    best = None
    for k in range(1, n // 2 + 1):
        cov = coverage(n, k)
        if cov < level:
            break
        best = (k, cov)
    if best is None:
        cov = coverage(n, 1)
        if cov < min_coverage:
            return None
        best = (1, cov)
    k, cov = best
    return s[k - 1], s[n - k], cov


def verdict(interval, *, up: str, down: str) -> str | None:
    """``up`` when the interval lies above 1, ``down`` below, else "not distinguishable"."""
    if interval is None:
        return None
    lo, hi = interval[0], interval[1]
    if lo > 1:
        return up
    if hi < 1:
        return down
    return "not distinguishable"


# --------------------------------------------------------------------------- rows

def _round(x, nd):
    return None if x is None else round(x, nd)


def link_drops(r: dict) -> int | None:
    """Packets the link dropped during a run: random loss and queue drops of the delay
    line, plus the qdiscs' drops (tbf, netem).  None when nothing was measured."""
    st = r.get("link_stats") or {}
    if not st:
        return None
    dl = st.get("delayline") or {}
    return (st.get("qdisc_drops") or 0) + (dl.get("dropped_loss") or 0) + (dl.get("dropped_other") or 0)


def _sum_known(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) if xs else None


def summarize(runs: list[dict], baseline: str | None = None) -> list[dict]:
    """One row per experiment (group key + baseline), in the order the specs were given.
    ``baseline``: compare every group to this spec instead of the baseline rule."""
    # Every field present from here on (runrecord.py): records of any schema, or built by hand.
    runs = [runrecord.upgrade(r, strict=False) for r in runs]
    base_of = baselines(runs)
    if baseline is not None:
        base_of = {k: baseline for k in base_of}
    order: dict = {}
    for specs in batch_order(runs).values():
        for sp in specs:
            order.setdefault(sp, len(order))
    base_runs: dict = {}
    for r in runs:
        if counts(r) and spec_of(r) == base_of.get((r.get("batch_id"), conditions(r))):
            base_runs.setdefault(pair_key(r), []).append(r["metrics"])
    groups: dict = {}
    for r in runs:
        cond = conditions(r)
        b = base_of.get((r.get("batch_id"), cond))
        groups.setdefault((spec_of(r),) + cond + (b,), []).append(r)
    out = []
    for (spec, link, conc, size, python, budget, rate, base), rs in groups.items():
        ok = [r for r in rs if counts(r)]
        r_conn, r_cpu, batches = [], [], set()
        for r in ok:
            bs = base_runs.get(pair_key(r))
            if not bs:
                continue
            a = r["metrics"]
            b_conn = median([x.get("conn_per_s") for x in bs])
            b_cpu = median([x.get("server_cpu_us_per_conn") for x in bs])
            paired = False
            if a.get("conn_per_s") is not None and b_conn:
                r_conn.append(a["conn_per_s"] / b_conn)
                paired = True
            if a.get("server_cpu_us_per_conn") and b_cpu:
                r_cpu.append(a["server_cpu_us_per_conn"] / b_cpu)
                paired = True
            if paired:
                batches.add(r.get("batch_id"))
        is_base = spec == base
        ci_conn, ci_cpu = median_interval(r_conn), median_interval(r_cpu)
        rc, ru = median(r_conn), median(r_cpu)
        n = max(len(r_conn), len(r_cpu))
        failed_runs = sum(1 for r in rs if (r["status"] or "ok") != "ok")
        config = rs[0]["config"]
        out.append({
            "spec": spec, "server": rs[0].get("server"), "link": link, "concurrency": conc,
            "size": size, "python": python, "budget": budget,
            "server_cpu": config.get("server_cpu"), "rate": rate,
            "baseline": base, "is_baseline": is_base,
            "variant_commit": config.get("variant_commit"),
            "runs": len(rs), "clean": len(ok), "excluded": len(rs) - len(ok),
            "failed_runs": failed_runs,
            "lossy_runs": sum(1 for r in rs if (r["status"] or "ok") == "ok" and r["metrics"]["lost"]),
            "ratio_conn_to_baseline": rc, "ratio_cpu_to_baseline": ru,
            "ratio_conn_interval": ci_conn, "ratio_cpu_interval": ci_cpu,
            "verdict_conn": "baseline" if is_base else verdict(ci_conn, up="faster", down="slower"),
            "verdict_cpu": "baseline" if is_base else verdict(ci_cpu, up="more CPU", down="less CPU"),
            "consistency": consistency(rc, ru),
            "paired_rounds": n, "paired_batches": len(batches),
            # Linked runs: the measured round trip, the configured one, and the link's drops.
            "rtt_ms_median": median([(r.get("rtt") or {}).get("median_ms") for r in ok]),
            "rtt_expected_ms": next(((r.get("rtt") or {}).get("expected_ms") for r in rs
                                     if (r.get("rtt") or {}).get("expected_ms") is not None), None),
            "rtt_warnings": sum(1 for r in rs if any(str(w).startswith("RTT ")
                                                     for w in r["warnings"])),
            "link_drops": _sum_known([link_drops(r) for r in ok]),
            # The figures of the metrics table (harness/metrics.py), each aggregated as its
            # row says: conn_per_s_median/_min/_max, p99_us_median, failed, lost (every run,
            # excluded ones too: losses are shown), client_bound (clean runs), events per pass...
            **{k: v for m in metrics.METRICS for k, v in metrics.aggregate(m, rs, ok).items()},
        })
    # Per conditions (in order of appearance): the baseline first, then the specs as given.
    conds: dict = {}
    for r in out:
        conds.setdefault(tuple(r[k] for k in CONDITIONS), len(conds))
    out.sort(key=lambda r: (conds[tuple(r[k] for k in CONDITIONS)], not r["is_baseline"],
                            order.get(r["spec"], 0)))
    return out


# Where the conn/s ratio and the inverse CPU ratio disagree by more than this, the tables
# and the conn/s chart mark it ("!"): for server-bound runs the two must agree
# (conn/s = budget / CPU per connection).
CONSISTENCY_TOLERANCE = 0.05
SUSTAINED_SHARE = 0.97      # an open-loop run served at least this share of its offered rate


def consistency(ratio_conn, ratio_cpu):
    """conn/s ratio x CPU ratio: 1.00 when conn/s is what CPU per connection predicts.
    Server-bound runs should give 1 ± a few %; client-bound runs give less (the client
    capped the faster server)."""
    if not ratio_conn or not ratio_cpu:
        return None
    return ratio_conn * ratio_cpu


def consistency_text(x, none: str = "–") -> str:
    """``1.00``, or ``1.15 !`` beyond CONSISTENCY_TOLERANCE; ``none`` when there is no figure."""
    if x is None or x != x:
        return none
    return f"{x:.2f}" + (" !" if abs(x - 1) > CONSISTENCY_TOLERANCE else "")


# --------------------------------------------------------------------------- text

def ratio_text(ratio, interval) -> str:
    """``1.04 [1.01–1.07]``; the ratio alone when there is no interval; "–" without pairs."""
    if ratio is None:
        return "–"
    if interval is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} [{interval[0]:.2f}–{interval[1]:.2f}]"


def verdict_text(row: dict, which: str = "conn") -> str:
    v = row[f"verdict_{which}"]
    if v:
        return v
    n = row["paired_rounds"]
    return "no pairs" if not n else f"too few rounds (n={n})"


def pairs_text(row: dict) -> str:
    """Paired rounds, with the interval's coverage when it is below 95 %."""
    n = row["paired_rounds"]
    if row["is_baseline"] or not n:
        return "–" if not n else str(n)
    iv = row["ratio_conn_interval"] or row["ratio_cpu_interval"]
    if iv is None:
        return f"{n} (no CI)"
    return str(n) if iv[2] >= LEVEL else f"{n} ({iv[2]:.0%} CI)"


INTERVAL_NOTE = ("[low–high]: distribution-free interval for the median of the per-round "
                 "ratios (order statistics, sign test): 95 % from 6 paired rounds, "
                 "[min–max] = 94 % at 5 rounds (shown in `pairs`), none under 5. "
                 "Verdict: faster/slower (or less/more CPU) when the interval excludes 1.00, "
                 "else not distinguishable. docs/statistics.md.")
