"""``make profile VARIANT=x [CONNECTIONS=n]``: where a server's time goes, line by line.

The study ran line_profiler and found the main costs in ``recv``, ``send``,
``register``, ``modify``, ``unregister`` and ``close`` -- calls Python makes for
us.  This command repeats that for any server spec and says whether it still holds.

How it runs
-----------
The server is started through the server table like every run, but behind a
*prefix*: ``python -m harness.profile --child OUT -- <the server's own argv>``.
The child imports the server module, registers with ``line_profiler.LineProfiler``
every function of the server module, of ``harness.servers.common`` (the state
machine and the procs) and, for a variant, of its ``events`` module, the poller
backend and the timers; then it runs the module's ``if __name__ == "__main__"``
block in that same module namespace (so the functions it runs are the ones
registered).  A fixed number of connections (default 20,000) is driven with
``build/loadgen --count``; SIGTERM makes the loop return and the server call
``common.finish``, which the child wraps to write the profile first.

mul_thread: its procs run on worker threads, and on Python 3.11 a trace function
is per thread, so ``threading.settrace`` enables the profiler in each new thread.
The loop is built with ``count_locks=True`` (a ``CountingLock`` around each lock it
takes, see variants/common/locks.py) to count lock acquisitions per connection.

Never timed.  line_profiler slows Python lines several times more than C calls, so
a profiled run's conn/s means nothing and is not reported; only *shares* are.
(pyperf's rule: never time a profiled run.)

Reading the numbers
-------------------
line_profiler times a line including the functions it calls, so a naive sum counts
a callee twice.  The categories below are therefore taken only at the *innermost*
line: ``self._ep.register(...)`` inside the backend's ``register`` counts as
epoll_ctl, the loop's ``self._poller.register(...)`` that calls it does not (a
call is innermost when the name it calls is not a profiled function, or is the
function it sits in -- a thin wrapper around the C method of the same name).
Shares are of the outermost function's time (the event loop's ``main`` or
raw_epoll's ``run``), i.e. of the loop thread's wall time while serving,
including the time ``poll`` blocks.  On mul_thread, worker threads run beside the
loop thread, so their lines overlap the loop's wait for the batch; shares there
can add up to more than 100 % and are labelled so.  For the chart of hot lines,
lines that call into profiled code (found from each function's AST: direct calls,
local aliases such as ``process = self.process_events``, and procs taken from the
fd tables) are left out, so the bars are (close to) exclusive time.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import json
import linecache
import os
import re
import sys
import tempfile

DEFAULT_CONNECTIONS = 20000
DEFAULT_CONCURRENCY = 64

# Operation categories, matched on the innermost line that makes the call.
CATEGORIES = (
    ("recv", r"\brecv(?:_into|from|from_into|msg)?\("),
    ("send", r"\bsend(?:all|to|msg)?\("),
    # (``_register(``: the libraries bind the poller's kernel calls once, as ``_register``.)
    ("register", r"\b_?register\("),
    ("modify", r"\b_?modify\("),
    ("unregister", r"\b_?unregister\("),
    ("close", r"\bclose\(\s*\)"),
    ("accept", r"\baccept4?\("),
    ("poll", r"\b(?:poll|select)\("),
    ("lock", r"\b(?:acquire|release)\(|^\s*with\s+[\w.\[\]]*lock"),
    ("batch wait", r"\bwait\("),
)
# mul_thread's per-fd runner: the root of a worker thread's work.
WORKER_ROOT = "_run_fd"
STUDY_OPS = ("recv", "send", "register", "modify", "unregister", "close")


# --------------------------------------------------------------------------- the child

def _functions_of(module) -> list:
    """Functions and methods defined in ``module`` (not the ones it imports)."""
    out = []
    for obj in vars(module).values():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if isinstance(obj, type):
            for member in vars(obj).values():
                func = getattr(member, "__func__", member)     # staticmethod/classmethod
                if isinstance(member, property):
                    func = member.fget
                if hasattr(func, "__code__"):
                    out.append(func)
        elif hasattr(obj, "__code__"):
            out.append(obj)
    return out


def _main_block(module):
    """The module's ``if __name__ == "__main__":`` body, compiled against its file."""
    path = module.__file__
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
            return compile(ast.Module(body=node.body, type_ignores=[]), path, "exec")
    raise SystemExit(f"{module.__name__} has no __main__ block to run")


