//! `make bench-allreduce`: time of the gradient allreduce (`distributed::Comm::all_reduce_sum_f32`) for
//! the real gradient size of OGB's reference model, against the ring-allreduce model
//! `2 (N-1)/N * S / B`, and its share of a training step.
//!
//! The file name carries Open MPI's progress mode (`spin`, the default busy polling, or `yield`
//! with `OMPI_MCA_mpi_yield_when_idle=1`), so both can be compared in one report.
//!
//! Two modes:
//! - under `mpirun -np N`: every rank times the allreduce (the time of an iteration is the
//!   slowest rank's), and probes its own copy bandwidth `B` while all ranks copy at once (the
//!   bandwidth a rank really has when N ranks share the machine); rank 0 writes
//!   `bench/results/allreduce-np{N}-{spin|yield}.json`.
//! - `--report`: gathers the `allreduce-np*.json` files into the table, `allreduce.json`, the
//!   plot and the RESULTS.md section; a step time for the share is taken from
//!   `bench/results/train.json` (`make bench-train`) where it exists.
//!
//! The parameter count comes from `nn::Model::layout()` of the reference configuration: 3 SAGE
//! layers (mean) of width 256 on 128-dim input features, and a 3-layer link predictor.

#[path = "../bench/common.rs"]
mod common;

use std::time::Instant;

use common::*;
use shardsage::backend::CpuBackend;
use shardsage::distributed::Comm;
use shardsage::nn::{Model, ModelConfig, ParamInit, Task};

/// The flat parameter count of OGB's reference GraphSAGE for ogbl-citation2.
fn reference_params() -> BenchResult<usize> {
    let model = Model::<CpuBackend>::new(ModelConfig {
        task: Task::LinkPrediction,
        in_dim: 128,
        hidden: 256,
        num_layers: 3,
        dropout: 0.0,
        input_dropout: 0.0,
        predictor_layers: 3,
        num_classes: 0,
        init: ParamInit::default(),
    })?;
    Ok(model.layout().total_len())
}

/// Open MPI's progress mode: `yield` when `OMPI_MCA_mpi_yield_when_idle=1` (a waiting rank gives
/// its core away), else `spin` (the default unless mpirun sees more ranks than slots).
fn mpi_mode() -> &'static str {
    match std::env::var("OMPI_MCA_mpi_yield_when_idle").as_deref() {
        Ok("1") | Ok("true") => "yield",
        // Set to 0 (or unset, where the ranks fit the slots): busy polling.
        _ => "spin",
    }
}

fn measure(iters: usize) -> BenchResult<()> {
    let comm = Comm::init()?;
    let (rank, n) = (comm.rank(), comm.size());
    let params = reference_params()?;
    let bytes = params * 4;

    // Copy bandwidth of one single-threaded rank while every rank copies (64 MiB arrays, beyond
    // the L3 even when only one rank runs).
    let one = pool(1)?;
    let mut stream = Stream::new(64 << 20);
    comm.barrier();
    let (bw_here, _) = stream.copy_bandwidth(&one, 5);
    drop(stream);
    let mut bws = vec![bw_here; 1];
    let mut min_bw = bws.clone();
    comm.all_reduce_sum_f64(&mut bws);
    let mut neg = vec![-min_bw[0]];
    comm.all_reduce_max_f64(&mut neg);
    min_bw[0] = -neg[0];
    let mean_bw = bws[0] / n as f64;

    // The allreduce itself: warm-up, then `iters` timed iterations; an iteration's time is the
    // slowest rank's.
    let mut grad: Vec<f32> = (0..params).map(|i| (i % 13) as f32 * 1e-3).collect();
    for _ in 0..5 {
        comm.all_reduce_sum_f32(&mut grad);
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        comm.barrier();
        let t = Instant::now();
        comm.all_reduce_sum_f32(&mut grad);
        let mut s = [t.elapsed().as_secs_f64()];
        comm.all_reduce_max_f64(&mut s);
        times.push(s[0]);
    }
    if rank == 0 {
        let measured = median(&times);
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let p90 = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
        let ring_bytes = 2.0 * (n as f64 - 1.0) / n as f64 * bytes as f64;
        let model_s = ring_bytes / mean_bw;
        let json = serde_json::json!({
            "scenario": "allreduce",
            "meta": run_meta(),
            "world_size": n,
            "mpi_mode": mpi_mode(),
            "cores": all_threads(),
            "oversubscribed": n > all_threads(),
            "params": params,
            "bytes": bytes,
            "iters": iters,
            "seconds_median": measured,
            "seconds_p90": p90,
            "copy_bytes_per_s_per_rank_mean": mean_bw,
            "copy_bytes_per_s_per_rank_min": min_bw[0],
            "ring_bytes_per_rank": ring_bytes,
            "ring_model_seconds": model_s,
        });
        let p = write_json(&format!("allreduce-np{n}-{}", mpi_mode()), &json)?;
        println!(
            "np={n} ({}): {params} parameters ({:.2} MB): allreduce median {:.1} us, ring model {:.1} us \
             (copy {:.2} GB/s per rank with all ranks copying); wrote {}",
            mpi_mode(),
            bytes as f64 / 1e6,
            measured * 1e6,
            model_s * 1e6,
            mean_bw / GB,
            p.display()
        );
    }
    Ok(())
}

