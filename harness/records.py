"""Run records: one JSON file per run, one CSV row per run, never an overwrite.

Design.  A benchmark's figures are only worth keeping if nothing can silently
replace or corrupt them, so every write here follows three rules:

* **One file per run**, named by a run id that is unique even for two batches
  started in the same second on the same machine: UTC timestamp + PID + a random
  suffix.  Files are written to a temp file in the same directory and renamed
  into place, so a reader never sees half a record and a crash leaves at worst a
  stray ``.tmp-*.part`` file, which readers ignore.  The final name is created
  with ``os.link`` (fails if the name exists, atomically) rather than
  ``os.replace`` (which would silently replace): nothing earlier is overwritten
  even in the (one in a trillion) case of an id collision.
* **The CSV is append-only**, under an exclusive ``flock`` so two concurrent
  batches cannot interleave half rows.  The header is written once, by whoever
  finds the file empty while holding the lock.  If the columns ever change, rows
  go to a new ``runs-<n>.csv`` rather than corrupting the old table's shape.
* **Readers are forgiving**: ``load_runs`` skips (and reports) any file it
  cannot parse, so one corrupt file never hides the others.

The JSON record is the source of truth; the CSV is a flat convenience for pandas
(``pandas.read_csv("results/runs.csv")``).  Its columns are defined once: the run's
identity here, its figures in the metrics table (harness/metrics.py).

The results directory defaults to ``<repo>/results`` and can be redirected with
``EVENTS_RESULTS_DIR`` or the runner's ``--results-dir`` (tests always do).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
import secrets
import tempfile
import time
from typing import Callable

from harness import metrics, runrecord, summary
# The record's shape and schema live in runrecord.py; its time stamp is re-exported for the
# writers of other files under results/.
from harness.runrecord import SCHEMA, utc_now as utc_now

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The flat columns of runs.csv: (column, function of the record).  Only scalar
# figures: nested data (snapshots, env, failures by cause) stays in the JSON.  The
# figures are the metrics table's rows (harness/metrics.py), in its order, between the
# run's identity and conditions and its commit.
def _c(key):
    return lambda r: (r.get("config") or {}).get(key)


IDENTITY_COLUMNS = (
    ("run_id", lambda r: r.get("run_id")),
    ("batch_id", lambda r: r.get("batch_id")),
    ("kind", lambda r: r.get("kind")),
    ("time_utc", lambda r: r.get("time_utc")),
    ("spec", lambda r: r.get("spec")),
    ("server", lambda r: r.get("server")),
    ("link", lambda r: r.get("link")),
    ("round", lambda r: r.get("round")),
    ("position", lambda r: r.get("position")),
    ("status", lambda r: r.get("status")),
    ("error", lambda r: (r.get("error") or "").splitlines()[0][:200] if r.get("error") else ""),
    ("concurrency", _c("concurrency")),
    ("size", _c("size")),
    ("duration", _c("duration")),
    ("warmup", _c("warmup")),
    ("rate", _c("rate")),
    ("close_mode", _c("close_mode")),
    # The interpreter as a label (python3.12, python3.13t), never its path: the path is this
    # machine's (the JSON record keeps it), the CSV is read on others. Blank = the venv's.
    ("python", lambda r: summary.python_label(r) if (r.get("config") or {}).get("python") else None),
)
TAIL_COLUMNS = (("git_commit", lambda r: (r.get("env") or {}).get("git_commit")),)


def csv_columns() -> list[tuple[str, Callable[[dict], object]]]:
    """runs.csv's columns, read from the metrics table at each call (a row added to it
    is a column here)."""
    return [*IDENTITY_COLUMNS, *((m.name, m.value) for m in metrics.METRICS if m.csv), *TAIL_COLUMNS]


def csv_header() -> list[str]:
    return [name for name, _ in csv_columns()]


def results_dir(override: str | None = None) -> str:
    """The results directory: ``override``, else $EVENTS_RESULTS_DIR, else <repo>/results."""
    path = override or os.environ.get("EVENTS_RESULTS_DIR") or os.path.join(ROOT, "results")
    return os.path.abspath(path)


def shown_path(path: str) -> str:
    """An absolute path as results/ shows it: inside the repository relative to it,
    elsewhere (an interpreter under a home directory) by its last component only, so that
    nothing in results/ names a path of this machine."""
    if path == ROOT or path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT)
    return os.path.basename(path.rstrip("/")) or path


# An absolute path inside a text (not the tail of a relative path or of a URL).
ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+@-]+/)+[\w.+@-]*")
# Absolute paths that name the system, not this machine's files: kept as they are.
_SYSTEM_DIRS = ("/bin/", "/dev/", "/etc/", "/lib", "/opt/", "/proc/", "/run/", "/sbin/",
                "/sys/", "/usr/", "/var/")


def portable(obj):
    """``obj`` with every string that is a path of this machine (the repository, a home
    directory, another checkout, a temporary directory) written as :func:`shown_path`
    shows it: ``.venv/bin/python``, ``python3.13t``.  Everything written to results/ goes
    through it; other strings, and system paths such as /sys/fs/cgroup/..., are kept."""
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    if isinstance(obj, str) and "/" in obj:
        # Whole values (an executable) and paths inside text (another process's command
        # line, as the noise guard records it) alike.
        return ABS_PATH.sub(lambda m: m.group(0) if m.group(0).startswith(_SYSTEM_DIRS)
                            else shown_path(m.group(0)), obj)
    return obj


def write_json(path: str, obj, replace: bool = False) -> None:
    """``obj`` as results/ keeps JSON: portable paths, indent 1, written atomically;
    FileExistsError rather than replacing ``path``, unless ``replace`` (a file that holds
    the latest count of something, as results/icount/)."""
    _atomic_write(path, json.dumps(portable(obj), indent=1, default=str) + "\n", replace)


def new_id(prefix: str = "") -> str:
    """``20261126T164512Z-12345-a1b2c3d4e5``: sortable by time, unique across
    processes (PID) and within one (40 random bits: even 2000 ids in one second
    collide with odds of about 1e-6, and the writer re-rolls a taken id anyway)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{prefix}{stamp}-{os.getpid()}-{secrets.token_hex(5)}"


