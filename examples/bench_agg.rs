//! `make bench-agg`: effective memory bandwidth of the CPU backend's sampled mean aggregation
//! (`mean_agg_fwd` and `mean_agg_bwd`) as a share of the machine's copy bandwidth, measured side
//! by side in one run.
//!
//! Each case is a block whose source table (`num_src x dim` f32) is `--table-mib` (default 4x the
//! last-level cache, at least 256); every destination has exactly `degree` sources drawn
//! uniformly from the table, and there are `num_src / degree` destinations, so each source row is
//! read about once, as in a sampled block. Effective bytes are the feature rows read plus the rows
//! written: forward `4 * dim * (edges + num_dst)`, backward `4 * dim * (edges + num_src)` (the
//! backward overwrites every source row's gradient). Index arrays are not counted.
//!
//! The copy bandwidth each case is compared with is probed (same thread count, arrays of the
//! table's size) right before the case, so load from other processes on a shared machine hits
//! both sides of the ratio alike.
//!
//! Besides the backend's kernels, the forward pass is also timed with a reference kernel kept in
//! this benchmark only (`fwd_prefetch`): the same arithmetic in the same order, one element at a
//! time over whole rows, plus a software prefetch of the source rows a few edges ahead. The
//! backend's kernel (register blocks, no prefetch) should beat it: it shows what prefetching does
//! and does not buy on this machine.
//!
//! A plain `gather_rows` of the same rows (one output row per edge, counted as rows read +
//! written) gives the machine's random-row ceiling, which the forward pass cannot beat.
//!
//! Options: `--table-mib N`, `--reps N` (default 5), `--dims 64,128,...`, `--degrees 5,10,...`.

#[path = "../bench/common.rs"]
mod common;

use common::*;
use shardsage::backend::prelude::*;
use shardsage::backend::{CpuBackend, DeviceBlock};
use shardsage::sample::block::Block;
use shardsage::sample::rng::{below, hash};
use shardsage::util::last_level_cache_bytes;

use rayon::prelude::*;

/// Edges ahead whose source rows the reference kernel prefetches.
const PREFETCH_EDGES: usize = 8;

/// Reference forward mean aggregation with software prefetch (benchmark only): bit-identical to
/// `CpuBackend::mean_agg_fwd` (same per-row summation order).
fn fwd_prefetch(
    pool: &rayon::ThreadPool,
    indptr: &[u32],
    indices: &[u32],
    h_src: &[f32],
    dim: usize,
    out: &mut [f32],
) {
    pool.install(|| {
        out.par_chunks_mut(dim)
            .enumerate()
            .with_min_len(8)
            .for_each(|(v, row)| {
                let (s, e) = (indptr[v] as usize, indptr[v + 1] as usize);
                row.iter_mut().for_each(|x| *x = 0.0);
                for i in s..e {
                    if let Some(&ahead) = indices.get(i + PREFETCH_EDGES) {
                        prefetch_row(h_src, ahead as usize * dim, dim);
                    }
                    let u = indices[i] as usize;
                    for (o, x) in row.iter_mut().zip(&h_src[u * dim..(u + 1) * dim]) {
                        *o += *x;
                    }
                }
                if e > s {
                    let inv = 1.0f32 / (e - s) as f32;
                    row.iter_mut().for_each(|x| *x *= inv);
                }
            })
    });
}

