# Environment for running shardsage from this checkout (sourced by the Makefile and tests):
# NVRTC from .deps/cuda, and Open MPI settings for single-machine runs as root.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export SHARDSAGE_CUDA_HOME="$_root/.deps/cuda/nvidia"
export LD_LIBRARY_PATH="$_root/.deps/cuda/nvidia/cuda_nvrtc/lib:$_root/.deps/cuda/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$_root/.deps/cuda/nvidia/cuda_nvcc/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One machine: skip network transport probing (MPI_Init ~25 ms instead of ~235 ms), allow more
# ranks than cores (tests run 4 ranks on 2 cores).
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
# A waiting rank yields its core instead of busy-polling: on a shared or oversubscribed machine
# busy-polling made the gradient allreduce 5-18x slower (bench/RESULTS.md, bench-allreduce).
export OMPI_MCA_mpi_yield_when_idle=1
unset _root
