"""Regenerate the papers' figures with one command each.

    python -m experiments.figures figure=NAME            # compute + PNG/PDF/CSV/JSON + index
    python -m experiments.figures figure=all             # every registered figure
    python -m experiments.figures figure=NAME quick=true # reduced setup (tests, smoke runs)
    python -m experiments.figures figure=NAME redraw=true  # re-plot from NAME.csv only
    python -m experiments.figures figure=NAME out_dir=some/dir seed=1 device=cuda

Outputs go to ``out_dir`` (default ``outputs/figures``; ``quick=true``: ``out_dir/quick``,
so a smoke run never overwrites a paper figure): ``NAME.png``, ``NAME.pdf``,
``NAME.csv``, ``NAME.json``, and the index page ``README.md`` rebuilt from every figure's
JSON there. Figures are registered in :mod:`experiments.figures`; their parameters live in
one dataclass per figure module (override fields with ``+params.FIELD=VALUE``).

Exit codes: 0 success, 2 invalid input (one line ``error: ...`` on stderr).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.common.cli import CONF_DIR, fail
from experiments.common.run import check_writable, hydra_entry
from experiments.figures import FIGURES, RunOptions, known_figures, redraw, run_figure

log = logging.getLogger(__name__)
EXIT_BAD_INPUT = 2


def _names(figure: str) -> list[str]:
    if figure == "all":
        return known_figures()
    if figure not in FIGURES:
        fail(
            f"unknown figure {figure!r}; known figures: {', '.join(known_figures())}, all",
            EXIT_BAD_INPUT,
        )
    return [figure]


@hydra.main(config_path=CONF_DIR, config_name="figures", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see the module docstring)."""
    names = _names(str(cfg.figure))
    out_dir = Path(cfg.out_dir)
    if not out_dir.is_absolute():
        out_dir = Path(HydraConfig.get().runtime.cwd) / out_dir
    if cfg.quick:  # quick figures live apart and never overwrite the full ones
        out_dir = out_dir / "quick"
    if not cfg.redraw:
        check_writable(out_dir, "out_dir")
    params = OmegaConf.to_container(cfg.params, resolve=True) or {}
    if params and len(names) > 1:
        fail("params overrides apply to one figure; name it with figure=NAME", EXIT_BAD_INPUT)
    opts = RunOptions(
        quick=bool(cfg.quick),
        seed=int(cfg.seed),
        device=str(cfg.device),
        params=params,
        progress=bool(cfg.progress),
        outputs_root=str(Path(str(cfg.out_dir)).resolve().parent),
    )
    for name in names:
        t0 = time.perf_counter()
        try:
            if cfg.redraw:
                paths = redraw(FIGURES[name], out_dir)
                log.info("%s: redrawn from CSV -> %s", name, ", ".join(map(str, paths)))
                continue
            meta = run_figure(name, out_dir, opts)
        except (ValueError, FileNotFoundError) as err:
            fail(f"{name}: {err}", EXIT_BAD_INPUT)
        log.info(
            "%s: done in %.1f s -> %s", name, time.perf_counter() - t0, out_dir / f"{name}.png"
        )
        for k, v in meta["headline"].items():
            log.info("  %s: %s", k, v)
    log.info("index: %s", out_dir / "README.md")


if __name__ == "__main__":
    hydra_entry(main)
