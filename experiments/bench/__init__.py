"""Benchmarks (scripts that print measured speeds and ratios): :mod:`.entk`, :mod:`.rntk`,
:mod:`.bank`."""
