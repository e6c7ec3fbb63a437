"""The servers across interpreters, from one recorded batch (issue 25, ``make interpreters``).

Design: a batch that pairs interpreters is an ordinary compare batch whose specs say where
they run (harness/servers/interp.py): ``alone_proc`` on the default CPython,
``alone_proc:python=/usr/bin/python3.11`` on Debian's PGO/LTO build,
``alone_proc:python=pypy3`` on PyPy's JIT, ``alone_proc:compiled`` on the mypyc-compiled
library.  Every run of a round ran side by side with the others, so any two specs of the
batch can be paired; this module only chooses *which* pairs to show:

* each spec against interpreted raw epoll on the default CPython (what a user gains by
  switching interpreter, library included);
* each spec against raw epoll on the *same* interpreter (the library's extra there; a
  compiled spec is paired with raw epoll on its CPython while raw epoll has no compiled
  build in the batch, and the table says so);
* the issue's targets: compiled alone_proc against uvloop, compiled alone_proc:diet against
  c_epoll:diet, PyPy's library extra.

Every ratio is the median of per-round ratios with its distribution-free interval
(harness/summary.py, the one summary engine); nothing here measures.  Output:
``results/interpreters/BATCH.md`` and ``.png``, from the recorded runs only.
"""

from __future__ import annotations

import argparse
import os
import sys

from harness import batchchart
from harness import records as _records
from harness import runrecord as _runrecord
from harness import summary as _summary

BASE = "raw_epoll"
SERVERS = ("raw_epoll", "master", "alone_proc", "asyncio", "uvloop", "c_epoll")
C_SERVERS = ("c_epoll", "redis_ae")
TARGETS = (  # (spec, against, what, bound on the CPU ratio)
    ("alone_proc:compiled", "uvloop", "compiled alone_proc CPU/conn <= 0.85 x uvloop", 0.85),
    ("alone_proc:compiled,diet", "c_epoll:diet", "compiled alone_proc:diet CPU/conn <= 1.3 x c_epoll:diet", 1.3),
    ("alone_proc:compiled_app", "uvloop", "alone_proc, library and echo app compiled, CPU/conn <= 0.85 x uvloop",
     0.85),
    ("alone_proc:compiled_app,diet", "c_epoll:diet",
     "alone_proc:diet, library and echo app compiled, CPU/conn <= 1.3 x c_epoll:diet", 1.3),
)


def where(spec: str, runs: list[dict]) -> str:
    """The interpreter column of a spec: 'mypyc' for compiled, else its python=, else default."""
    runs = _runrecord.full(runs)
    head, _, rest = spec.partition(":")
    if head in C_SERVERS:
        return "C"
    items = dict(i.partition("=")[::2] for i in rest.split(",") if i) if rest else {}
    if "compiled_app" in items or ("compiled" in items and head == BASE):
        return "mypyc-app"
    if "compiled" in items:
        return "mypyc-lib"
    py = items.get("python")
    if not py:
        return "default"
    info = next((r["config"].get("spec_python") for r in runs
                 if r.get("spec") == spec and r["config"].get("spec_python")), None)
    if info and info.get("implementation") == "pypy":
        return "pypy"
    return py


def same_interp_base(spec: str, interp: str, present=()) -> str:
    """Raw epoll on the same interpreter, with the spec's diet if the batch has that
    (``raw_epoll:compiled`` for mypyc-app; interpreted raw epoll for mypyc-lib: its echo
    app is interpreted too); else raw epoll on that interpreter; else the default's."""
    items = [i for i in spec.partition(":")[2].split(",") if i]
    keep = [i for i in items if i.startswith(("python=", "diet"))]
    if interp == "mypyc-app":
        keep.append("compiled")
    cands = [BASE + (":" + ",".join(sorted(keep)) if keep else ""),
             BASE + (":" + ",".join(sorted(i for i in keep if not i.startswith("diet")))
                     if [i for i in keep if not i.startswith("diet")] else ""), BASE]
    if interp == "C":
        return BASE
    return next((c for c in cands if c in present), cands[-1])


def interp_label(interp: str, runs: list[dict]) -> str:
    runs = _runrecord.full(runs)
    if interp.startswith("mypyc"):
        part = interp.split("-")[1]
        c = next((r["config"].get("compiled") for r in runs
                  if (r["config"].get("compiled") or {}).get("part") == part), None) or {}
        what = "the library compiled, echo app interpreted" if part == "lib" else \
            "library, echo app and raw epoll server compiled"
        return f"mypyc {c.get('mypy', '?')} on the default CPython: {what}"
    if interp == "C":
        return "C (reference)"
    if interp == "default":
        sp = next((r["env"].get("server_python") for r in runs
                   if r["env"].get("server_python")), None) or {}
        return f"CPython {sp.get('version', '?')} (default)"
    info = next((r["config"].get("spec_python") for r in runs
                 if r["config"].get("spec_python")
                 and (interp == "pypy") == ((r["config"]["spec_python"]).get("implementation") == "pypy")
                 and (interp == "pypy" or r["config"]["spec_python"].get("name") == interp)), None) or {}
    impl = {"pypy": "PyPy", "cpython": "CPython"}.get(str(info.get("implementation")), "?")
    ft = ", free-threaded: GIL off" if info.get("gil") is False else ""
    return f"{impl} {info.get('version', '?')} ({info.get('executable', interp)}{ft})"


