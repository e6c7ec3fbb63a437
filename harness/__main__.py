"""``python -m harness SUBCOMMAND``: see harness/cli.py and ``python -m harness --help``."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
