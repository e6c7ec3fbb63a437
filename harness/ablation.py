"""``make ablation``: the 2016 design rebuilt, then taken apart step by step (issue 23).

Design essay.  The study measured its master at 0.65 x raw epoll's conn/s and its
unified-proc branch at 0.90, and credited the difference to the unified proc.  Our
master is lean and both designs land near raw epoll, so the question "where did the
study's 35 % go" needs the design the study measured.  variants/ablation rebuilds it as
a straight port of ae.c (``literal``) and names each difference to today's master as a
step; this module runs them as one batch and reads it:

* **The path** (``PATH``): raw epoll, the literal design, each step taken cumulatively
  in the order of variants.ablation.STEPS (the last one is master's structure), master
  itself (the check that the path ends where it should), alone_proc, and the unified
  proc applied to the literal design and to the end of the path.  One batch,
  interleaved rounds, every record field as any batch (``runner.run_batch``).
* **The figures** are the summary engine's (harness/summary.py): per spec the paired
  ratios to raw epoll with their intervals, and per step its *own* paired effect,
  ``summarize`` over the step and the previous spec with the previous one as baseline
  (each round's ratio step / previous, never across rounds).  A step's own effect is
  what the cumulative levels cannot show with their wider intervals.
* **Instructions** per connection (tools/icount.py, ``make ablation-icount``) go beside
  the timed figures when results/icount/ holds them: a count repeats where a timing
  does not, so a step worth 1 % still shows.
* **Outputs**: the path table on stdout, results/ablation/<batch>.md (the table, the
  conditions, the chart) and .png (a waterfall, drawn from the recorded runs only), and
  results/ablation/<batch>.json (the batch's conditions and rows: what REPRODUCTION.md's
  section, ``section()``, finds; it recomputes its figures from the runs).

``python -m harness ablation --batch ID`` redraws the table and chart of a recorded batch.
"""

from __future__ import annotations

import json
import os
import sys

from harness import records, summary
from variants.ablation import STEPS, UNIFIED

# What each step removes from the literal design: the ae.c / ae_epoll.c construct.
REMOVES = {
    "switch": "(the echo app) read -> write by delete READABLE + create WRITABLE: DEL + ADD, "
              "two epoll_ctl where the Redis idiom makes one MOD",
    "adapter": "procs reached through a handler object (aeFileProc as an object): a frame per call",
    "locals": "attribute reads in the dispatch loop; flags tested per pass (aeMain, aeProcessEvents)",
    "fired": "eventLoop->fired: a list of (fd, mask) built per pass by aeApiPoll",
    "table": "ae_epoll.c's bit tests (EPOLLIN -> AE_READABLE ...) instead of one table index",
    "api": "a Python frame per aeApiAddEvent / aeApiDelEvent / aeApiPoll call",
    "ctl": "epoll_ctl on every aeDeleteFileEvent, even when the kernel's mask stays",
    "timers": "aeSearchNearestTimer (O(n)) and processTimeEvents' full scan, every pass",
    "lists": "an aeFileEvent object per fd (attribute reads) and maxfd with its downward scan",
    UNIFIED: "a read proc and a write proc per fd: one proc, called once with the fired mask",
}
STUDY_MASTER, STUDY_ALONE = 0.65, 0.90      # the study's conn/s ratios to raw epoll (1000 Mb/s)


def _path() -> list[tuple[str, str, str]]:
    """(label, spec, the spec its own effect is measured against) along the path."""
    rows = [("raw epoll", "raw_epoll", ""), ("literal", "literal", "raw_epoll")]
    taken: list[str] = []
    prev = "literal"
    for step in STEPS:
        taken.append(step)
        spec = "literal:steps=" + "+".join(taken)
        rows.append(("+" + step, spec, prev))
        prev = spec
    end = prev
    rows += [("master", "master", end),
             ("alone_proc", "alone_proc", "master"),
             ("literal +unified", "literal:steps=" + UNIFIED, "literal"),
             ("path +unified", end + "+" + UNIFIED, end)]
    return rows


