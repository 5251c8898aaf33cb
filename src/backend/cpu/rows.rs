//! The row kernels of the CPU mean aggregation and its backward: one output row from its edges,
//! columns summed in register blocks, in an AVX2 build when the CPU has it. There is no software
//! prefetch: a row's loads are independent, so the out-of-order core keeps them in flight, and
//! prefetching the next rows measured no faster (bench-agg). The per-element order of additions
//! is the same in every variant, so the choice never changes a result. Parallelism and argument
//! checks are the caller's (`graph`).

/// Columns of an output row summed at once in local accumulators (registers), so each source
/// row segment is loaded once and the output is written once.
const ACC_COLS: usize = 64;

/// `row = (sum over e in s..e of h[indices[e]]) * (1 / (e - s))`, zero for no edges; columns in
/// blocks of `ACC_COLS`, edges ascending within each column block.
#[inline(always)]
fn mean_row_kernel(row: &mut [f32], h: &[f32], dim: usize, indices: &[u32], s: usize, e: usize) {
    let nbrs = &indices[s..e];
    let scale = if e > s { 1.0f32 / (e - s) as f32 } else { 0.0 };
    let mut c = 0;
    // Whole blocks have a constant width, so the accumulators stay in registers (a variable
    // width kept them on the stack, a store and a load per addition).
    while c + ACC_COLS <= dim {
        let mut acc = [0.0f32; ACC_COLS];
        for &u in nbrs {
            let base = u as usize * dim + c;
            add_block(&mut acc, &h[base..base + ACC_COLS]);
        }
        for (o, a) in row[c..c + ACC_COLS].iter_mut().zip(&acc) {
            *o = *a * scale;
        }
        c += ACC_COLS;
    }
    if c < dim {
        let w = dim - c;
        let mut acc = [0.0f32; ACC_COLS];
        for &u in nbrs {
            let base = u as usize * dim + c;
            for (a, x) in acc[..w].iter_mut().zip(&h[base..base + w]) {
                *a += *x;
            }
        }
        for (o, a) in row[c..].iter_mut().zip(&acc[..w]) {
            *o = *a * scale;
        }
    }
}

/// One whole block of `ACC_COLS` columns as a fixed-size array (the constant width keeps the
/// accumulators in registers).
#[inline(always)]
fn block(x: &[f32]) -> &[f32; ACC_COLS] {
    match x.try_into() {
        Ok(x) => x,
        Err(_) => unreachable!("a block is ACC_COLS wide"),
    }
}

/// `acc += x` element-wise over one whole block.
#[inline(always)]
fn add_block(acc: &mut [f32; ACC_COLS], x: &[f32]) {
    let x = block(x);
    for k in 0..ACC_COLS {
        acc[k] += x[k];
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

/// The edges leaving one source row, for the backward scatter, and where the gradient of a
/// destination's mean sits: row `v` of the gradient starts at `v * grad_stride`, its mean's
/// columns at `grad_col` within the row. `own` is the gradient of the source's own row when
/// it is also a destination whose row the layer used (`AggLayout::SelfAndMean`).
pub(super) struct RevEdges<'a> {
    pub indptr: &'a [u32],
    pub rev_edges: &'a [u32],
    pub edge_dst: &'a [u32],
    pub grad_stride: usize,
    pub grad_col: usize,
    pub own: Option<&'a [f32]>,
}

/// `row = sum over the edges (ascending) of grad[dst(e)] * (1 / deg(dst(e)))`, plus `own` after
/// the sum when there is one; whole column blocks in registers as in the forward, each row
/// written once.
#[inline(always)]
fn scatter_row_kernel(row: &mut [f32], grad: &[f32], dim: usize, edges: &RevEdges) {
    let inv_deg = |v: usize| 1.0f32 / (edges.indptr[v + 1] - edges.indptr[v]) as f32;
    let mut c = 0;
    while c + ACC_COLS <= dim {
        let mut acc = [0.0f32; ACC_COLS];
        for &edge in edges.rev_edges {
            let v = edges.edge_dst[edge as usize] as usize;
            let inv = inv_deg(v);
            let base = v * edges.grad_stride + edges.grad_col + c;
            let x = block(&grad[base..base + ACC_COLS]);
            for k in 0..ACC_COLS {
                acc[k] += x[k] * inv;
            }
        }
        if let Some(own) = edges.own {
            add_block(&mut acc, &own[c..c + ACC_COLS]);
        }
        row[c..c + ACC_COLS].copy_from_slice(&acc);
        c += ACC_COLS;
    }
    if c < dim {
        let w = dim - c;
        let mut acc = [0.0f32; ACC_COLS];
        for &edge in edges.rev_edges {
            let v = edges.edge_dst[edge as usize] as usize;
            let inv = inv_deg(v);
            let base = v * edges.grad_stride + edges.grad_col + c;
            for (a, x) in acc[..w].iter_mut().zip(&grad[base..base + w]) {
                *a += *x * inv;
            }
        }
        if let Some(own) = edges.own {
            for (a, x) in acc[..w].iter_mut().zip(&own[c..]) {
                *a += *x;
            }
        }
        row[c..].copy_from_slice(&acc[..w]);
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
