#!/usr/bin/env bash
# Install rntk_empirical and its dependencies into the current Python environment.
#
# torch is installed first and only if missing, so that pip never replaces a working build:
#   - an existing torch (CPU or CUDA) is kept;
#   - with an NVIDIA driver present (nvidia-smi), PyPI's default (CUDA) build is installed;
#   - otherwise torch==2.13.0, whose CPU wheel is available locally on the project's machines.
# Override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0" or extra pip args in TORCH_PIP_ARGS.
# EXTRAS selects optional dependency groups (default "dev"; CI uses "dev,timeseries,fast").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
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
