//! GPU counterpart of `bench_agg` (run by `scripts/gpu-run.sh agg` on a machine with a GPU):
//! effective memory bandwidth of the CUDA backend's sampled mean aggregation (`mean_agg_fwd` and
//! `mean_agg_bwd`) as a share of the device's own copy bandwidth, measured side by side.
//!
//! The cases are `bench_agg`'s: a source table of `--table-mib` (default 2048, far beyond the
//! GPU's L2 cache), widths 64–512, `degree` uniform random sources per destination and
//! `num_src / degree` destinations, so each source row is read about once. Effective bytes are the
//! feature rows read plus the rows written: forward `4 * dim * (edges + num_dst)`, backward
//! `4 * dim * (edges + num_src)`; index arrays are not counted. A plain `gather_rows` of the same
//! rows (one output row per edge) gives the device's random-row ceiling.
//!
//! Copy bandwidth: `Backend::copy` of a whole table-sized buffer (device to device), counted as
//! read + write, probed right after each case. Each timing is `--inner` back-to-back launches
//! followed by `Backend::synchronize`, divided by `--inner`; medians of `--reps`.
//!
//! The first rows of every case's forward and backward output are checked against a host
//! computation. A case that disagrees is still measured (a GPU session is scarce), but the
//! report says its figures are of wrong results and the program exits non-zero.
//!
//! Writes `bench/results/gpu-agg.json`, `gpu-agg.svg` and the `bench-gpu-agg` section of
//! `bench/RESULTS.md`. Without a usable GPU it stops with the reason.
//!
//! Options: `--table-mib N` (2048), `--reps N` (10), `--inner N` (5), `--dims 64,128,...`,
//! `--degrees 5,10,...`.

#[path = "../bench/common.rs"]
mod common;

use std::time::Instant;

use common::*;
use rayon::prelude::*;
use shardsage::backend::cuda::CudaBackend;
use shardsage::backend::prelude::*;
use shardsage::backend::DeviceBlock;
use shardsage::sample::block::Block;
use shardsage::sample::rng::{below, hash};

/// The aim for aggregation on the GPU, as a share of the copy bandwidth.
const AIM: f64 = 0.70;
/// Rows of each output checked against the host, and the largest relative difference allowed
/// (the tests' tolerance; the kernels follow the CPU's order, so it is expected to be 0).
const CHECK_ROWS: usize = 512;
const TOLERANCE: f64 = 1e-5;

fn list(name: &str, default: &[usize]) -> Vec<usize> {
    arg(name)
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// The CUDA backend, or an error that says why there is none.
fn gpu() -> BenchResult<CudaBackend> {
    CudaBackend::try_new().map_err(|e| {
        format!("this benchmark needs a CUDA GPU, and there is none usable: {e}").into()
    })
}

/// Seconds per call of `f`: one warm-up call, then `reps` times `inner` calls and a
/// synchronisation (kernels are asynchronous; only the synchronisation waits for them).
fn time_gpu(
    be: &CudaBackend,
    reps: usize,
    inner: usize,
    mut f: impl FnMut() -> shardsage::Result<()>,
) -> BenchResult<Vec<f64>> {
    f()?;
    be.synchronize()?;
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..inner {
            f()?;
        }
        be.synchronize()?;
        out.push(t.elapsed().as_secs_f64() / inner as f64);
    }
    Ok(out)
}

/// A block with `num_dst` destinations of `degree` uniform random sources among `num_src`
/// (the same draws as `bench_agg`).
fn random_block(num_src: usize, num_dst: usize, degree: usize) -> BenchResult<Block> {
    let src_nodes: Vec<u64> = (0..num_src as u64).collect();
    let indptr: Vec<u32> = (0..=num_dst).map(|v| (v * degree) as u32).collect();
    let indices: Vec<u32> = (0..num_dst * degree)
        .into_par_iter()
        .map(|e| below(hash(7, 0, 0, degree as u64, e as u64, 0), num_src as u64) as u32)
        .collect();
    Ok(Block::new(src_nodes, num_dst, indptr, indices)?)
}

