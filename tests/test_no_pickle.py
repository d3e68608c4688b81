"""No file is read back with pickle: a scan of the whole tree (library, experiments, scripts,
tests) for unpickling reads, and a check that the scan finds each form it looks for.

Outside the tests every ``torch.load`` / ``np.load`` lives in :mod:`rntk_empirical.safe_io`
(the one reader). Tests may *write* hostile files to plant them (``pickle.dump``,
``np.save(..., allow_pickle=True)``) but read them only through safe loads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("rntk_empirical", "experiments", "scripts", "tests")
THE_READER = "rntk_empirical/safe_io.py"
# calls that unpickle whatever a file holds, whatever their arguments
UNPICKLING = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "pandas.read_pickle",
    "shelve.open",
    "marshal.load",
    "marshal.loads",
    "numpy.lib.format.read_array",
}
LOADERS = {"torch.load", "numpy.load"}
WRITERS = ("save", "savez", "savez_compressed")  # allow_pickle=True only where a test plants


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin for ``import x as y`` / ``from x import y as z``."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, "numpy" if node.id == "np" else node.id))
    return ".".join(reversed(parts))


def _const(kw: ast.keyword) -> object:
    return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"


def violations(source: str, rel: str) -> list[str]:
    """Unpickling reads in ``source`` (the file at ``rel`` under the repository)."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    in_tests = rel.startswith("tests/")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases) or ""
        where = f"{rel}:{node.lineno}"
        kws = {kw.arg: _const(kw) for kw in node.keywords if kw.arg}
        if name in UNPICKLING:
            found.append(f"{where}: {name}")
        if kws.get("weights_only", True) is not True and kws.get("weights_only") is not None:
            found.append(f"{where}: weights_only={kws['weights_only']}")
        if kws.get("allow_pickle") not in (None, False):
            planting = in_tests and name.rsplit(".", 1)[-1] in WRITERS
            if not planting:
                found.append(f"{where}: allow_pickle={kws['allow_pickle']}")
        if name in LOADERS:
            if not in_tests and rel != THE_READER:
                found.append(f"{where}: {name} outside {THE_READER}")
            elif name == "torch.load" and kws.get("weights_only") is not True:
                found.append(f"{where}: torch.load without weights_only=True")
    return found


def _files() -> list[Path]:
    me = Path(__file__).resolve()
    return [
        p
        for root in ROOTS
        for p in sorted((REPO / root).rglob("*.py"))
        if p.resolve() != me and "__pycache__" not in p.parts
    ]


def test_the_tree_reads_nothing_with_pickle():
    files = _files()
    assert len(files) > 50 and any(f.name == "safe_io.py" for f in files)
    found = [v for p in files for v in violations(p.read_text(), str(p.relative_to(REPO)))]
    assert not found, "unpickling reads:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load(p, weights_only=False)",
        "import torch\ntorch.load(p)",
        "from torch import load\nload(p, map_location='cpu')",
        "import numpy as np\nnp.load(p, allow_pickle=True)",
        "import numpy\nnumpy.load(p)",
        "import pickle\npickle.load(fh)",
        "import pickle as pk\npk.loads(b)",
        "from pickle import loads\nloads(b)",
        "import joblib\njoblib.load(p)",
        "import torch\nkw = dict(weights_only=False)\ntorch.load(p, weights_only=flag)",
    ],
)
def test_the_scan_finds_each_form(source):
    assert violations(source, "experiments/x.py"), source


def test_the_scan_is_precise_about_reading():
    """Planting (writing) a hostile file in a test is allowed; reading one safely is too."""
    ok = (
        "import numpy as np, torch, pickle\n"
        "np.save(p, a, allow_pickle=True)\n"
        "pickle.dump(obj, fh)\n"
        "np.load(p)\n"
        "torch.load(p, weights_only=True)\n"
    )
    assert violations(ok, "tests/test_x.py") == []
    assert violations("import numpy as np\nnp.load(p, allow_pickle=True)", "tests/test_x.py")
    assert violations(ok, "experiments/x.py")  # outside the tests: the one reader only