PATH = _path()
SPECS = [spec for _, spec, _ in PATH]
LABEL = {spec: label for label, spec, _ in PATH}
END = PATH[1 + len(STEPS)][1]       # the end of the path: every step toward master


# --------------------------------------------------------------------------- figures

def batch_runs(batch_id: str, results: str | None = None) -> list[dict]:
    """The recorded runs of one batch (its file lists them); [] when there is none."""
    root = records.results_dir(results)
    try:
        with open(os.path.join(root, "batches", batch_id + ".json")) as f:
            ids = json.load(f).get("run_ids") or []
    except (OSError, ValueError):
        return []
    runs = []
    for run_id in ids:
        try:
            with open(os.path.join(root, "runs", run_id + ".json")) as f:
                runs.append(json.load(f))
        except (OSError, ValueError):
            continue
    return runs


def icounts(results: str | None = None, python: str = "") -> dict[str, int]:
    """spec -> instructions per connection, from results/ablation/icount/ (``make
    ablation-icount``: tools/icount.py's files, those of the venv's interpreter without
    ``@python...`` in their names, or those of ``python``, e.g. ``python3.9``)."""
    out = {}
    d = os.path.join(records.results_dir(results), "ablation", "icount")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        label = name[:-5].partition("@")[2]
        if not name.endswith(".json") or label != python:
            continue
        try:
            with open(os.path.join(d, name)) as f:
                rows = json.load(f).get("rows") or []
        except (OSError, ValueError):
            continue
        for r in rows:
            if r.get("spec") in LABEL and r.get("instructions_per_connection") is not None:
                out[r["spec"]] = int(r["instructions_per_connection"])
    return out


def rows(runs: list[dict]) -> list[dict]:
    """One row per spec of the path that ran: its levels against raw epoll and its own
    paired effect against the previous spec (summary.summarize both times)."""
    runs = [r for r in runs if summary.spec_of(r) in LABEL]
    by_spec = {r["spec"]: r for r in summary.summarize(runs, baseline="raw_epoll")}
    out = []
    for label, spec, prev in PATH:
        level = by_spec.get(spec)
        if level is None:
            continue
        own = None
        if prev and prev in by_spec:
            pair = [r for r in runs if summary.spec_of(r) in (spec, prev)]
            own = next((r for r in summary.summarize(pair, baseline=prev) if r["spec"] == spec), None)
        out.append({
            "label": label, "spec": spec, "previous": prev, "removes": REMOVES.get(label.split("+")[-1], ""),
            "cpu_us": level["server_cpu_us_per_conn_median"],
            "cpu": level["ratio_cpu_to_baseline"], "cpu_ci": level["ratio_cpu_interval"],
            "conn": level["ratio_conn_to_baseline"], "conn_ci": level["ratio_conn_interval"],
            "conn_per_s": level["conn_per_s_median"],
            "server_bound": level["server_bound"], "clean": level["clean"], "runs": level["runs"],
            "lost": level["lost"], "client_bound": level["client_bound"],
            "events_per_pass": level.get("events_per_pass_median"),
            "own_cpu": own and own["ratio_cpu_to_baseline"], "own_cpu_ci": own and own["ratio_cpu_interval"],
            "own_cpu_verdict": own and own["verdict_cpu"],
            "own_conn": own and own["ratio_conn_to_baseline"], "own_conn_ci": own and own["ratio_conn_interval"],
        })
    return out


def conditions(runs: list[dict]) -> dict:
    """The batch's conditions, as the records give them."""
    r0 = runs[0] if runs else {}
    c = r0.get("config") or {}
    rounds = {r.get("round") for r in runs}
    return {"batch_id": r0.get("batch_id"), "link": r0.get("link") or "loopback",
            "concurrency": c.get("concurrency"), "server_cpu": c.get("server_cpu"),
            "duration": c.get("duration"), "rounds": len(rounds),
            "python": summary.python_label(r0), "time_utc": r0.get("time_utc")}


# --------------------------------------------------------------------------- text

def _r(x, ci=None) -> str:
    return summary.ratio_text(x, ci)


