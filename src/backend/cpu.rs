//! The CPU backend: rayon for row-parallel operations, the `gemm` crate for matrix products.
//!
//! Every output element is computed by exactly one task in a fixed order, and reductions combine
//! fixed-size chunk partials in chunk order, so results are bit-identical for any thread count.
//! All work runs inside the backend's own rayon pool (`threads` workers).

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::backend::{
    shape_error, AdamCoeffs, Backend, DeviceBlock, DropoutKey, COL_SUM_CHUNK, REDUCE_CHUNK,
};
use crate::error::{Error, Result};
use crate::sample::rng::{unit_f32, Stream};

/// Elements per parallel task of the element-wise operations.
const ELEM_CHUNK: usize = 16 * 1024;

/// The rayon + `gemm` backend; buffers are plain vectors.
#[derive(Clone)]
pub struct CpuBackend {
    threads: usize,
    /// Whether the aggregation kernels may use AVX2 (same results: the per-element order of
    /// additions is unchanged, only more columns are processed at once).
    avx2: bool,
    pool: Arc<rayon::ThreadPool>,
    /// Large buffers handed back by `recycle`, reused by `zeros`.
    spare: Arc<Mutex<Vec<Vec<f32>>>>,
}

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
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        Ok(CpuBackend {
            threads: pool.current_num_threads(),
            avx2,
            pool: Arc::new(pool),
            spare: Arc::new(Mutex::new(Vec::new())),
        })
    }
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// An empty vector with room for `len` elements: a spare buffer when one fits (best fit),
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
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => {
                let step = (len.next_power_of_two() / 16).max(1);
                Vec::with_capacity(len.div_ceil(step) * step)
            }
        }
    }
    /// Runs `f` inside this backend's thread pool (for callers that want rayon work of their own,
    /// e.g. sampling, on the same workers).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
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

/// `sum` of `f(i)` over `0..n` as f64: chunk partials in parallel, added in chunk order.
fn reduce_f64(n: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    let chunks = n.div_ceil(REDUCE_CHUNK);
    let partials: Vec<f64> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut s = 0.0f64;
            for i in c * REDUCE_CHUNK..((c + 1) * REDUCE_CHUNK).min(n) {
                s += f(i);
            }
            s
        })
        .collect();
    partials.iter().sum()
}

/// How many edges ahead the gather prefetches source rows.
const PREFETCH_EDGES: usize = 4;