def _option(argv, name, default=None):
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def child(out: str, server_argv: list[str]) -> None:
    """Run a server in this process under line_profiler (see module docstring)."""
    import threading

    from line_profiler import LineProfiler

    from harness.servers import common

    if "-m" not in server_argv:
        raise SystemExit("profile child: expected the server's argv: PYTHON -m MODULE ...")
    i = server_argv.index("-m")
    modname, args = server_argv[i + 1], server_argv[i + 2:]
    module = importlib.import_module(modname)
    modules = [module, common]
    name = getattr(module, "NAME", modname.rsplit(".", 1)[-1])
    loops = []
    if importlib.util.find_spec(f"variants.{name}") is not None:
        events = importlib.import_module(f"variants.{name}.events")
        from variants.common import backends
        modules += [events, backends.choose(_option(args, "--backend")),
                    importlib.import_module("variants.common.timers")]
        cls = getattr(events, "EventLoop", None)
        if cls is not None and "count_locks" in cls.__init__.__code__.co_varnames:
            init = cls.__init__

            def counting_init(self, *a, **kw):
                kw["count_locks"] = True          # wrap the loop's locks in counters
                init(self, *a, **kw)
                loops.append(self)
            cls.__init__ = counting_init

    prof = LineProfiler()
    for mod in modules:
        for func in _functions_of(mod):
            prof.add_function(func)

    def thread_hook(frame, event, arg):
        prof.enable_by_count()                    # this thread's trace is now the profiler's
        return None
    threading.settrace(thread_hook)

    def dump(stats):
        prof.disable_by_count()
        prof.dump_stats(out + ".lprof")
        meta = {"server": name, "module": modname, "argv": args, "stats": stats,
                "lock_acquisitions": sum(getattr(loop, "lock_acquisitions", 0) for loop in loops)
                if loops else None,
                "modules": [m.__name__ for m in modules]}
        with open(out + ".json", "w") as f:
            json.dump(meta, f)

    finish = common.finish

    def finish_with_profile(stats):
        # The server ends with common.finish (STATS, then os._exit): write the profile first.
        dump(stats.as_dict())
        finish(stats)
    common.finish = finish_with_profile

    sys.argv = [module.__file__ or module.__name__] + args
    code = _main_block(module)
    prof.enable_by_count()
    exec(code, vars(module))
    dump(None)                    # a server that returned without common.finish


# --------------------------------------------------------------------------- analysis

def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Calls(ast.NodeVisitor):
    """Lines of one function that call into profiled code (see module docstring)."""

    def __init__(self, func: ast.FunctionDef | ast.AsyncFunctionDef, profiled: set[str]):
        self.profiled = profiled
        self.own = func.name
        self.aliases: set[str] = set()
        self.lines: set[int] = set()
        for node in ast.walk(func):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._alias(target, node.value)
        self.visit(func)

    def _alias(self, target, value):
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(target.elts, value.elts):
                self._alias(t, v)
        elif isinstance(target, ast.Name):
            if isinstance(value, ast.Attribute) and value.attr in self.profiled:
                self.aliases.add(target.id)     # process = self.process_events
            elif isinstance(value, ast.Subscript):
                self.aliases.add(target.id)     # called = rprocs[fd]: a proc from a table

    def visit_Call(self, node):
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        inner = (name in self.profiled and name != self.own) or (
            isinstance(f, ast.Name) and f.id in self.aliases)
        if inner:
            self.lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        self.generic_visit(node)


def _inclusive_lines(timings, profiled: set[str]) -> set[tuple[str, int]]:
    """(file, line) pairs whose time includes profiled callees."""
    out: set[tuple[str, int]] = set()
    trees: dict[str, ast.AST | None] = {}
    for (filename, first, funcname) in timings:
        if filename not in trees:
            try:
                with open(filename) as f:
                    trees[filename] = ast.parse(f.read())
            except (OSError, SyntaxError, ValueError):
                trees[filename] = None
        tree = trees[filename]
        if tree is None:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.name == _short(funcname)
                    and (node.lineno == first or any(d.lineno == first for d in node.decorator_list))):
                out.update((filename, n) for n in _Calls(node, profiled).lines)
    return out


