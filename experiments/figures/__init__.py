"""Figures of the papers, one command each: ``python -m experiments.figures figure=NAME``.

The registry :data:`FIGURES` maps a name to its compute and draw functions. To add a figure,
write a module with a parameter dataclass, a ``draw(tables, meta)`` and a
``compute(opts) -> FigureResult`` decorated with ``@register_figure("name", draw=draw)``,
and import it below.
"""

# Importing a module registers its figure (``order=`` in ``register_figure`` sets its place
# on the index page and in ``figure=all``).
from experiments.figures import (  # noqa: F401
    different_lengths,
    finite_vs_infinite,
    kernel_drift,
    length_width,
    ntk_deviation,
    orthogonal_vs_gaussian,
    spectrum,
    time_weighting,
    ucr_table,
)
from experiments.figures.common import (
    FIGURES,
    FigureResult,
    FigureSpec,
    RunOptions,
    get_figure,
    known_figures,
    redraw,
    register_figure,
    run_figure,
    write_index,
)

__all__ = [
    "FIGURES",
    "FigureResult",
    "FigureSpec",
    "RunOptions",
    "get_figure",
    "known_figures",
    "redraw",
    "register_figure",
    "run_figure",
    "write_index",
]
