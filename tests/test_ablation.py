"""The ae-literal design and its steps (variants/ablation) and ``make ablation``'s reading
of a batch (harness/ablation.py).

tests/test_conformance.py runs the whole ae contract on four sets of steps (the literal
design, the whole path, the unified proc on each); tests/test_servers.py runs the echo
protocol on the ``literal`` server. Here: every one of the 512 sets of steps compiles,
each step changes the code it claims to change and nothing else runs a switch, a
sample of sets serve a real socket exchange and timers, a wrong step is refused, and
the path table is computed from run records by the summary engine."""

import itertools
import socket
import time

import pytest

from harness import ablation as hab
from harness import servers as srv
from variants import ablation

R, W = 1, 2
NOW = 3 | 4


def test_every_set_of_steps_compiles():
    for n in range(len(ablation.ALL_STEPS) + 1):
        for steps in itertools.combinations(ablation.ALL_STEPS, n):
            cls = ablation.loop_class(steps)
            assert cls.steps == tuple(s for s in steps if s != ablation.UNIFIED)
            assert cls.unified == (ablation.UNIFIED in steps)


@pytest.mark.parametrize("step,gone", [
    ("adapter", "class Handler"), ("lists", "class FileEvent"), ("timers", "class TimeEvent"),
    ("api", "class ApiState"), ("fired", "fired.append"), ("timers", "_aeSearchNearestTimer"),
    ("lists", "self._maxfd"), ("table", "if native & self.native_in"),
])
def test_each_step_removes_its_construct(step, gone):
    assert gone in ablation.source(())
    assert gone not in ablation.source((step,))


def test_the_compiled_code_has_no_step_switch():
    """A step is code that is there or not, never a flag tested at run time."""
    for steps in [(), ablation.STEPS, ablation.ALL_STEPS]:
        text = ablation.source(steps)
        assert "#if" not in text and "$" not in text and "CALL(" not in text
        for name in ablation.ALL_STEPS:
            assert f'"{name}" in' not in text


def test_the_app_step_leaves_the_loop_as_it_is():
    assert ablation.APP_STEPS == ("switch",)
    assert ablation.source(("switch",)) == ablation.source(())


def test_without_switch_the_server_switches_by_delete_and_create():
    """literal's echo app without the switch step: READABLE deleted, then WRITABLE
    created (the fd leaves the kernel and comes back); with it, master's server."""
    from harness.servers import common, literal

    calls = []

    class Loop:
        def delete_file_event(self, fd, mask):
            calls.append(("delete", fd, mask))

        def create_file_event(self, fd, mask, proc, data=None):
            calls.append(("create", fd, mask))

    args = common.parse_args("literal", ["--steps", "adapter"])
    with socket.socket() as listener:
        echo = literal.make_echo(args, listener, Loop())
        conn = common.Conn(None, 7, 0)
        echo.watch_write(conn)
        assert calls == [("delete", 7, R), ("create", 7, W)] and conn.watched == common.WRITING
        calls.clear()
        args = common.parse_args("literal", ["--steps", "switch+adapter"])
        literal.make_echo(args, listener, Loop()).watch_write(conn)
        assert calls == [("create", 7, W)]


def test_the_whole_path_is_masters_structure():
    text = ablation.source("all")
    for absent in ("class Handler", "class FileEvent", "class TimeEvent", "class ApiState",
                   "self._events", ".handle("):
        assert absent not in text
    for present in ("masks = self._masks", "self._timers.due", "self._kernel.poll(timeout)",
                    "to_ae[native]"):
        assert present in text


def test_parse_steps_orders_and_refuses():
    assert ablation.parse_steps("locals+adapter") == ("adapter", "locals")
    assert ablation.parse_steps("adapter+switch") == ("switch", "adapter")
    assert ablation.parse_steps("all") == ablation.STEPS
    assert ablation.parse_steps("all+unified") == ablation.ALL_STEPS
    assert ablation.parse_steps("literal") == ()
    with pytest.raises(ValueError, match="unknown step 'nope'; the steps: switch, adapter, locals"):
        ablation.parse_steps("adapter+nope")


def test_a_spec_names_its_steps_canonically_and_refuses_a_wrong_one():
    spec = srv.parse_spec("literal:steps=locals+adapter")
    assert spec.text == "literal:steps=adapter+locals"
    assert "--steps" in srv.command(spec)
    with pytest.raises(srv.ServerError, match="literal: steps=fast names an unknown step 'fast'"):
        srv.parse_spec("literal:steps=fast")


SAMPLE = [(), ablation.STEPS, ablation.ALL_STEPS, ("unified",)] + \
    [(s,) for s in ablation.STEPS] + [ablation.STEPS[:i] for i in range(1, len(ablation.STEPS))] + \
    [tuple(x for x in ablation.STEPS if x != s) for s in ablation.STEPS]


