"""``make combine BATCHES="ID1 ID2 ..."``: one table from several recorded batches.

A question like "is alone_proc within 1.05x of raw epoll?" may need more paired rounds
than one batch has.  Running a second batch and reading only the better of the two
would be cherry-picking; combining every batch that asked the same question is not.
This command reads the named batches' run files (results/batches/ID.json lists them),
pairs each run with the baseline of *its own* round (a pair never spans two batches:
harness/summary.py's pair key holds the batch id), and prints the batch table over all
of them: the medians and intervals then rest on every round.

It writes nothing.  It refuses batches it cannot find, and says so (a warning, not a
refusal) when one spec ran different code in different batches: the same name at two
library commits, or from a tree with uncommitted changes, is not one experiment.
"""

from __future__ import annotations

import json
import os
import sys

from harness import cmdline, records, runrecord, tables


def _batch_runs(results: str, batch_id: str) -> list[dict]:
    path = os.path.join(results, "batches", batch_id + ".json")
    try:
        with open(path) as f:
            batch = json.load(f)
    except FileNotFoundError:
        raise cmdline.UsageError(f"no batch {batch_id!r} in {records.shown_path(results)}/batches "
                                 "(the id is the batch file's name without .json)") from None
    except (OSError, ValueError) as e:
        raise cmdline.UsageError(f"cannot read {records.shown_path(path)}: {e}") from None
    runs, missing = [], []
    for run_id in batch.get("run_ids") or []:
        try:
            with open(os.path.join(results, "runs", run_id + ".json")) as f:
                runs.append(runrecord.upgrade(json.load(f), strict=False))
        except (OSError, ValueError):
            missing.append(run_id)
    if missing:
        print(f"warning: batch {batch_id}: {len(missing)} run file(s) missing or unreadable "
              f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})", file=sys.stderr)
    return runs


def code_warnings(runs: list[dict]) -> list[str]:
    """One line per spec that ran different code in different batches."""
    seen: dict[str, set] = {}
    for r in runrecord.full(runs):
        env = r["env"]
        # A NAME@REV spec runs its library from that commit: the tree's state does not count.
        pinned = r["config"].get("variant_commit")
        code = (str(pinned or env.get("git_commit") or "?")[:12],
                not pinned and bool(env.get("git_dirty")))
        seen.setdefault(r.get("spec") or "?", set()).add(code)
    out = []
    for spec, codes in seen.items():
        if len(codes) > 1 or any(dirty for _, dirty in codes):
            shown = ", ".join(c + (" + uncommitted changes" if d else "") for c, d in sorted(codes))
            out.append(f"warning: {spec} ran from {shown}: check that it ran the same code")
    return out


DESCRIPTION = "The batch table over several recorded batches (each run paired within its own round)."


def main(argv=None) -> int:
    return cmdline.Subcommand("combine", DESCRIPTION, add_arguments, run_command).main(argv)


def add_arguments(ap) -> None:
    """`combine`'s arguments, on the shared parser (cli.SUBCOMMANDS) or its own (main)."""
    ap.add_argument("batches", nargs="+", metavar="BATCH_ID",
                    help="batch ids, as in results/batches/ (e.g. b20261130T051551Z-...)")
    ap.add_argument("--results-dir", help="results directory (default: $EVENTS_RESULTS_DIR "
                                          "or results/ of the repository)")


def run_command(a) -> int:
    results = records.results_dir(a.results_dir)
    try:
        ids = list(dict.fromkeys(a.batches))
        runs = [r for b in ids for r in _batch_runs(results, b)]
    except cmdline.UsageError as e:
        return cmdline.die(str(e), cmdline.EXIT_USAGE)
    if not runs:
        return cmdline.die("the batches hold no runs", cmdline.EXIT_MISSING)
    print(f"{len(ids)} batch(es), {len(runs)} runs: {' '.join(ids)}")
    for w in code_warnings(runs):
        print(w)
    tables.print_table(runs)
    return 0


# On cli's parser (cli.SUBCOMMANDS): name -> (description, add_arguments, run_command).
COMMANDS = {"combine": (DESCRIPTION, add_arguments, run_command)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