def _rows_by_spec(runs: list[dict], baseline: str) -> dict:
    present = {r.get("spec") for r in runs}
    if baseline not in present:
        return {}
    return {r["spec"]: r for r in _summary.summarize(runs, baseline=baseline) if r.get("rate") is None}


def _ratio(row: dict | None, which: str) -> str:
    if not row or row.get("is_baseline"):
        return "1 (base)" if row else "–"
    return _summary.ratio_text(row.get(f"ratio_{which}_to_baseline"), row.get(f"ratio_{which}_interval"))


def table(runs: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per spec: interpreter, medians, both ratio pairs; and the interpreters' order."""
    to_default = _rows_by_spec(runs, BASE)
    order = _summary.batch_order(runs)
    specs = [s for b in order.values() for s in b]
    interps: list[str] = []
    out = []
    bases: dict = {}
    for spec in specs:
        it = where(spec, runs)
        if it not in interps:
            interps.append(it)
        base = same_interp_base(spec, it, specs)
        if base not in bases:
            bases[base] = _rows_by_spec(runs, base)
        d, s = to_default.get(spec), bases[base].get(spec)
        row = d or s
        if row is None:
            continue
        out.append({"spec": spec, "server": spec.split(":")[0].split("@")[0], "interp": it,
                    "cpu": row.get("server_cpu_us_per_conn_median"),
                    "conn": row.get("conn_per_s_median"), "clean": row.get("clean"),
                    "runs": row.get("runs"), "lost": row.get("lost"),
                    "client_bound": row.get("client_bound"),
                    "cpu_vs_default": _ratio(d, "cpu"), "conn_vs_default": _ratio(d, "conn"),
                    "same_base": base, "cpu_vs_same": _ratio(s, "cpu"), "conn_vs_same": _ratio(s, "conn"),
                    "cpu_ratio_same": (s or {}).get("ratio_cpu_to_baseline"),
                    "cpu_interval_same": (s or {}).get("ratio_cpu_interval")})
    return out, interps


def targets(runs: list[dict]) -> list[str]:
    lines = []
    for spec, against, what, bound in TARGETS:
        rows = _rows_by_spec(runs, against)
        row = rows.get(spec)
        if not row or row.get("ratio_cpu_to_baseline") is None:
            lines.append(f"- {what}: not measured in this batch")
            continue
        ci = row.get("ratio_cpu_interval")
        met = "met" if ci and ci[1] <= bound else ("missed" if ci and ci[0] > bound else
                                                  ("met at the median, not at the interval" if
                                                   row["ratio_cpu_to_baseline"] <= bound else "missed"))
        lines.append(f"- {what}: {_summary.ratio_text(row['ratio_cpu_to_baseline'], ci)} -> **{met}**")
    return lines


def markdown(batch: str, meta: dict, rows: list[dict], interps: list[str], runs: list[dict]) -> str:
    runs = _runrecord.full(runs)
    labels = {i: interp_label(i, runs) for i in interps}
    cfg = runs[0]["config"] if runs else {}
    out = [f"# Servers across interpreters: batch {batch}", "",
           f"From the recorded runs of batch `{batch}` (`make interpreters BATCH={batch}`); "
           f"{cfg.get('concurrency')} connections in flight, {cfg.get('duration')} s runs after "
           f"{cfg.get('warmup')} s warm-up, {max((r.get('round', 0) for r in runs), default=-1) + 1} "
           f"interleaved rounds. Ratios: median of per-round paired ratios [95 % interval]; "
           f"CPU = server user+sys CPU per completed connection.", "",
           "Interpreters: " + "; ".join(f"**{i}** = {labels[i]}" for i in interps), "",
           "| spec | interpreter | CPU µs/conn | conn/s | CPU vs raw_epoll (default) | "
           "conn/s vs raw_epoll (default) | same-interpreter base | CPU vs it | conn/s vs it | "
           "clean/runs | lost | client-bound runs |",
           "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['spec']} | {r['interp']} | {_f(r['cpu'], '{:.1f}')} | {_f(r['conn'], '{:,.0f}')} | "
                   f"{r['cpu_vs_default']} | {r['conn_vs_default']} | {r['same_base']} | {r['cpu_vs_same']} | "
                   f"{r['conn_vs_same']} | {r['clean']}/{r['runs']} | {r['lost']} | {r['client_bound']} |")
    out += ["", "The same-interpreter base keeps the spec's diet where the batch has that spec; "
            "mypyc-lib specs (library compiled, echo app interpreted) are paired with interpreted "
            "raw_epoll (its echo app is interpreted too), mypyc-app specs with raw_epoll:compiled.",
            "", "## Targets (CPU per connection, paired)", ""]
    out += targets(runs)
    for r in rows:
        if r["interp"] == "pypy" and r["server"] in ("alone_proc", "master"):
            out.append(f"- the library's extra on PyPy, {r['spec']} / {r['same_base']}: "
                       f"CPU {r['cpu_vs_same']}, conn/s {r['conn_vs_same']}")
    parts: dict = {}
    for x in runs:
        c = x["config"].get("compiled")
        if c:
            parts.setdefault(c.get("part"), c)
    for part, comp in sorted(parts.items(), key=lambda kv: str(kv[0])):
        out += ["", f"mypyc-{part}: compiled by mypy {comp.get('mypy')} for {comp.get('soabi')} from commit "
                f"{str(comp.get('source_commit'))[:12]}{' (dirty tree)' if comp.get('source_dirty') else ''}: "
                + ", ".join(m.replace('variants/', '') for m in comp.get("compiled") or [])
                + "; interpreted: " + ", ".join(m.replace('variants/', '') for m in comp.get("interpreted") or [])
                + f" (the reasons: build/compiled/{part}/manifest.json)."]
    return "\n".join(out) + "\n"


def _f(v, fmt: str) -> str:
    return "–" if v is None else fmt.format(v)


def _category(r: dict) -> str:
    diet = any(i == "diet" or i.startswith("diet=") for i in r["spec"].partition(":")[2].split(","))
    return r["server"] + ("\n(diet)" if diet else "")


def draw(rows: list[dict], interps: list[str], path: str, title: str) -> None:
    """Two panels (CPU per connection, conn/s): one group of bars per server (its diet
    specs a group of their own), one bar per interpreter present, the same colour for an
    interpreter throughout; the dashed line is interpreted raw epoll on the default CPython."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cats: list[str] = []
    for s in SERVERS:
        for r in rows:
            if r["server"] == s and _category(r) not in cats and "(diet)" not in _category(r):
                cats.append(_category(r))
    rank = {s: i for i, s in enumerate(SERVERS)}
    cats += sorted({_category(r) for r in rows if "(diet)" in _category(r)},
                   key=lambda c: (rank.get(c.split("\n")[0], 99), c))
    colours = dict(zip(interps, ["#4c72b0", "#dd8452", "#c44e52", "#8172b2", "#55a868", "#937860", "#64b5cd"]))
    fig, axes = plt.subplots(2, 1, figsize=(10, 8.5), sharex=True)
    base = next((r for r in rows if r["spec"] == BASE), None)
    for ax, key, unit, fmt in ((axes[0], "cpu", "server CPU per connection (µs)", "%.1f"),
                               (axes[1], "conn", "connections per second", "%.0f")):
        seen: set = set()
        for i, c in enumerate(cats):
            here = [r for r in rows if _category(r) == c and r[key] is not None]
            here.sort(key=lambda r: interps.index(r["interp"]))
            w = 0.8 / max(1, len(here))
            for j, r in enumerate(here):
                x = i + (j - (len(here) - 1) / 2) * w
                b = ax.bar([x], [r[key]], w * 0.95, color=colours[r["interp"]],
                           label=None if r["interp"] in seen else r["interp"])
                seen.add(r["interp"])
                ax.bar_label(b, fmt=fmt, fontsize=7, rotation=90, padding=2)
        if base and base[key]:
            ax.axhline(base[key], color="grey", ls="--", lw=0.8)
        ax.set_ylabel(unit)
        ax.margins(y=0.3)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(cats)), cats, fontsize=8)
    axes[1].set_xlabel("server (uvloop, c_epoll: references); dashed: raw_epoll on the default CPython")
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda k: interps.index(labels[k]))
    axes[0].legend([handles[k] for k in order], [labels[k] for k in order], title="interpreter",
                   fontsize=8, ncol=len(labels), loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: str, batch: str) -> tuple[str, str]:
    batch = batchchart.resolve(results, batch)
    meta, _rows, runs = batchchart.load(results, batch)
    rows, interps = table(runs)
    d = os.path.join(results, "interpreters")
    os.makedirs(d, exist_ok=True)
    md, png = os.path.join(d, batch + ".md"), os.path.join(d, batch + ".png")
    with open(md, "w") as f:
        f.write(markdown(batch, meta, rows, interps, runs))
    draw(rows, interps, png, f"Echo servers across interpreters (batch {batch})")
    return md, png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.interpreters", description=__doc__.split("\n\n")[0])
    p.add_argument("batch", nargs="?", default="latest", help="a batch id, or latest")
    p.add_argument("--results-dir", default=None)
    a = p.parse_args(argv)
    try:
        md, png = write(_records.results_dir(a.results_dir), a.batch)
    except batchchart.BatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {_records.shown_path(md)} and {_records.shown_path(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
