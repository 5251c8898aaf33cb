#!/usr/bin/env bash
# The PyTorch Geometric environment for `make bench-pyg`, built once and reused (idempotent):
# torch and torch_geometric from PyPI in bench/pyg/.venv, plus torch-scatter and torch-sparse,
# which PyG's own LinkNeighborLoader needs for neighbour sampling (pyg-lib is not on PyPI). Those
# two have no wheels on PyPI; they are built from source for the CPU (about 25 minutes on 2 cores)
# into bench/pyg/.wheels, so a rebuilt venv installs them in seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv"
wheels="$here/.wheels"
py="$venv/bin/python"
pip=("$py" -m pip install -q --disable-pip-version-check)

if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$venv/.base-complete" ] || [ "$here/requirements.txt" -nt "$venv/.base-complete" ]; then
  echo "bench-pyg: installing torch and torch_geometric into $venv (several GB, minutes)"
  "${pip[@]}" -r "$here/requirements.txt"
  touch "$venv/.base-complete"
fi

# Sparse extensions, built once against this torch and cached as wheels.
torch_version=$("$py" -c 'import torch; print(torch.__version__)')
cache="$wheels/torch-$torch_version"
if ! ls "$cache"/torch_sparse-*.whl >/dev/null 2>&1 || ! ls "$cache"/torch_scatter-*.whl >/dev/null 2>&1; then
  echo "bench-pyg: building torch-scatter and torch-sparse from source for torch $torch_version (once; ~25 min on 2 cores)"
  mkdir -p "$cache"
  "${pip[@]}" setuptools wheel ninja
  FORCE_ONLY_CPU=1 MAX_JOBS="$(nproc)" "$py" -m pip wheel -q --disable-pip-version-check \
    --no-build-isolation --no-deps -w "$cache" torch-scatter==2.1.2 torch-sparse==0.6.18
fi
if ! "$py" -c 'import torch_sparse, torch_scatter' >/dev/null 2>&1; then
  "${pip[@]}" --no-deps "$cache"/torch_scatter-*.whl "$cache"/torch_sparse-*.whl
fi
"$py" -W ignore - <<'PY'
import torch, torch_geometric, torch_sparse
from torch_geometric.typing import WITH_TORCH_SPARSE
assert WITH_TORCH_SPARSE, "torch_geometric does not see torch_sparse"
PY
