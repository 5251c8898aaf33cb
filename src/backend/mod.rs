//! The backend seam: the hot operations of a training step, over buffers the backend owns.
//!
//! `Backend` is the one bound the model is written against; it is the sum of three traits, one
//! per concern: `Memory` (buffers, transfers, synchronisation), `DenseOps` (matrix products,
//! element-wise operations, losses, the optimiser and reductions) and `GraphOps` (row gathers and
//! scatters, neighbour aggregation, the backend's own neighbour sampler). Buffer types are
//! associated with `Memory` (`F` for `f32`, `U` for `u32`), so a GPU backend keeps parameters,
//! activations and block indices on the device for a whole step; the host sees only uploads,
//! downloads and the scalar results of reductions. `cpu::CpuBackend` implements the traits with
//! rayon and the `gemm` crate; the CUDA backend implements the same semantics with its own
//! kernels. The shape contract of every operation is checked in one place, `checks`, by both.
//!
//! Code generic over `B: Backend` sees every method; code that calls a concrete backend brings
//! the traits into scope with `use crate::backend::prelude::*`.
//!
//! Conventions for every method:
//! - Matrices are row-major. A `(buffer, offset)` pair is a view starting at element `offset`,
//!   so parameters are views into one flat buffer.
//! - Unless a length is given, an operation covers whole buffers and their lengths must agree
//!   exactly; a mismatch is an `Err`, never a partial operation.
//! - Outputs are overwritten unless the method says it accumulates.
//! - Results are deterministic: every output element and every reduction is computed in a fixed
//!   order that does not depend on the number of threads (or, on the GPU, on scheduling). No float
//!   atomics: backward aggregation is a segmented sum over the block's reverse index.

pub(crate) mod checks;
pub mod cpu;
pub mod cuda;

/// The backend traits, for calling their methods on a concrete backend, and the aggregation's
/// row layout their graph operations take.
pub mod prelude {
    pub use super::{AggLayout, Backend, DenseOps, GraphOps, Memory};
}

use crate::error::{Error, Result};
use crate::graph::store::GraphPart;
use crate::sample::block::{reverse_index, Block, SampledBlocks};
use crate::sample::neighbor::{NeighborSampler, NeighborSource};
use crate::walk::sgns::SgnsDevice;
use crate::walk::TrialScanner;

pub use cpu::{CpuBackend, CpuGemm};

/// Key of a dropout mask: element `(row, col)` of a layer's output is kept iff
/// `unit_f32(hash(seed, epoch, step, purpose, row_id, col)) >= p`, where `row_id` is the row's
/// global node id and `purpose = Purpose::Dropout + layer`; kept elements are multiplied by
/// `1.0f32 / (1.0f32 - p)`, dropped ones set to zero. `p == 0` leaves the data unchanged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutKey {
    pub seed: u64,
    pub epoch: u64,
    pub step: u64,
    pub purpose: u64,
    pub p: f32,
}

/// Scalars of one Adam update (PyTorch's `Adam` with coupled L2 weight decay):
/// `g = grad + weight_decay * p; m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g;
/// p -= (lr / bias1) * m / (sqrt(v) / sqrt(bias2) + eps)` with `bias1 = 1 - beta1^t`,
/// `bias2 = 1 - beta2^t` computed in f64 by the caller and passed as f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamCoeffs {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias1: f32,
    pub bias2: f32,
}

/// A block's index arrays on the backend, uploaded once per step (see `sample::block::Block` for
/// the meaning of each array). `node_ids` holds the global ids of the source rows as u32 (the
/// message-passing CSR already limits ids to u32); it keys dropout masks and is empty for blocks
/// built from pair positions.
pub struct DeviceBlock<B: Memory> {
    pub num_src: usize,
    pub num_dst: usize,
    pub num_edges: usize,
    pub indptr: B::U,
    pub indices: B::U,
    pub rev_indptr: B::U,
    pub rev_edges: B::U,
    pub edge_dst: B::U,
    pub node_ids: B::U,
    /// False for a forward-only block (`Block::forward_only`): the reverse arrays are empty.
    pub has_reverse: bool,
}

