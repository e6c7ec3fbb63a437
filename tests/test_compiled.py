"""Where a server's code runs (issue 25): the spec options ``compiled`` and ``python=``.

Building with mypyc takes ~20 s, so these tests check the mechanics on fake trees (the
plan, the refusals, the environment a compiled spec starts in, what the record keeps);
``make test-compiled`` runs the conformance suite on the real build, and there the first
test below checks that the compiled modules are the ones imported."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from harness import servers as srv
from harness.servers import interp
from tools import build_compiled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not os.environ.get("EVENTS_EXPECT_COMPILED"),
                    reason="make test-compiled sets EVENTS_EXPECT_COMPILED")
def test_the_compiled_modules_are_the_ones_imported():
    manifest = interp.manifest()
    assert manifest, "build/compiled/lib has no manifest"
    for rel in manifest["compiled"]:
        mod = importlib.import_module(rel[:-3].replace("/", "."))
        assert mod.__file__.endswith(".so"), f"{rel} was imported from {mod.__file__}"
    for rel in manifest["interpreted"]:
        if rel.endswith("__init__.py"):
            mod = importlib.import_module(os.path.dirname(rel).replace("/", "."))
            assert mod.__file__.endswith(".py")


def test_plan_leaves_the_modules_mypyc_refuses_interpreted_with_a_reason():
    files = build_compiled.sources()
    compiled, interpreted = build_compiled.plan(files)
    assert "variants/alone_proc/events.py" in compiled
    assert "variants/common/backends/epoll.py" in compiled
    for rel in ("variants/__init__.py", "variants/common/api_types.py",
                "variants/common/backends/select.py", "variants/alone_proc/__init__.py"):
        assert rel in interpreted and interpreted[rel]
    assert not [r for r in compiled if r.startswith("variants/ablation/")]
    assert set(compiled) | set(interpreted) == {f for f in files if f.endswith(".py")}


def _fake_tree(tmp_path, soabi):
    tree = tmp_path / "lib"
    tree.mkdir()
    (tree / "manifest.json").write_text(json.dumps({
        "compiled": ["variants/alone_proc/events.py"], "interpreted": {}, "mypy": "9.9",
        "soabi": soabi, "source_commit": "abc", "source_dirty": True}))
    return tree


def test_compiled_spec_starts_in_the_compiled_tree_and_records_its_manifest(tmp_path, monkeypatch):
    tree = _fake_tree(tmp_path, sysconfig.get_config_var("SOABI"))
    monkeypatch.setattr(interp, "COMPILED_DIR", str(tmp_path))
    spec = srv.parse_spec("alone_proc:compiled")
    srv.check_available(spec)
    assert srv.workdir(spec) == str(tree)
    env = srv.env_for(spec.server, spec)
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(tree), ROOT]
    assert "--compiled" not in srv.command(spec)
    cfg = interp.record_config(spec)
    assert cfg["compiled"]["mypy"] == "9.9" and cfg["compiled"]["compiled"] == ["variants/alone_proc/events.py"]
    assert cfg["spec_python"] is None
    plain = srv.parse_spec("alone_proc")
    assert srv.workdir(plain) == ROOT and interp.record_config(plain)["compiled"] is None


def test_compiled_spec_is_refused_when_not_built_or_built_for_another_abi(tmp_path, monkeypatch):
    monkeypatch.setattr(interp, "COMPILED_DIR", str(tmp_path))
    with pytest.raises(srv.ServerError, match="run make compiled"):
        srv.check_available(srv.parse_spec("master:compiled"))
    _fake_tree(tmp_path, "cpython-39-elsewhere")
    with pytest.raises(srv.ServerError, match="compiled for cpython-39-elsewhere"):
        srv.check_available(srv.parse_spec("master:compiled"))
    with pytest.raises(srv.ServerError, match="does not take @REV"):
        srv.check_available(srv.parse_spec("master@HEAD:compiled"))
    with pytest.raises(srv.ServerError, match="has no option 'compiled'"):
        srv.parse_spec("asyncio:compiled")


def test_python_option_picks_the_interpreter_per_spec():
    spec = srv.parse_spec(f"raw_epoll:python={sys.executable}")
    assert srv.command(spec)[0] == interp.resolve(sys.executable)["executable"]
    assert "--python" not in srv.command(spec)
    info = interp.record_config(spec)["spec_python"]
    assert info["implementation"] == sys.implementation.name
    assert info["version"] == "%d.%d.%d" % sys.version_info[:3]
    assert srv.command(srv.parse_spec("raw_epoll"), python="/x/py")[0] == "/x/py"   # the batch's
    with pytest.raises(srv.ServerError, match="python=no-such-python"):
        srv.parse_spec("raw_epoll:python=no-such-python")


@pytest.mark.skipif(not shutil.which("pypy3"), reason="pypy3 is not installed (make pypy)")
def test_uvloop_on_pypy_is_a_one_line_note():
    with pytest.raises(srv.ServerError) as e:
        srv.check_available(srv.parse_spec("uvloop:python=pypy3"))
    assert "\n" not in str(e.value) and "uvloop" in str(e.value)


def test_cli_refuses_an_unbuilt_compiled_spec_with_one_error_line(tmp_path):
    from harness import cli
    env = dict(os.environ, EVENTS_COMPILED_DIR=str(tmp_path / "none"))
    r = subprocess.run([sys.executable, "-m", "harness", "compare", "--servers", "alone_proc:compiled",
                        "--results-dir", str(tmp_path / "results"), "--repeat", "1", "--duration", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == cli.EXIT_MISSING, r.stderr       # as any server that is not built
    assert "run make compiled" in r.stderr and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] and \
        len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))


@pytest.mark.skipif(not shutil.which("pypy3"), reason="pypy3 is not installed (make pypy)")
def test_pypy_specs_get_the_longer_default_warmup_unless_one_is_given():
    pypy = srv.parse_spec("alone_proc:python=pypy3")
    assert interp.warmup_for(pypy, 1.0, None, 1.0) == max(1.0, interp.PYPY_WARMUP)
    assert interp.warmup_for(pypy, 0.0, None, 1.0) == 0.0               # given: kept
    assert interp.warmup_for(srv.parse_spec("alone_proc"), 1.0, None, 1.0) == 1.0
    assert interp.warmup_for(srv.parse_spec("alone_proc"), 1.0, shutil.which("pypy3"), 1.0) \
        == max(1.0, interp.PYPY_WARMUP)                                 # the batch's PYTHON=pypy3
    assert interp.warmup_for(srv.parse_spec("c_epoll"), 1.0, shutil.which("pypy3"), 1.0) == 1.0


def test_compiled_app_and_compiled_raw_epoll_run_from_the_app_tree_by_c(tmp_path, monkeypatch):
    monkeypatch.setattr(interp, "COMPILED_DIR", str(tmp_path))
    app = tmp_path / "app"
    app.mkdir()
    (app / "manifest.json").write_text(json.dumps({
        "part": "app", "compiled": ["harness/servers/raw_epoll.py", "variants/alone_proc/events.py"],
        "interpreted": {}, "mypy": "9.9", "soabi": sysconfig.get_config_var("SOABI")}))
    raw = srv.parse_spec("raw_epoll:compiled")
    assert interp.part_of(raw) == "app" and srv.workdir(raw) == str(app)
    argv = srv.command(raw)
    assert argv[1] == "-c" and "harness.servers.raw_epoll" in argv[2] and "--port" in argv
    alone = srv.parse_spec("alone_proc:compiled_app")
    srv.check_available(alone)
    assert interp.part_of(alone) == "app" and srv.command(alone)[1:3] == ["-m", "harness.servers.alone_proc"]
    assert interp.record_config(alone)["compiled"]["part"] == "app"
    with pytest.raises(srv.ServerError, match="run make compiled"):
        srv.check_available(srv.parse_spec("alone_proc:compiled"))      # lib not built


def test_an_interpreter_the_project_builds_is_found_by_name_and_says_its_gil(tmp_path, monkeypatch):
    """python=python3.13t finds build/python-ft/bin/python3.13t (make python-ft) without a
    path, and the record says whether the GIL was on (a fake interpreter stands in)."""
    fake = tmp_path / "python3.13t-fake"
    fake.write_text("#!/bin/sh\nprintf '%s\\ncpython\\ncpython-313t-x86_64-linux-gnu\\n3.13.5\\n0\\n' \"$0\"\n")
    fake.chmod(0o755)
    monkeypatch.setattr(interp, "OWN_BUILDS", (str(tmp_path),))
    info = interp.resolve("python3.13t-fake")
    assert info["executable"] == str(fake) and info["gil"] is False
    from harness import interpreters
    runs = [{"spec": "alone_proc:python=python3.13t-fake", "config": {"spec_python": info}}]
    label = interpreters.interp_label("python3.13t-fake", runs)
    assert label.startswith("CPython 3.13.5") and "free-threaded: GIL off" in label
    with pytest.raises(interp.InterpError, match="interpreter not found"):
        interp.resolve("python3.13t-missing")
