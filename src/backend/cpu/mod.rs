//! The CPU backend: the backend traits on the host, with rayon for row-parallel operations and
//! the `gemm` crate for matrix products.
//!
//! Every output element is computed by exactly one task in a fixed order, and reductions combine
//! fixed-size chunk partials in chunk order, so results are bit-identical for any thread count.
//! All work runs inside the backend's own rayon pool (`threads` workers).
//!
//! This file owns the backend itself (its thread pool and its pool of spare buffers) and
//! `Memory`; the arithmetic is in `dense`, the graph operations in `graph`, and the row kernels
//! of the aggregation in `rows`. Argument checks are `backend::checks`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::backend::{checks, Memory};
use crate::error::{Error, Result};

mod blas;
mod dense;
mod graph;
mod rows;

use blas::Cblas;
pub use blas::CpuGemm;

/// Elements per parallel task of the element-wise operations.
const ELEM_CHUNK: usize = 16 * 1024;

/// The rayon + `gemm` backend; buffers are plain vectors.
#[derive(Clone)]
pub struct CpuBackend {
    threads: usize,
    /// The widest instruction set the aggregation kernels use (same results: the per-element
    /// order of additions is unchanged, only more columns are processed at once).
    row_isa: rows::RowIsa,
    pool: Workers,
    /// Large buffers handed back by `recycle`, reused by `zeros`.
    spare: Arc<Mutex<Vec<Vec<f32>>>>,
    /// A system CBLAS for the matrix products, when one was chosen (`blas`).
    cblas: Option<Arc<Cblas>>,
    /// FLOPs and nanoseconds of the products since `take_gemm_work`.
    gemm_work: Arc<[AtomicU64; 2]>,
    /// Aggregation outputs of at least this many bytes are written with streaming stores.
    stream_min_bytes: usize,
}

/// Where the backend's parallel work runs: a pool of its own, or rayon's global pool (the
/// program's one pool, shared with sampling and feature gathering, so that a step computing
/// while the next batch is prepared does not put twice as many threads on the cores).
#[derive(Clone)]
enum Workers {
    Own(Arc<rayon::ThreadPool>),
    Global,
}

impl Workers {
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self {
            Workers::Own(pool) => pool.install(f),
            // From outside any pool, rayon's parallel iterators run on the global one.
            Workers::Global => f(),
        }
    }
}

/// Outputs past half the last-level cache are streamed: the other half holds the rows being
/// read, so such an output leaves the cache before its reader comes. Never when the cache size
/// is unknown.
fn default_stream_min_bytes() -> usize {
    match crate::util::last_level_cache_bytes() {
        0 => usize::MAX,
        llc => llc / 2,
    }
}

/// The narrowest rows an aggregation backward streams. Measured (bench-agg, a 1920 MiB table on
/// a 480 MiB L3, degrees 5 and 10, where one source row is written per edge read): streaming
/// took widths 256 and 512 from 43-51% / 66-68% of copy bandwidth to 67-81% / 74-81%, and left
/// widths 128 and 64 where they were: rows that narrow are bound by their chain of index reads,
/// not by the writes.
const STREAM_MIN_DIM: usize = 256;

/// Buffers smaller than this many elements are not pooled (the allocator serves them well).
const POOL_MIN_ELEMS: usize = 64 * 1024;
/// At most this many spare buffers are kept.
const POOL_MAX_BUFFERS: usize = 64;

