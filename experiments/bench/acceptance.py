"""GPU acceptance: does a device reproduce the CPU float64 results, and how fast is it?

:func:`run_gpu_acceptance` checks, on one device,

* agreement: every empirical-NTK method (float64) and both analytic backends (the
  per-architecture path :func:`analytic_kernels` and the kernel bank, torch backend) against
  the CPU float64 result (for the analytic kernels the CPU's default backend: the compiled
  numba path where installed, an independent implementation), within ``FLOAT64_TOL``
  (relative, Frobenius); the same in float32 (IEEE, TF32 off) within ``FLOAT32_TOL``;
* TF32: inside :func:`precision_scope` the flags read IEEE, a float32 matmul has IEEE float32
  error (TF32 would give ~1e-3), and the global flags are the same after the run as before;
* timing and peak memory at full size: building the network, and the structured eNTK at the
  widths of ``sizes["entk_widths"]`` (N = 64, T = 20); the analytic RNTK at N = 10,000,
  T = 100. Each is timed after a warm-up call at the measured size, with the device
  synchronized around the timed call. Peak memory: ``torch.cuda.max_memory_allocated`` on
  CUDA, the process's peak resident set (``ru_maxrss``, monotonic) on the CPU.

``quick=True`` shrinks every size so the whole run takes seconds on a CPU (the test suite
runs it). The result is a JSON-ready dict; ``ok`` is False when any check failed.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

import torch

from rntk_empirical.analytic import analytic_kernel_bank, analytic_kernels
from rntk_empirical.architecture import Architecture
from rntk_empirical.devices import precision_scope, resolve_device, tf32_flags
from rntk_empirical.empirical import METHODS, empirical_ntk
from rntk_empirical.network import ElmanRNN

FLOAT64_TOL = 1e-10
FLOAT32_TOL = 1e-4  # float32 kernels of T <= 6 step recursions vs float64 (measured ~1e-6)
IEEE_FP32_MATMUL_TOL = 1e-5  # TF32 (10-bit mantissa) gives ~1e-3 on a 512-term dot product

FULL_SIZES = {
    "entk_widths": (16384, 65536),
    "entk_n": 64,
    "entk_t": 20,
    "analytic_n": 10_000,
    "analytic_t": 100,
    "smooth_n": 2000,
    "smooth_t": 50,
    "check_width": 32,
}
QUICK_SIZES = {
    "entk_widths": (64,),
    "entk_n": 8,
    "entk_t": 5,
    "analytic_n": 40,
    "analytic_t": 8,
    "smooth_n": 16,
    "smooth_t": 8,
    "check_width": 12,
}

CHECK_ARCHS = (
    {},
    {"readout": "avg", "depth": 2, "nonlinearity": "erf"},
    {"readout": "per_step", "bidirectional": True, "h0": "per_input", "sigma_h": 0.5},
    {"nonlinearity": "tanh", "init": "orthogonal", "h0": "shared", "sigma_h": 0.7},
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    return float((a - b).norm() / b.norm())


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_bytes(dev: torch.device) -> int:
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _timed(dev: torch.device, fn: Callable[[], object], warmup: bool = True) -> dict:
    """Seconds of one synchronized call of ``fn`` (after one warm-up call) and peak bytes."""
    if warmup:
        fn()
    _sync(dev)
    _reset_peak(dev)
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    return {"seconds": time.perf_counter() - t0, "peak_bytes": _peak_bytes(dev)}


def _agreement(dev: torch.device, width: int) -> list[dict]:
    """Each method/backend on ``dev`` in float64 and float32 against CPU float64."""
    g = torch.Generator().manual_seed(0)
    m, T = 3, 6

    def draw(*shape: int) -> torch.Tensor:
        # float32-representable: per_input initial states hash the inputs' values, so the
        # float32 run must see the same numbers as the float64 reference
        return torch.randn(*shape, generator=g, dtype=torch.float64).float().double()

    x1 = [draw(L, m) for L in (6, 4, 5)]
    x2 = draw(2, T, m)
    rows = []
    for kw in CHECK_ARCHS:
        arch = Architecture(**kw)
        ref_net = ElmanRNN(arch, m, width, seed=3, max_len=T)
        ref = empirical_ntk(ref_net, x1, x2)
        for dtype, tol in ((torch.float64, FLOAT64_TOL), (torch.float32, FLOAT32_TOL)):
            net = ElmanRNN(arch, m, width, seed=3, max_len=T, dtype=dtype, device=dev)
            d1 = [s.to(dev, dtype) for s in x1]
            d2 = x2.to(dev, dtype)
            for method in METHODS:
                with precision_scope(dtype):
                    err = _rel(empirical_ntk(net, d1, d2, method=method), ref)
                rows.append(_row("empirical", method, kw, dtype, err, tol))
        if arch.parameterization != "ntk":
            continue
        ref_a, ref_k = analytic_kernels(arch, x1, x2, device="cpu")
        bank_arch = Architecture(**{**kw, "readout": "last"})
        ref_bank = analytic_kernels(bank_arch, x1, x2, device="cpu")[0]
        for dtype, tol in ((torch.float64, FLOAT64_TOL), (torch.float32, FLOAT32_TOL)):
            with precision_scope(dtype):
                th, k = analytic_kernels(arch, x1, x2, dtype=dtype, device=dev)
                bank = analytic_kernel_bank(
                    bank_arch, x1, x2, readouts=("last",), dtype=dtype, device=dev, backend="torch"
                )
            err = max(_rel(th, ref_a), _rel(k, ref_k))
            rows.append(_row("analytic", "analytic_kernels", kw, dtype, err, tol))
            err = _rel(bank[(bank_arch.depth, "last")][0], ref_bank)
            rows.append(_row("analytic", "kernel_bank[torch]", kw, dtype, err, tol))
    return rows


def _row(kind: str, method: str, kw: dict, dtype: torch.dtype, err: float, tol: float) -> dict:
    return {
        "kind": kind,
        "method": method,
        "arch": dict(kw),
        "dtype": str(dtype).replace("torch.", ""),
        "rel_err": err,
        "tol": tol,
        "ok": err <= tol,
    }


def _tf32_check(dev: torch.device) -> dict:
    """Flags inside the scopes, a float32 matmul's error, and the flags restored."""
    flags = {label: getattr(o, a) for label, o, a in tf32_flags()}
    inside = {}
    for name, dtype, tf32 in (
        ("float64", torch.float64, False),
        ("float32", torch.float32, False),
        ("float32_tf32", torch.float32, True),
    ):
        with precision_scope(dtype, tf32=tf32):
            inside[name] = {label: getattr(o, a) for label, o, a in tf32_flags()}
    g = torch.Generator().manual_seed(1)
    a = torch.randn(512, 512, generator=g, dtype=torch.float64)
    b = torch.randn(512, 512, generator=g, dtype=torch.float64)
    with precision_scope(torch.float32):
        c32 = a.float().to(dev) @ b.float().to(dev)
        _sync(dev)
    err = float(((c32.double().cpu() - a @ b).abs().max()) / (a @ b).abs().max())
    after = {label: getattr(o, a) for label, o, a in tf32_flags()}
    ieee = all(v in ("ieee", False) for v in inside["float64"].values()) and all(
        v in ("ieee", False) for v in inside["float32"].values()
    )
    return {
        "before": flags,
        "inside": inside,
        "after": after,
        "float32_matmul_rel_err": err,
        "ok": ieee and after == flags and err <= IEEE_FP32_MATMUL_TOL,
    }


