"""make check-docs (harness/checkdocs.py): marked figures recomputed from the records.

A fixture batch of six paired rounds with known ratios: a right figure passes, a seeded
wrong one (and a marker naming a missing batch) fails with file:line, claimed and
recorded; and the real README.md and docs/*.md pass on the real results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import checkdocs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = "b20260101T000000Z-1-fixture"
ALONE = [1050, 1080, 1100, 1100, 1120, 1150]     # raw_epoll: 1000 every round


def _run(rid, spec, rnd, conn, cpu, share=0.5):
    return {"run_id": rid, "batch_id": BATCH, "round": rnd, "spec": spec, "server": spec,
            "status": "ok", "link": "loopback",
            "config": {"concurrency": 64, "size": 100, "server_cpu": 0.4},
            "metrics": {"conn_per_s": conn, "server_cpu_us_per_conn": cpu, "lost": 0,
                        "p99_us": 12000.0, "client_cpu_share": share},
            "env": {"cpu_speed_us": 20.0 + rnd}}


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    (root / "runs").mkdir(parents=True)
    (root / "batches").mkdir()
    (root / "syscalls").mkdir()
    ids = []
    for rnd, conn in enumerate(ALONE):
        for spec, c, cpu in (("raw_epoll", 1000.0, 100.0), ("alone_proc", float(conn), 90.0)):
            rid = f"r{rnd}-{spec}"
            (root / "runs" / f"{rid}.json").write_text(json.dumps(_run(rid, spec, rnd, c, cpu, 0.6 + rnd / 100)))
            ids.append(rid)
    (root / "batches" / f"{BATCH}.json").write_text(json.dumps({"batch_id": BATCH, "run_ids": ids}))
    (root / "syscalls" / "alone_proc.json").write_text(json.dumps(
        {"per_connection": {"total": 9.063, "by_name": {"epoll_ctl": 3.0}}}))
    return str(root)


def _check(text, results):
    return checkdocs.check_text(text, "doc.md", checkdocs.Records(results))


def test_right_figures_pass(results):
    text = (f"alone_proc 1.10 [1.05–1.15]<!--check {BATCH} alone_proc conn_ratio_ci--> faster"
            f"<!--check {BATCH} alone_proc verdict--> at 0.90<!--check {BATCH} alone_proc cpu_ratio-->"
            f" ({BATCH and 'less CPU'}<!--check {BATCH} alone_proc cpu_verdict-->), 1,100 conn/s"
            f"<!--check {BATCH} alone_proc conn_s-->, 6<!--check {BATCH} alone_proc rounds--> rounds;\n"
            f"client at most 65 %<!--check {BATCH} * client_share_max-->; probe 22.5 µs"
            f"<!--check {BATCH} * cpu_speed_us-->; 9.06<!--check syscalls alone_proc--> calls,"
            f" 3<!--check syscalls alone_proc epoll_ctl--> epoll_ctl, 9.1k"
            f"<!--check json syscalls/alone_proc.json per_connection.total scale=1000-->\n")
    n, problems = _check(text, results)
    assert problems == []
    assert n == 11
    # base=SPEC: raw_epoll to alone_proc, the inverse ratio
    n, problems = _check(f"0.91<!--check {BATCH} raw_epoll conn_ratio base=alone_proc-->\n", results)
    assert (n, problems) == (1, [])
    # two markers back to back: one figure, two quantities
    n, problems = _check(f"6<!--check {BATCH} alone_proc rounds--><!--check {BATCH} alone_proc runs-->\n"
                         f"7<!--check {BATCH} alone_proc rounds--><!--check {BATCH} alone_proc runs-->\n", results)
    assert n == 4 and len(problems) == 2 and all(p.startswith("doc.md:2:") for p in problems)


@pytest.mark.parametrize("wrong, why", [
    ("1.12 [1.05–1.15]<!--check B alone_proc conn_ratio_ci-->", "claimed 1.12"),
    ("1.10 [1.05–1.16]<!--check B alone_proc conn_ratio_ci-->", "recorded 1.100 / 1.050 / 1.150"),
    ("1,150 conn/s<!--check B alone_proc conn_s-->", "claimed 1,150"),
    ("not distinguishable<!--check B alone_proc verdict-->", "recorded verdict 'faster'"),
    ("64 %<!--check B * client_share_max-->", "claimed 64"),
    ("9.25<!--check syscalls alone_proc-->", "claimed 9.25"),
    ("1.10<!--check b20990101T000000Z-1-missing alone_proc conn_ratio-->", "not found"),
    ("1.10<!--check B nosuch conn_ratio-->", "no row for spec"),
    ("1.10<!--check B alone_proc speediness-->", "unknown quantity"),
    ("no figure<!--check B alone_proc conn_ratio-->", "expected before the marker"),
])
def test_seeded_wrong_figure_fails(results, wrong, why):
    text = "a line\n" + wrong.replace(" B ", f" {BATCH} ") + "\n"
    _, problems = _check(text, results)
    assert len(problems) == 1
    assert problems[0].startswith("doc.md:2: ")
    assert why in problems[0]


def test_code_blocks_are_examples(results):
    n, problems = _check("```\n9<!--check b20990101T000000Z-1-missing x conn_ratio-->\n```\n", results)
    assert (n, problems) == (0, [])
    n, problems = _check("see `9<!--check b20990101T000000Z-1-missing x conn_ratio-->`\n", results)
    assert (n, problems) == (0, [])


def test_rounding_is_the_printed_one():
    assert checkdocs.matches("1.03", 1.034) and not checkdocs.matches("1.03", 1.036)
    assert checkdocs.matches("6,111", 6111.4) and not checkdocs.matches("6,111", 6111.6)
    assert checkdocs.matches("17.6k", 17640) and not checkdocs.matches("17.6k", 17660)
    assert checkdocs.matches("−700", -700.2)


def test_main_exit_status(results, tmp_path, capsys):
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(f"6<!--check {BATCH} alone_proc rounds-->\n")
    bad.write_text(f"7<!--check {BATCH} alone_proc rounds-->\n")
    assert checkdocs.main([str(good), "--results", results]) == 0
    assert checkdocs.main([str(bad), "--results", results]) == 1
    assert "claimed 7, recorded 6" in capsys.readouterr().out
    assert checkdocs.main([str(tmp_path / "none.md")]) == 2


def test_real_docs_pass():
    """README.md and docs/*.md against results/: every marked figure as recorded."""
    out = subprocess.run([sys.executable, "-m", "harness", "check-docs"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 mismatch(es)" in out.stdout
