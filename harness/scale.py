"""``make scale``: conn/s and CPU per connection against the number of event loops (issue 26).

Design essay.  The study's only way to use more cores was a thread pool behind one
loop; production servers run N independent loops, each on its own SO_REUSEPORT
listener of one port (harness/servers/workers.py).  This command asks how each design
behaves as N grows, with the repository's one method: one batch, paired and
interleaved -- in each round every worker count is run, and at each count every
design, the order rotated by one per round -- and every ratio is a design's run at N
workers divided by *the same design's* run at the smallest N of the same round.  The
question is "what does this design gain from N loops", not "how does it compare with
raw epoll" (make compare answers that, and the batch table of this batch still has it).

Two budgets, two questions (``--budget``/``SCALE_CPU``):

* ``per-worker`` (default): each worker gets SERVER_CPU (one cgroup of N x SERVER_CPU for
  all of them), so the ideal is conn/s x N at the same CPU per connection.  Needs N x
  SERVER_CPU cores: on this 2-core machine the curve stops at 2 x 0.4; on a machine
  with more cores the same command gives the scaling curve.
* ``total``: SERVER_CPU is split among the workers (2 workers at 0.2 core each against 1
  at 0.4), so the ideal is the same conn/s and CPU per connection: what is left is the
  cost of splitting -- more passes with fewer events each, two loops' fixed costs, the
  kernel's spreading of connections.  This one is meaningful on two cores.

The pinning spreads the workers over the CPUs the client does not use, and each run
records the number of CPUs and whether server and client shared cores
(harness/procs.spread); each worker's share of the connections is recorded (an idle
worker is visible) and shown as the smallest share.  ``WORKER_MODE=threads`` runs the
loops as threads of one process (raw_epoll, the variants, asyncio, uvloop:
harness/servers/loops.py); on a GIL build every such run is flagged.

Outputs, drawn from the recorded runs only (``--from-batch ID`` redraws them):
results/scale/BATCH.png (two panels against workers: conn/s and CPU per connection,
each as a ratio to the design's smallest worker count, intervals as error bars),
BATCH.md (the table) and BATCH.json (the rows).  The batch itself is
results/batches/BATCH.{json,md} like any other.

Bad input -- WORKERS=0 or not an integer, a count given twice, a per-worker budget
under 0.05 core, more cores than the machine has, SO_REUSEPORT unavailable, threads
for a server without a threads mode -- is one ``error:`` line and exit 2, before
anything runs or is written.
"""

from __future__ import annotations

import os
import statistics
import sys

from harness import cmdline, records, runner, runrecord, summary
from harness import servers as srv
from harness.cmdline import UsageError
from harness.servers import workers as wk

DEFAULT_LEVELS = (1, 2)
KIND = "scale"
BUDGETS = ("per-worker", "total")


# --------------------------------------------------------------------------- input

def parse_levels(text: str | None) -> list[int]:
    """``WORKERS="1 2 4 8"`` (spaces or commas), ascending; UsageError when empty, not a whole
    number >= 1, or a count given twice."""
    if text is None:
        return list(DEFAULT_LEVELS)
    return cmdline.parse_counts(text, knob="WORKERS/--workers", what="worker counts", one="a count",
                                unit="workers", lo=1, hi=256, example="1 2 4 8")


def parse_designs(variant: str | None, servers: str | None) -> list[srv.Spec]:
    """The designs: VARIANT (one), SERVERS (several) or every default design."""
    if variant and servers:
        raise UsageError("scale takes VARIANT=one design or SERVERS=\"several\", not both")
    specs = cmdline.specs_of(variant if variant else servers, runner.DEFAULT_SERVERS, noun="design")
    if any(s.get("loops") for s in specs):
        raise UsageError("give the designs without loops=: the worker counts come from WORKERS")
    return specs


def per_worker_budget(cores, n: int, budget: str) -> float | None:
    """A worker's budget at N workers: SERVER_CPU itself, or its N-th part (budget total)."""
    if not isinstance(cores, float):
        return None
    return cores / n if budget == "total" else cores


def make_plan(designs: list[srv.Spec], levels: list[int], repeat: int, cores, budget: str,
              mode: str) -> list[runner.Planned]:
    """Round r: every worker count (rotated by r), at each every design (rotated by r)."""
    plan = []
    n, k = len(designs), len(levels)
    for r in range(repeat):
        for j in range(k):
            level = levels[(r + j) % k]
            for pos in range(n):
                spec = wk.with_workers(designs[(r + pos) % n], level, mode)
                # (A dict: runner.py is checked with optional types relaxed, as concurrency.py.)
                kw: dict = {"server_cpu": per_worker_budget(cores, level, budget)}
                plan.append(runner.Planned(spec, r, pos, **kw))
    return plan