#[inline(always)]
fn prefetch_row(data: &[f32], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (start + len).min(data.len());
        let mut i = start;
        while i < end {
            // SAFETY: the pointer is inside `data`; prefetch never faults and reads nothing.
            unsafe {
                std::arch::x86_64::_mm_prefetch(
                    data.as_ptr().add(i) as *const i8,
                    std::arch::x86_64::_MM_HINT_T0,
                );
            }
            i += 16; // one 64-byte line of f32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, start, len);
}

fn list(name: &str, default: &[usize]) -> Vec<usize> {
    arg(name)
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// A block with `num_dst` destinations of `degree` uniform random sources among `num_src`.
fn random_block(num_src: usize, num_dst: usize, degree: usize) -> BenchResult<Block> {
    let src_nodes: Vec<u64> = (0..num_src as u64).collect();
    let indptr: Vec<u32> = (0..=num_dst).map(|v| (v * degree) as u32).collect();
    let indices: Vec<u32> = (0..num_dst * degree)
        .map(|e| below(hash(7, 0, 0, degree as u64, e as u64, 0), num_src as u64) as u32)
        .collect();
    Ok(Block::new(src_nodes, num_dst, indptr, indices)?)
}

struct Case {
    threads: usize,
    dim: usize,
    degree: usize,
    fwd_bw: f64,
    bwd_bw: f64,
    fwd_prefetch_bw: f64,
    gather_bw: f64,
    copy_bw: f64,
}

fn main() -> BenchResult<()> {
    // At least 4x the last-level cache, so that the table's rows come from DRAM on any machine
    // (a 480 MB L3 holds a 256 MiB table whole).
    let llc = last_level_cache_bytes();
    let table_mib: usize = arg("--table-mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| (4 * llc).div_ceil(1 << 20).max(256));
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(5);
    let dims = list("--dims", &[64, 128, 256, 512]);
    let degrees = list("--degrees", &[5, 10, 25, 50]);
    let meta = run_meta();
    let all = all_threads();
    let mut thread_counts = vec![1];
    if all > 1 {
        thread_counts.push(all);
    }

    let mut stream = Stream::new(table_mib << 20);
    let pools: Vec<rayon::ThreadPool> = thread_counts
        .iter()
        .map(|&t| pool(t))
        .collect::<BenchResult<_>>()?;
    let mut copy_all: Vec<Vec<f64>> = vec![Vec::new(); thread_counts.len()];

    let mut cases = Vec::new();
    for &dim in &dims {
        let num_src = (table_mib << 20) / (dim * 4);
        let h_src_host: Vec<f32> = (0..num_src * dim).map(|i| (i % 97) as f32 * 0.01).collect();
        for &degree in &degrees {
            let num_dst = num_src / degree;
            let block = random_block(num_src, num_dst, degree)?;
            let edges = block.num_edges();
            for (ti, &threads) in thread_counts.iter().enumerate() {
                let be = CpuBackend::new(threads)?;
                let db = DeviceBlock::upload(&be, &block)?;
                let h_src = be.upload(&h_src_host)?;
                let mut out = be.zeros(num_dst * dim)?;
                let grad_out = be.upload(&vec![0.5f32; num_dst * dim])?;
                let mut grad_src = be.zeros(num_src * dim)?;
                let mut err = None;
                let fwd = time_reps(reps, || {
                    if let Err(e) = be.mean_agg_fwd(&db, AggLayout::Mean, &h_src, dim, &mut out) {
                        err = Some(e);
                    }
                });
                let bwd = time_reps(reps, || {
                    if let Err(e) =
                        be.mean_agg_bwd(&db, AggLayout::Mean, &grad_out, dim, &mut grad_src)
                    {
                        err = Some(e);
                    }
                });
                if let Some(e) = err {
                    return Err(e.into());
                }
                let mut out_ref = vec![0f32; num_dst * dim];
                let fwd_ref = time_reps(reps, || {
                    fwd_prefetch(
                        &pools[ti],
                        &block.indptr,
                        &block.indices,
                        &h_src_host,
                        dim,
                        &mut out_ref,
                    )
                });
                if out_ref != be.download(&out)? {
                    return Err(
                        "the prefetching reference kernel disagrees with mean_agg_fwd".into(),
                    );
                }
                // The random-access ceiling: `gather_rows` of the same source rows (one output
                // row per edge), counted as rows read + written.
                let rows = be.upload_u32(&block.indices)?;
                let mut gathered = be.zeros(edges * dim)?;
                let gather = time_reps(reps, || {
                    if let Err(e) = be.gather_rows(&h_src, dim, &rows, &mut gathered) {
                        err = Some(e);
                    }
                });
                if let Some(e) = err {
                    return Err(e.into());
                }
                drop(gathered);
                // The copy bandwidth of the same threads, probed right after this case.
                let (copy_bw, _) = stream.copy_bandwidth(&pools[ti], 3);
                copy_all[ti].push(copy_bw);
                let fwd_bytes = 4.0 * dim as f64 * (edges + num_dst) as f64;
                let bwd_bytes = 4.0 * dim as f64 * (edges + num_src) as f64;
                cases.push(Case {
                    threads,
                    dim,
                    degree,
                    fwd_bw: fwd_bytes / median(&fwd),
                    bwd_bw: bwd_bytes / median(&bwd),
                    fwd_prefetch_bw: fwd_bytes / median(&fwd_ref),
                    gather_bw: 8.0 * dim as f64 * edges as f64 / median(&gather),
                    copy_bw,
                });
            }
        }
    }

    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            vec![
                c.threads.to_string(),
                c.dim.to_string(),
                c.degree.to_string(),
                format!("{:.2}", c.fwd_bw / GB),
                format!("{:.0}%", 100.0 * c.fwd_bw / c.copy_bw),
                format!("{:.2}", c.bwd_bw / GB),
                format!("{:.0}%", 100.0 * c.bwd_bw / c.copy_bw),
                format!("{:.0}%", 100.0 * c.fwd_prefetch_bw / c.copy_bw),
                format!("{:.0}%", 100.0 * c.gather_bw / c.copy_bw),
                format!("{:.2}", c.copy_bw / GB),
            ]
        })
        .collect();
    let tbl = table(
        &[
            "threads",
            "dim",
            "degree",
            "fwd GB/s",
            "fwd/copy",
            "bwd GB/s",
            "bwd/copy",
            "fwd+prefetch/copy",
            "gather_rows/copy",
            "copy GB/s",
        ],
        &rows,
    );
    println!("mean aggregation, {table_mib} MiB source table, median of {reps}:\n{tbl}");
    let share = |t: usize, f: &dyn Fn(&Case) -> f64| {
        let v: Vec<f64> = cases
            .iter()
            .filter(|c| c.threads == t)
            .map(|c| f(c) / c.copy_bw)
            .collect();
        (median(&v), v.iter().copied().fold(f64::MAX, f64::min))
    };
    let mut summary = String::new();
    for &t in &thread_counts {
        let (fm, fmin) = share(t, &|c| c.fwd_bw);
        let (bm, bmin) = share(t, &|c| c.bwd_bw);
        let (pm, _) = share(t, &|c| c.fwd_prefetch_bw);
        let (gm, _) = share(t, &|c| c.gather_bw);
        summary.push_str(&format!(
            "- {t} thread(s): forward median {:.0}% of copy bandwidth (lowest {:.0}%), backward \
             median {:.0}% (lowest {:.0}%); the prefetching reference forward median {:.0}%; a \
             plain random-row gather (`gather_rows`) of the same rows median {:.0}%.\n",
            100.0 * fm,
            100.0 * fmin,
            100.0 * bm,
            100.0 * bmin,
            100.0 * pm,
            100.0 * gm
        ));
    }
    print!("{summary}");

    let json = serde_json::json!({
        "scenario": "agg",
        "meta": meta,
        "table_bytes": table_mib << 20,
        "last_level_cache_bytes": llc,
        "reps": reps,
        "copy_bytes_per_s": thread_counts.iter().zip(&copy_all)
            .map(|(t, b)| serde_json::json!({"threads": t, "median": median(b), "per_case": b}))
            .collect::<Vec<_>>(),
        "cases": cases.iter().map(|c| serde_json::json!({
            "threads": c.threads, "dim": c.dim, "degree": c.degree,
            "fwd_bytes_per_s": c.fwd_bw, "bwd_bytes_per_s": c.bwd_bw,
            "fwd_prefetch_reference_bytes_per_s": c.fwd_prefetch_bw,
            "gather_rows_bytes_per_s": c.gather_bw, "copy_bytes_per_s": c.copy_bw,
            "fwd_share_of_copy": c.fwd_bw / c.copy_bw, "bwd_share_of_copy": c.bwd_bw / c.copy_bw,
        })).collect::<Vec<_>>(),
    });
    let jpath = write_json("agg", &json)?;

    // Plot: share of copy bandwidth at all threads, by (dim, degree), forward and backward.
    let t = *thread_counts.last().unwrap_or(&1);
    let sel: Vec<&Case> = cases.iter().filter(|c| c.threads == t).collect();
    let cats: Vec<String> = sel
        .iter()
        .map(|c| format!("{}/{}", c.dim, c.degree))
        .collect();
    let svg = results_dir().join("agg.svg");
    bar_chart(
        &svg,
        &format!("Mean aggregation, {t} threads: % of copy bandwidth (dim/degree)"),
        "% of copy bandwidth",
        &cats,
        &[
            (
                "forward".into(),
                sel.iter().map(|c| 100.0 * c.fwd_bw / c.copy_bw).collect(),
            ),
            (
                "backward".into(),
                sel.iter().map(|c| 100.0 * c.bwd_bw / c.copy_bw).collect(),
            ),
            (
                "forward with prefetch (reference)".into(),
                sel.iter()
                    .map(|c| 100.0 * c.fwd_prefetch_bw / c.copy_bw)
                    .collect(),
            ),
        ],
        Some((60.0, "60% target")),
    )?;
    update_results_md(
        "bench-agg",
        &format!(
            "## CPU mean aggregation vs copy bandwidth (`make bench-agg`)\n\n{}\n\n\
             Source table {table_mib} MiB ({:.1}x the {} MiB last-level cache), uniform random sources, \
             `num_src / degree` destinations; effective bytes = feature rows read + written; \
             median of {reps}. Copy bandwidth probed with the same threads right after each case \
             ({table_mib} MiB arrays). `fwd+prefetch`: a reference forward kernel kept in the \
             benchmark (same arithmetic and order, bit-identical output, plus software prefetch \
             of the source rows {PREFETCH_EDGES} edges ahead). `gather_rows`: the backend's \
             plain gather of the same rows into one output row per edge (no arithmetic), the \
             random-access ceiling of this machine.\n\n\
             {summary}\n{tbl}\nPlot: `bench/results/agg.svg`; data: `bench/results/agg.json`.\n",
            meta_line(&meta),
            (table_mib << 20) as f64 / llc.max(1) as f64,
            llc >> 20,
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    Ok(())
}
