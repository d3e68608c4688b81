"""Device and dtype resolution, and the float64 validation policy (TF32 off)."""

from __future__ import annotations

import torch

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without CUDA is a clear error."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not valid; use auto, cpu or cuda") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device=cpu or device=auto"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not supported; use auto, cpu or cuda")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None = "float64") -> torch.dtype:
    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype={dtype} is not supported; use float64 or float32")
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype={dtype!r} is not supported; use float64 or float32") from None


def validation_precision(dtype: torch.dtype) -> None:
    """Disable TF32 matmuls for float64 validation work (they would silently round float32
    paths used inside float64 comparisons and make GPU results differ from CPU)."""
    if dtype == torch.float64 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
