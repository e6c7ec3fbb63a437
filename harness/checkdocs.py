"""make check-docs: every marked figure in README.md and docs/*.md recomputed from results/.

Design essay.  A figure in the docs is only as good as the record behind it, and a
reader who recomputes figures by hand finds the stale ones too late.  So a figure that
comes from a record carries an invisible marker naming its source and quantity, right
after it::

    1.03 [1.01–1.06]<!--check b20261130T051551Z-17176-0567c62f78 alone_proc cpu_ratio_ci-->

The checker recomputes the quantity with the project's one summary engine
(harness/summary.py, on the batch's recorded runs: the same rows as the batch table) and
compares it with the text between the previous marker (or the line's start) and this
one: the *last* N numbers there against the N recorded values, each within half a unit
of its own last printed digit (``1.03`` matches 1.025..1.035, ``6,111`` matches
6,110.5..6,111.5, ``17.6k`` matches 17,550..17,650); a word quantity (a verdict) must
appear in that text.  Units, words and the interval's dash may sit between the numbers.
Three sources (docs/statistics.md, "Checked figures", has the table of quantities):

* ``<!--check BATCH SPEC QUANTITY [key=value ...]-->``: a batch under results/batches/
  (``A+B``: two batches read as one, each run paired within its own batch, as
  ``make combine`` does).  ``key=value`` picks the row when a spec ran under several
  conditions (link, concurrency, rate, budget, python, size); ``base=SPEC`` takes the
  ratios to SPEC instead of the batch's baseline (``summary.summarize(baseline=)``).  SPEC ``*``: every run of
  the batch, for the run-level quantities.
* ``<!--check icount SPEC [QUANTITY]-->``: results/icount/SPEC.json (instructions per
  connection).
* ``<!--check syscalls SPEC [NAME]-->``: results/syscalls/SPEC.json, the total system
  calls per connection or one call's.
* ``<!--check json PATH KEY.PATH [scale=X]-->``: any number in a JSON file under results/.

A marker naming a batch or file that does not exist fails, like a wrong figure; markers
in code (fenced blocks, inline backticks) are examples and are skipped.  The
checker reads records only (no run, no pandas): fast enough for ``make test``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import sys

from harness import cmdline, records, runrecord, summary

MARKER = re.compile(r"<!--\s*check\s+(.*?)\s*-->")
# A number as the docs print it: 6,111 / 1.03 / −700 / 17.6k.  A hyphen counts as a minus
# only where it cannot be a range's dash (not after a digit).
NUMBER = re.compile(r"(?:(?<![\d.])[-−])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?k?")

# Row quantities: name -> (row fields, scale).  Values are compared in the printed unit.
ROW: dict[str, tuple[list[str], float]] = {
    "conn_ratio": (["ratio_conn_to_baseline"], 1),
    "conn_ci": (["ratio_conn_interval.0", "ratio_conn_interval.1"], 1),
    "conn_ratio_ci": (["ratio_conn_to_baseline", "ratio_conn_interval.0", "ratio_conn_interval.1"], 1),
    "cpu_ratio": (["ratio_cpu_to_baseline"], 1),
    "cpu_ci": (["ratio_cpu_interval.0", "ratio_cpu_interval.1"], 1),
    "cpu_ratio_ci": (["ratio_cpu_to_baseline", "ratio_cpu_interval.0", "ratio_cpu_interval.1"], 1),
    "conn_s": (["conn_per_s_median"], 1),
    "conn_s_range": (["conn_per_s_median", "conn_per_s_min", "conn_per_s_max"], 1),
    "cpu_us": (["server_cpu_us_per_conn_median"], 1),
    "cpu_us_range": (["server_cpu_us_per_conn_median", "server_cpu_us_per_conn_min",
                      "server_cpu_us_per_conn_max"], 1),
    "p50_ms": (["p50_us_median"], 0.001),
    "p99_ms": (["p99_us_median"], 0.001),
    "consistency": (["consistency"], 1),
    "runs": (["clean"], 1),
    "rounds": (["paired_rounds"], 1),
    "lost": (["lost"], 1),
    "server_bound": (["server_bound"], 1),
    "client_bound": (["client_bound"], 1),
    "rtt_ms": (["rtt_ms_median"], 1),
    "events_per_pass": (["events_per_pass_median"], 1),
}
WORDS = {"verdict": "verdict_conn", "cpu_verdict": "verdict_cpu"}
# Run-level quantities over the counting runs of SPEC (or of the batch: SPEC "*").
RUNS: dict[str, tuple] = {
    "client_share_max": (lambda r: r["metrics"].get("client_cpu_share"), max, 100),
    "cpu_speed_us": (lambda r: r["env"].get("cpu_speed_us"), summary.median, 1),
    "cpu_speed_us_range": (lambda r: r["env"].get("cpu_speed_us"), "range", 1),
}


def _split(r: dict, part: str):
    """User or sys µs per connection of one run: its CPU per connection split by the
    server's user/sys times (the split harness/frame.py draws in cpu_split.png)."""
    ss, m = r.get("server_stats") or {}, r.get("metrics") or {}
    u, s, cpu = ss.get("cpu_user_s"), ss.get("cpu_sys_s"), m.get("server_cpu_us_per_conn")
    if u is None or not s or cpu is None or u + s <= 0:
        return None
    share = u / (u + s)
    return cpu * (share if part == "user" else 1 - share)


