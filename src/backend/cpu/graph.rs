//! The CPU backend's `GraphOps`: row gathers and scatters, and the mean aggregation over a
//! sampled block with its backward: one output row per task forward, tasks of 32 rows backward
//! (one fence per task after streaming stores; the row kernels are in `rows`).
//! Neighbour sampling stays with the host sampler (`part_sampler` is the trait's `None`).

use rayon::prelude::*;

use super::rows::{fence_streaming_stores, mean_row, prefetch, scatter_row, RevEdges};
use super::CpuBackend;
use crate::backend::{checks, AggLayout, DeviceBlock, GraphOps};
use crate::error::Result;

/// How far ahead rows are prefetched into L2: forward, the sources of the edges this many
/// past the current destination's (a distance in rows, whatever the degree); backward, the
/// gradient rows of the source this many ahead. A row's own loads are independent, but the
/// out-of-order window holds only about one destination's, and L1's few miss buffers cap what
/// it keeps in flight; asking L2 for rows further ahead adds misses in flight without taking
/// those buffers from the current row. Measured (bench-agg, width 128, 1920 MiB table on a
/// 480 MiB L3): forward 51-55% of copy bandwidth without, 66-71% at 20-48 edges ahead, 51-55%
/// at 10; into L1 instead of L2 was slower than none.
const FWD_AHEAD_EDGES: usize = 32;
const BWD_AHEAD: usize = 4;
/// The widest rows prefetched, forward and backward: wider rows are long enough for the
/// hardware's own prefetcher to stream them, and prefetching them too measured slower
/// (bench-agg, a 1920 MiB table on a 480 MiB L3).
const FWD_PREFETCH_MAX_DIM: usize = 128;
const BWD_PREFETCH_MAX_DIM: usize = 256;

impl GraphOps for CpuBackend {
    fn gather_rows(
        &self,
        table: &Vec<f32>,
        dim: usize,
        rows: &Vec<u32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let table_rows = checks::gather_rows(table.len(), dim, rows.len(), out.len())?;
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= table_rows) {
            return Err(checks::row_outside_table(r, table_rows));
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
        let out_rows = checks::scatter_rows(src.len(), dim, positions.len(), out.len())?;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= out_rows) {
            return Err(checks::position_outside_output(p, out_rows));
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
        layout: AggLayout,
        h_src: &Vec<f32>,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        checks::mean_agg_fwd(block, layout, dim, h_src.len(), out.len())?;
        if dim == 0 {
            return Ok(());
        }
        let indptr = &block.indptr;
        let indices = &block.indices;
        let isa = self.row_isa;
        let col = layout.mean_col(dim);
        self.pool.install(|| {
            out.par_chunks_mut(layout.width(dim))
                .enumerate()
                .with_min_len(8)
                .for_each(|(v, row)| {
                    let (own, mean) = row.split_at_mut(col);
                    if col > 0 {
                        // The destination's own row, read in order while its neighbours' are
                        // read at random.
                        own.copy_from_slice(&h_src[v * dim..(v + 1) * dim]);
                    }
                    let (s, e) = (indptr[v] as usize, indptr[v + 1] as usize);
                    if dim <= FWD_PREFETCH_MAX_DIM {
                        // The rows of the edges FWD_AHEAD_EDGES past this destination's.
                        let n = indices.len();
                        let ahead = (s + FWD_AHEAD_EDGES).min(n)..(e + FWD_AHEAD_EDGES).min(n);
                        for &u in &indices[ahead] {
                            prefetch(h_src.as_ptr().wrapping_add(u as usize * dim), dim, false);
                        }
                    }
                    mean_row(isa, mean, h_src, dim, indices, s, e);
                })
        });
        Ok(())
    }

