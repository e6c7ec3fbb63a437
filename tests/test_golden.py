"""Golden outputs: the tables, REPORT.md, REPRODUCTION.md and the charts' data made from
the committed fixtures (tests/fixtures/runs) are byte for byte what they were when these
files were captured (tests/golden/).  A refactor must leave them unchanged; a deliberate
change of output regenerates them:

    EVENTS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py

and the diff of tests/golden/ is then part of the change, for review.

The fixtures: fixA-fixC (tests/fixtures/runs) are records in the layout written before issue 28 (no events per
pass, no server_bound, no CPU budget; fixB holds a failed run with no metrics and fixC an
open-loop sweep), fixD (tests/fixtures/runs-current) is a budgeted batch on an emulated link (1000mbit) in
the current layout, with events per pass counted.  runs.csv (the CSV rows), the batch
tables and summaries, the soak verdict, the client's FINAL text, REPORT.md and REPRODUCTION.md are pinned.

Charts are compared by their *data*, not their pixels: every call that draws or labels
(bar, plot, annotate, set_title ...) is logged with its arguments, so a font or a
renderer version cannot break the test, while a changed bar, label or title does."""

import copy
import json
import os
import re
import shutil

import pytest

from harness import records, report, reproduction
from harness import soak, tables
from harness.client import format_final

HERE = os.path.dirname(__file__)
FIXTURES = os.path.join(HERE, "fixtures", "runs")
# Records in the current layout, read only here (the other tests count the records of FIXTURES).
CURRENT = os.path.join(HERE, "fixtures", "runs-current")
GOLDEN = os.path.join(HERE, "golden")
UPDATE = os.environ.get("EVENTS_UPDATE_GOLDEN") == "1"

pytestmark = pytest.mark.timeout(120)

_GENERATED = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")


def _stable(text: str, tmp) -> str:
    """Mask what changes from run to run: the generation time and the temp folder."""
    text = _GENERATED.sub("Generated <time>", text)
    return text.replace(str(tmp), "<results>")


def _fixture_records() -> list[dict]:
    recs, problems = records.load_runs(FIXTURES)
    current, more = records.load_runs(CURRENT)
    assert not problems and not more and current
    return sorted(recs + current, key=lambda r: r["run_id"])


def _batches(recs):
    return {b: [r for r in recs if r["batch_id"] == b] for b in sorted({r["batch_id"] for r in recs})}


# --------------------------------------------------------------------------- chart data

_DRAW = ("bar", "barh", "plot", "scatter", "annotate", "axhline", "axvspan", "errorbar",
         "set_title", "set_xlabel", "set_ylabel", "set_xticks", "set_yticks", "set_xticklabels",
         "set_yticklabels", "set_xlim", "set_ylim", "legend", "text", "fill_between")


def _plain(x, depth=0):
    """A stable, readable form of a drawing call's argument."""
    import numpy as np
    if depth > 4:
        return "..."
    if isinstance(x, (bool, type(None), str, int)):
        return x
    if isinstance(x, float):
        return "nan" if x != x else float(f"{x:.6g}")
    if isinstance(x, np.generic):
        return _plain(x.item(), depth)
    if hasattr(x, "tolist") and not isinstance(x, type):
        return _plain(x.tolist(), depth)
    if isinstance(x, dict):
        return {str(k): _plain(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple, range)) or type(x).__name__ in ("dict_values", "dict_keys"):
        return [_plain(v, depth + 1) for v in x]
    return f"<{type(x).__name__}>"


