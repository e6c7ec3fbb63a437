"""Events per pass (issue 28): every server the harness owns reports its passes and the
events it dispatched on its STATS line; the runs, the summary rows and the batch table
carry them; records made before have none and still load.

The Python servers derive their event count from counts kept on rare paths only
(harness/servers/counters.py); raw_epoll also counts the events its polls returned, so
the derivation is checked against that count under a workload that takes the rare
paths too: requests in pieces, peers that close early, idle timeouts, connections
still open at exit, and lazy_watch."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from harness import passes, summary, tables
from harness import servers as srv
from harness.servers import counters

pytestmark = pytest.mark.timeout(90)


def test_buckets_are_one_definition():
    assert passes.BUCKETS == counters.EVENT_BUCKETS
    assert [counters.bucket_of(n) for n in (0, 1, 2, 3, 4, 7, 8, 15, 16, 500)] == \
        [0, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    polls = [0] * (counters.MAX_POLL_EVENTS + 1)
    polls[0], polls[1], polls[3], polls[9], polls[40] = 2, 5, 1, 4, 1
    assert counters.bucketed(polls) == [2, 5, 1, 0, 4, 1]


def test_derive_events_counts_every_exit_once():
    c = dict.fromkeys(counters.COUNTERS + counters.PARTS, 0)
    c.update(accepted=10, served=7, accept_calls=4, reads_partial=2, reads_failed=1,
             writes_failed=1)
    # 10 registered for reading: 1 failed, 1 still reading -> 8 complete reads;
    # 8 registered for writing: 1 failed, 0 left -> 7 sends that completed.
    assert counters.derive_events(c, False, (1, 0)) == 4 + 8 + 2 + 1 + 7 + 1
    assert counters.derive_events(c, False, None) is None          # not counted: None, never 0
    c.update(waits_read=3, waits_write=2)                          # lazy_watch: only the waits
    assert counters.derive_events(c, True, (0, 0)) == 4 + (3 - 1) + 2 + 1 + (2 - 1) + 1


def _exchange(port, payload=b"x" * 100, pieces=1, pause=0.0):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        step = len(payload) // pieces
        for i in range(pieces):
            s.sendall(payload[i * step:(i + 1) * step] if i < pieces - 1 else payload[i * step:])
            if pause:
                time.sleep(pause)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


def _workload(port) -> list:
    """Every path: whole requests (the C client), requests in pieces, peers that close
    early, peers that go idle (the sweep closes them), one left mid-request at exit."""
    r = subprocess.run(["build/loadgen", "--host", "127.0.0.1", "--port", str(port),
                        "--count", "400", "-c", "4"], cwd=srv.ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for _ in range(5):
        assert _exchange(port, pieces=3, pause=0.02) == b"x" * 100
    for _ in range(3):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    idle[0].sendall(b"y" * 10)
    time.sleep(1.0)                      # idle timeout 0.4 s (+ a sweep slice)
    left = socket.create_connection(("127.0.0.1", port), timeout=5)
    left.sendall(b"z" * 10)
    time.sleep(0.1)
    return idle + [left]


def _served(spec) -> dict:
    """Start ``spec``, run the whole workload against it, stop it: its STATS."""
    server = srv.start(spec, idle_timeout=0.4)
    try:
        keep = _workload(server.port)
        stats = server.stop()
    finally:
        server.stop()
    for s in keep:
        s.close()
    return stats


@pytest.mark.parametrize("spec", ["raw_epoll", "raw_epoll:diet=lazy_watch",
                                  "raw_epoll:diet=lazy_watch+dontwait"])
def test_derived_events_match_the_events_raw_epoll_polled(spec):
    stats = _served(spec)
    assert stats["served"] == 405 and stats["idle_timeouts"] == 2
    assert stats["passes"] == sum(stats["events_hist"])
    # The polls returned the derived events, plus the wake-up socket's one when SIGTERM
    # found the loop in its poll (when it came mid-pass, the loop ends without polling it).
    assert stats["events_polled"] - stats["events"] in (0, 1)
    if "lazy" not in spec:          # lazy_watch serves most connections inside the accept event
        assert stats["events"] > 2 * stats["served"]


@pytest.mark.parametrize("name", ["master", "alone_proc", "mul_thread"])
def test_variant_servers_count_passes_and_events_without_a_histogram(name):
    stats = _served(name)
    assert stats["served"] == 405
    assert stats["events_hist"] is None                     # the library's loop: not bucketed
    assert stats["passes"] > 0
    # Each served connection took a read and a write event (those in pieces more), the
    # listener one event per wake-up: at least two per connection, never more than
    # the passes could carry.
    assert 2 * stats["served"] < stats["events"]
    assert stats["events"] / stats["passes"] < 50


@pytest.mark.parametrize("name", ["c_epoll", "redis_ae"])
def test_c_servers_count_passes_events_and_histogram(name):
    spec = srv.parse_spec(name)
    try:
        srv.check_available(spec, None)
    except srv.ServerError as e:
        pytest.skip(str(e))
    stats = _served(name)
    assert stats["served"] == 405
    hist = stats["events_hist"]
    assert len(hist) == len(passes.BUCKETS) and sum(hist) == stats["passes"]
    assert 2 * stats["served"] < stats["events"]
    # The events lie between what the buckets' lower and upper bounds allow.
    lows, highs = (0, 1, 2, 4, 8, 16), (0, 1, 3, 7, 15, 1 << 30)
    assert sum(k * lo for k, lo in zip(hist, lows)) <= stats["events"] <= \
        sum(k * hi for k, hi in zip(hist, highs))


def test_library_owned_loops_say_not_counted():
    server = srv.start("asyncio")
    try:
        assert _exchange(server.port) == b"x" * 100
        stats = server.stop()
    finally:
        server.stop()
    assert stats["served"] == 1
    assert stats["passes"] is None and stats["events"] is None and stats["events_hist"] is None


def test_records_without_the_fields_read_as_none():
    old = {"server_stats": {"served": 10, "accepted": 10}, "metrics": {"conn_per_s": 1.0}}
    assert passes.of_run(old) == {"events_per_pass": None, "events_hist": None,
                                  "passes_per_conn": None}
    new = passes.of_stats({"served": 10, "events": 30, "passes": 12,
                           "events_hist": [0, 6, 4, 2, 0, 0]})
    assert new == {"events_per_pass": 2.5, "events_hist": [0, 6, 4, 2, 0, 0], "passes_per_conn": 1.2}
    assert passes.regime_share(new["events_hist"]) == pytest.approx(10 / 12)
    assert passes.text(None) == "n/a" and passes.text(2.5, [0, 6, 4, 2, 0, 0]) == "2.5 (83% 1–3)"


def _run(spec, rnd, cpu, stats):
    m = {"conn_per_s": 1000.0, "server_cpu_us_per_conn": cpu, "lost": 0, "failed": 0}
    if stats is not None:
        m.update(passes.of_stats(stats))
    return {"run_id": f"b-{spec}-{rnd}", "batch_id": "b", "spec": spec, "server": spec,
            "link": "loopback", "round": rnd, "position": 0, "status": "ok",
            "config": {"concurrency": 64, "size": 100, "rate": None, "python": None},
            "metrics": m, "server_stats": stats}


def test_summary_and_table_show_events_per_pass_beside_cpu():
    stats = {"served": 10, "events": 30, "passes": 10, "events_hist": [0, 5, 5, 0, 0, 0]}
    runs = [_run("raw_epoll", r, 40.0, stats) for r in range(5)] + \
           [_run("uvloop", r, 44.0, None) for r in range(5)]
    rows = {r["spec"]: r for r in summary.summarize(runs)}
    assert rows["raw_epoll"]["events_per_pass_median"] == 3.0
    assert rows["raw_epoll"]["events_hist"] == [0, 25, 25, 0, 0, 0]
    assert rows["uvloop"]["events_per_pass_median"] is None
    table = tables.format_table(runs)
    head = table.splitlines()[0]
    assert head.index("server CPU µs/conn") < head.index("events/pass") < head.index("CPU ×raw_epoll")
    assert "3.0 (100% 1–3)" in table and "n/a" in table
    # Records without the fields: no column at all (old batch tables unchanged).
    for r in runs:
        r["metrics"] = {k: v for k, v in r["metrics"].items() if k not in
                        ("events_per_pass", "events_hist", "passes_per_conn")}
        r["server_stats"] = None
    assert "events/pass" not in tables.format_table(runs)
