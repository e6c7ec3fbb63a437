"""One batch, one chart: each spec's paired ratio to the batch's baseline, with its interval.

``make bench`` and ``make compare`` end with a table; this draws the same rows beside the
table, as results/batches/<batch_id>.png, and ``make chart BATCH=ID|latest`` redraws it.
The report (harness/report.py) draws the same figure for the batch each link's headline
comes from, so the README's chart and a user's own batch are read the same way.

Why ratios and not bars of conn/s: a batch's absolute figures move with the machine's
state (raw epoll's CPU per connection was 62-65 us on one day and 36 on another), while a
ratio paired within rounds of one batch moves by a few percent.  What one batch can say
is "this spec against the baseline, in these rounds", and its interval says how sure.

The figure, two panels side by side, one line per spec (the batch's order):
- left: conn/s ÷ baseline, right: CPU per connection ÷ baseline, each a point at the
  median of the per-round ratios with the summary engine's interval as the error bar
  (none under 5 rounds: a hollow point, "too few rounds");
- the verdict and the figure written beside each point, coloured by the verdict;
- the title: the kind, the link, the budget, the baseline, the rounds, the batch id.

Everything comes from the recorded batch: its run files (results/runs, listed by
results/batches/<id>.json) through harness/summary.py, the engine the batch table uses;
when the run files are gone, the summary rows the batch file recorded.  Only closed-loop
rows are drawn (a sweep batch has its own charts in the report).
"""

from __future__ import annotations

import json
import os

from harness import records as _records
from harness import summary as _summary

# The colour of a verdict: better, worse, neither (or no verdict).
_GOOD, _BAD, _NONE = "#2e7d32", "#c62828", "#555555"
# Batch kinds whose batches get a chart when they end (the ones `make bench`/`compare` run).
CHARTED_KINDS = ("bench", "compare")


class BatchError(ValueError):
    """A batch that cannot be charted: unknown id, unreadable file, no closed-loop rows."""


def batch_ids(results: str) -> list[str]:
    """The recorded batch ids, oldest first (ids start with their UTC start time)."""
    d = os.path.join(results, "batches")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))


def resolve(results: str, batch: str) -> str:
    """``batch`` as a recorded batch id: "latest" is the newest batch file."""
    ids = batch_ids(results)
    if batch == "latest":
        if not ids:
            raise BatchError(f"no batches recorded in {_records.shown_path(results)}/batches: "
                             "run make bench or make compare first")
        return max(ids, key=lambda b: (_meta_time(results, b), b))
    if batch not in ids:
        raise BatchError(f"no batch {batch!r} in {_records.shown_path(results)}/batches "
                         "(the id is the batch file's name without .json; BATCH=latest for the newest)")
    return batch


def _meta_time(results: str, batch_id: str) -> str:
    try:
        with open(os.path.join(results, "batches", batch_id + ".json")) as f:
            return str(json.load(f).get("time_utc") or "")
    except (OSError, ValueError):
        return ""


def load(results: str, batch_id: str) -> tuple[dict, list[dict], list[dict]]:
    """(the batch file, its closed-loop summary rows, its run records).  The rows come from
    the runs through the summary engine; from the batch file's own rows when no run file
    is left."""
    path = os.path.join(results, "batches", batch_id + ".json")
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise BatchError(f"no batch {batch_id!r} in {_records.shown_path(results)}/batches") from None
    except (OSError, ValueError) as e:
        raise BatchError(f"cannot read {_records.shown_path(path)}: {e}") from None
    runs = []
    for run_id in meta.get("run_ids") or []:
        try:
            with open(os.path.join(results, "runs", run_id + ".json")) as f:
                runs.append(json.load(f))
        except (OSError, ValueError):
            pass
    rows = _summary.summarize(runs) if runs else list(meta.get("summary") or [])
    rows = [r for r in rows if r.get("rate") is None]
    if not rows:
        raise BatchError(f"batch {batch_id} has no closed-loop rows to chart "
                         f"(kind {meta.get('kind')}: its figures are in make report)")
    return meta, rows, runs


def _verdict_colour(verdict: str | None) -> str:
    if verdict in ("faster", "less CPU"):
        return _GOOD
    if verdict in ("slower", "more CPU"):
        return _BAD
    return _NONE


def title_of(meta: dict, rows: list[dict]) -> str:
    """Two lines: what ran, under which budget, against what; then the batch id."""
    base = next((r["baseline"] for r in rows if r.get("baseline")), "?")
    budgets = sorted({r.get("budget") or "off" for r in rows})
    budget = ", ".join("no CPU budget" if b == "off" else f"server held to {b} core" for b in budgets)
    rounds = max((r.get("paired_rounds") or 0 for r in rows), default=0)
    kind = meta.get("kind") or "batch"
    link = meta.get("link") or rows[0].get("link") or "loopback"
    return (f"{kind}, link {link}, {budget}: each server ÷ {base}, {rounds} paired rounds\n"
            f"batch {meta.get('batch_id') or '?'}")


