"""The recorded runs as a table: one pandas DataFrame row per run (``frame``), the
closed-loop summary rows with the column names the charts and tables use
(``summarize``), the head-to-head pairs, and where the server's CPU goes
(``cpu_split``); then the few cells REPORT.md and REPRODUCTION.md both write
(numbers, ranges, paired ratios with their interval, the environment table).

Every median, ratio, interval and verdict comes from harness/summary.py, the one
summary engine; this module only puts its rows into a frame.  The report
(harness/report.py, with harness/charts.py) and the reproduction
(harness/reproduction.py) both read it, side by side.
"""

from __future__ import annotations

import json
import os

from harness import metrics as _metrics
from harness import records as _records
from harness import runrecord as _runrecord
from harness import servers as _servers
from harness import summary as _summary

NO_RUNS = "no runs recorded yet: run make bench"

# Group key of the closed-loop tables: the spec and the summary engine's conditions
# (summary.CONDITIONS, the one home of the key), but the offered rate: these rows are
# closed loop (open-loop runs have tables of their own).
GROUP = ["spec"] + [c for c in _summary.CONDITIONS if c != "rate"]


# --------------------------------------------------------------------------- loading

def load(results: str) -> tuple[list[dict], list[str]]:
    """The run records under ``results/runs`` (through the runner's loader, so there is
    one reader of the format) and the skipped files, one line each."""
    records, problems = _records.load_runs(os.path.join(results, "runs"))
    return records, [f"{os.path.basename(path)}: {reason}" for path, reason in problems]

def incomplete_batches(results: str) -> set[str]:
    """The ids of the batches whose file says they were interrupted (results/batches/*.json);
    a batch with no file (older runs, the fixtures) counts as complete."""
    out: set[str] = set()
    d = os.path.join(results, "batches")
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return out
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            try:
                with open(os.path.join(d, name)) as f:
                    if json.load(f).get("interrupted"):
                        out.add(name[:-5])
            except (OSError, ValueError, AttributeError):
                pass
    return out

def _python_label(r: dict) -> str:
    """The interpreter label of a run (the summary engine's rule)."""
    return _summary.python_label(r)

