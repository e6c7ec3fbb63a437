"""The run record: one typed shape, one constructor, one upgrade of older records.

Design.  A run record (docs/architecture.md section 4) used to be an 18-line dict
literal written twice (the runner's Batch.run and two-host mode), and its readers
guarded every field with ``.get(...) or {}`` because a record might be missing any of
them.  Now :class:`RunRecord` states the fields, :func:`new_run` is the only place a
record is built (so every record in memory has every field), and :func:`upgrade` is
the only place an older record is read: ``records.load_runs`` passes every file
through it, so every record a reader gets has every field too, in this schema.

Schema versions (the ``schema`` field):

* 1 -- records written before issue 30: ``config``/``metrics``/``kernel``/``env`` may
  be null or absent, ``metrics`` holds only the figures of its day (no events per
  pass before issue 28, no server_bound before the CPU budget).
* 2 -- this module: ``config``, ``metrics``, ``kernel`` and ``env`` are objects (``{}``
  when nothing was measured), ``snapshots`` and ``warnings`` lists, and ``metrics``
  has a key for every per-run figure of the metrics table (null when not measured).

Upgrading 1 -> 2 fills those defaults; a figure missing from an old record's metrics
is read the way the metrics table reads it from the record (events per pass from its
STATS line), else null.  Nothing is recomputed that the record measured.  A record
of an unknown schema is refused (``UnknownSchema``), never guessed at.

Base layer: imports only the metrics table.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypedDict

from harness import metrics

SCHEMA = 2
READABLE = (1, 2)          # the schemas load_runs accepts (older ones upgraded)

# Fields that are objects (lists) in every record of this schema, never null.
OBJECTS = ("config", "metrics", "kernel", "env")
LISTS = ("snapshots", "warnings")


class UnknownSchema(ValueError):
    pass


class RunRecord(TypedDict):
    """The fields every run record has (records carry more: rtt, labels, soak,
    two_host, kernel_client...; readers ignore what they do not know)."""
    schema: int
    run_id: str
    batch_id: str | None
    kind: str                      # bench | compare | sweep | soak | reproduce | load | serve ...
    time_utc: str
    spec: str
    server: str | None
    link: str
    round: int
    position: int
    status: str                    # ok | failed
    error: str | None
    server_stderr_tail: str | None
    config: dict[str, Any]         # concurrency, size, duration, warmup, rate, python, server_cpu...
    client: dict[str, Any] | None  # the load client's FINAL line (null: none)
    server_stats: dict[str, Any] | None   # the server's STATS line (null: none)
    snapshots: list[dict[str, Any]]
    metrics: dict[str, Any]        # one key per per-run row of the metrics table
    kernel: dict[str, Any]
    link_stats: dict[str, Any] | None
    env: dict[str, Any]
    warnings: list[str]
    server_cgroup: dict[str, Any] | None


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run(*, run_id: str, batch_id: str | None, kind: str, spec: str, server: str | None,
            link: str, round: int, position: int, config: dict[str, Any] | None = None,
            env: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A run record before its run: status ok, every figure null.  ``extra``: the
    fields a kind of run adds (labels, two_host...).  Returned as a plain dict (the
    writers add fields as the run goes); its keys are RunRecord's."""
    record: RunRecord = {
        "schema": SCHEMA, "run_id": run_id, "batch_id": batch_id, "kind": kind,
        "time_utc": utc_now(), "spec": spec, "server": server, "link": link,
        "round": round, "position": position, "status": "ok", "error": None,
        "server_stderr_tail": None, "config": dict(config or {}), "client": None,
        "server_stats": None, "snapshots": [], "metrics": metrics.compute_metrics(None, None, None),
        "kernel": {}, "link_stats": None, "env": env if env is not None else {}, "warnings": [],
        "server_cgroup": None,
    }
    return {**record, **extra}


def upgrade(record: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """``record`` in this schema: itself when it is already complete, else an upgraded
    shallow copy (the caller's dict is never changed).  UnknownSchema for a schema this
    code does not know how to read; with ``strict=False`` (a record built in memory, as
    tests and tools do, rather than read from a file) one without a ``schema`` is read
    as schema 1."""
    version = record.get("schema")
    if version is None and not strict:
        version = 1
    if version not in READABLE:
        raise UnknownSchema(f"unknown schema {version!r}")
    names = [m.name for m in metrics.run_metrics()]
    m = record.get("metrics")
    if version == SCHEMA and all(isinstance(record.get(k), dict) for k in OBJECTS) \
            and all(isinstance(record.get(k), list) for k in LISTS) \
            and isinstance(m, dict) and all(n in m for n in names):
        return record
    out = dict(record)
    for k in OBJECTS:
        if not isinstance(out.get(k), dict):
            out[k] = {}
    for k in LISTS:
        if not isinstance(out.get(k), list):
            out[k] = []
    for k in ("client", "server_stats", "link_stats", "server_cgroup", "error",
              "server_stderr_tail", "batch_id", "server", "run_id", "kind", "spec", "time_utc",
              "round", "position"):
        out.setdefault(k, None)
    out.setdefault("status", "ok")
    out.setdefault("link", "loopback")
    old = dict(out["metrics"])
    # A figure an old record lacks is read as the metrics table reads it from a record
    # (events per pass: from the STATS line), else null.
    out["metrics"] = {**{n: (metrics.by_name(n).value(record) if n not in old else old[n])
                         for n in names}, **old}
    out["schema"] = SCHEMA
    return out


def full(runs) -> list[dict[str, Any]]:
    """Every record of ``runs`` in this schema, every field present (upgrade; a record built
    by hand, without ``schema``, is read as schema 1): what a reader calls once at its entry
    so that it can use the fields, not ``.get(...) or {}`` guards."""
    return [upgrade(r, strict=False) for r in runs]
