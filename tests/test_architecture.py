import math

import pytest
import torch

from rntk_empirical import Architecture, register_nonlinearity


def test_default_is_one_layer_relu_last_zero_state():
    a = Architecture()
    assert (a.depth, a.nonlinearity, a.readout, a.h0) == (1, "relu", "last", "zero")
    assert (a.parameterization, a.init, a.bidirectional) == ("ntk", "gaussian", False)
    assert a.sigma_w == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("nonlinearity", "sigmoidish", "relu"),
        ("readout", "mean", "per_step"),
        ("h0", "random", "per_input"),
        ("parameterization", "mup", "standard"),
        ("init", "uniform", "orthogonal"),
        ("depth", 0, "integer >= 1"),
        ("sigma_w", -1.0, ">= 0"),
        ("sigma_b", float("nan"), ">= 0"),
        ("bidirectional", "yes", "True"),
        ("readout", "ema2", "ema"),
        ("ema_decay", 1.5, "in [0, 1]"),
        ("ema_decay", -0.1, ">= 0"),
        ("ema_decay", "0.5", ">= 0"),
        ("cell", "lstm", "elman, minimalrnn, gru"),
        ("gate", "tanh", "sigmoid, erf"),
        ("gate", None, "sigmoid, erf"),
    ],
)
def test_invalid_fields_name_field_and_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as err:
        Architecture(**{field: value})
    assert f"Architecture.{field}" in str(err.value)
    assert allowed in str(err.value)


def test_registered_nonlinearity_becomes_valid():
    register_nonlinearity("softplus_test", torch.nn.functional.softplus)
    assert Architecture(nonlinearity="softplus_test").nonlinearity == "softplus_test"


def test_nonlinearity_without_derivative_is_rejected():
    with pytest.raises(ValueError, match="derivative"):
        register_nonlinearity("numpy_fn", lambda x: torch.from_numpy(x.numpy().round()))
