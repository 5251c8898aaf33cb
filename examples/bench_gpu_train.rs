//! Training throughput on one GPU (run by `scripts/gpu-run.sh train` / `pyg` on a machine with a
//! GPU): `shardsage train --device cuda` as a single process (W = 1, no mpirun) with OGB's
//! reference configuration (3 SAGE layers of 256, fan-outs 15,10,5, batches of 512 positive
//! edges, one negative each, Adam lr 0.0005), then optionally our PyTorch Geometric
//! implementation (`bench/pyg/train_pyg.py --device cuda`) on the same GPU, the same dataset file
//! and the same number of steps, then optionally `shardsage train --device cpu` on all cores.
//!
//! Figures are medians over the steps after `--warmup`: steps/s, positive edges/s, and (for
//! shardsage) the time per phase from the step records of RUN_DIR/metrics.jsonl (`time_sample_
//! max_s`, ..., `step_time_s`; with one rank the max is the rank's own time). PyG's per-step times
//! come from its JSON output (`step_s`). Each run also reports its wall time (start-up, loading,
//! training, the final validation evaluation), its peak RSS and the final valid MRR.
//!
//! A run that fails (or passes `--run-timeout`) is recorded with its error and the others still
//! run; the program then exits non-zero. Writes `bench/results/gpu-train.json` (shardsage GPU and
//! CPU) and, with `--pyg`, `gpu-pyg.json`, with SVG plots and `bench-gpu-train` /
//! `bench-gpu-pyg` sections of `bench/RESULTS.md`.
//!
//! Usage: `bench_gpu_train --data PART_DIR [--dataset FILE --pyg PYTHON] [--no-cpu] [--steps N]
//! [--warmup N] [--run-timeout S] [--budget-s S] [--data-info FILE]`. `PART_DIR` holds one part
//! (`shardsage partition --parts 1`) of `FILE`; runs go to `bench/runs/gpu-*`. Defaults: 40
//! steps, 5 warm-up steps, 300 s per run, 3600 s for all runs (a run that would start with less
//! than 30 s left is skipped, and the results of the others are still written).

#[path = "../bench/common.rs"]
mod common;
#[path = "../bench/runner.rs"]
mod runner;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use runner::*;
use shardsage::backend::cuda::CudaBackend;
use shardsage::backend::prelude::*;

const BATCH: usize = 512;
const PHASES: [&str; 5] = ["sample", "gather", "compute", "allreduce", "update"];

/// What one run left behind.
#[derive(Default)]
struct RunResult {
    name: String,
    error: Option<String>,
    wall_s: f64,
    peak_rss_bytes: u64,
    /// Per-step seconds in step order.
    step_s: Vec<f64>,
    /// Per-phase median seconds (shardsage only).
    phases: Vec<(String, f64)>,
    valid_mrr: Option<f64>,
    extra: serde_json::Value,
}

impl RunResult {
    fn steady(&self, warmup: usize) -> &[f64] {
        &self.step_s[warmup.min(self.step_s.len().saturating_sub(1))..]
    }
    fn step_median(&self, warmup: usize) -> f64 {
        median(self.steady(warmup))
    }
    fn json(&self, warmup: usize) -> serde_json::Value {
        let s = self.step_median(warmup);
        serde_json::json!({
            "run": self.name,
            "error": self.error,
            "steps": self.step_s.len(),
            "step_time_s_median": s,
            "steps_per_s": 1.0 / s,
            "positive_edges_per_s": BATCH as f64 / s,
            "phases_s_median": self.phases.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "step_s": self.step_s,
            "wall_s": self.wall_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "valid_mrr": self.valid_mrr,
            "extra": self.extra,
        })
    }
}

/// Time limits: each run's own, and the end of the whole budget (the GPU machines are lent for
/// minutes, so a slow last run must not cost the results of the earlier ones).
struct Limits {
    per_run: Duration,
    deadline: Instant,
}

/// A run is not started with less time than this left in the budget.
const MIN_RUN: Duration = Duration::from_secs(30);

/// Copies a child's output stream line by line to our stderr and to the shared log file.
fn tee_lines(
    stream: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<std::fs::File>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
            eprintln!("{line}");
            if let Ok(mut f) = log.lock() {
                let _ = writeln!(f, "{line}");
            }
        }
    })
}

