"""--help of every entry point: its own groups and options only, each described, defaults
(and the default sweep) shown, the figures listed."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.common.cli import CONF_DIR
from experiments.common.help import all_descriptions_present
from experiments.common.schema import register_configs


def help_page(app: str) -> str:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=app, return_hydra_config=True)
        return str(OmegaConf.select(cfg, "hydra.help.template")).replace("$$", "$")


def test_every_option_has_a_description():
    assert all_descriptions_present() == []


@pytest.mark.parametrize(
    "app, present, absent",
    [
        (
            "convergence",
            ["arch: bidirectional, erf_avg", "data: file", "width=256", "seeds=8",
             "Default sweep (-m): width=64,128,256,512,1024,2048,4096", "method=structured"],
            ["task:", "figure=", "  dataset="],
        ),
        (
            "drift",
            ["task: gunpoint, italy_power", "steps=200", "lr_scale=0.5",
             "Default sweep (-m): width=64,128,256,512,1024,2048"],
            ["data:", "method=", "  dataset="],
        ),
        ("uci", ["dataset=iris", "grid.readouts=", "dtype=float64"], ["arch:", "width="]),
        (
            "figures",
            ["figure=???", "Figures (figure=NAME):", "  ntk_deviation: ", "  spectrum: "],
            ["arch:", "width="],
        ),
    ],
)  # fmt: skip
def test_help_shows_this_experiment_only(app, present, absent):
    page = help_page(app)
    for text in present:
        assert text in page, text
    for text in absent:
        assert text not in page, text
    option_lines = [line for line in page.splitlines() if line.startswith("  ") and "=" in line]
    assert len(option_lines) >= 8
