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
and pairing keys, the baseline, the interval).  This module writes REPORT.md;
harness/charts.py draws the charts and harness/frame.py holds the table both read.
Trade-off: medians over few runs (3-5) are coarse; the charts' min-max whiskers show the
spread of the runs, the tables' intervals the uncertainty of the paired ratio.
"""

from __future__ import annotations

import os
import sys
import time

from harness import batchchart, charts, reproduction
from harness import metrics as _metrics
from harness import records as _records
from harness import summary as _summary
from harness.frame import (NO_RUNS, cpu_split, environment_md, fmt_num, float_or_none, frame,
                           head_to_head, headline_batches, headline_rows, incomplete_batches,
                           latest_batch_per_link, link_order, load, range_of, ratio_ci,
                           shown_path, summarize)


# --------------------------------------------------------------------------- markdown

def verdicts_md(row) -> str:
    r = row["_row"]
    return f"{_summary.verdict_text(r, 'conn')}; CPU: {_summary.verdict_text(r, 'cpu')}"

def table_md(summary) -> str:
    # The metrics shown beside CPU per connection (harness/metrics.py), where some row has one.
    beside = [m for m in _metrics.shown() if m.report_header
              and m.fields()[0] in summary and summary[m.fields()[0]].notna().any()]
    h = {m.name: m.report_header for m in _metrics.METRICS}
    cols = (["batch", "spec", "c", "CPU budget", "runs (clean/excl.)", h["conn_per_s"],
             "ratio conn/s [CI]", h["server_cpu_us_per_conn"]] + [m.report_header for m in beside]
            + ["ratio CPU [CI]", "verdict", "conn/s x CPU", "pairs", "p50 / p99 us", h["failed"],
               h["client_bound"], h["server_bound"]])
    head = "| " + " | ".join(cols) + " |\n" + "|" + "---|" * len(cols) + "\n"
    lines = []
    # Each row is one batch's (the latest that ran it): the newest batches first, a batch's
    # rows together, so a reader compares figures of one machine state with each other.
    if "batch_time" in summary:
        summary = summary.sort_values(["batch_time", "batch"], ascending=False, kind="stable")
    for _, r in summary.iterrows():
        base = bool(r["is_baseline"])
        lines.append(
            f"| {r.get('batch', '-')} | {r['label']} | {r['concurrency']} | "
            f"{'off' if r['budget'] == 'off' else r['budget'] + ' core'} | {r['runs']} "
            f"({r['clean']}/{r['excluded']}) | {range_of(r, 'conn_per_s')} | "
            f"{'1 (baseline)' if base else ratio_ci(r, 'conn')} | "
            f"{fmt_num(r['server_cpu_us_per_conn_median'], '{:.1f}')} | "
            + "".join(f"{m.text(r)} | " for m in beside)
            + f"{'1' if base else ratio_ci(r, 'cpu')} | "
            f"{'baseline' if base else verdicts_md(r)} | "
            f"{'-' if base else _summary.consistency_text(r['consistency'], none='-')} | "
            f"{'-' if base else _summary.pairs_text(r['_row'])} | "
            f"{fmt_num(r['p50_us_median'])} / {fmt_num(r['p99_us_median'])} | "
            f"{r['failed']} | {r['client_bound']}"
            + (" (lower bound)" if r["client_bound"] else "") + " | "
            + ("-" if r["budget"] == "off" else f"{r['server_bound']}/{r['clean']}") + " |")
    notes = [m.note for m in beside if m.note]
    return head + "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)

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
  Budgeted and unbudgeted runs are never pooled (CPU per connection depends on load).
- **One batch per figure.** Every row of a table is summarized within one batch, the
  latest complete batch that ran that spec under those conditions (its id in the `batch`
  column); a chart draws one batch, named in its title. Two batches ran on the machine in
  two states (raw epoll's CPU per connection has moved by 1.8x between days), so medians
  are never pooled across batches; `make combine BATCHES="..."` pools batches explicitly,
  each run paired with the baseline of its own round. Each link's charts draw its headline
  batch: of the bench/compare/reproduce batches against raw_epoll, the one that ran the
  most designs (no NAME@REV, no options, no one-off servers), the latest among equals.
- **Whiskers are min-max** of the clean runs, not a confidence interval.
- **Open-loop (sweep) runs** appear only in the latency-vs-rate chart: latency there
  counts from each connection's scheduled start, so server stalls are not hidden.
"""

def _safe(link: str) -> str:
    """A link's name as part of a file name."""
    return "".join(ch if ch.isalnum() or ch in "+-." else "_" for ch in str(link))

