"""``make sweep-concurrency``: connections in flight as an axis (issue 28).

Design essay.  Every headline ratio of this repository was measured at 64 connections
in flight, and the ranking of the servers changes with that number: at 64 each poll
returns many events and a design's per-pass costs (the poll call, the loop's
bookkeeping, a hook) are shared by all of them; with one or two in flight every pass
serves one or two events and those costs weigh in full.  The study itself saw each
poll return "1-3 sockets in most cases".  So concurrency is swept like any other
condition: one batch, paired and interleaved -- in each round every level is run,
and at each level every server, the order rotated by one per round -- so a level is
never earlier or later in the batch than another, and every ratio is a run divided by
raw epoll's run of the same round and level (harness/summary.py's pair key holds the
concurrency).  The CPU budget is the one ``make compare`` uses, so conn/s measures the
server where it can; where it cannot, the level says so instead of hiding it:

* **server-bound**: most clean runs used >= 90 % of the budget, the client not saturated;
* **client-bound**: most runs saturated the load client (conn/s measures the client);
* **latency-bound**: neither -- the closed loop's round trips, not the server's CPU,
  set the pace (concurrency 1: the server sleeps between connections).

CPU per connection stays a true figure in all three (the run's CPU over its
connections), so the ratios are drawn everywhere and the bound is a marker, not a
filter.  Every run records its events per pass (harness/passes.py), and the sweep
names the study's regime: the levels where raw epoll's mean is 1-3 events per pass.

Outputs, drawn from the recorded runs only (``--from-batch ID`` redraws them):
results/concurrency/BATCH.png (CPU per connection / raw epoll against concurrency,
one line per server, intervals as error bars; events per pass in a second panel),
BATCH.md (the table per level, the regime, the conclusions that flip) and BATCH.json
(the same rows).  The batch itself is results/batches/BATCH.{json,md} like any other.

Bad input (a level of 0, negative or not an integer, a level given twice, an unknown
server) is one ``error:`` line and exit 2 before anything runs or is written.
"""

from __future__ import annotations

import os
import sys

from harness import cmdline, noise, passes, records, runner, runrecord, summary
from harness import servers as srv
from harness.cmdline import UsageError

DEFAULT_LEVELS = (1, 2, 4, 8, 16, 64, 256)
DEFAULT_SERVERS = ("raw_epoll", "master", "alone_proc", "uvloop", "c_epoll")
KIND = "sweep-concurrency"
BOUND_SHARE = 0.5       # a level is X-bound when more than half its clean runs were


# --------------------------------------------------------------------------- input

def parse_levels(text: str | None) -> list[int]:
    """The levels of ``CONCURRENCY="1 2 4"`` (spaces or commas), ascending.  UsageError for
    an empty list, a level that is not an integer >= 1 (or above the client's range),
    or a level given twice."""
    if text is None:
        return list(DEFAULT_LEVELS)
    lo, hi = cmdline.RANGES["--concurrency"]
    return cmdline.parse_counts(text, knob="CONCURRENCY/--levels", what="levels", one="a level",
                                unit="connections in flight", lo=max(1, int(lo)), hi=int(hi),
                                example="1 2 4 8 16 64 256")


def parse_servers(text: str | None) -> list[srv.Spec]:
    """The specs, each once, raw epoll first (added when missing: every ratio is to it)."""
    specs = cmdline.specs_of(text, DEFAULT_SERVERS)
    texts = [s.text for s in specs]
    if summary.BASELINE not in texts:
        specs.insert(0, srv.parse_spec(summary.BASELINE))
    else:
        specs.insert(0, specs.pop(texts.index(summary.BASELINE)))
    return specs


def make_plan(specs: list, levels: list[int], repeat: int) -> list[runner.Planned]:
    """Round r: every level (rotated by r), at each every spec (rotated by r)."""
    plan = []
    n, k = len(specs), len(levels)
    for r in range(repeat):
        for j in range(k):
            level = levels[(r + j) % k]
            for pos in range(n):
                plan.append(runner.Planned(specs[(r + pos) % n], r, pos, concurrency=level))
    return plan


# --------------------------------------------------------------------------- rows

def bound_of(row: dict) -> str:
    """What set the pace at this level (module docstring)."""
    clean = row.get("clean") or 0
    if not clean:
        return "no clean runs"
    if (row.get("client_bound") or 0) > BOUND_SHARE * clean:
        return "client-bound"
    if row.get("budget") in (None, "off") or row.get("server_cpu") is None:
        return "no budget"
    if (row.get("server_bound") or 0) > BOUND_SHARE * clean:
        return "server-bound"
    return "latency-bound"


