"""Every bad input is refused at once: one line starting with ``error:`` that says what was
wrong, exit status 2, no traceback, no server started and nothing written under results/.

One table, walked as a new user would: each subcommand of ``python -m harness`` (and so of
``events-bench``), then the make variables. The checks run before any server starts, so a
case that got through would try to run a benchmark: the results folder of the case (an
empty temporary one) would then hold a run file, which the test catches.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (argv of `python -m harness`, a fragment the message must contain)
CASES = [
    # no servers, unknown servers and spec values
    (["compare", "--servers", ""], "no servers given"),
    (["compare", "--servers", "   "], "no servers given"),
    (["compare", "--servers", "raw_epoll bogus"], "unknown server or variant 'bogus'"),
    (["bench", "--variant", "nope"], "unknown server or variant 'nope'"),
    (["bench", "--variant", "asyncio"], "is not a variant"),
    (["bench", "--variant", "master:poll_delay=soon"], "master: poll_delay=soon is not a number of seconds"),
    (["bench", "--variant", "master:poll_delay=nan"], "master: poll_delay=nan must be a finite number of seconds >= 0"),
    (["bench", "--variant", "master:backend=kqueue"], "master: backend=kqueue is not one of epoll, poll"),
    (["bench", "--variant", "master:colour=red"], "has no option 'colour'"),
    (["compare", "--servers", "raw_epoll master raw_epoll"], "raw_epoll named twice"),
    (["compare", "--servers", "mul_thread:workers=0"], "mul_thread: workers=0 must be an integer >= 1"),
    (["compare", "--servers", "mul_thread:pool=fast"], "mul_thread: pool=fast is not one of faithful, oneshot"),
    (["compare", "--servers", "raw_epoll:backlog=inf"], "raw_epoll: backlog=inf is not an integer"),
    (["compare", "--servers", "mul_thread:pool=bogus"],
     "error: mul_thread: pool=bogus is not one of faithful, oneshot"),
    (["compare", "--servers", "mul_thread:workers=abc"], "mul_thread: workers=abc is not an integer"),
    (["compare", "--servers", "master:poll_delay=-1"], "master: poll_delay=-1 must be a finite number"),
    # the ablation's steps (variants/ablation): an unknown step, a missing value
    (["compare", "--servers", "literal:steps=adapter+bogus"],
     "literal: steps=adapter+bogus names an unknown step 'bogus'; the steps: switch, adapter, locals"),
    (["compare", "--servers", "literal:steps="], "option 'steps' of 'literal' needs a value"),
    # where a server runs (issue 25): an interpreter that is not there, compiled where not built in
    (["compare", "--servers", "raw_epoll:python=no-such-python"],
     "raw_epoll: python=no-such-python interpreter not found"),
    (["compare", "--servers", "raw_epoll:python="], "option 'python' of 'raw_epoll' needs a value"),
    (["compare", "--servers", "asyncio:compiled"], "server 'asyncio' has no option 'compiled'"),
    (["compare", "--servers", "master@HEAD:compiled"], "does not take @REV"),
    (["ablation", "--repeat", "0"], "--repeat: '0' must be an integer >= 1"),
    (["ablation", "--link", "garbage"], "unknown link 'garbage'"),
    # diet levers: unknown, unsupported (with the reason), joined with ',' instead of '+'
    (["compare", "--servers", "raw_epoll:diet=bogus"], "raw_epoll: unknown diet lever 'bogus'"),
    (["compare", "--servers", "asyncio:diet=lazy_watch"],
     "asyncio: diet lever lazy_watch is not available here (not possible: asyncio registers"),
    (["compare", "--servers", "c_epoll:diet=dontwait"], "(built in: accept4(SOCK_NONBLOCK)"),
    (["compare", "--servers", "raw_epoll:diet=cork,defer_accept"], "join diet levers with '+'"),
    (["compare", "--servers", "raw_epoll:no_cork"], "only applies with diet"),
    (["compare", "--servers", "raw_epoll", "--diet=bogus"], "unknown diet lever bogus"),
    (["compare", "--servers", "asyncio uvloop", "--diet=lazy_watch"], "fits none of the servers"),
    # numbers: finite and in range
    (["bench", "--duration", "nan"], "--duration: 'nan' must be a finite number > 0"),
    (["bench", "--duration", "inf"], "--duration: 'inf' must be a finite number > 0"),
    (["bench", "--duration", "0"], "--duration: '0' must be a finite number > 0"),
    (["bench", "--duration", "1e9"], "--duration 1,000,000,000 is out of range"),
    (["bench", "--rate", "nan"], "--rate: 'nan' must be a finite number > 0"),
    (["bench", "--rate=-5k"], "--rate: '-5k' must be a finite number > 0"),
    (["compare", "--rate", "inf"], "--rate: 'inf' must be a finite number > 0"),
    (["bench", "--warmup", "nan"], "--warmup: 'nan' must be a finite number of seconds >= 0"),
    (["bench", "--idle-timeout", "inf"], "--idle-timeout: 'inf' must be a finite number of seconds >= 0"),
    (["bench", "--repeat", "0"], "--repeat: '0' must be an integer >= 1"),
    (["bench", "--repeat", "two"], "--repeat: 'two' is not an integer"),
    (["bench", "--concurrency", "2000000"], "--concurrency 2,000,000 is out of range: use 1 to 1,000,000"),
    (["bench", "--size", "0"], "--size: '0' must be an integer >= 1"),
    (["bench", "--size", "100000000"], "--size 100,000,000 is out of range"),
    (["bench", "--timeout-ms", "0"], "--timeout-ms: '0' must be an integer >= 1"),
    # links and delays
    (["bench", "--link", "garbage"], "unknown link 'garbage'"),
    (["bench", "--link", "100mbps"], "unknown link '100mbps'"),
    (["bench", "--link", "0mbit"], "out of range"),
    (["bench", "--delay", "soon"], "bad delay 'soon'"),
    (["bench", "--link", "100mbit", "--delay", "soon"], "bad delay 'soon'"),
    (["bench", "--delay", "1ms"], "needs an emulated link"),
    (["bench", "--loss", "lots"], "bad loss 'lots'"),
    (["bench", "--loss", "1%"], "need an emulated link"),
    (["bench", "--link", "100mbit", "--loss", "150%"], "--loss"),
    # options that do not apply
    (["soak", "--rate", "100"], "--rate/RATE does not apply to soak"),
    (["soak", "--repeat", "3"], "--repeat/REPEAT does not apply to soak"),
    (["sweep", "--rate", "5000"], "not --rate"),
    (["sweep", "--rates", "nan"], "--rates: 'nan' must be a finite number > 0"),
    (["sweep", "--rates", "1k,,x"], "--rates: 'x' is not a number"),
    (["sweep", "--rates", ","], "--rates: no rates given"),
    (["sweep", "--servers", ""], "no servers given"),
    (["sweep", "--variant", "master", "--servers", "raw_epoll"], "not both"),
    (["bench", "--pool", "oneshot"], "--pool/POOL applies to mul_thread only"),
    (["bench", "--pool", "fast"], "invalid choice: 'fast'"),
    (["bench", "--servers", "master"], "unrecognized arguments"),
    (["compare", "--variant", "master"], "unrecognized arguments"),
    (["bench", "--results-dir", ""], "is not a folder"),
    (["bench", "--results-dir", "/dev/null"], "is not a folder"),
    # foreground server and client
    (["serve", "nope"], "unknown server or variant 'nope'"),
    (["serve", "master", "--port", "70000"], "--port 70000 is out of range"),
    (["serve", "master", "--host", "999.1.1.1"], "--host '999.1.1.1': cannot resolve it"),
    (["load", "--port", "0"], "--port 0 is out of range: use 1 to 65535"),
    (["load", "--host", "999.1.1.1", "--port", "9"], "cannot resolve it"),
    (["load", "--port", "9", "--count", "0"], "--count: '0' must be an integer >= 1"),
    (["load", "--port", "9", "--src-addrs", "300"], "--src-addrs 300 is out of range"),
    (["load", "--port", "9", "--duration", "5", "--count", "5"], "not allowed with argument"),
    # the modules' own subcommands
    (["report", "--results-dir", "/nonexistent-events-results"], "/nonexistent-events-results does not exist"),
    (["report", "--bogus"], "unrecognized arguments: --bogus"),
    (["reproduce", "--duration", "nan"], "--duration: 'nan' must be a finite number > 0"),
    (["reproduce", "--repeat", "0"], "--repeat: '0' must be an integer >= 1"),
    (["reproduce", "--concurrency", "0"], "--concurrency: '0' must be an integer >= 1"),
    (["profile", "--variant", "nope"], "unknown server or variant 'nope'"),
    (["profile", "--connections", "0"], "--connections: '0' must be an integer >= 1"),
    (["syscalls", "--variant", "nope"], "unknown server or variant 'nope'"),
    (["syscalls", "--size", "-1"], "--size: '-1' must be an integer >= 1"),
    (["check-docs", "--bogus"], "unrecognized arguments: --bogus"),
    (["check-docs", "no-such-document.md"], "no such document: no-such-document.md"),
    (["twohost-serve", "nope"], "unknown server or variant 'nope'"),
    (["twohost-serve", "master", "--port", "70000"], "port 70000 out of range"),
    (["twohost-serve", "master", "--idle-timeout", "nan"],
     "--idle-timeout: 'nan' must be a finite number of seconds >= 0"),
    (["twohost-load", "--host", "192.0.2.1", "--duration", "nan"], "--duration: 'nan' must be a finite number > 0"),
    (["twohost-load", "--host", "192.0.2.1", "--rate", "inf"], "--rate: 'inf' must be a finite number > 0"),
    (["twohost-load", "--host", "192.0.2.1", "--concurrency", "2000000"], "out of range"),
    (["twohost-load", "--host", "192.0.2.1", "--delay", "1ms"], "does not apply to a two-host load run"),
    (["twohost-load"], "needs the server machine's address"),
    (["twohost-load", "--host", "999.1.1.1"], "cannot resolve it"),
    (["twohost-serve", "master", "--host", "999.1.1.1", "--port", "0"], "cannot resolve it"),
    # sweep-concurrency's levels (issue 28)
    (["sweep-concurrency", "--levels", "0"], "0 connections in flight: a level must be at least 1"),
    (["sweep-concurrency", "--levels", "-4"], "-4 connections in flight: a level must be at least 1"),
    (["sweep-concurrency", "--levels", "2.5"], "'2.5' is not a whole number"),
    (["sweep-concurrency", "--levels", "1,8,8"], "8 given twice"),
    (["sweep-concurrency", "--levels", "1 8 1"], "1 given twice"),
    (["sweep-concurrency", "--levels", " "], "no levels given"),
    (["sweep-concurrency", "--levels", "2000000"], "2,000,000 is out of range"),
    (["sweep-concurrency", "--concurrency", "8"], "not --concurrency"),
    (["sweep-concurrency", "--servers", "raw_epoll nope"], "unknown server or variant 'nope'"),
    (["sweep-concurrency", "--servers", "master master"], "master named twice"),
    (["sweep-concurrency", "--repeat", "0"], "--repeat: '0' must be an integer >= 1"),
    (["sweep-concurrency", "--from-batch", "bnope"], "no recorded runs of batch 'bnope'"),
    # N event loops behind SO_REUSEPORT (issue 26): WORKERS, WORKER_MODE, the budget
    (["compare", "--servers", "raw_epoll", "--server-workers", "0"], "--server-workers: '0' must be an integer >= 1"),
    (["compare", "--servers", "c_epoll asyncio", "--server-workers", "2", "--worker-mode", "threads"],
     "c_epoll has no threads mode"),
    (["compare", "--servers", "raw_epoll", "--server-workers", "200"], "200 workers x 0.4 core = 80 cores: more than"),
    (["compare", "--servers", "raw_epoll:loops=0"], "raw_epoll: loops=0 must be an integer >= 1"),
    (["compare", "--servers", "c_epoll:loop_mode=threads"], "server 'c_epoll' has no option 'loop_mode'"),
    (["compare", "--server-cmd", "./srv {port}", "--server-workers", "2"], "cannot be started as N workers"),
    (["scale", "--workers", "0"], "0 workers: a count must be at least 1"),
    (["scale", "--workers", "1 x"], "'x' is not a whole number of workers"),
    (["scale", "--workers", "1,2,2"], "2 given twice"),
    (["scale", "--workers", "1 16", "--budget", "total", "--server-cpu", "0.4"],
     "a worker's budget must be at least 0.05 core"),
    (["scale", "--workers", "1 200"], "more than the"),
    (["scale", "--variant", "c_epoll", "--worker-mode", "threads"], "c_epoll has no threads mode"),
    (["scale", "--budget", "total", "--server-cpu", "off"], "SCALE_CPU=total splits SERVER_CPU"),
    (["scale", "--variant", "master", "--servers", "raw_epoll"], "not both"),
    (["scale", "--variant", "raw_epoll:loops=2"], "without loops="),
    (["scale", "--server-workers", "2"], "takes its worker counts as --workers"),
    # the entry point itself
    ([], "no subcommand given"),
    (["nonsense"], "invalid choice: 'nonsense'"),
]


def _run(argv, results, timeout=30):
    env = dict(os.environ, EVENTS_RESULTS_DIR=str(results))
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    env.pop("MFLAGS", None)
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _assert_refused(r, fragment, results):
    err_lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert err_lines and err_lines[0].startswith("error:"), r.stderr
    assert fragment in err_lines[0], (fragment, err_lines[0])
    assert not results.exists() or not any(results.rglob("*")), "something was written under results/"


@pytest.fixture(scope="module")
def repo_runs():
    """The repository's own results/runs must not change while bad inputs are refused."""
    runs = os.path.join(ROOT, "results", "runs")
    before = sorted(os.listdir(runs)) if os.path.isdir(runs) else []
    yield
    after = sorted(os.listdir(runs)) if os.path.isdir(runs) else []
    assert after == before


