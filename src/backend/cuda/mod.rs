//! The CUDA backend: the `Backend` trait on one GPU, with the kernels of `kernels/` (compiled at
//! run time by NVRTC, see `kernels`) and cuBLAS for matrix products.
//!
//! One backend drives one device through one stream, so every operation is ordered and kernels
//! need no cross-stream synchronisation. The kernels follow the CPU backend's arithmetic step by
//! step (no fused multiply-add, the same chunked reduction shapes), and nothing uses float
//! atomics, so two runs give the same bits; GEMMs are cuBLAS's, reproducible run to run on the
//! same GPU model. Beside the trait it offers the GPU neighbour sampler (`sample_neighbors`,
//! bit-identical to `sample::neighbor::sample_node`) and first-seen deduplication
//! (`dedup_relabel`).
//!
//! A rank picks its device from its local rank (`OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID`,
//! `SLURM_LOCALID`, else 0) modulo the number of visible devices. Without a driver or a device,
//! `CudaBackend::try_new` returns an error (never a panic) so the caller can fall back to the CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PinnedHostSlice,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

pub mod kernels;

use self::kernels::{KERNEL_FILES, SCAN_THREADS, SCAN_TILE};
use crate::backend::{
    shape_error, AdamCoeffs, Backend, DeviceBlock, DropoutKey, COL_SUM_CHUNK, REDUCE_CHUNK,
};
use crate::error::{Error, Result};
use crate::graph::store::GraphPart;
use crate::sample::neighbor::NeighborSource;
use crate::sample::rng::{fold, Stream, GOLDEN};

/// Threads per block of the grid-stride and one-warp-per-row kernels.
const BLOCK_THREADS: u32 = 256;
/// Resident blocks per multiprocessor a grid-stride launch asks for at most.
const BLOCKS_PER_SM: u32 = 16;
/// Largest page-locked staging area a backend keeps (elements, 256 MiB of f32): enough for the
/// gradient buffer and a step's input features; bigger one-off uploads go through pageable memory
/// rather than pinning gigabytes of host memory.
const STAGING_MAX_ELEMS: usize = 64 << 20;

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

/// The CUDA implementation of `Backend`; `F` and `U` are device buffers.
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

    fn alloc<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        if len == 0 {
            // cuMemAlloc rejects 0 bytes on some devices: back an empty buffer by one element.
            let one = self
                .stream
                .alloc_zeros::<T>(1)
                .map_err(|e| cuda_err("allocating an empty buffer", e))?;
            let ptr = one.leak();
            // SAFETY: `ptr` was allocated on this stream for one element and is now owned by
            // the returned slice alone, which frees it on drop; length 0 means it is never read.
            return Ok(unsafe { self.stream.upgrade_device_ptr(ptr, 0) });
        }
        self.stream
            .alloc_zeros(len)
            .map_err(|e| cuda_err(&format!("allocating {len} elements"), e))
    }

    fn to_device<T: DeviceRepr + ValidAsZeroBits>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return self.alloc(0);
        }
        self.stream
            .clone_htod(host)
            .map_err(|e| cuda_err(&format!("uploading {} elements", host.len()), e))
    }

    fn to_host<T: DeviceRepr + Default + Clone>(&self, buf: &CudaSlice<T>) -> Result<Vec<T>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let v = self
            .stream
            .clone_dtoh(buf)
            .map_err(|e| cuda_err(&format!("downloading {} elements", buf.len()), e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronising after a download", e))?;
        Ok(v)
    }

    /// Runs `f` with the page-locked staging area, grown to at least `len` elements. The stream
    /// is idle whenever `f` returns (callers synchronise after their copies), so the area can be
    /// reused by the next call.
    fn with_staging<R>(
        &self,
        len: usize,
        f: impl FnOnce(&mut PinnedHostSlice<f32>) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self
            .staging
            .lock()
            .map_err(|_| Error::Cuda("staging buffer lock poisoned".into()))?;
        if guard.as_ref().is_none_or(|p| p.len() < len) {
            *guard = None; // free the old area before pinning the new one
                           // Flags 0: ordinary page-locked memory. cudarc's `alloc_pinned` asks for
                           // write-combined memory, which the host (MPI, the feature gather) reads very slowly.
                           // SAFETY: the memory is zero-filled below before anyone reads it.
            let mut pinned = unsafe { self.ctx.alloc_pinned_with_flags::<f32>(len, 0) }
                .map_err(|e| cuda_err(&format!("pinning {len} host elements"), e))?;
            pinned
                .as_mut_slice()
                .map_err(|e| cuda_err("pinned staging", e))?
                .fill(0.0);
            *guard = Some(pinned);
        }
        match guard.as_mut() {
            Some(p) => f(p),
            None => Err(Error::Cuda("staging buffer missing".into())),
        }
    }

    /// Sum of f64 partials computed on the device, added on the host in chunk order.
    fn host_sum(&self, partials: &CudaSlice<f64>) -> Result<f64> {
        Ok(self.to_host(partials)?.iter().sum())
    }

    /// `sum_i f(x_i)` in the CPU backend's order (chunks of `REDUCE_CHUNK`).
    fn reduce_f32(&self, x: &CudaSlice<f32>, square: bool) -> Result<f64> {
        let n = x.len() as u64;
        let chunks = (x.len()).div_ceil(REDUCE_CHUNK);
        if chunks == 0 {
            return Ok(Vec::<f64>::new().iter().sum());
        }
        let mut partials = self.alloc::<f64>(chunks)?;
        let chunk = REDUCE_CHUNK as u32;
        let sq: i32 = square as i32;
        let f = self.func("chunk_sums_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n).arg(&chunk).arg(&sq).arg(&mut partials);
        // SAFETY: argument types match the kernel; `partials` has one slot per chunk.
        unsafe { b.launch(self.threads(chunks as u64)) }
            .map_err(|e| cuda_err("chunk_sums_f32", e))?;
        self.host_sum(&partials)
    }

    /// Reads back an error flag written by a kernel.
    fn flag_set(&self, flag: &CudaSlice<u32>) -> Result<bool> {
        Ok(self.to_host(flag)?.first().is_some_and(|&v| v != 0))
    }
}

fn check_len(op: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(shape_error(
            op,
            format!("{what} has {got} elements, expected {want}"),
        ));
    }
    Ok(())
}

