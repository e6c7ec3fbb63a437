"""Shared pytest fixtures.

``server``: a factory that starts an echo server through ``harness.servers.start``
(the same path the runner uses) and stops it at teardown, by its PID only::

    def test_something(server):
        srv = server("raw_epoll", idle_timeout=0.5)   # any start() keyword
        ... connect to ("127.0.0.1", srv.port) ...
        stats = srv.stop()                              # optional: teardown stops the rest

A server spec that cannot run here (C binary not built, uvloop missing) skips the
test with the reason ``check_available`` gives.  ``server_specs()`` lists every
server of the table, for parametrizing.
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from harness import servers  # noqa: E402

# The runner's noise guard samples the machine for a second before and after each batch;
# tests run many tiny batches, so they sample briefly (subprocesses inherit this).
os.environ.setdefault("EVENTS_NOISE_SAMPLE_S", "0.1")


def server_specs():
    """Every server name in the table (tests skip the ones not available here)."""
    return list(servers.SERVERS)


LOADGEN = os.path.join(ROOT, "build", "loadgen")


def need_server(spec: str) -> None:
    """Skip the test when ``spec`` cannot run here or the C load client is not built."""
    try:
        servers.check_available(servers.parse_spec(spec))
    except servers.ServerError as e:
        pytest.skip(str(e))
    if not os.access(LOADGEN, os.X_OK):
        pytest.skip("build/loadgen is not built (make build)")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (/proc/PID/stat's state)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def server():
    started = []

    def start(spec, **kwargs):
        spec = servers.parse_spec(spec) if isinstance(spec, str) else spec
        try:
            servers.check_available(spec, kwargs.get("python"))
        except servers.ServerError as e:
            pytest.skip(str(e))
        kwargs.setdefault("ready_timeout", 15.0)
        proc = servers.start(spec, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=5.0)      # idempotent; SIGTERM to our own PID, SIGKILL after 5 s
