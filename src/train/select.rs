//! `shardsage select RUN_DIR...`: model selection. Ranks runs by the best value of a validation
//! metric (higher is better) found in their `metrics.jsonl` eval records of split `valid`, names
//! the best run and its best checkpoint (`RUN_DIR/checkpoints/best.ssck` when present), and
//! writes that checkpoint's path (`--write-best`) and the ranking as JSON (`--json-out`) where a
//! workflow's next step reads them.
//!
//! Only finished runs are ranked: a run whose last record is not the `end` record training
//! writes when it is done (stopped by a signal, failed, or still running) is listed as
//! unfinished with that reason, unless `--allow-unfinished`. A run whose metrics cannot be read,
//! or that has no validation value of the metric, is listed as failed with the reason. Neither is
//! ever dropped from the table.
//!
//! Ties are broken deterministically, whatever the order the runs are given in: the higher
//! value first, then the run that reached it in fewer steps, then the run path in byte order.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::graph::store::atomic_write;
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
    /// Also write the ranking as JSON to this file (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Write the chosen run's best checkpoint path (one line) to this file, replaced
    /// atomically: an error, and the file left as it was, when the best run has no best.ssck.
    #[arg(long, value_name = "FILE")]
    pub write_best: Option<PathBuf>,
    /// Also rank runs that have not finished (no end record after their last step).
    #[arg(long)]
    pub allow_unfinished: bool,
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
        /// Whether the run's last record is its end record.
        finished: bool,
    },
    /// The run has not finished; it is not ranked (see `--allow-unfinished`).
    Unfinished {
        run: PathBuf,
        reason: String,
        /// Its best validation value so far, if any.
        best_metric: Option<f64>,
    },
    /// The run could not be ranked.
    Failed { run: PathBuf, error: String },
}

impl RunResult {
    /// The run directory.
    pub fn run(&self) -> &Path {
        match self {
            RunResult::Ok { run, .. }
            | RunResult::Unfinished { run, .. }
            | RunResult::Failed { run, .. } => run,
        }
    }
}

/// The ranking: ranked runs best first, then unfinished and failed runs in the order given.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Selection {
    pub metric: String,
    pub split: String,
    pub runs: Vec<RunResult>,
}

impl Selection {
    /// The best run, if any run could be ranked.
    pub fn best(&self) -> Option<&RunResult> {
        self.runs
            .first()
            .filter(|r| matches!(r, RunResult::Ok { .. }))
    }
}

/// What one run's metrics file says.
struct RunSummary {
    /// The best validation value of the metric: (value, epoch, global step); on equal values the
    /// earliest evaluation.
    best: Option<(f64, u64, u64)>,
    /// None when the run is finished, else why not.
    unfinished: Option<String>,
}