impl CpuBackend {
    /// A backend with its own pool of `threads` workers (0: one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cpu-backend-{i}"))
            .build()
            .map_err(|e| Error::Other(format!("cannot start {threads} CPU threads: {e}")))?;
        Ok(CpuBackend {
            threads: pool.current_num_threads(),
            row_isa: rows::RowIsa::detect(),
            pool: Workers::Own(Arc::new(pool)),
            spare: Arc::new(Mutex::new(Vec::new())),
            cblas: None,
            gemm_work: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            stream_min_bytes: default_stream_min_bytes(),
        })
    }

    /// A backend on rayon's global pool (its size set by `runtime::init_threads`): the
    /// commands' backend, so that the step, the sampler and the feature gathering share one set
    /// of workers.
    pub fn on_global_pool() -> Self {
        CpuBackend {
            threads: rayon::current_num_threads(),
            row_isa: rows::RowIsa::detect(),
            pool: Workers::Global,
            spare: Arc::new(Mutex::new(Vec::new())),
            cblas: None,
            gemm_work: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            stream_min_bytes: default_stream_min_bytes(),
        }
    }

    /// The same backend with its matrix products computed by `which`.
    pub fn with_gemm(mut self, which: CpuGemm) -> Result<Self> {
        self.cblas = match which.resolve() {
            CpuGemm::Builtin | CpuGemm::Auto => None,
            lib => Some(Cblas::load(lib, self.threads)?),
        };
        Ok(self)
    }

    /// The same backend writing aggregation backward outputs of at least `bytes` bytes, in rows
    /// of at least `STREAM_MIN_DIM`, with streaming stores (0: every such output; `usize::MAX`:
    /// none). Results are the same either way.
    pub fn with_streaming_stores_from(mut self, bytes: usize) -> Self {
        self.stream_min_bytes = bytes;
        self
    }

    /// Whether an aggregation backward writes its output (`len` floats in rows of `dim`) with
    /// streaming stores.
    fn streams_output(&self, len: usize, dim: usize) -> bool {
        dim >= STREAM_MIN_DIM && len.saturating_mul(4) >= self.stream_min_bytes
    }

    /// Which library computes the matrix products.
    pub fn gemm_name(&self) -> &'static str {
        self.cblas.as_ref().map_or("gemm crate", |l| l.name)
    }
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A vector with room for `len` elements: a spare buffer (with its old contents) when one fits
    /// (best fit),
    /// else a fresh one whose capacity is rounded up to a size class (at most 1/8 more), so the
    /// slightly different sizes of the next step's buffers fit it.
    fn take_buffer(&self, len: usize) -> Vec<f32> {
        if len < POOL_MIN_ELEMS {
            return Vec::with_capacity(len);
        }
        let reused = self.spare.lock().ok().and_then(|mut spare| {
            let best = (0..spare.len())
                .filter(|&i| spare[i].capacity() >= len)
                .min_by_key(|&i| spare[i].capacity())?;
            Some(spare.swap_remove(best))
        });
        match reused {
            Some(buf) => buf,
            None => {
                let step = (len.next_power_of_two() / 16).max(1);
                let buf = Vec::with_capacity(len.div_ceil(step) * step);
                // Aggregations read the rows of these buffers at random.
                crate::util::advise_huge_pages(&buf);
                buf
            }
        }
    }
    /// Runs `f` inside this backend's thread pool (for callers that want rayon work of their own,
    /// e.g. sampling, on the same workers).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

