"""``python -m experiments.convergence``: see :mod:`experiments.convergence.run`."""

from experiments.common.run import hydra_entry
from experiments.convergence.run import main

if __name__ == "__main__":
    hydra_entry(main)