fn check_view(op: &str, what: &str, len: usize, off: usize, need: usize) -> Result<()> {
    if off.checked_add(need).is_none_or(|end| end > len) {
        return Err(shape_error(
            op,
            format!("{what}: view of {need} elements at offset {off} exceeds its {len} elements"),
        ));
    }
    Ok(())
}

fn to_i32(op: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| shape_error(op, format!("{what} = {v} exceeds cuBLAS's i32 range")))
}

fn dim_u32(op: &str, dim: usize) -> Result<u32> {
    u32::try_from(dim).map_err(|_| shape_error(op, format!("width {dim} exceeds u32")))
}

/// The folded `(seed, epoch, step, purpose)` state of a stream, as the kernels take it.
pub fn stream_state(seed: u64, epoch: u64, step: u64, purpose: u64) -> u64 {
    fold(fold(fold(fold(GOLDEN, seed), epoch), step), purpose)
}

/// Multiplicative inverse of an odd number modulo 2^64 (Newton's iteration).
const fn inverse_mod_2_64(c: u64) -> u64 {
    let mut x = c;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// The inverse of `rng::mix64` (SplitMix64's finaliser is a bijection).
fn unmix64(mut z: u64) -> u64 {
    const INV2: u64 = inverse_mod_2_64(0x94D0_49BB_1331_11EB);
    const INV1: u64 = inverse_mod_2_64(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 31 ^ z >> 62;
    z = z.wrapping_mul(INV2);
    z ^= z >> 27 ^ z >> 54;
    z = z.wrapping_mul(INV1);
    z ^ (z >> 30) ^ (z >> 60)
}

/// The folded state of a `Stream` (which keeps it private): `stream.at(0, 0)` is
/// `mix64(mix64(state ^ GOLDEN) ^ GOLDEN)`, and `mix64` is invertible.
pub fn state_of(stream: Stream) -> u64 {
    unmix64(unmix64(stream.at(0, 0)) ^ GOLDEN) ^ GOLDEN
}

/// A part's CSR on the device, for the GPU neighbour sampler.
pub struct DeviceCsr {
    pub first_node: u64,
    pub num_nodes: usize,
    indptr: CudaSlice<u64>,
    indices: CudaSlice<u32>,
}

impl CudaBackend {
    /// Uploads a CSR over the nodes `first_node ..` (`indptr` has one entry more than nodes).
    pub fn upload_csr(
        &self,
        first_node: u64,
        indptr: &[u64],
        indices: &[u32],
    ) -> Result<DeviceCsr> {
        if indptr.is_empty() || indptr.last().copied() != Some(indices.len() as u64) {
            return Err(Error::Cuda(format!(
                "CSR: indptr ends at {:?}, indices has {} entries",
                indptr.last(),
                indices.len()
            )));
        }
        Ok(DeviceCsr {
            first_node,
            num_nodes: indptr.len() - 1,
            indptr: self.to_device(indptr)?,
            indices: self.to_device(indices)?,
        })
    }

    /// Exclusive scan of `counts` on the device (kernels `scan_tiles_<suffix>`,
    /// `scan_sums_<suffix>`, `scan_add_<suffix>`); returns the offsets and the total.
    fn exclusive_scan<T>(&self, counts: &CudaSlice<T>, suffix: &str) -> Result<(CudaSlice<T>, T)>
    where
        T: DeviceRepr + ValidAsZeroBits + Default + Clone,
    {
        let n = counts.len() as u64;
        let tiles = n.div_ceil(SCAN_TILE).max(1);
        let mut out = self.alloc::<T>(counts.len().max(1))?;
        let mut tile_sums = self.alloc::<T>(tiles as usize)?;
        let mut total = self.alloc::<T>(1)?;
        let block = LaunchConfig {
            grid_dim: (tiles as u32, 1, 1),
            block_dim: (SCAN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let single = LaunchConfig {
            grid_dim: (1, 1, 1),
            ..block
        };
        let name = format!("scan_tiles_{suffix}");
        let f = self.func(&name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(counts).arg(&mut out).arg(&mut tile_sums).arg(&n);
        // SAFETY: one block per tile of SCAN_TILE items; buffers sized for n and the tiles.
        unsafe { b.launch(block) }.map_err(|e| cuda_err(&name, e))?;
        let name = format!("scan_sums_{suffix}");
        let f = self.func(&name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&mut tile_sums).arg(&tiles).arg(&mut total);
        // SAFETY: one block summing `tiles` tile totals into `total`.
        unsafe { b.launch(single) }.map_err(|e| cuda_err(&name, e))?;
        let name = format!("scan_add_{suffix}");
        let f = self.func(&name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&mut out).arg(&tile_sums).arg(&n);
        // SAFETY: one thread per item of `out`, reading its tile's offset.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err(&name, e))?;
        let total = self.to_host(&total)?[0].clone();
        Ok((out, total))
    }

    /// Samples the neighbours of `nodes` (all owned by `csr`) with the rule of
    /// `sample::neighbor::sample_node` and the folded stream state `state` (see `stream_state`):
    /// returns the per-node counts and the concatenated neighbours, as `NeighborSource` does.
    pub fn sample_neighbors(
        &self,
        csr: &DeviceCsr,
        nodes: &[u64],
        fanout: i32,
        state: u64,
    ) -> Result<(Vec<u32>, Vec<u64>)> {
        let last = csr.first_node + csr.num_nodes as u64;
        if let Some(&n) = nodes.iter().find(|&&n| n < csr.first_node || n >= last) {
            return Err(Error::Cuda(format!(
                "GPU sampling: node {n} is outside the CSR's nodes [{}, {last})",
                csr.first_node
            )));
        }
        if nodes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let n = nodes.len() as u64;
        let d_nodes = self.to_device(nodes)?;
        let mut counts = self.alloc::<u64>(nodes.len())?;
        let f = self.func("sample_counts")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&csr.indptr)
            .arg(&csr.first_node)
            .arg(&d_nodes)
            .arg(&n)
            .arg(&fanout)
            .arg(&mut counts);
        // SAFETY: every node is inside the CSR (checked above).
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("sample_counts", e))?;
        let (offsets, total) = self.exclusive_scan(&counts, "u64")?;
        let mut out = self.alloc::<u64>(total as usize)?;
        if total > 0 {
            let f = self.func("sample_neighbors")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&csr.indptr)
                .arg(&csr.indices)
                .arg(&csr.first_node)
                .arg(&d_nodes)
                .arg(&n)
                .arg(&fanout)
                .arg(&state)
                .arg(&offsets)
                .arg(&mut out);
            // SAFETY: `out` holds the sum of the counts; `offsets` is their exclusive scan.
            unsafe { b.launch(self.warps(n)) }.map_err(|e| cuda_err("sample_neighbors", e))?;
        }
        let counts: Vec<u32> = self.to_host(&counts)?.iter().map(|&c| c as u32).collect();
        Ok((counts, self.to_host(&out)?))
    }

    /// First-seen deduplication on the device: the distinct values of `keys` in order of first
    /// occurrence, and for every position the index of its key among them. No key may be
    /// `u64::MAX` (the table's empty marker).
    pub fn dedup_relabel(&self, keys: &[u64]) -> Result<(Vec<u64>, Vec<u32>)> {
        if keys.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        if keys.len() >= u32::MAX as usize / 2 {
            return Err(Error::Cuda(format!(
                "dedup: {} keys exceed u32 positions",
                keys.len()
            )));
        }
        if keys.contains(&u64::MAX) {
            return Err(Error::Cuda("dedup: key u64::MAX is reserved".into()));
        }
        let n = keys.len() as u64;
        let capacity = (2 * n).next_power_of_two();
        let d_keys = self.to_device(keys)?;
        let mut table_keys = self.alloc::<u64>(capacity as usize)?;
        let mut table_pos = self.alloc::<u32>(capacity as usize)?;
        let mut slot_of = self.alloc::<u32>(keys.len())?;
        let mut first = self.alloc::<u32>(keys.len())?;
        let f = self.func("dedup_clear")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&mut table_keys).arg(&mut table_pos).arg(&capacity);
        // SAFETY: table buffers have `capacity` slots; capacity is a power of two >= 2n.
        unsafe { b.launch(self.threads(capacity)) }.map_err(|e| cuda_err("dedup_clear", e))?;
        let f = self.func("dedup_insert")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&d_keys)
            .arg(&n)
            .arg(&mut table_keys)
            .arg(&mut table_pos)
            .arg(&capacity)
            .arg(&mut slot_of);
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("dedup_insert", e))?;
        let f = self.func("dedup_flags")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&slot_of).arg(&table_pos).arg(&n).arg(&mut first);
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("dedup_flags", e))?;
        let (new_pos, unique) = self.exclusive_scan(&first, "u32")?;
        let mut unique_keys = self.alloc::<u64>(unique as usize)?;
        let mut labels = self.alloc::<u32>(keys.len())?;
        let f = self.func("dedup_emit")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&d_keys)
            .arg(&slot_of)
            .arg(&table_pos)
            .arg(&new_pos)
            .arg(&n)
            .arg(&mut unique_keys)
            .arg(&mut labels);
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("dedup_emit", e))?;
        Ok((self.to_host(&unique_keys)?, self.to_host(&labels)?))
    }
}

