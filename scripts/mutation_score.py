"""Mutation score of the numerical core on a seeded, stratified sample of mutants (mutmut 3).

    python scripts/mutation_score.py                      # 150 mutants, the current tests
    python scripts/mutation_score.py --tests-rev bc7c1c0^ # the same mutants, older tests
    python scripts/mutation_score.py --sample 0           # every mutant (hours on 2 cores)

The run happens in a scratch copy of the working tree (``--workdir``), so the checkout is
never touched and two runs (e.g. before / after) can go side by side. Mutants come from the
``[mutmut]`` section of ``setup.cfg`` (modules and the fast test subset); ``--tests-rev``
replaces the subset's test files with their versions at that git revision (files missing
there are dropped from the subset), which measures an older suite against the same mutants.

The sample: ``--sample`` mutants drawn without replacement with ``--seed``, stratified by
module in proportion to its mutant count. Output: a table per module, the score
(killed + timeout) / checked (a mutant no test covers counts as missed), a 95% Wilson
interval for the score of all mutants, the survivors (``mutmut show NAME`` in the workdir
prints each diff) and ``mutation_score.json`` in the workdir.
"""

from __future__ import annotations

import argparse
import configparser
import json
import math
import random
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}


def copy_tree(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the checkout, nothing else."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def use_tests_from(rev: str, work: Path) -> list[str]:
    """Replace the subset's test files (and conftest) with their versions at ``rev``."""
    cfg = configparser.ConfigParser()
    cfg.read(work / "setup.cfg")
    subset = cfg["mutmut"]["pytest_add_cli_args_test_selection"].split()
    kept = []
    for rel in [*subset, "tests/conftest.py"]:
        show = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=REPO, capture_output=True)
        if show.returncode == 0:
            (work / rel).write_bytes(show.stdout)
            if rel != "tests/conftest.py":
                kept.append(rel)
        elif rel != "tests/conftest.py":
            (work / rel).unlink(missing_ok=True)
    cfg["mutmut"]["pytest_add_cli_args_test_selection"] = "\n" + "\n".join(kept)
    with open(work / "setup.cfg", "w") as fh:
        cfg.write(fh)
    return kept


def mutmut(work: Path, *args: str) -> None:
    """Run mutmut in ``work``; exit with its log's path if the unmutated tests fail (mutmut
    then scores nothing). Exit code 1 alone is not an error: mutmut asserts when the name
    filter of the generation call below matches no mutant."""
    log = work / "mutmut.log"
    start = log.stat().st_size if log.exists() else 0
    with open(log, "a") as fh:
        rc = subprocess.run(["mutmut", *args], cwd=work, stdout=fh, stderr=subprocess.STDOUT)
    with open(log, errors="replace") as fh:
        fh.seek(start)
        text = fh.read()
    for failure in ("failed to collect stats", "Failed to run clean test"):
        if failure in text:
            sys.exit(f"error: mutmut: {failure} (the unmutated test subset fails); see {log}")
    if rc.returncode not in (0, 1):
        sys.exit(f"error: mutmut {args[0]} exited with {rc.returncode}; see {log}")


def exit_codes(work: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def module_of(name: str) -> str:
    return name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]


def stratified(names: list[str], k: int, seed: int) -> list[str]:
    if k <= 0 or k >= len(names):
        return sorted(names)
    by_mod = defaultdict(list)
    for n in sorted(names):
        by_mod[module_of(n)].append(n)
    rng = random.Random(seed)
    picked = []
    for _, group in sorted(by_mod.items()):
        share = max(1, round(k * len(group) / len(names)))
        picked += rng.sample(group, min(share, len(group)))
    return sorted(picked)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (mid - half, mid + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=150, help="mutants to run (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tests-rev", default=None, help="git revision of the test files")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rntk_mutation"))
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="delete the workdir first")
    args = ap.parse_args()
    if shutil.which("mutmut") is None:
        sys.exit("error: mutmut is not installed (pip install -e '.[mutation]')")

    work = args.workdir
    if args.fresh and work.exists():
        shutil.rmtree(work)
    if not (work / "setup.cfg").exists():
        work.mkdir(parents=True, exist_ok=True)
        copy_tree(work)
        if args.tests_rev:
            kept = use_tests_from(args.tests_rev, work)
            print(f"tests from {args.tests_rev}: {' '.join(kept)}", flush=True)
    t0 = time.perf_counter()
    # a name that matches no mutant: mutmut generates every mutant and its test map, runs none
    mutmut(work, "run", "--max-children", str(args.max_children), "no_such_module.x_none")
    codes = exit_codes(work)
    sample = stratified(list(codes), args.sample, args.seed)
    todo = [n for n in sample if codes.get(n) is None]
    print(f"{len(codes)} mutants; sample {len(sample)}, {len(todo)} to run", flush=True)
    if todo:
        mutmut(work, "run", "--max-children", str(args.max_children), *todo)
    codes = exit_codes(work)

    from mutmut.stats import status_by_exit_code

    status = {n: status_by_exit_code[codes.get(n)] for n in sample}
    rows = defaultdict(Counter)
    for n, s in status.items():
        rows[module_of(n)][s] += 1
    print(f"\n{'module':40s} {'killed':>6s} {'timeout':>7s} {'survived':>8s} {'no tests':>8s}")
    for mod, c in sorted(rows.items()):
        print(f"{mod:40s} {c['killed']:6d} {c['timeout']:7d} {c['survived']:8d} {c['no tests']:8d}")
    total = Counter(status.values())
    # a mutant no test of the subset runs is a bug the subset cannot see: it counts as missed
    checked = [n for n, s in status.items() if s != "not checked"]
    hits = sum(status[n] in DETECTED for n in checked)
    lo, hi = wilson(hits, len(checked))
    survivors = sorted(n for n, s in status.items() if s == "survived")
    print(
        f"\nscore {hits}/{len(checked)} = {hits / max(len(checked), 1):.1%} "
        f"(95% Wilson interval for all mutants {lo:.1%}-{hi:.1%}); "
        f"killed {total['killed']}, timeout {total['timeout']}, survived {total['survived']}, "
        f"no tests {total['no tests']}, not checked {total['not checked']}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    for n in survivors:
        print("survived:", n)
    (work / "mutation_score.json").write_text(
        json.dumps(
            {
                "tests_rev": args.tests_rev,
                "seed": args.seed,
                "sample": sample,
                "status": status,
                "score": [hits, len(checked)],
                "wilson95": [lo, hi],
                "survivors": survivors,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
