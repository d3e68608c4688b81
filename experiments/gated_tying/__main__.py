"""``python -m experiments.gated_tying``: see :mod:`experiments.gated_tying.run`."""

from experiments.common.run import hydra_entry
from experiments.gated_tying.run import main

if __name__ == "__main__":
    hydra_entry(main)
