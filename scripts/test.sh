#!/usr/bin/env bash
# The whole test suite: unit and integration tests (real HDF5 files, real mpirun with 1, 2 and 4
# ranks, real NVRTC compilation, a real single-node Slurm cluster, MPIJob manifests), then the
# format and lint checks. Tests run the binary cargo builds for them (CARGO_BIN_EXE_shardsage).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --no-fail-fast -- --test-threads=2
cargo fmt --all -- --check
cargo clippy --quiet --all-targets -- -D warnings
