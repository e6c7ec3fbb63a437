"""The batch table: the rows of the one summary engine (harness/summary.py) written as
text for the terminal or as markdown for the batch's .md file, with the notes that say
how to read them.
"""

from __future__ import annotations

import sys

from harness import metrics, runrecord, summary
from harness import servers as srv
from harness.metrics import CLIENT_BOUND_SHARE, SERVER_BOUND_SHARE

def summarize(recs: list[dict], baseline: str | None = None) -> list[dict]:
    """The batch's rows, from the one summary engine (harness/summary.py: which runs
    count, the group and pairing keys, the baseline rule, the interval and the verdict).
    ``ok`` is kept as the name of the clean-run count for readers of older summaries."""
    rows = summary.summarize(recs, baseline)
    for r in rows:
        r["ok"] = r["clean"]
    return rows


def format_table(recs: list[dict], *, markdown: bool = False) -> str:
    rows = summarize(recs)
    if not rows:
        return "(no runs)\n"
    sweep = any(r["rate"] is not None for r in rows)
    budgeted = any(r["budget"] != "off" for r in rows)
    links = len({r["link"] for r in rows}) > 1
    shapes = len({(r["concurrency"], r["size"]) for r in rows}) > 1
    # Shown only when measured (linked runs): the round trip and the packets the link dropped.
    rtt = any(r.get("rtt_ms_median") is not None for r in rows)
    drops = any(r.get("rtt_expected_ms") is not None or r.get("link_drops") for r in rows)
    pythons = len({r["python"] for r in rows}) > 1
    # The metrics shown beside CPU per connection (events per pass...): each when some run
    # has it (harness/metrics.py).
    beside = [m for m in metrics.shown() if any(r.get(m.fields()[0]) is not None for r in rows)]
    h = {m.name: m.header for m in metrics.METRICS}
    bases = {r["baseline"] for r in rows}
    several = len(bases) > 1
    base = "base" if several else (next(iter(bases)) or summary.BASELINE)
    head = ["spec"] + (["link"] if links else []) + (["conc/size"] if shapes else []) \
        + (["python"] if pythons else []) \
        + (["offered/s"] if sweep else []) + (["CPU budget"] if budgeted else []) \
        + (["baseline"] if several else []) + [
        "runs clean/excl.", h["conn_per_s"], f"conn/s ×{base} [CI]", "verdict",
        h["server_cpu_us_per_conn"]] + [m.header for m in beside] + [
        f"CPU ×{base} [CI]", "CPU verdict", "conn/s × CPU", "pairs",
        h["p99_us"], "failed/lost", h["client_bound"]] \
        + ([h["server_bound"]] if budgeted else []) + (["RTT ms"] if rtt else []) + (["pkt drops"] if drops else [])
    body = []
    for r in rows:
        cps = "?" if r["conn_per_s_median"] is None else \
            f"{r['conn_per_s_median']:,.0f} [{r['conn_per_s_min']:,.0f}–{r['conn_per_s_max']:,.0f}]"
        if r["rate"] and r["conn_per_s_median"] is not None \
                and r["conn_per_s_median"] < summary.SUSTAINED_SHARE * r["rate"]:
            cps += " short"
        cpu = r["server_cpu_us_per_conn_median"]
        isb = r["is_baseline"]
        body.append([r["spec"]] + ([str(r["link"])] if links else [])
                    + ([f"{r['concurrency']}/{r['size']}"] if shapes else [])
                    + ([r["python"]] if pythons else [])
                    + ([fmt_count(r["rate"])] if sweep else [])
                    + ([fmt_budget(r["server_cpu"])] if budgeted else [])
                    + ([str(r["baseline"])] if several else []) + [
            f"{r['clean']}/{r['excluded']}", cps,
            "1 (baseline)" if isb else summary.ratio_text(r["ratio_conn_to_baseline"],
                                                          r["ratio_conn_interval"]),
            "–" if isb else summary.verdict_text(r, "conn"),
            "?" if cpu is None else f"{cpu:.1f}"] + [m.text(r) for m in beside] + [
            "1 (baseline)" if isb else summary.ratio_text(r["ratio_cpu_to_baseline"],
                                                          r["ratio_cpu_interval"]),
            "–" if isb else summary.verdict_text(r, "cpu"),
            # Open loop: conn/s is the offered rate, so it cannot cross-check CPU.
            "–" if isb or r["rate"] else summary.consistency_text(r["consistency"]),
            summary.pairs_text(r),
            fmt_ms(r["p99_us_median"]), f"{r['failed']}/{r['lost']}", f"{r['client_bound']}/{r['clean']}"]
            + ([f"{r['server_bound']}/{r['clean']}"] if budgeted else [])
            + ([_rtt_cell(r)] if rtt else [])
            + ([fmt_count(r.get("link_drops"))] if drops else []))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        fmt = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                    for i, (c, w) in enumerate(zip(row, widths)))
        lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(row) for row in body]
    notes = [f"Ratios: median over rounds of (spec ÷ {base} in the same round). " + summary.INTERVAL_NOTE,
             "runs clean/excl.: runs that failed or lost connections are excluded from every median "
             f"and ratio, and counted here. client-bound: runs whose client used ≥{CLIENT_BOUND_SHARE:.0%} "
             "of a core (their conn/s measures the client)."]
    notes.append(f"conn/s × CPU: the conn/s ratio times the CPU ratio, 1.00 when conn/s is what CPU per "
                 f"connection predicts; '!' marks a gap over {summary.CONSISTENCY_TOLERANCE:.0%} "
                 "(expected for client-bound runs, a warning for server-bound ones).")
    notes += [m.note for m in beside if m.note]
    if sweep:
        notes.append(f"Open loop: 'short' marks an offered rate the server did not sustain (< "
                     f"{summary.SUSTAINED_SHARE:.0%} of it completed); CPU per connection compares servers "
                     "like for like only at a rate all of them sustain.")
    commits = {r["spec"]: r["variant_commit"] for r in rows if r.get("variant_commit")}
    if commits:
        notes.append("Revisions: " + ", ".join(f"{s} = {c[:12]}" for s, c in commits.items())
                     + " (library code from git; the plain name runs the working tree).")
    if budgeted:
        notes.append(f"CPU budget: the server ran in a cgroup with a CFS quota of that many cores; "
                     f"server-bound: runs where it used ≥{SERVER_BOUND_SHARE:.0%} of its budget and the "
                     "client was not saturated (their conn/s measures the server).")
    if any(r["failed_runs"] for r in rows):
        notes.append("Failed runs are kept on disk with their error and the server's stderr.")
    if rtt:
        notes.append("RTT: median of a TCP-connect probe through the link before each run "
                     "(idle link); in brackets, twice the configured one-way delay; '!' marks "
                     "runs where they differ by more than 20 %. pkt drops: packets the link "
                     "dropped (random loss, queues), summed over runs.")
        for r in rows:
            if r.get("rtt_ms_median") and r["concurrency"] and r["rate"] is None:
                notes.append(f"Round-trip bound on {r['link']}: a connection costs at least two "
                             f"round trips (handshake, then request and echo), so {r['concurrency']} "
                             f"in flight cannot exceed {r['concurrency']} ÷ (2 × "
                             f"{r['rtt_ms_median']:.2f} ms) ≈ "
                             f"{r['concurrency'] / (2 * r['rtt_ms_median'] / 1e3):,.0f} conn/s.")
                break
    notes += diet_notes(recs) + worker_notes(recs)
    for r in rows:
        if r.get("rtt_warnings"):
            notes.append(f"WARNING: {r['spec']} on {r['link']}: {r['rtt_warnings']} run(s) measured an "
                         f"RTT of {_ms_f(r.get('rtt_ms_median'))} ms where the configured delay "
                         f"gives {_ms_f(r.get('rtt_expected_ms'))} ms: the delay is not what the "
                         "link applied (see the runs' warnings).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


# What a run of N event loops flags (runner.worker_warnings): said under the table too.
WORKER_FLAGS = ("threads mode on a GIL build", "worker(s) ", "the server's workers and the load client")


def worker_notes(recs: list[dict]) -> list[str]:
    """Runs of N event loops (spec loops=N, issue 26) whose records flag threads under the
    GIL, a worker that served nothing, or server and client on shared cores: once per
    spec and flag, with the number of runs."""
    seen: dict = {}
    for r in recs:
        for w in r.get("warnings") or []:
            if str(w).startswith(WORKER_FLAGS):
                key = (r.get("spec"), str(w))
                seen[key] = seen.get(key, 0) + 1
    return [f"WORKERS: {spec}: {w} ({n} run(s))." for (spec, w), n in seen.items()]


def diet_notes(recs: list[dict]) -> list[str]:
    """When a run of the table ran a diet: per server that did, the levers it cannot take
    and why (the same lever names for every server; options.py)."""
    recs = runrecord.full(recs)
    names = [n for n in dict.fromkeys(r.get("server") for r in recs
                                      if r["config"].get("diet_levers")) if n is not None]
    notes = []
    for name in names:
        server = srv.SERVERS.get(name) or srv.OWN_SERVERS.get(name)
        missing = server.diet.missing() if server else ()
        if server and missing:
            notes.append(f"Diet: {name}: {', '.join(missing)} not applied ({server.diet.summary}).")
    return notes


def _ms_f(x) -> str:
    return "?" if x is None else f"{x:.2f}"


def _rtt_cell(r: dict) -> str:
    cell = _ms_f(r.get("rtt_ms_median"))
    if r.get("rtt_expected_ms") is not None:
        cell += f" ({r['rtt_expected_ms']:g})"
    return cell + (" !" if r.get("rtt_warnings") else "")


def print_table(recs: list[dict], out=sys.stdout) -> None:
    print(format_table(recs), file=out, end="")
    out.flush()


def fmt_count(x) -> str:
    return "?" if x is None else f"{x:,.0f}"


def fmt_budget(cores) -> str:
    return "off" if cores is None else f"{cores:g} core"


def fmt_ms(us) -> str:
    return "?" if us is None else f"{us / 1000:.2f}"