/// The first `n` elements of a device buffer (copied on the device first, so checking a few rows
/// does not download gigabytes).
fn head(be: &CudaBackend, buf: &<CudaBackend as Memory>::F, n: usize) -> BenchResult<Vec<f32>> {
    let n = n.min(be.len(buf));
    let mut small = be.zeros(n)?;
    be.copy((buf, 0), (&mut small, 0), n)?;
    Ok(be.download(&small)?)
}

/// Largest relative difference between `got` and `want` (relative to the largest magnitude).
fn max_rel_diff(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs())) as f64;
    got.iter()
        .zip(want)
        .map(|(a, b)| ((a - b).abs() as f64) / scale)
        .fold(0.0, f64::max)
}

/// The largest relative differences of the first rows of the forward and backward outputs from
/// the host's computation.
fn check_outputs(
    block: &Block,
    dim: usize,
    h_src: &[f32],
    grad_out: &[f32],
    out: &[f32],
    grad_src: &[f32],
) -> (f64, f64) {
    let rows = CHECK_ROWS.min(block.num_dst);
    let mut want = vec![0f32; rows * dim];
    for v in 0..rows {
        let row = &mut want[v * dim..(v + 1) * dim];
        for &u in block.neighbors(v) {
            let u = u as usize;
            for (o, x) in row.iter_mut().zip(&h_src[u * dim..(u + 1) * dim]) {
                *o += *x;
            }
        }
        let deg = block.degree(v);
        if deg > 0 {
            let inv = 1.0f32 / deg as f32;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
    let fwd = max_rel_diff(&out[..rows * dim], &want);
    let rows = CHECK_ROWS.min(block.num_src());
    let mut want = vec![0f32; rows * dim];
    for u in 0..rows {
        let row = &mut want[u * dim..(u + 1) * dim];
        for &e in &block.rev_edges[block.rev_indptr[u] as usize..block.rev_indptr[u + 1] as usize] {
            let v = block.edge_dst[e as usize] as usize;
            let inv = 1.0f32 / block.degree(v) as f32;
            for (o, g) in row.iter_mut().zip(&grad_out[v * dim..(v + 1) * dim]) {
                *o += *g * inv;
            }
        }
    }
    let bwd = max_rel_diff(&grad_src[..rows * dim], &want);
    (fwd, bwd)
}

struct Case {
    dim: usize,
    degree: usize,
    fwd_diff: f64,
    bwd_diff: f64,
    fwd_bw: f64,
    bwd_bw: f64,
    gather_bw: f64,
    copy_bw: f64,
}

fn main() -> BenchResult<()> {
    // Info lines: the device chosen and the NVRTC compile time.
    shardsage::runtime::init_logging();
    let table_mib: usize = arg("--table-mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(10);
    let inner: usize = arg("--inner").and_then(|v| v.parse().ok()).unwrap_or(5);
    let dims = list("--dims", &[64, 128, 256, 512]);
    let degrees = list("--degrees", &[5, 10, 25, 50]);
    let be = gpu()?;
    let device = be.name();
    println!("device: {device}");
    let meta = run_meta();
    let started = Instant::now();

    let mut cases = Vec::new();
    for &dim in &dims {
        let num_src = (table_mib << 20) / (dim * 4);
        let h_src_host: Vec<f32> = (0..num_src * dim)
            .into_par_iter()
            .map(|i| (i % 97) as f32 * 0.01)
            .collect();
        let h_src = be.upload(&h_src_host)?;
        let mut grad_src = be.zeros(num_src * dim)?;
        for &degree in &degrees {
            let num_dst = num_src / degree;
            let block = random_block(num_src, num_dst, degree)?;
            let edges = block.num_edges();
            let db = DeviceBlock::upload(&be, &block)?;
            let mut out = be.zeros(num_dst * dim)?;
            let grad_out_host: Vec<f32> = (0..num_dst * dim)
                .into_par_iter()
                .map(|i| (i % 89) as f32 * 0.01 - 0.4)
                .collect();
            let grad_out = be.upload(&grad_out_host)?;
            let fwd = time_gpu(&be, reps, inner, || {
                be.mean_agg_fwd(&db, AggLayout::Mean, &h_src, dim, &mut out)
            })?;
            let bwd = time_gpu(&be, reps, inner, || {
                be.mean_agg_bwd(&db, AggLayout::Mean, &grad_out, dim, &mut grad_src)
            })?;
            let (fwd_diff, bwd_diff) = check_outputs(
                &block,
                dim,
                &h_src_host,
                &grad_out_host,
                &head(&be, &out, CHECK_ROWS * dim)?,
                &head(&be, &grad_src, CHECK_ROWS * dim)?,
            );
            if fwd_diff > TOLERANCE || bwd_diff > TOLERANCE {
                // Measured all the same (a GPU session is scarce), but reported and failed.
                eprintln!(
                    "ERROR: dim {dim} degree {degree}: GPU aggregation disagrees with the host: \
                     forward max relative difference {fwd_diff:.2e}, backward {bwd_diff:.2e}"
                );
            }
            drop((out, grad_out));
            // The random-row ceiling: the same source rows gathered, one output row per edge.
            let rows = be.upload_u32(&block.indices)?;
            let mut gathered = be.zeros(edges * dim)?;
            let gather = time_gpu(&be, reps, inner, || {
                be.gather_rows(&h_src, dim, &rows, &mut gathered)
            })?;
            drop((gathered, rows, db));
            // Device copy bandwidth, probed right after the case on table-sized buffers
            // (`grad_src` is overwritten by the next backward anyway).
            let n = num_src * dim;
            let copy = time_gpu(&be, reps, inner, || {
                be.copy((&h_src, 0), (&mut grad_src, 0), n)
            })?;
            let copy_bw = 8.0 * n as f64 / median(&copy);
            let fwd_bytes = 4.0 * dim as f64 * (edges + num_dst) as f64;
            let bwd_bytes = 4.0 * dim as f64 * (edges + num_src) as f64;
            let c = Case {
                dim,
                degree,
                fwd_diff,
                bwd_diff,
                fwd_bw: fwd_bytes / median(&fwd),
                bwd_bw: bwd_bytes / median(&bwd),
                gather_bw: 8.0 * dim as f64 * edges as f64 / median(&gather),
                copy_bw,
            };
            println!(
                "dim {dim:>3} degree {degree:>2}: forward {:.0} GB/s ({:.0}% of copy), backward \
                 {:.0} GB/s ({:.0}%), gather {:.0}%, copy {:.0} GB/s",
                c.fwd_bw / GB,
                100.0 * c.fwd_bw / c.copy_bw,
                c.bwd_bw / GB,
                100.0 * c.bwd_bw / c.copy_bw,
                100.0 * c.gather_bw / c.copy_bw,
                c.copy_bw / GB
            );
            cases.push(c);
        }
    }

    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            vec![
                c.dim.to_string(),
                c.degree.to_string(),
                format!("{:.0}", c.fwd_bw / GB),
                format!("{:.0}%", 100.0 * c.fwd_bw / c.copy_bw),
                format!("{:.0}", c.bwd_bw / GB),
                format!("{:.0}%", 100.0 * c.bwd_bw / c.copy_bw),
                format!("{:.0}%", 100.0 * c.gather_bw / c.copy_bw),
                format!("{:.0}", c.copy_bw / GB),
            ]
        })
        .collect();
    let tbl = table(
        &[
            "dim",
            "degree",
            "fwd GB/s",
            "fwd/copy",
            "bwd GB/s",
            "bwd/copy",
            "gather_rows/copy",
            "copy GB/s",
        ],
        &rows,
    );
    let shares =
        |f: &dyn Fn(&Case) -> f64| -> Vec<f64> { cases.iter().map(|c| f(c) / c.copy_bw).collect() };
    let fwd_shares = shares(&|c| c.fwd_bw);
    let bwd_shares = shares(&|c| c.bwd_bw);
    let gather_shares = shares(&|c| c.gather_bw);
    let lowest = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let copy_median = median(&cases.iter().map(|c| c.copy_bw).collect::<Vec<_>>());
    let wrong: Vec<String> = cases
        .iter()
        .filter(|c| c.fwd_diff > TOLERANCE || c.bwd_diff > TOLERANCE)
        .map(|c| format!("{}/{}", c.dim, c.degree))
        .collect();
    let largest_diff = cases
        .iter()
        .map(|c| c.fwd_diff.max(c.bwd_diff))
        .fold(0.0, f64::max);
    let checked = if wrong.is_empty() {
        format!(
            "The first {CHECK_ROWS} output rows of every case match the host (largest relative \
             difference {largest_diff:.1e})."
        )
    } else {
        format!(
            "**The outputs of cases {} (dim/degree) differ from the host beyond {TOLERANCE:.0e} \
             (largest relative difference {largest_diff:.1e}): these bandwidths are of wrong \
             results.**",
            wrong.join(", ")
        )
    };
    let summary = format!(
        "- forward: median {:.0}% of copy bandwidth (lowest {:.0}%), backward: median {:.0}% \
         (lowest {:.0}%); aim {:.0}%. A plain random-row gather (`gather_rows`) of the same rows: \
         median {:.0}%. Device copy bandwidth median {:.0} GB/s.\n",
        100.0 * median(&fwd_shares),
        100.0 * lowest(&fwd_shares),
        100.0 * median(&bwd_shares),
        100.0 * lowest(&bwd_shares),
        100.0 * AIM,
        100.0 * median(&gather_shares),
        copy_median / GB
    );
    println!("mean aggregation on {device}, {table_mib} MiB source table, median of {reps}:\n{tbl}{summary}");

    let json = serde_json::json!({
        "scenario": "gpu-agg",
        "meta": meta,
        "device": device,
        "table_bytes": table_mib << 20,
        "reps": reps,
        "launches_per_rep": inner,
        "aim_share_of_copy": AIM,
        "fwd_share_median": median(&fwd_shares),
        "bwd_share_median": median(&bwd_shares),
        "gather_share_median": median(&gather_shares),
        "copy_bytes_per_s_median": copy_median,
        "seconds_total": started.elapsed().as_secs_f64(),
        "outputs_match_host": wrong.is_empty(),
        "cases": cases.iter().map(|c| serde_json::json!({
            "dim": c.dim, "degree": c.degree,
            "fwd_bytes_per_s": c.fwd_bw, "bwd_bytes_per_s": c.bwd_bw,
            "gather_rows_bytes_per_s": c.gather_bw, "copy_bytes_per_s": c.copy_bw,
            "fwd_share_of_copy": c.fwd_bw / c.copy_bw, "bwd_share_of_copy": c.bwd_bw / c.copy_bw,
            "fwd_max_rel_diff_from_host": c.fwd_diff, "bwd_max_rel_diff_from_host": c.bwd_diff,
        })).collect::<Vec<_>>(),
    });
    let jpath = write_json("gpu-agg", &json)?;
    let cats: Vec<String> = cases
        .iter()
        .map(|c| format!("{}/{}", c.dim, c.degree))
        .collect();
    let svg = results_dir().join("gpu-agg.svg");
    bar_chart(
        &svg,
        &format!("GPU mean aggregation ({device}): % of copy bandwidth (dim/degree)"),
        "% of copy bandwidth",
        &cats,
        &[
            (
                "forward".into(),
                fwd_shares.iter().map(|s| 100.0 * s).collect(),
            ),
            (
                "backward".into(),
                bwd_shares.iter().map(|s| 100.0 * s).collect(),
            ),
            (
                "gather_rows".into(),
                gather_shares.iter().map(|s| 100.0 * s).collect(),
            ),
        ],
        Some((100.0 * AIM, "70% aim")),
    )?;
    update_results_md(
        "bench-gpu-agg",
        &format!(
            "## GPU mean aggregation vs device copy bandwidth (`scripts/gpu-run.sh agg`)\n\n{}\n\n\
             Device: {device}. Source table {table_mib} MiB (far beyond the L2 cache), uniform \
             random sources, `num_src / degree` destinations; effective bytes = feature rows \
             read + written; each timing is {inner} back-to-back launches and a synchronisation, \
             median of {reps}. Copy bandwidth: a device-to-device copy of a table-sized buffer \
             (`Backend::copy`), read + written, probed right after each case. `gather_rows`: the \
             backend's plain gather of the same rows, one output row per edge. {checked}\n\n\
             {summary}\n{tbl}\n\
             Plot: `bench/results/gpu-agg.svg`; data: `bench/results/gpu-agg.json`.\n",
            meta_line(&meta)
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    if !wrong.is_empty() {
        return Err(checked.into());
    }
    println!("{checked}");
    Ok(())
}