def _link_charts(link, batch, rows, runs) -> list:
    """The charts of one link's headline batch: (file name prefix, how to draw it at a
    path, title, caption), one row per chart."""
    meta = {"batch_id": batch, "kind": rows["batch_kind"].iloc[0], "link": link}
    only = f"Batch `{batch}` only"
    return [
        ("ratios", lambda path: batchchart.draw(meta, list(rows["_row"]), path),
         "each design against raw epoll",
         f"{only}: each design's paired ratio to raw_epoll in the same rounds, with its "
         "interval as the bar and the batch's verdict beside it. Revision specs (NAME@REV), "
         "options (NAME:key=value) and one-off servers are left out (they are in the tables)."),
        ("conn_per_s", lambda path: charts.bar_chart(
            rows, runs, path, metric="conn_per_s", ratio="ratio_conn_to_baseline",
            title="conn/s (median, min-max)", mark_bound=True, batch=batch),
         "connections per second",
         f"{only}. Bars: median of clean runs; whiskers: min-max; dashed line: raw_epoll; "
         "label: paired ratio to raw_epoll, '!' where it disagrees with the inverse CPU ratio "
         "by more than 5 %; hatched: includes client-bound runs (lower bound); red crosses: "
         "excluded runs. With a CPU budget (in the title) conn/s is the budget ÷ CPU per "
         "connection."),
        ("cpu_per_conn", lambda path: charts.bar_chart(
            rows, runs, path, metric="server_cpu_us_per_conn", ratio="ratio_cpu_to_baseline",
            title="server CPU per connection", mark_bound=False, batch=batch),
         "server CPU per connection",
         f"{only}. Lower is better; the label is the paired ratio of CPU per connection to "
         "raw_epoll's."),
        ("latency", lambda path: charts.chart_latency(rows, path, batch=batch),
         "latency p50 / p99",
         f"{only}. Closed loop: latency includes the wait in the server's queue."),
    ]

def _headline_charts(results, df, every, charts_dir, made) -> dict:
    """The charts of each link, from the one batch its headline comes from
    (frame.headline_batches): the paired ratios with their intervals (the batch chart),
    conn/s, CPU per connection and latency.  link -> batch."""
    chosen = headline_batches(every)
    for link, batch in chosen.items():
        rows = headline_rows(every, link, batch)
        runs = df[(df["batch"] == batch) & (df["link"] == link)]
        for prefix, draw, title, caption in _link_charts(link, batch, rows, runs):
            file = f"{prefix}_{_safe(link)}.png"
            draw(os.path.join(charts_dir, file))
            made.append((file, f"link {link}: {title}", caption))
    return chosen

