"""``make report``: every recorded run, as tables and charts.

Reads ``results/runs/*.json`` (the run records of docs/architecture.md section 4),
builds one pandas DataFrame with a row per run, and writes ``results/REPORT.md``
and PNG charts under ``results/charts/``.

The rules, stated once here and again in REPORT.md:

* A run is *excluded* from every median and ratio when its status is ``failed`` or
  it lost connections (``metrics.lost > 0``): its figure measures something else
  (a crash, a timeout storm, a full backlog).  Excluded runs still appear: as red
  crosses on the charts and in a table with the reason.  Nothing is dropped
  silently; every table shows how many runs were left out.
* A *client-bound* run (the load client used >= 90 % of a core) is kept in the
  medians but flagged: its conn/s is a lower bound of the server's capacity, not a
  measurement of it.  Bars containing such runs are hatched.  Its server CPU per
  connection is a true measurement and is used as is.
* Ratios to raw epoll (the batch's baseline, harness/summary.py) are *paired*: for
  every batch and round that ran raw_epoll
  on the same link with the same concurrency and size, the ratio of the two runs of
  that round is taken, and the table shows the median of those per-round ratios.
  Ratios are never formed across batches: two batches on a shared 2-vCPU machine
  differ by 15-25 %, paired rounds by about 2 % (docs/methodology.md).
* Open-loop runs (``config.rate`` set, usually ``kind: sweep``) answer a different
  question (latency at an offered rate) and only feed the latency-vs-rate chart.

Every median, ratio, interval and verdict comes from harness/summary.py, the one summary
engine the batch tables use too (its essay states the rules: which runs count, the group
and pairing keys, the baseline, the interval).  This module only draws and writes.
Trade-off: medians over few runs (3-5) are coarse; the charts' min-max whiskers show the
spread of the runs, the tables' intervals the uncertainty of the paired ratio.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from harness import records as _records
from harness import summary as _summary

BASELINE = "raw_epoll"

NO_RUNS = "no runs recorded yet: run make bench"

# Group key of the closed-loop tables: a median over runs with different
# concurrency, message size or interpreter (PYTHON=...) would mix two experiments.
# The CPU budget too: a server held to 0.4 core is busier per unit of CPU than a free one,
# so its CPU per connection is another experiment's figure ("off" = no budget).
GROUP = ["link", "spec", "concurrency", "size", "python", "budget"]


# --------------------------------------------------------------------------- loading

def load(results: str) -> tuple[list[dict], list[str]]:
    """The run records under ``results/runs`` (through the runner's loader, so there is
    one reader of the format) and the skipped files, one line each."""
    records, problems = _records.load_runs(os.path.join(results, "runs"))
    return records, [f"{os.path.basename(path)}: {reason}" for path, reason in problems]


def _python_label(r: dict) -> str:
    """The interpreter label of a run (the summary engine's rule)."""
    return _summary.python_label(r)


def frame(records: list[dict]):
    """One row per run, with the columns the report and reproduce.py use."""
    import pandas as pd

    rows = []
    for r in records:
        m = r.get("metrics") or {}
        c = r.get("config") or {}
        status = r.get("status") or "ok"
        lost = m.get("lost")
        # One rule for which runs count, the summary engine's (harness/summary.py).
        reason = _summary.exclusion(r)
        rate = c.get("rate")
        ss = r.get("server_stats") or {}
        user, sys_ = ss.get("cpu_user_s"), ss.get("cpu_sys_s")
        # user = the interpreter, the library and the procs; sys = the kernel (TCP, epoll).
        user_share = user / (user + sys_) if user is not None and sys_ and user + sys_ > 0 else None
        rows.append({
            "run_id": r.get("run_id"), "batch_id": r.get("batch_id"), "kind": r.get("kind"),
            "time_utc": r.get("time_utc"), "spec": r.get("spec") or r.get("server"),
            "server": r.get("server"), "link": r.get("link") or "loopback",
            "round": r.get("round"), "position": r.get("position"), "status": status,
            "concurrency": c.get("concurrency"), "size": c.get("size"),
            "rate": float(rate) if rate else None, "duration": c.get("duration"),
            "python": _python_label(r),
            "budget": _summary.budget_label(c.get("server_cpu")),
            "server_bound": bool(m.get("server_bound")),
            "conn_per_s": m.get("conn_per_s"),
            "cpu_us_per_conn": m.get("server_cpu_us_per_conn"),
            "user_share": user_share,
            "p50_us": m.get("p50_us"), "p99_us": m.get("p99_us"),
            "completed": m.get("completed"), "failed": m.get("failed") or 0, "lost": lost or 0,
            "client_cpu_share": m.get("client_cpu_share"),
            "client_bound": bool(m.get("client_bound")),
            "excluded": reason is not None, "reason": reason or "",
            "snapshots": r.get("snapshots") or [], "record": r,
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("conn_per_s", "cpu_us_per_conn", "user_share", "p50_us", "p99_us", "rate",
                "client_cpu_share", "completed", "failed", "lost"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    # Missing concurrency/size would make groupby drop the row; -1 is "not recorded".
    df["concurrency"] = pd.to_numeric(df["concurrency"], errors="coerce").fillna(-1).astype(int)
    df["size"] = pd.to_numeric(df["size"], errors="coerce").fillna(-1).astype(int)
    df["round"] = pd.to_numeric(df["round"], errors="coerce").fillna(-1).astype(int)
    df["open_loop"] = df["rate"].notna() & (df["rate"] > 0)
    df["user_us"] = df["cpu_us_per_conn"] * df["user_share"]
    df["sys_us"] = df["cpu_us_per_conn"] - df["user_us"]
    return df


def cpu_split(df, results: str):
    """Where the server's CPU goes, per spec on loopback (clean closed-loop runs, any
    Python): median user and sys us per connection, and system calls per connection from
    `make syscalls` when recorded.  User time is what an event library can change; sys
    time is the kernel's TCP and epoll work, the floor every server shares."""
    import pandas as pd

    clean = df[~df["excluded"] & ~df["open_loop"] & (df["link"] == "loopback")
               & df["user_us"].notna() & (df["budget"] == "off")]
    if clean.empty:
        return pd.DataFrame()
    g = clean.groupby(["spec", "python"])
    out = pd.DataFrame({"runs": g.size(), "user_us": g["user_us"].median(),
                        "sys_us": g["sys_us"].median(),
                        "cpu_us": g["cpu_us_per_conn"].median()}).reset_index()
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
    return out.sort_values("cpu_us").reset_index(drop=True)


def chart_cpu_split(split, path):
    """Horizontal stacked bars: user (interpreter + library) and sys (kernel) us/conn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(split) + 1.4))
    y = range(len(split))
    ax.barh(y, split["sys_us"], color="#9aa5b1", label="sys: kernel (TCP, epoll, close)")
    ax.barh(y, split["user_us"], left=split["sys_us"], color="#4a7ab5",
            label="user: interpreter + event library + procs")
    for i, row in split.iterrows():
        text = f"{row['cpu_us']:.1f} us (user {row['user_us']:.1f})"
        if row["syscalls"] == row["syscalls"]:
            text += f", {row['syscalls']:.1f} syscalls"
        ax.annotate(text, (row["cpu_us"], i), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_yticks(list(y))
    ax.set_yticklabels(split["label"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, split["cpu_us"].max() * 1.45)
    ax.set_xlabel("server CPU us per connection (median of clean loopback runs)")
    ax.set_title("Where the server's CPU goes", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


# Head-to-head comparisons the targets are stated in (docs/performance.md): (a, b, what).
HEAD_TO_HEAD = [
    ("alone_proc", "uvloop", "unified proc vs uvloop"),
    ("alone_proc", "master", "unified proc vs ae's read/write procs"),
    ("mul_thread:pool=oneshot", "mul_thread", "improved pool vs the study's pool"),
    ("raw_epoll:diet", "raw_epoll:diet,no_cork", "TCP_CORK's share of the diet"),
]


def head_to_head(df, pairs=HEAD_TO_HEAD):
    """Paired ratios a / b from rounds where both ran clean in the same batch (same link,
    concurrency, size, Python, budget): one row per pair and conditions, only where such
    rounds exist.  The summary engine's pairing, with b as the baseline."""
    import pandas as pd

    recs = [r for r in _records_of(df) if _summary.rate_of(r) is None]
    rows = []
    for a, b, what in pairs:
        mine = [r for r in recs if _summary.spec_of(r) in (a, b)]
        for r in _summary.summarize(mine, baseline=b):
            if r["spec"] != a or not r["paired_rounds"]:
                continue
            rows.append({"a": a, "b": b, "what": what, "link": r["link"], "python": r["python"],
                         "budget": r["budget"], "concurrency": r["concurrency"], "size": r["size"],
                         "rounds": r["paired_rounds"], "batches": r["paired_batches"],
                         "ratio_cpu": r["ratio_cpu_to_baseline"],
                         "ratio_conn": r["ratio_conn_to_baseline"],
                         "cpu_ci": r["ratio_cpu_interval"], "conn_ci": r["ratio_conn_interval"],
                         "verdict_conn": _summary.verdict_text(r, "conn"),
                         "verdict_cpu": _summary.verdict_text(r, "cpu")})
    return pd.DataFrame(rows)


# The engine's row fields, under the names the charts, tables and reproduce.py use.
_COLUMNS = {"runs": "runs", "excluded": "excluded", "failed": "failed_conns", "clean": "clean",
            "client_bound": "client_bound", "server_bound": "server_bound",
            "conn_per_s_median": "conn_med", "conn_per_s_min": "conn_min", "conn_per_s_max": "conn_max",
            "server_cpu_us_per_conn_median": "cpu_med", "server_cpu_us_per_conn_min": "cpu_min",
            "server_cpu_us_per_conn_max": "cpu_max", "p50_us_median": "p50_med",
            "p99_us_median": "p99_med", "ratio_conn_to_baseline": "ratio_conn",
            "ratio_cpu_to_baseline": "ratio_cpu", "paired_rounds": "ratio_n",
            "consistency": "consistency", "ratio_conn_interval": "conn_ci",
            "ratio_cpu_interval": "cpu_ci", "verdict_conn": "verdict_conn",
            "verdict_cpu": "verdict_cpu", "is_baseline": "is_baseline", "baseline": "baseline",
            "variant_commit": "variant_commit", "lossy_runs": "lossy_runs",
            "failed_runs": "failed_runs"}


def summarize(df):
    """The closed-loop table: the summary engine's rows (harness/summary.py) for the runs of
    ``df``, one per (link, spec, concurrency, size, python, budget, baseline), as a
    DataFrame with the column names the charts use."""
    import pandas as pd

    rows = [r for r in _summary.summarize(_records_of(df)) if r["rate"] is None]
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame([{**{k: r[k] for k in GROUP}, **{v: r[k] for k, v in _COLUMNS.items()},
                         "_row": r} for r in rows])
    for col in ("conn_med", "conn_min", "conn_max", "cpu_med", "cpu_min", "cpu_max", "p50_med",
                "p99_med", "ratio_conn", "ratio_cpu", "consistency"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in ("runs", "excluded", "failed_conns", "clean", "client_bound", "server_bound", "ratio_n"):
        out[col] = out[col].fillna(0).astype(int)
    # The baseline first on each link, then by conn/s: the eye reads the baseline first.
    out["_order"] = (~out["is_baseline"].astype(bool)).astype(int)
    out["_link"] = out["link"].map({l: i for i, l in enumerate(link_order(out["link"]))})
    out["_budget"] = out["budget"].map(lambda b: -1.0 if b == "off" else float(b))
    out["_base"] = (out["baseline"] != BASELINE).astype(int)
    out = out.sort_values(["_link", "_budget", "python", "concurrency", "size", "_base", "baseline",
                           "_order", "conn_med"],
                          ascending=[True, False, True, True, True, True, True, True, False]
                          ).drop(columns=["_order", "_link", "_budget", "_base"])
    nun = out.groupby("link")[["concurrency", "size", "python", "budget"]].transform("nunique")
    multi, multi_py = nun[["concurrency", "size"]].max(axis=1) > 1, nun["python"] > 1
    multi_b = nun["budget"] > 1
    vs = [("" if b == BASELINE or b is None else (" (baseline)" if isb else f" ÷ {b}"))
          for b, isb in zip(out["baseline"], out["is_baseline"])]
    out["label"] = [s + v + (f" c={c} s={z}" if m else "") + (f" [{py}]" if mp else "")
                    + ((" [no budget]" if b == "off" else f" [{b} core]") if mb else "")
                    for s, v, c, z, py, b, m, mp, mb in zip(out["spec"], vs, out["concurrency"],
                                                            out["size"], out["python"], out["budget"],
                                                            multi, multi_py, multi_b)]
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- charts

def _plt():
    import matplotlib
    matplotlib.use("Agg")            # no display here; also keeps tests headless
    import matplotlib.pyplot as plt
    return plt


def _panels(plt, n, width=6.0, height=4.2, bars=None):
    """One row of n panels; with ``bars`` (bars per panel) each panel is as wide as its
    bars need, so a link with 13 servers is not squeezed to the width of one with 4."""
    if bars:
        fig, axes = plt.subplots(1, n, figsize=(max(0.55 * sum(bars) + 1.6 * n, 6), height),
                                 squeeze=False, gridspec_kw={"width_ratios": [max(b, 2) for b in bars]})
    else:
        fig, axes = plt.subplots(1, n, figsize=(max(width * n, 6), height), squeeze=False)
    return fig, axes[0]


def default_interpreter(summary):
    """The rows the per-link charts show: on each link, those of the default interpreter
    when it has any (other interpreters get chart_interpreters), else all of them."""
    if summary.empty:
        return summary
    has_default = summary.groupby("link")["python"].transform(lambda p: (p == "default").any())
    out = summary[~has_default | (summary["python"] == "default")].reset_index(drop=True)
    out["label"] = out["label"].str.replace(" [default]", "", regex=False)
    return out




def headline(summary):
    """The rows the per-link bar charts show: the default interpreter's (default_interpreter),
    and on each link the server-bound runs where there are any -- those of the budget with
    the most clean runs -- else the unbudgeted ones.  Budgeted and unbudgeted runs are never
    drawn side by side: their CPU per connection is taken at different loads."""
    s = default_interpreter(summary)
    if s.empty:
        return s
    # Only rows compared with raw_epoll: an A/A or revision batch (baseline: the working
    # tree) belongs in the tables, not in the chart of the designs against raw epoll.
    if "baseline" in s.columns:
        s = s[(s["spec"] == BASELINE) | (s["baseline"] == BASELINE)]
    keep = []
    for link, g in s.groupby("link", sort=False):
        budgets = g[g["budget"] != "off"]
        if len(budgets):
            counts = budgets.groupby("budget")["clean"].sum()
            pick = counts.idxmax()
        else:
            pick = "off"
        keep.append(g[g["budget"] == pick])
    import pandas as pd
    out = pd.concat(keep).reset_index(drop=True)
    out["label"] = out["label"].str.replace(r" \[(no budget|[0-9.]+ core)\]", "", regex=True)
    return out


def budget_title(budget: str) -> str:
    return "no CPU budget" if budget == "off" else f"server held to {budget} core"


def _bar_chart(summary, df, path, *, med, lo, hi, col, ratio, ylabel, title, mark_bound):
    """One panel per link: median bars, min-max whiskers, raw_epoll as a dashed line,
    each bar labelled with its paired ratio; excluded runs as red crosses."""
    plt = _plt()
    summary = headline(summary)
    links = link_order(summary["link"])
    fig, axes = _panels(plt, len(links), bars=[int((summary["link"] == l).sum()) for l in links])
    for ax, link in zip(axes, links):
        s = summary[summary["link"] == link].reset_index(drop=True)
        x = range(len(s))
        heights = s[med].fillna(0)
        lower = (s[med] - s[lo]).fillna(0)
        upper = (s[hi] - s[med]).fillna(0)
        colors = ["#555555" if isb else "#4a7ab5" for isb in s["is_baseline"]]
        bars = ax.bar(x, heights, color=colors, yerr=[lower, upper], capsize=4,
                      error_kw={"elinewidth": 1})
        for i, row in s.iterrows():
            if mark_bound and row["client_bound"]:
                bars[i].set_hatch("//")
                bars[i].set_edgecolor("white")
            r = row[ratio]
            if row["clean"]:
                text = "baseline" if row["is_baseline"] else (
                    f"x{r:.2f}" if r == r else "no pair")
                c = row["consistency"]
                # Marked where conn/s should equal budget / CPU: server-bound rows.
                if mark_bound and c == c and abs(c - 1) > _summary.CONSISTENCY_TOLERANCE \
                        and row.get("server_bound", 0) and row["server_bound"] == row["clean"]:
                    text += " !"
                ax.annotate(text, (i, row[hi]), textcoords="offset points", xytext=(0, 3),
                            ha="center", fontsize=8)
            # Excluded runs: visible, never in the bar.
            same = (df[GROUP] == row[GROUP]).all(axis=1)
            bad = df[same & df["excluded"] & ~df["open_loop"]][col].dropna()
            if len(bad):
                ax.scatter([i] * len(bad), bad, marker="x", color="red", zorder=3,
                           label="excluded run" if i == 0 else None)
            if row["clean"] == 0:
                ax.annotate("no clean run", (i, 0), xytext=(0, 3), textcoords="offset points",
                            ha="center", fontsize=8, color="red")
        base = s[s["spec"] == BASELINE][med].dropna()
        if len(base):
            ax.axhline(base.iloc[0], color="#555555", linestyle="--", linewidth=1,
                       label=f"{BASELINE} median")
        ax.set_xticks(list(x))
        ax.set_xticklabels(s["label"], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} - link {link}\n{budget_title(s['budget'].iloc[0])}", fontsize=10)
        if mark_bound and s["client_bound"].any():
            ax.bar([0], [0], color="#4a7ab5", hatch="//", edgecolor="white",
                   label="has client-bound runs (lower bound)")
        # Headroom above the tallest whisker for the ratio labels and the legend.
        shown = df[(df["link"] == link) & ~df["open_loop"]
                   & df["spec"].isin(s["spec"]) & df["budget"].isin(s["budget"])]
        top = max([v for v in list(s[hi]) + list(shown[col]) if v == v] or [1])
        ax.set_ylim(0, top * 1.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            uniq = dict(zip(labels, handles))
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_over_time(df, path):
    """conn/s per second within each closed-loop run, from its SNAPSHOT lines: one panel
    per link, and soak runs (minutes long) in panels of their own so they do not squeeze
    the short runs into the first few seconds of the axis."""
    plt = _plt()
    runs = df[~df["open_loop"] & (df["snapshots"].map(len) > 0)]
    soak = runs["kind"] == "soak"
    panels = [(link, False) for link in link_order(runs[~soak]["link"])]
    panels += [(link, True) for link in link_order(runs[soak]["link"])]
    fig, axes = _panels(plt, len(panels) or 1, width=7)
    cmap = plt.get_cmap("tab20")
    for ax, (link, is_soak) in zip(axes, panels):
        mine = runs[(runs["link"] == link) & (soak == is_soak)]
        specs = list(dict.fromkeys(mine["spec"]))
        warm_end = 0
        for _, run in mine.iterrows():
            snaps = [s for s in run["snapshots"] if isinstance(s, dict) and "t" in s]
            t = [s["t"] for s in snaps]
            v = [s.get("speed") for s in snaps]
            color = cmap(specs.index(run["spec"]) % 20)
            style = ":" if run["excluded"] else "-"
            ax.plot(t, v, style, color=color, linewidth=1, alpha=0.8)
            warm_end = max([warm_end] + [s["t"] for s in snaps if s.get("warmup")])
        if warm_end:
            ax.axvspan(0, warm_end, color="#dddddd", alpha=0.5, linewidth=0)
        for sp in specs:
            ax.plot([], [], color=cmap(specs.index(sp) % 20), label=sp)
        ax.plot([], [], ":", color="black", label="excluded run")
        ax.set_xlabel("seconds into the run (grey: warm-up)")
        ax.set_ylabel("conn/s in the last second")
        ax.set_title(f"conn/s over time - {'soak runs, ' if is_soak else ''}link {link}",
                     fontsize=10)
        ax.legend(fontsize=6, ncol=2 if len(specs) > 6 else 1, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_interpreters(summary, path) -> bool:
    """Paired CPU ratio to raw_epoll per design, grouped by interpreter, on loopback:
    how much of a design's cost the interpreter changes.  False when there is only one."""
    plt = _plt()
    s = summary[(summary["link"] == "loopback") & ~summary["is_baseline"].astype(bool)
                & (summary["baseline"] == BASELINE)
                & summary["ratio_cpu"].notna()]
    pythons = sorted(s["python"].unique(),
                     key=lambda p: (p != "default",
                                    [int(x) if x.isdigit() else 0
                                     for x in p.replace("python", "").rstrip("t").split(".")]))
    if len(pythons) < 2:
        return False
    specs = list(dict.fromkeys(s[s["python"] != "default"]["spec"]))
    fig, ax = plt.subplots(figsize=(max(0.55 * len(pythons) * len(specs) + 2, 6), 4.2))
    width = 0.8 / len(specs)
    cmap = plt.get_cmap("tab10")
    for j, sp in enumerate(specs):
        labelled = False
        for i, py in enumerate(pythons):
            row = s[(s["spec"] == sp) & (s["python"] == py)]
            if len(row):
                v = row["ratio_cpu"].iloc[0]
                ax.bar(i - 0.4 + width * (j + 0.5), v, width, color=cmap(j % 10),
                       label=None if labelled else sp)
                labelled = True
                ax.annotate(f"{v:.2f}", (i - 0.4 + width * (j + 0.5), v), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize=7)
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1, label=f"{BASELINE} (1.00)")
    ax.set_xticks(range(len(pythons)))
    ax.set_xticklabels(["default (venv)" if p == "default" else p for p in pythons], fontsize=8)
    ax.set_ylabel(f"server CPU per connection / {BASELINE}'s (paired)")
    ax.set_title("The designs' cost on each interpreter - loopback", fontsize=10)
    ax.set_ylim(0, max(s["ratio_cpu"].max() * 1.2, 1.3))
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def chart_latency(summary, path):
    plt = _plt()
    summary = headline(summary)
    links = link_order(summary["link"])
    fig, axes = _panels(plt, len(links), bars=[int((summary["link"] == l).sum()) for l in links])
    for ax, link in zip(axes, links):
        s = summary[summary["link"] == link].reset_index(drop=True)
        x = range(len(s))
        ax.bar([i - 0.2 for i in x], s["p50_med"].fillna(0), 0.4, label="p50", color="#4a7ab5")
        ax.bar([i + 0.2 for i in x], s["p99_med"].fillna(0), 0.4, label="p99", color="#d08c3a")
        ax.set_xticks(list(x))
        ax.set_xticklabels(s["label"], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("latency per connection (us), median of clean runs")
        ax.set_title(f"latency, closed loop - link {link}, {budget_title(s['budget'].iloc[0])}",
                     fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_cpu_vs_rate(df, path) -> bool:
    """Server CPU per connection against the offered rate (open-loop runs): the load
    dependence.  A busier loop serves more events per epoll_wait, so CPU per connection
    falls as the rate rises; servers are compared like for like only at one rate."""
    plt = _plt()
    sw = df[df["open_loop"] & ~df["excluded"] & df["cpu_us_per_conn"].notna()]
    if sw.empty or sw.groupby(["link", "spec"])["rate"].nunique().max() < 2:
        return False
    links = link_order(sw["link"])
    fig, axes = _panels(plt, len(links), width=7)
    cmap = plt.get_cmap("tab10")
    specs = list(dict.fromkeys(sw["spec"]))
    for ax, link in zip(axes, links):
        d = sw[sw["link"] == link]
        for (sp, budget), runs in d.groupby(["spec", "budget"], sort=False):
            med = runs.groupby("rate")["cpu_us_per_conn"].median()
            label = sp + ("" if budget == "off" else f" [{budget} core]")
            ax.plot(med.index, med.values, "o-", color=cmap(specs.index(sp) % 10), label=label)
        ax.set_xlabel("offered rate (conn/s)")
        ax.set_ylabel("server CPU us per connection (median)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"CPU per connection vs offered rate (open loop) - link {link}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def chart_latency_vs_rate(df, path):
    plt = _plt()
    sw = df[df["open_loop"]]
    links = link_order(sw["link"])
    fig, axes = _panels(plt, len(links), width=7)
    cmap = plt.get_cmap("tab10")
    specs = list(dict.fromkeys(sw["spec"]))
    for ax, link in zip(axes, links):
        d = sw[sw["link"] == link]
        for sp, runs in d.groupby("spec", sort=False):
            color = cmap(specs.index(sp) % 10)
            ok = runs[~runs["excluded"]].groupby("rate")[["p50_us", "p99_us"]].median()
            ax.plot(ok.index, ok["p50_us"], "o-", color=color, label=f"{sp} p50")
            ax.plot(ok.index, ok["p99_us"], "s--", color=color, label=f"{sp} p99")
            bad = runs[runs["excluded"]]
            if len(bad):
                ax.scatter(bad["rate"], bad["p99_us"].fillna(0), marker="x", color="red",
                           zorder=3, label="excluded run")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (conn/s)")
        ax.set_ylabel("latency from scheduled start (us)")
        ax.set_title(f"latency vs offered rate (open loop) - link {link}", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- markdown

def _n(v, fmt="{:,.0f}"):
    return "-" if v is None or v != v else fmt.format(v)


def _num(v):
    return None if v is None or v != v else float(v)


def _range(med, lo, hi):
    return "-" if med != med else f"{_n(med)} [{_n(lo)}-{_n(hi)}]"


def _ratio(v):
    return "-" if v is None or v != v else f"{v:.2f}"


def ratio_ci(row, which: str = "conn") -> str:
    """A report row's paired ratio with its interval, ``1.04 [1.01-1.07]`` (the engine's text)."""
    r = row[f"ratio_{which}"]
    ci = row.get(f"{which}_ci") if hasattr(row, "get") else None
    return _summary.ratio_text(None if r is None or r != r else float(r),
                               ci if isinstance(ci, (tuple, list)) else None)


def verdicts_md(row) -> str:
    r = row["_row"]
    return f"{_summary.verdict_text(r, 'conn')}; CPU: {_summary.verdict_text(r, 'cpu')}"


def table_md(summary) -> str:
    head = ("| link | spec | c | CPU budget | runs (clean/excl.) | conn/s median [min-max] | "
            "ratio conn/s [CI] | CPU us/conn median | ratio CPU [CI] | verdict | conn/s x CPU | pairs | "
            "p50 / p99 us | failed conns | client-bound | server-bound |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for _, r in summary.iterrows():
        base = bool(r["is_baseline"])
        lines.append(
            f"| {r['link']} | {r['label']} | {r['concurrency']} | "
            f"{'off' if r['budget'] == 'off' else r['budget'] + ' core'} | {r['runs']} "
            f"({r['clean']}/{r['excluded']}) | {_range(r['conn_med'], r['conn_min'], r['conn_max'])} | "
            f"{'1 (baseline)' if base else ratio_ci(r, 'conn')} | "
            f"{_n(r['cpu_med'], '{:.1f}')} | {'1' if base else ratio_ci(r, 'cpu')} | "
            f"{'baseline' if base else verdicts_md(r)} | "
            f"{'-' if base else _summary.consistency_text(r['consistency'], none='-')} | "
            f"{'-' if base else _summary.pairs_text(r['_row'])} | {_n(r['p50_med'])} / {_n(r['p99_med'])} | "
            f"{r['failed_conns']} | {r['client_bound']}"
            + (" (lower bound)" if r["client_bound"] else "") + " | "
            + ("-" if r["budget"] == "off" else f"{r['server_bound']}/{r['clean']}") + " |")
    return head + "\n".join(lines) + "\n"


_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+@-]+/)+[\w.+@-]*")


def shown_path(text: str) -> str:
    """Absolute paths in ``text`` as a report shows them: inside the repository relative to
    it, elsewhere (an interpreter under a home directory) by their last component only, so a
    generated report names no path outside the repository."""
    root = _records.ROOT.rstrip("/") + "/"

    def one(m: re.Match) -> str:
        p = m.group(0)
        if p.startswith(root):
            return p[len(root):]
        return os.path.basename(p) or p

    return _ABS_PATH.sub(one, text)


def environment_md(records) -> str:
    """Each environment field with its distinct values and how many runs had each."""
    from collections import Counter
    fields: dict[str, Counter] = {}
    for r in records:
        for k, v in (r.get("env") or {}).items():
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


HOW_TO_READ = """\
## How to read this report

- **Medians use clean runs only.** A run is excluded when its status is `failed` or
  it lost connections (`metrics.lost > 0`); it is drawn as a red cross and listed
  under "Excluded runs" with the reason. Each table row shows `runs (clean/excl.)`.
- **Client-bound runs are kept but flagged.** When the load client used >= 90 % of a
  core, the conn/s figure is a *lower bound* of the server's capacity: the bar is
  hatched and the row says "lower bound". Server CPU per connection is unaffected
  and is the primary figure on a 2-vCPU machine (issue 7).
- **Ratios are paired.** `ratio` is the median over rounds of (run / baseline run
  of the same batch and round, same link, concurrency, size, Python and CPU budget); `pairs`
  is how many rounds. The baseline is raw_epoll when the batch ran it, else the first
  working-tree spec of the batch (a row "x ÷ y" says which). Ratios are never formed across
  batches. Ratio conn/s above 1 is faster; ratio CPU below 1 is cheaper.
- **Every ratio has an interval and a verdict.** `[low-high]` is a distribution-free
  interval for the median of the per-round ratios (order statistics): 95 % from 6 rounds,
  [min-max] with 94 % coverage at 5 (the `pairs` column says so), none under 5 ("too few
  rounds"). The verdict is `faster`/`slower` (`less CPU`/`more CPU`) when the interval
  excludes 1.00, else `not distinguishable` (docs/statistics.md).
- **Server-bound runs measure the server.** With a CPU budget (`SERVER_CPU=0.4`, the
  default of `make bench`/`make compare` where the machine allows it) each server runs
  in a cgroup with a CFS quota of that many cores, so it, not the client, sets the rate:
  conn/s is then budget ÷ CPU per connection, and `conn/s x CPU` (conn/s ratio times
  CPU ratio) is 1.00 within a few %; '!' marks a gap above 5 %. `server-bound` counts
  the runs where the server used >= 90 % of its budget and the client was not saturated.
  The charts show the server-bound runs where a link has them; budgeted and unbudgeted
  runs are never pooled (CPU per connection depends on load).
- **Whiskers are min-max** of the clean runs, not a confidence interval.
- **Open-loop (sweep) runs** appear only in the latency-vs-rate chart: latency there
  counts from each connection's scheduled start, so server stalls are not hidden.
"""


def write_report(results: str, records: list[dict], problems: list[str]) -> str:
    """Write REPORT.md and the charts; return the REPORT.md path."""
    df = frame(records)
    summary = summarize(df)
    charts_dir = os.path.join(results, "charts")
    os.makedirs(charts_dir, exist_ok=True)
    charts: list[tuple[str, str, str]] = []   # (file, title, caption)

    if not summary.empty:
        _bar_chart(summary, df, os.path.join(charts_dir, "conn_per_s.png"),
                   med="conn_med", lo="conn_min", hi="conn_max", col="conn_per_s",
                   ratio="ratio_conn", ylabel="connections per second",
                   title="conn/s (median, min-max)", mark_bound=True)
        charts.append(("conn_per_s.png", "Connections per second",
                       "Server-bound runs where a link has them (each server in a cgroup "
                       "with a CPU quota, the budget in the panel title), so conn/s measures the "
                       "server. Bars: median of clean runs; whiskers: min-max; dashed line: "
                       "raw_epoll; label: paired ratio to raw_epoll, '!' where it disagrees with "
                       "the inverse CPU ratio by more than 5 %; hatched: includes client-bound "
                       "runs (lower bound); red crosses: excluded runs."))
        _bar_chart(summary, df, os.path.join(charts_dir, "cpu_per_conn.png"),
                   med="cpu_med", lo="cpu_min", hi="cpu_max", col="cpu_us_per_conn",
                   ratio="ratio_cpu", ylabel="server CPU (user+sys) us per connection",
                   title="server CPU per connection", mark_bound=False)
        charts.append(("cpu_per_conn.png", "Server CPU per connection",
                       "Lower is better. The same runs as the conn/s chart; the label is the "
                       "paired ratio of CPU per connection to raw_epoll's."))
        chart_latency(summary, os.path.join(charts_dir, "latency.png"))
        charts.append(("latency.png", "Latency p50 / p99",
                       "Closed loop: latency includes the wait in the server's queue."))
        if chart_interpreters(summary, os.path.join(charts_dir, "interpreters.png")):
            charts.append(("interpreters.png", "The designs on each interpreter",
                           "The three charts above show the default interpreter; this one "
                           "the paired CPU ratio to raw_epoll for every interpreter run "
                           "with PYTHON=... (tables above for the figures)."))
    split = cpu_split(df, results)
    if not split.empty:
        chart_cpu_split(split, os.path.join(charts_dir, "cpu_split.png"))
        charts.append(("cpu_split.png", "Where the server's CPU goes",
                       "Median user and sys CPU per connection on loopback, with system calls "
                       "per connection from `make syscalls` where recorded. The kernel's share "
                       "is the floor every server pays; an event library only moves the "
                       "user part."))
    if any(len(s) for s in df["snapshots"]):
        chart_over_time(df, os.path.join(charts_dir, "conn_over_time.png"))
        charts.append(("conn_over_time.png", "conn/s over time within runs",
                       "One line per run from the client's per-second snapshots; dotted: "
                       "excluded runs. A steady line is a steady server; a sag or a gap is "
                       "a stall, a backlog overflow or port exhaustion."))
    if df["open_loop"].any() and chart_cpu_vs_rate(df, os.path.join(charts_dir, "cpu_vs_rate.png")):
        charts.append(("cpu_vs_rate.png", "CPU per connection against offered rate",
                       "Open loop. CPU per connection is not a constant of a server: a busier "
                       "loop serves more events per epoll_wait. Compare servers at one rate "
                       "(`make compare RATE=...`) or all saturated."))
    if df["open_loop"].any():
        chart_latency_vs_rate(df, os.path.join(charts_dir, "latency_vs_rate.png"))
        charts.append(("latency_vs_rate.png", "Latency against offered rate (sweeps)",
                       "Open loop; the knee, where p99 turns up, is the sustainable rate."))

    md = ["# Benchmark report\n",
          f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make report` "
          f"from {len(records)} run records in `{shown_path(os.path.join(results, 'runs'))}`.\n"]
    if problems:
        md.append("**Unreadable run files (skipped):**\n")
        md += [f"- {p}" for p in problems]
        md.append("")
    md.append(HOW_TO_READ)
    if not summary.empty:
        md.append("## Closed-loop results per link\n")
        for link in link_order(summary["link"]):
            md.append(f"### link: {link}\n")
            md.append(table_md(summary[summary["link"] == link]))
    else:
        md.append("No closed-loop runs recorded.\n")
    h2h = head_to_head(df) if len(df) else None
    if h2h is not None and len(h2h):
        md.append("## Head to head (paired in the same rounds)\n")
        md.append("| a | b | what | link | python | CPU budget | rounds (batches) | CPU/conn a ÷ b | "
                  "conn/s a ÷ b | verdict |\n|---|---|---|---|---|---|---|---|---|---|")
        for _, r in h2h.iterrows():
            md.append(f"| {r['a']} | {r['b']} | {r['what']} | {r['link']} | {r['python']} | "
                      f"{'off' if r['budget'] == 'off' else r['budget'] + ' core'} | "
                      f"{r['rounds']} ({r['batches']}) | "
                      f"{_summary.ratio_text(_num(r['ratio_cpu']), r['cpu_ci'])} | "
                      f"{_summary.ratio_text(_num(r['ratio_conn']), r['conn_ci'])} | "
                      f"{r['verdict_conn']}; CPU: {r['verdict_cpu']} |")
        md.append("\nMedian over rounds of (a ÷ b) where both ran clean in the same round of "
                  "one batch. conn/s ratios of client-bound runs measure the client.\n")
    if not split.empty:
        md.append("## Where the server's CPU goes (loopback)\n")
        md.append("| spec | runs | CPU us/conn | user us/conn | sys us/conn | syscalls/conn |")
        md.append("|---|---|---|---|---|---|")
        for _, r in split.iterrows():
            md.append(f"| {r['label']} | {r['runs']} | {r['cpu_us']:.1f} | {r['user_us']:.1f} | "
                      f"{r['sys_us']:.1f} | {_n(r['syscalls'], '{:.2f}')} |")
        md.append("\nuser = interpreter, event library and procs; sys = the kernel's TCP and "
                  "epoll work. Medians of clean runs over all batches (not paired: for ratios "
                  "read the tables above).\n")
    if df["open_loop"].any():
        md.append("## Open-loop sweeps\n")
        md.append("| link | spec | CPU budget | offered rate | runs (excl.) | achieved conn/s | "
                  "CPU us/conn | p50 us | p99 us |")
        md.append("|---|---|---|---|---|---|---|---|---|")
        sw = df[df["open_loop"]]
        for (link, spec, budget, rate), g in sw.groupby(["link", "spec", "budget", "rate"]):
            ok = g[~g["excluded"]]
            got = ok["conn_per_s"].median()
            short = got == got and got < _summary.SUSTAINED_SHARE * rate
            md.append(f"| {link} | {spec} | {'off' if budget == 'off' else budget + ' core'} | "
                      f"{_n(rate)} | {len(g)} ({int(g['excluded'].sum())}) | "
                      f"{_n(got)}{' (not sustained)' if short else ''} | "
                      f"{_n(ok['cpu_us_per_conn'].median(), '{:.1f}')} | {_n(ok['p50_us'].median())} | "
                      f"{_n(ok['p99_us'].median())} |")
        md.append(f"\nAn offered rate is *not sustained* when the server completed less than "
                  f"{_summary.SUSTAINED_SHARE:.0%} of it; its CPU per connection is then a saturated server's.\n")
    md.append("## Charts\n")
    for fname, title, caption in charts:
        md.append(f"### {title}\n\n![{title}](charts/{fname})\n\n{caption}\n")
    md.append("## Excluded runs\n")
    bad = df[df["excluded"]]
    if bad.empty:
        md.append("None: every run completed every connection it started.\n")
    else:
        md.append("| run_id | spec | link | kind | round | conn/s | reason |\n|---|---|---|---|---|---|---|")
        for _, r in bad.iterrows():
            md.append(f"| {r['run_id']} | {r['spec']} | {r['link']} | {r['kind']} | {r['round']} "
                      f"| {_n(r['conn_per_s'])} | {r['reason']} |")
        md.append("")
    md.append("## Client-bound runs (kept, conn/s is a lower bound)\n")
    cb = df[df["client_bound"] & ~df["excluded"]]
    if cb.empty:
        md.append("None.\n")
    else:
        md.append("| run_id | spec | link | conn/s | client CPU share |\n|---|---|---|---|---|")
        for _, r in cb.iterrows():
            md.append(f"| {r['run_id']} | {r['spec']} | {r['link']} | {_n(r['conn_per_s'])} | "
                      f"{_n(r['client_cpu_share'], '{:.2f}')} |")
        md.append("")
    md.append("## Environment of the runs\n")
    md.append(environment_md(records))
    md.append("Rerun: `make bench` / `make compare` to record runs, then `make report`.\n")

    path = os.path.join(results, "REPORT.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(md))
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    from harness import cli
    ap = cli._Parser(prog="python -m harness report",
                                 description="Write results/REPORT.md and results/charts/*.png "
                                             "from the recorded runs.")
    ap.add_argument("--results-dir", help="results directory (default: $EVENTS_RESULTS_DIR "
                                          "or results/ of the repository)")
    args = ap.parse_args(argv)
    results = _records.results_dir(args.results_dir)
    if not os.path.isdir(results):
        print(f"error: results folder {results} does not exist: give the folder the runs were "
              "written to (--results-dir or $EVENTS_RESULTS_DIR; default results/)", file=sys.stderr)
        return 2
    records, problems = load(results)
    for p in problems:
        print(f"warning: skipped {p}", file=sys.stderr)
    if not records:
        print(f"{NO_RUNS} (no run files in {os.path.join(results, 'runs')})", file=sys.stderr)
        return 1
    path = write_report(results, records, problems)
    print(f"wrote {path} ({len(records)} runs, {len(problems)} skipped) "
          f"and charts under {os.path.join(results, 'charts')}")
    from harness import reproduce      # late: reproduce imports this module
    repro = reproduce.refresh_latest(records, results)
    if repro:
        print(f"rewrote {repro} from the latest recorded reproduction")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
