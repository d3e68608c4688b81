"""``python -m experiments.uci``: see :mod:`experiments.uci.run`."""

from experiments.uci.run import main

if __name__ == "__main__":
    main()
