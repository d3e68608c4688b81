"""Figures of the papers, one command each: ``python -m experiments.figures figure=NAME``.

The registry :data:`FIGURES` maps a name to its compute and draw functions. To add a figure,
write a module with a parameter dataclass, a ``draw(tables, meta)`` and a
``compute(opts) -> FigureResult`` decorated with ``@register_figure("name", draw=draw)``,
and import it below.
"""

# Importing a module registers its figure (``order=`` in ``register_figure`` sets its place
# on the index page and in ``figure=all``).
from experiments.common.registry import Experiment, register_experiment
from experiments.figures import (  # noqa: F401
    different_lengths,
    finite_vs_infinite,
    gated_convergence,
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

OPTIONS = {
    "figure": "a figure name (below) or all",
    "quick": "reduced setup for tests and smoke runs (marked on the image; written to "
    "OUT_DIR/quick, apart from the full figures)",
    "redraw": "re-plot from the saved CSV/JSON without recomputing",
    "out_dir": "where figures and their data go",
    "device": "cpu | cuda | auto for the kernel computations",
    "seed": "base seed of every random draw",
    "progress": "show progress bars",
    "params": "overrides of the figure's parameters (+params.FIELD=VALUE)",
}


def _figure_list() -> list[str]:
    import sys

    lines = ["Figures (figure=NAME):"]
    for name in sorted(FIGURES):
        doc = sys.modules[FIGURES[name].compute.__module__].__doc__ or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        lines.append(f"  {name}: {first.replace(f'``{name}``: ', '')}")
    return lines


register_experiment(
    Experiment(
        name="figures",
        title="Regenerate the papers' figures",
        options=OPTIONS,
        appendix=_figure_list,
    )
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
