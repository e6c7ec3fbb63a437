"""The server table: every echo server the harness can run, by name.

A benchmark is a *spec*, ``NAME[:key=value,...]`` (``master:poll_delay=0.1``,
``mul_thread:pool=oneshot``, ``raw_epoll:diet``): a server from the table plus
configuration.  A new server is one entry in ``SERVERS``; a variant of a
benchmark is a spec, never a copied script (the vmbench/pyperformance rule).

A variant spec may name a git revision, ``NAME@REV`` (``master@HEAD~3``,
``alone_proc@v1``): that variant's *library* as it was at REV, served by today's echo
server and measured by today's harness.  REV is resolved once per process to a commit
(``git rev-parse --verify REV^{commit}``: a bad one is an error before anything runs);
``variants/`` of that commit is extracted with ``git archive`` into
``build/rev/<sha>/`` (cached, never modified) and the server runs with that tree first
on its import path, so ``import variants`` finds the old library and ``import harness``
today's.  The plain name runs the working tree, uncommitted edits included: "did my
edit help" is ``compare --servers "master@HEAD master"``.  The spec text keeps what the
user wrote (``master@HEAD`` is another row than ``master``); the run record carries the
resolved commit (``config.variant_commit``).

Servers that are not in the table are specs too (README, "Bring your own loop"):
``loop:MODULE:ATTR`` serves your loop class with the shared echo app
(custom_loop.py); ``cmd:COMMAND`` runs any echo-protocol server, ``{port}`` (and
``{host}``, ``{size}``) filled in, ready when its port accepts a connection.

``start()`` launches a server and waits for its READY line; ``ServerProcess.stop()``
sends SIGTERM and collects its STATS line.  The runner, the tests and the
profiler all launch servers through here, so every server is started the same way.
"""

from __future__ import annotations

import io
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass

from harness.servers import interp
from harness.servers import options as opts
from harness.servers.running import Running
from harness.servers.table import LoopConfig, Server, Table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")


class ServerError(Exception):
    """A clear, user-facing error about a server (unknown name, failed start...)."""


# Options every server accepts through a spec (declared in options.py, with their checks).
COMMON_OPTIONS = tuple(o.name for o in opts.COMMON)

_VARIANT_OPTS = (opts.BACKEND, opts.COMPILED, opts.COMPILED_APP)

SERVERS = Table({s.name: s for s in (
    Server("raw_epoll", "python", "harness.servers.raw_epoll",
           "Python select.epoll, no library: the classic register/modify/unregister pattern",
           options=(opts.COMPILED, opts.LOOP_MODE), reference=True,
           head_to_head=(("raw_epoll:diet", "raw_epoll:diet,no_cork", "TCP_CORK's share of the diet"),)),
    Server("master", "python", "harness.servers.master",
           "Events master: ae structure, read proc + write proc per fd",
           options=_VARIANT_OPTS + (opts.POLL_DELAY, opts.LOOP_MODE), variant=True),
    Server("mul_thread", "python", "harness.servers.mul_thread",
           "Events mul_thread: fired file events run on a thread pool",
           options=_VARIANT_OPTS + (opts.WORKERS, opts.POOL, opts.LOOP_MODE), variant=True,
           serial=(("workers", 1), ("pool", "faithful")),
           loop_configs=(LoopConfig("mul_thread_oneshot", kwargs=(("pool", "oneshot"),),
                                    asynchronous=True),),
           head_to_head=(("mul_thread:pool=oneshot", "mul_thread", "improved pool vs the study's pool"),)),
    Server("alone_proc", "python", "harness.servers.alone_proc",
           "Events alone_proc: one unified proc per fd",
           options=_VARIANT_OPTS + (opts.LOOP_MODE,), variant=True, unified=True,
           head_to_head=(("alone_proc", "uvloop", "unified proc vs uvloop"),
                         ("alone_proc", "master", "unified proc vs ae's read/write procs"))),
    Server("literal", "python", "harness.servers.literal",
           "the ae-literal design (a 2016 port of ae.c) and its steps: literal:steps=STEP+STEP",
           options=_VARIANT_OPTS + (opts.STEPS,)),
    Server("asyncio", "python", "harness.servers.asyncio_server",
           "asyncio Protocol on the default event loop", diet=opts.ASYNCIO_DIET,
           options=(opts.LOOP_MODE,), reference=True),
    Server("uvloop", "python", "harness.servers.uvloop_server",
           "asyncio Protocol on uvloop", requires=("uvloop",), diet=opts.UVLOOP_DIET,
           options=(opts.LOOP_MODE,), reference=True),
    Server("c_epoll", "c", "c_epoll",
           "single-threaded C epoll echo server: the ceiling on this machine", diet=opts.C_DIET,
           reference=True),
    Server("redis_ae", "c", "redis_ae",
           "C echo server on Redis ae (built by `make redis_ae`)", diet=opts.C_DIET),
)})

