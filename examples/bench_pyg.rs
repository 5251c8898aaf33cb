//! `make bench-pyg`: shardsage against PyTorch Geometric on a real citation graph, back to back,
//! same dataset file, same threads, same model and config (OGB's reference GraphSAGE: 3 SAGE mean
//! layers of 256, 3-layer predictor, fan-outs 15,10,5, Adam lr 5e-4, no dropout, one negative per
//! positive), full epochs. Four runs per seed:
//! - `shardsage`: `shardsage train` with its defaults (`--sampling subgraph`);
//! - `shardsage-per-layer`: the same with `--sampling per-layer` (DGL's block rule);
//! - `pyg`: PyG's own default path, `LinkNeighborLoader` + `torch_geometric.nn.GraphSAGE` on the
//!   whole sampled subgraph (`bench/pyg/train_pyg.py --loader link-neighbor`);
//! - `pyg-trim`: PyG's fastest CPU path, the same loader with `trim_to_layer`
//!   (`--loader link-neighbor-trim`).
//!
//! Per epoch: positive edges/s of the training loop, sampling time per step (shardsage: sampling
//! and feature gathering; PyG: the loader, which gathers the features too), and valid and test MRR
//! against the dataset's fixed negatives (shardsage: `eval` of each epoch's checkpoint).
//!
//! Options: `--graph cit-HepTh|generated` (cit-HepTh: `../shared/data/cit-HepTh`, random
//! per-source split, 100 negatives, 128-dim N(0,1) features; generated: `shardsage generate
//! --nodes N`), `--nodes N` (200000), `--epochs N` (2), `--seeds 0,1,2`, `--threads N` (all
//! cores), `--batch-size N` (1024), `--steps-per-epoch N` (0: full epochs; a cap measures
//! throughput and early quality on a graph whose full epoch on PyG takes hours), `--runs shardsage,shardsage-per-layer,pyg,pyg-trim`,
//! `--python PATH` (default `bench/pyg/.venv/bin/python`, made by `make bench-pyg-setup`),
//! `--reuse` (keep the results of runs already in `bench/runs/pyg-<graph>/` and run only the
//! missing ones).

#[path = "../bench/common.rs"]
mod common;
#[path = "../bench/runner.rs"]
mod runner;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use runner::*;

/// One epoch of one run.
#[derive(Clone, Debug, Default)]
struct Epoch {
    train_s: f64,
    positive_edges: f64,
    sample_s_per_step: f64,
    compute_s_per_step: f64,
    valid_mrr: f64,
    test_mrr: f64,
}

struct Run {
    name: String,
    seed: usize,
    epochs: Vec<Epoch>,
}

const ALL_RUNS: [&str; 4] = ["shardsage", "shardsage-per-layer", "pyg", "pyg-trim"];