impl<B: Memory> DeviceBlock<B> {
    /// Uploads a sampled block.
    pub fn upload(b: &B, block: &Block) -> Result<Self> {
        let mut ids = Vec::with_capacity(block.src_nodes.len());
        for &n in &block.src_nodes {
            if n > u32::MAX as u64 {
                return Err(Error::Other(format!(
                    "node id {n} does not fit the u32 ids of a device block"
                )));
            }
            ids.push(n as u32);
        }
        Ok(DeviceBlock {
            num_src: block.num_src(),
            num_dst: block.num_dst,
            num_edges: block.num_edges(),
            indptr: b.upload_u32(&block.indptr)?,
            indices: b.upload_u32(&block.indices)?,
            rev_indptr: b.upload_u32(&block.rev_indptr)?,
            rev_edges: b.upload_u32(&block.rev_edges)?,
            edge_dst: b.upload_u32(&block.edge_dst)?,
            node_ids: b.upload_u32(&ids)?,
            has_reverse: block.has_reverse_index(),
        })
    }

    /// A block whose destination `i` has exactly one edge, to source `positions[i]`: its mean
    /// aggregation is a row gather, and its backward a deterministic scatter-add (used to pick the
    /// two endpoints of scored pairs out of the seed embeddings).
    pub fn from_positions(b: &B, num_src: usize, positions: &[u32]) -> Result<Self> {
        let indptr: Vec<u32> = (0..=positions.len() as u32).collect();
        let (rev_indptr, rev_edges, edge_dst) = reverse_index(num_src, &indptr, positions)?;
        Ok(DeviceBlock {
            num_src,
            num_dst: positions.len(),
            num_edges: positions.len(),
            indptr: b.upload_u32(&indptr)?,
            indices: b.upload_u32(positions)?,
            rev_indptr: b.upload_u32(&rev_indptr)?,
            rev_edges: b.upload_u32(&rev_edges)?,
            edge_dst: b.upload_u32(&edge_dst)?,
            node_ids: b.upload_u32(&[])?,
            has_reverse: true,
        })
    }
}

/// Buffers on the backend: allocation, transfers to and from the host, copies within it, and
/// waiting for queued work. See the module doc for the conventions.
pub trait Memory: Send + Sync + Sized {
    /// An f32 buffer.
    type F: Send + Sync;
    /// A u32 buffer.
    type U: Send + Sync;

    /// A short description for logs ("cpu (2 threads)", "cuda:0 NVIDIA H100").
    fn name(&self) -> String;
    /// Waits until all queued work is done (for timings); a no-op on the CPU.
    fn synchronize(&self) -> Result<()>;

