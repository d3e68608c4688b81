"""rntk_empirical: finite-width Elman RNNs vs the infinite-width Recurrent NTK.

Empirical side: :class:`ElmanRNN`, :func:`empirical_ntk`, :func:`empirical_nngp`,
:func:`empirical_kernels` (both from one pass).
Analytic side: :func:`analytic_ntk`, :func:`analytic_nngp`.
Both are driven by one :class:`Architecture`.
"""

from rntk_empirical.activations import register_nonlinearity
from rntk_empirical.analytic import analytic_kernels, analytic_nngp, analytic_ntk
from rntk_empirical.architecture import Architecture
from rntk_empirical.empirical import empirical_kernels, empirical_nngp, empirical_ntk
from rntk_empirical.network import ElmanRNN
from rntk_empirical.sequences import Sequences, as_sequences

__all__ = [
    "Architecture",
    "analytic_kernels",
    "analytic_nngp",
    "analytic_ntk",
    "ElmanRNN",
    "Sequences",
    "as_sequences",
    "empirical_kernels",
    "empirical_nngp",
    "empirical_ntk",
    "register_nonlinearity",
]
