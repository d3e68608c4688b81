"""``python -m experiments.drift``: see :mod:`experiments.drift.run`."""

from experiments.common.run import hydra_entry
from experiments.drift.run import main

if __name__ == "__main__":
    hydra_entry(main)