    /// A buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::F>;
    /// A buffer of `len` elements with unspecified (but initialised) contents, for an output the
    /// caller overwrites whole (a product with `beta == 0`, an aggregation): the CPU backend then
    /// skips the zero fill of a reused buffer.
    fn scratch(&self, len: usize) -> Result<Self::F> {
        self.zeros(len)
    }
    fn upload(&self, host: &[f32]) -> Result<Self::F>;
    fn upload_u32(&self, host: &[u32]) -> Result<Self::U>;
    fn download(&self, buf: &Self::F) -> Result<Vec<f32>>;
    fn len(&self, buf: &Self::F) -> usize;
    fn len_u32(&self, buf: &Self::U) -> usize;
    /// `dst[dst_off..dst_off+len] = src[src_off..src_off+len]`.
    fn copy(&self, src: (&Self::F, usize), dst: (&mut Self::F, usize), len: usize) -> Result<()>;
    /// Sets every element to `value`.
    fn fill(&self, buf: &mut Self::F, value: f32) -> Result<()>;
    /// A buffer of `len` elements written on the host by `fill` (which gets all `len` elements,
    /// zeroed or holding earlier contents, and must overwrite them). The CPU backend hands `fill`
    /// the buffer itself; a GPU backend a page-locked staging area it then copies to the device,
    /// which saves the driver's extra copy out of pageable memory.
    fn upload_with(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<Self::F> {
        let mut host = vec![0f32; len];
        fill(&mut host)?;
        self.upload(&host)
    }
    /// Runs `f` on the contents of `buf` on the host and stores what `f` leaves there back in
    /// `buf` (the gradient allreduce: MPI works on host memory). The CPU backend passes the buffer
    /// itself; a GPU backend copies through a page-locked staging area, both ways.
    fn host_round_trip(
        &self,
        buf: &mut Self::F,
        f: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let mut host = self.download(buf)?;
        f(&mut host)?;
        *buf = self.upload(&host)?;
        Ok(())
    }
    /// Free and total bytes of the memory this backend's buffers live in, when that is a device
    /// of its own; `None` for host memory (so a copy of host data "on the device" would only
    /// duplicate it).
    fn device_memory(&self) -> Result<Option<(usize, usize)>> {
        Ok(None)
    }
    /// Whether host work beside the step (preparing the next batch) leaves this backend's hot
    /// operations their compute: true on a device of its own (the host threads only queue its
    /// work), false on host memory unless the backend says otherwise.
    fn computes_beside_host_threads(&self) -> bool {
        matches!(self.device_memory(), Ok(Some(_)))
    }
    /// Hands back a buffer that is no longer needed; the backend may reuse its memory for a later
    /// `zeros` (fresh large allocations cost page faults on the CPU and driver calls on a GPU).
    /// Dropping a buffer instead is always correct.
    fn recycle(&self, buf: Self::F) {
        drop(buf);
    }
}

/// Matrix-product work: `2·m·n·k` per product, and the seconds spent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GemmWork {
    pub flops: f64,
    pub seconds: f64,
}