def table_md(rs: list[dict], counts: dict[str, int]) -> str:
    """The path table (Markdown)."""
    head = ("| step | removes (ae.c construct) | CPU µs/conn | CPU × raw epoll [CI] | conn/s × raw epoll [CI] "
            "| step's own effect: CPU × previous [CI] | verdict | instructions/conn (Δ) | events/pass | server-bound |")
    lines = [head, "|" + "---|" * 10]
    base_i = counts.get("raw_epoll")
    prev_i = None
    for r in rs:
        ins = counts.get(r["spec"])
        if ins is None:
            icell = "–"
        else:
            ref = counts.get(r["previous"]) if r["previous"] else None
            icell = f"{ins:,}" + (f" ({ins - ref:+,})" if ref is not None and r["spec"] != "raw_epoll" else "")
            if base_i and r["spec"] != "raw_epoll":
                icell += f", {ins / base_i:.2f}×"
        prev_i = ins if ins is not None else prev_i
        own = "–" if r["own_cpu"] is None or r["previous"] == "raw_epoll" else \
            f"{_r(r['own_cpu'], r['own_cpu_ci'])} vs {LABEL.get(r['previous'], r['previous'])}"
        verdict = "" if r["own_cpu"] is None or r["previous"] == "raw_epoll" else (r["own_cpu_verdict"] or "")
        cpu_us = "–" if r["cpu_us"] is None else f"{r['cpu_us']:.1f}"
        lines.append(f"| {r['label']} | {r['removes']} | {cpu_us} | {_r(r['cpu'], r['cpu_ci'])} | "
                     f"{_r(r['conn'], r['conn_ci'])} | {own} | {verdict} | {icell} | "
                     f"{'–' if r.get('events_per_pass') is None else format(r['events_per_pass'], '.1f')} | "
                     f"{r['server_bound']}/{r['runs']} |")
    return "\n".join(lines) + "\n"


def table_text(rs: list[dict]) -> str:
    """The path table for the terminal."""
    out = [f"{'step':<18} {'CPU us/conn':>11} {'CPU x raw epoll':>22} {'conn/s x raw epoll':>22} "
           f"{'own effect (CPU x previous)':>30} {'bound':>6}"]
    for r in rs:
        own = "" if r["own_cpu"] is None or r["previous"] == "raw_epoll" else \
            f"{_r(r['own_cpu'], r['own_cpu_ci'])} {r['own_cpu_verdict'] or ''}"
        cpu_us = "–" if r["cpu_us"] is None else f"{r['cpu_us']:.1f}"
        out.append(f"{r['label']:<18} {cpu_us:>11} {_r(r['cpu'], r['cpu_ci']):>22} "
                   f"{_r(r['conn'], r['conn_ci']):>22} {own:>30} {r['server_bound']:>3}/{r['runs']:<2}")
    return "\n".join(out) + "\n"


def _cond_text(c: dict) -> str:
    budget = c.get("server_cpu")
    return (f"link {c['link']}, {c['concurrency']} connections in flight, server held to "
            f"{budget if budget else 'no'} core{'' if budget else ' budget'}, {c['rounds']} interleaved "
            f"rounds of {c['duration']:g} s, interpreter {c['python']}")


# --------------------------------------------------------------------------- chart

