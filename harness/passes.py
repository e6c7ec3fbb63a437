"""Events per pass: how many events one poll hands the loop, from a run's STATS line.

Why it is recorded (issue 28): a design's cost per connection is its per-event costs
plus its per-pass costs divided by the events a pass serves.  With 64 connections in
flight a poll returns many events and per-pass costs almost vanish; with one or two
in flight every pass serves one or two events and they weigh in full.  The study saw
each poll return "1-3 sockets in most cases"; the headline batches run at 64.  So a
ratio between servers is only half a figure without the events per pass it was
measured at, and every run now records it.

Where the numbers come from (harness/servers/counters.py): ``events`` counts the
events the server dispatched, ``passes`` its polls, ``events_hist`` the passes by
events returned in the buckets of :data:`BUCKETS` (0 = a timer's wake-up).  Servers
whose loop a library owns without a hook (asyncio, uvloop, cmd:) report null: not
counted, never estimated.  Records made before issue 28 have none of the fields and
read as None here.

Pure functions on records, no project imports: summary.py and tables.py call them.
"""

from __future__ import annotations

# The histogram's buckets, in STATS order (the same tuple as counters.EVENT_BUCKETS,
# kept apart so this module imports nothing; tests/test_events_per_pass.py checks it).
BUCKETS = ("0", "1", "2-3", "4-7", "8-15", "16+")
REGIME = (1, 3)         # the study's regime: 1-3 events per pass


def of_stats(stats: dict | None) -> dict:
    """The run's events-per-pass figures from its STATS dict: ``events_per_pass`` (events
    dispatched / passes), ``events_hist`` (passes per bucket, None when the server does
    not bucket its passes) and ``passes_per_conn``; None where not counted."""
    stats = stats or {}
    events, passes = stats.get("events"), stats.get("passes")
    hist = stats.get("events_hist")
    served = stats.get("served")
    valid_hist = isinstance(hist, list) and len(hist) == len(BUCKETS)
    hist = list(hist) if isinstance(hist, list) else None
    return {
        "events_per_pass": round(events / passes, 3)
        if isinstance(events, int) and isinstance(passes, int) and passes > 0 else None,
        "events_hist": hist if valid_hist else None,
        "passes_per_conn": round(passes / served, 4)
        if isinstance(passes, int) and isinstance(served, int) and served > 0 else None,
    }


def of_run(run: dict) -> dict:
    """A record's events-per-pass figures: from its metrics when recorded there, else
    from its STATS line (records written before the metrics carried them)."""
    m = run.get("metrics") or {}
    if "events_per_pass" in m:
        return {k: m.get(k) for k in ("events_per_pass", "events_hist", "passes_per_conn")}
    return of_stats(run.get("server_stats"))


def add_hists(hists) -> list | None:
    """The bucket-wise sum of the histograms given (None ones skipped; None if none)."""
    known = [h for h in hists if h is not None]
    if not known:
        return None
    return [sum(h[k] for h in known) for k in range(len(BUCKETS))]


def busy_shares(hist: list | None) -> list | None:
    """Shares of the passes that returned at least one event, per bucket 1 .. 16+."""
    if not hist:
        return None
    busy = sum(hist[1:])
    return [k / busy for k in hist[1:]] if busy else None


def regime_share(hist: list | None) -> float | None:
    """Share of the busy passes that returned 1-3 events (the study's regime)."""
    shares = busy_shares(hist)
    return None if shares is None else shares[0] + shares[1]


def text(mean: float | None, hist: list | None = None) -> str:
    """A table cell: the mean, and the share of busy passes with 1-3 events when known;
    'n/a' when the server's loop was not counted."""
    if mean is None:
        return "n/a"
    share = regime_share(hist)
    return f"{mean:.1f}" + ("" if share is None else f" ({share:.0%} 1–3)")
