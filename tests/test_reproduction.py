"""REPRODUCTION.md's generator (harness/reproduction.py) on fixture records: one machine
state per figure, verdicts as the batch states them, a finding's rule applied per link
(issue 29, items 7-10).

The fixture is a reproduction of six paired rounds on two links: 100mbit+5ms (RTT about
10.3 ms) and 1000mbit (RTT 0.04 ms).  master is 0.99 x raw epoll at 100 Mb/s (interval
holding 1) and 0.92 at 1000 Mb/s (interval below 1); the C server is 1.05 at 100 Mb/s
with an interval holding 1, 1.33 at 1000 Mb/s."""

from __future__ import annotations

import re

from harness import reproduction

L100, L1000 = "100mbit+5ms", "1000mbit"
# ratio to raw epoll per round (six rounds) for each (link, spec)
RATIOS = {
    (L100, "master"): [0.97, 0.98, 0.99, 0.99, 1.01, 1.02],
    (L100, "c_epoll"): [0.99, 1.03, 1.05, 1.05, 1.06, 1.06],
    (L100, "mul_thread"): [0.89, 0.90, 0.91, 0.91, 0.93, 0.95],
    (L1000, "master"): [0.90, 0.91, 0.92, 0.92, 0.94, 0.96],
    (L1000, "alone_proc"): [0.91, 0.92, 0.92, 0.93, 0.95, 0.98],
    (L1000, "c_epoll"): [1.32, 1.33, 1.33, 1.34, 1.40, 1.46],
}
BASE = {L100: 2500.0, L1000: 5400.0}
RTT = {L100: [10.20, 10.25, 10.30, 10.33, 10.36, 10.40], L1000: [0.04] * 6}


def _run(link, spec, rnd, conn):
    delay = "5ms" if link == L100 else None
    intended = "100mbit" if link == L100 else "1000mbit"
    batch = "bfix100" if link == L100 else "bfix1000"
    return {"schema": 1, "run_id": f"{batch}-{spec}-{rnd}", "batch_id": batch, "kind": "compare",
            "time_utc": f"2026-11-29T23:{10 + rnd:02d}:00Z", "spec": spec, "server": spec,
            "link": link, "round": rnd, "position": 0, "status": "ok",
            "config": {"concurrency": 64, "size": 100, "duration": 5, "warmup": 1, "rate": None,
                       "delay": delay, "server_cpu": 0.4},
            "labels": {"reproduction": "rfix", "intended_link": intended},
            "metrics": {"conn_per_s": conn, "server_cpu_us_per_conn": 0.4e6 / conn,
                        "client_cpu_share": 0.3, "client_bound": False, "server_bound": True,
                        "completed": int(conn * 5), "failed": 0, "lost": 0,
                        "p50_us": 20000, "p99_us": 30000},
            "rtt": {"median_ms": RTT[link][rnd], "expected_ms": 10.0 if delay else None},
            "env": {"cpu_model": "Fixture CPU", "cores": 2}}


def _records():
    out = []
    for rnd in range(6):
        for link in (L100, L1000):
            out.append(_run(link, "raw_epoll", rnd, BASE[link]))
        for (link, spec), rs in RATIOS.items():
            out.append(_run(link, spec, rnd, BASE[link] * rs[rnd]))
    return out


def _page(tmp_path):
    path = reproduction.refresh_latest(_records(), str(tmp_path))
    assert path
    return open(path).read()


def _finding(md, start):
    return next(line for line in md.splitlines() if line.startswith(f"- *{start}"))


def test_rtt_median_from_the_delayed_link_only(tmp_path):
    md = _page(tmp_path)
    # the middle of the 24 runs at 100 Mb/s, not of all 48 (half are 0.04 ms at 1000 Mb/s)
    assert "measured RTT median 10.33 ms over the 24 runs on that link" in md
    assert "RTT median 0.04" not in md


def test_raw_epoll_against_the_studys_3200_is_explained(tmp_path):
    md = _page(tmp_path)
    assert "matched by construction" not in md
    assert "Our raw epoll reaches 2,500/s there, 78% of 3,200: below the bound" in md


def test_verdicts_as_the_batch_states_them(tmp_path):
    c = _finding(_page(tmp_path), "the C server is fastest")
    assert f"on {L100} **does not hold** (1.05 [0.99–1.06] not distinguishable)" in c
    assert f"on {L1000} **holds** (1.33 [1.32–1.46] faster)" in c


def test_a_findings_rule_is_applied_per_link(tmp_path):
    m = _finding(_page(tmp_path), "master is slower than raw epoll")
    assert f"on {L100} **does not hold** -- ours 0.99 [0.97–1.02] not distinguishable" in m
    assert f"on {L1000} **holds** -- ours 0.92 [0.90–0.96] slower" in m
    # one verdict per link, none for the finding as a whole
    assert len(re.findall(r"\*\*(?:does not )?hold", m)) == 2


