#!/usr/bin/env bash
# Installs what shardsage needs on Debian 12, idempotently and quietly: system packages (MPI,
# HDF5, libclang for the MPI bindings), and the NVRTC wheel that compiles the CUDA kernels at run
# time (no GPU needed to compile). Prints nothing when everything is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# libopenblas0 and libblis4: the optional system GEMMs of the CPU backend (--cpu-gemm), loaded at run time.
# chromium and curl: the serving tests (the page in headless Chromium, the curl examples of docs/serving.md).
packages=(build-essential pkg-config openmpi-bin libopenmpi-dev libclang-dev libhdf5-dev hdf5-tools python3-pip libopenblas0 libblis4 chromium curl)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi

# NVRTC (and ptxas, for the register/spill report) from PyPI into the project, not the system.
cuda="$root/.deps/cuda"
if [ ! -f "$cuda/.complete" ]; then
  echo "setup: installing the NVRTC wheel into .deps/cuda"
  rm -rf "$cuda"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$cuda" \
    nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86
  touch "$cuda/.complete"
fi

# TensorBoard (Python) into the project, only for the test that reads our event files with
# TensorBoard's own reader (tests/tensorboard.rs); training itself does not need it.
py="$root/.deps/py"
if [ ! -f "$py/.complete" ]; then
  echo "setup: installing tensorboard into .deps/py"
  rm -rf "$py"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$py" \
    tensorboard==2.21.0
  touch "$py/.complete"
fi