# Bring your own (README, "Bring your own loop"): not in the table (nothing iterates over
# them as "every server"); the rest of the spec names the code.
OWN_SERVERS: dict[str, Server] = {s.name: s for s in (
    Server("loop", "python", "harness.servers.custom_loop",
           "your ae-style loop on the shared echo app: loop:MODULE:ATTR[,option...]"),
    Server("cmd", "cmd", "",
           "any server command following the echo protocol: 'cmd:COMMAND {port}'",
           diet=opts.NO_DIET),
)}

VARIANTS = SERVERS.variants()



@dataclass(frozen=True)
class Spec:
    """A server spec, parsed once (``parse_spec``) and passed around as is.  ``options``
    holds ``(key, typed value)`` pairs sorted by key (``("workers", 2)``, ``("diet",
    ("defer_accept", "cork"))``, ``("loop", "MODULE:ATTR")``, ``("command", ...)``)."""
    text: str                 # as the user wrote it, normalised (records and tables use it)
    name: str
    options: tuple = ()
    rev: str | None = None    # NAME@REV: the git revision as written
    commit: str | None = None  # ... and the commit it resolved to

    @property
    def server(self) -> Server:
        return SERVERS.get(self.name) or OWN_SERVERS[self.name]

    def get(self, key: str, default=None):
        return dict(self.options).get(key, default)

    @property
    def levers(self) -> tuple:
        """The diet levers this spec applies, in canonical order (() without diet)."""
        levers = self.get("diet") or ()
        if self.get(opts.NO_CORK):
            levers = tuple(lv for lv in levers if lv != "cork")
        return levers

    def __str__(self) -> str:
        return self.text


def server_by_name(name: str) -> Server:
    return SERVERS.get(name) or OWN_SERVERS[name]


def valid_names() -> str:
    return ", ".join(SERVERS) + \
        " (or your own: loop:MODULE:ATTR, 'cmd:COMMAND {port}')"


def declared_options(server: Server) -> tuple:
    """The options (options.Option) a server takes: the common ones and its own."""
    return () if server.kind == "cmd" else opts.COMMON + server.options + \
        ((opts.PYTHON,) if server.kind == "python" else ())   # interp.py: where it runs


def accepted_options(server: Server) -> tuple:
    """The spec keys a server takes (a command server takes none: its command is its spec)."""
    names = tuple(o.name for o in declared_options(server))
    return names + ((opts.NO_CORK,) if "cork" in server.diet.supported and names else ())


def diet_text(server: Server, levers: tuple) -> str:
    """The spec item for these levers: ``diet`` for the server's full set, else diet=L1+L2."""
    return "diet" if tuple(levers) == server.diet.supported else "diet=" + "+".join(levers)