/// Hints the CPU to load row `row` of the `dim`-wide matrix `h` into cache (no effect on results).
#[inline(always)]
fn prefetch_row(h: &[f32], row: usize, dim: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = dim * 4;
        if (row + 1) * dim <= h.len() {
            let base = h[row * dim..].as_ptr() as *const i8;
            let mut off = 0;
            while off < bytes {
                // SAFETY: `base + off` lies inside row `row` of `h` (checked above); a prefetch
                // reads nothing architecturally.
                unsafe { _mm_prefetch(base.add(off), _MM_HINT_T0) };
                off += 64;
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (h, row, dim);
}

/// Columns of an output row summed at once in local accumulators (registers), so each source
/// row segment is loaded once and the output is written once.
const ACC_COLS: usize = 32;

/// `row = (sum over e in s..e of h[indices[e]]) * (1 / (e - s))`, zero for no edges; columns in
/// blocks of `ACC_COLS`, edges ascending within each column block.
#[inline(always)]
fn mean_row_kernel(row: &mut [f32], h: &[f32], dim: usize, indices: &[u32], s: usize, e: usize) {
    let nbrs = &indices[s..e];
    // Random rows: request the rows of the next edges (this row's and the next one's) early.
    for &ahead in indices[s..(e + PREFETCH_EDGES).min(indices.len())]
        .iter()
        .skip(PREFETCH_EDGES.min(nbrs.len()))
    {
        prefetch_row(h, ahead as usize, dim);
    }
    let scale = if e > s { 1.0f32 / (e - s) as f32 } else { 0.0 };
    let mut c = 0;
    while c < dim {
        let w = ACC_COLS.min(dim - c);
        let mut acc = [0.0f32; ACC_COLS];
        for &u in nbrs {
            let base = u as usize * dim + c;
            for (a, x) in acc[..w].iter_mut().zip(&h[base..base + w]) {
                *a += *x;
            }
        }
        for (o, a) in row[c..c + w].iter_mut().zip(&acc[..w]) {
            *o = *a * scale;
        }
        c += w;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn mean_row_avx2(row: &mut [f32], h: &[f32], dim: usize, indices: &[u32], s: usize, e: usize) {
    mean_row_kernel(row, h, dim, indices, s, e)
}

#[inline(always)]
fn mean_row(
    avx2: bool,
    row: &mut [f32],
    h: &[f32],
    dim: usize,
    indices: &[u32],
    s: usize,
    e: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reported AVX2 support.
        return unsafe { mean_row_avx2(row, h, dim, indices, s, e) };
    }
    let _ = avx2;
    mean_row_kernel(row, h, dim, indices, s, e)
}

/// The edges leaving one source row, for the backward scatter.
struct RevEdges<'a> {
    indptr: &'a [u32],
    rev_edges: &'a [u32],
    edge_dst: &'a [u32],
}

/// `row = sum over the edges (ascending) of grad[dst(e)] * (1 / deg(dst(e)))`.
#[inline(always)]
fn scatter_row_kernel(row: &mut [f32], grad: &[f32], dim: usize, edges: &RevEdges) {
    let mut c = 0;
    while c < dim {
        let w = ACC_COLS.min(dim - c);
        let mut acc = [0.0f32; ACC_COLS];
        for &edge in edges.rev_edges {
            let v = edges.edge_dst[edge as usize] as usize;
            let inv = 1.0f32 / (edges.indptr[v + 1] - edges.indptr[v]) as f32;
            let base = v * dim + c;
            for (a, x) in acc[..w].iter_mut().zip(&grad[base..base + w]) {
                *a += *x * inv;
            }
        }
        row[c..c + w].copy_from_slice(&acc[..w]);
        c += w;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scatter_row_avx2(row: &mut [f32], grad: &[f32], dim: usize, edges: &RevEdges) {
    scatter_row_kernel(row, grad, dim, edges)
}

#[inline(always)]
fn scatter_row(avx2: bool, row: &mut [f32], grad: &[f32], dim: usize, edges: &RevEdges) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reported AVX2 support.
        return unsafe { scatter_row_avx2(row, grad, dim, edges) };
    }
    let _ = avx2;
    scatter_row_kernel(row, grad, dim, edges)
}

#[inline(always)]
fn dropout_scale(key: &DropoutKey) -> f32 {
    1.0f32 / (1.0f32 - key.p)
}

/// Applies the dropout mask of `key` to rows of `x` in place.
fn apply_dropout(x: &mut [f32], rows: usize, cols: usize, ids: &[u32], key: DropoutKey) {
    if key.p == 0.0 || cols == 0 {
        return;
    }
    let stream = Stream::new(key.seed, key.epoch, key.step, key.purpose);
    let scale = dropout_scale(&key);
    x[..rows * cols]
        .par_chunks_mut(cols)
        .zip(ids[..rows].par_iter())
        .with_min_len(16)
        .for_each(|(row, &id)| {
            let s = stream.for_id(id as u64);
            for (j, v) in row.iter_mut().enumerate() {
                let keep = unit_f32(s.at(j as u64)) >= key.p;
                *v = if keep { *v * scale } else { 0.0 };
            }
        });
}

impl Backend for CpuBackend {
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
        buf.resize(len, 0.0);
        Ok(buf)
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
        buf.extend_from_slice(host);
        Ok(buf)
    }
    fn upload_with(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let mut buf = self.zeros(len)?;
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
        check_view("copy", "src", src.0.len(), src.1, len)?;
        check_view("copy", "dst", dst.0.len(), dst.1, len)?;
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

    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: (&Vec<f32>, usize),
        b: (&Vec<f32>, usize),
        beta: f32,
        c: (&mut Vec<f32>, usize),
    ) -> Result<()> {
        check_view("gemm", "A", a.0.len(), a.1, m * k)?;
        check_view("gemm", "B", b.0.len(), b.1, k * n)?;
        check_view("gemm", "C", c.0.len(), c.1, m * n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let c_view = &mut c.0[c.1..c.1 + m * n];
        if k == 0 {
            for x in c_view.iter_mut() {
                *x = if beta == 0.0 { 0.0 } else { beta * *x };
            }
            return Ok(());
        }
        let a_view = &a.0[a.1..a.1 + m * k];
        let b_view = &b.0[b.1..b.1 + k * n];
        // Row-major strides: element (i, j) of op(A) is at i*rs + j*cs.
        let (a_rs, a_cs) = if trans_a {
            (1, m as isize)
        } else {
            (k as isize, 1)
        };
        let (b_rs, b_cs) = if trans_b {
            (1, k as isize)
        } else {
            (n as isize, 1)
        };
        let par = if self.threads > 1 {
            gemm::Parallelism::Rayon(self.threads)
        } else {
            gemm::Parallelism::None
        };
        self.pool.install(|| {
            // SAFETY: the three views were bounds-checked above for the shapes and strides given;
            // `c_view` is a unique borrow, so it does not alias `a_view` or `b_view`. The gemm
            // crate computes dst = alpha_g * dst + beta_g * lhs * rhs, reading dst only when
            // `read_dst` is true.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c_view.as_mut_ptr(),
                    1,
                    n as isize,
                    beta != 0.0,
                    a_view.as_ptr(),
                    a_cs,
                    a_rs,
                    b_view.as_ptr(),
                    b_cs,
                    b_rs,
                    beta,
                    alpha,
                    false,
                    false,
                    false,
                    par,
                )
            }
        });
        Ok(())
    }

    fn add_row_bias(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        bias: (&Vec<f32>, usize),
    ) -> Result<()> {
        check_len("add_row_bias", "x", x.len(), rows * cols)?;
        check_view("add_row_bias", "bias", bias.0.len(), bias.1, cols)?;
        if cols == 0 {
            return Ok(());
        }
        let bias = &bias.0[bias.1..bias.1 + cols];
        self.pool.install(|| {
            x.par_chunks_mut(cols).with_min_len(64).for_each(|row| {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += *b;
                }
            })
        });
        Ok(())
    }

    fn col_sums(
        &self,
        x: &Vec<f32>,
        rows: usize,
        cols: usize,
        out: (&mut Vec<f32>, usize),
    ) -> Result<()> {
        check_len("col_sums", "x", x.len(), rows * cols)?;
        check_view("col_sums", "out", out.0.len(), out.1, cols)?;
        let partials: Vec<Vec<f32>> = self.pool.install(|| {
            x.par_chunks(COL_SUM_CHUNK * cols.max(1))
                .map(|chunk| {
                    let mut acc = vec![0.0f32; cols];
                    for row in chunk.chunks_exact(cols.max(1)) {
                        for (a, v) in acc.iter_mut().zip(row) {
                            *a += *v;
                        }
                    }
                    acc
                })
                .collect()
        });
        let dst = &mut out.0[out.1..out.1 + cols];
        dst.iter_mut().for_each(|v| *v = 0.0);
        for p in &partials {
            for (d, v) in dst.iter_mut().zip(p) {
                *d += *v;
            }
        }
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        check_len("axpy", "y", y.len(), x.len())?;
        self.pool.install(|| {
            y.par_chunks_mut(ELEM_CHUNK)
                .zip(x.par_chunks(ELEM_CHUNK))
                .for_each(|(y, x)| {
                    for (a, b) in y.iter_mut().zip(x) {
                        *a += alpha * *b;
                    }
                })
        });
        Ok(())
    }

    fn scale(&self, alpha: f32, x: &mut Vec<f32>) -> Result<()> {
        self.pool.install(|| {
            x.par_chunks_mut(ELEM_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|v| *v *= alpha))
        });
        Ok(())
    }

    fn mul(&self, a: &Vec<f32>, b: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        check_len("mul", "b", b.len(), a.len())?;
        check_len("mul", "out", out.len(), a.len())?;
        self.pool.install(|| {
            out.par_chunks_mut(ELEM_CHUNK)
                .zip(a.par_chunks(ELEM_CHUNK).zip(b.par_chunks(ELEM_CHUNK)))
                .for_each(|(o, (a, b))| {
                    for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                        *o = *a * *b;
                    }
                })
        });
        Ok(())
    }

    fn mul_bwd(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        grad_out: &Vec<f32>,
        grad_a: &mut Vec<f32>,
        grad_b: &mut Vec<f32>,
    ) -> Result<()> {
        let n = a.len();
        check_len("mul_bwd", "b", b.len(), n)?;
        check_len("mul_bwd", "grad_out", grad_out.len(), n)?;
        check_len("mul_bwd", "grad_a", grad_a.len(), n)?;
        check_len("mul_bwd", "grad_b", grad_b.len(), n)?;
        self.pool.install(|| {
            grad_a
                .par_chunks_mut(ELEM_CHUNK)
                .zip(grad_b.par_chunks_mut(ELEM_CHUNK))
                .enumerate()
                .for_each(|(c, (ga, gb))| {
                    let base = c * ELEM_CHUNK;
                    for i in 0..ga.len() {
                        let g = grad_out[base + i];
                        ga[i] = g * b[base + i];
                        gb[i] = g * a[base + i];
                    }
                })
        });
        Ok(())
    }

    fn relu_fwd(&self, x: &mut Vec<f32>) -> Result<()> {
        self.pool.install(|| {
            x.par_chunks_mut(ELEM_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)))
        });
        Ok(())
    }

    fn relu_bwd(&self, y: &Vec<f32>, grad: &mut Vec<f32>) -> Result<()> {
        check_len("relu_bwd", "grad", grad.len(), y.len())?;
        self.pool.install(|| {
            grad.par_chunks_mut(ELEM_CHUNK)
                .zip(y.par_chunks(ELEM_CHUNK))
                .for_each(|(g, y)| {
                    for (g, y) in g.iter_mut().zip(y) {
                        if *y <= 0.0 {
                            *g = 0.0;
                        }
                    }
                })
        });
        Ok(())
    }

    fn dropout_fwd(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        row_ids: &Vec<u32>,
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
        self.pool
            .install(|| apply_dropout(x, rows, cols, row_ids, key));
        Ok(())
    }

    fn dropout_bwd(
        &self,
        grad: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        row_ids: &Vec<u32>,
        key: DropoutKey,
    ) -> Result<()> {
        // The mask and scale are a pure function of the key: the backward is the forward.
        self.dropout_fwd(grad, rows, cols, row_ids, key)
    }

    fn gather_rows(
        &self,
        table: &Vec<f32>,
        dim: usize,
        rows: &Vec<u32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("gather_rows", "out", out.len(), rows.len() * dim)?;
        let table_rows = table.len().checked_div(dim).unwrap_or(0);
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= table_rows) {
            return Err(shape_error(
                "gather_rows",
                format!("row {r} >= table rows {table_rows}"),
            ));
        }
        if dim == 0 {
            return Ok(());
        }
        self.pool.install(|| {
            out.par_chunks_mut(dim)
                .zip(rows.par_iter())
                .with_min_len(64)
                .for_each(|(o, &r)| {
                    o.copy_from_slice(&table[r as usize * dim..(r as usize + 1) * dim])
                })
        });
        Ok(())
    }

    fn scatter_rows(
        &self,
        src: &Vec<f32>,
        dim: usize,
        positions: &Vec<u32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("scatter_rows", "src", src.len(), positions.len() * dim)?;
        let out_rows = out.len().checked_div(dim).unwrap_or(0);
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= out_rows) {
            return Err(shape_error(
                "scatter_rows",
                format!("position {p} >= output rows {out_rows}"),
            ));
        }
        if dim == 0 {
            return Ok(());
        }
        // Sequential: the scattered rows are the few fetched from other ranks, and distinct
        // positions make the order irrelevant to the result.
        for (row, &p) in src.chunks_exact(dim).zip(positions) {
            out[p as usize * dim..(p as usize + 1) * dim].copy_from_slice(row);
        }
        Ok(())
    }

    fn mean_agg_fwd(
        &self,
        block: &DeviceBlock<Self>,
        h_src: &Vec<f32>,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("mean_agg_fwd", "h_src", h_src.len(), block.num_src * dim)?;
        check_len("mean_agg_fwd", "out", out.len(), block.num_dst * dim)?;
        if dim == 0 {
            return Ok(());
        }
        let indptr = &block.indptr;
        let indices = &block.indices;
        let avx2 = self.avx2;
        self.pool.install(|| {
            out.par_chunks_mut(dim)
                .enumerate()
                .with_min_len(8)
                .for_each(|(v, row)| {
                    let (s, e) = (indptr[v] as usize, indptr[v + 1] as usize);
                    mean_row(avx2, row, h_src, dim, indices, s, e);
                })
        });
        Ok(())
    }

    fn mean_agg_bwd(
        &self,
        block: &DeviceBlock<Self>,
        grad_out: &Vec<f32>,
        dim: usize,
        grad_src: &mut Vec<f32>,
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
        if dim == 0 {
            return Ok(());
        }
        let indptr = &block.indptr;
        let rev_indptr = &block.rev_indptr;
        let rev_edges = &block.rev_edges;
        let edge_dst = &block.edge_dst;
        let avx2 = self.avx2;
        self.pool.install(|| {
            grad_src
                .par_chunks_mut(dim)
                .enumerate()
                .with_min_len(8)
                .for_each(|(u, row)| {
                    let (s, e) = (rev_indptr[u] as usize, rev_indptr[u + 1] as usize);
                    let edges = RevEdges {
                        indptr,
                        rev_edges: &rev_edges[s..e],
                        edge_dst,
                    };
                    scatter_row(avx2, row, grad_out, dim, &edges);
                })
        });
        Ok(())
    }

    fn bce_with_logits(
        &self,
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        grad_scale: f32,
        grad: &mut Vec<f32>,
    ) -> Result<f64> {
        let n = logits.len();
        check_len("bce_with_logits", "labels", labels.len(), n)?;
        check_len("bce_with_logits", "grad", grad.len(), n)?;
        Ok(self.pool.install(|| {
            grad.par_iter_mut().enumerate().for_each(|(i, g)| {
                let (x, y) = (logits[i], labels[i]);
                *g = grad_scale * (sigmoid(x) - y);
            });
            reduce_f64(n, |i| {
                let (x, y) = (logits[i] as f64, labels[i] as f64);
                x.max(0.0) - x * y + (-x.abs()).exp().ln_1p()
            })
        }))
    }

    fn softmax_xent(
        &self,
        logits: &Vec<f32>,
        classes: usize,
        labels: &Vec<u32>,
        grad_scale: f32,
        grad: &mut Vec<f32>,
    ) -> Result<f64> {
        let rows = labels.len();
        check_len("softmax_xent", "logits", logits.len(), rows * classes)?;
        check_len("softmax_xent", "grad", grad.len(), rows * classes)?;
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(shape_error(
                "softmax_xent",
                format!("label {l} >= classes {classes}"),
            ));
        }
        if rows == 0 {
            return Ok(0.0);
        }
        let row_loss: Vec<f64> = self.pool.install(|| {
            grad.par_chunks_mut(classes)
                .enumerate()
                .map(|(r, g)| {
                    let x = &logits[r * classes..(r + 1) * classes];
                    let mx = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut s = 0.0f32;
                    for (g, &v) in g.iter_mut().zip(x) {
                        *g = (v - mx).exp();
                        s += *g;
                    }
                    let inv = 1.0f32 / s;
                    let label = labels[r] as usize;
                    for (j, g) in g.iter_mut().enumerate() {
                        let onehot = if j == label { 1.0 } else { 0.0 };
                        *g = grad_scale * (*g * inv - onehot);
                    }
                    mx as f64 + (s as f64).ln() - x[label] as f64
                })
                .collect()
        });
        Ok(row_loss.iter().sum())
    }

    fn adam_update(
        &self,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        c: &AdamCoeffs,
    ) -> Result<()> {
        let n = params.len();
        check_len("adam_update", "grads", grads.len(), n)?;
        check_len("adam_update", "m", m.len(), n)?;
        check_len("adam_update", "v", v.len(), n)?;
        let step_size = c.lr / c.bias1;
        let sqrt_bias2 = c.bias2.sqrt();
        self.pool.install(|| {
            params
                .par_chunks_mut(ELEM_CHUNK)
                .zip(m.par_chunks_mut(ELEM_CHUNK))
                .zip(v.par_chunks_mut(ELEM_CHUNK))
                .zip(grads.par_chunks(ELEM_CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for i in 0..p.len() {
                        let gi = g[i] + c.weight_decay * p[i];
                        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
                        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
                        let denom = v[i].sqrt() / sqrt_bias2 + c.eps;
                        p[i] -= step_size * m[i] / denom;
                    }
                })
        });
        Ok(())
    }

    fn sq_norm(&self, x: &Vec<f32>) -> Result<f64> {
        Ok(self
            .pool
            .install(|| reduce_f64(x.len(), |i| (x[i] as f64) * (x[i] as f64))))
    }

    fn sum(&self, x: &Vec<f32>) -> Result<f64> {
        Ok(self.pool.install(|| reduce_f64(x.len(), |i| x[i] as f64)))
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::rng::{hash, unit_f32};

    fn rand(n: usize, salt: u64) -> Vec<f32> {
        (0..n)
            .map(|i| unit_f32(hash(1, salt, 0, 0, i as u64, 0)) - 0.5)
            .collect()
    }

    #[test]
    fn gemm_matches_a_naive_product_for_every_transpose_offset_and_beta() {
        let be = CpuBackend::new(2).unwrap();
        let (m, n, k) = (37, 29, 23);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for beta in [0.0f32, 1.0, 0.5] {
                let (aoff, boff, coff) = (3, 5, 7);
                let a = rand(aoff + m * k, 1);
                let b = rand(boff + k * n, 2);
                let c0 = rand(coff + m * n, 3);
                let mut c = c0.clone();
                if beta == 0.0 {
                    c[coff..].iter_mut().for_each(|v| *v = f32::NAN);
                }
                be.gemm(
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    1.5,
                    (&a, aoff),
                    (&b, boff),
                    beta,
                    (&mut c, coff),
                )
                .unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0.0f64;
                        for p in 0..k {
                            let av = if ta {
                                a[aoff + p * m + i]
                            } else {
                                a[aoff + i * k + p]
                            };
                            let bv = if tb {
                                b[boff + j * k + p]
                            } else {
                                b[boff + p * n + j]
                            };
                            s += av as f64 * bv as f64;
                        }
                        let want = 1.5 * s + beta as f64 * c0[coff + i * n + j] as f64;
                        let got = c[coff + i * n + j] as f64;
                        assert!((got - want).abs() < 1e-4, "({ta},{tb},{beta}) [{i},{j}]");
                    }
                }
                assert_eq!(c[..coff], c0[..coff], "gemm wrote before its view");
            }
        }
        let a = rand(10, 1);
        let mut c = rand(10, 2);
        assert!(be
            .gemm(
                false,
                false,
                3,
                3,
                3,
                1.0,
                (&a, 2),
                (&a, 0),
                0.0,
                (&mut c, 0)
            )
            .is_err());
    }

    #[test]
    fn scatter_rows_writes_only_the_given_rows() {
        let be = CpuBackend::new(1).unwrap();
        let mut out = vec![-1.0f32; 5 * 2];
        be.scatter_rows(&vec![1.0, 2.0, 3.0, 4.0], 2, &vec![4, 1], &mut out)
            .unwrap();
        assert_eq!(
            out,
            [-1.0, -1.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0, 1.0, 2.0]
        );
        let err = be
            .scatter_rows(&vec![1.0, 2.0], 2, &vec![5], &mut out)
            .unwrap_err();
        assert!(
            err.to_string().contains("position 5 >= output rows 5"),
            "{err}"
        );
        assert!(be.scatter_rows(&vec![1.0], 2, &vec![0], &mut out).is_err());
    }

    #[test]
    fn gemm_and_reductions_are_bit_identical_across_thread_counts() {
        // The shapes of a hidden-256 layer: forward (4096 x 256 · 256 x 256) and the weight
        // gradient (256 x 4096 · 4096 x 256).
        let (m, n, k) = (4096, 256, 256);
        let a = rand(m * k, 4);
        let b = rand(k * n, 5);
        let run = |threads: usize| {
            let be = CpuBackend::new(threads).unwrap();
            let mut c = vec![0.0f32; m * n];
            be.gemm(
                false,
                false,
                m,
                n,
                k,
                1.0,
                (&a, 0),
                (&b, 0),
                0.0,
                (&mut c, 0),
            )
            .unwrap();
            let mut g = vec![0.0f32; k * n];
            be.gemm(
                true,
                false,
                k,
                n,
                m,
                1.0,
                (&a, 0),
                (&c, 0),
                0.0,
                (&mut g, 0),
            )
            .unwrap();
            let mut cs = vec![0.0f32; n];
            be.col_sums(&c, m, n, (&mut cs, 0)).unwrap();
            let norm = be.sq_norm(&c).unwrap();
            (c, g, cs, norm.to_bits())
        };
        let one = run(1);
        assert!(one == run(2), "1 and 2 threads differ");
        assert!(one == run(3), "1 and 3 threads differ");
    }

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
    fn element_wise_operations_check_lengths() {
        let be = CpuBackend::new(1).unwrap();
        let mut y = vec![1.0f32; 4];
        assert!(be.axpy(2.0, &vec![1.0; 3], &mut y).is_err());
        be.axpy(2.0, &vec![1.0; 4], &mut y).unwrap();
        assert_eq!(y, vec![3.0; 4]);
        let mut out = vec![0.0f32; 4];
        be.mul(&y, &vec![2.0; 4], &mut out).unwrap();
        assert_eq!(out, vec![6.0; 4]);
        let mut x = vec![-1.0f32, 2.0, 0.0, 3.0];
        be.relu_fwd(&mut x).unwrap();
        let mut g = vec![1.0f32; 4];
        be.relu_bwd(&x, &mut g).unwrap();
        assert_eq!(g, vec![0.0, 1.0, 0.0, 1.0]);
        let mut t = vec![0.0f32; 4];
        be.gather_rows(&vec![1.0, 2.0, 3.0, 4.0], 2, &vec![1, 0], &mut t)
            .unwrap();
        assert_eq!(t, vec![3.0, 4.0, 1.0, 2.0]);
        assert!(be
            .gather_rows(&vec![1.0, 2.0], 2, &vec![1, 0], &mut t)
            .is_err());
        let mut m = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        be.add_row_bias(&mut m, 2, 3, (&vec![9.0, 10.0, 20.0, 30.0], 1))
            .unwrap();
        assert_eq!(m, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let mut cs = vec![0.0f32; 5];
        be.col_sums(&m, 2, 3, (&mut cs, 2)).unwrap();
        assert_eq!(cs, vec![0.0, 0.0, 25.0, 47.0, 69.0]);
        assert_eq!(be.sum(&m).unwrap(), 141.0);
    }
}