# --------------------------------------------------------------------------- rows

def design_of(run: dict) -> str:
    """The design a run belongs to: its spec text without the loops/loop_mode items."""
    head, sep, rest = str(run.get("spec")).partition(":")
    keep = [i for i in rest.split(",") if i and not i.startswith(("loops=", "loop_mode="))]
    return head + (sep + ",".join(keep) if keep else "")


def workers_of(run: dict) -> int:
    return int(run["config"].get("workers") or 1)


def scale_rows(runs: list[dict]) -> list[dict]:
    """One row per (design, workers): medians over the counting runs, and the paired
    ratios to the same design's smallest worker count in the same round."""
    by: dict = {}
    for r in runrecord.full(runs):
        by.setdefault((design_of(r), workers_of(r)), []).append(r)
    rows = []
    for (design, n), rs in by.items():
        ok = [r for r in rs if summary.exclusion(r) is None]
        base_n = min(k for d, k in by if d == design)
        base = {r.get("round"): r for r in by[(design, base_n)] if summary.exclusion(r) is None}
        rc, ru = [], []
        for r in ok:
            b = base.get(r.get("round"))
            if b is None:
                continue
            m, bm = r["metrics"], b["metrics"]
            if m.get("conn_per_s") and bm.get("conn_per_s"):
                rc.append(m["conn_per_s"] / bm["conn_per_s"])
            if m.get("server_cpu_us_per_conn") and bm.get("server_cpu_us_per_conn"):
                ru.append(m["server_cpu_us_per_conn"] / bm["server_cpu_us_per_conn"])
        shares = [w.get("share") for r in ok for w in (r.get("workers") or []) if w.get("share") is not None]
        cfg = rs[0].get("config") or {}
        rows.append({
            "design": design, "workers": n, "base_workers": base_n, "runs": len(rs), "clean": len(ok),
            "lost": sum(r["metrics"].get("lost") or 0 for r in rs),
            "failed_runs": sum(1 for r in rs if r.get("status") != "ok"),
            "client_bound": sum(1 for r in ok if r["metrics"].get("client_bound")),
            "server_bound": sum(1 for r in ok if r["metrics"].get("server_bound")),
            "server_cpu": cfg.get("server_cpu"), "server_cpu_per_worker": cfg.get("server_cpu_per_worker"),
            "worker_mode": cfg.get("worker_mode") or "procs",
            "conn_per_s": _median([r["metrics"].get("conn_per_s") for r in ok]),
            "cpu_us_per_conn": _median([r["metrics"].get("server_cpu_us_per_conn") for r in ok]),
            "ratio_conn": _median(rc), "ratio_conn_interval": _interval(rc),
            "ratio_cpu": _median(ru), "ratio_cpu_interval": _interval(ru), "paired_rounds": len(rc),
            "min_worker_share": min(shares) if shares else None,
            "shared_cores": any(r["config"].get("pinning", {}).get("shared_cores") for r in rs),
            "cpus": next((r["config"].get("pinning", {}).get("cpus") for r in rs
                          if r["config"].get("pinning", {}).get("cpus")), None),
            "warnings": sorted({w for r in rs for w in r.get("warnings") or []}),
        })
    rows.sort(key=lambda x: (x["design"], x["workers"]))
    return rows


def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 4) if xs else None


def _interval(xs):
    iv = summary.median_interval(xs)
    return None if iv is None else (round(iv[0], 4), round(iv[1], 4))


# --------------------------------------------------------------------------- outputs