def chart(rs: list[dict], cond: dict, path: str) -> None:
    """The waterfall, in conn/s and in CPU per connection × raw epoll.  The path starts
    at the literal design's measured level; each step is a floating bar of its *own*
    paired effect (× the previous spec, green when it helps), chained, so the bars add
    up as a waterfall should.  Dots with whiskers are each spec's measured level against
    raw epoll and its interval: where the chain and the dots part, the steps' effects
    are not additive (or noise).  Whole designs (master, alone_proc, the unified proc
    on the literal design and on the path) are grey bars at their measured level."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rs)
    df = df[df["spec"] != "raw_epoll"].reset_index(drop=True)
    steps = {spec for _, spec, _ in PATH[2:2 + len(STEPS)]}
    fig, axes = plt.subplots(2, 1, figsize=(10, 8.6), sharex=True)
    panels = ((axes[0], "conn", "conn_ci", "own_conn", "server-bound conn/s × raw epoll", 1),
              (axes[1], "cpu", "cpu_ci", "own_cpu", "server CPU per connection × raw epoll", -1))

    def known(x) -> bool:
        return x is not None and x == x

    for ax, col, ci, own_col, ylabel, better in panels:
        chain = None
        for i, r in df.iterrows():
            v, own = r[col], r[own_col]
            if r["spec"] == "literal" and known(v):
                chain = v
                ax.bar(i, v, color="#34495e", width=0.7)
            elif r["spec"] in steps and chain is not None and known(own):
                new = chain * own
                lo, hi = sorted((chain, new))
                ax.bar(i, hi - lo, bottom=lo, width=0.7,
                       color="#2e8b57" if (own - 1) * better > 0 else "#c0392b")
                ax.text(i, hi, f"{(own - 1) * 100:+.0f}%", ha="center", va="bottom", fontsize=8)
                chain = new
            elif r["spec"] not in steps and known(v):
                ax.bar(i, v, color="#95a5a6", width=0.7)
            if known(v):
                civ = r[ci]
                ax.plot(i, v, "o", color="black", ms=3.5)
                if civ:
                    ax.errorbar(i, v, yerr=[[v - civ[0]], [civ[1] - v]], fmt="none", color="black",
                                capsize=3, lw=1)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    top, bottom = axes
    top.axhline(STUDY_MASTER, color="#c0392b", ls="--", lw=1, label="the study's master (0.65)")
    top.axhline(STUDY_ALONE, color="#2e8b57", ls="--", lw=1, label="the study's alone_proc (0.90)")
    top.plot([], [], "o", color="black", ms=3.5, label="measured level [95 % interval]")
    top.legend(loc="lower center", fontsize=8, ncol=3, framealpha=0.9)
    def ends(col, ci):                  # the levels and their intervals' ends
        xs = [x for x in df[col] if known(x)]
        return xs + [e for iv in df[ci] if iv for e in iv[:2]]
    conn, cpu = ends("conn", "conn_ci"), ends("cpu", "cpu_ci")
    top.set_ylim(max(0.0, min([STUDY_MASTER] + conn) - 0.12), min(2.0, max([1.05] + conn) + 0.05))
    bottom.set_ylim(max(0.0, min([0.9] + cpu) - 0.1), min(3.0, max([1.2] + cpu) + 0.05))
    bottom.set_xticks(range(len(df)))
    bottom.set_xticklabels(df["label"], rotation=35, ha="right")
    top.set_title(f"The ae-literal design taken apart, step by step (batch {cond['batch_id']})\n"
                  f"{_cond_text(cond)}\nsteps: each bar is the step's own paired effect, chained "
                  f"from the literal design; grey: whole designs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- outputs

def report(runs: list[dict], results: str | None = None, out=sys.stdout) -> str | None:
    """Print the path table of one batch and write results/ablation/<batch>.{md,png,json}.
    Returns the Markdown path, None when the batch holds no run of the path."""
    rs = rows(runs)
    if not rs:
        print("ablation: no run of the path in this batch", file=out)
        return None
    cond = conditions(runs)
    bid = cond["batch_id"]
    counts = icounts(results, "" if cond["python"] in ("default", "venv") else cond["python"])
    out.write(f"\nablation path, batch {bid} ({_cond_text(cond)}):\n")
    out.write(table_text(rs))
    d = os.path.join(records.results_dir(results), "ablation")
    os.makedirs(d, exist_ok=True)
    png = os.path.join(d, bid + ".png")
    drawn = True
    try:
        chart(rs, cond, png)
    except ImportError:                 # the report extra is not installed
        drawn = False
    md = (f"# Ablation batch {bid}\n\n{_cond_text(cond)}. Rerun: `make ablation"
          f"{'' if cond['link'] == 'loopback' else ' LINK=' + cond['link']}"
          f" CONCURRENCY={cond['concurrency']} REPEAT={cond['rounds']} DURATION={cond['duration']:g}`; "
          f"the steps: variants/ablation (docs/variants.md). Ratios: median over paired rounds "
          f"[95 % interval, or its coverage]; instructions: `make ablation-icount` "
          f"(results/ablation/icount/, callgrind, 16 connections in flight), Δ against the previous "
          f"row's spec.\n\n"
          + table_md(rs, counts)
          + (f"\n![waterfall]({bid}.png)\n" if drawn else "\n(no chart: matplotlib/pandas missing)\n"))
    mpath = os.path.join(d, bid + ".md")
    with open(mpath, "w", encoding="utf-8") as f:
        f.write(md)
    records.write_json(os.path.join(d, bid + ".json"), {"schema": 1, "conditions": cond,
                                                        "specs": SPECS, "rows": rs}, replace=True)
    out.write(f"wrote {records.shown_path(mpath)}" + (f" and {records.shown_path(png)}" if drawn else "")
              + "\n")
    return mpath


def recorded(results: str | None = None) -> list[dict]:
    """The ablation batches recorded under results/ablation/ (their conditions), latest
    first for each (link, concurrency, interpreter)."""
    d = os.path.join(records.results_dir(results), "ablation")
    found = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.endswith(".json"):
            try:
                with open(os.path.join(d, name)) as f:
                    found.append(json.load(f)["conditions"])
            except (OSError, ValueError, KeyError):
                continue
    latest: dict = {}
    for c in sorted(found, key=lambda c: str(c.get("time_utc"))):
        latest[(c.get("link"), c.get("concurrency"), c.get("python"))] = c
    return sorted(latest.values(), key=lambda c: (str(c.get("python")), str(c.get("link")),
                                                 -(c.get("concurrency") or 0)))


def _gap_share(before, after) -> str:
    """The share of ``before``'s excess CPU over raw epoll that ``after`` removes."""
    if before is None or after is None or before <= 1:
        return "–"
    return f"{(before - after) / (before - 1):.0%}"