@pytest.fixture
def chart_log(monkeypatch):
    """Log every drawing call, per chart file (Figure.savefig closes a chart's log)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    log: dict[str, list] = {}
    current: list = []
    for name in _DRAW:
        real = getattr(Axes, name)

        def logged(self, *args, _real=real, _name=name, **kwargs):
            current.append([_name, _plain(list(args)), _plain(dict(sorted(kwargs.items())))])
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(Axes, name, logged)
    real_save = Figure.savefig

    def save(self, path, *args, **kwargs):
        log[os.path.basename(str(path))] = list(current)
        current.clear()
        return real_save(self, path, *args, **kwargs)
    monkeypatch.setattr(Figure, "savefig", save)
    return log


# --------------------------------------------------------------------------- the outputs

def _capture(tmp, chart_log, capsys) -> dict[str, str]:
    out: dict[str, str] = {}
    recs = _fixture_records()
    for batch, mine in _batches(recs).items():
        out[f"table-{batch}.txt"] = tables.format_table(copy.deepcopy(mine))
        out[f"table-{batch}.md"] = tables.format_table(copy.deepcopy(mine), markdown=True)
        out[f"summary-{batch}.json"] = json.dumps(tables.summarize(copy.deepcopy(mine)), indent=1,
                                                  sort_keys=True, default=str)
    # runs.csv: the header and one row per fixture record, as records.append_csv writes them.
    out["runs.csv"] = "\n".join(",".join(str(c) for c in row)
                                 for row in [records.csv_header()] + [records.csv_row(copy.deepcopy(r))
                                                                    for r in recs]) + "\n"
    out["soak.txt"] = soak.format_soak(copy.deepcopy(recs[:3]))
    out["final.txt"] = "\n\n".join(format_final(r["client"]) for r in recs if r.get("client"))

    # make report: REPORT.md, the charts, and (no reproduction recorded) no REPRODUCTION.md
    results = tmp / "report"
    shutil.copytree(FIXTURES, results / "runs")
    for name in os.listdir(CURRENT):
        shutil.copy(os.path.join(CURRENT, name), results / "runs" / name)
    capsys.readouterr()
    assert report.main(["--results-dir", str(results)]) == 0
    out["report-stdout.txt"] = _stable(capsys.readouterr().out, tmp)
    out["REPORT.md"] = _stable((results / "REPORT.md").read_text(), tmp)
    assert not (results / "REPRODUCTION.md").exists()
    files = sorted(os.listdir(results / "charts"))
    # The comparison is not vacuous: every chart file was drawn through the log.
    assert sorted(chart_log) == files and all(chart_log.values())
    out["chart-files.txt"] = "\n".join(files)
    out["charts.txt"] = "\n".join(f"{name}: {json.dumps(call, sort_keys=True)}"
                                   for name in files for call in chart_log[name])

    # make report with a reproduction recorded: it rewrites REPRODUCTION.md from the latest
    labelled = tmp / "labelled"
    os.makedirs(labelled / "runs")
    for r in copy.deepcopy(recs):
        rid = {"fixA": "repro-new", "fixB": "repro-old"}.get(r.get("batch_id"))
        if rid:
            r["labels"] = {"reproduction": rid,
                           "intended_link": "100mbit" if rid == "repro-old" else "1000mbit"}
            r["time_utc"] = "2026-11-27T00:00:00Z" if rid == "repro-new" else "2026-11-20T00:00:00Z"
        (labelled / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    capsys.readouterr()
    assert report.main(["--results-dir", str(labelled)]) == 0
    out["report-labelled-stdout.txt"] = _stable(capsys.readouterr().out, tmp)
    out["REPRODUCTION-latest.md"] = _stable((labelled / "REPRODUCTION.md").read_text(), tmp)

    # the REPRODUCTION.md writer on its own: every link as itself, and all on loopback
    for name, link_of in (("REPRODUCTION.md", None),
                          ("REPRODUCTION-loopback.md", {"100mbit": "loopback", "1000mbit": "loopback"})):
        where = tmp / name.replace(".", "_")
        path = reproduction.write_reproduction(copy.deepcopy(recs), str(where), link_of=link_of)
        out[name] = _stable(open(path).read(), tmp)
    return out


def test_outputs_match_the_golden_files(tmp_path, chart_log, capsys):
    got = _capture(tmp_path, chart_log, capsys)
    if UPDATE:
        shutil.rmtree(GOLDEN, ignore_errors=True)
        os.makedirs(GOLDEN)
        for name, text in got.items():
            with open(os.path.join(GOLDEN, name), "w") as f:
                f.write(text)
    names = sorted(os.listdir(GOLDEN))
    assert names == sorted(got), "outputs added or gone: regenerate (see the module docstring)"
    for name in names:
        with open(os.path.join(GOLDEN, name)) as f:
            want = f.read()
        assert got[name] == want, f"{name} differs from tests/golden/{name}"

