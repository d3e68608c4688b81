r"""The infinite-width kernels of the Elman RNN: the analytic RNTK and NNGP (SPEC section 3).

For inputs x, x' and time indices t, t' >= 1, layer by layer (l = 1..L):

    S^l(t,t') = s_w^2 K^l(t-1,t'-1) + s_u^2 K^{l-1}(t,t') + s_b^2
    Q^l(t,t') = S^l(t,t') + s_w^2 G^l(t-1,t'-1) + s_u^2 G^{l-1}(t,t')
    K^l = V_phi(a, b, S^l),   G^l = V_dphi(a, b, S^l) * Q^l     (G = Kd Q of the SPEC)

with K^0(t,t') = <x_t, x'_t'> / m, G^0 = 0, the variances a = S^l(x,x)(t,t),
b = S^l(x',x')(t',t') from the same recursion on the pair (x, x), and the boundary
K^l(t-1,t'-1) = s_h^2 [t-1 = t'-1 = 0] * (1 for ``shared``; [x = x'] for ``per_input``;
0 for ``zero``), G^l = 0 there. Outputs, with theta = s_v^2 (K^L + G^L) and nngp = s_v^2 K^L:

    last:      the cell (T, T')
    avg:       (1 / (T T')) sum over all cells t <= T, t' <= T'
    per_step:  (1 / sqrt(T T')) sum over end-aligned cells, T - t = T' - t'
    in general (:mod:`rntk_empirical.readouts`, per-step weights w): a shared readout sums
    every cell weighted w(t) w'(t'), an independent one the end-aligned cells
    bidirectional: kernel(x, x') + kernel(reverse(x), reverse(x'))

Implementation. Both batches are left-padded to one length T_max, so sequence i occupies
padded positions p >= s_i = T_max - T_i and the ends are aligned. A *shift* k pairs position
p of x with position q = p - k of x'. Shift 0 is the end-aligned diagonal (``last`` and
``per_step``); ``avg`` (any shared readout with weight before the final step) runs every
shift. Along a shift the recursion is a forward loop over p
whose state is only (K^l, G^l) of the previous step, for a block of rows x all columns: memory
O(block * N2) per layer, independent of T. A pair is *active* once both sequences have started;
before that its state holds the boundary value (K = s_h^2 term or 0, G = 0) -- exactly what the
finite network does when it holds h^{l,0} through padded steps. Per-sequence variances
a_i^l(p) are computed once per call by the same step code on the pairs (i, i).

Everything is differentiable with autograd (inputs may require grad), runs on CPU or CUDA
and defaults to float64.

Layout of this package, one module per code path:

* :mod:`.api` -- :func:`analytic_kernels`, :func:`analytic_ntk`, :func:`analytic_nngp`;
* :mod:`.common` -- :class:`KernelConstants`, :class:`BatchSide` (one prepared batch), the
  one-cell update :func:`~.common.layer_step`, variances, boundaries, row blocks;
* :mod:`.reference` -- the differentiable recursion (autograd; the reference);
* :mod:`.inplace` -- the in-place torch recursion (no grad; CPU and CUDA);
* :mod:`.bank` -- :func:`analytic_kernel_bank`, every depth and readout in one pass;
* :mod:`.numba_backend` -- the compiled CPU recursion (optional ``fast`` extra), which
  :func:`analytic_kernels` and the bank take by themselves where it applies
  (``backend="auto"``; docs/analytic_backends.md).
"""

from rntk_empirical.analytic.api import analytic_kernels, analytic_nngp, analytic_ntk
from rntk_empirical.analytic.bank import analytic_kernel_bank
from rntk_empirical.analytic.common import (
    CPU_BLOCK_ELEMENTS,
    CUDA_BLOCK_ELEMENTS,
    BatchSide,
    KernelConstants,
)

__all__ = [
    "CPU_BLOCK_ELEMENTS",
    "CUDA_BLOCK_ELEMENTS",
    "BatchSide",
    "KernelConstants",
    "analytic_kernel_bank",
    "analytic_kernels",
    "analytic_nngp",
    "analytic_ntk",
]