def parse_spec(text: str | Spec) -> Spec:
    """Parse ``NAME[@REV][:key=value,...]``, ``loop:MODULE:ATTR[,key=value...]`` or
    ``cmd:COMMAND`` (with a ``{port}`` placeholder); raise ServerError with the valid
    choices.  Every value is checked against its declaration (options.py), so a bad
    one is refused here, before any server starts.  NAME@REV is resolved to a commit
    here, so a bad revision fails at once.  A Spec is returned as it is (parsed once)."""
    if isinstance(text, Spec):
        return text
    text = text.strip()
    head, _, rest = text.partition(":")
    if head == "cmd":
        cmd = rest.strip()
        if "{port}" not in cmd:
            raise ServerError("a command server needs a {port} placeholder: 'cmd:./myserver --port {port}'")
        return Spec("cmd:" + cmd, "cmd", (("command", cmd),))
    target = None
    if head == "loop":
        target, _, rest = rest.partition(",")
        target = target.strip()
        mod, _, attr = target.partition(":")
        if not mod or not all(p.isidentifier() for p in mod.split(".")) \
                or (attr and not attr.isidentifier()):
            raise ServerError(f"loop:{target}: give the loop as loop:MODULE:ATTR "
                              f"(e.g. loop:examples.tinyloop:EventLoop)")
    name, at, rev = head.partition("@")
    if name not in SERVERS and target is None:
        raise ServerError(f"unknown server or variant {name!r}; valid names: {valid_names()}")
    server = server_by_name(name)
    commit = None
    if at:
        if not server.variant:
            raise ServerError(f"{head!r}: only the Events variants ({', '.join(VARIANTS)}) take @REV "
                              f"(their library code comes from git)")
        commit = resolve_revision(rev, name)
    allowed = accepted_options(server)
    declared = {o.name: o for o in declared_options(server)}
    options: dict = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        value = value.strip()
        if key not in allowed:
            hint = " (join diet levers with '+': diet=cork+defer_accept)" if key in opts.LEVERS else ""
            raise ServerError(f"server {name!r} has no option {key!r}; "
                              f"its options: {', '.join(allowed)}{hint}")
        try:
            if key == "diet":
                options[key] = _diet_levers(server, name, value if eq else "")
            elif key == opts.NO_CORK or declared[key].flag:
                if eq and value not in ("1", "true", "yes"):
                    raise ServerError(f"option {key!r} is a flag: write '{name}:{key}'")
                options[key] = True
            else:
                if not eq or value == "":
                    raise ServerError(f"option {key!r} of {name!r} needs a value: {key}=...")
                options[key] = declared[key].parse(value)
        except opts.OptionError as e:
            msg = str(e)
            raise ServerError(msg if msg.startswith(name + ":") else f"{name}: {msg}") from None
    if at and (options.get(opts.COMPILED.name) or options.get(opts.COMPILED_APP.name)):
        raise ServerError(f"{head}: compiled runs the working tree's library; it does not take @REV")
    if options.get(opts.NO_CORK):
        if "diet" not in options:
            raise ServerError(f"{name}: no_cork (an alias: the diet without cork) only applies "
                              f"with diet: write '{name}:diet,no_cork'")
        if not [lv for lv in options["diet"] if lv != "cork"]:
            raise ServerError(f"{name}: diet,no_cork leaves no diet lever")
    items = [k if v is True else diet_text(server, v) if k == "diet" else f"{k}={opts.format_value(v)}"
             for k, v in sorted(options.items())]
    if target is not None:
        options["loop"] = target
        items.insert(0, target)
    norm = head + (":" + ",".join(items) if items else "")
    return Spec(norm, name, tuple(sorted(options.items())), rev or None, commit)


def _diet_levers(server: Server, name: str, value: str) -> tuple:
    """The levers of a spec's ``diet`` (flag: every supported one) or ``diet=L1+L2``."""
    if not server.diet.supported:
        raise ServerError(f"{name}: takes no diet lever")
    if value in ("", "1", "true", "yes"):
        return server.diet.supported
    levers = server.diet.check(name, opts.split_levers(value))
    if not levers:
        raise ServerError(f"{name}: diet= names no lever; levers: {', '.join(server.diet.supported)}")
    return levers


def with_options(spec: Spec, items: list[str]) -> Spec:
    """``spec`` plus spec items (``diet``, ``pool=oneshot``), parsed and checked."""
    if not items:
        return spec
    sep = "," if spec.options else ":"
    return parse_spec(spec.text + sep + ",".join(items))


# --------------------------------------------------------------------------- revisions

_COMMITS: dict[str, str] = {}


def _git(*args, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, timeout=60, **kw)
    except (OSError, subprocess.SubprocessError) as e:
        raise ServerError(f"cannot run git for a NAME@REV spec: {e}") from None


def resolve_revision(rev: str, name: str) -> str:
    """The commit REV names (resolved once per process, so HEAD means one commit for a
    whole batch), checked to contain variants/NAME.  ServerError when it does not."""
    if not rev:
        raise ServerError(f"{name}@: give a git revision after '@' (e.g. {name}@HEAD~1)")
    if rev not in _COMMITS:
        if rev.startswith("-"):
            raise ServerError(f"{rev!r} is not a git revision")
        r = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", text=True)
        if r.returncode != 0 or not r.stdout.strip():
            raise ServerError(f"{name}@{rev}: {rev!r} is not a commit of this repository "
                              f"(git rev-parse --verify {rev}^{{commit}} failed)")
        _COMMITS[rev] = r.stdout.strip()
    commit = _COMMITS[rev]
    if _git("cat-file", "-e", f"{commit}:variants/{name}/__init__.py").returncode != 0:
        raise ServerError(f"{name}@{rev}: variants/{name}/ does not exist at {commit[:12]}")
    return commit


