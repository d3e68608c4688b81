"""Benchmark of the empirical NTK methods (issue 2).

    python -m experiments.bench.entk [--quick] [--device cpu|cuda] [--out results.json]

Prints seconds per method for N=16 sequences, T=10, m=4, ReLU, one layer, float64 at widths
256, 1024 and 4096, the ratio jacobian/structured, and the large case (width 8192, N=64,
T=20, structured) with its peak resident memory. Every case runs in a fresh process so the
peak memory (ru_maxrss) belongs to that case alone; the time excludes building the network.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time


def _case(method: str, width: int, n: int, T: int, m: int, device: str, repeats: int) -> dict:
    import torch

    from rntk_empirical import Architecture
    from rntk_empirical.empirical import empirical_ntk
    from rntk_empirical.network import ElmanRNN

    torch.manual_seed(0)
    x = torch.randn(n, T, m, dtype=torch.float64)
    t0 = time.perf_counter()
    model = ElmanRNN(Architecture(), m, width, seed=0, device=device)
    build = time.perf_counter() - t0
    empirical_ntk(model, x[:2].to(device), method=method)  # warm-up: thread pool, allocator
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        theta = empirical_ntk(model, x.to(device), method=method)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {
        "method": method,
        "width": width,
        "N": n,
        "T": T,
        "m": m,
        "device": device,
        "seconds": min(times),
        "build_seconds": build,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": peak_gpu,
        "trace": float(theta.trace()),
    }


def _worker(args, queue):
    queue.put(_case(*args))


def run_case(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small widths only (smoke test)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="write all measurements to this JSON file")
    a = p.parse_args(argv)
    widths = [64, 128] if a.quick else [256, 1024, 4096]
    large = (512, 8, 5) if a.quick else (8192, 64, 20)
    results = []
    print(f"# empirical NTK, N=16, T=10, m=4, ReLU, L=1, float64, device={a.device}")
    print(
        f"{'width':>6} {'structured s':>13} {'ntk_vp s':>10} {'jacobian s':>11} {'jac/struct':>11}"
    )
    for w in widths:
        row = {
            m: run_case(m, w, 16, 10, 4, a.device, 3) for m in ("structured", "ntk_vp", "jacobian")
        }
        results += list(row.values())
        s, v, j = (row[m]["seconds"] for m in ("structured", "ntk_vp", "jacobian"))
        print(f"{w:>6} {s:>13.4f} {v:>10.4f} {j:>11.4f} {j / s:>10.1f}x", flush=True)
    w, n, T = large
    r = run_case("structured", w, n, T, 4, a.device, 1)
    results.append(r)
    print(
        f"# large: structured, width={w}, N={n}, T={T}: {r['seconds']:.2f} s "
        f"(+{r['build_seconds']:.2f} s to draw the network), peak RSS {r['peak_rss_gib']:.2f} GiB"
        + (f", peak GPU {r['peak_gpu_gib']:.2f} GiB" if r["peak_gpu_gib"] else "")
    )
    if a.out:
        meta = {"python": sys.version, "platform": platform.platform()}
        with open(a.out, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
