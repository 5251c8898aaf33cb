//! `make bench-pyg`: shardsage against our PyTorch Geometric implementation of the same model
//! (`bench/pyg/train_pyg.py`), run back to back on the same dataset file with the same thread
//! count, batch, fan-outs, optimiser, number of steps and evaluation (valid MRR against the
//! dataset's fixed negatives).
//!
//! Options: `--nodes N` (50000), `--epochs N` (3), `--steps N` (steps per epoch, 40),
//! `--threads N` (all cores), `--seeds 0,1` (one pair of runs per seed), `--python PATH`
//! (default `bench/pyg/.venv/bin/python`).

#[path = "../bench/common.rs"]
mod common;
#[path = "../bench/runner.rs"]
mod runner;

use std::process::Command;

use common::*;
use runner::*;

struct Run {
    implementation: &'static str,
    seed: usize,
    /// Training seconds of each epoch (no evaluation, no start-up).
    epoch_s: Vec<f64>,
    steps_per_epoch: usize,
    mrr: f64,
}

impl Run {
    fn epoch_median(&self) -> f64 {
        // The first epoch carries the warm-up; later ones are the steady state where there are any.
        if self.epoch_s.len() > 1 {
            median(&self.epoch_s[1..])
        } else {
            median(&self.epoch_s)
        }
    }
    fn edges_per_s(&self) -> f64 {
        (self.steps_per_epoch * 512) as f64 / self.epoch_median()
    }
}