/// The median step time of `bench-train` at world size `n`, where that result exists.
fn train_step_seconds(n: usize) -> Option<f64> {
    let text = std::fs::read_to_string(results_dir().join("train.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["throughput"]
        .as_array()?
        .iter()
        .find(|r| r["world_size"].as_u64() == Some(n as u64))?["step_time_s_median"]
        .as_f64()
}

fn report() -> BenchResult<()> {
    let mut runs = Vec::new();
    for n in 2..=64 {
        for mode in ["spin", "yield"] {
            let p = results_dir().join(format!("allreduce-np{n}-{mode}.json"));
            if let Ok(text) = std::fs::read_to_string(&p) {
                runs.push(serde_json::from_str::<serde_json::Value>(&text)?);
            }
        }
    }
    if runs.is_empty() {
        return Err(
            "no bench/results/allreduce-np*.json: run the mpirun measurements first".into(),
        );
    }
    let meta = run_meta();
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for r in &runs {
        let n = r["world_size"].as_u64().unwrap_or(0) as usize;
        let measured = r["seconds_median"].as_f64().unwrap_or(f64::NAN);
        let model = r["ring_model_seconds"].as_f64().unwrap_or(f64::NAN);
        let step = train_step_seconds(n);
        let share = step.map(|s| measured / s);
        rows.push(vec![
            r["mpi_mode"].as_str().unwrap_or("").to_string(),
            format!(
                "{n}{}",
                if r["oversubscribed"].as_bool() == Some(true) {
                    " (oversubscribed)"
                } else {
                    ""
                }
            ),
            format!("{:.2}", r["bytes"].as_f64().unwrap_or(0.0) / 1e6),
            format!("{:.1}", measured * 1e6),
            format!("{:.1}", r["seconds_p90"].as_f64().unwrap_or(f64::NAN) * 1e6),
            format!("{:.1}", model * 1e6),
            format!("{:.1}", measured / model),
            format!(
                "{:.2}",
                r["copy_bytes_per_s_per_rank_mean"].as_f64().unwrap_or(0.0) / GB
            ),
            step.map(|s| format!("{:.3}", s)).unwrap_or("n/a".into()),
            share
                .map(|s| format!("{:.2}%", 100.0 * s))
                .unwrap_or("n/a".into()),
        ]);
        out.push(serde_json::json!({
            "world_size": n,
            "measurement": r,
            "measured_over_model": measured / model,
            "train_step_seconds": step,
            "share_of_step": share,
        }));
    }
    let tbl = table(
        &[
            "MPI wait",
            "ranks",
            "MB",
            "median us",
            "p90 us",
            "ring model us",
            "measured/model",
            "copy GB/s/rank",
            "step s",
            "share of step",
        ],
        &rows,
    );
    println!("{tbl}");
    let params = runs[0]["params"].as_u64().unwrap_or(0);
    let json = serde_json::json!({"scenario": "allreduce", "meta": meta, "runs": out});
    let jpath = write_json("allreduce", &json)?;
    let svg = results_dir().join("allreduce.svg");
    let cats: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} ranks, {}",
                r["world_size"],
                r["mpi_mode"].as_str().unwrap_or("")
            )
        })
        .collect();
    bar_chart(
        &svg,
        &format!("Gradient allreduce of {params} f32 parameters"),
        "microseconds",
        &cats,
        &[
            (
                "measured (median)".into(),
                runs.iter()
                    .map(|r| r["seconds_median"].as_f64().unwrap_or(f64::NAN) * 1e6)
                    .collect(),
            ),
            (
                "ring model 2(N-1)/N*S/B".into(),
                runs.iter()
                    .map(|r| r["ring_model_seconds"].as_f64().unwrap_or(f64::NAN) * 1e6)
                    .collect(),
            ),
        ],
        None,
    )?;
    let cores = all_threads();
    update_results_md(
        "bench-allreduce",
        &format!(
            "## Gradient allreduce (`make bench-allreduce`)\n\n{}\n\n\
             `Comm::all_reduce_sum_f32` over the flat gradient of OGB's reference model \
             ({params} parameters from `Model::layout()`, {:.2} MB), under `mpirun -np N` on this \
             {cores}-core machine (Open MPI, shared-memory transport; more ranks than cores are \
             oversubscribed, so ranks time-share cores). Median of the slowest rank's time over \
             the timed iterations. `MPI wait`: `spin` sets `OMPI_MCA_mpi_yield_when_idle=0` \
             (busy polling: Open MPI's default when ranks fit the slots, forced here for 4 \
             ranks too), `yield` sets it to 1 (a waiting rank gives its core away; Open MPI \
             picks this by itself when mpirun sees more ranks than slots). The machine is \
             shared with other work, so a spinning rank often waits for a peer that is not \
             running: the p90 column shows how wide the spread is. Ring model: `2(N-1)/N * S / B` with `B` the copy bandwidth of \
             one single-threaded rank measured while all N ranks copy at once. The step time is \
             the median training step of `make bench-train` at the same N (n/a before it ran).\n\n\
             {tbl}\nPlot: `bench/results/allreduce.svg`; data: `bench/results/allreduce.json`.\n",
            meta_line(&meta),
            params as f64 * 4.0 / 1e6
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    Ok(())
}

fn main() -> BenchResult<()> {
    if std::env::args().any(|a| a == "--report") {
        return report();
    }
    let iters: usize = arg("--iters").and_then(|v| v.parse().ok()).unwrap_or(200);
    measure(iters)
}