def frame(records: list[dict], incomplete: set[str] | frozenset = frozenset()):
    """One row per run, with the columns the report and reproduce.py use.  ``incomplete``:
    the ids of interrupted batches (``incomplete_batches``).  Each run's batch is named in
    ``batch`` (its batch id, or ``run:<run_id>`` for a run recorded outside any batch: it
    is then a batch of its own, never pooled with others), with the batch's time (its last
    run's) and whether it completed."""
    import pandas as pd

    rows = []
    for r in records:
        r = _runrecord.upgrade(r, strict=False)      # every field present (runrecord.py)
        c = r["config"]
        status = r["status"] or "ok"
        # One rule for which runs count, the summary engine's (harness/summary.py).
        reason = _summary.exclusion(r)
        rate = c.get("rate")
        ss = r["server_stats"] or {}
        user, sys_ = ss.get("cpu_user_s"), ss.get("cpu_sys_s")
        # user = the interpreter, the library and the procs; sys = the kernel (TCP, epoll).
        user_share = user / (user + sys_) if user is not None and sys_ and user + sys_ > 0 else None
        rows.append({
            # The run's figures, under the metrics table's names (harness/metrics.py).
            **{m.name: m.value(r) for m in _metrics.METRICS},
            "run_id": r["run_id"], "batch_id": r["batch_id"], "kind": r["kind"],
            "time_utc": r.get("time_utc"), "spec": r["spec"] or r["server"],
            "server": r["server"], "link": r.get("link") or "loopback",
            "round": r.get("round"), "position": r.get("position"), "status": status,
            "concurrency": c.get("concurrency"), "size": c.get("size"),
            "rate": float(rate) if rate else None, "duration": c.get("duration"),
            "python": _python_label(r),
            "budget": _summary.budget_label(c.get("server_cpu")),
            "user_share": user_share,
            "excluded": reason is not None, "reason": reason or "",
            "snapshots": r["snapshots"], "record": r,
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("failed", "lost"):
        df[col] = df[col].fillna(0)
    for col in ("client_bound", "server_bound"):
        df[col] = df[col].map(bool)
    for col in [m.name for m in _metrics.METRICS if m.name in NUMERIC_RUN] + ["user_share", "rate"]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    # Missing concurrency/size would make groupby drop the row; -1 is "not recorded".
    df["concurrency"] = pd.to_numeric(df["concurrency"], errors="coerce").fillna(-1).astype(int)
    df["size"] = pd.to_numeric(df["size"], errors="coerce").fillna(-1).astype(int)
    df["round"] = pd.to_numeric(df["round"], errors="coerce").fillna(-1).astype(int)
    df["batch"] = [b if b else f"run:{r}" for b, r in zip(df["batch_id"], df["run_id"])]
    df["batch_time"] = df.groupby("batch")["time_utc"].transform(lambda t: max(str(x or "") for x in t))
    df["batch_complete"] = ~df["batch"].isin(set(incomplete))
    df["open_loop"] = df["rate"].notna() & (df["rate"] > 0)
    df["user_us"] = df["server_cpu_us_per_conn"] * df["user_share"]
    df["sys_us"] = df["server_cpu_us_per_conn"] - df["user_us"]
    return df

# --------------------------------------------------------------------------- which batches

# The batches a link's headline charts may come from: the comparisons of designs.
HEADLINE_KINDS = ("bench", "compare", "reproduce")

def is_headline_spec(spec: str) -> bool:
    """A design as the server table names it: no options (master:diet), no revision
    (alone_proc@d3bc2e9), no one-off server (loop:..., cmd:...)."""
    return ":" not in spec and "@" not in spec

def pick_batch(cands, count_col: str = "spec"):
    """Of the candidate rows (one batch each row's ``batch``), the batch that ran the most
    distinct ``count_col`` values, the latest complete one among equals; None if none."""
    if cands is None or not len(cands):
        return None
    g = cands.groupby("batch").agg(n=(count_col, "nunique"), t=("batch_time", "max"),
                                   ok=("batch_complete", "all"))
    return g.sort_values(["ok", "n", "t"]).index[-1]

def headline_batches(rows) -> dict:
    """link -> the batch its headline charts draw: of the complete bench/compare/reproduce
    batches that compared designs with raw_epoll on that link (the default interpreter when
    the link has runs of it), the one with the most designs, the latest among equals.
    ``rows``: ``summarize(df, latest=False)``, every batch's rows."""
    if rows is None or rows.empty:
        return {}
    c = rows[rows["batch_kind"].isin(HEADLINE_KINDS) & (rows["baseline"] == _summary.BASELINE)
             & rows["spec"].map(is_headline_spec) & (rows["clean"] > 0)]
    has_default = c.groupby("link")["python"].transform(lambda p: (p == "default").any())
    c = c[~has_default | (c["python"] == "default")]
    out = {}
    for link in link_order(c["link"]):
        b = pick_batch(c[c["link"] == link])
        if b is not None and (c[(c["batch"] == b) & (c["link"] == link)]["spec"].nunique() > 1):
            out[link] = b
    return out

def headline_rows(rows, link: str, batch: str):
    """The rows a link's headline charts draw: that batch's designs against raw_epoll."""
    s = rows[(rows["link"] == link) & (rows["batch"] == batch) & rows["spec"].map(is_headline_spec)
             & (rows["baseline"] == _summary.BASELINE)]
    if (s["python"] == "default").any():
        s = s[s["python"] == "default"]
    s = s.reset_index(drop=True)
    # One batch, one set of conditions (in the titles): the spec is the whole label.
    s["label"] = s["spec"]
    return s

def latest_batch_per_link(df) -> dict:
    """link -> the latest complete batch among ``df``'s rows (an interrupted one only when
    there is no other)."""
    out = {}
    for link in link_order(df["link"]) if len(df) else []:
        d = df[df["link"] == link]
        g = d.groupby("batch").agg(t=("batch_time", "max"), ok=("batch_complete", "all"))
        out[link] = g.sort_values(["ok", "t"]).index[-1]
    return out

def cpu_split(df, results: str):
    """Where the server's CPU goes on loopback, from one batch (clean closed-loop runs with
    no CPU budget; of those batches, the one with the most designs, the latest among
    equals): median user and sys us per connection per spec, and system calls per
    connection from `make syscalls` when recorded.  User time is what an event library
    can change; sys time is the kernel's TCP and epoll work, the floor every server
    shares.  One batch: two days' medians pooled are a figure neither day measured.
    The batch is in the ``batch`` column."""
    import pandas as pd

    clean = df[~df["excluded"] & ~df["open_loop"] & (df["link"] == "loopback")
               & df["user_us"].notna() & (df["budget"] == "off")]
    if clean.empty:
        return pd.DataFrame()
    chosen = pick_batch(clean[clean["spec"].map(is_headline_spec)]) or pick_batch(clean)
    clean = clean[clean["batch"] == chosen]
    g = clean.groupby(["spec", "python"])
    out = pd.DataFrame({"runs": g.size(), "user_us": g["user_us"].median(),
                        "sys_us": g["sys_us"].median(),
                        "cpu_us": g["server_cpu_us_per_conn"].median()}).reset_index()
    calls = {}
    for spec in out["spec"].unique():
        try:
            with open(os.path.join(results, "syscalls", spec.replace(":", "_") + ".json")) as f:
                calls[spec] = float(json.load(f)["per_connection"]["total"])
        except (OSError, ValueError, TypeError, KeyError):
            pass
    # `make syscalls` runs the default interpreter: its counts belong to that row only.
    out["syscalls"] = [calls.get(sp) if py == "default" else None
                       for sp, py in zip(out["spec"], out["python"])]
    out["syscalls"] = pd.to_numeric(out["syscalls"], errors="coerce")
    out["label"] = [sp + ("" if py == "default" else f" [{py}]")
                    for sp, py in zip(out["spec"], out["python"])]
    out["batch"] = chosen
    return out.sort_values("cpu_us").reset_index(drop=True)


# --------------------------------------------------------------------------- figures

def link_order(links) -> list[str]:
    """loopback first, then shaped links from the fastest: the order the study used."""
    def key(name):
        digits = "".join(ch for ch in str(name) if ch.isdigit())
        return (name != "loopback", -int(digits) if digits else 0, str(name))
    return sorted(dict.fromkeys(links), key=key)

def _records_of(df) -> list[dict]:
    """The run records behind a frame's rows (frame keeps each one in ``record``)."""
    return list(df["record"]) if len(df) and "record" in df else []

def head_to_head(df, pairs=None):
    """Paired ratios a / b from rounds where both ran clean in the same batch (same link,
    concurrency, size, Python, budget): one row per pair and conditions, only where such
    rounds exist.  The summary engine's pairing, with b as the baseline.  ``pairs``: (a,
    b, what), default the comparisons the server table declares (servers.SERVERS.head_to_head:
    the targets docs/performance.md states)."""
    import pandas as pd

    pairs = _servers.SERVERS.head_to_head() if pairs is None else pairs

    rows = []
    for batch, g in _batches_of(df):
        recs = [r for r in _records_of(g) if _summary.rate_of(r) is None]
        for a, b, what in pairs:
            mine = [r for r in recs if _summary.spec_of(r) in (a, b)]
            for r in _summary.summarize(mine, baseline=b):
                if r["spec"] != a or not r["paired_rounds"]:
                    continue
                rows.append(_h2h_row(a, b, what, r, batch, g))
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    # One batch per pair and conditions: the latest complete one (pooling is make combine's).
    out = out.sort_values(["batch_complete", "batch_time", "batch"], kind="stable")
    out = out.drop_duplicates(["a", "b", "link", "python", "budget", "concurrency", "size"], keep="last")
    order = {(a, b): i for i, (a, b, _) in enumerate(pairs)}
    out["_o"] = [order[(a, b)] for a, b in zip(out["a"], out["b"])]
    return out.sort_values(["_o", "link"], kind="stable").drop(columns="_o").reset_index(drop=True)

def _h2h_row(a, b, what, r, batch, g) -> dict:
    return {"a": a, "b": b, "what": what, "link": r["link"], "python": r["python"],
            "budget": r["budget"], "concurrency": r["concurrency"], "size": r["size"],
            **{k: r[k] for k in ("paired_rounds", "paired_batches", "ratio_cpu_to_baseline",
                                 "ratio_conn_to_baseline", "ratio_cpu_interval",
                                 "ratio_conn_interval")},
            "verdict_conn": _summary.verdict_text(r, "conn"),
            "verdict_cpu": _summary.verdict_text(r, "cpu"),
            "batch": batch, "batch_time": g["batch_time"].iloc[0],
            "batch_complete": bool(g["batch_complete"].iloc[0])}

# The engine's fields that are not figures of the metrics table, by type.
FLOAT_FIELDS = ["ratio_conn_to_baseline", "ratio_cpu_to_baseline", "consistency"]
INT_FIELDS = ["runs", "excluded", "clean", "paired_rounds"]
# Per-run columns read as numbers (the others: flags, histograms).
NUMERIC_RUN = ("conn_per_s", "server_cpu_s", "server_cpu_us_per_conn", "server_cpu_share",
               "client_cpu_share", "started", "completed", "failed", "lost", "p50_us", "p99_us",
               "events_per_pass", "passes_per_conn")

def _batches_of(df):
    """(batch, its runs' frame rows) for each batch of ``df``, in the frame's order."""
    return df.groupby("batch", sort=False) if len(df) else []

def summarize(df, latest: bool = True):
    """The closed-loop table: the summary engine's rows (harness/summary.py), one per batch
    and (link, spec, concurrency, size, python, budget, baseline), as a DataFrame with the
    column names the charts use and the batch each row comes from (``batch``,
    ``batch_time``, ``batch_kind``, ``batch_complete``).

    Each row is summarized within one batch: a median never mixes the runs of two batches,
    which ran on the machine in two states (raw epoll's CPU per connection was 62-65 us on
    one day and 36 on another).  With ``latest`` (the default) each experiment keeps only
    the row of its latest complete batch (an interrupted one only when there is no other);
    pooling batches is explicit: ``make combine``."""
    import pandas as pd

    rows = []
    for batch, g in _batches_of(df):
        meta = {"batch": batch, "batch_time": g["batch_time"].iloc[0],
                "batch_kind": g["kind"].iloc[0], "batch_complete": bool(g["batch_complete"].iloc[0])}
        rows += [(meta, r) for r in _summary.summarize(_records_of(g)) if r["rate"] is None]
    if not rows:
        return pd.DataFrame()
    # The engine's row fields under their own names (no second vocabulary here).
    out = pd.DataFrame([{**r, **meta, "_row": r} for meta, r in rows])
    if latest:
        out = out.sort_values(["batch_complete", "batch_time", "batch"], kind="stable")
        out = out.drop_duplicates(GROUP + ["baseline"], keep="last")
    for col in FLOAT_FIELDS + [m.field(a) for m in _metrics.METRICS for a in m.summary
                               if a in ("median", "min", "max")]:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in INT_FIELDS + [m.field(a) for m in _metrics.METRICS for a in m.summary
                             if a in ("sum", "sum_clean", "count")]:
        out[col] = out[col].fillna(0).astype(int)
    # The baseline first on each link, then by conn/s: the eye reads the baseline first.
    out["_order"] = (~out["is_baseline"].astype(bool)).astype(int)
    out["_link"] = out["link"].map({l: i for i, l in enumerate(link_order(out["link"]))})
    out["_budget"] = out["budget"].map(lambda b: -1.0 if b == "off" else float(b))
    out["_base"] = (out["baseline"] != _summary.BASELINE).astype(int)
    out = out.sort_values(["_link", "_budget", "python", "concurrency", "size", "_base", "baseline",
                           "_order", "conn_per_s_median"],
                          ascending=[True, False, True, True, True, True, True, True, False]
                          ).drop(columns=["_order", "_link", "_budget", "_base"])
    nun = out.groupby("link")[["concurrency", "size", "python", "budget"]].transform("nunique")
    multi, multi_py = nun[["concurrency", "size"]].max(axis=1) > 1, nun["python"] > 1
    multi_b = nun["budget"] > 1
    vs = [("" if b == _summary.BASELINE or b is None else (" (baseline)" if isb else f" ÷ {b}"))
          for b, isb in zip(out["baseline"], out["is_baseline"])]
    out["label"] = [s + v + (f" c={c} s={z}" if m else "") + (f" [{py}]" if mp else "")
                    + ((" [no budget]" if b == "off" else f" [{b} core]") if mb else "")
                    for s, v, c, z, py, b, m, mp, mb in zip(out["spec"], vs, out["concurrency"],
                                                            out["size"], out["python"], out["budget"],
                                                            multi, multi_py, multi_b)]
    return out.reset_index(drop=True)

# --------------------------------------------------------------------------- markdown cells

def fmt_num(v, fmt="{:,.0f}"):
    """A number as a table cell; '-' for a missing value (None or NaN)."""
    return "-" if v is None or v != v else fmt.format(v)


def float_or_none(v):
    """A frame value as a float, None for a missing value (None or NaN)."""
    return None if v is None or v != v else float(v)


def range_text(med, lo, hi):
    """``20,500 [20,000-21,000]``: a median with its min-max; '-' without a median."""
    return "-" if med != med else f"{fmt_num(med)} [{fmt_num(lo)}-{fmt_num(hi)}]"


def range_of(row, name: str) -> str:
    """A summary row's median of the metric ``name`` with its min-max (range_text)."""
    return range_text(row[f"{name}_median"], row[f"{name}_min"], row[f"{name}_max"])


def ratio_ci(row, which: str = "conn") -> str:
    """A report row's paired ratio with its interval, ``1.04 [1.01-1.07]`` (the engine's text)."""
    r = row[f"ratio_{which}_to_baseline"]
    ci = row.get(f"ratio_{which}_interval") if hasattr(row, "get") else None
    return _summary.ratio_text(None if r is None or r != r else float(r),
                               ci if isinstance(ci, (tuple, list)) else None)


def shown_path(text: str) -> str:
    """Absolute paths in ``text`` as a report shows them (records.shown_path), so a
    generated report names no path outside the repository."""
    return _records.ABS_PATH.sub(lambda m: _records.shown_path(m.group(0)), text)

def environment_md(records) -> str:
    """Each environment field with its distinct values and how many runs had each."""
    from collections import Counter
    fields: dict[str, Counter] = {}
    for r in records:
        for k, v in _runrecord.upgrade(r, strict=False)["env"].items():
            if isinstance(v, (dict, list)):
                v = json.dumps(v, sort_keys=True)
            fields.setdefault(k, Counter())[shown_path(str(v))] += 1
    if not fields:
        return "No environment was recorded with these runs.\n"
    out = ["| field | value (runs) |", "|---|---|"]
    for k in sorted(fields):
        vals = "; ".join(f"{v[:200]} ({n})" for v, n in fields[k].most_common())
        out.append(f"| {k} | {vals.replace('|', '/')} |")
    return "\n".join(out) + "\n"