def sweep_rows(runs: list[dict]) -> list[dict]:
    """One row per (spec, level), from the one summary engine, with the bound and the
    events per pass."""
    out = []
    for r in summary.summarize(runs, summary.BASELINE):
        out.append({
            "spec": r["spec"], "concurrency": r["concurrency"], "clean": r["clean"],
            "excluded": r["excluded"], "is_baseline": r["is_baseline"],
            "server_cpu": r["server_cpu"], "bound": bound_of(r),
            "cpu_us_per_conn": r["server_cpu_us_per_conn_median"],
            "conn_per_s": r["conn_per_s_median"],
            "ratio_cpu": r["ratio_cpu_to_baseline"], "ratio_cpu_interval": r["ratio_cpu_interval"],
            "verdict_cpu": r["verdict_cpu"],
            "ratio_conn": r["ratio_conn_to_baseline"], "ratio_conn_interval": r["ratio_conn_interval"],
            "paired_rounds": r["paired_rounds"],
            "events_per_pass": r["events_per_pass_median"], "events_hist": r["events_hist"],
            "regime_share": passes.regime_share(r["events_hist"]),
        })
    out.sort(key=lambda x: (x["concurrency"] or 0, not x["is_baseline"]))
    return out


def regime_levels(rows: list[dict]) -> list[int]:
    """The levels where raw epoll's mean events per pass lies in the study's 1-3."""
    lo, hi = passes.REGIME
    return [r["concurrency"] for r in rows if r["spec"] == summary.BASELINE
            and r["events_per_pass"] is not None and lo <= r["events_per_pass"] <= hi]


def flips(rows: list[dict]) -> dict[str, dict[str, list[int]]]:
    """Per spec, the levels of each CPU verdict ('less CPU', 'more CPU'): a spec with
    both has a conclusion that flips across the sweep."""
    out: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        if r["is_baseline"] or r["verdict_cpu"] not in ("less CPU", "more CPU"):
            continue
        out.setdefault(r["spec"], {}).setdefault(r["verdict_cpu"], []).append(r["concurrency"])
    return out


# --------------------------------------------------------------------------- outputs

def _ratio(r: dict) -> str:
    if r["is_baseline"]:
        return "1 (baseline)"
    return summary.ratio_text(r["ratio_cpu"], r["ratio_cpu_interval"])


