"""Old name of ``python -m experiments.uci.report`` (kept so documented commands keep working)."""

import sys

from experiments.uci.report import main

if __name__ == "__main__":
    sys.exit(main())
