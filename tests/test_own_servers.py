"""Revisions side by side (NAME@REV) and your own servers (loop:MODULE:ATTR,
'cmd:COMMAND {port}'): parsing, errors before anything runs, the right code running,
and the record carrying what ran.  Runs are under a second, against loopback."""

import os
import socket
import subprocess
import sys

import pytest

from harness import records, runner
from harness import servers as srv

ROOT = records.ROOT
PY = sys.executable
pytestmark = pytest.mark.timeout(120)


def _git_ok():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "HEAD^{commit}"],
                       capture_output=True, text=True)
    return r.returncode == 0 and subprocess.run(
        ["git", "-C", ROOT, "cat-file", "-e", "HEAD:variants/master/__init__.py"]).returncode == 0


needs_git = pytest.mark.skipif(not _git_ok(), reason="not a git checkout with variants/ committed")
needs_loadgen = pytest.mark.skipif(not os.access(os.path.join(srv.BUILD, "loadgen"), os.X_OK),
                                   reason="build/loadgen not built")


def _harness(args, results):
    env = dict(os.environ, EVENTS_RESULTS_DIR=str(results), PYTHONPATH=ROOT)
    return subprocess.run([PY, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def _echo(server, size=100):
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"x" * size)
        got = b""
        while len(got) < size:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


@pytest.mark.parametrize("spec, words", [
    ("master@no-such-rev-xyz", "not a commit"),
    ("raw_epoll@HEAD", "only the Events variants"),
    ("master@", "give a git revision"),
    ("cmd:./server-without-placeholder", "{port} placeholder"),
    ("loop:not a module", "loop:MODULE:ATTR"),
])
def test_bad_specs_are_one_error_line_exit_2_and_write_nothing(tmp_path, spec, words):
    results = tmp_path / "results"
    r = _harness(["compare", "--servers", f"raw_epoll {spec}", "--repeat", "1", "--duration", "1"],
                 results)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]
    assert "Traceback" not in r.stderr and not results.exists()


def test_loop_and_server_cmd_options_check_their_specs(tmp_path):
    results = tmp_path / "results"
    r = _harness(["compare", "--loop", "not a module", "--repeat", "1"], results)
    assert r.returncode == 2 and r.stderr.startswith("error:") and not results.exists()
    r = _harness(["compare", "--server-cmd", "./srv --no-port", "--repeat", "1"], results)
    assert r.returncode == 2 and "{port}" in r.stderr and not results.exists()


@needs_git
def test_revision_spec_resolves_once_and_keeps_its_text():
    spec = srv.parse_spec("master@HEAD:diet")
    assert spec.text == "master@HEAD:diet" and spec.name == "master" and spec.rev == "HEAD"
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert spec.commit == head and srv.parse_spec("master").commit is None
    assert srv.parse_spec("master@HEAD").text != srv.parse_spec("master").text


@needs_git
def test_revision_runs_the_library_from_git_and_the_plain_name_the_working_tree():
    with srv.start("master@HEAD") as old, srv.start("master") as new:
        lib_old, lib_new = old.ready["library"], new.ready["library"]
        assert _echo(old) == b"x" * 100 and _echo(new) == b"x" * 100
    commit = srv.parse_spec("master@HEAD").commit
    assert lib_old == os.path.join(srv.BUILD, "rev", commit, "variants")
    assert lib_new == os.path.join(ROOT, "variants")
    # the extracted tree is the commit's, untouched
    assert os.path.isfile(os.path.join(srv.BUILD, "rev", commit, "variants", "master", "events.py"))


@needs_git
@needs_loadgen
def test_a_batch_records_the_resolved_commit(tmp_path):
    import io
    out = io.StringIO()
    recs = runner.run_batch(["master@HEAD", "master"], repeat=1, duration=0.5, warmup=0,
                            concurrency=4, out=out, results_dir=str(tmp_path))
    by = {r["spec"]: r for r in recs}
    assert by["master@HEAD"]["config"]["variant_commit"] == srv.parse_spec("master@HEAD").commit
    assert by["master"]["config"]["variant_commit"] is None
    table = out.getvalue()
    assert "master@HEAD" in table and "Revisions: master@HEAD = " in table


def test_own_loop_module_is_served_by_the_shared_echo_app():
    spec = srv.parse_spec("loop:examples.tinyloop:EventLoop,diet")
    assert dict(spec.options) == {"diet": ("defer_accept", "cork", "dontwait", "lazy_watch"),
                                  "loop": "examples.tinyloop:EventLoop"}
    assert "--loop" in srv.command(spec)
    with srv.start(spec) as s:
        assert s.ready["server"] == "loop" and _echo(s) == b"x" * 100
    stats = s.stats
    assert stats and stats["served"] == 1
    with pytest.raises(srv.ServerError, match="no 'Nope'"):
        srv.check_available(srv.parse_spec("loop:examples.tinyloop:Nope"))


def test_own_command_server_with_a_port_placeholder():
    binary = os.path.join(srv.BUILD, "c_epoll")
    if not os.access(binary, os.X_OK):
        pytest.skip("build/c_epoll not built")
    spec = srv.parse_spec(f"cmd:{binary} --port {{port}} --size {{size}}")
    assert spec.name == "cmd" and spec.text.startswith("cmd:")
    assert runner.apply_options([spec.text], diet=True) == [spec]   # no options to add
    with srv.start(spec) as s:
        assert _echo(s) == b"x" * 100 and str(s.port) in " ".join(s.argv)
    with pytest.raises(srv.ServerError, match="not an executable"):
        srv.check_available(srv.parse_spec("cmd:/nonexistent/server {port}"))