def markdown(batch_id: str, rows: list[dict], runs: list[dict]) -> str:
    specs = list(dict.fromkeys(r["spec"] for r in rows))
    levels = sorted({r["concurrency"] for r in rows})
    at = {(r["spec"], r["concurrency"]): r for r in rows}
    runs = runrecord.full(runs)
    cfg = runs[0]["config"] if runs else {}
    budget = cfg.get("server_cpu")
    rounds = len({(r.get("batch_id"), r.get("round")) for r in runs})
    files = ", ".join(f"results/batches/{b}.md" for b in dict.fromkeys(r.get("batch_id") for r in runs))
    lines = [f"# Concurrency sweep {batch_id}", "",
             f"Up to {rounds} paired round(s) of {cfg.get('duration', '?'):g} s "
             f"per run at each level; server CPU budget "
             f"{'off' if budget is None else f'{budget:g} core'}; link {runs[0].get('link') if runs else '?'}. "
             "Cells: server CPU per connection ÷ raw epoll's in the same round and level, median "
             "[interval], then the server's events per pass (mean; in brackets the share of its "
             "polls returning 1–3 events). Drawn from the batch's recorded runs "
             f"({files}: the full batch table).", ""]
    head = ["concurrency", "bound (raw epoll)"] + specs
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in levels:
        base = at.get((summary.BASELINE, c))
        cells = [str(c), base["bound"] if base else "?"]
        for s in specs:
            r = at.get((s, c))
            if r is None:
                cells.append("–")
                continue
            extra = "" if r["bound"] == (base or {}).get("bound") else f", {r['bound']}"
            cells.append(f"{_ratio(r)}; {passes.text(r['events_per_pass'], r['events_hist'])} ev/pass{extra}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    reg = regime_levels(rows)
    if reg:
        lines.append(f"**The study's regime** (raw epoll sees 1–3 events per pass on average): "
                     f"concurrency {', '.join(map(str, reg))} in batch {batch_id}.")
    else:
        lines.append(f"No level of batch {batch_id} put raw epoll's mean at 1–3 events per pass.")
    f = flips(rows)
    for spec, verdicts in f.items():
        if len(verdicts) > 1:
            lines.append(f"- {spec}: **flips** -- less CPU than raw epoll at concurrency "
                         f"{', '.join(map(str, verdicts['less CPU']))}, more CPU at "
                         f"{', '.join(map(str, verdicts['more CPU']))} (batch {batch_id}).")
        else:
            (v, cs), = verdicts.items()
            lines.append(f"- {spec}: {v} than raw epoll wherever the interval excludes 1 "
                         f"(concurrency {', '.join(map(str, cs))}; batch {batch_id}).")
    lines += ["", "Bound: server-bound = the server used ≥90 % of its budget (conn/s measures "
              "it); latency-bound = neither the server's budget nor the client was saturated "
              "(the closed loop's round trips set the pace); client-bound = the load client "
              "was saturated. CPU per connection is a true figure in every case. n/a: the "
              "library owns the loop and its passes were not counted."]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: str, batch_id: str) -> None:
    """Two panels against concurrency (log axis): CPU per connection ÷ raw epoll with
    intervals (hollow markers: levels the server was not the bottleneck), and events
    per pass (the study's 1-3 shaded)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter
    specs = list(dict.fromkeys(r["spec"] for r in rows))
    levels = sorted({r["concurrency"] for r in rows})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8.5, 8), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    colors = plt.get_cmap("tab10")
    for i, spec in enumerate(specs):
        mine = [r for r in rows if r["spec"] == spec]
        color = colors(i % 10)
        # why: the servers' error bars at one level side by side, not on top of each other
        shift = 1 + 0.04 * (i - (len(specs) - 1) / 2)
        if spec != summary.BASELINE:
            pts = [r for r in mine if r["ratio_cpu"] is not None]
            xs = [r["concurrency"] * shift for r in pts]
            ys = [r["ratio_cpu"] for r in pts]
            lo = [r["ratio_cpu"] - (r["ratio_cpu_interval"] or (r["ratio_cpu"],) * 2)[0] for r in pts]
            hi = [(r["ratio_cpu_interval"] or (r["ratio_cpu"],) * 2)[1] - r["ratio_cpu"] for r in pts]
            ax1.errorbar(xs, ys, yerr=[lo, hi], color=color, marker="o", capsize=3, label=spec,
                         linewidth=1.5, markersize=6, markerfacecolor=color)
            for r in pts:
                if r["bound"] != "server-bound":
                    ax1.plot([r["concurrency"] * shift], [r["ratio_cpu"]], marker="o", markersize=9,
                             markerfacecolor="white", markeredgecolor=color, linestyle="none")
        ev = [r for r in mine if r["events_per_pass"] is not None]
        if ev:
            ax2.plot([r["concurrency"] for r in ev], [r["events_per_pass"] for r in ev],
                     marker="o", color=color, label=spec, linewidth=1.5)
    ax1.axhline(1.0, color="#555555", linewidth=1, linestyle="--")
    ax1.set_ylabel("server CPU per connection\n÷ raw epoll's (same round and level)")
    ax1.set_title(f"Concurrency sweep {batch_id}\nmedian of paired rounds, interval as error bar; "
                  "hollow: server not the bottleneck", fontsize=10)
    ax1.legend(fontsize=9, loc="best")
    ax1.grid(alpha=0.3)
    low, high = passes.REGIME
    ax2.axhspan(low, high, color="#f2d08a", alpha=0.5, label="1–3 events/pass (the study's regime)")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax2.yaxis.set_minor_formatter(NullFormatter())
    ax2.set_yticks([t for t in (1, 2, 3, 4, 8, 16, 32, 64, 128, 256)
                    if t <= max([3.0] + [r["events_per_pass"] or 0 for r in rows]) * 1.5])
    ax2.set_ylabel("events per pass (mean)")
    ax2.set_xlabel("connections in flight (closed loop, log scale)")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(levels)
    ax2.set_xticklabels([str(c) for c in levels])
    ax2.legend(fontsize=8, loc="upper left")
    ax2.grid(alpha=0.3)
    uncounted = [s for s in specs if all(r["events_per_pass"] is None for r in rows if r["spec"] == s)]
    if uncounted:
        ax2.text(0.99, 0.02, f"{', '.join(uncounted)}: the library's loop, not counted (no line)",
                 transform=ax2.transAxes, ha="right", va="bottom", fontsize=8, color="#555555")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def batch_runs(results: str, batch_ids: list[str]) -> list[dict]:
    """The batches' recorded runs (results/runs), from disk: the chart's only input."""
    runs, _problems = records.load_runs(results)
    return [r for r in runs if r.get("batch_id") in batch_ids]


def render(results: str, batch_id: str) -> tuple[str, str, str]:
    """results/concurrency/BATCH.{png,md,json} from the batch's recorded runs.  Several
    ids ("A B") read as one sweep, each run still paired within its own batch and round
    (as make combine): files A+B.*."""
    ids = list(dict.fromkeys(batch_id.split()))
    runs = batch_runs(results, ids)
    for b in ids:
        if not any(r.get("batch_id") == b for r in runs):
            raise UsageError(f"no recorded runs of batch {b!r} in {records.shown_path(results)}/runs")
    rows = sweep_rows(runs)
    out = os.path.join(results, "concurrency")
    os.makedirs(out, exist_ok=True)
    name, label = "+".join(ids), " + ".join(ids)
    png, md, js = (os.path.join(out, f"{name}.{ext}") for ext in ("png", "md", "json"))
    chart(rows, png, label)
    with open(md, "w") as f:
        f.write(markdown(label, rows, runs))
    records.write_json(js, records.portable({
        "batch_id": label, "batch_ids": ids, "kind": KIND,
        "levels": sorted({r["concurrency"] for r in rows}),
        "regime_levels": regime_levels(rows), "rows": rows}), replace=True)
    return png, md, js


class SweepBatch(runner.Batch):
    """A batch whose baseline runs span several levels: the noise guard's spread of the
    baseline is taken per level (the largest), not across levels, where CPU per
    connection differs by design (about 2x between 1 and 256 in flight)."""

    def warnings(self) -> list[str]:
        spreads = [runner.baseline_spread([r for r in self.records if r["config"]["concurrency"] == c])
                   for c in {r["config"]["concurrency"] for r in self.records}]
        known = [x for x in spreads if x is not None]
        return noise.warnings(self.noise, max(known) if known else None)


# --------------------------------------------------------------------------- command

DESCRIPTION = ("CPU per connection against connections in flight: paired, interleaved rounds "
               "at each level (make sweep-concurrency).")


def main(argv=None) -> int:
    return cmdline.Subcommand("sweep-concurrency", DESCRIPTION, add_arguments, run_command).main(argv)


def add_arguments(p) -> None:
    """`sweep-concurrency`'s arguments, on the shared parser (cli.SUBCOMMANDS) or its own."""
    p.add_argument("--servers", default=None,
                   help=f"space-separated specs (default: {' '.join(DEFAULT_SERVERS)}); raw_epoll "
                        "is added when missing")
    p.add_argument("--levels", default=None,
                   help=f"connections in flight, spaces or commas (default: "
                        f"{' '.join(map(str, DEFAULT_LEVELS))})")
    cmdline.add_level_arguments(
        p, replaced="concurrency",
        from_batch_help="only redraw results/concurrency/BATCH.* from that batch's recorded runs "
                        "(\"A B\": several batches read as one, each run paired in its own)")


