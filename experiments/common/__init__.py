"""What every experiment shares: the CLI and schema registration, run records, sweeps."""
