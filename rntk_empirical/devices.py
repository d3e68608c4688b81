"""Device and dtype resolution, the memory a device has free, and the TF32 policy.

TF32 (10-bit mantissa products in float32 matmuls and convolutions on Ampere and later GPUs)
never applies to float64, but float32 work inside a float64 comparison, or a float32 result
that claims IEEE float32, must not use it. :func:`precision_scope` sets the policy for a
block of work and restores the global flags on exit; library code never leaves them changed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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


# The small-problem rule of device="auto": a GPU pays ~10 us per kernel launch, which small
# recurrent problems (a time loop of small matmuls) cannot amortize. Estimates: 2 CPU cores do
# ~2e10 float64 flop/s in matmuls; a CUDA launch costs ~1e-5 s. CUDA is chosen when the
# CPU time of the work exceeds twice the launch time of its kernels.
CPU_FLOPS = 2e10
GPU_LAUNCH_S = 1e-5


def auto_device(flops: float, launches: float) -> torch.device:
    """``device="auto"`` for a computation of about ``flops`` floating-point operations issued
    as about ``launches`` GPU kernels: CUDA if available and ``flops / CPU_FLOPS >
    2 * launches * GPU_LAUNCH_S``, else the CPU (e.g. the default convergence sweep's
    N = 8, T = 5 networks stay on the CPU below width ~600)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    worth_it = flops / CPU_FLOPS > 2 * launches * GPU_LAUNCH_S
    return torch.device("cuda" if worth_it else "cpu")


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


# Fraction of the free memory of a device one computation may plan to use: the rest is
# left to the allocator's fragmentation, to the caller and (on the CPU) to other processes.
MEMORY_FRACTION = 0.25


def available_memory(device: torch.device | str) -> int:
    """Bytes free for new allocations on ``device``.

    CUDA: the free figure of ``torch.cuda.mem_get_info`` (plus what PyTorch's caching
    allocator holds reserved but unused, which it reuses). CPU: ``MemAvailable`` of
    /proc/meminfo, else the free physical pages (``os.sysconf``), else 4 GiB.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free) + max(0, int(cached))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def memory_budget(device: torch.device | str, fraction: float = MEMORY_FRACTION) -> int:
    """Bytes one computation may plan for on ``device``: ``fraction`` of
    :func:`available_memory`, at least 64 MiB."""
    return max(64 * 2**20, int(available_memory(device) * fraction))


def tf32_flags() -> list[tuple[str, object, str]]:
    """``(label, object, attribute)`` of every global reduced-precision float32 switch of this
    torch: the ``fp32_precision`` settings where they exist (PyTorch >= 2.9; CUDA matmul,
    cuDNN conv/rnn, oneDNN matmul/conv on the CPU), else the deprecated ``allow_tf32``."""
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):
        found = []
        for label in ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv"):
            obj = b
            for part in label.split("."):
                obj = getattr(obj, part, None)
            if obj is not None and hasattr(obj, "fp32_precision"):
                found.append((f"{label}.fp32_precision", obj, "fp32_precision"))
        return found
    return [
        ("cuda.matmul.allow_tf32", b.cuda.matmul, "allow_tf32"),
        ("cudnn.allow_tf32", b.cudnn, "allow_tf32"),
    ]


def _set_tf32(enabled: bool) -> None:
    """TF32 on (CUDA only) or every switch to IEEE."""
    for label, obj, attr in tf32_flags():
        on = enabled and not label.startswith("mkldnn")
        if attr == "fp32_precision":
            setattr(obj, attr, "tf32" if on else "ieee")
        else:
            setattr(obj, attr, on)


@contextlib.contextmanager
def precision_scope(dtype: torch.dtype | str, tf32: bool = False) -> Iterator[None]:
    """Run a block with IEEE float32 arithmetic in CUDA matmuls and cuDNN (TF32 off), or with
    TF32 on when ``tf32=True`` and ``dtype`` is float32; restores the previous flags on exit
    (also on an exception).

    float64 work always runs with TF32 off: float32 helpers inside a float64 validation must
    not be rounded to 10 mantissa bits. Works (and only touches flags) on CPU-only builds too.
    """
    dtype = resolve_dtype(dtype)
    flags = tf32_flags()
    saved = [getattr(obj, attr) for _, obj, attr in flags]
    try:
        _set_tf32(bool(tf32) and dtype == torch.float32)
        yield
    finally:
        for (_, obj, attr), value in zip(flags, saved):
            setattr(obj, attr, value)