def revision_tree(commit: str) -> str:
    """build/rev/<sha>/, holding variants/ of that commit (extracted once, then reused)."""
    final = os.path.join(BUILD, "rev", commit)
    if os.path.isfile(os.path.join(final, "variants", "__init__.py")):
        return final
    r = _git("archive", "--format=tar", commit, "variants/")
    if r.returncode != 0:
        raise ServerError(f"git archive {commit[:12]} variants/ failed: "
                          f"{r.stderr.decode(errors='replace').strip()[-300:]}")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".part-", dir=os.path.dirname(final))
    try:
        with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:                                   # pragma: no cover (Python < 3.11.4)
                tar.extractall(tmp)
        try:
            os.rename(tmp, final)
        except OSError:                             # another process got there first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def binary_path(server: Server) -> str:
    return os.path.join(BUILD, server.target)


def check_available(spec: Spec, python: str | None = None) -> None:
    """Raise ServerError, with what to do, if this server cannot run here."""
    server = spec.server
    try:
        python = interp.python_for(spec, python)
        interp.check_spec(spec, python)
    except interp.InterpError as e:
        raise ServerError(str(e)) from None
    if server.kind == "cmd":
        argv = _cmd_argv(spec, "127.0.0.1", 1)
        exe = argv[0] if argv else ""
        if not (shutil.which(exe) or (os.sep in exe and os.access(exe, os.X_OK))):
            raise ServerError(f"{spec.text}: {exe!r} is not an executable (not on PATH, or not found)")
        return
    if server.name == "loop":
        py = python or sys.executable
        code = ("import sys; from harness.servers.custom_loop import load\n"
                "try: load(sys.argv[1])\nexcept ImportError as e: sys.exit(str(e))")
        r = subprocess.run([py, "-c", code, spec.get("loop")], capture_output=True, text=True,
                           env=env_for(server), cwd=ROOT, timeout=60)
        if r.returncode != 0:
            raise ServerError(f"{spec.text}: {(r.stderr.strip().splitlines() or ['cannot load it'])[-1]}")
        return
    if server.kind == "c":
        path = binary_path(server)
        if not os.path.exists(path):
            if server.name == "redis_ae":
                raise ServerError("redis_ae is not built: it needs a Redis source tree; "
                                  "run `make redis_ae` (fetches a Redis 6.2 source tree from PyPI) "
                                  "or `make build REDIS_SRC=/path/to/redis`. Skipped.")
            raise ServerError(f"{path} is not built: run `make build` (needs gcc)")
    elif spec.commit:
        revision_tree(spec.commit)
    elif server.variant and not os.path.isfile(os.path.join(ROOT, "variants", server.name,
                                                             "__init__.py")):
        raise ServerError(f"server {server.name!r} needs the package variants/{server.name}/, "
                          f"which is missing from {ROOT}")
    elif server.requires:
        py = python or sys.executable
        for mod in server.requires:
            r = subprocess.run([py, "-c", f"import {mod}"], capture_output=True, text=True)
            if r.returncode != 0:
                raise ServerError(f"server {server.name!r} needs the Python module {mod!r}, "
                                  f"which {py} cannot import (pip install {mod})")


def command(spec: Spec | str, *, host: str = "127.0.0.1", port: int = 0, size: int = 100,
            idle_timeout: float | None = None, python: str | None = None,
            extra: list[str] | tuple = ()) -> list[str]:
    """The argv that starts this server.  ``python`` is the interpreter for Python servers."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    server = spec.server
    if server.kind == "cmd":
        return _cmd_argv(spec, host, port, size) + list(extra)
    if server.kind == "c":
        argv = [binary_path(server)]
    else:
        argv = [interp.python_for(spec, python) or sys.executable, *interp.entry(spec, server.target)]
    argv += ["--host", host, "--port", str(port), "--size", str(size)]
    if idle_timeout is not None:
        argv += ["--idle-timeout", str(idle_timeout)]
    for key, value in spec.options:
        if key == "diet":
            levers = spec.levers
            argv += ["--diet" if levers == server.diet.supported else "--diet=" + ",".join(levers)]
        elif key != opts.NO_CORK and key not in opts.LAUNCHER_KEYS:   # alias; workers.py's
            flag = "--" + key.replace("_", "-")
            argv += [flag] if value is True else [flag, opts.format_value(value)]
    return argv + list(extra)


def _cmd_argv(spec: Spec, host: str, port: int, size: int = 100) -> list[str]:
    """A command server's argv: {port}, {host} and {size} filled in."""
    import shlex
    cmd = spec.get("command")
    return shlex.split(cmd.replace("{port}", str(port)).replace("{host}", host)
                       .replace("{size}", str(size)))


