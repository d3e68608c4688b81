"""One matplotlib style for every figure of the project, and words for what a run is.

Sizes are for a single-column figure (about 3.4 in wide) read at print size; the palette is
Okabe & Ito's colour-blind-safe set; figures of a ``quick`` (smoke-test) run carry a banner.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "figure.constrained_layout.use": True,
}


@contextmanager
def paper_style():
    """``with paper_style():`` every figure drawn inside uses :data:`STYLE` and the palette."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    with plt.rc_context({**STYLE, "axes.prop_cycle": cycler(color=PALETTE)}):
        yield


def mark_quick(fig, quick: bool = True) -> None:
    """A banner on figures of a reduced (quick) setup, so they are never mistaken for the
    paper figure."""
    if quick:
        fig.text(
            0.5,
            1.0,
            "QUICK MODE: reduced smoke-test setup, not the paper figure",
            ha="center",
            va="bottom",
            fontsize=9,
            color="#D55E00",
            weight="bold",
        )


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def series_styles(keys: Sequence[str]) -> dict[str, dict[str, str]]:
    """One colour and marker per key of a fixed, ordered vocabulary (the arms of a study,
    the kernels of a table): every panel and figure that draws key k draws it alike."""
    return {
        k: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}
        for i, k in enumerate(keys)
    }


NONLINEARITY_NAMES = {"relu": "ReLU", "erf": "erf", "tanh": "tanh", "identity": "linear"}
READOUT_NAMES = {
    "last": "last-step readout",
    "avg": "mean pooling",
    "per_step": "per-step readout",
}


# identity keys that describe_arch puts into words (labels need not repeat them)
DESCRIBED_KEYS = frozenset(
    f"arch.{k}"
    for k in ("name", "cell", "gate", "nonlinearity", "depth", "bidirectional", "readout",
              "init", "parameterization", "h0")
)  # fmt: skip
# the gated cells (docs/gated.md) by name; any other cell is the Elman RNN
CELL_NAMES = {"gru": "GRU", "minimalrnn": "minimalRNN"}


def describe_arch(arch: dict[str, Any]) -> str:
    """Words for an architecture dict: ``"ReLU RNN, last-step readout"``,
    ``"2-layer erf RNN (bidirectional), mean pooling, orthogonal init"``,
    ``"GRU (erf gates, erf candidate), last-step readout"``."""
    nl = NONLINEARITY_NAMES.get(
        str(arch.get("nonlinearity", "relu")), str(arch.get("nonlinearity"))
    )
    depth = int(arch.get("depth", 1))
    cell = CELL_NAMES.get(str(arch.get("cell", "elman")))
    if cell is None:
        text = f"{nl} RNN"
    else:
        text = f"{cell} ({arch.get('gate', 'sigmoid')} gates, {nl} candidate)"
    if depth > 1:
        text = f"{depth}-layer {text}"
    if arch.get("bidirectional"):
        text += " (bidirectional)"
    text += ", " + READOUT_NAMES.get(str(arch.get("readout", "last")), str(arch.get("readout")))
    if arch.get("init") == "orthogonal":
        text += ", orthogonal init"
    if arch.get("parameterization") == "standard":
        text += ", standard param."
    if arch.get("h0") not in (None, "zero"):
        text += f", {arch['h0']} h0"
    return text


def fit_label(
    exponent: float, low: float, high: float, level: float | None = None, what: str = ""
) -> str:
    """``"fit: n^-0.53 [-0.60, -0.45]"`` in mathtext (the interval at ``level``, e.g. 95%)."""
    lv = f" ({level:.0%})" if level is not None else ""
    return f"{what + ' ' if what else ''}fit: $n^{{{exponent:.2f}}}$ [{low:.2f}, {high:.2f}]{lv}"
