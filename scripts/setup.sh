#!/usr/bin/env bash
# Install rntk_empirical and its dependencies into the active virtual environment:
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/setup.sh
#
# It installs with `python` (the interpreter the README's commands then run; PYTHON=...
# overrides) and stops when that is a system or user-global Python, i.e. no virtual environment
# (sys.prefix == sys.base_prefix) and no conda environment other than base, unless
# ALLOW_GLOBAL=1.
#
# torch is installed first and only if missing, so that pip never replaces a working build:
#   - an existing torch (CPU or CUDA) is kept;
#   - with an NVIDIA driver present (nvidia-smi), PyPI's default (CUDA) build is installed;
#   - otherwise torch==2.13.0, whose CPU wheel is available locally on the project's machines.
# Override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0" or extra pip args in TORCH_PIP_ARGS.
# EXTRAS selects optional dependency groups (default "dev"; CI uses "dev,timeseries,fast").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
VENV_HINT="python3 -m venv .venv && . .venv/bin/activate"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup: no '$PY' on PATH; create and activate a virtual environment first: $VENV_HINT" >&2
    exit 2
fi
if [[ "${ALLOW_GLOBAL:-0}" != 1 ]] && ! "$PY" -c '
import os, sys
venv = sys.prefix != sys.base_prefix
conda = os.environ.get("CONDA_PREFIX") == sys.prefix and os.environ.get("CONDA_DEFAULT_ENV") != "base"
sys.exit(0 if venv or conda else 1)'; then
    where="$("$PY" -c 'import sys; print(sys.prefix)')"
    echo "setup: stopped: '$PY' is the global Python at $where (no virtual environment active);" \
        "run '$VENV_HINT' first, or set ALLOW_GLOBAL=1 to install there anyway" >&2
    exit 2
fi
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if ! "$PY" -c "import torch" 2>/dev/null; then
    if [[ -n "${TORCH_SPEC:-}" ]]; then
        spec="$TORCH_SPEC"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        spec="torch>=2.3"
    else
        spec="torch==2.13.0"
    fi
    echo "setup: installing $spec" >&2
    # shellcheck disable=SC2086
    "${PIP[@]}" "$spec" ${TORCH_PIP_ARGS:-}
fi
"${PIP[@]}" -e ".[${EXTRAS:-dev}]"
"$PY" -c "import torch, rntk_empirical; print('setup: torch', torch.__version__, \
'cuda' if torch.cuda.is_available() else 'cpu', '| rntk_empirical ready')" >&2
# the compiled kernel bank (fast extra): compile it now, once per machine, not in the first job
if "$PY" -c "import numba" 2>/dev/null; then
    echo "setup: compiling the numba kernel bank (once per machine, ~1 min)" >&2
    "$PY" -m rntk_empirical.analytic.warmup
fi