def analyze(stats, meta: dict, connections: int) -> dict:
    """Shares of the categories, the hot lines, and the verdict on the study's finding."""
    unit = stats.unit
    timings = {k: v for k, v in stats.timings.items() if v}
    profiled = {_short(k[2]) for k in timings}
    totals = {k: sum(t for _, _, t in v) * unit for k, v in timings.items()}
    if not totals:
        raise ValueError("the profile is empty")
    # The root is the loop thread's outermost function: called once (its first line hit
    # once) and the longest such.  Not simply the longest function: on mul_thread a proc
    # runner summed over the worker threads can exceed the loop thread's wall time.
    once = [k for k, v in timings.items() if min(e[0] for e in v) and
            next(h for ln, h, _ in sorted(v)) == 1]
    root = max(once or totals, key=lambda k: totals[k])
    denom = totals[root]
    # mul_thread: procs run on worker threads, each under the loop's ``_run_fd``, while
    # the loop thread waits for the batch.  The time base is then the time some thread
    # worked: the loop thread's time minus its wait for the batch, plus the workers'.
    workers = sum(t for k, t in totals.items() if _short(k[2]) == WORKER_ROOT)
    inclusive = _inclusive_lines(timings, profiled)
    cats: dict[str, dict] = {name: {"seconds": 0.0, "hits": 0} for name, _ in CATEGORIES}
    lines = []
    for (filename, first, funcname), entries in timings.items():
        own = _short(funcname)
        for lineno, hits, t in entries:
            text = linecache.getline(filename, lineno).strip()
            sec = t * unit
            cat = None
            for name, pattern in CATEGORIES:
                m = re.search(pattern, text)
                if not m:
                    continue
                word = re.sub(r"\W.*", "", m.group(0), flags=re.S)     # the leading name
                # innermost only: the called name is not profiled, or is this very function
                if name in ("lock", "batch wait") or word not in profiled or word == own:
                    cat = name
                    break
            if cat:
                cats[cat]["seconds"] += sec
                # A `for x in poll():` header is hit once per iteration, not per call.
                if text.startswith("for "):
                    cats[cat]["loop_header"] = True
                else:
                    cats[cat]["hits"] += hits
            lines.append({"file": os.path.relpath(filename), "line": lineno, "function": funcname,
                          "hits": hits, "seconds": sec, "share": sec / denom, "text": text,
                          "category": cat,
                          "inclusive": (filename, lineno) in inclusive and not cat})
    if workers:
        denom = max(denom - cats["batch wait"]["seconds"], 0.0) + workers
    for c in cats.values():
        c["share"] = c["seconds"] / denom
        c["us_per_call"] = c["seconds"] / c["hits"] * 1e6 if c["hits"] and not c.get("loop_header") else None
        c["per_connection"] = c["hits"] / connections if connections else None
    if workers:     # the wait is outside the time base: shown in the lock line only
        waited = cats.pop("batch wait")
    named = sum(c["seconds"] for c in cats.values())
    other = max(0.0, denom - named)
    study = sum(cats[n]["share"] for n in STUDY_OPS)
    ranking = sorted(((n, c["share"]) for n, c in cats.items()), key=lambda kv: -kv[1])
    ranking.append(("other Python code", other / denom))
    ranking.sort(key=lambda kv: -kv[1])
    # The study's claim is that the cost lies in operations Python provides, not in the
    # library's own code: it holds when those six calls outweigh all the Python code.
    # Within 10 % of each other the answer is within a shared machine's noise: say so.
    py = other / denom
    holds = True if study > 1.1 * py else False if study < py / 1.1 else None
    word = {True: "HOLDS", False: "does NOT hold", None: "is BORDERLINE"}[holds]
    rel = {True: "more than", False: "less than", None: "about as much as"}[holds]
    verdict = (f"The study's finding {word} here: recv, send, "
               f"register, modify, unregister and close take {study:.0%} of the time, "
               f"{rel} the Python code of the loop, the dispatch "
               f"and the procs ({other / denom:.0%}); poll takes {cats['poll']['share']:.0%} "
               f"(including any time it blocks waiting for the client) and accept "
               f"{cats['accept']['share']:.0%}.")
    result = {"server": meta.get("server"), "root_function": root[2], "root_seconds": denom,
              "time_base": ("loop thread minus its wait for the batch, plus the worker threads' "
                            f"{WORKER_ROOT}") if workers else f"the loop thread's {root[2]}",
              "connections": connections, "categories": cats, "other_share": other / denom,
              "study_ops_share": study, "study_finding_holds": holds, "verdict": verdict,
              "ranking": ranking,
              "hot_lines": sorted((ln for ln in lines if ln["category"] or not ln["inclusive"]),
                                  key=lambda ln: -ln["seconds"])[:20]}
    locks = meta.get("lock_acquisitions")
    if locks is not None:
        lk, sd = cats["lock"], cats["send"]
        result["locks"] = {
            "acquisitions": locks, "per_connection": locks / connections if connections else None,
            "lock_lines_share": lk["share"],
            # per acquisition (the counter), not per line hit: a `with` line is hit twice
            "lock_us_per_op": lk["seconds"] / locks * 1e6 if locks else None,
            "send_us_per_call": sd["us_per_call"],
        }
        result["locks"]["lock_cost_vs_send"] = (
            result["locks"]["lock_us_per_op"] / sd["us_per_call"]
            if result["locks"]["lock_us_per_op"] and sd["us_per_call"] else None)
        result["locks"].update({
            "batch_wait_s": waited["seconds"] if workers else None,
        })
    return result


