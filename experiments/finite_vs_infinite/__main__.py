"""``python -m experiments.finite_vs_infinite``: see :mod:`experiments.finite_vs_infinite.run`."""

from experiments.common.run import hydra_entry
from experiments.finite_vs_infinite.run import main

if __name__ == "__main__":
    hydra_entry(main)
