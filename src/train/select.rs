//! `shardsage select RUN_DIR...`: model selection. Ranks runs by the best value of a validation
//! metric (higher is better) found in their `metrics.jsonl` eval records of split `valid`, names
//! the best run and its best checkpoint (`RUN_DIR/checkpoints/best.ssck` when present).
//!
//! A run whose metrics cannot be read, or that has no validation value of the metric, is listed
//! as failed with the reason, never dropped.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::train::checkpoint::BEST_NAME;
use crate::train::metrics::{metrics_path, read_metrics, Record};
use crate::{Error, Result};

/// Split whose eval records are used for selection.
pub const SELECTION_SPLIT: &str = "valid";

/// Arguments of `shardsage select`.
#[derive(clap::Args, Debug)]
pub struct SelectArgs {
    /// Run directories (each with a metrics.jsonl).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Validation metric to rank by (higher is better): mrr, hits@10, accuracy, macro_f1, ...
    #[arg(long, default_value = "mrr")]
    pub metric: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One run's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunResult {
    /// The run has a best validation value.
    Ok {
        run: PathBuf,
        best_metric: f64,
        epoch: u64,
        global_step: u64,
        /// `RUN_DIR/checkpoints/best.ssck`, if that file exists.
        checkpoint: Option<PathBuf>,
    },
    /// The run could not be ranked.
    Failed { run: PathBuf, error: String },
}

/// The ranking: successful runs best first, then failed runs in the order given.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Selection {
    pub metric: String,
    pub split: String,
    pub runs: Vec<RunResult>,
}

impl Selection {
    /// The best run, if any run succeeded.
    pub fn best(&self) -> Option<&RunResult> {
        self.runs
            .first()
            .filter(|r| matches!(r, RunResult::Ok { .. }))
    }
}

/// The best validation value of `metric` in one run: (value, epoch, global step). On equal
/// values the earliest evaluation wins.
fn best_of_run(run: &Path, metric: &str) -> std::result::Result<(f64, u64, u64), String> {
    let path = metrics_path(run);
    if !path.is_file() {
        return Err(format!("no metrics file {}", path.display()));
    }
    let records = read_metrics(&path).map_err(|e| e.to_string())?;
    let mut best: Option<(f64, u64, u64)> = None;
    let mut evals = 0usize;
    for r in &records {
        let Record::Eval(e) = r else { continue };
        if e.split != SELECTION_SPLIT {
            continue;
        }
        evals += 1;
        let Some(&v) = e.metrics.get(metric) else {
            continue;
        };
        if v.is_finite() && best.is_none_or(|b| v > b.0) {
            best = Some((v, e.epoch, e.global_step));
        }
    }
    best.ok_or_else(|| {
        if evals == 0 {
            format!("no '{SELECTION_SPLIT}' eval records in {}", path.display())
        } else {
            format!(
                "no finite '{metric}' in the {evals} '{SELECTION_SPLIT}' eval records of {}",
                path.display()
            )
        }
    })
}

/// Ranks `runs` by their best validation `metric`. Errors only when `runs` is empty.
pub fn select_runs(runs: &[PathBuf], metric: &str) -> Result<Selection> {
    if runs.is_empty() {
        return Err(Error::config("runs", "no run directories given"));
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for run in runs {
        match best_of_run(run, metric) {
            Ok((best_metric, epoch, global_step)) => {
                let best = run.join("checkpoints").join(BEST_NAME);
                ok.push(RunResult::Ok {
                    run: run.clone(),
                    best_metric,
                    epoch,
                    global_step,
                    checkpoint: best.is_file().then_some(best),
                });
            }
            Err(error) => failed.push(RunResult::Failed {
                run: run.clone(),
                error,
            }),
        }
    }
    // Stable sort: equal values keep the order given.
    ok.sort_by(|a, b| {
        let value = |r: &RunResult| match r {
            RunResult::Ok { best_metric, .. } => *best_metric,
            RunResult::Failed { .. } => f64::NEG_INFINITY,
        };
        value(b).total_cmp(&value(a))
    });
    ok.extend(failed);
    Ok(Selection {
        metric: metric.to_string(),
        split: SELECTION_SPLIT.to_string(),
        runs: ok,
    })
}

/// The ranking as a text table followed by a line naming the best run.
pub fn render_table(sel: &Selection) -> String {
    use std::fmt::Write as _;
    let name_width = sel
        .runs
        .iter()
        .map(|r| match r {
            RunResult::Ok { run, .. } | RunResult::Failed { run, .. } => {
                run.display().to_string().len()
            }
        })
        .max()
        .unwrap_or(3)
        .max(3);
    let metric_col = format!("best {}", sel.metric);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>4}  {:<name_width$}  {:>12}  {:>5}  checkpoint",
        "rank", "run", metric_col, "epoch"
    );
    for (i, r) in sel.runs.iter().enumerate() {
        match r {
            RunResult::Ok {
                run,
                best_metric,
                epoch,
                checkpoint,
                ..
            } => {
                let ckpt = checkpoint
                    .as_ref()
                    .map_or("-".to_string(), |p| p.display().to_string());
                let _ = writeln!(
                    s,
                    "{:>4}  {:<name_width$}  {:>12.6}  {:>5}  {}",
                    i + 1,
                    run.display(),
                    best_metric,
                    epoch,
                    ckpt
                );
            }
            RunResult::Failed { run, error } => {
                let _ = writeln!(
                    s,
                    "{:>4}  {:<name_width$}  {:>12}  {:>5}  {}",
                    "-",
                    run.display(),
                    "FAILED",
                    "-",
                    error
                );
            }
        }
    }
    match sel.best() {
        Some(RunResult::Ok {
            run,
            best_metric,
            epoch,
            checkpoint,
            ..
        }) => {
            let _ = write!(
                s,
                "best: {} ({} {} = {:.6} at epoch {})",
                run.display(),
                sel.split,
                sel.metric,
                best_metric,
                epoch
            );
            match checkpoint {
                Some(p) => {
                    let _ = writeln!(s, ", checkpoint {}", p.display());
                }
                None => {
                    let _ = writeln!(s, ", no best.ssck found");
                }
            }
        }
        _ => {
            let _ = writeln!(s, "best: none (every run failed)");
        }
    }
    s
}

/// The ranking as JSON: `{"metric","split","best": <run or null>,"runs":[...]}` where each run
/// has `status` `ok` (with `best_metric`, `epoch`, `global_step`, `checkpoint`) or `failed`
/// (with `error`).
pub fn to_json(sel: &Selection) -> serde_json::Value {
    let mut v = serde_json::to_value(sel).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut v {
        let best = sel
            .best()
            .and_then(|b| serde_json::to_value(b).ok())
            .unwrap_or(serde_json::Value::Null);
        map.insert("best".into(), best);
    }
    v
}

/// `shardsage select`: prints the ranking; an error when no run could be ranked.
pub fn run(args: &SelectArgs) -> Result<()> {
    let sel = select_runs(&args.runs, &args.metric)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&sel)).unwrap_or_default()
        );
    } else {
        print!("{}", render_table(&sel));
    }
    if sel.best().is_none() {
        return Err(Error::Other(format!(
            "none of the {} runs has a '{}' value for '{}'",
            sel.runs.len(),
            SELECTION_SPLIT,
            args.metric
        )));
    }
    Ok(())
}
