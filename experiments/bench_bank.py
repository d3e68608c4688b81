"""Old name of ``python -m experiments.bench.bank`` (kept so documented commands keep working)."""

import sys

from experiments.bench.bank import main

if __name__ == "__main__":
    sys.exit(main())