def draw(meta: dict, rows: list[dict], path: str, *, title: str | None = None,
         note: str | None = None) -> str:
    """The two-panel ratio chart of ``rows`` (summary engine rows of one batch) at ``path``."""
    import matplotlib
    matplotlib.use("Agg")               # no display here; also keeps tests headless
    import matplotlib.pyplot as plt

    n = len(rows)
    height = 0.46 * n + 2.1
    fig, axes = plt.subplots(1, 2, figsize=(9.6, height), sharey=True, squeeze=False)
    panels = (("conn", "conn/s ÷ baseline (higher: faster)"),
              ("cpu", "server CPU/connection ÷ baseline (lower: cheaper)"))
    y = list(range(n))
    for ax, (which, xlabel) in zip(axes[0], panels):
        hi_all = [1.0]
        for i, r in enumerate(rows):
            ratio = r.get(f"ratio_{which}_to_baseline")
            iv = r.get(f"ratio_{which}_interval")
            if r.get("is_baseline"):
                ax.plot([1.0], [i], "s", color=_NONE)
                ax.annotate("baseline", (1.0, i), xytext=(8, 0), textcoords="offset points",
                            va="center", fontsize=8, color=_NONE)
                continue
            if ratio is None:
                ax.annotate("no pairs" if r.get("clean") else "no clean run", (1.0, i), xytext=(8, 0),
                            textcoords="offset points", va="center", fontsize=8, color=_BAD)
                continue
            verdict = r.get(f"verdict_{which}")
            colour = _verdict_colour(verdict)
            if iv:
                ax.errorbar([ratio], [i], xerr=[[ratio - iv[0]], [iv[1] - ratio]], fmt="o",
                            color=colour, capsize=4, elinewidth=1.5)
                hi_all += [iv[0], iv[1]]
            else:
                ax.plot([ratio], [i], "o", mfc="white", color=colour)
                hi_all.append(ratio)
            text = f"{_summary.ratio_text(ratio, iv)}  {_summary.verdict_text(r, which)}"
            right = iv[1] if iv else ratio
            ax.annotate(text, (right, i), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=7.5, color=colour)
        lo, hi = min(hi_all), max(hi_all)
        span = max(hi - lo, 0.2)
        # Room on the right for the figure and verdict written beside each point.
        ax.set_xlim(max(0.0, lo - 0.08 * span), hi + 1.1 * span)
        ax.axvline(1.0, color="#888888", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(axis="x", color="#eeeeee")
    labels = []
    # A batch of several conditions (sweep-concurrency: one per level) names them per line.
    varying = [k for k in ("concurrency", "size", "python", "budget") if len({str(r.get(k)) for r in rows}) > 1]
    short = {"concurrency": "c=", "size": "size=", "python": "", "budget": "budget="}
    for r in rows:
        flags = [f"{short[k]}{r.get(k)}" for k in varying]
        if r.get("excluded"):
            flags.append(f"{r['excluded']} excl.")
        if r.get("client_bound"):
            flags.append(f"{r['client_bound']} client-bound")
        labels.append(str(r.get("spec")) + (f" ({', '.join(flags)})" if flags else ""))
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(labels, fontsize=9)
    axes[0][0].set_ylim(n - 0.5, -0.5)          # top to bottom, half a line of margin
    # The title at a fixed distance in inches from the top (a suptitle's place is a fraction of
    # the height: too close on a tall chart, too far on a short one).
    fig.text(0.5, 1 - 0.08 / height, title or title_of(meta, rows), ha="center", va="top", fontsize=10)
    foot = note or ("point: median of the per-round ratios; bar: its interval (95 % from 6 "
                    "rounds, none under 5: hollow point); dashed: 1.00 = the baseline")
    fig.text(0.01, 0.005, foot, fontsize=7, color="#555555", ha="left", va="bottom")
    # Inches kept free for the two-line title and the footnote, whatever the figure's height.
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - 0.5 / height))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def chart_path(results: str, batch_id: str) -> str:
    return os.path.join(results, "batches", batch_id + ".png")


def write(results: str, batch: str) -> str:
    """Draw the chart of ``batch`` (an id or "latest") beside its summary; its path."""
    batch_id = resolve(results, batch)
    meta, rows, _ = load(results, batch_id)
    return draw(meta, rows, chart_path(results, batch_id))


def after_batch(results: str, batch_id: str | None, kind: str) -> str:
    """The line a bench/compare batch prints about its chart: drawn, or why not and how to
    draw it.  Never raises: the runs are recorded whatever happens to the chart."""
    if not batch_id or kind not in CHARTED_KINDS:
        return ""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (f"note: no batch chart drawn (matplotlib is not installed here): "
                f"make chart BATCH={batch_id} draws it")
    try:
        path = write(results, batch_id)
    except BatchError as e:
        return f"note: no batch chart: {e}"
    except Exception as e:          # a chart must not turn a recorded batch into a failure
        return f"note: the batch chart failed ({type(e).__name__}: {e}); make chart BATCH={batch_id} retries"
    return f"batch chart {_records.shown_path(path)}"
