"""The charts of ``make report`` (PNG, under results/charts/), drawn from the frames of
harness/frame.py: conn/s and CPU per connection per link (medians, min-max whiskers,
paired ratios as labels, excluded runs as red crosses, client-bound runs hatched),
latency, the designs on each interpreter, where the CPU goes, conn/s over time
within runs, and the open-loop sweeps.  Which rows a chart shows is decided here
(``default_interpreter``, ``headline``); every figure comes from the frame.
"""

from __future__ import annotations

from harness import metrics as _metrics
from harness import summary as _summary
from harness.frame import GROUP, is_headline_spec, link_order, pick_batch
from harness.summary import BASELINE

def _plt():
    import matplotlib
    matplotlib.use("Agg")            # no display here; also keeps tests headless
    import matplotlib.pyplot as plt
    return plt

def _save(plt, fig, path, foot: bool = False) -> bool:
    fig.tight_layout(rect=(0, 0.08, 1, 1) if foot else None)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _link_panels(plt, summary):
    """The headline rows (``headline``), one panel per link: (figure, [(ax, link, rows)])."""
    summary = headline(summary)
    links = link_order(summary["link"])
    fig, axes = _panels(plt, len(links), bars=[int((summary["link"] == l).sum()) for l in links])
    return fig, [(ax, link, summary[summary["link"] == link].reset_index(drop=True))
                 for ax, link in zip(axes, links)]


def _rate_panels(plt, sw):
    """The open-loop charts' layout: one panel per link, one colour per spec throughout.
    (figure, [(ax, link, that link's rows)], colour of a spec)."""
    links = link_order(sw["link"])
    fig, axes = _panels(plt, len(links), width=7)
    cmap = plt.get_cmap("tab10")
    specs = list(dict.fromkeys(sw["spec"]))
    return (fig, [(ax, link, sw[sw["link"] == link]) for ax, link in zip(axes, links)],
            lambda sp: cmap(specs.index(sp) % 10))


def _panels(plt, n, width=8.2, height=4.2, bars=None):
    """n panels stacked one above the other, each the full width (a README is about 900 px
    wide: a strip of side-by-side panels shrinks each one and cuts the last title); with
    ``bars`` (bars per panel) as wide as the most bars need."""
    if bars:
        width = min(max(0.6 * max(bars) + 2.0, 6.5), 11)
    fig, axes = plt.subplots(n, 1, figsize=(width, height * n), squeeze=False)
    return fig, [row[0] for row in axes]

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

def _batches_text(d) -> str:
    """The batches a panel draws, named in its title."""
    bs = sorted(d["batch"].unique()) if len(d) and "batch" in d else []
    return ("batch " if len(bs) == 1 else "batches ") + ", ".join(bs) if bs else ""

def interpreter_rows(rows):
    """The rows of the interpreters chart, from ``rows`` (every batch's rows,
    frame.summarize(df, latest=False)): on loopback, designs against raw_epoll, at one CPU
    budget (the one most interpreters ran at, the latest among equals: a 1.5-core batch
    beside 0.4-core ones would compare two loads), and for each interpreter one batch: the
    one with the most designs, the latest among equals (frame.pick_batch)."""
    s = rows[(rows["link"] == "loopback") & ~rows["is_baseline"].astype(bool)
             & (rows["baseline"] == BASELINE) & rows["ratio_cpu_to_baseline"].notna()
             & rows["spec"].map(is_headline_spec)]
    if s.empty:
        return s
    g = s.groupby("budget").agg(n=("python", "nunique"), t=("batch_time", "max"))
    s = s[s["budget"] == g.sort_values(["n", "t"]).index[-1]]
    keep = {pick_batch(s[s["python"] == py]) for py in s["python"].unique()}
    return s[s["batch"].isin(keep)].reset_index(drop=True)

def budget_title(budget: str) -> str:
    return "no CPU budget" if budget == "off" else f"server held to {budget} core"

