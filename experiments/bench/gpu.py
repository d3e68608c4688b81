"""GPU acceptance in one command: does a device reproduce the CPU float64 results, and how
fast is it? (:func:`experiments.bench.acceptance.run_gpu_acceptance`.)

    python -m experiments.bench.gpu                  # on CUDA: full sizes, about 5 minutes
    python -m experiments.bench.gpu --quick          # tiny sizes (any device; the tests run it)
    python -m experiments.bench.gpu --device cpu --quick --out result.json

Prints every agreement check (relative Frobenius error against CPU float64, tolerance), the
TF32 check, and the speed and peak memory of building a network and of the structured eNTK
(widths 16384 and 65536, N = 64, T = 20) and of the analytic RNTK (ReLU N = 10,000, T = 100;
tanh through the smooth-dual series on the device, N = 2000, T = 50).
Exit status 0 when every check passed, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from experiments.bench.acceptance import run_gpu_acceptance
from rntk_empirical.atomic import atomic_write_json


def _mib(b: int) -> str:
    return f"{b / 2**20:.0f} MiB"


def format_result(res: dict) -> str:
    lines = [f"device {res['device']} ({res['device_name']}) | torch {res['torch']}"]
    lines += ["", "agreement with CPU float64:"]
    for r in res["agreement"]:
        mark = "ok  " if r["ok"] else "FAIL"
        lines.append(
            f"  {mark} {r['kind']:<9} {r['method']:<11} {r['dtype']:<8} "
            f"err {r['rel_err']:.2e} (tol {r['tol']:.0e}) {r.get('arch', '')}"
        )
    t = res["tf32"]
    lines += [
        "",
        f"TF32: {'ok' if t['ok'] else 'FAIL'} (IEEE inside the precision scope; float32 matmul "
        f"rel. err {t['float32_matmul_rel_err']:.1e}; global flags restored: "
        f"{t['before'] == t['after']})",
        "",
    ]
    for e in res["timing"].get("entk", []):
        lines.append(
            f"structured eNTK n={e['width']} N={e['n']} T={e['t']}: build "
            f"{e['build']['seconds']:.2f} s, NTK {e['structured_ntk']['seconds']:.2f} s, "
            f"peak {_mib(e['structured_ntk']['peak_bytes'])}"
        )
    for key in ("analytic", "analytic_smooth"):
        a = res["timing"].get(key)
        if a:
            run = a["analytic_kernels"]
            lines.append(
                f"analytic RNTK {a.get('nonlinearity', 'relu')} N={a['n']} T={a['t']} last: "
                f"{run['seconds']:.2f} s, {a['n'] ** 2 * a['t'] / run['seconds'] / 1e6:.1f} M "
                f"cells/s, peak {_mib(run['peak_bytes'])}"
            )
    lines.append(f"\n{'ALL CHECKS PASSED' if res['ok'] else 'SOME CHECKS FAILED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.gpu", description=__doc__)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu, auto")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    a = p.parse_args(argv)
    try:
        res = run_gpu_acceptance(a.device, quick=a.quick)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_result(res))
    if a.out:
        atomic_write_json(a.out, res)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