impl CudaBackend {
    /// The counter-based hash evaluated by the device's `common.cuh`, for checking it against
    /// `sample::rng`: per id, `hash(seed, epoch, step, purpose, id, k)`, `below(that, bound)` and
    /// `unit_f32(that)`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn hash_probe(
        &self,
        seed: u64,
        epoch: u64,
        step: u64,
        purpose: u64,
        ids: &[u64],
        k: u64,
        bound: u64,
    ) -> Result<(Vec<u64>, Vec<u64>, Vec<f32>)> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new(), Vec::new()));
        }
        let n = ids.len() as u64;
        let d_ids = self.to_device(ids)?;
        let mut hashes = self.alloc::<u64>(ids.len())?;
        let mut belows = self.alloc::<u64>(ids.len())?;
        let mut units = self.alloc::<f32>(ids.len())?;
        let f = self.func("hash_probe")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&seed)
            .arg(&epoch)
            .arg(&step)
            .arg(&purpose)
            .arg(&d_ids)
            .arg(&n)
            .arg(&k)
            .arg(&bound)
            .arg(&mut hashes)
            .arg(&mut belows)
            .arg(&mut units);
        // SAFETY: three outputs of `n` elements.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("hash_probe", e))?;
        Ok((
            self.to_host(&hashes)?,
            self.to_host(&belows)?,
            self.to_host(&units)?,
        ))
    }
}

