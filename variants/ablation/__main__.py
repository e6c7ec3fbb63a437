"""``python -m variants.ablation --source [STEPS]``: print the loop one set of steps
compiles to (``adapter+locals``, ``all``, ``literal``); ``diff`` two of them to read a
step. ``--steps`` lists the steps."""
from __future__ import annotations

import sys

from . import ALL_STEPS, parse_steps, source


def main(argv: list[str]) -> int:
    if argv[:1] == ["--steps"]:
        print("\n".join(ALL_STEPS))
        return 0
    if not argv or argv[0] != "--source" or len(argv) > 2:
        sys.stderr.write("usage: python -m variants.ablation --source [STEPS] | --steps\n")
        return 2
    text = argv[1] if len(argv) > 1 else ""
    text = text.split("steps=", 1)[1] if "steps=" in text else text
    try:
        print(source(parse_steps(text)), end="")
    except ValueError as e:
        sys.stderr.write(f"error: steps={text} {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