@pytest.mark.parametrize("argv,fragment", CASES, ids=[" ".join(a) or "(none)" for a, _ in CASES])
def test_bad_input_is_refused(argv, fragment, tmp_path, repo_runs):
    results = tmp_path / "results"
    r = _run([sys.executable, "-m", "harness", *argv], results)
    # one `error:` line (argparse's own errors and ours alike); `python -m harness` alone
    # also prints the help on stdout
    err_lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1, r.stderr
    _assert_refused(r, fragment, results)


# make variables: a knob a target does not use, a DIET that is not 1, and the knobs' values
# (passed through to the harness, which refuses them as above).
MAKE_CASES = [
    (["bench", "HOST=example"], "make bench does not use HOST"),
    (["report", "VARIANT=master"], "make report does not use VARIANT"),
    (["test", "DURATION=5"], "make test does not use DURATION"),
    (["lint", "SERVERS=master"], "make lint does not use SERVERS"),
    (["profile", "DURATION=5"], "make profile does not use DURATION"),
    (["syscalls", "REPEAT=2"], "make syscalls does not use REPEAT"),
    (["twohost-serve", "RATE=5"], "make twohost-serve does not use RATE"),
    (["serve", "RATE=5"], "make serve does not use RATE"),          # the old name, still checked
    (["reproduce", "LINK=100mbit"], "make reproduce does not use LINK"),
    (["ablation", "VARIANT=master"], "make ablation does not use VARIANT"),
    (["ablation-icount", "LINK=100mbit"], "make ablation-icount does not use LINK"),
    (["sweep-concurrency", "VARIANT=master"], "make sweep-concurrency does not use VARIANT"),
    (["bench", "DIET=0"], "DIET=0: unknown diet lever 0; use DIET=1"),
    (["compare", "DIET=yes"], "unknown diet lever yes"),
    (["compare", "DIET=cork+nope"], "unknown diet lever nope"),
    (["compare", "SCALE_CPU=total"], "make compare does not use SCALE_CPU"),
    (["report", "WORKERS=2"], "make report does not use WORKERS"),
]


@pytest.mark.parametrize("argv,fragment", MAKE_CASES, ids=[" ".join(a) for a, _ in MAKE_CASES])
def test_make_variable_not_used_is_refused(argv, fragment, tmp_path, repo_runs):
    results = tmp_path / "results"
    # VENV points nowhere: a case that got past the check would start building a virtualenv
    r = _run(["make", "--no-print-directory", f"VENV={tmp_path / 'no-venv'}", *argv], results)
    _assert_refused(r, fragment, results)
    assert not (tmp_path / "no-venv").exists()


def test_make_passes_an_empty_servers_list_to_the_harness():
    """`make compare SERVERS=` is `compare --servers ""` (refused), not the default comparison."""
    r = subprocess.run(["make", "-n", "--no-print-directory", "compare", "SERVERS="], cwd=ROOT,
                       capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")})
    assert r.returncode == 0, r.stderr
    assert '-m harness compare --servers ""' in r.stdout
