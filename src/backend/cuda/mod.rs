//! The CUDA backend: the backend traits on one GPU, with the kernels of `kernels/` (compiled at
//! run time by NVRTC, see `kernels`) and cuBLAS for matrix products.
//!
//! One backend drives one device through one stream, so every operation is ordered and kernels
//! need no cross-stream synchronisation. The kernels follow the CPU backend's arithmetic step by
//! step (no fused multiply-add, the same chunked reduction shapes), and nothing uses float
//! atomics, so two runs give the same bits; GEMMs are cuBLAS's, reproducible run to run on the
//! same GPU model. Beside the traits it offers the GPU neighbour sampler (`sample_neighbors`,
//! bit-identical to `sample::neighbor::sample_node`) and first-seen deduplication
//! (`dedup_relabel`).
//!
//! A rank picks its device from its local rank (`OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID`,
//! `SLURM_LOCALID`, else 0) modulo the number of visible devices. Without a driver or a device,
//! `CudaBackend::try_new` returns an error (never a panic) so the caller can fall back to the CPU.
//!
//! This file owns device discovery, the context, stream and loaded kernels, and the launch
//! helpers; `memory` holds allocation and transfers (`Memory`), `dense` and `graph` the
//! operations, `sampler` the device CSR and the sampling and deduplication kernels, `chain` the block chain
//! (a batch's hops built into blocks on the device). Argument
//! checks shared with the CPU backend are `backend::checks`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PinnedHostSlice};
use cudarc::nvrtc::Ptx;

mod chain;
mod dense;
mod graph;
pub mod kernels;
mod memory;
mod sampler;
mod sgns;
mod walk;

pub use self::sampler::{DeviceCsr, GpuCsrSource};

use self::kernels::KERNEL_FILES;
use crate::backend::checks::shape_error;
use crate::error::{Error, Result};

/// Threads per block of the grid-stride and one-warp-per-row kernels.
const BLOCK_THREADS: u32 = 256;
/// Resident blocks per multiprocessor a grid-stride launch asks for at most.
const BLOCKS_PER_SM: u32 = 16;

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{what}: {e:?}"))
}

/// Whether this process can run the CUDA backend at all: a driver, cuBLAS and NVRTC that load.
/// `Err` says which is missing.
pub fn cuda_available() -> std::result::Result<(), String> {
    // SAFETY: only tries to open the libraries; nothing is called through them.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver on this machine (libcuda.so cannot be loaded)".into());
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err("cuBLAS (libcublas.so.12) cannot be loaded; put it on LD_LIBRARY_PATH".into());
    }
    kernels::nvrtc_available()
}

/// The local rank of this process on its node, from the launcher's environment (Open MPI, MPICH /
/// Intel MPI, Slurm), else 0. Under MPI, `Comm::local_rank` (from MPI itself) is preferred.
pub fn local_rank() -> usize {
    crate::distributed::comm::launcher_local_rank().unwrap_or(0)
}

/// The device a local rank uses: round robin over the visible devices.
pub fn device_for_rank(local_rank: usize, device_count: usize) -> usize {
    if device_count == 0 {
        0
    } else {
        local_rank % device_count
    }
}

/// Number of visible CUDA devices (`Err` without a driver).
pub fn device_count() -> Result<usize> {
    cuda_available().map_err(Error::Cuda)?;
    let n = CudaContext::device_count().map_err(|e| cuda_err("counting CUDA devices", e))?;
    Ok(n.max(0) as usize)
}

