"""``python -m experiments.uci.data download|verify [--root DIR]``: get the UCI collection
and check it against the committed SHA-256 manifest (:mod:`rntk_empirical.uci_data`)."""

import sys

from rntk_empirical.uci_data import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m experiments.uci.data"))
