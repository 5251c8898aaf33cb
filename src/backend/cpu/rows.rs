//! The row kernels of the CPU mean aggregation and its backward: one output row from its edges,
//! with source rows prefetched and columns summed in register blocks, in an AVX2 build when the
//! CPU has it. The per-element order of additions is the same in every variant, so the choice
//! never changes a result. Parallelism and argument checks are the caller's (`graph`).

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
pub(super) fn mean_row(
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
pub(super) struct RevEdges<'a> {
    pub indptr: &'a [u32],
    pub rev_edges: &'a [u32],
    pub edge_dst: &'a [u32],
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
pub(super) fn scatter_row(avx2: bool, row: &mut [f32], grad: &[f32], dim: usize, edges: &RevEdges) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reported AVX2 support.
        return unsafe { scatter_row_avx2(row, grad, dim, edges) };
    }
    let _ = avx2;
    scatter_row_kernel(row, grad, dim, edges)
}
