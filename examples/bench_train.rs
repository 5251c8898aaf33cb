//! `make bench-train`: end-to-end training with `mpirun -np W shardsage train` for W = 1, 2, 4
//! on a generated citation graph (OGB's reference configuration: 3 SAGE layers of 256, fan-outs
//! 15,10,5, batches of 512 positive edges over all ranks, one negative each, Adam lr 0.0005),
//! capped at `--steps` steps: steps/s, positive edges/s, the time split per phase (from the step
//! records of RUN_DIR/metrics.jsonl), bytes exchanged per step and peak RSS per rank.
//!
//! Then the memory scenario: a graph whose features dominate (`--mem-dim` wide features) trained
//! for a few steps at each W; peak RSS per rank against W = 1's.
//!
//! Options: `--nodes N` (200000), `--steps N` (30), `--worlds 1,2,4`, `--mem-nodes N` (400000),
//! `--mem-dim N` (256), `--mem-steps N` (4). Datasets are cached under `bench/.data/`; runs go
//! to `bench/runs/` (both gitignored).

#[path = "../bench/common.rs"]
mod common;
#[path = "../bench/runner.rs"]
mod runner;

use common::*;
use runner::*;

/// Warm-up steps left out of the medians (first-touch allocations, feature cache filling).
const WARMUP: usize = 3;
const PHASES: [&str; 5] = ["sample", "gather", "compute", "allreduce", "update"];