    fn mean_agg_bwd(
        &self,
        block: &DeviceBlock<Self>,
        layout: AggLayout,
        grad_out: &Vec<f32>,
        dim: usize,
        grad_src: &mut Vec<f32>,
    ) -> Result<()> {
        checks::mean_agg_bwd(block, layout, dim, grad_out.len(), grad_src.len())?;
        if dim == 0 {
            return Ok(());
        }
        let indptr = &block.indptr;
        let rev_indptr = &block.rev_indptr;
        let rev_edges = &block.rev_edges;
        let edge_dst = &block.edge_dst;
        let isa = self.row_isa;
        let (stride, col) = (layout.width(dim), layout.mean_col(dim));
        let num_dst = block.num_dst;
        let stream = self.streams_output(grad_src.len(), dim);
        let one_row = |u: usize, row: &mut [f32]| {
            let (s, e) = (rev_indptr[u] as usize, rev_indptr[u + 1] as usize);
            // Two stages: the edges' destinations two distances ahead, then, once those are in
            // cache, the gradient rows and degrees one distance ahead.
            let edges_of = |x: usize| {
                let x = x.min(rev_indptr.len() - 1);
                let end = (x + 1).min(rev_indptr.len() - 1);
                &rev_edges[rev_indptr[x] as usize..rev_indptr[end] as usize]
            };
            if dim <= BWD_PREFETCH_MAX_DIM {
                for &edge in edges_of(u + 2 * BWD_AHEAD) {
                    let at = edge_dst.as_ptr().wrapping_add(edge as usize);
                    prefetch(at as *const f32, 1, true);
                }
                for &edge in edges_of(u + BWD_AHEAD) {
                    let v = edge_dst[edge as usize] as usize;
                    prefetch(grad_out.as_ptr().wrapping_add(v * stride + col), dim, false);
                    prefetch(indptr.as_ptr().wrapping_add(v) as *const f32, 1, true);
                }
            }
            // The self term: a destination is also the source of its own row.
            let own = (col > 0 && u < num_dst).then(|| &grad_out[u * stride..][..dim]);
            let edges = RevEdges {
                indptr,
                rev_edges: &rev_edges[s..e],
                edge_dst,
                grad_stride: stride,
                grad_col: col,
                own,
                stream,
            };
            scatter_row(isa, row, grad_out, dim, &edges);
        };
        self.pool
            .install(|| for_each_row_task(grad_src, dim, stream, one_row));
        Ok(())
    }
}

/// Rows of an aggregation's output per parallel task: enough that the fence after a task's
/// streaming stores is paid rarely, few enough that a block of a few thousand rows still
/// spreads over the threads.
const ROWS_PER_TASK: usize = 32;

/// Runs `one_row(index, row)` for every `width`-wide row of `out` on the current pool, in
/// tasks of `ROWS_PER_TASK` rows; after a task whose rows were written with streaming stores,
/// fences them, so they are visible once the parallel loop returns.
fn for_each_row_task(
    out: &mut [f32],
    width: usize,
    stream: bool,
    one_row: impl Fn(usize, &mut [f32]) + Sync,
) {
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, rows)| {
            for (i, row) in rows.chunks_mut(width).enumerate() {
                one_row(task * ROWS_PER_TASK + i, row);
            }
            if stream {
                fence_streaming_stores();
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Memory;
    use crate::sample::block::Block;

    #[test]
    fn streamed_backward_rows_are_the_plain_ones() {
        // Sources with no edge, one and several; both layouts; widths with and without a tail
        // past the register block; 1 and 2 threads, so rows fenced on one worker are read back
        // on the caller.
        let (num_src, num_dst) = (300usize, 70usize);
        let mut indptr = vec![0u32];
        let mut indices = Vec::new();
        for v in 0..num_dst {
            for k in 0..(v % 6) {
                indices.push(((v * 37 + k * 101) % (num_src - 40)) as u32);
            }
            indptr.push(indices.len() as u32);
        }
        let block = Block::new((0..num_src as u64).collect(), num_dst, indptr, indices).unwrap();
        for threads in [1, 2] {
            for dim in [256usize, 300] {
                for layout in [AggLayout::Mean, AggLayout::SelfAndMean] {
                    let run = |stream_from: usize| {
                        let be = CpuBackend::new(threads)
                            .unwrap()
                            .with_streaming_stores_from(stream_from);
                        let db = DeviceBlock::upload(&be, &block).unwrap();
                        let width = layout.width(dim);
                        let grad: Vec<f32> = (0..num_dst * width)
                            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
                            .collect();
                        let grad = be.upload(&grad).unwrap();
                        let mut out = be.upload(&vec![f32::NAN; num_src * dim]).unwrap();
                        be.mean_agg_bwd(&db, layout, &grad, dim, &mut out).unwrap();
                        out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                    };
                    let plain = run(usize::MAX);
                    assert!(plain.iter().all(|&b| !f32::from_bits(b).is_nan()));
                    assert_eq!(run(0), plain, "{threads} threads, dim {dim}, {layout:?}");
                }
            }
        }
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
}