RUNS["user_us"] = (lambda r: _split(r, "user"), summary.median, 1)
RUNS["sys_us"] = (lambda r: _split(r, "sys"), summary.median, 1)
FILTERS = ("link", "concurrency", "rate", "budget", "python", "size")


class MarkerError(Exception):
    """A marker that names nothing recorded (a missing batch, an unknown quantity)."""


# --------------------------------------------------------------------------- sources

class Records:
    """The results tree, read lazily and cached: batches, their runs and rows."""

    def __init__(self, root: str):
        self.root = root
        self._runs: dict = {}
        self._rows: dict = {}

    def batch_runs(self, batch: str) -> list[dict]:
        if batch not in self._runs:
            out = []
            for b in batch.split("+"):
                path = os.path.join(self.root, "batches", b + ".json")
                if not os.path.exists(path):
                    raise MarkerError(f"batch {b} not found in {records.shown_path(path)}")
                with open(path) as f:
                    ids = json.load(f).get("run_ids") or []
                for rid in ids:
                    rp = os.path.join(self.root, "runs", rid + ".json")
                    if not os.path.exists(rp):
                        raise MarkerError(f"run {rid} of batch {b} not found")
                    with open(rp) as f:
                        out.append(runrecord.upgrade(json.load(f), strict=False))
            self._runs[batch] = out
        return self._runs[batch]

    def rows(self, batch: str, base: str | None = None) -> list[dict]:
        """The batch's summary rows; ``base``: ratios to that spec instead of the baseline rule."""
        if (batch, base) not in self._rows:
            self._rows[(batch, base)] = summary.summarize(self.batch_runs(batch), baseline=base)
        return self._rows[(batch, base)]

    def json(self, rel: str):
        path = os.path.normpath(os.path.join(self.root, os.path.relpath(rel, "results")
                                             if rel.startswith("results/") else rel))
        if not os.path.exists(path):
            raise MarkerError(f"{rel} not found")
        with open(path) as f:
            return json.load(f)


def _dig(obj, path: str):
    for part in path.split("."):
        if isinstance(obj, (list, tuple)) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            raise MarkerError(f"no {path!r} in the record")
    return obj


def _pick(rows: list[dict], spec: str, filters: dict) -> dict:
    hits = [r for r in rows if r["spec"] == spec
            and all(str(r.get(k)) == v for k, v in filters.items())]
    if not hits:
        raise MarkerError(f"no row for spec {spec!r}" + (f" with {filters}" if filters else ""))
    if len(hits) > 1:
        seen = {k: sorted({str(r.get(k)) for r in hits}) for k in FILTERS}
        amb = {k: v for k, v in seen.items() if len(v) > 1}
        raise MarkerError(f"{len(hits)} rows for spec {spec!r}: add one of {amb}")
    return hits[0]


def recorded(rec: Records, words: list[str]) -> tuple[list[float], list[str]]:
    """(numbers, words) a marker's arguments name."""
    if not words:
        raise MarkerError("empty marker")
    src, args = words[0], words[1:]
    # key=value options; a spec may hold "=" itself (mul_thread:pool=oneshot), so only a
    # known key is an option.
    is_opt = [("=" in a and a.split("=", 1)[0] in FILTERS + ("scale", "base")) for a in args]
    opts = dict(a.split("=", 1) for a, o in zip(args, is_opt) if o)
    args = [a for a, o in zip(args, is_opt) if not o]
    if src == "icount":
        if not args:
            raise MarkerError("icount needs a SPEC")
        q = args[1] if len(args) > 1 else "instructions_per_connection"
        return [float(_dig(rec.json(f"icount/{args[0]}.json"), f"rows.0.{q}"))], []
    if src == "syscalls":
        if not args:
            raise MarkerError("syscalls needs a SPEC")
        d = rec.json(f"syscalls/{args[0]}.json")["per_connection"]
        return [float(d["total"] if len(args) < 2 else _dig(d, f"by_name.{args[1]}"))], []
    if src == "json":
        if len(args) != 2:
            raise MarkerError("json needs PATH KEY.PATH")
        return [float(_dig(rec.json(args[0]), args[1])) * float(opts.get("scale", 1))], []
    if not re.match(r"^b\d{8}T", src):
        raise MarkerError(f"unknown source {src!r}: a batch id, icount, syscalls or json")
    if len(args) != 2:
        raise MarkerError("a batch marker is: BATCH SPEC QUANTITY [key=value ...]")
    spec, quantity = args
    if quantity in RUNS:
        get, agg, scale = RUNS[quantity]
        got = [get(r) for r in rec.batch_runs(src) if summary.counts(r)
                and (spec == "*" or summary.spec_of(r) == spec)
                and all(str(dict(zip(summary.CONDITIONS, summary.conditions(r))).get(k)) == v
                        for k, v in opts.items())]
        vals = [float(v) for v in got if v is not None]
        if not vals:
            raise MarkerError(f"no run of {spec!r} records {quantity}")
        if agg == "range":
            return [min(vals) * scale, max(vals) * scale], []
        return [float(agg(vals)) * scale], []  # type: ignore[operator]
    base = opts.pop("base", None)
    row = _pick(rec.rows(src, base), spec, opts)
    if quantity in WORDS:
        return [], [summary.verdict_text(row, "conn" if quantity == "verdict" else "cpu")]
    if quantity not in ROW:
        raise MarkerError(f"unknown quantity {quantity!r}: one of "
                          + ", ".join(list(ROW) + list(WORDS) + list(RUNS)))
    fields, scale = ROW[quantity]
    out = []
    for f in fields:
        v = _dig(row, f)
        if v is None:
            raise MarkerError(f"{spec} has no {f} in {src}")
        out.append(float(v) * scale)
    return out, []


