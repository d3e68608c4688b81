"""``python -m experiments.convergence``: see :mod:`experiments.convergence.run`."""

from experiments.convergence.run import main

if __name__ == "__main__":
    main()