fn summarise_run(run: &Path, metric: &str) -> std::result::Result<RunSummary, String> {
    let path = metrics_path(run);
    if !path.is_file() {
        return Err(format!("no metrics file {}", path.display()));
    }
    let records = read_metrics(&path).map_err(|e| e.to_string())?;
    let mut best: Option<(f64, u64, u64)> = None;
    let mut evals = 0usize;
    // The last record that says where the run is (records of unknown kinds do not).
    let mut last: Option<&Record> = None;
    for r in &records {
        match r {
            Record::End(_) | Record::Step(_) => last = Some(r),
            Record::Eval(e) => {
                last = Some(r);
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
            Record::Other(_) => {}
        }
    }
    let why = "and no end record follows (stopped, failed, or still running)";
    let unfinished = match last {
        Some(Record::End(_)) => None,
        Some(Record::Step(s)) => Some(format!(
            "did not finish: its last record is step {} (epoch {}) {why}",
            s.global_step, s.epoch
        )),
        Some(Record::Eval(e)) => Some(format!(
            "did not finish: its last record is the {} evaluation at step {} {why}",
            e.split, e.global_step
        )),
        _ => Some(format!("{} has no records", path.display())),
    };
    if best.is_none() && unfinished.is_none() {
        return Err(if evals == 0 {
            format!("no '{SELECTION_SPLIT}' eval records in {}", path.display())
        } else {
            format!(
                "no finite '{metric}' in the {evals} '{SELECTION_SPLIT}' eval records of {}",
                path.display()
            )
        });
    }
    Ok(RunSummary { best, unfinished })
}

/// Ranks `runs` by their best validation `metric`; unfinished runs are set aside unless
/// `allow_unfinished`. Errors only when `runs` is empty.
pub fn select_runs(runs: &[PathBuf], metric: &str, allow_unfinished: bool) -> Result<Selection> {
    if runs.is_empty() {
        return Err(Error::config("runs", "no run directories given"));
    }
    let mut ok = Vec::new();
    let mut rest = Vec::new();
    for run in runs {
        match summarise_run(run, metric) {
            Ok(RunSummary {
                best: Some((best_metric, epoch, global_step)),
                unfinished,
            }) if unfinished.is_none() || allow_unfinished => {
                let best = run.join("checkpoints").join(BEST_NAME);
                ok.push(RunResult::Ok {
                    run: run.clone(),
                    best_metric,
                    epoch,
                    global_step,
                    checkpoint: best.is_file().then_some(best),
                    finished: unfinished.is_none(),
                });
            }
            Ok(RunSummary { best, unfinished }) => {
                let mut reason = unfinished.unwrap_or_default();
                if best.is_none() {
                    reason.push_str(&format!("; no finite '{SELECTION_SPLIT}' '{metric}' yet"));
                }
                rest.push(RunResult::Unfinished {
                    run: run.clone(),
                    reason,
                    best_metric: best.map(|b| b.0),
                });
            }
            Err(error) => rest.push(RunResult::Failed {
                run: run.clone(),
                error,
            }),
        }
    }
    let key = |r: &RunResult| match r {
        RunResult::Ok {
            best_metric,
            global_step,
            run,
            ..
        } => (*best_metric, *global_step, run.as_os_str().to_owned()),
        _ => (f64::NEG_INFINITY, u64::MAX, Default::default()),
    };
    ok.sort_by(|a, b| {
        let (va, sa, ra) = key(a);
        let (vb, sb, rb) = key(b);
        vb.total_cmp(&va).then(sa.cmp(&sb)).then(ra.cmp(&rb))
    });
    ok.extend(rest);
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
        .map(|r| r.run().display().to_string().len())
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
            RunResult::Failed { run, error: why }
            | RunResult::Unfinished {
                run, reason: why, ..
            } => {
                let status = if matches!(r, RunResult::Failed { .. }) {
                    "FAILED"
                } else {
                    "UNFINISHED"
                };
                let _ = writeln!(
                    s,
                    "{:>4}  {:<name_width$}  {:>12}  {:>5}  {}",
                    "-",
                    run.display(),
                    status,
                    "-",
                    why
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

/// `shardsage select`: prints the ranking, writes the files asked for; an error when no run
/// could be ranked.
pub fn run(args: &SelectArgs) -> Result<()> {
    let sel = select_runs(&args.runs, &args.metric, args.allow_unfinished)?;
    let json = serde_json::to_string_pretty(&to_json(&sel)).unwrap_or_default();
    if args.json {
        println!("{json}");
    } else {
        print!("{}", render_table(&sel));
    }
    if let Some(path) = &args.json_out {
        write_text(path, &format!("{json}\n"))?;
    }
    let Some(RunResult::Ok {
        run, checkpoint, ..
    }) = sel.best()
    else {
        let unfinished = sel
            .runs
            .iter()
            .filter(|r| matches!(r, RunResult::Unfinished { .. }))
            .count();
        return Err(Error::Other(format!(
            "none of the {} runs has a '{}' value for '{}'{}",
            sel.runs.len(),
            SELECTION_SPLIT,
            args.metric,
            if unfinished > 0 {
                format!(
                    " from a finished run ({unfinished} unfinished; --allow-unfinished ranks them)"
                )
            } else {
                String::new()
            }
        )));
    };
    if let Some(path) = &args.write_best {
        let Some(checkpoint) = checkpoint else {
            return Err(Error::invalid(
                run,
                format!(
                    "the best run has no checkpoints/{BEST_NAME}; {} not written",
                    path.display()
                ),
            ));
        };
        write_text(path, &format!("{}\n", checkpoint.display()))?;
    }
    Ok(())
}

/// Replaces `path` with `text` atomically (a reader never sees half of it).
fn write_text(path: &Path, text: &str) -> Result<()> {
    atomic_write(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| Error::io(tmp, e))
    })
}