/// A `NeighborSource` over a part's CSR on the GPU (the owned nodes of a rank).
pub struct GpuCsrSource<'a> {
    pub backend: &'a CudaBackend,
    pub csr: DeviceCsr,
}

impl NeighborSource for GpuCsrSource<'_> {
    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()> {
        let (counts, nbrs) =
            self.backend
                .sample_neighbors(&self.csr, nodes, fanout, state_of(stream))?;
        *out_counts = counts;
        *out_nbrs = nbrs;
        Ok(())
    }

    fn relabel(&self, frontier: &[u64], nbrs: &[u64]) -> Result<Option<(Vec<u64>, Vec<u32>)>> {
        let mut keys = Vec::with_capacity(frontier.len() + nbrs.len());
        keys.extend_from_slice(frontier);
        keys.extend_from_slice(nbrs);
        let (sources, mut labels) = self.backend.dedup_relabel(&keys)?;
        Ok(Some((sources, labels.split_off(frontier.len()))))
    }
}

impl Backend for CudaBackend {
    type F = CudaSlice<f32>;
    type U = CudaSlice<u32>;

    fn name(&self) -> String {
        self.description.clone()
    }
    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.alloc(len)
    }
    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        self.to_device(host)
    }
    fn upload_with(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<CudaSlice<f32>> {
        if len == 0 || len > STAGING_MAX_ELEMS {
            let mut host = vec![0f32; len];
            fill(&mut host)?;
            return self.to_device(&host);
        }
        self.with_staging(len, |pinned| {
            let host = pinned
                .as_mut_slice()
                .map_err(|e| cuda_err("pinned staging", e))?;
            let host = &mut host[..len];
            fill(host)?;
            let mut dst = self.alloc::<f32>(len)?;
            self.stream
                .memcpy_htod(&*host, &mut dst)
                .map_err(|e| cuda_err(&format!("uploading {len} staged elements"), e))?;
            // The staging area is refilled by the next call: wait until the copy has read it.
            self.synchronize()?;
            Ok(dst)
        })
    }
    fn host_round_trip(
        &self,
        buf: &mut CudaSlice<f32>,
        f: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let len = buf.len();
        if len == 0 {
            return f(&mut []);
        }
        if len > STAGING_MAX_ELEMS {
            let mut host = self.to_host(buf)?;
            f(&mut host)?;
            *buf = self.to_device(&host)?;
            return Ok(());
        }
        self.with_staging(len, |pinned| {
            self.stream
                .memcpy_dtoh(&*buf, pinned)
                .map_err(|e| cuda_err(&format!("downloading {len} elements to staging"), e))?;
            self.synchronize()?;
            let host = pinned
                .as_mut_slice()
                .map_err(|e| cuda_err("pinned staging", e))?;
            let host = &mut host[..len];
            f(host)?;
            self.stream
                .memcpy_htod(&*host, buf)
                .map_err(|e| cuda_err(&format!("uploading {len} staged elements"), e))?;
            self.synchronize()
        })
    }
    fn device_memory(&self) -> Result<Option<(usize, usize)>> {
        let (free, total) = self
            .ctx
            .mem_get_info()
            .map_err(|e| cuda_err("querying device memory", e))?;
        Ok(Some((free, total)))
    }
    fn part_sampler<'a>(
        &'a self,
        part: &'a GraphPart,
    ) -> Result<Option<Box<dyn NeighborSource + 'a>>> {
        let csr = self.upload_csr(part.first_node(), &part.indptr, &part.indices)?;
        Ok(Some(Box::new(GpuCsrSource { backend: self, csr })))
    }
    fn upload_u32(&self, host: &[u32]) -> Result<CudaSlice<u32>> {
        self.to_device(host)
    }
    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.to_host(buf)
    }
    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }
    fn len_u32(&self, buf: &CudaSlice<u32>) -> usize {
        buf.len()
    }
    fn copy(
        &self,
        src: (&CudaSlice<f32>, usize),
        dst: (&mut CudaSlice<f32>, usize),
        len: usize,
    ) -> Result<()> {
        check_view("copy", "src", src.0.len(), src.1, len)?;
        check_view("copy", "dst", dst.0.len(), dst.1, len)?;
        if len == 0 {
            return Ok(());
        }
        let from = src.0.slice(src.1..src.1 + len);
        let mut to = dst.0.slice_mut(dst.1..dst.1 + len);
        self.stream
            .memcpy_dtod(&from, &mut to)
            .map_err(|e| cuda_err("copy", e))
    }
    fn fill(&self, buf: &mut CudaSlice<f32>, value: f32) -> Result<()> {
        let n = buf.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("fill_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(buf).arg(&n).arg(&value);
        // SAFETY: the kernel writes `n` elements of `buf`.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("fill", e))?;
        Ok(())
    }

    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: (&CudaSlice<f32>, usize),
        b: (&CudaSlice<f32>, usize),
        beta: f32,
        c: (&mut CudaSlice<f32>, usize),
    ) -> Result<()> {
        check_view("gemm", "A", a.0.len(), a.1, m * k)?;
        check_view("gemm", "B", b.0.len(), b.1, k * n)?;
        check_view("gemm", "C", c.0.len(), c.1, m * n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // C = beta * C, and C is not read when beta == 0 (as on the CPU).
            let mut c_view = c.0.slice_mut(c.1..c.1 + m * n);
            let len = (m * n) as u64;
            let f = self.func(if beta == 0.0 { "fill_f32" } else { "scale_f32" })?;
            let mut l = self.stream.launch_builder(f);
            let value = if beta == 0.0 { 0.0f32 } else { beta };
            l.arg(&mut c_view).arg(&len).arg(&value);
            // SAFETY: the view holds `len` elements.
            unsafe { l.launch(self.threads(len)) }.map_err(|e| cuda_err("gemm k=0", e))?;
            return Ok(());
        }
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: a row-major buffer
        // read column-major is its transpose, so B goes first and the transposes carry over.
        let cfg = GemmConfig {
            transb: if trans_a {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            },
            transa: if trans_b {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            },
            m: to_i32("gemm", "n", n)?,
            n: to_i32("gemm", "m", m)?,
            k: to_i32("gemm", "k", k)?,
            alpha,
            lda: to_i32("gemm", "ldb", if trans_b { k } else { n })?,
            ldb: to_i32("gemm", "lda", if trans_a { m } else { k })?,
            beta,
            ldc: to_i32("gemm", "ldc", n)?,
        };
        let a_view = a.0.slice(a.1..a.1 + m * k);
        let b_view = b.0.slice(b.1..b.1 + k * n);
        let mut c_view = c.0.slice_mut(c.1..c.1 + m * n);
        // SAFETY: the views were bounds-checked for these shapes and leading dimensions.
        unsafe { self.blas.gemm(cfg, &b_view, &a_view, &mut c_view) }
            .map_err(|e| cuda_err(&format!("cuBLAS sgemm {m}x{n}x{k}"), e))
    }

    fn add_row_bias(
        &self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
        bias: (&CudaSlice<f32>, usize),
    ) -> Result<()> {
        check_len("add_row_bias", "x", x.len(), rows * cols)?;
        check_view("add_row_bias", "bias", bias.0.len(), bias.1, cols)?;
        if rows * cols == 0 {
            return Ok(());
        }
        let bias_view = bias.0.slice(bias.1..bias.1 + cols);
        let (r, c) = (rows as u64, dim_u32("add_row_bias", cols)?);
        let f = self.func("add_row_bias")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&bias_view).arg(&r).arg(&c);
        // SAFETY: shapes checked above.
        unsafe { b.launch(self.threads((rows * cols) as u64)) }
            .map_err(|e| cuda_err("add_row_bias", e))?;
        Ok(())
    }

    fn col_sums(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        out: (&mut CudaSlice<f32>, usize),
    ) -> Result<()> {
        check_len("col_sums", "x", x.len(), rows * cols)?;
        check_view("col_sums", "out", out.0.len(), out.1, cols)?;
        if cols == 0 {
            return Ok(());
        }
        let chunks = rows.div_ceil(COL_SUM_CHUNK);
        let mut partials = self.alloc::<f32>((chunks * cols).max(1))?;
        let (r, c, chunk_rows) = (
            rows as u64,
            dim_u32("col_sums", cols)?,
            COL_SUM_CHUNK as u32,
        );
        if chunks > 0 {
            let f = self.func("column_sums_partial")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(x).arg(&r).arg(&c).arg(&chunk_rows).arg(&mut partials);
            // SAFETY: `partials` holds chunks x cols values.
            unsafe { b.launch(self.threads((chunks * cols) as u64)) }
                .map_err(|e| cuda_err("column_sums_partial", e))?;
        }
        let mut out_view = out.0.slice_mut(out.1..out.1 + cols);
        let n_chunks = chunks as u64;
        let f = self.func("column_sums_finish")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&partials).arg(&n_chunks).arg(&c).arg(&mut out_view);
        unsafe { b.launch(self.threads(cols as u64)) }
            .map_err(|e| cuda_err("column_sums_finish", e))?;
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        check_len("axpy", "y", y.len(), x.len())?;
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("axpy_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(y).arg(&n).arg(&alpha);
        // SAFETY: equal lengths checked.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("axpy", e))?;
        Ok(())
    }

    fn scale(&self, alpha: f32, x: &mut CudaSlice<f32>) -> Result<()> {
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("scale_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n).arg(&alpha);
        // SAFETY: the kernel touches `n` elements of `x`.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("scale", e))?;
        Ok(())
    }

    fn mul(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, out: &mut CudaSlice<f32>) -> Result<()> {
        check_len("mul", "b", b.len(), a.len())?;
        check_len("mul", "out", out.len(), a.len())?;
        let n = a.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("mul_forward")?;
        let mut l = self.stream.launch_builder(f);
        l.arg(a).arg(b).arg(out).arg(&n);
        // SAFETY: equal lengths checked.
        unsafe { l.launch(self.threads(n)) }.map_err(|e| cuda_err("mul", e))?;
        Ok(())
    }

    fn mul_bwd(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        grad_out: &CudaSlice<f32>,
        grad_a: &mut CudaSlice<f32>,
        grad_b: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let n = a.len();
        check_len("mul_bwd", "b", b.len(), n)?;
        check_len("mul_bwd", "grad_out", grad_out.len(), n)?;
        check_len("mul_bwd", "grad_a", grad_a.len(), n)?;
        check_len("mul_bwd", "grad_b", grad_b.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let n = n as u64;
        let f = self.func("mul_backward")?;
        let mut l = self.stream.launch_builder(f);
        l.arg(a)
            .arg(b)
            .arg(grad_out)
            .arg(grad_a)
            .arg(grad_b)
            .arg(&n);
        // SAFETY: equal lengths checked.
        unsafe { l.launch(self.threads(n)) }.map_err(|e| cuda_err("mul_bwd", e))?;
        Ok(())
    }

    fn relu_fwd(&self, x: &mut CudaSlice<f32>) -> Result<()> {
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("relu_forward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n);
        // SAFETY: in place over `n` elements.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("relu_fwd", e))?;
        Ok(())
    }

    fn relu_bwd(&self, y: &CudaSlice<f32>, grad: &mut CudaSlice<f32>) -> Result<()> {
        check_len("relu_bwd", "grad", grad.len(), y.len())?;
        let n = y.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("relu_backward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(y).arg(grad).arg(&n);
        // SAFETY: equal lengths checked.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("relu_bwd", e))?;
        Ok(())
    }

    fn dropout_fwd(
        &self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
        row_ids: &CudaSlice<u32>,
        key: DropoutKey,
    ) -> Result<()> {
        check_len("dropout", "x", x.len(), rows * cols)?;
        if row_ids.len() < rows {
            return Err(shape_error(
                "dropout",
                format!("{} row ids for {rows} rows", row_ids.len()),
            ));
        }
        if !(0.0..1.0).contains(&key.p) {
            return Err(Error::config(
                "dropout",
                format!("{} is not in [0, 1)", key.p),
            ));
        }
        if key.p == 0.0 || rows * cols == 0 {
            return Ok(());
        }
        let state = stream_state(key.seed, key.epoch, key.step, key.purpose);
        let scale = 1.0f32 / (1.0f32 - key.p);
        let (r, c) = (rows as u64, dim_u32("dropout", cols)?);
        let f = self.func("dropout_apply")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x)
            .arg(row_ids)
            .arg(&r)
            .arg(&c)
            .arg(&state)
            .arg(&key.p)
            .arg(&scale);
        // SAFETY: x is rows x cols and row_ids has at least `rows` entries.
        unsafe { b.launch(self.threads((rows * cols) as u64)) }
            .map_err(|e| cuda_err("dropout", e))?;
        Ok(())
    }

    fn dropout_bwd(
        &self,
        grad: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
        row_ids: &CudaSlice<u32>,
        key: DropoutKey,
    ) -> Result<()> {
        // The mask and scale are a pure function of the key: the backward is the forward.
        self.dropout_fwd(grad, rows, cols, row_ids, key)
    }

    fn gather_rows(
        &self,
        table: &CudaSlice<f32>,
        dim: usize,
        rows: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("gather_rows", "out", out.len(), rows.len() * dim)?;
        let table_rows = table.len().checked_div(dim).unwrap_or(0) as u64;
        if rows.is_empty() || dim == 0 {
            return Ok(());
        }
        let mut bad = self.alloc::<u32>(1)?;
        let (n, d) = (rows.len() as u64, dim_u32("gather_rows", dim)?);
        let f = self.func("gather_rows")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(table)
            .arg(&table_rows)
            .arg(rows)
            .arg(&n)
            .arg(&d)
            .arg(out)
            .arg(&mut bad);
        // SAFETY: out is rows x dim; the kernel skips (and flags) rows outside the table.
        unsafe { b.launch(self.warps(n)) }.map_err(|e| cuda_err("gather_rows", e))?;
        if self.flag_set(&bad)? {
            let host_rows = self.to_host(rows)?;
            let r = host_rows
                .iter()
                .find(|&&r| r as u64 >= table_rows)
                .copied()
                .unwrap_or(0);
            return Err(shape_error(
                "gather_rows",
                format!("row {r} >= table rows {table_rows}"),
            ));
        }
        Ok(())
    }

    fn scatter_rows(
        &self,
        src: &CudaSlice<f32>,
        dim: usize,
        positions: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("scatter_rows", "src", src.len(), positions.len() * dim)?;
        let out_rows = out.len().checked_div(dim).unwrap_or(0) as u64;
        if positions.is_empty() || dim == 0 {
            return Ok(());
        }
        let mut bad = self.alloc::<u32>(1)?;
        let (n, d) = (positions.len() as u64, dim_u32("scatter_rows", dim)?);
        let f = self.func("scatter_rows")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(src)
            .arg(&n)
            .arg(positions)
            .arg(&out_rows)
            .arg(&d)
            .arg(out)
            .arg(&mut bad);
        // SAFETY: src is n x dim; the kernel skips (and flags) positions outside `out`.
        unsafe { b.launch(self.warps(n)) }.map_err(|e| cuda_err("scatter_rows", e))?;
        if self.flag_set(&bad)? {
            let host = self.to_host(positions)?;
            let p = host
                .iter()
                .find(|&&p| p as u64 >= out_rows)
                .copied()
                .unwrap_or(u32::MAX);
            return Err(shape_error(
                "scatter_rows",
                format!("position {p} >= output rows {out_rows}"),
            ));
        }
        Ok(())
    }

    fn mean_agg_fwd(
        &self,
        block: &DeviceBlock<Self>,
        h_src: &CudaSlice<f32>,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("mean_agg_fwd", "h_src", h_src.len(), block.num_src * dim)?;
        check_len("mean_agg_fwd", "out", out.len(), block.num_dst * dim)?;
        if dim == 0 || block.num_dst == 0 {
            return Ok(());
        }
        let (n_dst, d) = (block.num_dst as u64, dim_u32("mean_agg_fwd", dim)?);
        let f = self.func("sage_mean_forward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&block.indptr)
            .arg(&block.indices)
            .arg(&n_dst)
            .arg(h_src)
            .arg(&d)
            .arg(out);
        // SAFETY: the block's arrays come from a validated `Block` (indices < num_src).
        unsafe { b.launch(self.warps(n_dst)) }.map_err(|e| cuda_err("mean_agg_fwd", e))?;
        Ok(())
    }

    fn mean_agg_bwd(
        &self,
        block: &DeviceBlock<Self>,
        grad_out: &CudaSlice<f32>,
        dim: usize,
        grad_src: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len(
            "mean_agg_bwd",
            "grad_out",
            grad_out.len(),
            block.num_dst * dim,
        )?;
        check_len(
            "mean_agg_bwd",
            "grad_src",
            grad_src.len(),
            block.num_src * dim,
        )?;
        if dim == 0 || block.num_src == 0 {
            return Ok(());
        }
        let (n_src, d) = (block.num_src as u64, dim_u32("mean_agg_bwd", dim)?);
        let f = self.func("sage_mean_backward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&block.indptr)
            .arg(&block.rev_indptr)
            .arg(&block.rev_edges)
            .arg(&block.edge_dst)
            .arg(&n_src)
            .arg(grad_out)
            .arg(&d)
            .arg(grad_src);
        // SAFETY: the reverse index comes from a validated `Block`.
        unsafe { b.launch(self.warps(n_src)) }.map_err(|e| cuda_err("mean_agg_bwd", e))?;
        Ok(())
    }

    fn bce_with_logits(
        &self,
        logits: &CudaSlice<f32>,
        labels: &CudaSlice<f32>,
        grad_scale: f32,
        grad: &mut CudaSlice<f32>,
    ) -> Result<f64> {
        let n = logits.len();
        check_len("bce_with_logits", "labels", labels.len(), n)?;
        check_len("bce_with_logits", "grad", grad.len(), n)?;
        if n == 0 {
            return Ok(Vec::<f64>::new().iter().sum());
        }
        let mut loss = self.alloc::<f64>(n)?;
        let n64 = n as u64;
        let f = self.func("bce_with_logits")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(logits)
            .arg(labels)
            .arg(&n64)
            .arg(&grad_scale)
            .arg(&mut loss)
            .arg(grad);
        // SAFETY: equal lengths checked.
        unsafe { b.launch(self.threads(n64)) }.map_err(|e| cuda_err("bce_with_logits", e))?;
        let chunks = n.div_ceil(REDUCE_CHUNK);
        let mut partials = self.alloc::<f64>(chunks)?;
        let chunk = REDUCE_CHUNK as u32;
        let f = self.func("chunk_sums_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&loss).arg(&n64).arg(&chunk).arg(&mut partials);
        unsafe { b.launch(self.threads(chunks as u64)) }
            .map_err(|e| cuda_err("chunk_sums_f64", e))?;
        self.host_sum(&partials)
    }

    fn softmax_xent(
        &self,
        logits: &CudaSlice<f32>,
        classes: usize,
        labels: &CudaSlice<u32>,
        grad_scale: f32,
        grad: &mut CudaSlice<f32>,
    ) -> Result<f64> {
        let rows = labels.len();
        check_len("softmax_xent", "logits", logits.len(), rows * classes)?;
        check_len("softmax_xent", "grad", grad.len(), rows * classes)?;
        if rows == 0 {
            return Ok(0.0);
        }
        let mut loss = self.alloc::<f64>(rows)?;
        let mut bad = self.alloc::<u32>(1)?;
        let (r, c) = (rows as u64, dim_u32("softmax_xent", classes)?);
        let f = self.func("softmax_cross_entropy")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(logits)
            .arg(labels)
            .arg(&r)
            .arg(&c)
            .arg(&grad_scale)
            .arg(&mut loss)
            .arg(grad)
            .arg(&mut bad);
        // SAFETY: logits and grad are rows x classes; bad labels are skipped and flagged.
        unsafe { b.launch(self.threads(r)) }.map_err(|e| cuda_err("softmax_xent", e))?;
        if self.flag_set(&bad)? {
            let l = self
                .to_host(labels)?
                .into_iter()
                .find(|&l| l as usize >= classes)
                .unwrap_or(0);
            return Err(shape_error(
                "softmax_xent",
                format!("label {l} >= classes {classes}"),
            ));
        }
        Ok(self.to_host(&loss)?.iter().sum())
    }

    fn adam_update(
        &self,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        c: &AdamCoeffs,
    ) -> Result<()> {
        let n = params.len();
        check_len("adam_update", "grads", grads.len(), n)?;
        check_len("adam_update", "m", m.len(), n)?;
        check_len("adam_update", "v", v.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let step_size = c.lr / c.bias1;
        let sqrt_bias2 = c.bias2.sqrt();
        let n = n as u64;
        let f = self.func("adam_update")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(params)
            .arg(grads)
            .arg(m)
            .arg(v)
            .arg(&n)
            .arg(&c.beta1)
            .arg(&c.beta2)
            .arg(&c.eps)
            .arg(&c.weight_decay)
            .arg(&step_size)
            .arg(&sqrt_bias2);
        // SAFETY: four buffers of equal length checked.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("adam_update", e))?;
        Ok(())
    }

    fn sq_norm(&self, x: &CudaSlice<f32>) -> Result<f64> {
        self.reduce_f32(x, true)
    }

    fn sum(&self, x: &CudaSlice<f32>) -> Result<f64> {
        self.reduce_f32(x, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::rng::{hash, mix64, Purpose};

    #[test]
    fn unmix_inverts_mix() {
        for i in 0..1000u64 {
            let z = mix64(i.wrapping_mul(0x1234_5678_9ABC_DEF1));
            assert_eq!(unmix64(mix64(z)), z);
        }
    }

    #[test]
    fn stream_state_is_recovered_from_a_stream() {
        for (seed, epoch, step) in [(0, 0, 0), (42, 3, 17), (u64::MAX, 9, 1 << 40)] {
            let purpose = Purpose::NeighborSample as u64 + 2;
            let state = stream_state(seed, epoch, step, purpose);
            assert_eq!(state_of(Stream::new(seed, epoch, step, purpose)), state);
            // And the state reproduces hash(): fold(fold(state, id), k).
            assert_eq!(
                fold(fold(state, 77), 5),
                hash(seed, epoch, step, purpose, 77, 5)
            );
        }
    }

    #[test]
    fn devices_are_assigned_round_robin_by_local_rank() {
        assert_eq!(device_for_rank(0, 4), 0);
        assert_eq!(device_for_rank(5, 4), 1);
        assert_eq!(device_for_rank(3, 1), 0);
        assert_eq!(device_for_rank(2, 0), 0);
    }
}
