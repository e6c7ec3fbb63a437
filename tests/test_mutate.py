"""tools/mutate.py (make mutate) without running the mutants: every planted deviation
still applies to today's loops (a patch whose text moved is an error, so the list must
follow the code), each one changes the code, and bad input is one `error:` line."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import mutate  # noqa: E402


def test_at_least_twelve_mutants_over_dispatch_and_timers():
    names = [m[0] for m in mutate.MUTANTS]
    assert len(names) == len(set(names)) >= 12
    files = {p[0] for m in mutate.MUTANTS for p in m[3]}
    assert {mutate.M, mutate.MT, mutate.T} <= files
    assert {m[1] for m in mutate.MUTANTS} <= set(mutate.SELECT)


@pytest.mark.parametrize("name", [m[0] for m in mutate.MUTANTS])
def test_each_mutant_applies_and_changes_the_code(name, tmp_path):
    root = mutate.copy_variants(str(tmp_path))
    patches = mutate.mutant(name)[3]
    before = {rel: open(os.path.join(root, "variants", rel)).read() for rel, _, _ in patches}
    mutate.apply(root, patches)
    for rel, text in before.items():
        assert open(os.path.join(root, "variants", rel)).read() != text
    # The original is untouched.
    for rel, text in before.items():
        assert open(os.path.join(ROOT, "variants", rel)).read() == text


def test_a_patch_that_does_not_apply_is_an_error(tmp_path):
    root = mutate.copy_variants(str(tmp_path))
    with pytest.raises(mutate.Usage, match="does not apply"):
        mutate.apply(root, [(mutate.M, "text that is not in the loop", "x")])


@pytest.mark.parametrize("argv, message", [
    (["--only", "nope"], "unknown mutant 'nope'"),
    (["--timeout", "0"], "--timeout must be > 0"),
    (["--timeout", "x"], "invalid float value"),
])
def test_bad_input_is_one_error_line(argv, message):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mutate.py")] + argv,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