def _entk_timing(dev: torch.device, width: int, n: int, T: int) -> dict:
    m = 3
    x = torch.randn(n, T, m, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # the previous width's network is gone
    _sync(dev)
    _reset_peak(dev)
    t0 = time.perf_counter()
    net = ElmanRNN(Architecture(), m, width, seed=0, device=dev)
    _sync(dev)
    build = {"seconds": time.perf_counter() - t0, "peak_bytes": _peak_bytes(dev)}
    xd = x.to(dev)
    with precision_scope(torch.float64):
        run = _timed(dev, lambda: empirical_ntk(net, xd, method="structured"))
    return {"width": width, "n": n, "t": T, "build": build, "structured_ntk": run}


def _analytic_timing(dev: torch.device, n: int, T: int, nonlinearity: str = "relu") -> dict:
    """Time and peak memory of analytic_kernels on ``dev`` (the torch path off the CPU; for
    tanh, the smooth-dual series evaluated with torch ops on the device), N = n, T, m = 3."""
    x = torch.randn(n, T, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    xd = x.to(dev)
    arch = Architecture(nonlinearity=nonlinearity)
    with precision_scope(torch.float64):
        run = _timed(dev, lambda: analytic_kernels(arch, xd, device=dev))
    return {"n": n, "t": T, "nonlinearity": nonlinearity, "analytic_kernels": run}


def run_gpu_acceptance(
    device: torch.device | str = "cuda", sizes: dict | None = None, quick: bool = False
) -> dict:
    """Agreement, TF32 and timing checks on ``device`` (see the module docstring).

    Args:
        device: the device under test (``cuda``, ``cpu`` or ``auto``).
        sizes: overrides of ``FULL_SIZES`` (or ``QUICK_SIZES`` when ``quick``) keys.
        quick: tiny sizes (seconds on a CPU).

    Returns:
        ``{"device", "torch", "sizes", "agreement": [rows], "tf32": {...}, "timing": {...},
        "ok"}``; each agreement row has ``rel_err``, ``tol`` and ``ok``.
    """
    dev = resolve_device(device)
    sz = {**(QUICK_SIZES if quick else FULL_SIZES), **(sizes or {})}
    unknown = set(sz) - set(FULL_SIZES)
    if unknown:
        raise ValueError(f"unknown sizes {sorted(unknown)}; allowed: {sorted(FULL_SIZES)}")
    agreement = _agreement(dev, sz["check_width"])
    tf32 = _tf32_check(dev)
    timing = {
        "entk": [_entk_timing(dev, w, sz["entk_n"], sz["entk_t"]) for w in sz["entk_widths"]],
        "analytic": _analytic_timing(dev, sz["analytic_n"], sz["analytic_t"]),
        "analytic_smooth": _analytic_timing(dev, sz["smooth_n"], sz["smooth_t"], "tanh"),
    }
    ok = all(r["ok"] for r in agreement) and tf32["ok"]
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sz.items()},
        "agreement": agreement,
        "tf32": tf32,
        "timing": timing,
        "ok": ok,
    }