def _atomic_write(path: str, text: str, replace: bool = False) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory;
    raise FileExistsError rather than replace an existing ``path``, unless ``replace``."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)    # atomic, and EEXIST instead of an overwrite
        except FileExistsError:
            raise
        except OSError:
            # A filesystem without hard links: check, then rename (a tiny race window).
            if os.path.exists(path):
                raise FileExistsError(path) from None
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def write_record(record: dict, root: str | None = None) -> str:
    """Write one run record (runs/<run_id>.json) and append its CSV row.
    Returns the JSON path.  A run id already on disk is given a fresh suffix
    rather than replacing the earlier file."""
    root = results_dir(root)
    runs = os.path.join(root, "runs")
    record.setdefault("schema", SCHEMA)
    while True:
        path = os.path.join(runs, f"{record['run_id']}.json")
        try:
            write_json(path, record)
            break
        except FileExistsError:
            record["run_id"] = new_id()
    append_csv(record, root)
    return path


def csv_row(record: dict) -> list:
    row = []
    for _, get in csv_columns():
        try:
            value = get(record)
        except (AttributeError, TypeError, IndexError):
            value = None
        row.append("" if value is None else value)
    return row


def append_csv(record: dict, root: str | None = None) -> str:
    """Append the record's row to runs.csv under an exclusive flock."""
    root = results_dir(root)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, "runs.csv")
    n = 1
    while True:
        with open(path, "a+", newline="") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    _write_rows(f, [csv_header(), csv_row(record)])
                    return path
                f.seek(0)
                header = f.readline().rstrip("\r\n").split(",")
                if header == csv_header():
                    f.seek(0, os.SEEK_END)
                    _write_rows(f, [csv_row(record)])
                    return path
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        # Columns changed since this file was started: never rewrite it, use the next file.
        n += 1
        path = os.path.join(root, f"runs-{n}.csv")


def _write_rows(f, rows) -> None:
    # One write() call per append: with O_APPEND and the lock held, the row lands whole.
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f.write(buf.getvalue())
    f.flush()


def _runs_dir(path: str) -> str:
    sub = os.path.join(path, "runs")
    return sub if os.path.isdir(sub) else path


def load_runs(directory: str | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Read every run record.  ``directory`` is a results directory (with runs/)
    or a runs directory; default: results_dir().  Returns ``(records, problems)``
    where problems is a list of ``(path, reason)`` for files that were skipped.
    Records are sorted by (time_utc, run_id)."""
    directory = _runs_dir(results_dir(directory))
    records, problems = [], []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return [], []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, UnicodeDecodeError) as e:
            problems.append((path, f"unreadable: {e}"))
            continue
        except ValueError as e:
            problems.append((path, f"not valid JSON: {e}"))
            continue
        reason = _invalid(record)
        if reason:
            problems.append((path, reason))
            continue
        # Every record a reader gets is in the current schema (runrecord.upgrade).
        records.append(runrecord.upgrade(record))
    records.sort(key=lambda r: (str(r.get("time_utc")), str(r.get("run_id"))))
    return records, problems


def _invalid(record) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    for key in ("run_id", "kind", "spec", "status"):
        if key not in record:
            return f"missing field {key!r}"
    if record.get("schema") not in runrecord.READABLE:
        return f"unknown schema {record.get('schema')!r}"
    if not isinstance(record.get("metrics", {}), (dict, type(None))):
        return "field 'metrics' is not an object"
    return None


def write_batch(batch_id: str, summary: dict, table_md: str, root: str | None = None) -> tuple[str, str]:
    """results/batches/<batch_id>.json (the summary) and .md (the table)."""
    d = os.path.join(results_dir(root), "batches")
    jpath, mpath = os.path.join(d, f"{batch_id}.json"), os.path.join(d, f"{batch_id}.md")
    write_json(jpath, summary)
    _atomic_write(mpath, table_md)
    return jpath, mpath
