"""Mutation run: deviations from ae planted in a copy of the loops, and whether the tests see them.

    .venv/bin/python tools/mutate.py [--only NAME ...] [--timeout S] [--list]   (make mutate)

Why: a model test is only worth what it catches. Issue 24's regression (the second proc
of a pass told the re-checked mask instead of the pass's) went through every suite
because the model had been written from the library, not from ae.c. This tool measures
the suites' strength the direct way: each entry of MUTANTS is one deviation from ae's
aeProcessEvents/processTimeEvents (src/ae.c) written as a textual patch of
variants/ (exact text -> replacement). For each, variants/ is copied into a temporary
directory, the patch applied there (text that no longer occurs exactly once is an error,
not a pass: the list must follow the loops), and tests/test_model.py plus
tests/test_conformance.py run against the copy, restricted to the configurations of the
variant the patch touches (the shared timers: master's), under a time bound.

Pointing the tests at the copy: a child interpreter puts the copy first on sys.path and
imports ``variants`` before pytest starts, so every later ``import variants...`` (tests,
conftest, the editable install's finder comes after sys.path) resolves there; the child
checks that the modules really came from the copy and exits 3 if not (an error, never a
"survived"). The unpatched copy runs first: a baseline that fails is an error.

Each mutant also runs the random model test alone (no fixed scenario, no conformance
test): a column for information, showing what the hypothesis run finds by itself.

A mutant is *caught* when the selected tests fail (pytest exit 1; the first failing test
is recorded), *survived* when they pass, *timeout* when the bound is hit (counted as caught
only with --timeout-caught; by default an error to look at). The table goes to stdout and
to results/mutation/mutation.{json,md} (a full run only; --only prints).
The model test runs as in ``make test`` (fixed seed), unshrunk (EVENTS_MODEL_SHRINK=0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results", "mutation")
TESTS = ["tests/test_model.py", "tests/test_conformance.py"]

# Which configurations of the two test files a patch of each variant is checked with
# (a pytest -k expression on the parametrize ids, e.g. "master-epoll").
SELECT = {"master": "master-", "mul_thread": "mul_thread", "alone_proc": "alone_proc-"}

M = "master/events.py"
MT = "mul_thread/events.py"
AP = "alone_proc/events.py"
T = "common/timers.py"

# name, variant whose configurations run, what deviates from ae (and the ae.c line it
# breaks), patches [(file under variants/, exact old text, new text)].
MUTANTS = [
    ("no_recheck", "master",
     "no re-check of fe->mask before the second proc (ae.c L423: fe->mask & mask)",
     [(M, "                            fired = reported & masks[fd]\n"
          "                        if fired & WRITABLE:\n",
       "                        if fired & WRITABLE:\n")]),
    ("barrier_ignored", "master", "BARRIER ignored: read before write always (ae.c L408)",
     [(M, "invert = mask & BARRIER\n", "invert = 0\n")]),
    ("recheck_passed_on", "master",
     "the re-checked mask given to the second proc (issue 24; ae.c L425 passes mask)",
     [(M, "proc(self, fd, cdata[fd], reported & mask)\n                                fired",
       "proc(self, fd, cdata[fd], fired)\n                                fired")]),
    ("same_proc_twice", "master",
     "one proc for both directions called twice (ae.c L424: wfileProc != rfileProc)",
     [(M, "if proc != called:  # one proc for both: call it once",
       "if True:  # one proc for both: call it once")]),
    ("stale_client_data", "master",
     "client data read before the first proc, reused by the second (ae.c L425: "
     "fe->clientData at the call)",
     [(M, "invert = mask & BARRIER\n",
       "invert = mask & BARRIER\n                        data = cdata[fd]\n"),
      (M, "proc(self, fd, cdata[fd], reported & mask)\n                                fired",
       "proc(self, fd, data, reported & mask)\n                                fired")]),
    ("mask_at_poll", "master",
     "fd masks read when the poll returned, not at each fd's dispatch (ae.c L393, L408)",
     [(M, "to_ae = self._poller.to_ae\n",
       "to_ae = self._poller.to_ae\n                snapshot = list(masks)\n"),
      (M, "mask = masks[fd]\n", "mask = snapshot[fd]\n")]),
    ("count_dispatched_only", "master",
     "a reported fd with nothing left to fire not counted (ae.c L442: processed++ each)",
     [(M, "continue        # a stale event: an earlier proc deleted this fd",
       "processed -= 1\n                        continue")]),
    ("before_sleep_after_wait", "master",
     "before-sleep hook run after the wait is computed (ae.c L359-377)",
     [(M, "            if before and self._before_sleep is not None:\n"
          "                self._before_sleep(self)\n", ""),
      (M, "            events = self._kernel.poll(timeout)\n",
       "            if before and self._before_sleep is not None:\n"
       "                self._before_sleep(self)\n"
       "            events = self._kernel.poll(timeout)\n")]),
    ("after_sleep_only_with_files", "master",
     "after-sleep hook skipped on a pass without FILE_EVENTS (ae.c L388)",
     [(M, "if after and self._after_sleep is not None:",
       "if after and file_events and self._after_sleep is not None:")]),
    ("mt_recheck_passed_on", "mul_thread",
     "mul_thread (both pools): the re-checked mask given to the second proc (ae.c L425)",
     [(MT, "wproc(self, fd, data, reported & mask)", "wproc(self, fd, data, fired)")]),
    ("mt_stale_client_data", "mul_thread",
     "mul_thread: the write proc given the client data read before the read proc",
     [(MT, "wproc = self._wprocs[fd]\n                    data = self._cdata[fd]\n",
       "wproc = self._wprocs[fd]\n")]),
    ("mt_no_recheck", "mul_thread",
     "mul_thread: no re-check after the read proc (ae.c L423)",
     [(MT, "            if reported & WRITABLE:\n                with lock:",
       "            if False:\n                with lock:")]),
    ("ap_stale_event", "alone_proc",
     "alone_proc: a reported fd whose events an earlier proc deleted still dispatched "
     "(ae.c L416-440: fe->mask & mask)",
     [(AP, "                    if not fired:\n                        continue",
       "                    if not fired and False:\n                        continue")]),
    ("timer_finalizer_twice", "master",
     "a timer deleted by its own proc: finalizer called twice (ae.c L284-287: once)",
     [(T, "                    if ev.deleted:\n                        continue",
       "                    if ev.deleted:\n                        if ev.finalizer is not None:\n"
       "                            ev.finalizer(loop, ev.client_data)\n"
       "                        continue")]),
    ("timer_order_reversed", "master",
     "due timers of equal time run newest first (the library's (when, id) order)",
     [(T, "heapq.heappush(self._heap, (ev.when, ev.id, ev))",
       "heapq.heappush(self._heap, (ev.when, -ev.id, ev))"),
      (T, "heapq.heappush(heap, (ev.when, ev.id, ev))",
       "heapq.heappush(heap, (ev.when, -ev.id, ev))")]),
    ("timer_nomore_kept", "master",
     "a timer returning NOMORE not deleted (ae.c L318-319)",
     [(T, "if ret is None or ret == NOMORE:", "if ret is None:")]),
    ("timer_new_runs_same_pass", "master",
     "a timer created by a time proc runs in the same pass (ae.c L291-294: maxId)",
     [(T, "elif ev.id > max_id:", "elif False:")]),
    ("timer_deleted_in_own_proc", "master",
     "a timer deleted by its own proc handled as live afterwards (ae.c L273, L319)",
     [(T, "                    if ev.deleted:\n                        continue",
       "                    if False:\n                        continue")]),
    ("timer_period_from_due", "master",
     "a periodic timer's next time counted from when it was due, not from when its "
     "proc returned (ae.c L315-317)",
     [(T, "ev.when = monotonic() + ret / 1000.0", "ev.when = ev.when + ret / 1000.0")]),
    ("timer_twice_per_pass", "master",
     "a timer rescheduled at 0 ms runs again in the same pass (ae.c: one list walk)",
     [(T, "                        ev.when = monotonic() + ret / 1000.0\n"
          "                        held.append(ev)",
       "                        ev.when = monotonic() + ret / 1000.0\n"
       "                        ev.queued = True\n"
       "                        heapq.heappush(self._heap, (ev.when, ev.id, ev))")]),
    ("timer_nearest_stale", "master",
     "the nearest timer not refreshed when it is deleted (ae.c L245-258: searched)",
     [(T, "            self.due = self._peek()     # it was the nearest: the next live one is",
       "            pass")]),
]


class Usage(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):           # one `error:` line, exit 2 (the project's rule)
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def mutant(name):
    for m in MUTANTS:
        if m[0] == name:
            return m
    raise Usage("unknown mutant %r; choose from: %s" % (name, ", ".join(m[0] for m in MUTANTS)))


def copy_variants(dest: str) -> str:
    """A copy of variants/ under ``dest`` (the directory that goes on sys.path)."""
    shutil.copytree(os.path.join(ROOT, "variants"), os.path.join(dest, "variants"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def apply(root: str, patches) -> None:
    """Apply each (file, old, new) to the copy at ``root``: ``old`` must occur exactly
    once (at the time it is applied); the file must still compile."""
    for rel, old, new in patches:
        path = os.path.join(root, "variants", rel)
        with open(path) as f:
            text = f.read()
        n = text.count(old)
        if n != 1:
            raise Usage("patch of variants/%s does not apply: its text occurs %d times:\n%s"
                        % (rel, n, old))
        text = text.replace(old, new)
        compile(text, path, "exec")     # a SyntaxError is the mutant's bug, not a catch
        with open(path, "w") as f:
            f.write(text)


# The child: the copy first on sys.path, variants imported from it before pytest starts.
CHILD = r"""
import os, sys
root = os.path.realpath(sys.argv[1])
sys.path.insert(0, root)
try:
    import variants, variants.master, variants.mul_thread, variants.alone_proc
    import variants.common.timers