/// Dense arithmetic on whole buffers and row-major views: products, element-wise operations,
/// dropout, losses, the optimiser step and reductions. See the module doc for the conventions.
pub trait DenseOps: Memory {
    /// The matrix products since the last call: their floating-point operations and the wall
    /// seconds spent in them (a step's time against its GEMMs'). A backend that does not time
    /// its products reports zeros.
    fn take_gemm_work(&self) -> GemmWork {
        GemmWork::default()
    }
    /// `C = alpha * op(A) * op(B) + beta * C` with `op(A)` `m x k`, `op(B)` `k x n`, `C` `m x n`,
    /// all row-major and contiguous at their offsets. `op(A) = A` stored `m x k` (`trans_a =
    /// false`) or `A^T` with `A` stored `k x m` (`trans_a = true`); likewise `B` (`k x n` or
    /// `n x k`). With `beta == 0` `C` is not read (NaNs in it do not propagate).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: (&Self::F, usize),
        b: (&Self::F, usize),
        beta: f32,
        c: (&mut Self::F, usize),
    ) -> Result<()>;
    /// `x[r, j] += bias[j]` for the `rows x cols` matrix `x` (whole buffer).
    fn add_row_bias(
        &self,
        x: &mut Self::F,
        rows: usize,
        cols: usize,
        bias: (&Self::F, usize),
    ) -> Result<()>;
    /// `out[j] = sum_r x[r, j]` (overwrites `cols` elements at the offset). Order: rows are
    /// summed in consecutive chunks of `COL_SUM_CHUNK` rows (ascending within a chunk), then the
    /// chunk partials are added in ascending chunk order.
    fn col_sums(
        &self,
        x: &Self::F,
        rows: usize,
        cols: usize,
        out: (&mut Self::F, usize),
    ) -> Result<()>;
    /// `y += alpha * x`.
    fn axpy(&self, alpha: f32, x: &Self::F, y: &mut Self::F) -> Result<()>;
    /// `x *= alpha`.
    fn scale(&self, alpha: f32, x: &mut Self::F) -> Result<()>;
    /// `out = a * b` element-wise.
    fn mul(&self, a: &Self::F, b: &Self::F, out: &mut Self::F) -> Result<()>;
    /// Backward of `out = a * b`: `grad_a = grad_out * b`, `grad_b = grad_out * a`.
    fn mul_bwd(
        &self,
        a: &Self::F,
        b: &Self::F,
        grad_out: &Self::F,
        grad_a: &mut Self::F,
        grad_b: &mut Self::F,
    ) -> Result<()>;
    /// `x = max(x, 0)` in place.
    fn relu_fwd(&self, x: &mut Self::F) -> Result<()>;
    /// `grad *= (y > 0)` where `y` is the ReLU's output (or anything with the same sign pattern).
    fn relu_bwd(&self, y: &Self::F, grad: &mut Self::F) -> Result<()>;
    /// `add_row_bias` then `relu_fwd`, exactly; a backend may do both in one pass over `x`.
    fn add_row_bias_relu(
        &self,
        x: &mut Self::F,
        rows: usize,
        cols: usize,
        bias: (&Self::F, usize),
    ) -> Result<()> {
        self.add_row_bias(x, rows, cols, bias)?;
        self.relu_fwd(x)
    }
    /// `relu_bwd(y, grad)` then `col_sums(grad, ..)` into `out`, exactly (the same summation
    /// order); a backend may do both in one pass over `grad`.
    fn relu_bwd_col_sums(
        &self,
        y: &Self::F,
        grad: &mut Self::F,
        rows: usize,
        cols: usize,
        out: (&mut Self::F, usize),
    ) -> Result<()> {
        self.relu_bwd(y, grad)?;
        self.col_sums(grad, rows, cols, out)
    }
    /// Applies the dropout mask of `key` (see `DropoutKey`) in place to the `rows x cols` matrix
    /// `x`; row `r`'s id is `row_ids[r]` (`row_ids` may be longer than `rows`).
    fn dropout_fwd(
        &self,
        x: &mut Self::F,
        rows: usize,
        cols: usize,
        row_ids: &Self::U,
        key: DropoutKey,
    ) -> Result<()>;
    /// Backward of `dropout_fwd` with the same arguments: the identical mask and scale applied
    /// to `grad` (recomputed from the hash, nothing stored).
    fn dropout_bwd(
        &self,
        grad: &mut Self::F,
        rows: usize,
        cols: usize,
        row_ids: &Self::U,
        key: DropoutKey,
    ) -> Result<()> {
        // The mask and scale are a pure function of the key: the backward is the forward.
        self.dropout_fwd(grad, rows, cols, row_ids, key)
    }

    // ---- losses ----
    /// Binary cross-entropy with logits, numerically stable: returns `sum_i max(x,0) - x*y +
    /// log1p(exp(-|x|))` (accumulated in f64, fixed order) and sets
    /// `grad[i] = grad_scale * (sigmoid(x_i) - y_i)`.
    fn bce_with_logits(
        &self,
        logits: &Self::F,
        labels: &Self::F,
        grad_scale: f32,
        grad: &mut Self::F,
    ) -> Result<f64>;
    /// Softmax cross-entropy over rows of `classes` logits with class labels `labels` (one per
    /// row): returns `sum_r logsumexp(x_r) - x_r[label_r]` (f64, fixed order) and sets
    /// `grad[r, j] = grad_scale * (softmax(x_r)[j] - [j == label_r])`. A label `>= classes` is an
    /// `Err`.
    fn softmax_xent(
        &self,
        logits: &Self::F,
        classes: usize,
        labels: &Self::U,
        grad_scale: f32,
        grad: &mut Self::F,
    ) -> Result<f64>;

    // ---- optimiser and checks ----
    /// One Adam step over flat buffers of equal length (see `AdamCoeffs`).
    fn adam_update(
        &self,
        params: &mut Self::F,
        grads: &Self::F,
        m: &mut Self::F,
        v: &mut Self::F,
        c: &AdamCoeffs,
    ) -> Result<()>;
    /// `sum x_i^2` in f64 (fixed order: chunks of `REDUCE_CHUNK` elements, partials added in
    /// chunk order).
    fn sq_norm(&self, x: &Self::F) -> Result<f64>;
    /// `sum x_i` in f64, same order as `sq_norm` (a checksum for comparing buffers across ranks).
    fn sum(&self, x: &Self::F) -> Result<f64>;
}

