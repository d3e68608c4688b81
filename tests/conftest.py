import pytest
import torch

torch.set_default_dtype(torch.float64)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b||_F / ||b||_F."""
    return float((a - b).norm() / b.norm())