except Exception as exc:
    print("mutate: the copy does not import: %r" % (exc,)); sys.exit(3)
def check():
    bad = [m.__file__ for name, m in list(sys.modules.items())
           if name.split(".")[0] == "variants" and getattr(m, "__file__", None)
           and not os.path.realpath(m.__file__).startswith(root + os.sep)]
    if bad:
        print("mutate: modules not from the copy: %s" % bad); sys.exit(3)
check()
import pytest
rc = pytest.main(sys.argv[2:])
check()
sys.exit(int(rc))
"""

_FAILED = re.compile(r"^FAILED (\S+)", re.M)
_PASSED = re.compile(r"(\d+) passed")


def run_tests(root: str, select: str, timeout: float, tests=TESTS) -> dict:
    """Run ``tests`` against the copy at ``root``, restricted by ``select``."""
    env = dict(os.environ, EVENTS_MODEL_SHRINK="0", PYTHONDONTWRITEBYTECODE="1")
    env.pop("EVENTS_MODEL_SEED", None)
    argv = [sys.executable, "-c", CHILD, root, "-q", "-x", "-rf", "-p", "no:cacheprovider",
            "-k", select] + list(tests)
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": round(time.monotonic() - start, 1),
                "caught_by": None}
    seconds = round(time.monotonic() - start, 1)
    out = proc.stdout + proc.stderr
    if proc.returncode == 0:
        passed = _PASSED.search(out)
        return {"status": "survived", "seconds": seconds, "caught_by": None,
                "passed": int(passed.group(1)) if passed else None}
    if proc.returncode == 1:
        failed = _FAILED.search(out)
        return {"status": "caught", "seconds": seconds,
                "caught_by": failed.group(1) if failed else "(pytest exit 1)"}
    return {"status": "error", "seconds": seconds, "caught_by": None,
            "detail": out.strip().splitlines()[-5:]}


def table_md(rows, caught: int, seeded: int) -> str:
    lines = ["| mutant | variant | deviation from ae | result | first failing test | s "
             "| random model alone |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], r["variant"], r["deviation"], r["status"],
            "`%s`" % r["caught_by"].split("::")[-1] if r["caught_by"] else "", r["seconds"],
            r["random_model"]))
    alone = sum(1 for r in rows if r["random_model"] == "caught")
    return "\n".join(lines) + ("\n\n**caught/seeded: %d/%d** (the random model run alone, "
                               "for information: %d/%d)\n" % (caught, seeded, alone, seeded))


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "variants", *TESTS],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main(argv=None) -> int:
    ap = Parser(prog="mutate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only "
                    "(nothing is written to results/)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds per mutant's test run (default 300)")
    ap.add_argument("--timeout-caught", action="store_true",
                    help="count a mutant whose tests hit the time bound as caught")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)
    try:
        if not args.timeout > 0:
            raise Usage("--timeout must be > 0, got %r" % args.timeout)
        chosen = [mutant(n) for n in args.only] if args.only else MUTANTS
        if args.list:
            for name, variant, what, _ in chosen:
                print("%-28s %-11s %s" % (name, variant, what))
            return 0
        # Every patch must apply before anything runs (and before results/ is touched).
        for name, _, _, patches in chosen:
            with tempfile.TemporaryDirectory(prefix="events-mutant-") as tmp:
                try:
                    apply(copy_variants(tmp), patches)
                except Usage as e:
                    raise Usage("mutant %s: %s" % (name, e)) from None
    except Usage as e:
        print("error: mutate: %s" % e, file=sys.stderr)
        return 2

    rows = []
    with tempfile.TemporaryDirectory(prefix="events-mutant-") as tmp:
        variants_run = sorted({m[1] for m in chosen})
        base = run_tests(copy_variants(os.path.join(tmp, "baseline")),
                         " or ".join(SELECT[v] for v in variants_run), args.timeout)
        print("baseline (unpatched copy; %s): %s tests passed in %.1f s" % (
            ", ".join(variants_run), base.get("passed"), base["seconds"]), flush=True)
        if base["status"] != "survived":
            print("error: mutate: the unpatched copy does not pass its tests: %s" % (
                base.get("detail") or base["status"]), file=sys.stderr)
            return 1
        for name, variant, what, patches in chosen:
            root = copy_variants(os.path.join(tmp, name))
            apply(root, patches)
            r = run_tests(root, SELECT[variant], args.timeout)
            if r["status"] == "timeout" and args.timeout_caught:
                r["status"] = "caught (timeout)"
            # For information: does the random model run alone (no fixed scenario, no
            # conformance test) see it too?
            alone = run_tests(root, "%s and test_variants_follow" % SELECT[variant],
                              args.timeout, tests=TESTS[:1])
            r["random_model"] = alone["status"]
            rows.append(dict(name=name, variant=variant, deviation=what, **r))
            print("%-28s %-11s %-16s %6.1f s  %s  (random model alone: %s)" % (
                name, variant, r["status"], r["seconds"], r["caught_by"] or "",
                alone["status"]), flush=True)
            if r["status"] == "error":
                print("    " + "\n    ".join(r["detail"]), flush=True)
    caught = sum(1 for r in rows if r["status"].startswith("caught"))
    print("caught/seeded: %d/%d" % (caught, len(rows)))
    if not args.only:
        record = {
            "schema": 1, "kind": "mutation", "tool": "tools/mutate.py",
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": git_commit(), "python": platform.python_version(),
            "tests": TESTS, "model": "fixed seed, EVENTS_MODEL_EXAMPLES=%s STEPS=%s, unshrunk"
            % (os.environ.get("EVENTS_MODEL_EXAMPLES") or "16",
               os.environ.get("EVENTS_MODEL_STEPS") or "30"),
            "timeout_s": args.timeout, "caught": caught, "seeded": len(rows),
            "baseline": {"passed": base["passed"], "seconds": base["seconds"]},
            "caught_by_random_model_alone": sum(1 for r in rows
                                                if r["random_model"] == "caught"),
            "rows": [{k: r[k] for k in ("name", "variant", "deviation", "status",
                                        "caught_by", "seconds", "random_model")}
                     for r in rows],
        }
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "mutation.json"), "w") as f:
            f.write(json.dumps(record, indent=1) + "\n")
        with open(os.path.join(RESULTS, "mutation.md"), "w") as f:
            f.write("# Mutation run (`make mutate`, tools/mutate.py)\n\n"
                    "%s, commit %s, Python %s; tests: %s (model: %s); %s s per mutant.\n"
                    "Baseline (unpatched copy): %s tests passed in %s s.\n\n" % (
                        record["time_utc"], record["commit"], record["python"],
                        " + ".join(TESTS), record["model"], args.timeout, base["passed"],
                        base["seconds"])
                    + table_md(rows, caught, len(rows)))
        print("written: results/mutation/mutation.json, results/mutation/mutation.md")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
