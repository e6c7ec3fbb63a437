"""The variant list is written once, in the server table (harness/servers/__init__.py):
a variant declared there is in the default servers, the head-to-head list, `make help`,
and the conformance and model tests' configurations -- and those tests run on it.  Shown
with a synthetic variant (master's library under another name)."""

import importlib.util
import os
import socket
import subprocess

import pytest

from harness import frame, runner, servers

pytestmark = pytest.mark.timeout(60)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SYNTH = servers.Server(
    "synthetic", "python", "harness.servers.master", "a synthetic variant: master's library",
    variant=True, package="variants.master",
    loop_configs=(servers.LoopConfig("synthetic_small", kwargs=(("setsize", 256),)),),
    head_to_head=(("synthetic", "master", "synthetic vs master"),))


@pytest.fixture
def declared(monkeypatch):
    monkeypatch.setitem(servers.SERVERS, "synthetic", SYNTH)


def _load(name: str):
    """A fresh copy of a test module, as pytest would collect it now."""
    spec = importlib.util.spec_from_file_location(f"declared_{name}", os.path.join(ROOT, "tests", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_lists_derive_from_the_table():
    assert runner.DEFAULT_SERVERS == servers.SERVERS.default_servers()
    assert set(servers.VARIANTS) <= set(servers.SERVERS.default_servers())
    assert {c.name for c in servers.SERVERS.loop_configs()} >= set(servers.VARIANTS)
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert f"VARIANT={'|'.join(servers.SERVERS.variants())}]" in help_text


def test_a_declared_variant_is_picked_up(declared):
    assert "synthetic" in servers.SERVERS.variants() and "synthetic" in servers.SERVERS.default_servers()
    assert ("synthetic", "master", "synthetic vs master") in servers.SERVERS.head_to_head()
    cfgs = {c.name: c for c in servers.SERVERS.loop_configs()}
    assert cfgs["synthetic"].package == cfgs["synthetic_small"].package == "variants.master"
    # The conformance suite and the model test, collected now, include it ...
    conformance, model = _load("test_conformance"), _load("test_model")
    assert {"synthetic", "synthetic_small"} <= set(conformance.VARIANTS)
    assert {"synthetic", "synthetic_small"} <= {name for name, _ in model.LOOPS}
    # ... and run on it: a conformance test, and the model's loop factory.
    for backend in conformance.BACKENDS:
        conformance.test_names_and_constants(("synthetic_small", backend))
        a, b = socket.socketpair()
        try:
            loop = conformance.make_loop("synthetic_small", backend)
            assert loop.get_setsize() == 256            # its declared kwargs applied
            conformance.test_readable_proc_gets_data_and_client_data(loop, (a, b))
            loop.close()
        finally:
            a.close()
            b.close()
        under_test = dict(model.LOOPS)["synthetic"](backend)
        assert under_test.procs == "two"
        under_test.close()


def test_a_declared_comparison_reaches_the_report(declared):
    recs = []
    for rnd in range(2):
        for pos, (spec, cpu) in enumerate((("master", 40.0), ("synthetic", 44.0))):
            recs.append({"schema": 2, "run_id": f"{spec}-{rnd}", "batch_id": "b", "kind": "compare",
                         "spec": spec, "server": spec, "round": rnd, "position": pos, "status": "ok",
                         "time_utc": "2026-12-01T00:00:00Z", "config": {"concurrency": 64, "size": 100},
                         "metrics": {"conn_per_s": 1e6 / cpu, "server_cpu_us_per_conn": cpu, "lost": 0}})
    h2h = frame.head_to_head(frame.frame(recs))
    row = h2h[h2h["a"] == "synthetic"].iloc[0]
    assert row["b"] == "master" and row["ratio_cpu_to_baseline"] == pytest.approx(1.1)
