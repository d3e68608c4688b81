"""Finite versus infinite recurrent networks on real sequence data (:mod:`.study`, the
Hydra entry point :mod:`.run`, the sweep report :mod:`.report`)."""