def chart_cpu_split(split, path):
    """Horizontal stacked bars: user (interpreter + library) and sys (kernel) us/conn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(split) + 1.4))
    y = range(len(split))
    ax.barh(y, split["sys_us"], color="#9aa5b1", label="sys: kernel (TCP, epoll, close)")
    ax.barh(y, split["user_us"], left=split["sys_us"], color="#4a7ab5",
            label="user: interpreter + event library + procs")
    for i, row in split.iterrows():
        text = f"{row['cpu_us']:.1f} µs (user {row['user_us']:.1f})"
        if row["syscalls"] == row["syscalls"]:
            text += f", {row['syscalls']:.1f} syscalls"
        ax.annotate(text, (row["cpu_us"], i), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_yticks(list(y))
    ax.set_yticklabels(split["label"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, split["cpu_us"].max() * 1.45)
    ax.set_xlabel("server CPU µs per connection (median of clean loopback runs, no CPU budget)")
    batch = split["batch"].iloc[0] if "batch" in split else ""
    ax.set_title("Where the server's CPU goes" + (f"\nbatch {batch}" if batch else ""), fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    _save(plt, fig, path)


def bar_chart(summary, df, path, *, metric, ratio, title, mark_bound, batch=""):
    """One panel per link: the median of the metric ``metric`` (a row of the metrics
    table, harness/metrics.py: its axis label) as bars, min-max whiskers, raw_epoll as a
    dashed line, each bar labelled with its paired ratio; excluded runs as red crosses."""
    plt = _plt()
    m = _metrics.by_name(metric)
    med, lo, hi, col, ylabel = m.field("median"), m.field("min"), m.field("max"), m.name, m.label
    fig, panels = _link_panels(plt, summary)
    for ax, link, s in panels:
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
        ax.set_title(f"{title}\nlink {link}, {budget_title(s['budget'].iloc[0])}"
                     + (f"\nbatch {batch}" if batch else ""), fontsize=9)
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
    _save(plt, fig, path)


def chart_over_time(df, path):
    """conn/s per second within each closed-loop run, from its SNAPSHOT lines: one panel
    per link, and soak runs (minutes long) in panels of their own so they do not squeeze
    the short runs into the first few seconds of the axis."""
    plt = _plt()
    runs = df[~df["open_loop"] & (df["snapshots"].map(len) > 0)]
    soak = runs["kind"] == "soak"
    panels = [(link, False) for link in link_order(runs[~soak]["link"])]
    panels += [(link, True) for link in link_order(runs[soak]["link"])]
    fig, axes = _panels(plt, len(panels) or 1, height=3.4)
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
        ax.set_title(f"conn/s over time - {'soak runs, ' if is_soak else ''}link {link}\n"
                     f"{_batches_text(mine)}", fontsize=9)
        ax.legend(fontsize=6, ncol=2 if len(specs) > 6 else 1, loc="best")
    _save(plt, fig, path)


def chart_interpreters(summary, path) -> bool:
    """Paired CPU ratio to raw_epoll per design, grouped by interpreter, on loopback:
    how much of a design's cost the interpreter changes.  False when there is only one."""
    plt = _plt()
    s = interpreter_rows(summary)
    if s.empty:
        return False
    pythons = sorted(s["python"].unique(),
                     key=lambda p: (p != "default",
                                    [int(x) if x.isdigit() else 0
                                     for x in p.replace("python", "").rstrip("t").split(".")]))
    if len(pythons) < 2:
        return False
    specs = list(dict.fromkeys(s[s["python"] != "default"]["spec"]))
    fig, ax = plt.subplots(figsize=(min(max(0.45 * len(pythons) * len(specs) + 2, 6), 9.5), 4.6))
    width = 0.8 / len(specs)
    cmap = plt.get_cmap("tab10")
    for j, sp in enumerate(specs):
        labelled = False
        for i, py in enumerate(pythons):
            row = s[(s["spec"] == sp) & (s["python"] == py)]
            if len(row):
                v = row["ratio_cpu_to_baseline"].iloc[0]
                ax.bar(i - 0.4 + width * (j + 0.5), v, width, color=cmap(j % 10),
                       label=None if labelled else sp)
                labelled = True
                ax.annotate(f"{v:.2f}", (i - 0.4 + width * (j + 0.5), v), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize=7)
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1, label=f"{BASELINE} (1.00)")
    ax.set_xticks(range(len(pythons)))
    ax.set_xticklabels(["default (venv)" if p == "default" else p for p in pythons], fontsize=8)
    ax.set_ylabel(f"server CPU per connection / {BASELINE}'s (paired)")
    ax.set_title("The designs' cost on each interpreter - loopback, "
                 f"{budget_title(s['budget'].iloc[0])}", fontsize=10)
    batches = [f"{p}: {b}" for p, b in s.groupby("python")["batch"].first().items()]
    lines = ["batches: " + "; ".join(batches[i:i + 3]) for i in range(0, len(batches), 3)]
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=6.5, color="#555555")
    ax.set_ylim(0, max(s["ratio_cpu_to_baseline"].max() * 1.2, 1.3))
    ax.legend(fontsize=7, loc="upper right")
    return _save(plt, fig, path, foot=True)