/// Runs `cmd` with its output shown and kept in `log`, killing it when its time limit passes;
/// returns wall seconds and peak RSS. `wait4` gives the child's own peak RSS (the trainer's
/// `peak_rss_bytes` would do for shardsage but not for Python).
fn run_limited(cmd: &mut Command, limits: &Limits, log: &Path) -> Result<(f64, u64), String> {
    let left = limits.deadline.saturating_duration_since(Instant::now());
    if left < MIN_RUN {
        return Err(format!(
            "skipped: {:.0}s left of --budget-s, less than {}s",
            left.as_secs_f64(),
            MIN_RUN.as_secs()
        ));
    }
    let limit = limits.per_run.min(left);
    eprintln!("+ {cmd:?}");
    let t = Instant::now();
    let file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let file = Arc::new(Mutex::new(file));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut copiers = Vec::new();
    if let Some(out) = child.stdout.take() {
        copiers.push(tee_lines(out, file.clone()));
    }
    if let Some(err) = child.stderr.take() {
        copiers.push(tee_lines(err, file.clone()));
    }
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: `pid` is our child, not yet reaped; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            return Err(format!(
                "waiting for {cmd:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if !killed && t.elapsed() > limit {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t.elapsed().as_secs_f64();
    for c in copiers {
        let _ = c.join();
    }
    // ru_maxrss is in KiB on Linux.
    let rss = usage.ru_maxrss.max(0) as u64 * 1024;
    if killed {
        return Err(format!(
            "killed after {:.0}s (time limit from --run-timeout / --budget-s)",
            limit.as_secs_f64()
        ));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{cmd:?} failed (wait status {status})"));
    }
    Ok((wall, rss))
}

fn shardsage_run(
    device: &str,
    data: &Path,
    run_dir: &Path,
    steps: usize,
    warmup: usize,
    limits: &Limits,
) -> RunResult {
    let mut r = RunResult {
        name: format!("shardsage --device {device}"),
        ..Default::default()
    };
    let outcome = (|| -> BenchResult<()> {
        if run_dir.exists() {
            std::fs::remove_dir_all(run_dir)?;
        }
        let mut cmd = Command::new(shardsage_bin()?);
        cmd.arg("train")
            .arg("--data")
            .arg(data)
            .arg("--run-dir")
            .arg(run_dir)
            .args(["--epochs", "1", "--steps-per-epoch", &steps.to_string()])
            .args(["--batch-size", &BATCH.to_string(), "--eval-every", "0"])
            .args(["--log-every", "10", "--device", device]);
        let log = run_dir.with_extension("log");
        let outcome = run_limited(&mut cmd, limits, &log);
        r.extra = serde_json::json!({
            "log": log,
            "log_highlights": highlights(&log),
            "config_toml": std::fs::read_to_string(run_dir.join("config.toml")).ok(),
        });
        let (wall, rss) = outcome?;
        r.wall_s = wall;
        r.peak_rss_bytes = rss;
        let (steps, evals) = read_metrics(&run_dir.join("metrics.jsonl"))?;
        r.step_s = steps
            .iter()
            .filter_map(|s| s["step_time_s"].as_f64())
            .collect();
        let steady = &steps[warmup.min(steps.len().saturating_sub(1))..];
        for p in PHASES {
            let v: Vec<f64> = steady
                .iter()
                .filter_map(|s| s[format!("time_{p}_max_s")].as_f64())
                .collect();
            r.phases.push((p.to_string(), median(&v)));
        }
        let edges: Vec<f64> = steady
            .iter()
            .filter_map(|s| s["sampled_edges_per_s"].as_f64())
            .collect();
        r.extra["sampled_edges_per_s_median"] = serde_json::json!(median(&edges));
        r.valid_mrr = evals
            .iter()
            .rev()
            .find(|e| e["split"].as_str() == Some("valid"))
            .and_then(|e| e["metrics"]["mrr"].as_f64());
        if r.step_s.len() < steps_needed(warmup) {
            return Err(format!("only {} step records", r.step_s.len()).into());
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        eprintln!("{}: {e}", r.name);
        r.error = Some(e.to_string());
    }
    r
}

/// The lines of a trainer's log that say where it ran: the device, where the features live,
/// where sampling happens, kernel compilation, the final evaluation.
fn highlights(log: &Path) -> Vec<String> {
    const KEYS: [&str; 9] = [
        "CUDA backend",
        "device:",
        "resident on",
        "gathered on the host",
        "do not fit",
        "sampling this rank",
        "compiled",
        "eval valid",
        "Error",
    ];
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| KEYS.iter().any(|k| l.contains(k)))
        .take(30)
        .map(String::from)
        .collect()
}

fn steps_needed(warmup: usize) -> usize {
    warmup + 2
}

fn pyg_run(
    python: &str,
    dataset: &Path,
    out: &Path,
    steps: usize,
    warmup: usize,
    limits: &Limits,
) -> RunResult {
    let mut r = RunResult {
        name: "PyG --device cuda".into(),
        ..Default::default()
    };
    let outcome = (|| -> BenchResult<()> {
        let _ = std::fs::remove_file(out);
        // PyG's own loader (its fastest, trimmed path) needs pyg-lib or torch-sparse; without
        // either, train_pyg.py's numpy per-layer sampler stands in, and the name says so.
        let has_sampler = Command::new(python)
            .args([
                "-W",
                "ignore",
                "-c",
                "import torch_geometric.typing as t; \
                 raise SystemExit(0 if t.WITH_PYG_LIB or t.WITH_TORCH_SPARSE else 1)",
            ])
            .status()
            .is_ok_and(|s| s.success());
        let loader = if has_sampler {
            "link-neighbor-trim"
        } else {
            "per-layer"
        };
        r.name = format!("PyG --device cuda ({loader})");
        let mut cmd = Command::new(python);
        cmd.arg(repo_root().join("bench/pyg/train_pyg.py"))
            .arg("--dataset")
            .arg(dataset)
            .args(["--loader", loader])
            .args(["--epochs", "1", "--steps-per-epoch", &steps.to_string()])
            .args(["--batch-size", &BATCH.to_string(), "--device", "cuda"])
            .arg("--out")
            .arg(out);
        let (wall, rss) = run_limited(&mut cmd, limits, &out.with_extension("log"))?;
        r.wall_s = wall;
        r.peak_rss_bytes = rss;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out)?)?;
        let per_step = |field: &str| -> Vec<f64> {
            v["epochs"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e[field].as_array().cloned().unwrap_or_default())
                .filter_map(|s| s.as_f64())
                .collect()
        };
        r.step_s = per_step("step_s");
        // Its own split: sampling on the host, then everything else (features to the model,
        // forward, backward, optimiser step).
        let sample = per_step("sample_step_s");
        if sample.len() == r.step_s.len() {
            let skip = warmup.min(sample.len().saturating_sub(1));
            let rest: Vec<f64> = r.step_s.iter().zip(&sample).map(|(t, s)| t - s).collect();
            r.phases = vec![
                ("sample".into(), median(&sample[skip..])),
                ("compute".into(), median(&rest[skip..])),
            ];
        }
        r.valid_mrr = v["evals"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|e| e["mrr"].as_f64());
        r.extra = serde_json::json!({
            "torch": v["torch"], "torch_geometric": v["torch_geometric"], "device": v["device"],
            "load_s": v["load_s"], "epochs": v["epochs"].as_array().map(|a| a.iter().map(|e| {
                let mut e = e.clone();
                if let Some(o) = e.as_object_mut() {
                    o.remove("step_s");
                    o.remove("sample_step_s");
                }
                e
            }).collect::<Vec<_>>()),
            "evals": v["evals"],
        });
        if r.step_s.len() < steps_needed(warmup) {
            return Err(format!(
                "only {} step times in {} (is train_pyg.py up to date?)",
                r.step_s.len(),
                out.display()
            )
            .into());
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        eprintln!("{}: {e}", r.name);
        r.error = Some(e.to_string());
    }
    r
}

fn row(r: &RunResult, warmup: usize) -> Vec<String> {
    let s = r.step_median(warmup);
    let mut cells = vec![
        r.name.clone(),
        format!("{:.2}", 1.0 / s),
        format!("{:.0}", BATCH as f64 / s),
        format!("{:.1}", s * 1e3),
    ];
    for p in PHASES {
        cells.push(
            r.phases
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, v)| format!("{:.1}", v * 1e3))
                .unwrap_or_else(|| "-".into()),
        );
    }
    cells.push(format!("{:.0}", r.wall_s));
    cells.push(format!("{:.0}", r.peak_rss_bytes as f64 / (1 << 20) as f64));
    cells.push(
        r.valid_mrr
            .map(|m| format!("{m:.4}"))
            .unwrap_or_else(|| "-".into()),
    );
    cells.push(r.error.clone().unwrap_or_default());
    cells
}

fn results_table(runs: &[&RunResult], warmup: usize) -> String {
    let mut hdr = vec!["run", "steps/s", "pos edges/s", "step ms"];
    let phase_hdr: Vec<String> = PHASES.iter().map(|p| format!("{p} ms")).collect();
    hdr.extend(phase_hdr.iter().map(String::as_str));
    hdr.extend(["wall s", "peak RSS MiB", "valid MRR", "error"]);
    table(
        &hdr,
        &runs.iter().map(|r| row(r, warmup)).collect::<Vec<_>>(),
    )
}

fn main() -> BenchResult<()> {
    // Info lines: the device chosen and the NVRTC compile time.
    shardsage::runtime::init_logging();
    let data = PathBuf::from(arg("--data").ok_or("--data PART_DIR is required")?);
    let dataset = arg("--dataset").map(PathBuf::from);
    let python = arg("--pyg");
    let with_cpu = !std::env::args().any(|a| a == "--no-cpu");
    let steps = arg_usize("--steps", 40);
    let warmup = arg_usize("--warmup", 5);
    let limits = Limits {
        per_run: Duration::from_secs(arg_usize("--run-timeout", 300) as u64),
        deadline: Instant::now() + Duration::from_secs(arg_usize("--budget-s", 3600) as u64),
    };
    let data_info: serde_json::Value = match arg("--data-info") {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(&p)?)?,
        None => serde_json::Value::Null,
    };
    if python.is_some() && dataset.is_none() {
        return Err("--pyg needs --dataset FILE (the file PART_DIR was partitioned from)".into());
    }
    if steps < steps_needed(warmup) {
        return Err(format!("--steps must be at least --warmup + 2 = {}", warmup + 2).into());
    }
    // Fail early and clearly without a GPU (the trainer would say the same, after loading); the
    // backend is dropped at once so the runs have the device to themselves.
    let device = CudaBackend::try_new()
        .map(|b| b.name())
        .map_err(|e| format!("this benchmark needs a CUDA GPU, and there is none usable: {e}"))?;
    let meta = run_meta();
    let runs_dir = repo_root().join("bench").join("runs");
    std::fs::create_dir_all(&runs_dir)?;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("manifest.json"))?)?;

    let cuda = shardsage_run(
        "cuda",
        &data,
        &runs_dir.join("gpu-train-cuda"),
        steps,
        warmup,
        &limits,
    );
    let pyg = match (&python, &dataset) {
        (Some(py), Some(ds)) => Some(pyg_run(
            py,
            ds,
            &runs_dir.join("gpu-pyg.json"),
            steps,
            warmup,
            &limits,
        )),
        _ => None,
    };
    let cpu = with_cpu.then(|| {
        shardsage_run(
            "cpu",
            &data,
            &runs_dir.join("gpu-train-cpu"),
            steps,
            warmup,
            &limits,
        )
    });
    let cores = all_threads();
    let config = format!(
        "OGB's reference configuration (3 SAGE mean layers of 256, 3-layer predictor, fan-outs \
         15,10,5, batch {BATCH} positive edges with one uniform negative each, Adam lr 0.0005), \
         1 epoch of {steps} steps, medians over the steps after {warmup} warm-up steps"
    );
    let graph = format!(
        "generated citation graph {} ({} nodes, {} edges, 1 part)",
        data.display(),
        manifest["num_nodes"],
        manifest["num_edges"]
    );
    let mut failed = Vec::new();

    // shardsage: GPU against CPU.
    let mut ours: Vec<&RunResult> = vec![&cuda];
    ours.extend(cpu.as_ref());
    failed.extend(
        ours.iter()
            .filter_map(|r| r.error.as_ref().map(|_| r.name.clone())),
    );
    let tbl = results_table(&ours, warmup);
    println!("training throughput on {device}:\n{tbl}");
    let speedup = cpu
        .as_ref()
        .filter(|c| c.error.is_none() && cuda.error.is_none())
        .map(|c| c.step_median(warmup) / cuda.step_median(warmup));
    let summary = match (speedup, &cpu) {
        (Some(x), _) => format!("GPU / CPU ({cores} cores) positive edges per second: {x:.2}x."),
        (None, None) => "No CPU run (--no-cpu).".into(),
        (None, Some(_)) => "No GPU / CPU ratio: a run did not complete (see its error).".into(),
    };
    println!("{summary}");
    let json = serde_json::json!({
        "scenario": "gpu-train",
        "meta": meta,
        "device": device,
        "data": data,
        "manifest": manifest,
        "data_info": data_info,
        "config": config,
        "steps": steps,
        "warmup_steps_skipped": warmup,
        "batch_size": BATCH,
        "gpu_over_cpu": speedup,
        "runs": ours.iter().map(|r| r.json(warmup)).collect::<Vec<_>>(),
    });
    let jpath = write_json("gpu-train", &json)?;
    let svg = results_dir().join("gpu-train.svg");
    phase_chart(
        &svg,
        &format!("Training step by phase, {device}"),
        &ours,
        warmup,
    )?;
    update_results_md(
        "bench-gpu-train",
        &format!(
            "## Training on one GPU (`scripts/gpu-run.sh train`)\n\n{}\n\n\
             `shardsage train` as one process (W = 1) with `--device cuda` on {device}, then \
             `--device cpu` on all {cores} cores of the same machine; {graph}; {config}. Times \
             in ms; wall time includes start-up, loading, the final validation evaluation and \
             checkpoints.\n\n{tbl}\n{summary}\n\nPlot: `bench/results/gpu-train.svg`; data: \
             `bench/results/gpu-train.json`.\n",
            meta_line(&meta)
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());

    // shardsage against PyG on the same GPU.
    if let Some(pyg) = &pyg {
        let both = [&cuda, pyg];
        failed.extend(pyg.error.as_ref().map(|_| pyg.name.clone()));
        let tbl = results_table(&both, warmup);
        let x = if pyg.error.is_none() && cuda.error.is_none() {
            pyg.step_median(warmup) / cuda.step_median(warmup)
        } else {
            f64::NAN
        };
        let versions = format!(
            "torch {}, torch_geometric {}",
            pyg.extra["torch"].as_str().unwrap_or("?"),
            pyg.extra["torch_geometric"].as_str().unwrap_or("?")
        );
        let summary = if x.is_finite() {
            format!(
                "shardsage / PyG positive edges per second on the same GPU: {x:.2}x ({versions})."
            )
        } else {
            format!("No shardsage / PyG ratio: a run did not complete (see its error; {versions}).")
        };
        println!("shardsage against PyG on {device}:\n{tbl}{summary}");
        let json = serde_json::json!({
            "scenario": "gpu-pyg",
            "meta": meta,
            "device": device,
            "dataset": dataset,
            "data_info": data_info,
            "config": config,
            "steps": steps,
            "warmup_steps_skipped": warmup,
            "batch_size": BATCH,
            "torch_and_pyg": versions,
            "shardsage_over_pyg": x,
            "runs": both.iter().map(|r| r.json(warmup)).collect::<Vec<_>>(),
        });
        let jpath = write_json("gpu-pyg", &json)?;
        let svg = results_dir().join("gpu-pyg.svg");
        bar_chart(
            &svg,
            &format!("shardsage vs PyG on {device}"),
            "positive edges/s",
            &["throughput".to_string()],
            &both
                .iter()
                .map(|r| (r.name.clone(), vec![BATCH as f64 / r.step_median(warmup)]))
                .collect::<Vec<_>>(),
            None,
        )?;
        update_results_md(
            "bench-gpu-pyg",
            &format!(
                "## shardsage vs PyTorch Geometric on one GPU (`scripts/gpu-run.sh pyg`)\n\n{}\n\n\
                 Back to back on {device}, the same dataset file and the same steps: `shardsage \
                 train --device cuda` (one process) and `bench/pyg/train_pyg.py --device cuda` \
                 ({versions}; features and model on the GPU, its numpy sampler on the host, \
                 trimmed bipartite blocks); {graph}; {config}. PyG's step time runs from sampling \
                 to the optimiser step (the loss read-back synchronises); its `compute` is \
                 everything after sampling (feature gather, forward, backward, optimiser step). \
                 Times in ms.\n\n{tbl}\n\
                 {summary}\n\nPlot: `bench/results/gpu-pyg.svg`; data: \
                 `bench/results/gpu-pyg.json`.\n",
                meta_line(&meta)
            ),
        )?;
        println!("wrote {} and {}", jpath.display(), svg.display());
    }
    if !failed.is_empty() {
        return Err(format!("failed runs: {}", failed.join(", ")).into());
    }
    Ok(())
}

/// Step time by phase per run (ms), plus the whole step.
fn phase_chart(path: &Path, title: &str, runs: &[&RunResult], warmup: usize) -> BenchResult<()> {
    let cats: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    let mut series: Vec<(String, Vec<f64>)> = PHASES
        .iter()
        .map(|p| {
            (
                p.to_string(),
                runs.iter()
                    .map(|r| {
                        r.phases
                            .iter()
                            .find(|(n, _)| n == p)
                            .map(|(_, v)| v * 1e3)
                            .unwrap_or(f64::NAN)
                    })
                    .collect(),
            )
        })
        .collect();
    series.push((
        "whole step".into(),
        runs.iter().map(|r| r.step_median(warmup) * 1e3).collect(),
    ));
    bar_chart(path, title, "ms per step", &cats, &series, None)
}