impl Memory for CpuBackend {
    type F = Vec<f32>;
    type U = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        let mut buf = self.take_buffer(len);
        buf.clear();
        buf.resize(len, 0.0);
        Ok(buf)
    }
    fn scratch(&self, len: usize) -> Result<Vec<f32>> {
        // A spare buffer keeps the elements it had: only a tail beyond them is filled.
        let mut buf = self.take_buffer(len);
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0.0);
        }
        Ok(buf)
    }
    /// With a CBLAS library the products, most of the step, run on that library's own threads,
    /// so batch preparation on the rayon workers overlaps them (measured faster at 2 threads,
    /// the same at 1; bench/RESULTS.md); the `gemm` crate shares the workers with preparation,
    /// which then only slows the step. Not with one thread per rank: the step keeps that
    /// thread's core busy from start to end, so preparing beside it only time-slices the core
    /// (2 ranks x 1 thread on 2 cores: 0.250-0.280 s per step with it, 0.215-0.225 s without),
    /// nor when the node's ranks already have more threads than cores: there an extra thread
    /// only takes time from another rank (4 ranks on 2 cores: 0.84 s per step with it, 0.51 s
    /// without).
    fn computes_beside_host_threads(&self) -> bool {
        self.cblas.is_some()
            && self.threads >= 2
            && !crate::runtime::cores_oversubscribed(self.threads)
    }
    fn recycle(&self, buf: Vec<f32>) {
        if buf.capacity() < POOL_MIN_ELEMS {
            return;
        }
        if let Ok(mut spare) = self.spare.lock() {
            spare.push(buf);
            if spare.len() > POOL_MAX_BUFFERS {
                // Keep the largest: they serve every request.
                if let Some(smallest) = (0..spare.len()).min_by_key(|&i| spare[i].capacity()) {
                    spare.swap_remove(smallest);
                }
            }
        }
    }
    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        let mut buf = self.take_buffer(host.len());
        buf.clear();
        buf.extend_from_slice(host);
        Ok(buf)
    }
    fn upload_with(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let mut buf = self.scratch(len)?;
        fill(&mut buf)?;
        Ok(buf)
    }
    fn host_round_trip(
        &self,
        buf: &mut Vec<f32>,
        f: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<()> {
        f(buf)
    }
    fn upload_u32(&self, host: &[u32]) -> Result<Vec<u32>> {
        Ok(host.to_vec())
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn len_u32(&self, buf: &Vec<u32>) -> usize {
        buf.len()
    }
    fn copy(&self, src: (&Vec<f32>, usize), dst: (&mut Vec<f32>, usize), len: usize) -> Result<()> {
        checks::copy(src.0.len(), src.1, dst.0.len(), dst.1, len)?;
        dst.0[dst.1..dst.1 + len].copy_from_slice(&src.0[src.1..src.1 + len]);
        Ok(())
    }
    fn fill(&self, buf: &mut Vec<f32>, value: f32) -> Result<()> {
        self.pool.install(|| {
            buf.par_chunks_mut(ELEM_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|x| *x = value))
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_buffers_come_back_as_zeros_of_the_asked_length() {
        let be = CpuBackend::new(1).unwrap();
        let big = vec![7.0f32; POOL_MIN_ELEMS * 2];
        let ptr = big.as_ptr();
        be.recycle(big);
        let z = be.zeros(POOL_MIN_ELEMS + 3).unwrap();
        assert_eq!(z.as_ptr(), ptr, "the spare buffer was not reused");
        assert_eq!(z.len(), POOL_MIN_ELEMS + 3);
        assert!(z.iter().all(|&v| v == 0.0));
        // Too large for any spare buffer: a fresh one.
        let z2 = be.zeros(POOL_MIN_ELEMS * 3).unwrap();
        assert!(z2.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn scratch_reuses_a_spare_buffer_without_a_zero_fill() {
        let be = CpuBackend::new(1).unwrap();
        let big = vec![7.0f32; POOL_MIN_ELEMS * 2];
        let ptr = big.as_ptr();
        be.recycle(big);
        let s = be.scratch(POOL_MIN_ELEMS + 3).unwrap();
        assert_eq!((s.as_ptr(), s.len()), (ptr, POOL_MIN_ELEMS + 3));
        assert!(s.iter().all(|&v| v == 7.0), "the old contents stay");
        // Handed back with 10 elements, then asked for more: the tail beyond them is zeros.
        let mut s = s;
        s.truncate(10);
        be.recycle(s);
        let t = be.scratch(POOL_MIN_ELEMS + 3).unwrap();
        assert_eq!((t.as_ptr(), t.len()), (ptr, POOL_MIN_ELEMS + 3));
        assert!(t[..10].iter().all(|&v| v == 7.0) && t[10..].iter().all(|&v| v == 0.0));
    }
}
