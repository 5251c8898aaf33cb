#!/usr/bin/env bash
# A virtual environment with PecanPy and gensim for `make bench-node2vec` (idempotent).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import pecanpy, gensim, h5py, sklearn" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r requirements.txt
fi
