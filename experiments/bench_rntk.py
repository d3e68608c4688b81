"""Old name of ``python -m experiments.bench.rntk`` (kept so documented commands keep working)."""

import sys

from experiments.bench.rntk import main

if __name__ == "__main__":
    sys.exit(main())