def summary_text(res: dict, spec: str) -> str:
    out = [f"Profile of {spec}: {res['connections']:,} connections under line_profiler "
           f"(shares only; a profiled run is never timed).",
           f"Shares of the time base ({res['time_base']}, {res['root_seconds']:.2f} s "
           "profiled):"]
    for name, share in res["ranking"]:
        c = res["categories"].get(name)
        if not share and name not in STUDY_OPS:
            continue                  # e.g. locks in a single-threaded server
        extra = ""
        lk = res.get("locks")
        if name == "lock" and lk and lk["per_connection"]:
            extra = (f"  ({lk['per_connection']:.2f} acquisitions/conn, "
                     f"{lk['lock_us_per_op']:.1f} us each)")
        elif c and c["hits"] and not c.get("loop_header"):
            extra = f"  ({c['per_connection']:.2f} calls/conn, {c['us_per_call']:.1f} us/call)"
        out.append(f"  {name:<18} {share:6.1%}{extra}")
    out.append(res["verdict"])
    out.append("(line_profiler slows Python lines more than C calls, so 'other Python code' "
               "is an upper bound and the calls' shares lower bounds.)")
    lk = res.get("locks")
    if lk:
        cost = lk["lock_cost_vs_send"]
        out.append(f"Locks (mul_thread): {lk['acquisitions']:,} acquisitions of the loop's locks, "
                   f"{lk['per_connection']:.2f} per connection; lock lines {lk['lock_lines_share']:.1%} "
                   f"of the time"
                   + (f", {cost:.2f} x the cost of a send per operation (study: about 1/4)"
                      if cost else "")
                   + (f"; the loop thread spent {lk['batch_wait_s']:.2f} s waiting for each batch's slowest "
                      "proc (outside the time base)" if lk.get("batch_wait_s") else "") + ".")
    return "\n".join(out)