def write_report(results: str, records: list[dict], problems: list[str]) -> str:
    """Write REPORT.md and the charts; return the REPORT.md path.  The phases, in order:
    the frames (one row per run, the summary rows), the charts, then each section of
    the page, then the file."""
    df = frame(records, incomplete_batches(results))
    every = summarize(df, latest=False) if len(df) else df
    summary = summarize(df)
    split = cpu_split(df, results)
    made = draw_charts(results, df, every, summary, split)
    md = (md_header(results, records, problems) + md_results(summary) + md_head_to_head(df)
          + md_cpu_split(split) + md_sweeps(df) + md_charts(made) + md_excluded(df)
          + md_client_bound(df)
          + ["## Environment of the runs\n", environment_md(records),
             "Rerun: `make bench` / `make compare` to record runs, then `make report`.\n"])
    path = os.path.join(results, "REPORT.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(md))
    os.replace(tmp, path)
    return path

def draw_charts(results: str, df, every, summary, split) -> list[tuple[str, str, str]]:
    """Every chart of the report under results/charts/ (stale ones removed first), as
    (file, title, caption) in the order the page shows them."""
    charts_dir = os.path.join(results, "charts")
    os.makedirs(charts_dir, exist_ok=True)
    for old in os.listdir(charts_dir):      # a link or chart no longer drawn leaves no stale file
        if old.endswith(".png"):
            os.remove(os.path.join(charts_dir, old))
    made: list[tuple[str, str, str]] = []   # (file, title, caption)

    chosen: dict = {}
    if not summary.empty:
        chosen = _headline_charts(results, df, every, charts_dir, made)
        if charts.chart_interpreters(every, os.path.join(charts_dir, "interpreters.png")):
            used = charts.interpreter_rows(every)
            made.append(("interpreters.png", "The designs on each interpreter",
                           "The paired CPU ratio to raw_epoll of each design on every "
                           "interpreter run with PYTHON=..., on loopback at one CPU budget (the "
                           "one most interpreters ran at), each interpreter from one batch (the "
                           "one with the most designs, the latest among equals): " + ", ".join(f"{p} `{b}`" for p, b in
                                                 used.groupby("python")["batch"].first().items())
                           + ". A ratio is paired within its batch; bars of two interpreters "
                           "come from two batches."))
    if not split.empty:
        charts.chart_cpu_split(split, os.path.join(charts_dir, "cpu_split.png"))
        made.append(("cpu_split.png", "Where the server's CPU goes",
                       f"Batch `{split['batch'].iloc[0]}` only (of the loopback batches with no "
                       "CPU budget, the one with the most designs, the latest among equals). "
                       "Median user and sys CPU per connection on loopback, with system calls "
                       "per connection from `make syscalls` where recorded. The kernel's share "
                       "is the floor every server pays; an event library only moves the "
                       "user part."))
    # Over time: the runs of each link's headline batch, and of the latest soak on each link.
    soaks = df[df["kind"] == "soak"]
    timed = df[df["batch"].isin(set(chosen.values()) | set(latest_batch_per_link(soaks).values()))]
    if any(len(s) for s in timed["snapshots"]):
        charts.chart_over_time(timed, os.path.join(charts_dir, "conn_over_time.png"))
        made.append(("conn_over_time.png", "conn/s over time within runs",
                       "The runs of the batches named in each panel's title (each link's "
                       "headline batch; the latest soak). "
                       "One line per run from the client's per-second snapshots; dotted: "
                       "excluded runs. A steady line is a steady server; a sag or a gap is "
                       "a stall, a backlog overflow or port exhaustion."))
    # The sweeps: each link's latest complete sweep batch, one machine state per line.
    sweeps = df[df["open_loop"] & (df["kind"] == "sweep")]
    sweeps = sweeps[sweeps["batch"].isin(set(latest_batch_per_link(sweeps).values()))]
    if len(sweeps) and charts.chart_cpu_vs_rate(sweeps, os.path.join(charts_dir, "cpu_vs_rate.png")):
        made.append(("cpu_vs_rate.png", "CPU per connection against offered rate",
                       "Open loop, each link's latest sweep batch (in the title). CPU per "
                       "connection is not a constant of a server: a busier "
                       "loop serves more events per epoll_wait. Compare servers at one rate "
                       "(`make compare RATE=...`) or all saturated."))
    if len(sweeps):
        charts.chart_latency_vs_rate(sweeps, os.path.join(charts_dir, "latency_vs_rate.png"))
        made.append(("latency_vs_rate.png", "Latency against offered rate (sweeps)",
                       "Open loop, each link's latest sweep batch (in the title); the knee, "
                       "where p99 turns up, is the sustainable rate."))

    return made

def md_header(results: str, records: list[dict], problems: list[str]) -> list[str]:
    md = ["# Benchmark report\n",
          f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make report` "
          f"from {len(records)} run records in `{shown_path(os.path.join(results, 'runs'))}`.\n"]
    if problems:
        md.append("**Unreadable run files (skipped):**\n")
        md += [f"- {p}" for p in problems]
        md.append("")
    md.append(HOW_TO_READ)
    return md

def md_results(summary) -> list[str]:
    md: list[str] = []
    if not summary.empty:
        md.append("## Closed-loop results per link\n")
        for link in link_order(summary["link"]):
            md.append(f"### link: {link}\n")
            md.append(table_md(summary[summary["link"] == link]))
    else:
        md.append("No closed-loop runs recorded.\n")
    return md

def md_head_to_head(df) -> list[str]:
    md: list[str] = []
    h2h = head_to_head(df) if len(df) else None
    if h2h is not None and len(h2h):
        md.append("## Head to head (paired in the same rounds)\n")
        md.append("| a | b | what | link | python | CPU budget | batch | rounds | CPU/conn a ÷ b | "
                  "conn/s a ÷ b | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|")
        for _, r in h2h.iterrows():
            md.append(f"| {r['a']} | {r['b']} | {r['what']} | {r['link']} | {r['python']} | "
                      f"{'off' if r['budget'] == 'off' else r['budget'] + ' core'} | "
                      f"{r['batch']} | {r['paired_rounds']} | "
                      f"{_summary.ratio_text(float_or_none(r['ratio_cpu_to_baseline']), r['ratio_cpu_interval'])} | "
                      f"{_summary.ratio_text(float_or_none(r['ratio_conn_to_baseline']), r['ratio_conn_interval'])} | "
                      f"{r['verdict_conn']}; CPU: {r['verdict_cpu']} |")
        md.append("\nMedian over rounds of (a ÷ b) where both ran clean in the same round of "
                  "one batch, the latest batch that ran both (pool several with `make combine`). "
                  "conn/s ratios of client-bound runs measure the client.\n")
    return md

def md_cpu_split(split) -> list[str]:
    md: list[str] = []
    if not split.empty:
        md.append(f"## Where the server's CPU goes (loopback, batch `{split['batch'].iloc[0]}`)\n")
        md.append("| spec | runs | CPU us/conn | user us/conn | sys us/conn | syscalls/conn |")
        md.append("|---|---|---|---|---|---|")
        for _, r in split.iterrows():
            md.append(f"| {r['label']} | {r['runs']} | {r['cpu_us']:.1f} | {r['user_us']:.1f} | "
                      f"{r['sys_us']:.1f} | {fmt_num(r['syscalls'], '{:.2f}')} |")
        md.append("\nuser = interpreter, event library and procs; sys = the kernel's TCP and "
                  "epoll work. Medians of the clean runs of that one batch (not paired: for ratios "
                  "read the tables above).\n")
    return md

def md_sweeps(df) -> list[str]:
    md: list[str] = []
    if df["open_loop"].any():
        md.append("## Open-loop sweeps\n")
        md.append("| link | batch | spec | CPU budget | offered rate | runs (excl.) | achieved conn/s | "
                  "CPU us/conn | p50 us | p99 us |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        sw = df[df["open_loop"]].sort_values(["batch_time", "batch", "spec", "rate"], kind="stable")
        # One row per batch: a median of two sweeps is a figure neither machine state measured.
        for (link, batch, spec, budget, rate), g in sw.groupby(["link", "batch", "spec", "budget", "rate"],
                                                                sort=False):
            ok = g[~g["excluded"]]
            got = ok["conn_per_s"].median()
            short = got == got and got < _summary.SUSTAINED_SHARE * rate
            md.append(f"| {link} | {batch} | {spec} | {'off' if budget == 'off' else budget + ' core'} | "
                      f"{fmt_num(rate)} | {len(g)} ({int(g['excluded'].sum())}) | "
                      f"{fmt_num(got)}{' (not sustained)' if short else ''} | "
                      f"{fmt_num(ok['server_cpu_us_per_conn'].median(), '{:.1f}')} | "
                      f"{fmt_num(ok['p50_us'].median())} | "
                      f"{fmt_num(ok['p99_us'].median())} |")
        md.append(f"\nAn offered rate is *not sustained* when the server completed less than "
                  f"{_summary.SUSTAINED_SHARE:.0%} of it; its CPU per connection is then a saturated server's.\n")
    return md

def md_charts(made) -> list[str]:
    md: list[str] = []
    md.append("## Charts\n")
    for fname, title, caption in made:
        md.append(f"### {title}\n\n![{title}](charts/{fname})\n\n{caption}\n")
    return md

def md_excluded(df) -> list[str]:
    md: list[str] = []
    md.append("## Excluded runs\n")
    bad = df[df["excluded"]]
    if bad.empty:
        md.append("None: every run completed every connection it started.\n")
    else:
        md.append("| run_id | spec | link | kind | round | conn/s | reason |\n|---|---|---|---|---|---|---|")
        for _, r in bad.iterrows():
            md.append(f"| {r['run_id']} | {r['spec']} | {r['link']} | {r['kind']} | {r['round']} "
                      f"| {fmt_num(r['conn_per_s'])} | {r['reason']} |")
        md.append("")
    return md

def md_client_bound(df) -> list[str]:
    md: list[str] = []
    md.append("## Client-bound runs (kept, conn/s is a lower bound)\n")
    cb = df[df["client_bound"] & ~df["excluded"]]
    if cb.empty:
        md.append("None.\n")
    else:
        md.append("| run_id | spec | link | conn/s | client CPU share |\n|---|---|---|---|---|")
        for _, r in cb.iterrows():
            md.append(f"| {r['run_id']} | {r['spec']} | {r['link']} | {fmt_num(r['conn_per_s'])} | "
                      f"{fmt_num(r['client_cpu_share'], '{:.2f}')} |")
        md.append("")
    return md

DESCRIPTION = "Write results/REPORT.md and results/charts/*.png from the recorded runs."


def main(argv=None) -> int:
    from harness import cmdline
    return cmdline.Subcommand("report", DESCRIPTION, add_arguments, run_command).main(argv)


def add_arguments(ap) -> None:
    """`report`'s arguments, on the shared parser (cli.SUBCOMMANDS) or its own (main)."""
    ap.add_argument("--results-dir", help="results directory (default: $EVENTS_RESULTS_DIR "
                                          "or results/ of the repository)")


def run_command(args) -> int:
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
    repro = reproduction.refresh_latest(records, results)
    if repro:
        print(f"rewrote {repro} from the latest recorded reproduction")
    return 0


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"report": (DESCRIPTION, add_arguments, run_command)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