def run_command(a) -> int:
    """`sweep-concurrency` with its parsed arguments: the one error path (cmdline.handled)."""
    got: dict = {}

    def check():
        if cmdline.check_level_arguments(
                a, replaced="concurrency", value=runner.Settings.concurrency,
                message="sweep-concurrency takes its levels as --levels \"1 2 4\" "
                        "(CONCURRENCY=\"1 2 4\" with make), not --concurrency"):
            return
        got["levels"] = parse_levels(a.levels)
        specs = parse_servers(a.servers)
        if a.pool and not any("pool" in srv.accepted_options(s.server) for s in specs):
            raise UsageError("--pool/POOL applies to mul_thread only")
        try:
            got["specs"] = runner.apply_options(specs, diet=a.diet, pool=a.pool)
        except srv.ServerError as e:
            raise UsageError(f"--diet/DIET: {e}") from None

    def work():
        if a.from_batch:
            return cmdline.redraw(a, render)
        levels, specs = got["levels"], got["specs"]
        kw = cmdline.settings_kwargs(a, budget_default=True)
        # One load client process at every level (make sweep-concurrency takes no CLIENTS).
        kw.update(concurrency=levels[0], clients=1, labels={"sweep": "concurrency", "levels": levels})
        settings = runner.Settings(kind=KIND, **kw)
        plan = make_plan(specs, levels, a.repeat)
        title = (f"{KIND} {' '.join(s.text for s in specs)} at {' '.join(map(str, levels))} "
                 f"in flight, {a.repeat} round(s) of {a.duration:g}s")
        return cmdline.run_and_render(
            lambda: SweepBatch(settings, total=len(plan), out=sys.stdout, results_dir=a.results_dir),
            plan, title, render, specs=specs, python=kw["python"])
    return cmdline.handled(check, work)


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"sweep-concurrency": (DESCRIPTION, add_arguments, run_command)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