def chart_latency(summary, path, batch=""):
    plt = _plt()
    fig, panels = _link_panels(plt, summary)
    for ax, link, s in panels:
        x = range(len(s))
        for name, shift, color in (("p50_us", -0.2, "#4a7ab5"), ("p99_us", 0.2, "#d08c3a")):
            m = _metrics.by_name(name)          # the metrics table's field and name
            ax.bar([i + shift for i in x], s[m.field("median")].fillna(0), 0.4,
                   label=name.split("_")[0], color=color)
        ax.set_xticks(list(x))
        ax.set_xticklabels(s["label"], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("latency per connection (µs), median of clean runs")
        ax.set_title(f"latency, closed loop - link {link}, {budget_title(s['budget'].iloc[0])}"
                     + (f"\nbatch {batch}" if batch else ""), fontsize=9)
        ax.legend(fontsize=7)
    _save(plt, fig, path)


def chart_cpu_vs_rate(df, path) -> bool:
    """Server CPU per connection against the offered rate (open-loop runs): the load
    dependence.  A busier loop serves more events per epoll_wait, so CPU per connection
    falls as the rate rises; servers are compared like for like only at one rate."""
    plt = _plt()
    sw = df[df["open_loop"] & ~df["excluded"] & df["server_cpu_us_per_conn"].notna()]
    if sw.empty or sw.groupby(["link", "spec"])["rate"].nunique().max() < 2:
        return False
    fig, panels, color_of = _rate_panels(plt, sw)
    for ax, link, d in panels:
        for (sp, budget), runs in d.groupby(["spec", "budget"], sort=False):
            med = runs.groupby("rate")["server_cpu_us_per_conn"].median()
            label = sp + ("" if budget == "off" else f" [{budget} core]")
            ax.plot(med.index, med.values, "o-", color=color_of(sp), label=label)
        ax.set_xlabel("offered rate (conn/s)")
        ax.set_ylabel("server CPU µs per connection (median)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"CPU per connection vs offered rate (open loop) - link {link}\n"
                     f"{_batches_text(d)}", fontsize=9)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)

def chart_latency_vs_rate(df, path):
    plt = _plt()
    sw = df[df["open_loop"]]
    fig, panels, color_of = _rate_panels(plt, sw)
    for ax, link, d in panels:
        for sp, runs in d.groupby("spec", sort=False):
            color = color_of(sp)
            ok = runs[~runs["excluded"]].groupby("rate")[["p50_us", "p99_us"]].median()
            ax.plot(ok.index, ok["p50_us"], "o-", color=color, label=f"{sp} p50")
            ax.plot(ok.index, ok["p99_us"], "s--", color=color, label=f"{sp} p99")
            bad = runs[runs["excluded"]]
            if len(bad):
                ax.scatter(bad["rate"], bad["p99_us"].fillna(0), marker="x", color="red",
                           zorder=3, label="excluded run")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (conn/s)")
        ax.set_ylabel("latency from scheduled start (µs)")
        ax.set_title(f"latency vs offered rate (open loop) - link {link}\n"
                     f"{_batches_text(d)}", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    _save(plt, fig, path)
