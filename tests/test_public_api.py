"""The public API is small and documented: each name of ``rntk_empirical.__all__`` exists,
has a docstring, and the package docstring names it."""

from __future__ import annotations

import rntk_empirical


def test_every_public_name_is_there_documented_and_listed():
    doc = rntk_empirical.__doc__
    assert len(rntk_empirical.__all__) == len(set(rntk_empirical.__all__)) <= 20
    for name in rntk_empirical.__all__:
        obj = getattr(rntk_empirical, name)
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
        assert f"`{name}`" in doc, f"the package docstring does not name {name}"
