#!/usr/bin/env bash
# The whole test suite: unit and integration tests (real HDF5 files, real mpirun with 2 and 4
# ranks, real NVRTC compilation, a real single-node Slurm cluster), then format and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo test --no-fail-fast -- --test-threads=2
