//! `make bench-scaling`: workers x epochs -> training time and test MRR, with
//! `mpirun -np W shardsage train` on a generated citation graph split into 12 parts (divisible by
//! 2, 4 and 6).
//!
//! One run per W trains for the largest epoch count and evaluates on validation at every epoch
//! count of the grid; the checkpoint written at the end of each of those epochs is then scored
//! on the test split with `mpirun -np W shardsage eval`. Training time at E epochs is the sum of
//! the step times of the first E epochs (no start-up or evaluation).
//!
//! Options: `--nodes N` (30000), `--workers 2,4,6`, `--epochs 10,30`, `--steps N` (cap on steps
//! per epoch, 20; 0 = full epochs), `--parts N` (12).

#[path = "../bench/common.rs"]
mod common;
#[path = "../bench/runner.rs"]
mod runner;

use std::process::Command;

use common::*;
use runner::*;

fn main() -> BenchResult<()> {
    maybe_wrap();
    let nodes = arg_usize("--nodes", 30_000);
    let workers = arg_list("--workers", &[2, 4, 6]);
    let mut epoch_grid = arg_list("--epochs", &[10, 30]);
    epoch_grid.sort_unstable();
    let steps = arg_usize("--steps", 20);
    let parts = arg_usize("--parts", 12);
    if let Some(w) = workers.iter().find(|&&w| !parts.is_multiple_of(w)) {
        return Err(format!("--parts {parts} is not divisible by {w} workers").into());
    }
    let max_epochs = *epoch_grid.last().ok_or("--epochs is empty")?;
    let eval_every = epoch_grid.iter().copied().fold(0, gcd);
    let meta = run_meta();
    let runs_dir = repo_root().join("bench").join("runs");
    let name = format!("cit-{}k", nodes / 1000);
    let dataset = ensure_dataset(&name, &["--nodes".into(), nodes.to_string()])?;
    let data = ensure_parts(&dataset, &name, parts)?;
    let ds_meta = shardsage::graph::store::GraphPart::read_meta(&dataset)?;
    let bin = shardsage_bin()?;

    let mut cells = Vec::new();
    for &w in &workers {
        let run_dir = runs_dir.join(format!("scale-w{w}"));
        let args: Vec<String> = [
            "--epochs",
            &max_epochs.to_string(),
            "--steps-per-epoch",
            &steps.to_string(),
            "--batch-size",
            "512",
            "--eval-every",
            &eval_every.to_string(),
            "--keep-last",
            "1000",
            "--device",
            "cpu",
            "--log-every",
            "50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = train(w, &data, &run_dir, &args)?;
        for &e in &epoch_grid {
            let train_s: f64 = o
                .steps
                .iter()
                .filter(|r| (r["epoch"].as_u64().unwrap_or(u64::MAX) as usize) < e)
                .filter_map(|r| r["step_time_s"].as_f64())
                .sum();
            let last = o
                .steps
                .iter()
                .filter(|r| (r["epoch"].as_u64().unwrap_or(u64::MAX) as usize) < e)
                .filter_map(|r| r["global_step"].as_u64())
                .max()
                .unwrap_or(0);
            let valid = o
                .evals
                .iter()
                .find(|v| v["split"] == "valid" && v["epoch"].as_u64() == Some(e as u64))
                .and_then(|v| v["metrics"]["mrr"].as_f64());
            // The checkpoint of the end of epoch e is named by its global step.
            let ckpt = run_dir
                .join("checkpoints")
                .join(format!("ckpt-{last:010}.ssck"));
            let test = if ckpt.exists() {
                let json_out = run_dir.join(format!("test-e{e}.json"));
                let mut cmd = Command::new("mpirun");
                cmd.args([
                    "-np",
                    &w.to_string(),
                    "--oversubscribe",
                    "--bind-to",
                    "none",
                ])
                .arg(&bin)
                .arg("eval")
                .arg("--data")
                .arg(&data)
                .arg("--checkpoint")
                .arg(&ckpt)
                .args(["--split", "test", "--device", "cpu"])
                .arg("--json")
                .arg(&json_out);
                run_cmd(&mut cmd)?;
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&json_out)?)?;
                v["metrics"]["mrr"].as_f64()
            } else {
                eprintln!("no checkpoint {} for epoch {e}", ckpt.display());
                None
            };
            cells.push(serde_json::json!({
                "workers": w, "epochs": e, "train_s": train_s, "global_step": last,
                "valid_mrr": valid, "test_mrr": test, "run_wall_s": o.wall_s,
                "oversubscribed": w > all_threads(),
            }));
        }
    }

    let f = |v: &serde_json::Value, k: &str, p: usize| {
        v[k].as_f64()
            .map(|x| format!("{x:.p$}"))
            .unwrap_or("n/a".into())
    };
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            vec![
                c["workers"].to_string(),
                c["epochs"].to_string(),
                c["global_step"].to_string(),
                f(c, "train_s", 1),
                f(c, "valid_mrr", 4),
                f(c, "test_mrr", 4),
            ]
        })
        .collect();
    let tbl = table(
        &[
            "workers",
            "epochs",
            "steps",
            "training s",
            "valid MRR",
            "test MRR",
        ],
        &rows,
    );
    println!("{tbl}");
    let json = serde_json::json!({
        "scenario": "scaling",
        "meta": meta,
        "dataset": {"name": name, "nodes": ds_meta.num_nodes, "edges": ds_meta.num_edges,
                     "parts": parts, "path": dataset},
        "steps_per_epoch": steps,
        "cells": cells,
    });
    let jpath = write_json("scaling", &json)?;
    let svg = results_dir().join("scaling.svg");
    let cats: Vec<String> = workers.iter().map(|w| format!("{w} workers")).collect();
    let mut series = Vec::new();
    for &e in &epoch_grid {
        series.push((
            format!("{e} epochs: training s"),
            workers
                .iter()
                .map(|&w| {
                    cells
                        .iter()
                        .find(|c| c["workers"] == w && c["epochs"] == e)
                        .and_then(|c| c["train_s"].as_f64())
                        .unwrap_or(f64::NAN)
                })
                .collect(),
        ));
    }
    bar_chart(
        &svg,
        &format!("Training time by workers ({name}, {parts} parts, {steps} steps/epoch)"),
        "seconds",
        &cats,
        &series,
        None,
    )?;
    let cores = all_threads();
    update_results_md(
        "bench-scaling",
        &format!(
            "## Workers x epochs (`make bench-scaling`)\n\n{}\n\n\
             Generated citation graph: {} nodes, {} edges, {parts} parts (LDG). OGB's reference \
             model and batch (512 positive edges over all ranks), {} steps per epoch (capped: \
             full epochs of this graph do not fit this machine's time), test MRR of the \
             checkpoint at the end of each epoch count (`shardsage eval --split test`, the \
             dataset's fixed negatives). This machine has {cores} cores: every W here runs \
             oversubscribed or at one thread per rank, so the total compute is the same and \
             more workers cannot be faster; the table shows that accuracy does not depend on W \
             and what distribution costs.\n\n{tbl}\nPlot: `bench/results/scaling.svg`; data: \
             `bench/results/scaling.json`.\n",
            meta_line(&meta),
            ds_meta.num_nodes,
            ds_meta.num_edges,
            if steps == 0 {
                "all".to_string()
            } else {
                steps.to_string()
            },
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
