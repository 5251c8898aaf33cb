//! The row kernels of the CPU mean aggregation and its backward: one output row from its edges,
//! columns summed in register blocks, in an AVX-512 or AVX2 build when the CPU has it, and the
//! software prefetch the callers issue ahead of them, and the backward's non-temporal stores of
//! outputs too large to stay in cache. The per-element order of additions is the same in every variant, so
//! the choice never changes a result. Parallelism and argument checks are the caller's (`graph`).

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

/// Writes a finished block of `ACC_COLS` columns to `dst`: with non-temporal stores when
/// `stream` and `dst` starts 16-byte aligned, plainly otherwise. An output larger than the
/// cache leaves it before anything reads it again, so an ordinary store's read for ownership
/// of the line is a wasted pass over memory; a streaming store writes the line without it.
#[inline(always)]
fn store_block(dst: &mut [f32], acc: &[f32; ACC_COLS], stream: bool) {
    let dst = &mut dst[..ACC_COLS];
    #[cfg(target_arch = "x86_64")]
    if stream && (dst.as_ptr() as usize).is_multiple_of(16) {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        for k in (0..ACC_COLS).step_by(4) {
            // SAFETY: `dst` holds ACC_COLS floats from a 16-byte-aligned start, so each
            // 4-float store is in bounds and aligned as the instruction requires.
            unsafe { _mm_stream_ps(dst.as_mut_ptr().add(k), _mm_loadu_ps(acc.as_ptr().add(k))) };
        }
        return;
    }
    let _ = stream;
    dst.copy_from_slice(acc);
}

/// Makes the streaming stores this thread issued visible to every other thread: call it after
/// a task's rows, before the task counts as done (non-temporal stores are weakly ordered).
#[inline]
pub(super) fn fence_streaming_stores() {
    // SAFETY: SSE is part of every x86_64 CPU; the fence reads and writes nothing.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn mean_row_avx512(row: &mut [f32], h: &[f32], dim: usize, indices: &[u32], s: usize, e: usize) {
    mean_row_kernel(row, h, dim, indices, s, e)
}

#[inline(always)]
pub(super) fn mean_row(
    isa: RowIsa,
    row: &mut [f32],
    h: &[f32],
    dim: usize,
    indices: &[u32],
    s: usize,
    e: usize,
) {
    match isa {
        // SAFETY: `detect` picks a set only when the CPU reports it.
        #[cfg(target_arch = "x86_64")]
        RowIsa::Avx512 => unsafe { mean_row_avx512(row, h, dim, indices, s, e) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        RowIsa::Avx2 => unsafe { mean_row_avx2(row, h, dim, indices, s, e) },
        _ => mean_row_kernel(row, h, dim, indices, s, e),
    }
}

/// Asks the cache for `len` floats from `start` (whole lines) ahead of their use, into L2
/// (`T1`) or L1 (`T0`). A hint: the address is not read, so it need not be in bounds.
#[inline(always)]
pub(super) fn prefetch(start: *const f32, len: usize, into_l1: bool) {
    crate::util::prefetch_lines(start as *const u8, len * 4, into_l1)
}

/// The widest instruction set the row kernels are built for that this CPU has. Every set runs
/// the same additions in the same order, so the choice never changes a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowIsa {
    Portable,
    Avx2,
    Avx512,
}

impl RowIsa {
    pub(super) fn detect() -> RowIsa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return RowIsa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return RowIsa::Avx2;
            }
        }
        RowIsa::Portable
    }
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
    /// Write the row with streaming stores (`store_block`).
    pub stream: bool,
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
        store_block(&mut row[c..c + ACC_COLS], &acc, edges.stream);
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn scatter_row_avx512(row: &mut [f32], grad: &[f32], dim: usize, edges: &RevEdges) {
    scatter_row_kernel(row, grad, dim, edges)
}