def _num(x, fmt="{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _ratio(r: dict, which: str) -> str:
    if r["workers"] == r["base_workers"]:
        return "1 (base)"
    return summary.ratio_text(r[f"ratio_{which}"], r[f"ratio_{which}_interval"])


def markdown(batch_id: str, rows: list[dict], runs: list[dict]) -> str:
    runs = runrecord.full(runs)
    cfg = runs[0]["config"] if runs else {}
    budget = (runs[0].get("labels") or {}).get("budget", "per-worker") if runs else "?"
    cpus = next((r["cpus"] for r in rows if r["cpus"]), None)
    mode = rows[0]["worker_mode"] if rows else "procs"
    lines = [f"# Scale {batch_id}", "",
             f"{len({r.get('round') for r in runs})} paired round(s) of {cfg.get('duration', '?'):g} s "
             f"per run at each worker count, workers as {mode}; CPU budget {budget} "
             "(per-worker: each worker SERVER_CPU; total: SERVER_CPU split among the workers), one "
             f"cgroup for all of a run's workers; {cpus or '?'} CPU(s) on this machine; concurrency "
             f"{cfg.get('concurrency', '?')}; link {runs[0].get('link') if runs else '?'}. Ratios: "
             "the design at N workers ÷ the same design at its smallest count in the same round, "
             "median [interval]. Drawn from the batch's recorded runs "
             f"(results/batches/{batch_id}.md has the full batch table).", "",
             "| design | workers | budget (cores) | conn/s | conn/s ratio | CPU µs/conn | CPU ratio "
             "| smallest worker share | clean/runs | lost | client-bound | shared cores |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "–" if r["min_worker_share"] is None or r["workers"] == 1 else f"{r['min_worker_share']:.0%}"
        lines.append(
            f"| {r['design']} | {r['workers']} | {_num(r['server_cpu'], '{:g}')} "
            f"| {_num(r['conn_per_s'])} | {_ratio(r, 'conn')} | {_num(r['cpu_us_per_conn'], '{:.1f}')} "
            f"| {_ratio(r, 'cpu')} | {share} | {r['clean']}/{r['runs']} | {r['lost']} "
            f"| {r['client_bound']} | {'yes' if r['shared_cores'] else 'no'} |")
    warns = sorted({w for r in rows for w in r["warnings"]})
    if warns:
        lines += ["", "Warnings recorded with the runs:"] + [f"- {w}" for w in warns]
    lines += ["", "Smallest worker share: the least any worker served of a run's connections "
              "(1/N is an even spread; 0 % is an idle worker). Client-bound runs count (their CPU "
              "per connection is true) but their conn/s measures the client."]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: str, batch_id: str, budget: str) -> None:
    """Two panels against workers: conn/s and CPU per connection, each ÷ the design's
    smallest count in the same round (median, interval as error bars)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    designs = list(dict.fromkeys(r["design"] for r in rows))
    levels = sorted({r["workers"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), sharex=True)
    colors = plt.get_cmap("tab10")
    for ax, which, label in ((axes[0], "conn", "conn/s"), (axes[1], "cpu", "server CPU per connection")):
        for i, d in enumerate(designs):
            pts = [r for r in rows if r["design"] == d and (r[f"ratio_{which}"] is not None
                                                           or r["workers"] == r["base_workers"])]
            # dodged sideways a little, so that overlapping intervals stay apart
            dodge = (i - (len(designs) - 1) / 2) * 0.02 * max(1, levels[-1] - levels[0])
            xs = [r["workers"] + dodge for r in pts]
            ys = [1.0 if r["workers"] == r["base_workers"] else r[f"ratio_{which}"] for r in pts]
            ivs = [r[f"ratio_{which}_interval"] or (y, y) for r, y in zip(pts, ys)]
            ax.errorbar(xs, ys, yerr=[[y - iv[0] for y, iv in zip(ys, ivs)],
                                      [iv[1] - y for y, iv in zip(ys, ivs)]],
                        color=colors(i % 10), marker="o", capsize=3, label=d, linewidth=1.5)
        if which == "conn" and budget == "per-worker":
            ax.plot(levels, [n / levels[0] for n in levels], color="#999999", linestyle=":",
                    label="ideal (× workers)")
        ax.axhline(1.0, color="#555555", linewidth=1, linestyle="--")
        ax.set_xlabel("event loops (workers)")
        ax.set_ylabel(f"{label}\n÷ the same design at {levels[0]} worker(s), same round")
        ax.set_xticks(levels)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    what = "each worker SERVER_CPU" if budget == "per-worker" else "SERVER_CPU split among workers"
    fig.suptitle(f"Scale {batch_id}: budget {budget} ({what})\nmedian of paired rounds, "
                 "interval as error bar", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def batch_runs(results: str, batch_id: str) -> list[dict]:
    runs, _problems = records.load_runs(results)
    return [r for r in runs if r.get("batch_id") == batch_id]


def render(results: str, batch_id: str) -> tuple[str, str, str]:
    """results/scale/BATCH.{png,md,json} from the batch's recorded runs."""
    runs = batch_runs(results, batch_id)
    if not runs:
        raise UsageError(f"no recorded runs of batch {batch_id!r} in {records.shown_path(results)}/runs")
    rows = scale_rows(runs)
    budget = (runs[0].get("labels") or {}).get("budget", "per-worker")
    out = os.path.join(results, "scale")
    os.makedirs(out, exist_ok=True)
    png, md, js = (os.path.join(out, f"{batch_id}.{ext}") for ext in ("png", "md", "json"))
    chart(rows, png, batch_id, budget)
    with open(md, "w") as f:
        f.write(markdown(batch_id, rows, runs))
    records.write_json(js, records.portable({"batch_id": batch_id, "kind": KIND, "budget": budget,
                                             "rows": rows}), replace=True)
    return png, md, js


# --------------------------------------------------------------------------- command

DESCRIPTION = ("conn/s and CPU per connection against the number of event loops (N "
               "SO_REUSEPORT workers): paired, interleaved rounds (make scale).")


def main(argv=None) -> int:
    return cmdline.Subcommand("scale", DESCRIPTION, add_arguments, run_command).main(argv)


def add_arguments(p) -> None:
    """`scale`'s arguments, on the shared parser (cli.SUBCOMMANDS) or its own (main)."""
    p.add_argument("--variant", default=None, help="one design (VARIANT=)")
    p.add_argument("--servers", default=None,
                   help=f"space-separated designs (default: {' '.join(runner.DEFAULT_SERVERS)})")
    p.add_argument("--workers", default=None,
                   help="worker counts, spaces or commas (WORKERS=; default: 1 2)")
    p.add_argument("--budget", choices=BUDGETS, default="per-worker",
                   help="SCALE_CPU=: per-worker (default: each worker SERVER_CPU) or total "
                        "(SERVER_CPU split among the workers: the cost of splitting)")
    cmdline.add_level_arguments(
        p, replaced="server_workers",
        from_batch_help="only redraw results/scale/BATCH.* from that batch's recorded runs")


def run_command(a) -> int:
    """`scale` with its parsed arguments: the one error path (cmdline.handled)."""
    got: dict = {}

    def check():
        if cmdline.check_level_arguments(
                a, replaced="server_workers", value=1,     # the plan sets each run's loops
                message="scale takes its worker counts as --workers \"1 2\" (WORKERS=\"1 2\")"):
            return
        levels = got["levels"] = parse_levels(a.workers)
        designs = parse_designs(a.variant, a.servers)
        try:
            designs = got["designs"] = runner.apply_options(designs, diet=a.diet, pool=a.pool)
        except srv.ServerError as e:
            raise UsageError(f"--diet/DIET: {e}") from None
        if a.server_cpu == "auto":
            raise UsageError("scale: SERVER_CPU=auto is not supported; give cores (e.g. 0.4) or off")
        kw = got["kw"] = cmdline.settings_kwargs(a, budget_default=True)
        cores = kw["server_cpu"]
        if a.budget == "total" and not isinstance(cores, float):
            raise UsageError("SCALE_CPU=total splits SERVER_CPU among the workers: give a budget "
                             "(e.g. SERVER_CPU=0.4), not off")
        for n in levels:
            cmdline.check_workers_budget(n, per_worker_budget(cores, n, a.budget),
                                         f"WORKERS={n} at SERVER_CPU={cores} ({a.budget})")
        try:
            if max(levels) > 1:
                wk.check_reuse_port()
            got["plan"] = make_plan(designs, levels, a.repeat, cores, a.budget, a.worker_mode)
        except srv.ServerError as e:
            raise UsageError(str(e)) from None

    def work():
        if a.from_batch:
            return cmdline.redraw(a, render)
        levels, designs, kw, plan = got["levels"], got["designs"], got["kw"], got["plan"]
        kw["labels"] = {"scale": "workers", "workers": levels, "budget": a.budget,
                        "worker_mode": a.worker_mode}
        settings = runner.Settings(kind=KIND, **kw)
        title = (f"{KIND} {' '.join(s.text for s in designs)} at {' '.join(map(str, levels))} "
                 f"worker(s) ({a.worker_mode}, budget {a.budget}), {a.repeat} round(s) of {a.duration:g}s")
        return cmdline.run_and_render(
            lambda: runner.Batch(settings, total=len(plan), out=sys.stdout, results_dir=a.results_dir),
            plan, title, render, specs=designs, python=kw["python"])
    return cmdline.handled(check, work)


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"scale": (DESCRIPTION, add_arguments, run_command)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