/// PTX of every kernel file per architecture, compiled once per process.
type PtxSet = Arc<Vec<(&'static str, String)>>;

fn ptx_for(arch: &str) -> Result<PtxSet> {
    static CACHE: OnceLock<Mutex<HashMap<String, PtxSet>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache
        .lock()
        .map_err(|_| Error::Cuda("kernel cache poisoned".into()))?;
    if let Some(set) = map.get(arch) {
        return Ok(set.clone());
    }
    let started = std::time::Instant::now();
    let mut set = Vec::with_capacity(KERNEL_FILES.len());
    for file in KERNEL_FILES {
        set.push((file.name, kernels::compile_ptx(file, arch)?.to_src()));
    }
    log::info!(
        "compiled {} CUDA kernel files for {arch} with NVRTC in {:.0} ms",
        set.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let set = Arc::new(set);
    map.insert(arch.to_string(), set.clone());
    Ok(set)
}

/// The CUDA implementation of the backend traits; `F` and `U` are device buffers.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    description: String,
    max_blocks: u32,
    /// Page-locked host memory for `upload_with` and `host_round_trip`, grown on demand.
    staging: Mutex<Option<PinnedHostSlice<f32>>>,
}

impl CudaBackend {
    /// The backend on this rank's device (see `local_rank`, `device_for_rank`); a clear `Err`
    /// without a driver, a device, cuBLAS or NVRTC.
    pub fn try_new() -> Result<Self> {
        Self::for_local_rank(local_rank())
    }

    /// The backend on the device of local rank `rank` (see `device_for_rank`).
    pub fn for_local_rank(rank: usize) -> Result<Self> {
        let count = device_count()?;
        if count == 0 {
            return Err(Error::Cuda("the CUDA driver reports no device".into()));
        }
        let ordinal = device_for_rank(rank, count);
        let backend = Self::on_device(ordinal)?;
        log::info!(
            "CUDA backend: local rank {rank} uses device {ordinal} of {count}: {}",
            backend.description
        );
        Ok(backend)
    }

    /// The backend on device `ordinal`.
    pub fn on_device(ordinal: usize) -> Result<Self> {
        cuda_available().map_err(Error::Cuda)?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| cuda_err(&format!("creating a context on device {ordinal}"), e))?;
        // One stream per backend: ordering is the stream's, so per-buffer events are not needed.
        // SAFETY: called before any buffer is allocated; all work goes to `stream`.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| cuda_err("creating a stream", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_err("creating cuBLAS", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| cuda_err("compute capability", e))?;
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|e| cuda_err("multiprocessor count", e))?;
        let name = ctx.name().map_err(|e| cuda_err("device name", e))?;
        // PTX for the device's own architecture, or for compute_80 (JIT-compiled forward by the
        // driver) when this NVRTC does not know the device.
        let arch = format!("compute_{major}{minor}");
        let ptx = match ptx_for(&arch) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("NVRTC cannot target {arch} ({e}); using compute_80 PTX");
                ptx_for("compute_80")?
            }
        };
        let mut functions = HashMap::new();
        for (file, (name, source)) in KERNEL_FILES.iter().zip(ptx.iter()) {
            let module = ctx
                .load_module(Ptx::from_src(source.clone()))
                .map_err(|e| cuda_err(&format!("loading {name}.cu PTX"), e))?;
            for kernel in file.kernels {
                let f = module
                    .load_function(kernel)
                    .map_err(|e| cuda_err(&format!("kernel {kernel} of {name}.cu"), e))?;
                functions.insert(*kernel, f);
            }
        }
        Ok(CudaBackend {
            ctx,
            stream,
            blas,
            functions,
            description: format!("cuda:{ordinal} {name} (sm_{major}{minor}, {sms} SMs)"),
            max_blocks: (sms.max(1) as u32) * BLOCKS_PER_SM,
            staging: Mutex::new(None),
        })
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    fn func(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| Error::Cuda(format!("kernel {name} is not loaded")))
    }

    /// A grid-stride launch over `n` threads.
    fn threads(&self, n: u64) -> LaunchConfig {
        let blocks = n
            .div_ceil(BLOCK_THREADS as u64)
            .clamp(1, self.max_blocks as u64) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// A launch with one warp per row.
    fn warps(&self, rows: u64) -> LaunchConfig {
        self.threads(rows.saturating_mul(32))
    }
}

fn to_i32(op: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| shape_error(op, format!("{what} = {v} exceeds cuBLAS's i32 range")))
}

fn dim_u32(op: &str, dim: usize) -> Result<u32> {
    u32::try_from(dim).map_err(|_| shape_error(op, format!("width {dim} exceeds u32")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_assigned_round_robin_by_local_rank() {
        assert_eq!(device_for_rank(0, 4), 0);
        assert_eq!(device_for_rank(5, 4), 1);
        assert_eq!(device_for_rank(3, 1), 0);
        assert_eq!(device_for_rank(2, 0), 0);
    }
}