#[inline(always)]
pub(super) fn scatter_row(
    isa: RowIsa,
    row: &mut [f32],
    grad: &[f32],
    dim: usize,
    edges: &RevEdges,
) {
    match isa {
        // SAFETY: `detect` picks a set only when the CPU reports it.
        #[cfg(target_arch = "x86_64")]
        RowIsa::Avx512 => unsafe { scatter_row_avx512(row, grad, dim, edges) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        RowIsa::Avx2 => unsafe { scatter_row_avx2(row, grad, dim, edges) },
        _ => scatter_row_kernel(row, grad, dim, edges),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set this CPU has.
    fn isas() -> Vec<RowIsa> {
        let mut out = vec![RowIsa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(RowIsa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(RowIsa::Avx512);
            }
        }
        out
    }

    fn values(n: usize, salt: u32) -> Vec<f32> {
        // Values of mixed magnitude, so that a different order of additions would show.
        (0..n as u32)
            .map(|i| {
                let h = i
                    .wrapping_mul(2654435761)
                    .wrapping_add(salt.wrapping_mul(40503));
                ((h >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
                    * (1 + (h & 7)) as f32
                    * 1e3f32.powi((h % 3) as i32 - 1)
            })
            .collect()
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let rows = 37;
        // Widths below, at and past the register block, with tails.
        for dim in [1usize, 5, 63, 64, 65, 100, 128, 129, 200, 256, 300] {
            let h = values(rows * dim, dim as u32);
            // Row v has v % 9 sources (0: an empty mean), ids spread over the table.
            let mut indptr = vec![0u32];
            let mut indices = Vec::new();
            for v in 0..rows {
                for k in 0..v % 9 {
                    indices.push(((v * 7 + k * 13) % rows) as u32);
                }
                indptr.push(indices.len() as u32);
            }
            let fwd = |isa: RowIsa| {
                let mut out = vec![f32::NAN; rows * dim];
                for v in 0..rows {
                    let (s, e) = (indptr[v] as usize, indptr[v + 1] as usize);
                    mean_row(
                        isa,
                        &mut out[v * dim..(v + 1) * dim],
                        &h,
                        dim,
                        &indices,
                        s,
                        e,
                    );
                }
                out
            };
            // The backward of the same edges: each source's edges, the self term on even rows;
            // `stream` also at a start 4 bytes past the allocation's (every row unaligned for
            // the streaming stores, which then fall back to plain ones).
            let edge_dst: Vec<u32> = (0..rows)
                .flat_map(|v| std::iter::repeat_n(v as u32, v % 9))
                .collect();
            let bwd = |isa: RowIsa, stream: bool, shift: usize| {
                let mut out = vec![f32::NAN; shift + rows * dim];
                for u in 0..rows {
                    let rev: Vec<u32> = (0..indices.len() as u32)
                        .filter(|&e| indices[e as usize] as usize == u)
                        .collect();
                    let edges = RevEdges {
                        indptr: &indptr,
                        rev_edges: &rev,
                        edge_dst: &edge_dst,
                        grad_stride: dim,
                        grad_col: 0,
                        own: (u % 2 == 0).then(|| &h[u * dim..(u + 1) * dim]),
                        stream,
                    };
                    let at = shift + u * dim;
                    scatter_row(isa, &mut out[at..at + dim], &h, dim, &edges);
                }
                fence_streaming_stores();
                out.split_off(shift)
            };
            let bits = |x: Vec<f32>| x.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let (f0, b0) = (
                bits(fwd(RowIsa::Portable)),
                bits(bwd(RowIsa::Portable, false, 0)),
            );
            for (what, out) in [("forward", &f0), ("backward", &b0)] {
                assert!(
                    out.iter().all(|&b| !f32::from_bits(b).is_nan()),
                    "{what}, dim {dim}: a row was not written"
                );
            }
            for isa in isas() {
                assert_eq!(bits(fwd(isa)), f0, "forward, dim {dim}, {isa:?}");
                for (stream, shift) in [(false, 0), (true, 0), (true, 1)] {
                    let how = format!("dim {dim}, {isa:?}, stream {stream}, shift {shift}");
                    assert_eq!(bits(bwd(isa, stream, shift)), b0, "backward, {how}");
                }
            }
        }
    }
}
