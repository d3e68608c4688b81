"""``python -m experiments.drift``: see :mod:`experiments.drift.run`."""

from experiments.drift.run import main

if __name__ == "__main__":
    main()
