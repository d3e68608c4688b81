"""rntk_empirical: finite-width recurrent networks vs their infinite-width kernels.

The public API (everything else is internal and may change):

* one description: :class:`Architecture` (depth, nonlinearity, multipliers, readout, cell,
  initial state, parameterization, initialization);
* the finite network: :class:`ElmanRNN` (any registered cell: Elman, minimalRNN, GRU);
* empirical kernels: :func:`empirical_ntk`, :func:`empirical_nngp`, :func:`empirical_kernels`
  (both from one pass);
* analytic kernels: :func:`analytic_ntk`, :func:`analytic_nngp`, :func:`analytic_kernels`,
  :func:`analytic_kernel_bank` (every depth and readout in one pass);
* inputs: :class:`Sequences`, :func:`as_sequences` (mixed lengths);
* the extension points, one registry each (docs/extending.md): :class:`Nonlinearity` with
  :func:`register_nonlinearity` / :func:`resolve_nonlinearity`, :class:`Readout` with
  :func:`register_readout`, :class:`Cell` with :func:`register_cell`.

Kernel machines (:mod:`rntk_empirical.kernel_machines`), training beside the linearization
(:mod:`rntk_empirical.training`), the width-length law (:mod:`rntk_empirical.scaling`) and the
safe reader of files read back (:mod:`rntk_empirical.safe_io`) are public modules.
"""

from rntk_empirical.analytic import (
    analytic_kernel_bank,
    analytic_kernels,
    analytic_nngp,
    analytic_ntk,
)
from rntk_empirical.architecture import Architecture
from rntk_empirical.cells import Cell, register_cell
from rntk_empirical.empirical import empirical_kernels, empirical_nngp, empirical_ntk
from rntk_empirical.network import ElmanRNN
from rntk_empirical.nonlinearities import (
    Nonlinearity,
    register_nonlinearity,
    resolve_nonlinearity,
)
from rntk_empirical.readouts import Readout, register_readout
from rntk_empirical.sequences import Sequences, as_sequences

__all__ = [
    "Architecture",
    "Cell",
    "ElmanRNN",
    "Nonlinearity",
    "Readout",
    "Sequences",
    "analytic_kernel_bank",
    "analytic_kernels",
    "analytic_nngp",
    "analytic_ntk",
    "as_sequences",
    "empirical_kernels",
    "empirical_nngp",
    "empirical_ntk",
    "register_cell",
    "register_nonlinearity",
    "register_readout",
    "resolve_nonlinearity",
]
