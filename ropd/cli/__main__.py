"""`python -m ropd.cli ...`: the same as the `ropd` command."""

import sys

from ropd.cli import main

if __name__ == "__main__":
    sys.exit(main())