@pytest.mark.parametrize("steps", SAMPLE, ids=[ablation.steps_text(s) for s in SAMPLE])
def test_an_echo_exchange_and_a_timer(steps):
    """Each sampled set serves the echo server's pattern (accept-like register, read,
    switch to write keeping READABLE, close) and runs a periodic timer."""
    loop = ablation.loop_class(steps)(setsize=1024)
    a, b = socket.socketpair()
    a.setblocking(False)
    got, ticks, done = [], [], []

    def on_write(lp, fd, data, mask):
        if not mask & W:
            lp.delete_file_event(fd, R)
            return
        a.send(data[0])
        lp.delete_file_event(fd, R | W)
        done.append(mask)

    def on_read(lp, fd, data, mask):
        data.append(a.recv(100))
        got.append(mask)
        lp.create_file_event(fd, W, on_write, data)

    def tick(lp, id, d):
        ticks.append(id)
        return 1 if len(ticks) < 3 else -1
    try:
        loop.create_file_event(a.fileno(), R, on_read, [])
        loop.create_time_event(1, tick)
        b.send(b"ping")
        deadline = time.monotonic() + 2
        while (not done or len(ticks) < 3) and time.monotonic() < deadline:
            loop.process_events(NOW)
            time.sleep(0.001)
        assert got == [R] and done and done[0] & W
        assert b.recv(100) == b"ping"
        assert loop.get_file_events(a.fileno()) == 0
        assert len(ticks) == 3
    finally:
        loop.close()
        a.close()
        b.close()


# --------------------------------------------------------------------------- the path table

def _run(spec, rnd, cpu, conn, batch="b1"):
    return {"batch_id": batch, "round": rnd, "spec": spec, "server": spec.split(":")[0],
            "status": "ok", "link": "loopback", "time_utc": "2026-12-06T00:00:00Z",
            "config": {"concurrency": 64, "size": 100, "server_cpu": 0.4, "duration": 4},
            "metrics": {"conn_per_s": conn, "server_cpu_us_per_conn": cpu, "lost": 0,
                        "server_bound": True}}


def test_path_rows_levels_and_own_effects():
    """Levels against raw epoll and each step's own effect against the previous spec,
    both paired per round (the summary engine)."""
    runs = []
    for rnd in range(6):
        jitter = 1 + 0.01 * rnd
        runs.append(_run("raw_epoll", rnd, 30 * jitter, 1000 / jitter))
        runs.append(_run("literal", rnd, 45 * jitter, 667 / jitter))
        runs.append(_run("literal:steps=switch", rnd, 42 * jitter, 714 / jitter))
    rows = {r["label"]: r for r in hab.rows(runs)}
    assert rows["literal"]["cpu"] == pytest.approx(1.5)
    assert rows["+switch"]["cpu"] == pytest.approx(1.4)
    assert rows["+switch"]["own_cpu"] == pytest.approx(42 / 45)
    assert rows["+switch"]["own_cpu_verdict"] == "less CPU"
    assert "+adapter" not in rows                   # not run: no row, no figure
    assert "delete READABLE" in rows["+switch"]["removes"]
    text = hab.table_md(hab.rows(runs), {"raw_epoll": 10000, "literal": 15000})
    assert "15,000 (+5,000), 1.50×" in text


def test_the_path_is_the_steps_in_order():
    specs = hab.SPECS
    assert specs[:2] == ["raw_epoll", "literal"]
    assert specs[2] == "literal:steps=" + ablation.STEPS[0]
    assert hab.END == "literal:steps=" + "+".join(ablation.STEPS)
    for s in specs:
        srv.parse_spec(s)                           # every one is a valid spec
    assert len(set(specs)) == len(specs)


def test_reproduction_section_recomputes_from_the_recorded_runs(tmp_path):
    """REPRODUCTION's section reads results/ablation/BATCH.json for the batch ids and
    recomputes every figure from the runs; instruction counts from results/ablation/icount."""
    import json
    runs = []
    for rnd in range(6):
        j = 1 + 0.01 * rnd
        runs += [_run("raw_epoll", rnd, 30 * j, 1000 / j), _run("literal", rnd, 33 * j, 900 / j),
                 _run("master", rnd, 31 * j, 970 / j), _run("alone_proc", rnd, 30.5 * j, 985 / j)]
    for i, r in enumerate(runs):
        r["run_id"] = f"r{i}"
    (tmp_path / "runs").mkdir()
    for r in runs:
        (tmp_path / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / "b1.json").write_text(json.dumps({"run_ids": [r["run_id"] for r in runs]}))
    hab.report(runs, str(tmp_path), out=open("/dev/null", "w"))
    icount = tmp_path / "ablation" / "icount"
    icount.mkdir()
    for spec, n in (("raw_epoll", 40000), ("literal", 60000), (hab.END, 52000), ("master", 50000),
                    ("alone_proc", 47000)):
        (icount / f"{spec.replace(':', '_')}.json").write_text(json.dumps(
            {"rows": [{"spec": spec, "instructions_per_connection": n}]}))
    text = "\n".join(hab.section(str(tmp_path)))
    assert "| b1 | loopback, 64, default | 0.90" in text
    assert "does not reach the study's 0.65" in text
    assert "literal 60,000 (1.50 x)" in text and "3,000 on master (30% of its excess)" in text
    assert (tmp_path / "ablation" / "b1.md").exists()
