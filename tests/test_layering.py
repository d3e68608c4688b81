"""The layering rules: the library stands alone, experiments/common imports nothing built on
it (no import circle), and no module uses another's private names."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rntk_empirical", "experiments")


def test_library_imports_neither_experiments_nor_hydra():
    """Every module of rntk_empirical, imported in a fresh interpreter, loads none of them."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import rntk_empirical\n"
        "names = [m.name for m in pkgutil.walk_packages(rntk_empirical.__path__, "
        "'rntk_empirical.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('experiments', 'hydra', 'omegaconf'))\n"
        "print(len(names)); print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    count, bad = (
        out.stdout.strip().split(" ", 1)
        if " " in out.stdout.strip()
        else (
            out.stdout.strip(),
            "",
        )
    )
    assert int(count) >= 20  # every module was walked (the analytic package included)
    assert bad == "", f"the library loaded {bad}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_uses(path: Path) -> list[str]:
    """``from project.module import _name`` and ``module._name`` with ``module`` a project
    module imported here, where the module is not the file itself."""
    me = _module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES or node.module == me:
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{me}: from {node.module} import {a.name}")
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    aliases[a.asname or a.name.split(".")[0]] = a.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and aliases[node.value.id] != me
        ):
            found.append(f"{me}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 40
    found = [f for p in files for f in _private_uses(p)]
    assert found == []


def test_the_checker_sees_a_private_import():
    """The scan above is not vacuous: it flags both forms in a planted module."""
    pkg = ROOT / "experiments"
    planted = pkg / "_planted_for_test.py"
    planted.write_text(
        "from rntk_empirical.analytic.common import _variances\n"
        "from rntk_empirical import empirical\n"
        "x = empirical._prepare_pair\n"
    )
    try:
        found = _private_uses(planted)
    finally:
        planted.unlink()
    assert found == [
        "experiments._planted_for_test: from rntk_empirical.analytic.common import _variances",
        "experiments._planted_for_test: empirical._prepare_pair",
    ]


def _project_imports(path: Path) -> list[str]:
    """Every project module ``path`` imports, at any depth (function-level imports too)."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [m for m in out if m.split(".")[0] in PACKAGES]


def _upward_imports(files: list[Path]) -> list[str]:
    """Imports of ``experiments.<package>`` other than ``experiments.common`` in ``files``."""
    found = []
    for p in files:
        for m in _project_imports(p):
            parts = m.split(".")
            if parts[0] == "experiments" and len(parts) > 1 and parts[1] != "common":
                found.append(f"{p.name} imports {m}")
    return sorted(set(found))


def test_common_imports_nothing_above_it():
    """No import circle: experiments/common is imported by the experiments, never the
    reverse (help and sweeps read the experiment registry instead)."""
    files = sorted((ROOT / "experiments" / "common").rglob("*.py"))
    assert len(files) >= 8
    assert _upward_imports(files) == []


def test_the_circle_checker_sees_an_upward_import(tmp_path):
    """The scan above is not vacuous: a module-level and a function-level import are found."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from experiments.common.records import read_json\n"
        "def f():\n    from experiments.convergence.run import prepare\n"
        "import experiments.figures\n"
    )
    found = [f.split(" imports ")[1] for f in _upward_imports([planted])]
    assert found == [
        "experiments.convergence.run",
        "experiments.convergence.run.prepare",
        "experiments.figures",
    ]


def test_no_shim_modules_are_left():
    """Old command names were shims kept alive by the docs; the docs cite the packages."""
    old = ("report", "drift_report", "report_uci", "bench_bank", "bench_entk", "bench_rntk")
    assert [n for n in old if (ROOT / "experiments" / f"{n}.py").exists()] == []
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    cited = [
        f"{p.name}: experiments.{n}"
        for p in docs
        for n in old
        if re.search(rf"experiments\.{n}\b(?!\.)", p.read_text())
    ]
    assert cited == []
