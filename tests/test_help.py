"""--help of every entry point: its own groups and options only, each described (from the
schema fields' metadata), defaults (and the default sweep) shown, the figures listed."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import experiments.convergence.schema
import experiments.drift.schema
import experiments.figures
import experiments.finite_vs_infinite.schema
import experiments.uci.schema  # noqa: F401 - importing an experiment's schema registers it
from experiments.common.cli import CONF_DIR
from experiments.common.help import missing_descriptions
from experiments.common.registry import registered
from experiments.common.schema import ArchConfig, description
from rntk_empirical.architecture import Architecture


def help_page(app: str) -> str:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=app, return_hydra_config=True)
        return str(OmegaConf.select(cfg, "hydra.help.template")).replace("$$", "$")


def test_every_option_has_a_description():
    apps = registered()
    assert {"convergence", "drift", "uci", "figures", "finite_vs_infinite"} <= set(apps)
    schemas = [a.schema for a in apps.values() if a.schema is not None]
    missing = [m for s in schemas for m in missing_descriptions(s)]
    assert missing == []
    assert all(apps["figures"].options.values())


def test_every_architecture_field_reaches_the_command_line_with_its_docstring():
    """ArchConfig is generated from Architecture: a new field needs no schema edit; its
    description is the library's docstring entry."""
    arch_fields = {f.name: f for f in dataclasses.fields(ArchConfig)}
    for f in dataclasses.fields(Architecture):
        assert f.name in arch_fields, f.name
        assert arch_fields[f.name].default == f.default
    assert "recurrent layers" in description(arch_fields["depth"])
    assert description(arch_fields["init"]) == "gaussian or orthogonal recurrent weights W"
    page = help_page("convergence")
    assert "arch.init=gaussian" in page and "orthogonal recurrent weights W" in page


@pytest.mark.parametrize(
    "app, present, absent",
    [
        (
            "convergence",
            ["arch: bidirectional, erf_avg", "data: file", "width=256", "seeds=8",
             "Default sweep (-m): width=64,128,256,512,1024,2048,4096", "method=structured",
             "python -m experiments.convergence [-m] [KEY=VALUE ...]"],
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
        ("finite_vs_infinite", ["arms=", "widths=", "tasks="], ["width=", "data:"]),
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


def test_a_new_architecture_field_reaches_the_command_line_without_a_schema_edit():
    """What another branch adds to Architecture (a ``cell``, an ``ema`` readout parameter)
    becomes an option with its type, default and docstring description."""
    from omegaconf import OmegaConf

    from experiments.common.schema import arch_config_for

    @dataclasses.dataclass(frozen=True)
    class Wider(Architecture):
        """An Architecture with two more fields.

        Attributes:
            cell: the recurrent cell, ``elman``.
            ema: the weight lambda of the ``ema`` readout (None: not used).
        """

        cell: str = "elman"
        ema: float | None = None

    cfg_cls = arch_config_for(Wider)
    got = {f.name: f for f in dataclasses.fields(cfg_cls)}
    assert description(got["cell"]) == "the recurrent cell, elman"
    assert description(got["ema"]) == "the weight lambda of the ema readout (None: not used)"
    conf = OmegaConf.merge(OmegaConf.structured(cfg_cls), {"ema": 0.9, "cell": "elman"})
    arch = OmegaConf.to_object(conf).to_architecture()
    assert isinstance(arch, Wider) and arch.ema == 0.9 and arch.depth == 1
    assert OmegaConf.to_object(OmegaConf.structured(cfg_cls)).to_architecture().ema is None