/// The rows a mean aggregation writes: the mean alone, or each destination's own input row
/// beside it. `SelfAndMean` is a SAGE layer's input to its one product with the stacked
/// `[W_self; W_neigh]` (K = 2·dim): one GEMM instead of two, and the self rows copied in the
/// same pass that reads the neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggLayout {
    /// `num_dst x dim`: the mean.
    Mean,
    /// `num_dst x 2·dim`: `[h_src[v] | mean[v]]` (a block's destinations are its first sources).
    SelfAndMean,
}

impl AggLayout {
    /// Row width of the aggregation's output for inputs of width `dim`.
    pub fn width(self, dim: usize) -> usize {
        match self {
            AggLayout::Mean => dim,
            AggLayout::SelfAndMean => 2 * dim,
        }
    }
    /// Column of the mean inside an output row.
    pub fn mean_col(self, dim: usize) -> usize {
        self.width(dim) - dim
    }
}

/// Operations indexed by the graph: row gathers and scatters, mean aggregation over a sampled
/// block and its backward, and the backend's own neighbour sampler. See the module doc for the
/// conventions.
pub trait GraphOps: Memory {
    /// `out[i, :] = table[rows[i], :]` for rows of width `dim`.
    fn gather_rows(
        &self,
        table: &Self::F,
        dim: usize,
        rows: &Self::U,
        out: &mut Self::F,
    ) -> Result<()>;
    /// `out[positions[k], :] = src[k, :]` for rows of width `dim`; the other rows of `out` are
    /// left as they are. Positions must be distinct; one outside `out` is an `Err`.
    fn scatter_rows(
        &self,
        src: &Self::F,
        dim: usize,
        positions: &Self::U,
        out: &mut Self::F,
    ) -> Result<()>;
    /// Mean over sampled neighbours: `mean[v] = (sum over e in indptr[v]..indptr[v+1],
    /// ascending, of h_src[indices[e]]) * (1.0f32 / deg(v))`, and `mean[v] = 0` when
    /// `deg(v) == 0`. `h_src` is `num_src x dim`; `out` is `num_dst x dim` holding `mean` for
    /// `AggLayout::Mean`, or `num_dst x 2·dim` with rows `[h_src[v] | mean[v]]` for
    /// `AggLayout::SelfAndMean`.
    fn mean_agg_fwd(
        &self,
        block: &DeviceBlock<Self>,
        layout: AggLayout,
        h_src: &Self::F,
        dim: usize,
        out: &mut Self::F,
    ) -> Result<()>;
    /// Backward of `mean_agg_fwd`: with `g[v]` the mean's columns of `grad_out[v]`,
    /// `grad_src[u] = sum over e in rev_edges[rev_indptr[u]..rev_indptr[u+1]] (ascending edge id)
    /// of g[edge_dst[e]] * (1.0f32 / deg(edge_dst[e]))` (zero for a source with no edges), then,
    /// for `SelfAndMean` and `u < num_dst`, `+ grad_out[u]`'s self columns. `grad_out` has the
    /// layout's width; `grad_src` (`num_src x dim`) is overwritten.
    fn mean_agg_bwd(
        &self,
        block: &DeviceBlock<Self>,
        layout: AggLayout,
        grad_out: &Self::F,
        dim: usize,
        grad_src: &mut Self::F,
    ) -> Result<()>;