fn main() -> BenchResult<()> {
    maybe_wrap();
    let nodes = arg_usize("--nodes", 200_000);
    let steps = arg_usize("--steps", 30);
    let worlds = arg_list("--worlds", &[1, 2, 4]);
    let mem_nodes = arg_usize("--mem-nodes", 400_000);
    let mem_dim = arg_usize("--mem-dim", 256);
    let mem_steps = arg_usize("--mem-steps", 4);
    let parts = worlds.iter().copied().fold(1, lcm);
    let meta = run_meta();
    let runs = repo_root().join("bench").join("runs");

    // ---- throughput ----
    // 100 fixed negatives per held-out edge (not OGB's 1000): the final evaluation, which this
    // benchmark does not time, then costs a tenth.
    let name = format!("cit-{}k-n100", nodes / 1000);
    let dataset = ensure_dataset(
        &name,
        &[
            "--nodes".into(),
            nodes.to_string(),
            "--num-neg".into(),
            "100".into(),
        ],
    )?;
    let data = ensure_parts(&dataset, &name, parts)?;
    let train_args = |steps: usize| -> Vec<String> {
        [
            "--epochs",
            "1",
            "--steps-per-epoch",
            &steps.to_string(),
            "--batch-size",
            "512",
            "--eval-every",
            "0",
            "--log-every",
            "10",
            "--device",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut outcomes = Vec::new();
    for &w in &worlds {
        let o = train(
            w,
            &data,
            &runs.join(format!("train-w{w}")),
            &train_args(steps),
        )?;
        if o.steps.len() < WARMUP + 2 {
            return Err(format!("W={w}: only {} step records", o.steps.len()).into());
        }
        outcomes.push(o);
    }
    let mut rows = Vec::new();
    let mut split_rows = Vec::new();
    let mut thr_json = Vec::new();
    for o in &outcomes {
        let step_s = o.step_median("step_time_s", WARMUP);
        let bytes = o.step_median("bytes_exchanged_sum", WARMUP);
        let hit = o.step_median("feature_cache_hit_rate", WARMUP);
        let rss_max = o.rss_per_rank.iter().copied().max().unwrap_or(0) as f64;
        rows.push(vec![
            o.world.to_string(),
            format!("{:.2}", 1.0 / step_s),
            format!("{:.0}", 512.0 / step_s),
            format!("{:.3}", step_s),
            format!("{:.2}", bytes / 1e6),
            format!("{:.2}", hit),
            mib(rss_max),
            format!("{:.0}", o.wall_s),
        ]);
        let mut phases = serde_json::Map::new();
        let mut cells = vec![o.world.to_string()];
        for p in PHASES {
            let max = o.step_median(&format!("time_{p}_max_s"), WARMUP);
            let sum = o.step_median(&format!("time_{p}_sum_s"), WARMUP);
            cells.push(format!("{:.3} ({:.0}%)", max, 100.0 * max / step_s));
            phases.insert(
                p.to_string(),
                serde_json::json!({"max_s_median": max, "sum_s_median": sum}),
            );
        }
        split_rows.push(cells);
        thr_json.push(serde_json::json!({
            "world_size": o.world,
            "steps": o.steps.len(),
            "step_time_s_median": step_s,
            "steps_per_s": 1.0 / step_s,
            "positive_edges_per_s": 512.0 / step_s,
            "bytes_exchanged_per_step_median": bytes,
            "feature_cache_hit_rate_median": hit,
            "phases": phases,
            "peak_rss_bytes_per_rank": o.rss_per_rank,
            "wall_s": o.wall_s,
            "valid_mrr": o.last_eval("valid", "mrr"),
        }));
    }
    // ---- the step against its GEMMs alone ----
    // The rate of the SAGE products (forward, weight and input gradients at K = 2·in for in =
    // 128 and 256, the model's layers) on one rank's threads with the library the runs used
    // (`--cpu-gemm auto`), measured right after the runs; the bound is the step's GEMM FLOPs
    // on the slowest rank at that rate.
    let mut bound_rows = Vec::new();
    for (o, thr) in outcomes.iter().zip(thr_json.iter_mut()) {
        let threads = (all_threads() / o.world).max(1);
        let (probed, lib) = sage_gemm_rate(threads)?;
        // Ranks beyond the cores time-share them: a rank gets that share of its threads' rate.
        let share = (all_threads() as f64 / (o.world * threads) as f64).min(1.0);
        let rate = probed * share;
        let flops = o.step_median("gemm_flops_sum", WARMUP) / o.world as f64;
        let step_s = o.step_median("step_time_s", WARMUP);
        let gemm_in_step = o.step_median("time_gemm_max_s", WARMUP);
        let bound = flops / rate;
        let prepare =
            o.step_median("time_sample_max_s", WARMUP) + o.step_median("time_gather_max_s", WARMUP);
        let exposed = o.step_median("time_exposed_prepare_max_s", WARMUP);
        let hidden = if prepare > 0.0 {
            (1.0 - exposed / prepare).max(0.0)
        } else {
            f64::NAN
        };
        bound_rows.push(vec![
            o.world.to_string(),
            lib.clone(),
            format!("{:.1}", flops / 1e9),
            format!("{:.1}", rate / 1e9),
            format!("{bound:.3}"),
            format!("{gemm_in_step:.3}"),
            format!("{step_s:.3}"),
            format!("{:.2}", step_s / bound),
            format!("{prepare:.3}"),
            format!("{exposed:.3}"),
            format!("{:.0}%", 100.0 * hidden),
        ]);
        thr["gemm_bound"] = serde_json::json!({
            "library": lib, "threads_per_rank": threads, "probed_rate_flops_per_s": probed,
            "core_share": share,
            "gemm_flops_per_rank_median": flops, "gemm_rate_flops_per_s": rate,
            "gemm_bound_s": bound, "gemm_in_step_s_median": gemm_in_step,
            "step_over_bound": step_s / bound,
            "prepare_s_median": prepare, "exposed_prepare_s_median": exposed,
            "prepare_hidden_share": hidden,
        });
    }
    let bound_table = table(
        &[
            "W",
            "gemm",
            "GFLOP/step/rank",
            "GEMM GFLOP/s",
            "GEMM bound s",
            "GEMM in step s",
            "step s",
            "step / bound",
            "prepare s",
            "exposed s",
            "hidden",
        ],
        &bound_rows,
    );
    println!("the step against its GEMMs alone:\n{bound_table}");

    let thr_table = table(
        &[
            "W",
            "steps/s",
            "pos edges/s",
            "step s",
            "MB exchanged/step",
            "cache hit",
            "max RSS MiB",
            "wall s",
        ],
        &rows,
    );
    let mut hdr = vec!["W"];
    hdr.extend(PHASES.iter().copied());
    let split_table = table(&hdr, &split_rows);
    println!("training throughput ({name}, {steps} steps, median after {WARMUP} warm-up steps):\n{thr_table}");
    println!("time per phase, slowest rank (share of the step):\n{split_table}");

    // ---- memory: features dominate ----
    let mem_name = format!("cit-{}k-f{mem_dim}", mem_nodes / 1000);
    let mem_dataset = ensure_dataset(
        &mem_name,
        &[
            "--nodes".into(),
            mem_nodes.to_string(),
            "--feature-dim".into(),
            mem_dim.to_string(),
            "--num-neg".into(),
            "10".into(),
        ],
    )?;
    let mem_data = ensure_parts(&mem_dataset, &mem_name, parts)?;
    let feature_bytes = (mem_nodes * mem_dim * 4) as f64;
    let mut mem_rows = Vec::new();
    let mut mem_json = Vec::new();
    let mut base = None;
    for &w in &worlds {
        let o = train(
            w,
            &mem_data,
            &runs.join(format!("mem-w{w}")),
            &train_args(mem_steps),
        )?;
        let max = o.rss_per_rank.iter().copied().max().unwrap_or(0) as f64;
        let mean = o.rss_per_rank.iter().sum::<u64>() as f64 / o.rss_per_rank.len().max(1) as f64;
        let b = *base.get_or_insert(max);
        mem_rows.push(vec![
            w.to_string(),
            o.rss_per_rank
                .iter()
                .map(|&r| mib(r as f64))
                .collect::<Vec<_>>()
                .join(" / "),
            mib(max),
            format!("{:.2}", max / b),
            format!("{:.2}", 1.0 / w as f64),
            mib(feature_bytes / w as f64),
        ]);
        mem_json.push(serde_json::json!({
            "world_size": w,
            "peak_rss_bytes_per_rank": o.rss_per_rank,
            "max_bytes": max,
            "mean_bytes": mean,
            "max_over_w1": max / b,
            "feature_bytes_per_rank": feature_bytes / w as f64,
        }));
    }
    let mem_table = table(
        &[
            "W",
            "peak RSS per rank (MiB)",
            "max MiB",
            "max / W=1",
            "1/W",
            "feature MiB per rank",
        ],
        &mem_rows,
    );
    println!("peak memory per rank ({mem_name}: {mem_nodes} nodes, {mem_dim}-dim features):\n{mem_table}");

    let json = serde_json::json!({
        "scenario": "train",
        "meta": meta,
        "dataset": {"name": name, "nodes": nodes, "parts": parts, "path": dataset},
        "steps_per_epoch": steps,
        "warmup_steps_skipped": WARMUP,
        "throughput": thr_json,
        "memory": {
            "dataset": mem_name, "nodes": mem_nodes, "feature_dim": mem_dim,
            "feature_bytes": feature_bytes, "steps": mem_steps, "runs": mem_json,
        },
    });
    let jpath = write_json("train", &json)?;
    let cats: Vec<String> = outcomes.iter().map(|o| format!("W={}", o.world)).collect();
    let svg = results_dir().join("train.svg");
    let series: Vec<(String, Vec<f64>)> = PHASES
        .iter()
        .map(|p| {
            (
                p.to_string(),
                outcomes
                    .iter()
                    .map(|o| o.step_median(&format!("time_{p}_max_s"), WARMUP) * 1e3)
                    .collect(),
            )
        })
        .chain(std::iter::once((
            "whole step".to_string(),
            outcomes
                .iter()
                .map(|o| o.step_median("step_time_s", WARMUP) * 1e3)
                .collect(),
        )))
        .collect();
    bar_chart(
        &svg,
        &format!("Training step time by phase ({name}, slowest rank)"),
        "ms per step",
        &cats,
        &series,
        None,
    )?;
    let mem_svg = results_dir().join("train-memory.svg");
    bar_chart(
        &mem_svg,
        &format!("Peak RSS per rank, {mem_nodes} nodes x {mem_dim}-dim features"),
        "MiB",
        &worlds.iter().map(|w| format!("W={w}")).collect::<Vec<_>>(),
        &[
            (
                "max over ranks".into(),
                mem_json
                    .iter()
                    .map(|r| r["max_bytes"].as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64)
                    .collect(),
            ),
            (
                "features per rank".into(),
                mem_json
                    .iter()
                    .map(|r| {
                        r["feature_bytes_per_rank"].as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64
                    })
                    .collect(),
            ),
        ],
        None,
    )?;
    let cores = all_threads();
    update_results_md(
        "bench-train",
        &format!(
            "## End-to-end training (`make bench-train`)\n\n{}\n\n\
             `mpirun -np W shardsage train` on a generated citation graph of {nodes} nodes \
             ({parts} parts, 100 fixed negatives per held-out edge; OGB's reference model and batch of 512 positive edges over all \
             ranks), {steps} steps, CPU backend. The machine has {cores} cores: W > {cores} ranks \
             are oversubscribed and share them, and the per-rank threads are the cores divided \
             among the ranks, so the total compute is the same at every W and these runs \
             measure the distribution overhead, not a speed-up. Medians over the steps after \
             {WARMUP} warm-up steps; times are the slowest rank's.\n\n{thr_table}\n\
             Time per phase (share of the step):\n\n{split_table}\n\
             The step against its GEMMs alone: the GEMM FLOPs of a step on the slowest rank, the \
             rate of the SAGE layers' products (forward and both gradients, K = 256 and 512, \
             {GEMM_ROWS} rows) on one rank's threads with the library the runs used (times the \
             share of a core a rank gets when the ranks oversubscribe the cores), the time \
             those FLOPs take at that rate (the bound), the GEMMs' own time inside the step, and \
             the batch preparation (sampling + gathering) and the part of it the step waited for \
             (`--pipeline auto`: on with an OpenBLAS / BLIS gemm when a rank has at least two threads and the ranks do not oversubscribe the cores):\n\n{bound_table}\n\
             Peak RSS per rank on a graph whose features dominate ({mem_nodes} nodes, \
             {mem_dim}-dim features = {} MiB, {mem_steps} steps plus the final evaluation):\n\n\
             {mem_table}\nPlots: `bench/results/train.svg`, `bench/results/train-memory.svg`; \
             data: `bench/results/train.json`.\n",
            meta_line(&meta),
            mib(feature_bytes)
        ),
    )?;
    println!(
        "wrote {}, {} and {}",
        jpath.display(),
        svg.display(),
        mem_svg.display()
    );
    Ok(())
}

/// Rows of the probed products: a 64 MiB operand at K = 512, past the caches, as in a step.
const GEMM_ROWS: usize = 32768;

/// FLOP/s of the SAGE layers' products on `threads` threads with the default library, and its
/// name: all six products' FLOPs over their summed median times.
fn sage_gemm_rate(threads: usize) -> BenchResult<(f64, String)> {
    use shardsage::backend::{CpuBackend, CpuGemm};
    let be = CpuBackend::new(threads)?.with_gemm(CpuGemm::Auto)?;
    let (rows, out) = (GEMM_ROWS, 256);
    let (mut flops, mut secs) = (0.0, 0.0);
    for k in [256usize, 512] {
        for (ta, tb, m, n, kk) in [
            (false, false, rows, out, k),
            (true, false, k, out, rows),
            (false, true, rows, k, out),
        ] {
            secs += gemm_seconds(&be, ta, tb, m, n, kk, 5)?;
            flops += 2.0 * (m * n * kk) as f64;
        }
    }
    Ok((flops / secs, be.gemm_name().to_string()))
}

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}