# --------------------------------------------------------------------------- the regime (issue 28)

def _at_regime(master_1000: float):
    """A second reproduction, later, at 4 in flight (the 100 Mb/s delay recalibrated to
    312us): raw epoll's polls return ~1 event, master at 1000 Mb/s is ``master_1000``."""
    l100 = "100mbit+312us"
    out = []
    for r in _records():
        r = {**r, "config": {**r["config"], "concurrency": 4},
             "labels": {**r["labels"], "reproduction": "rfix4"},
             "batch_id": r["batch_id"] + "-c4", "time_utc": r["time_utc"].replace("T23", "T23:5")[:-1]}
        r["time_utc"] = "2026-11-30T0" + r["time_utc"][12:]
        if r["link"] == L100:
            r["link"] = l100
            r["config"]["delay"] = "312us"
        if r["spec"] == "master" and r["link"] == L1000:
            r["metrics"] = {**r["metrics"], "conn_per_s": BASE[L1000] * master_1000[r["round"]]}
        if r["spec"] == "raw_epoll":
            r["server_stats"] = {"passes": 3000, "events": 3300, "served": 1000,
                                 "events_hist": [0, 2800, 200, 0, 0, 0]}
        out.append(r)
    return out


def test_the_delay_follows_the_concurrency():
    assert reproduction.delay_100mbit(64) == "5ms"
    assert reproduction.delay_100mbit(4) == "312us"
    exps = reproduction.experiments("c_epoll", 4)
    assert {e.get("delay") for e in exps if e["link"] == "100mbit"} == {"312us"}


def test_one_concurrency_says_how_to_add_the_regime(tmp_path):
    md = _page(tmp_path)
    sec = md.split("## The study's regime", 1)[1].split("\n## ", 1)[0]
    assert "one concurrency only (64 in flight)" in sec
    assert "`make reproduce CONCURRENCY=4`" in sec


def test_regime_section_sets_the_latest_reproduction_per_concurrency_side_by_side(tmp_path):
    flat = [1.00, 0.98, 1.03, 0.99, 1.02, 1.01]          # master not distinguishable at 4 in flight
    path = reproduction.refresh_latest(_records() + _at_regime(flat), str(tmp_path))
    md = open(path).read()
    # the page's body is the latest reproduction (4 in flight, its own delay)
    assert "closed loop of 4 connections" in md and "312us on 100mbit+312us" in md
    sec = md.split("## The study's regime", 1)[1].split("\n## ", 1)[0]
    assert "| link | 4 in flight | 64 in flight |" in sec
    assert "| 100mbit | 1.1 (100% of polls 1-3) | not counted |" in sec
    # master slower at 1000 Mb/s holds at 64, not at 4
    assert ("| master is slower than raw epoll | 1000mbit | does not hold | holds | **yes** |"
            in sec)
    assert "| the C server is fastest | 1000mbit | holds | holds | no |" in sec
    # alone_proc stays at 0.92-0.98 x raw epoll: no longer ahead of master, so it flips too
    assert ("**Depend on the regime:** master is slower than raw epoll (1000mbit); the unified "
            "proc brings Events close to raw epoll (1000mbit)." in sec)
    # CPU ratios with the batch's own verdict, per concurrency
    row = next(line for line in sec.splitlines() if line.startswith("| master | 1000mbit |"))
    assert row.count("[") == 2


def test_a_later_reproduction_at_the_same_concurrency_replaces_the_earlier():
    old = _records()
    new = [{**r, "labels": {**r["labels"], "reproduction": "rnew"},
            "time_utc": "2026-12-01" + r["time_utc"][10:]} for r in old]
    got = reproduction.latest_by_concurrency(old + new)
    assert list(got) == [64]
    assert {r["labels"]["reproduction"] for r in got[64]} == {"rnew"}


def test_a_flip_resting_on_a_ratio_without_interval_is_undecided(tmp_path):
    flat = [1.00, 0.98, 1.03, 0.99, 1.02, 1.01]
    later = [r for r in _at_regime(flat)     # two rounds of master at 1000 Mb/s fail: 4 left
             if not (r["spec"] == "master" and r["link"] == L1000 and r["round"] < 2)]
    md = open(reproduction.refresh_latest(_records() + later, str(tmp_path))).read()
    sec = md.split("## The study's regime", 1)[1].split("\n## ", 1)[0]
    assert ("| master is slower than raw epoll | 1000mbit | does not hold (no interval) | holds | "
            "undecided (no interval) |" in sec)
    assert "**Undecided** (a column rests on a ratio with too few clean rounds" in sec
    assert "**No finding resolved at both concurrencies changes its verdict.**" in sec