    /// A neighbour sampler over `part`'s own adjacency that runs on this backend, when it has one
    /// (the CUDA backend samples on the GPU); `None` means sample on the host with
    /// `sample::neighbor::LocalCsr`. Either gives bit-identical samples.
    fn part_sampler<'a>(
        &'a self,
        part: &'a GraphPart,
    ) -> Result<Option<Box<dyn PartSampler<Self> + 'a>>>
    where
        Self: Sized,
    {
        let _ = part;
        Ok(None)
    }

    /// The random-walk step's trial scan over `part`'s own adjacency on this backend, when it
    /// has one (the CUDA backend scans on the GPU, `kernels/walk.cu`); `None` means scan on the
    /// host with `walk::HostTrials`. Either gives identical walks.
    fn part_walker<'a>(
        &'a self,
        part: &'a GraphPart,
    ) -> Result<Option<Box<dyn TrialScanner + 'a>>> {
        let _ = part;
        Ok(None)
    }

    /// Skip-gram training of `dim`-wide tables on this backend's device, when it has one (the
    /// CUDA backend: `kernels/sgns.cu`); `None` means train on the host (rayon over the blocks
    /// of a sub-round).
    fn sgns_device<'a>(&'a self, dim: usize) -> Result<Option<Box<dyn SgnsDevice + 'a>>> {
        let _ = dim;
        Ok(None)
    }
}

/// A backend's neighbour sampler over one part (`GraphOps::part_sampler`): a `NeighborSource`
/// for the host's multi-hop sampler and, where the part holds every node, the block chain.
pub trait PartSampler<B: Memory>: NeighborSource {
    /// Samples a whole batch with `sampler`'s rule on the device and keeps each block's index
    /// arrays there: sampling, deduplication, the CSR and the reverse index are built by
    /// kernels from the previous hop's device results, so neither the neighbours nor the index
    /// arrays cross to the host between hops or back before the step. The host copies (the
    /// same `SampledBlocks` as `sampler.sample` gives) come down once, after the last hop.
    /// `None` where the part lacks nodes a hop can reach (more than one rank: remote nodes
    /// need the owners' exchanges on the host).
    fn sample_blocks(
        &self,
        sampler: &NeighborSampler,
        seeds: &[u64],
        epoch: u64,
        step: u64,
    ) -> Result<Option<DeviceSampled<B>>>;
}

/// A batch sampled by the block chain: the host's copy of the blocks and the same blocks on the
/// device, input layer first in both.
pub struct DeviceSampled<B: Memory> {
    pub blocks: SampledBlocks,
    pub device: Vec<DeviceBlock<B>>,
}

impl<B: Memory> DeviceBlock<B> {
    /// Refuses device blocks that are not `blocks` on the device (a layer count or a size that
    /// differs): the step reads the device arrays and the host sizes together.
    pub fn check_match(device: &[DeviceBlock<B>], blocks: &SampledBlocks) -> Result<()> {
        if device.len() != blocks.blocks.len() {
            return Err(Error::Other(format!(
                "{} device blocks for {} sampled blocks",
                device.len(),
                blocks.blocks.len()
            )));
        }
        for (l, (d, h)) in device.iter().zip(&blocks.blocks).enumerate() {
            if (d.num_src, d.num_dst, d.num_edges) != (h.num_src(), h.num_dst, h.num_edges()) {
                return Err(Error::Other(format!(
                    "device block {l} has {} sources, {} destinations and {} edges; its host \
                     copy {}, {} and {}",
                    d.num_src,
                    d.num_dst,
                    d.num_edges,
                    h.num_src(),
                    h.num_dst,
                    h.num_edges()
                )));
            }
        }
        Ok(())
    }
}

/// The operations of a training step: everything a backend offers. Implemented for every type
/// that implements the three parts, so code is written against `B: Backend`.
pub trait Backend: Memory + DenseOps + GraphOps {}

impl<B: Memory + DenseOps + GraphOps> Backend for B {}

/// Rows per partial sum in `col_sums`.
pub const COL_SUM_CHUNK: usize = 256;
/// Elements per partial sum in `sq_norm`, `sum` and the loss reductions.
pub const REDUCE_CHUNK: usize = 4096;
