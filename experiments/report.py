"""Old name of ``python -m experiments.convergence.report`` (documented commands keep working)."""

import sys

from experiments.convergence.report import main

if __name__ == "__main__":
    sys.exit(main())