def _free_port(host: str) -> int:
    import socket
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def random_hash_seed() -> str | None:
    """A fresh PYTHONHASHSEED for one server run, or None when the user's environment
    fixes one (theirs wins).

    why: with a fixed seed every dict and set of a server is laid out the same way in
    every run, so two setups of the same code (``master@HEAD`` from build/rev/ and
    ``master`` from the working tree: other paths, other module names) can differ by a
    few per cent in *every* round of a batch, and the paired ratios then call an A/A
    comparison "faster" (docs/statistics.md, "Setup randomization").  A seed drawn per
    run turns that layout effect into round-to-round noise, which the interval covers;
    ASLR does the same for addresses.  The seed is recorded (``config.hash_seed``)."""
    if "PYTHONHASHSEED" in os.environ:
        return None
    return str(random.SystemRandom().randrange(1, 2**32))


def env_for(server: Server, spec: Spec | None = None, hash_seed: str | None = None) -> dict:
    """The environment a server runs with (the repository root on PYTHONPATH; for a
    NAME@REV spec that revision's tree before it; ``hash_seed``: its PYTHONHASHSEED,
    else the user's, else 0)."""
    env = dict(os.environ)
    if server.kind == "python":
        # Servers import `variants` and `harness` from the repository root.
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if server.name == "loop":           # your module, importable from where you run us
            env["PYTHONPATH"] = os.getcwd() + os.pathsep + env["PYTHONPATH"]
        first = interp.path_first(spec) if spec is not None else None
        if first:                                             # compiled: build/compiled/PART
            env["PYTHONPATH"] = first + os.pathsep + env["PYTHONPATH"]
        if spec is not None and spec.commit:
            env["PYTHONPATH"] = revision_tree(spec.commit) + os.pathsep + env["PYTHONPATH"]
        if hash_seed is not None:
            env["PYTHONHASHSEED"] = hash_seed
        else:
            env.setdefault("PYTHONHASHSEED", "0")
    return env


def workdir(spec: Spec) -> str:
    """Where a server starts: ``python -m`` puts it first on sys.path, so for NAME@REV it is
    the revision's tree (its ``variants`` wins over the working tree's)."""
    return revision_tree(spec.commit) if spec.commit else interp.path_first(spec) or ROOT


class ServerProcess(Running):
    """A running server.  ``stop()`` is idempotent and only ever signals our own PID."""

    def __init__(self, spec: Spec, proc: subprocess.Popen, ready: dict, argv: list[str], errfile):
        self.spec, self.proc, self.ready, self.argv = spec, proc, ready, argv
        self._errfile = errfile   # stderr goes to a temp file: a pipe could fill and block the server
        self.host, self.port, self.pid = ready.get("host"), int(ready["port"]), proc.pid
        self.stats: dict | None = None
        self.stderr_text = ""
        self.hash_seed: str | None = None     # the PYTHONHASHSEED start() gave it, if any

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        """user+sys CPU of the server process (all threads), from /proc/PID/stat."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            return None

    def stop(self, timeout: float = 10.0) -> dict | None:
        """SIGTERM, wait for the STATS line and exit; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        note = ""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            note = f"\n[harness] server did not exit within {timeout}s of SIGTERM; killed"
        self.stderr_text = _read_err(self._errfile) + note
        lines = (out or "").splitlines()
        if self.spec.server.kind == "cmd":          # its stdout went to the stderr file
            lines += self.stderr_text.splitlines()
        for line in lines:
            if line.startswith("STATS "):
                try:
                    self.stats = json.loads(line[6:])
                except ValueError:
                    pass
        return self.stats


