"""Old name of ``python -m experiments.drift.report`` (kept so documented commands keep working)."""

import sys

from experiments.drift.report import main

if __name__ == "__main__":
    sys.exit(main())