def section(results: str | None = None) -> list[str]:
    """REPRODUCTION.md's section on the study's 0.65 (harness/reproduction.py calls it):
    every figure recomputed from the runs of the recorded ablation batches."""
    batches = recorded(results)
    if not batches:
        return []
    md = ["## Where the study's 0.65 went: the ae-literal design, step by step\n",
          "The study's master ran at 0.65 x raw epoll's conn/s and its unified-proc branch at "
          "0.90. `make ablation` rebuilds the master a straight 2016 port of ae.c would have "
          "been (`literal`, variants/ablation) and takes it to today's master one named step at "
          "a time, in one interleaved batch (docs/variants.md, \"The ae-literal design\"). "
          "CPU = server CPU per connection x raw epoll's (the fairer figure: conn/s of a budgeted "
          "server is its inverse); the unified proc's *own effect* is its paired CPU ratio to the "
          "same design without it.\n",
          "| batch | link, in flight, interpreter | literal: conn/s, CPU | end of the path: CPU | "
          "master: CPU | alone_proc: CPU | unified proc on the literal design: own effect "
          "| on the path's end | on master (alone_proc) |",
          "|---|---|---|---|---|---|---|---|---|"]
    facts = []
    for c in batches:
        runs = batch_runs(c["batch_id"], results)
        rs = {r["spec"]: r for r in rows(runs)}
        lit, end, mas, alo = (rs.get(s) for s in ("literal", END, "master", "alone_proc"))
        lu, pu = rs.get("literal:steps=" + UNIFIED), rs.get(END + "+" + UNIFIED)
        if lit is None:
            continue

        def cpu(r):
            return "–" if r is None else _r(r["cpu"], r["cpu_ci"])

        def own(r):
            if r is None or r["own_cpu"] is None:
                return "–"
            return f"{_r(r['own_cpu'], r['own_cpu_ci'])} {r['own_cpu_verdict'] or ''}".strip()
        md.append(f"| {c['batch_id']} | {c['link']}, {c['concurrency']}, {c['python']} | "
                  f"{_r(lit['conn'], lit['conn_ci'])}, {cpu(lit)} | {cpu(end)} | {cpu(mas)} | {cpu(alo)} | "
                  f"{own(lu)} | {own(pu)} | {own(alo)} |")
        ci = lit["conn_ci"]
        low = ci[0] if ci else lit["conn"]
        reach = "reaches" if low is not None and low <= STUDY_MASTER else "does not reach"
        steps = [r for r in rows(runs) if r["label"].startswith("+") and r["own_cpu"] is not None]
        big = sorted(steps, key=lambda r: r["own_cpu"])[:3]
        facts.append(f"- {c['link']}, {c['concurrency']} in flight ({c['python']}; batch {c['batch_id']}): "
                     f"the literal design {reach} the study's 0.65 (conn/s {_r(lit['conn'], ci)}). "
                     f"The steps with the lowest own CPU ratio: " + ", ".join(
                         f"{r['label'][1:]} {_r(r['own_cpu'], r['own_cpu_ci'])} ({r['own_cpu_verdict']})"
                         for r in big) + ".")
    md.append("")
    md += facts
    n = icounts(results)
    if all(s in n for s in ("raw_epoll", "literal", END, "master", "alone_proc")):
        base, lit_i, mas_i = n["raw_epoll"], n["literal"], n["master"]
        lu_i, pu_i = n.get("literal:steps=" + UNIFIED), n.get(END + "+" + UNIFIED)
        line = (f"- Instructions per connection (user space, callgrind: `make ablation-icount`, "
                f"results/ablation/icount/): raw epoll {base:,}, literal {lit_i:,} ({lit_i / base:.2f} x), "
                f"the path's end {n[END]:,}, master {mas_i:,} ({mas_i / base:.2f} x), alone_proc "
                f"{n['alone_proc']:,}. The unified proc removes ")
        parts = []
        if lu_i is not None:
            parts.append(f"{lit_i - lu_i:,} on the literal design ({_gap_share(lit_i / base, lu_i / base)} "
                         f"of its excess over raw epoll)")
        if pu_i is not None:
            parts.append(f"{n[END] - pu_i:,} on the path's end")
        parts.append(f"{mas_i - n['alone_proc']:,} on master ({_gap_share(mas_i / base, n['alone_proc'] / base)} "
                     f"of its excess)")
        md.append(line + ", ".join(parts) + ".")
    d = os.path.join(records.results_dir(results), "ablation", "icount")
    labels = sorted({f[:-5].partition("@")[2] for f in (os.listdir(d) if os.path.isdir(d) else [])
                     if "@" in f and f.endswith(".json")})
    for label in labels:                # other interpreters: the same designs' counts
        m = icounts(results, label)
        if all(s in m for s in ("raw_epoll", "literal", "master")):
            base = m["raw_epoll"]
            md.append(f"- On {label} (`make ablation-icount PYTHON=...` or tools/icount.py --python): "
                      + ", ".join(f"{LABEL[s]} {m[s]:,} ({m[s] / base:.2f} x)" for s in SPECS if s in m)
                      + ": the same designs cost more instructions against raw epoll on an "
                        "interpreter without 3.11's speed-ups.")
    md.append("\nWhat the numbers say, and what is left, in words: README.md (\"Where the study's "
              "0.65 went\") and docs/variants.md; every batch's table and waterfall: "
              "results/ablation/BATCH.md.\n")
    return md


def main(argv=None) -> int:
    """``python -m harness.ablation --batch ID``: redraw a recorded batch; ``--specs``:
    print the path's specs (the Makefile's icount target reads them)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):           # one `error:` line, exit 2 (the project's rule)
            self.exit(2, f"error: {message}\n")
    ap = Parser(prog="python -m harness.ablation")
    ap.add_argument("--batch", help="a recorded ablation batch id")
    ap.add_argument("--specs", action="store_true", help="print the path's specs")
    ap.add_argument("--results-dir")
    a = ap.parse_args(argv)
    if a.specs:
        print(" ".join(SPECS))
        return 0
    if not a.batch:
        ap.error("give --batch ID or --specs (to run the batch: make ablation)")
    runs = batch_runs(a.batch, a.results_dir)
    if not runs:
        ap.error(f"no batch {a.batch!r} with runs in "
                 f"{records.shown_path(records.results_dir(a.results_dir))}/batches")
    return 0 if report(runs, a.results_dir) else 2


if __name__ == "__main__":
    sys.exit(main())