fn main() -> BenchResult<()> {
    maybe_wrap();
    let nodes = arg_usize("--nodes", 50_000);
    let epochs = arg_usize("--epochs", 3);
    let steps = arg_usize("--steps", 40);
    let threads = arg_usize("--threads", all_threads());
    let seeds = arg_list("--seeds", &[0]);
    let python = arg("--python").unwrap_or_else(|| {
        repo_root()
            .join("bench/pyg/.venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let meta = run_meta();
    let runs_dir = repo_root().join("bench").join("runs");
    let name = format!("cit-{}k", nodes / 1000);
    let dataset = ensure_dataset(&name, &["--nodes".into(), nodes.to_string()])?;
    let data = ensure_parts(&dataset, &name, 1)?;

    let mut runs = Vec::new();
    for &seed in &seeds {
        // shardsage, one rank with `threads` threads.
        let args: Vec<String> = [
            "--epochs",
            &epochs.to_string(),
            "--steps-per-epoch",
            &steps.to_string(),
            "--batch-size",
            "512",
            "--eval-every",
            "0",
            "--threads",
            &threads.to_string(),
            "--seed",
            &seed.to_string(),
            "--device",
            "cpu",
            "--log-every",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = train(1, &data, &runs_dir.join(format!("pyg-ours-s{seed}")), &args)?;
        let mut epoch_s = vec![0.0; epochs];
        for r in &o.steps {
            let e = r["epoch"].as_u64().unwrap_or(0) as usize;
            if e < epochs {
                epoch_s[e] += r["step_time_s"].as_f64().unwrap_or(0.0);
            }
        }
        runs.push(Run {
            implementation: "shardsage",
            seed,
            epoch_s,
            steps_per_epoch: steps,
            mrr: o.last_eval("valid", "mrr").unwrap_or(f64::NAN),
        });

        // PyG, same dataset file, same threads.
        let out = runs_dir.join(format!("pyg-pyg-s{seed}.json"));
        let mut cmd = Command::new(&python);
        cmd.arg(repo_root().join("bench/pyg/train_pyg.py"))
            .arg("--dataset")
            .arg(&dataset)
            .args(["--epochs", &epochs.to_string()])
            .args(["--steps-per-epoch", &steps.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--seed", &seed.to_string()])
            .arg("--out")
            .arg(&out);
        run_cmd(&mut cmd)?;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        runs.push(Run {
            implementation: "pyg",
            seed,
            epoch_s: v["epochs"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["train_s"].as_f64()).collect())
                .unwrap_or_default(),
            steps_per_epoch: steps,
            mrr: v["evals"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|e| e["mrr"].as_f64())
                .unwrap_or(f64::NAN),
        });
    }

    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.implementation.to_string(),
                r.seed.to_string(),
                format!("{:.2}", r.epoch_median()),
                format!("{:.0}", r.edges_per_s()),
                format!("{:.4}", r.mrr),
            ]
        })
        .collect();
    let tbl = table(
        &[
            "implementation",
            "seed",
            "epoch s",
            "pos edges/s",
            "valid MRR",
        ],
        &rows,
    );
    let by = |imp: &str, f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.implementation == imp)
            .map(f)
            .collect()
    };
    let ours_eps = median(&by("shardsage", &|r| r.edges_per_s()));
    let pyg_eps = median(&by("pyg", &|r| r.edges_per_s()));
    let ours_mrr = by("shardsage", &|r| r.mrr);
    let pyg_mrr = by("pyg", &|r| r.mrr);
    let speedup = ours_eps / pyg_eps;
    let summary = format!(
        "shardsage {:.0} vs PyG {:.0} positive edges/s: {speedup:.2}x; valid MRR shardsage {} vs \
         PyG {} (per seed).",
        ours_eps,
        pyg_eps,
        ours_mrr
            .iter()
            .map(|m| format!("{m:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
        pyg_mrr
            .iter()
            .map(|m| format!("{m:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{tbl}\n{summary}");

    let pyg_versions = Command::new(&python)
        .args([
            "-c",
            "import torch, torch_geometric; print(torch.__version__, torch_geometric.__version__)",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let part_meta = shardsage::graph::store::GraphPart::read_meta(&dataset)?;
    let json = serde_json::json!({
        "scenario": "pyg",
        "meta": meta,
        "dataset": {"path": dataset, "nodes": part_meta.num_nodes, "edges": part_meta.num_edges},
        "epochs": epochs,
        "steps_per_epoch": steps,
        "threads": threads,
        "torch_and_pyg": pyg_versions,
        "runs": runs.iter().map(|r| serde_json::json!({
            "implementation": r.implementation, "seed": r.seed, "epoch_s": r.epoch_s,
            "epoch_s_median": r.epoch_median(), "positive_edges_per_s": r.edges_per_s(),
            "valid_mrr": r.mrr,
        })).collect::<Vec<_>>(),
        "speedup": speedup,
    });
    let jpath = write_json("pyg", &json)?;
    let svg = results_dir().join("pyg.svg");
    bar_chart(
        &svg,
        &format!("shardsage vs PyG, {threads} threads, {name}"),
        "positive edges/s",
        &["throughput".to_string()],
        &[
            ("shardsage".into(), vec![ours_eps]),
            ("PyG (torch_geometric)".into(), vec![pyg_eps]),
        ],
        None,
    )?;
    update_results_md(
        "bench-pyg",
        &format!(
            "## shardsage vs PyTorch Geometric (`make bench-pyg`)\n\n{}\n\n\
             Same dataset file ({name}: {} nodes, {} edges), same model (3 SAGE mean layers of \
             256, 3-layer predictor on the element-wise product), batch 512, one uniform \
             negative per positive, fan-outs 15,10,5, Adam lr 0.0005, {epochs} epochs of \
             {steps} steps, {threads} threads each, valid MRR against the same fixed negatives \
             with OGB's rank rule, run back to back. PyG side: `bench/pyg/train_pyg.py` \
             (torch / torch_geometric {pyg_versions}, its own numpy uniform sampler, trimmed \
             bipartite blocks). shardsage: one rank, `--threads {threads}`. Epoch time is the \
             training loop only (median over the epochs after the first).\n\n{tbl}\n{summary}\n\n\
             Plot: `bench/results/pyg.svg`; data: `bench/results/pyg.json`.\n",
            meta_line(&meta),
            part_meta.num_nodes,
            part_meta.num_edges
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    Ok(())
}
