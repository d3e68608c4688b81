"""``python -m experiments.uci``: see :mod:`experiments.uci.run`."""

from experiments.common.run import hydra_entry
from experiments.uci.run import main

if __name__ == "__main__":
    hydra_entry(main)
