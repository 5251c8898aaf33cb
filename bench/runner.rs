//! Running the real program for the end-to-end benchmarks (`bench_train`, `bench_scaling`,
//! `bench_pyg`, which include this file with `#[path]`): cached generated datasets and part sets
//! under `bench/.data/`, `mpirun -np W shardsage train` with each rank's peak RSS, and the
//! parsing of `RUN_DIR/metrics.jsonl`.
//!
//! Peak RSS per rank: mpirun starts this benchmark program as `<bench> wrap RSS_DIR -- shardsage
//! ...`; the wrapper runs the real rank as its child (which inherits the launcher's environment
//! and so joins the MPI job) and writes the child's `ru_maxrss` to `RSS_DIR/rank-<r>`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::*;

pub fn data_dir() -> PathBuf {
    repo_root().join("bench").join(".data")
}

/// The `shardsage` binary: `$SHARDSAGE_BIN` when set (scripts/gpu-run.sh points it at a wrapper
/// that starts the bundled binary), else this checkout's release build.
pub fn shardsage_bin() -> BenchResult<PathBuf> {
    if let Some(p) = std::env::var_os("SHARDSAGE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = repo_root().join("target").join("release").join("shardsage");
    if !p.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release` (the make targets do)",
            p.display()
        )
        .into());
    }
    Ok(p)
}

/// Runs a command, echoing it; fails with its status.
pub fn run_cmd(cmd: &mut Command) -> BenchResult<f64> {
    eprintln!("+ {cmd:?}");
    let t = Instant::now();
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}").into());
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `bench/.data/<name>.h5`, generated once with `shardsage generate --out` and the given
/// extra flags (e.g. `--nodes 200000 --feature-dim 128`), then reused.
pub fn ensure_dataset(name: &str, generate_args: &[String]) -> BenchResult<PathBuf> {
    let path = data_dir().join(format!("{name}.h5"));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(data_dir())?;
    let mut cmd = Command::new(shardsage_bin()?);
    cmd.arg("generate")
        .args(generate_args)
        .arg("--out")
        .arg(&path);
    run_cmd(&mut cmd)?;
    Ok(path)
}

/// `bench/.data/<name>-p<parts>/`, partitioned once from `dataset` (LDG, the default method).
pub fn ensure_parts(dataset: &Path, name: &str, parts: usize) -> BenchResult<PathBuf> {
    let dir = data_dir().join(format!("{name}-p{parts}"));
    if dir.join("manifest.json").exists() {
        return Ok(dir);
    }
    let mut cmd = Command::new(shardsage_bin()?);
    cmd.arg("partition")
        .arg("--dataset")
        .arg(dataset)
        .arg("--parts")
        .arg(parts.to_string())
        .arg("--out-dir")
        .arg(&dir);
    run_cmd(&mut cmd)?;
    Ok(dir)
}

/// If this process was started as `<bench> wrap RSS_DIR -- CMD...`, runs CMD, records its peak
/// RSS and exits with its status. Call first thing in `main`.
pub fn maybe_wrap() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("wrap") || args.len() < 5 || args[3] != "--" {
        return;
    }
    let rss_dir = PathBuf::from(&args[2]);
    let status = Command::new(&args[4]).args(&args[5..]).status();
    let code = match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(e) => {
            eprintln!("wrap: cannot run {}: {e}", args[4]);
            127
        }
    };
    // SAFETY: getrusage fills the struct we pass; RUSAGE_CHILDREN covers the waited-for child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } == 0;
    let rank = std::env::var("OMPI_COMM_WORLD_RANK")
        .or_else(|_| std::env::var("PMI_RANK"))
        .unwrap_or_else(|_| "0".into());
    if ok {
        // ru_maxrss is in KiB on Linux.
        let _ = std::fs::write(
            rss_dir.join(format!("rank-{rank}")),
            format!("{}\n", usage.ru_maxrss as u64 * 1024),
        );
    }
    std::process::exit(code);
}

/// What one `mpirun -np W shardsage train` run left behind.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub world: usize,
    pub run_dir: PathBuf,
    /// Wall time of the whole mpirun (start-up, training, evaluation, checkpoints).
    pub wall_s: f64,
    /// Peak RSS of each rank, by rank.
    pub rss_per_rank: Vec<u64>,
    pub steps: Vec<serde_json::Value>,
    pub evals: Vec<serde_json::Value>,
}

impl TrainOutcome {
    /// Step records after the first `skip` (warm-up: first-touch allocations, caches).
    pub fn steady_steps(&self, skip: usize) -> &[serde_json::Value] {
        let s = skip.min(self.steps.len().saturating_sub(1));
        &self.steps[s..]
    }
    /// Median over the steady steps of a numeric step field.
    pub fn step_median(&self, field: &str, skip: usize) -> f64 {
        let v: Vec<f64> = self
            .steady_steps(skip)
            .iter()
            .filter_map(|r| r[field].as_f64())
            .collect();
        median(&v)
    }
    /// Sum over all steps of a numeric step field.
    pub fn step_sum(&self, field: &str) -> f64 {
        self.steps.iter().filter_map(|r| r[field].as_f64()).sum()
    }
    /// The last evaluation's value of `metric` on `split`.
    pub fn last_eval(&self, split: &str, metric: &str) -> Option<f64> {
        self.evals
            .iter()
            .rev()
            .find(|e| e["split"].as_str() == Some(split))
            .and_then(|e| e["metrics"][metric].as_f64())
    }
}

/// Runs `mpirun -np world shardsage train --data DATA --run-dir RUN_DIR ARGS` (a fresh run
/// directory) and collects its metrics and each rank's peak RSS.
pub fn train(
    world: usize,
    data: &Path,
    run_dir: &Path,
    args: &[String],
) -> BenchResult<TrainOutcome> {
    let bin = shardsage_bin()?;
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir)?;
    }
    std::fs::create_dir_all(run_dir)?;
    let rss_dir = run_dir.join("rss");
    std::fs::create_dir_all(&rss_dir)?;
    let me = std::env::current_exe()?;
    let mut cmd = Command::new("mpirun");
    cmd.arg("-np")
        .arg(world.to_string())
        .arg("--oversubscribe")
        // Open MPI binds each rank to one core by default for small jobs; the ranks' own thread
        // pools need the whole machine.
        .arg("--bind-to")
        .arg("none")
        .arg(&me)
        .arg("wrap")
        .arg(&rss_dir)
        .arg("--")
        .arg(&bin)
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--run-dir")
        .arg(run_dir)
        .args(args);
    let wall_s = run_cmd(&mut cmd)?;
    let mut rss_per_rank = Vec::with_capacity(world);
    for r in 0..world {
        let text = std::fs::read_to_string(rss_dir.join(format!("rank-{r}"))).unwrap_or_default();
        rss_per_rank.push(text.trim().parse().unwrap_or(0));
    }
    let (steps, evals) = read_metrics(&run_dir.join("metrics.jsonl"))?;
    Ok(TrainOutcome {
        world,
        run_dir: run_dir.to_path_buf(),
        wall_s,
        rss_per_rank,
        steps,
        evals,
    })
}

/// The step and eval records of a metrics.jsonl, as raw JSON (later records of a repeated step
/// are kept as written: benchmark runs never resume).
pub fn read_metrics(path: &Path) -> BenchResult<(Vec<serde_json::Value>, Vec<serde_json::Value>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (mut steps, mut evals) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["kind"].as_str() {
            Some("step") => steps.push(v),
            Some("eval") => evals.push(v),
            _ => {}
        }
    }
    Ok((steps, evals))
}

pub fn mib(bytes: f64) -> String {
    format!("{:.0}", bytes / (1024.0 * 1024.0))
}
