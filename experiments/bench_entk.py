"""Old name of ``python -m experiments.bench.entk`` (kept so documented commands keep working)."""

import sys

from experiments.bench.entk import main

if __name__ == "__main__":
    sys.exit(main())
