"""The echo protocol, the same for every server in the table (docs/architecture.md §2).

Plain Python socket clients, every socket with a timeout.  Servers that cannot run
here (a C binary not built, uvloop missing) are skipped with the reason.
"""

import os
import socket
import subprocess
import time

import pytest

from conftest import ROOT, server_specs
from harness import servers

TIMEOUT = 5.0
ALL = server_specs()
PYTHON_SERVERS = [n for n, s in servers.SERVERS.items() if s.kind == "python"]
STATS_KEYS = {"accepted", "served", "errors", "idle_timeouts", "emfile", "cpu_user_s", "cpu_sys_s"}


# --------------------------------------------------------------------------- client helpers

def connect(port, timeout=TIMEOUT):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_eof(sock, limit=1 << 24):
    """Everything the server sends until it closes; a reset after data ends it too."""
    chunks, total = [], 0
    while total < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def payload(i, size):
    """A per-connection pattern, so a mixed-up echo is detected."""
    seed = f"{i}:".encode()
    return (seed * (size // len(seed) + 1))[:size]


def exchange(port, data, timeout=TIMEOUT):
    with connect(port, timeout) as s:
        s.sendall(data)
        return read_until_eof(s)


def reset(sock):
    """Close with RST instead of FIN (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def settle(port, size=100, n=3):
    """Let the server catch up with earlier events: a few full exchanges, a short pause."""
    time.sleep(0.2)
    for i in range(n):
        assert exchange(port, payload(i, size)) == payload(i, size)
    time.sleep(0.1)
    return n


def assert_conserved(stats):
    """Every accepted connection was served, dropped or timed out: none vanished."""
    assert stats["accepted"] == stats["served"] + stats["errors"] + stats["idle_timeouts"], stats


# --------------------------------------------------------------------------- protocol

@pytest.mark.parametrize("name", ALL)
def test_echo_many_connections(server, name):
    srv = server(name)
    n_seq, n_par = 150, 40
    for i in range(n_seq):
        assert exchange(srv.port, payload(i, 100)) == payload(i, 100)
    # Many in flight at once: all connect, all send, then all read.
    socks = [connect(srv.port) for _ in range(n_par)]
    try:
        for i, s in enumerate(socks):
            s.sendall(payload(1000 + i, 100))
        for i, s in enumerate(socks):
            assert read_until_eof(s) == payload(1000 + i, 100)
    finally:
        for s in socks:
            s.close()
    stats = srv.stop()
    assert srv.proc.returncode == 0
    assert stats["served"] == n_seq + n_par
    assert stats["accepted"] == n_seq + n_par
    assert stats["errors"] == 0 and stats["idle_timeouts"] == 0 and stats["emfile"] == 0


@pytest.mark.parametrize("size", [1, 7, 4096, 300_000])
@pytest.mark.parametrize("name", ALL)
def test_sizes(server, name, size):
    srv = server(name, size=size)
    for i in range(3):
        got = exchange(srv.port, payload(i, size))
        assert len(got) == size and got == payload(i, size)
    # Sent in small pieces, slowly: the server must collect them.
    with connect(srv.port) as s:
        data = payload(9, size)
        step = max(1, size // 3)
        for off in range(0, size, step):
            s.sendall(data[off:off + step])
            time.sleep(0.02)
        assert read_until_eof(s) == data
    stats = srv.stop()
    assert stats["served"] == 4 and stats["errors"] == 0


@pytest.mark.parametrize("name", ALL)
def test_surplus_bytes_discarded(server, name):
    srv = server(name)
    data = payload(1, 100)
    assert exchange(srv.port, data + b"S" * 50) == data            # in the same write
    with connect(srv.port) as s:                                   # in a later write
        s.sendall(data)
        s.sendall(b"T" * 30)
        assert read_until_eof(s) == data
    with connect(srv.port) as s:                                   # much more than N
        try:
            s.sendall(data + b"U" * 200_000)
        except (BrokenPipeError, ConnectionResetError):
            pass                                                   # the server closed: fine
        assert read_until_eof(s)[:100] == data
    assert exchange(srv.port, data) == data
    stats = srv.stop()
    assert stats["served"] == 4 and stats["errors"] == 0


@pytest.mark.parametrize("name", ALL)
def test_early_close_and_reset_survived(server, name):
    srv = server(name)
    s = connect(srv.port)                       # part of a request, then FIN
    s.sendall(b"x" * 10)
    s.close()
    s = connect(srv.port)                       # part of a request, then RST
    s.sendall(b"y" * 10)
    reset(s)
    s = connect(srv.port)                       # nothing at all, then FIN
    s.close()
    s = connect(srv.port)                       # nothing at all, then RST
    reset(s)
    good = settle(srv.port)
    stats = srv.stop()
    assert srv.proc.returncode == 0
    assert stats["served"] == good
    assert 1 <= stats["errors"] <= 4            # an RST before accept may never be seen
    assert_conserved(stats)


@pytest.mark.parametrize("name", ALL)
def test_ready_and_stats_lines(server, name):
    srv = server(name)
    assert srv.ready["server"] == name
    assert srv.ready["host"] == "127.0.0.1"
    assert srv.ready["pid"] == srv.proc.pid     # the server exec'd: no wrapper process
    assert 0 < srv.ready["port"] < 65536
    assert exchange(srv.port, payload(0, 100)) == payload(0, 100)
    stats = srv.stop()
    assert srv.proc.returncode == 0
    assert set(stats) >= STATS_KEYS
    for key in ("accepted", "served", "errors", "idle_timeouts", "emfile"):
        assert isinstance(stats[key], int)
    assert stats["cpu_user_s"] >= 0 and stats["cpu_sys_s"] >= 0
    assert stats["accepted"] == stats["served"] == 1


@pytest.mark.parametrize("name", ALL)
def test_diet_mode_echo(server, name):
    srv = server(servers.parse_spec(name + ":diet"))
    assert "--diet" in srv.argv
    n = 100
    for i in range(n):
        assert exchange(srv.port, payload(i, 100)) == payload(i, 100)
    with connect(srv.port) as s:                # the slow path: request in two parts
        s.sendall(b"a" * 40)
        time.sleep(0.05)
        s.sendall(b"b" * 60)
        assert read_until_eof(s) == b"a" * 40 + b"b" * 60
    s = connect(srv.port)                       # early close in diet mode
    s.sendall(b"z" * 5)
    reset(s)
    good = settle(srv.port)
    stats = srv.stop()
    assert stats["served"] == n + 1 + good
    assert_conserved(stats)


@pytest.mark.parametrize("name", ALL)
def test_diet_large_size(server, name):
    """Diet with a reply larger than the socket buffer: the send would block and the
    connection must be registered for writable."""
    size = 2_000_000
    srv = server(servers.parse_spec(name + ":diet"), size=size)
    with connect(srv.port) as s:
        s.sendall(payload(3, size))
        time.sleep(0.1)                         # let the server fill the send buffer
        assert read_until_eof(s) == payload(3, size)
    stats = srv.stop()
    assert stats["served"] == 1 and stats["errors"] == 0


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("name", ALL)
def test_port_in_use(name):
    spec = servers.parse_spec(name)
    try:
        servers.check_available(spec)
    except servers.ServerError as e:
        pytest.skip(str(e))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        with pytest.raises(servers.ServerError) as info:
            servers.start(spec, port=port, ready_timeout=10)
    text = str(info.value)
    assert "exit code 1" in text
    assert f"port {port} on 127.0.0.1 is in use" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("name", PYTHON_SERVERS)
@pytest.mark.parametrize("bad", [["--size", "abc"], ["--size", "0"], ["--port", "70000"],
                                 ["--idle-timeout", "-1"], ["--no-such-option"]])
def test_bad_option_is_usage_error(name, bad):
    spec = servers.parse_spec(name)
    argv = servers.command(spec, extra=bad)
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    assert "usage:" in r.stderr and "error:" in r.stderr
    assert "Traceback" not in r.stderr
    assert "READY" not in r.stdout


def test_unknown_spec_lists_names():
    with pytest.raises(servers.ServerError) as info:
        servers.parse_spec("no_such_server")
    for name in servers.SERVERS:
        assert name in str(info.value)
    with pytest.raises(servers.ServerError) as info:
        servers.start("no_such_server")
    assert "raw_epoll" in str(info.value)


def test_spec_options_reach_the_command():
    assert servers.parse_spec("raw_epoll:diet").text == "raw_epoll:diet"
    argv = servers.command("mul_thread:pool=oneshot,workers=2", port=0)
    assert argv[argv.index("--pool") + 1] == "oneshot"
    assert argv[argv.index("--workers") + 1] == "2"
    argv = servers.command("master:poll_delay=0.1,backend=poll")
    assert argv[argv.index("--poll-delay") + 1] == "0.1"
    assert argv[argv.index("--backend") + 1] == "poll"
    assert "--diet" in servers.command("alone_proc:diet")
    with pytest.raises(servers.ServerError, match="no option 'workers'"):
        servers.parse_spec("master:workers=2")
    with pytest.raises(servers.ServerError, match="needs a value"):
        servers.parse_spec("master:poll_delay")
    # no_cork: a spec alias for the diet without cork, folded into the levers
    assert "--diet=defer_accept,dontwait,lazy_watch" in servers.command("master:diet,no_cork")
    assert servers.parse_spec("raw_epoll:diet,no_cork").text == "raw_epoll:diet,no_cork"
    with pytest.raises(servers.ServerError, match="only applies with diet"):
        servers.parse_spec("c_epoll:no_cork")
    # diet=L1+L2: canonical order; the full set is written "diet"
    assert servers.parse_spec("raw_epoll:diet=cork+defer_accept").text == "raw_epoll:diet=defer_accept+cork"
    assert servers.parse_spec("asyncio:diet=cork+defer_accept").text == "asyncio:diet"
    assert servers.parse_spec("c_epoll:diet").levers == ("defer_accept", "cork", "lazy_watch")


def test_declarations_and_server_parsers_agree():
    """Every declared option of every Python server: its parser takes the declared
    default (and the spec check takes it as a value); every server takes --diet."""
    from harness.servers import common, custom_loop
    from harness.servers.options import format_value
    for name, server in {**servers.SERVERS, **servers.OWN_SERVERS}.items():
        if server.kind != "python":
            continue
        extra = ["--loop", "examples.tinyloop:EventLoop"] if name == "loop" else []
        add = custom_loop.add_options if name == "loop" else None
        for opt in servers.declared_options(server):
            if opt.flag:
                args = common.parse_args(name, [opt.arg] + extra, add)
                continue
            default = opt.default if opt.default is not None else (opt.allowed() or (None,))[0]
            if default is None:
                continue
            args = common.parse_args(name, [opt.arg, format_value(default)] + extra, add)
            assert getattr(args, opt.name) == default, (name, opt.name)
            head = "loop:examples.tinyloop:EventLoop," if name == "loop" else f"{name}:"
            assert servers.parse_spec(head + f"{opt.name}={format_value(default)}").get(opt.name) == default
        args = common.parse_args(name, extra, add)
        assert args.diet == ()
        assert common.parse_args(name, ["--diet"] + extra, add).diet == server.diet.supported


@pytest.mark.parametrize("name", PYTHON_SERVERS)
@pytest.mark.parametrize("diet", ["--diet", "--diet=cork"])
def test_stats_report_diet_levers(name, diet):
    spec = servers.parse_spec(name)
    try:
        servers.check_available(spec)
    except servers.ServerError as e:
        pytest.skip(str(e))
    srv = servers.start(spec, extra=[diet], ready_timeout=15)
    try:
        assert exchange(srv.port, payload(1, 100)) == payload(1, 100)
    finally:
        stats = srv.stop()
    want = list(spec.server.diet.supported) if diet == "--diet" else ["cork"]
    assert stats["diet_levers"] == want
    if diet == "--diet":
        plain = servers.start(spec, ready_timeout=15)
        try:
            assert exchange(plain.port, payload(2, 100)) == payload(2, 100)
        finally:
            stats = plain.stop()
        assert stats["diet_levers"] == []


@pytest.mark.parametrize("spec", ["master:backend=poll", "alone_proc:backend=select",
                                  "master:poll_delay=0.01", "mul_thread:pool=oneshot,workers=2",
                                  "mul_thread:workers=1", "raw_epoll:idle_timeout=0",
                                  "raw_epoll:diet,no_cork", "alone_proc:diet,no_cork"])
def test_server_options_work(server, spec):
    srv = server(spec)
    for i in range(20):
        assert exchange(srv.port, payload(i, 100)) == payload(i, 100)
    stats = srv.stop()
    assert stats["served"] == 20 and stats["errors"] == 0


@pytest.mark.parametrize("bad", ["master:backend=kqueue_nope", "mul_thread:pool=nope",
                                 "mul_thread:workers=0", "master:poll_delay=-1"])
def test_bad_server_option_fails_clearly(bad):
    # refused when the spec is parsed, before any server process starts
    with pytest.raises(servers.ServerError) as info:
        servers.start(bad, ready_timeout=10)
    text = str(info.value)
    assert "=" in text and "exit code" not in text and "Traceback" not in text


def _server_hashseed(proc_pid: int) -> str | None:
    with open(f"/proc/{proc_pid}/environ", "rb") as f:
        for item in f.read().split(b"\0"):
            if item.startswith(b"PYTHONHASHSEED="):
                return item.split(b"=", 1)[1].decode()
    return None


def test_each_python_server_run_gets_its_own_hash_seed(monkeypatch):
    """Setup randomization (docs/statistics.md): a fresh PYTHONHASHSEED per run, the
    one the process really has, recorded; a seed the user fixes is kept instead."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    seeds = []
    for _ in range(3):
        with servers.start("master") as s:
            assert s.hash_seed is not None and s.hash_seed.isdigit()
            assert _server_hashseed(s.pid) == s.hash_seed
            seeds.append(s.hash_seed)
    assert len(set(seeds)) == 3
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    with servers.start("master") as s:
        assert s.hash_seed is None
        assert _server_hashseed(s.pid) == "123"