def start(spec: Spec | str, *, host: str = "127.0.0.1", port: int = 0, size: int = 100,
          idle_timeout: float | None = None, python: str | None = None,
          prefix: list[str] | tuple = (), extra: list[str] | tuple = (),
          ready_timeout: float = 15.0, cgroup_procs: str | None = None) -> ServerProcess:
    """Start a server (optionally behind ``prefix``, e.g. ``taskset -c 0`` or
    ``ip netns exec NS``; prefixes must exec so the PID stays the server's) and wait
    for its READY line.  ``cgroup_procs``: the ``cgroup.procs`` file of a CPU-budget
    group (harness/cpubudget.py) the server joins before it execs, so every thread
    and child it ever has is inside.  Raises ServerError with the server's stderr if
    it fails."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    check_available(spec, python)
    if spec.server.kind == "cmd":
        return _start_cmd(spec, host=host, port=port or _free_port(host), size=size, prefix=prefix,
                          ready_timeout=ready_timeout, cgroup_procs=cgroup_procs)
    argv = list(prefix) + command(spec, host=host, port=port, size=size,
                                  idle_timeout=idle_timeout, python=python, extra=extra)
    hash_seed = random_hash_seed() if spec.server.kind == "python" else None
    errfile = tempfile.TemporaryFile(mode="w+", prefix="events-server-err-")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errfile, text=True, cwd=workdir(spec),
                                env=env_for(spec.server, spec, hash_seed),
                                preexec_fn=_preexec(cgroup_procs))
    except (OSError, subprocess.SubprocessError) as e:
        errfile.close()
        where = f" (joining the CPU-budget cgroup {cgroup_procs})" if cgroup_procs else ""
        raise ServerError(f"cannot start {spec.text}{where}: {e}") from None
    deadline = time.monotonic() + ready_timeout
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None           # stdout=PIPE
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.communicate()
                raise ServerError(f"{spec.text} did not print READY within {ready_timeout}s; "
                                  f"stderr:\n{_read_err(errfile).strip()[-2000:]}")
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if not line:                      # EOF: the server exited
                proc.communicate()
                raise ServerError(f"{spec.text} failed to start (exit code {proc.returncode}); "
                                  f"stderr:\n{_read_err(errfile).strip()[-2000:]}")
            if line.startswith("READY "):
                ready = json.loads(line[6:])
                break
    finally:
        sel.close()
    server = ServerProcess(spec, proc, ready, argv, errfile)
    server.hash_seed = hash_seed
    return server


def _start_cmd(spec: Spec, *, host: str, port: int, size: int, prefix, ready_timeout: float,
               cgroup_procs: str | None) -> ServerProcess:
    """A command server prints no READY line: it is ready when its port accepts a
    connection (probed every 50 ms; the probe connects and closes at once, before the
    run's counters are read).  Its stdout and stderr both go to the kept stderr file."""
    import socket
    argv = list(prefix) + _cmd_argv(spec, host, port, size)
    errfile = tempfile.TemporaryFile(mode="w+", prefix="events-server-err-")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errfile, stderr=errfile,
                                text=True, cwd=os.getcwd(), env=dict(os.environ),
                                preexec_fn=_preexec(cgroup_procs))
    except (OSError, subprocess.SubprocessError) as e:
        errfile.close()
        raise ServerError(f"cannot start {spec.text}: {e}") from None
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise ServerError(f"{spec.text} failed to start (exit code {proc.returncode}); "
                              f"stderr:\n{_read_err(errfile).strip()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise ServerError(f"{spec.text} did not accept connections on {host}:{port} within "
                              f"{ready_timeout}s; stderr:\n{_read_err(errfile).strip()[-2000:]}")
        time.sleep(0.05)
    return ServerProcess(spec, proc, {"server": "cmd", "host": host, "port": port, "pid": proc.pid},
                         argv, errfile)


def _preexec(cgroup_procs: str | None):
    """What the child does between fork and exec: die with its parent, and join the
    CPU-budget group if there is one (if joining fails the child raises: a server
    must never run unbudgeted in a budgeted run)."""
    if not cgroup_procs:
        return _die_with_parent
    from harness.cpubudget import preexec_cgroup
    join = preexec_cgroup(cgroup_procs)

    def both() -> None:
        _die_with_parent()
        join()
    return both


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel to SIGTERM the server if the process that
    started it dies (even by SIGKILL), so a killed runner never leaves a server behind."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)      # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass                                        # not Linux: best effort only


def _read_err(errfile) -> str:
    try:
        errfile.flush()
        errfile.seek(0)
        return errfile.read()
    except (OSError, ValueError):
        return ""
