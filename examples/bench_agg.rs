//! `make bench-agg`: effective memory bandwidth of the CPU backend's sampled mean aggregation
//! (`mean_agg_fwd` and `mean_agg_bwd`) as a share of the machine's copy bandwidth, measured side
//! by side in one run.
//!
//! Each case is a block whose source table (`num_src x dim` f32) is `--table-mib` (default 256,
//! far beyond the last-level cache); every destination has exactly `degree` sources drawn
//! uniformly from the table, and there are `num_src / degree` destinations, so each source row is
//! read about once, as in a sampled block. Effective bytes are the feature rows read plus the rows
//! written: forward `4 * dim * (edges + num_dst)`, backward `4 * dim * (edges + num_src)` (the
//! backward overwrites every source row's gradient). Index arrays are not counted.
//!
//! Options: `--table-mib N`, `--reps N` (default 5), `--dims 64,128,...`, `--degrees 5,10,...`.

#[path = "../bench/common.rs"]
mod common;

use common::*;
use shardsage::backend::{Backend, CpuBackend, DeviceBlock};
use shardsage::sample::block::Block;
use shardsage::sample::rng::{below, hash};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
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
    copy_bw: f64,
}

fn main() -> BenchResult<()> {
    let table_mib: usize = arg("--table-mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(5);
    let dims = list("--dims", &[64, 128, 256, 512]);
    let degrees = list("--degrees", &[5, 10, 25, 50]);
    let meta = run_meta();
    let all = all_threads();
    let mut thread_counts = vec![1];
    if all > 1 {
        thread_counts.push(all);
    }

    // The copy bandwidth per thread count, probed on arrays of the table's size in this run.
    let mut copy_bw = Vec::new();
    {
        let mut stream = Stream::new(table_mib << 20);
        for &t in &thread_counts {
            copy_bw.push(stream.copy_bandwidth(&pool(t)?, reps.max(5)).0);
        }
    }

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
                    if let Err(e) = be.mean_agg_fwd(&db, &h_src, dim, &mut out) {
                        err = Some(e);
                    }
                });
                let bwd = time_reps(reps, || {
                    if let Err(e) = be.mean_agg_bwd(&db, &grad_out, dim, &mut grad_src) {
                        err = Some(e);
                    }
                });
                if let Some(e) = err {
                    return Err(e.into());
                }
                let fwd_bytes = 4.0 * dim as f64 * (edges + num_dst) as f64;
                let bwd_bytes = 4.0 * dim as f64 * (edges + num_src) as f64;
                cases.push(Case {
                    threads,
                    dim,
                    degree,
                    fwd_bw: fwd_bytes / median(&fwd),
                    bwd_bw: bwd_bytes / median(&bwd),
                    copy_bw: copy_bw[ti],
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
        summary.push_str(&format!(
            "- {t} thread(s): forward median {:.0}% of copy bandwidth (lowest {:.0}%), backward \
             median {:.0}% (lowest {:.0}%).\n",
            100.0 * fm,
            100.0 * fmin,
            100.0 * bm,
            100.0 * bmin
        ));
    }
    print!("{summary}");

    let json = serde_json::json!({
        "scenario": "agg",
        "meta": meta,
        "table_bytes": table_mib << 20,
        "reps": reps,
        "copy_bytes_per_s": thread_counts.iter().zip(&copy_bw)
            .map(|(t, b)| serde_json::json!({"threads": t, "copy_bytes_per_s": b}))
            .collect::<Vec<_>>(),
        "cases": cases.iter().map(|c| serde_json::json!({
            "threads": c.threads, "dim": c.dim, "degree": c.degree,
            "fwd_bytes_per_s": c.fwd_bw, "bwd_bytes_per_s": c.bwd_bw,
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
        ],
        Some((60.0, "60% target")),
    )?;
    update_results_md(
        "bench-agg",
        &format!(
            "## CPU mean aggregation vs copy bandwidth (`make bench-agg`)\n\n{}\n\n\
             Source table {table_mib} MiB (beyond the L3), uniform random sources, \
             `num_src / degree` destinations; effective bytes = feature rows read + written; \
             median of {reps}. Copy bandwidth probed in the same run on {table_mib} MiB arrays.\n\n\
             {summary}\n{tbl}\nPlot: `bench/results/agg.svg`; data: `bench/results/agg.json`.\n",
            meta_line(&meta)
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    Ok(())
}