def chart(res: dict, spec: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1, 2]})
    names = [n for n, s in res["ranking"] if s > 0][::-1]
    shares = [dict(res["ranking"])[n] * 100 for n in names]
    colors = ["#c0504d" if n in STUDY_OPS else "#4a7ab5" for n in names]
    a1.barh(names, shares, color=colors)
    a1.set_xlabel("% of the loop's time")
    a1.set_title(f"{spec}: where the time goes\n(red: the study's six operations)", fontsize=10)
    hot = res["hot_lines"][:15][::-1]
    labels = [f"{os.path.basename(h['file'])}:{h['line']}  {h['text'][:48]}" for h in hot]
    a2.barh(range(len(hot)), [h["share"] * 100 for h in hot],
            color=["#c0504d" if h["category"] in STUDY_OPS else "#4a7ab5" for h in hot])
    a2.set_yticks(range(len(hot)))
    a2.set_yticklabels(labels, fontsize=7, family="monospace")
    a2.set_xlabel("% of the loop's time (lines calling profiled code left out)")
    a2.set_title("hottest lines", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the command

def run(spec: str, *, connections: int = DEFAULT_CONNECTIONS,
        concurrency: int = DEFAULT_CONCURRENCY, results: str, out=None) -> dict:
    out = out or sys.stdout
    from line_profiler import load_stats, show_text

    from harness import client, procs
    from harness import servers as srv
    from harness.summary import BASELINE

    spec_obj = srv.parse_spec(spec)
    if spec_obj.server.kind != "python":
        raise procs.RunnerError(f"{spec_obj.name} is not a Python server: line_profiler "
                                "cannot see inside it")
    if not (spec_obj.server.variant or spec_obj.name == BASELINE):
        # asyncio/uvloop: their loops are not in this repository, so the categories would
        # only see the protocol callbacks and the verdict would mean nothing.
        raise procs.RunnerError(f"profile covers {BASELINE} and the Events variants "
                                f"({', '.join(srv.VARIANTS)}); {spec_obj.name}'s event loop "
                                "is not ours to profile line by line")
    loadgen = procs.check_loadgen()
    tmp = tempfile.mkdtemp(prefix="events-profile-")
    base = os.path.join(tmp, "prof")
    prefix = [sys.executable, "-m", "harness.profile", "--child", base, "--"]
    server = srv.start(spec_obj, python=sys.executable, prefix=prefix, ready_timeout=60)
    try:
        print(f"profiling {spec_obj.text} (pid {server.pid}) over {connections:,} connections, "
              f"{concurrency} in flight; the profiler slows it several times", file=out)
        argv = client.client_argv(loadgen, "127.0.0.1", server.port, concurrency=concurrency,
                                  size=100, duration=None, warmup=0, rate=None, timeout_ms=10000,
                                  close_mode="fin", count=connections)
        res = client.run_client(argv, timeout=120 + connections / 100, server_alive=server.alive)
    finally:
        server.stop(timeout=60)
    try:
        if res.error:
            raise procs.RunnerError(f"the load client failed: {res.error}")
        if not os.path.exists(base + ".lprof"):
            raise procs.RunnerError("the profiled server wrote no profile; its stderr:\n"
                                    + server.stderr_tail(1500))
        stats = load_stats(base + ".lprof")
        with open(base + ".json") as f:
            meta = json.load(f)
        completed = (res.final or {}).get("completed_total") or 0
        result = analyze(stats, meta, completed)
        result["spec"] = spec_obj.text
        result["failed"] = (res.final or {}).get("failed_total")
        d = os.path.join(results, "profile")
        os.makedirs(d, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec_obj.text)
        summary = summary_text(result, spec_obj.text)
        with open(os.path.join(d, name + ".txt"), "w") as f:
            f.write(summary + "\n\n" + "=" * 78 + "\nline_profiler output\n" + "=" * 78 + "\n")
            buf = io.StringIO()
            show_text(stats.timings, stats.unit, stream=buf, stripzeros=True)
            # file names relative to the repository: the output names no path outside it
            f.write(buf.getvalue().replace(procs.ROOT.rstrip("/") + "/", ""))
        with open(os.path.join(d, name + ".json"), "w") as f:
            json.dump(result, f, indent=1, default=str)
        chart(result, spec_obj.text, os.path.join(d, name + ".png"))
        result["paths"] = [os.path.join(d, name + ext) for ext in (".txt", ".png", ".json")]
        print(summary, file=out)
        return result
    finally:
        for ext in (".lprof", ".json"):
            try:
                os.unlink(base + ext)
            except OSError:
                pass
        os.rmdir(tmp) if not os.listdir(tmp) else None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        if len(argv) < 3 or argv[2] != "--":
            print("usage: python -m harness.profile --child OUT -- PYTHON -m MODULE ARGS",
                  file=sys.stderr)
            return 2
        child(argv[1], argv[3:])
        return 0
    from harness import cmdline
    return cmdline.Subcommand("profile", DESCRIPTION, add_arguments, run_command).main(argv)


DESCRIPTION = ("line_profiler over a server's event loop and procs for a fixed number of "
               "connections (never timed).")


def add_arguments(ap) -> None:
    """`profile`'s arguments, on the shared parser (cli.SUBCOMMANDS) or its own (main)."""
    from harness import cmdline
    ap.add_argument("--variant", "--server", dest="spec", default="master",
                    help="server spec (master, alone_proc, mul_thread, raw_epoll, ...)")
    ap.add_argument("--connections", type=cmdline.positive_int, default=DEFAULT_CONNECTIONS)
    ap.add_argument("--concurrency", type=cmdline.positive_int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--results-dir")


def run_command(args) -> int:
    """`profile` with its parsed arguments: the one error path (cmdline.handled)."""
    from harness import cmdline, records
    from harness import servers as srv

    def check():
        srv.parse_spec(args.spec)
        cmdline.check_common(args)

    def work():
        result = run(args.spec, connections=args.connections, concurrency=args.concurrency,
                     results=records.results_dir(args.results_dir))
        print("wrote " + ", ".join(result["paths"]))
    return cmdline.handled(check, work, failed=(ValueError,))


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"profile": (DESCRIPTION, add_arguments, run_command)}


if __name__ == "__main__":
    sys.exit(main())