/// cit-HepTh from the shared data, ingested once into bench/.data/.
fn cit_hepth() -> BenchResult<PathBuf> {
    let path = data_dir().join("cit-HepTh.h5");
    if path.exists() {
        return Ok(path);
    }
    let shared = std::env::var_os("SHARDSAGE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    let edges = shared.join("cit-HepTh/edges.tsv.gz");
    if !edges.exists() {
        return Err(format!(
            "{} is missing (../shared/data beside the checkout)",
            edges.display()
        )
        .into());
    }
    std::fs::create_dir_all(data_dir())?;
    let mut cmd = Command::new(shardsage_bin()?);
    cmd.arg("ingest")
        .arg("--edges")
        .arg(&edges)
        .args(["--name", "cit-HepTh", "--num-neg", "100", "--seed", "1"])
        .arg("--out")
        .arg(&path);
    run_cmd(&mut cmd)?;
    Ok(path)
}

/// What every run of one benchmark shares.
struct Bench {
    python: String,
    /// The dataset file (PyG reads it) and its one-part directory (shardsage reads it).
    dataset: PathBuf,
    data: PathBuf,
    runs_dir: PathBuf,
    epochs: usize,
    /// Cap on each epoch's steps (0: full epochs), the same on both sides.
    steps_per_epoch: usize,
    threads: usize,
    batch: usize,
    /// `shardsage train` flags of the shared config.
    common_args: Vec<String>,
    /// Read the results of runs already in the runs directory instead of running them again
    /// (`--reuse`: an interrupted benchmark continues where it stopped).
    reuse: bool,
}

impl Bench {
    fn shardsage_run(&self, name: &str, seed: usize, extra: &[&str]) -> BenchResult<Run> {
        let (data, runs_dir) = (&self.data, &self.runs_dir);
        let run_dir = runs_dir.join(format!("{name}-s{seed}"));
        let mut args = self.common_args.clone();
        args.extend(["--seed".into(), seed.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let reuse = self.reuse && run_dir.join("metrics.jsonl").exists();
        let (steps, evals) = if reuse {
            eprintln!("reusing {}", run_dir.display());
            read_metrics(&run_dir.join("metrics.jsonl"))?
        } else {
            let o = train(1, data, &run_dir, &args)?;
            (o.steps, o.evals)
        };
        let o = (steps, evals);
        let (steps, evals) = (&o.0, &o.1);
        let n_epochs = evals.iter().filter(|e| e["split"] == "valid").count();
        let mut epochs = vec![Epoch::default(); n_epochs];
        for r in steps {
            let Some(e) = r["epoch"]
                .as_u64()
                .map(|e| e as usize)
                .filter(|&e| e < n_epochs)
            else {
                continue;
            };
            let ep = &mut epochs[e];
            ep.train_s += r["step_time_s"].as_f64().unwrap_or(0.0);
            ep.sample_s_per_step += r["time_sample_s"].as_f64().unwrap_or(0.0)
                + r["time_gather_s"].as_f64().unwrap_or(0.0);
            ep.compute_s_per_step += r["time_compute_s"].as_f64().unwrap_or(0.0);
            ep.positive_edges += 1.0;
        }
        let batch = self.batch as f64;
        for ep in epochs.iter_mut() {
            let steps = ep.positive_edges.max(1.0);
            ep.sample_s_per_step /= steps;
            ep.compute_s_per_step /= steps;
            ep.positive_edges *= batch;
        }
        // Valid MRR from the run; test MRR of each epoch's checkpoint, in epoch order.
        for (ep, e) in epochs
            .iter_mut()
            .zip(evals.iter().filter(|e| e["split"] == "valid"))
        {
            ep.valid_mrr = e["metrics"]["mrr"].as_f64().unwrap_or(f64::NAN);
        }
        let mut ckpts: Vec<PathBuf> = std::fs::read_dir(run_dir.join("checkpoints"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("ckpt-"))
                    && p.extension().is_some_and(|x| x == "ssck")
            })
            .collect();
        ckpts.sort();
        for (ep, ck) in epochs.iter_mut().zip(&ckpts) {
            let json = ck.with_extension("test.json");
            if !(reuse && json.exists()) {
                let mut cmd = Command::new(shardsage_bin()?);
                cmd.arg("eval")
                    .arg("--data")
                    .arg(data)
                    .arg("--checkpoint")
                    .arg(ck)
                    .args([
                        "--split",
                        "test",
                        "--threads",
                        &arg_usize("--threads", all_threads()).to_string(),
                    ])
                    .arg("--json")
                    .arg(&json)
                    .stdout(std::process::Stdio::null());
                run_cmd(&mut cmd)?;
            }
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
            ep.test_mrr = v["metrics"]["mrr"].as_f64().unwrap_or(f64::NAN);
        }
        Ok(Run {
            name: name.into(),
            seed,
            epochs,
        })
    }

    fn pyg_run(&self, name: &str, loader: &str, seed: usize) -> BenchResult<Run> {
        let out = self.runs_dir.join(format!("{name}-s{seed}.json"));
        if !(self.reuse && out.exists()) {
            let mut cmd = Command::new(&self.python);
            cmd.args(["-W", "ignore"])
                .arg(repo_root().join("bench/pyg/train_pyg.py"))
                .arg("--dataset")
                .arg(&self.dataset)
                .args(["--loader", loader])
                .args(["--epochs", &self.epochs.to_string()])
                .args(["--steps-per-epoch", &self.steps_per_epoch.to_string()])
                .args(["--batch-size", &self.batch.to_string()])
                .args(["--threads", &self.threads.to_string()])
                .args(["--eval-every", "1", "--eval-test"])
                .args(["--seed", &seed.to_string()])
                .arg("--out")
                .arg(&out);
            run_cmd(&mut cmd)?;
        }
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        let mrr = |epoch: usize, split: &str| -> f64 {
            v["evals"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|e| e["epoch"].as_u64() == Some(epoch as u64) && e["split"] == split)
                })
                .and_then(|e| e["mrr"].as_f64())
                .unwrap_or(f64::NAN)
        };
        let epochs = v["epochs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let steps = e["steps"].as_f64().unwrap_or(1.0).max(1.0);
                        Epoch {
                            train_s: e["train_s"].as_f64().unwrap_or(f64::NAN),
                            positive_edges: e["positive_edges"].as_f64().unwrap_or(f64::NAN),
                            sample_s_per_step: e["sample_s"].as_f64().unwrap_or(f64::NAN) / steps,
                            compute_s_per_step: e["compute_s"].as_f64().unwrap_or(f64::NAN) / steps,
                            valid_mrr: mrr(i + 1, "valid"),
                            test_mrr: mrr(i + 1, "test"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Run {
            name: name.into(),
            seed,
            epochs,
        })
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

fn main() -> BenchResult<()> {
    maybe_wrap();
    let graph = arg("--graph").unwrap_or_else(|| "cit-HepTh".into());
    let nodes = arg_usize("--nodes", 200_000);
    let epochs = arg_usize("--epochs", 2);
    let threads = arg_usize("--threads", all_threads());
    let batch = arg_usize("--batch-size", 1024);
    let steps_per_epoch = arg_usize("--steps-per-epoch", 0);
    let seeds = arg_list("--seeds", &[0, 1, 2]);
    let wanted: Vec<String> = arg("--runs")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| ALL_RUNS.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = wanted.iter().find(|w| !ALL_RUNS.contains(&w.as_str())) {
        return Err(format!(
            "--runs: unknown run '{bad}' (known: {})",
            ALL_RUNS.join(", ")
        )
        .into());
    }
    let python = arg("--python").unwrap_or_else(|| {
        repo_root()
            .join("bench/pyg/.venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let meta = run_meta();
    let (name, dataset) = match graph.as_str() {
        "cit-HepTh" => ("cit-HepTh".to_string(), cit_hepth()?),
        "generated" => {
            let name = format!("cit-{}k", nodes / 1000);
            let ds = ensure_dataset(&name, &["--nodes".into(), nodes.to_string()])?;
            (name, ds)
        }
        other => return Err(format!("--graph: '{other}' is cit-HepTh or generated").into()),
    };
    let data = ensure_parts(&dataset, &name, 1)?;
    // Capped runs are other runs: kept apart, so `--reuse` never mixes them with full epochs.
    let runs_name = match steps_per_epoch {
        0 => format!("pyg-{name}"),
        n => format!("pyg-{name}-steps{n}"),
    };
    let runs_dir = repo_root().join("bench").join("runs").join(runs_name);
    std::fs::create_dir_all(&runs_dir)?;
    let common_args: Vec<String> = [
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        &batch.to_string(),
        "--steps-per-epoch",
        &steps_per_epoch.to_string(),
        "--eval-every",
        "1",
        "--keep-last",
        &(epochs + 1).to_string(),
        "--threads",
        &threads.to_string(),
        "--device",
        "cpu",
        "--log-every",
        "50",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let bench = Bench {
        python: python.clone(),
        dataset: dataset.clone(),
        data,
        runs_dir,
        epochs,
        steps_per_epoch,
        threads,
        batch,
        common_args,
        reuse: std::env::args().any(|a| a == "--reuse"),
    };
    let mut runs = Vec::new();
    for &seed in &seeds {
        for w in &wanted {
            let run = match w.as_str() {
                "shardsage" => bench.shardsage_run(w, seed, &[])?,
                "shardsage-per-layer" => {
                    bench.shardsage_run(w, seed, &["--sampling", "per-layer"])?
                }
                "pyg" => bench.pyg_run(w, "link-neighbor", seed)?,
                _ => bench.pyg_run(w, "link-neighbor-trim", seed)?,
            };
            runs.push(run);
        }
    }

    // Per run and epoch, then the mean and spread over seeds.
    let mut rows = Vec::new();
    for r in &runs {
        for (i, e) in r.epochs.iter().enumerate() {
            rows.push(vec![
                r.name.clone(),
                r.seed.to_string(),
                (i + 1).to_string(),
                format!("{:.0}", e.positive_edges / e.train_s),
                format!("{:.3}", e.sample_s_per_step),
                format!("{:.3}", e.compute_s_per_step),
                format!("{:.4}", e.valid_mrr),
                format!("{:.4}", e.test_mrr),
            ]);
        }
    }
    let per_run = table(
        &[
            "run",
            "seed",
            "epoch",
            "pos edges/s",
            "sample s/step",
            "compute s/step",
            "valid MRR",
            "test MRR",
        ],
        &rows,
    );
    let mut summary_rows = Vec::new();
    let mut curves = Vec::new();
    let mut speed = Vec::new();
    let mut summary_json = Vec::new();
    for w in &wanted {
        let mine: Vec<&Run> = runs.iter().filter(|r| &r.name == w).collect();
        let mut curve = Vec::new();
        for ep in 0..epochs {
            let pick = |f: &dyn Fn(&Epoch) -> f64| -> Vec<f64> {
                mine.iter()
                    .filter_map(|r| r.epochs.get(ep))
                    .map(f)
                    .collect()
            };
            let (vm, vs) = mean_sd(&pick(&|e| e.valid_mrr));
            let (tm, ts) = mean_sd(&pick(&|e| e.test_mrr));
            let eps = median(&pick(&|e| e.positive_edges / e.train_s));
            let samp = median(&pick(&|e| e.sample_s_per_step));
            summary_rows.push(vec![
                w.clone(),
                (ep + 1).to_string(),
                format!("{vm:.4} ± {vs:.4}"),
                format!("{tm:.4} ± {ts:.4}"),
                format!("{eps:.0}"),
                format!("{samp:.3}"),
            ]);
            summary_json.push(serde_json::json!({
                "run": w, "epoch": ep + 1, "valid_mrr_mean": vm, "valid_mrr_sd": vs,
                "test_mrr_mean": tm, "test_mrr_sd": ts, "positive_edges_per_s_median": eps,
                "sample_s_per_step_median": samp, "seeds": mine.len(),
            }));
            curve.push(((ep + 1) as f64, tm));
            if ep + 1 == epochs {
                speed.push((w.clone(), vec![eps]));
            }
        }
        curves.push((w.clone(), curve));
    }
    let summary = table(
        &[
            "run",
            "epoch",
            "valid MRR (mean ± sd)",
            "test MRR (mean ± sd)",
            "pos edges/s (median)",
            "sample s/step",
        ],
        &summary_rows,
    );
    println!("{per_run}\n{summary}");

    let versions = Command::new(&python)
        .args([
            "-W",
            "ignore",
            "-c",
            "import torch, torch_geometric, torch_sparse; print(torch.__version__, \
             torch_geometric.__version__, torch_sparse.__version__)",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let part_meta = shardsage::graph::store::GraphPart::read_meta(&dataset)?;
    let json = serde_json::json!({
        "scenario": "pyg",
        "meta": meta,
        "dataset": {"name": name, "path": dataset, "nodes": part_meta.num_nodes,
                    "edges": part_meta.num_edges},
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch, "threads": threads, "seeds": seeds,
        "torch_pyg_torch_sparse": versions,
        "runs": runs.iter().map(|r| serde_json::json!({
            "run": r.name, "seed": r.seed,
            "epochs": r.epochs.iter().map(|e| serde_json::json!({
                "train_s": e.train_s, "positive_edges": e.positive_edges,
                "positive_edges_per_s": e.positive_edges / e.train_s,
                "sample_s_per_step": e.sample_s_per_step, "compute_s_per_step": e.compute_s_per_step,
                "valid_mrr": e.valid_mrr, "test_mrr": e.test_mrr,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "summary": summary_json,
    });
    let (stem, span) = match steps_per_epoch {
        0 => (
            format!("pyg-{}", name.to_lowercase()),
            "full epochs".to_string(),
        ),
        n => (
            format!("pyg-{}-steps{n}", name.to_lowercase()),
            format!("the first {n} steps of each epoch (`--steps-per-epoch {n}`)"),
        ),
    };
    let jpath = write_json(&stem, &json)?;
    let svg = results_dir().join(format!("{stem}.svg"));
    bar_chart(
        &svg,
        &format!("shardsage vs PyG on {name}, {threads} threads: training throughput"),
        "positive edges/s",
        &["last epoch".to_string()],
        &speed,
        None,
    )?;
    let mrr_svg = results_dir().join(format!("{stem}-mrr.svg"));
    line_chart(
        &mrr_svg,
        &format!(
            "test MRR per epoch on {name} (mean over {} seeds)",
            seeds.len()
        ),
        "epoch",
        "test MRR",
        &curves,
    )?;
    update_results_md(
        &format!("bench-{stem}"),
        &format!(
            "## shardsage vs PyTorch Geometric on {name} (`make bench-pyg`)\n\n{}\n\n\
             Same dataset file ({name}: {} nodes, {} edges), back to back, {threads} threads \
             each, {span} of batch {batch}; OGB's reference model and config (3 SAGE mean \
             layers of 256, 3-layer predictor, fan-outs 15,10,5, Adam lr 0.0005, no dropout, one \
             negative per positive); MRR against the dataset's fixed negatives with OGB's rank \
             rule; seeds {seeds:?}. PyG (torch / torch_geometric / torch_sparse {versions}): `pyg` \
             is its default `LinkNeighborLoader` path, `pyg-trim` the same with \
             `trim_to_layer`. Sampling time includes gathering the input features on both \
             sides.\n\n{summary}\nPer run:\n\n{per_run}\n\
             Plots: `bench/results/{stem}.svg`, `bench/results/{stem}-mrr.svg`; data: \
             `bench/results/{stem}.json`.\n",
            meta_line(&meta),
            part_meta.num_nodes,
            part_meta.num_edges,
        ),
    )?;
    println!(
        "wrote {}, {} and {}",
        jpath.display(),
        svg.display(),
        mrr_svg.display()
    );
    Ok(())
}