# --------------------------------------------------------------------------- comparison

def parse_number(text: str) -> tuple[float, float]:
    """(value, half a unit of its last printed digit)."""
    t = text.replace(",", "").replace("−", "-")
    mult = 1000.0 if t.endswith("k") else 1.0
    t = t.rstrip("k")
    dec = len(t.split(".")[1]) if "." in t else 0
    return float(t) * mult, 0.5 * 10 ** -dec * mult


def shown(claimed: str, value: float) -> str:
    """The recorded value printed one digit finer than the claim (6,111 -> 6,110.6)."""
    _, half = parse_number(claimed)
    dec = max(0, round(-math.log10(half * 2)) + 1)
    return f"{value:,.{dec}f}" if "," in claimed or abs(value) >= 10000 else f"{value:.{dec}f}"


def matches(claimed: str, value: float) -> bool:
    v, half = parse_number(claimed)
    return abs(v - value) <= half * (1 + 1e-9) + 1e-12


def check_text(text: str, name: str, rec: Records) -> tuple[int, list[str]]:
    """(figures checked, problems as 'file:line: ...') for one document."""
    problems, checked, fenced = [], 0, False
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced:
            continue            # a marker in a code block is an example, not a claim
        start, seg = 0, ""
        code = [c.span() for c in re.finditer(r"`[^`]*`", line)]
        for m in MARKER.finditer(line):
            if any(a <= m.start() < b for a, b in code):
                continue        # in inline code: an example
            # Markers back to back check one figure twice (one value, two quantities).
            seg = line[start:m.start()] if line[start:m.start()].strip() else seg
            start = m.end()
            checked += 1
            where = f"{name}:{lineno}: <!--check {m.group(1)}-->"
            try:
                nums, words = recorded(rec, m.group(1).split())
            except MarkerError as e:
                problems.append(f"{where}: {e}")
                continue
            except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
                problems.append(f"{where}: unreadable record ({e})")
                continue
            found = NUMBER.findall(seg)
            if len(found) < len(nums):
                problems.append(f"{where}: {len(nums)} figure(s) expected before the marker, "
                                f"found {len(found)} in {seg.strip()[-60:]!r}")
                continue
            claimed = found[len(found) - len(nums):]
            if not all(matches(c, v) for c, v in zip(claimed, nums)):
                problems.append(f"{where}: claimed {' / '.join(claimed)}, recorded "
                                + " / ".join(shown(c, v) for c, v in zip(claimed, nums)))
            low = seg.lower()
            for w in words:
                if w.lower() not in low:
                    problems.append(f"{where}: claimed {seg.strip()[-40:]!r}, recorded verdict {w!r}")
    return checked, problems


def default_files(top: str) -> list[str]:
    return [os.path.join(top, "README.md")] + sorted(glob.glob(os.path.join(top, "docs", "*.md")))


def check(files: list[str], root: str, top: str) -> tuple[int, list[str]]:
    rec = Records(root)
    total, problems = 0, []
    for path in files:
        with open(path, encoding="utf-8") as f:
            n, p = check_text(f.read(), os.path.relpath(path, top), rec)
        total += n
        problems += p
    return total, problems


DESCRIPTION = "recompute every marked figure in README.md and docs/*.md"


def main(argv: list[str] | None = None) -> int:
    return cmdline.Subcommand("check-docs", DESCRIPTION, add_arguments, run_command).main(argv)


def add_arguments(p) -> None:
    """check-docs' arguments, on the shared parser (cli.SUBCOMMANDS) or its own (main)."""
    p.add_argument("files", nargs="*", help="documents to check (default: README.md docs/*.md)")
    p.add_argument("--results", default=None, help="the results tree (default: results/)")


def run_command(a) -> int:
    top = os.getcwd()
    files = a.files or default_files(top)
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        return cmdline.die(f"no such document: {missing[0]}", cmdline.EXIT_USAGE)
    total, problems = check(files, records.results_dir(a.results), top)
    for line in problems:
        print(line)
    print(f"check-docs: {total} marked figure(s) in {len(files)} document(s), "
          f"{len(problems)} mismatch(es)")
    return 1 if problems else 0


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"check-docs": (DESCRIPTION, add_arguments, run_command)}


if __name__ == "__main__":
    sys.exit(main())
