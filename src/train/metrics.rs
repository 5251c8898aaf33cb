//! The run's metrics file, `RUN_DIR/metrics.jsonl`: one JSON object per line, written and
//! flushed line by line, so a crash loses at most the line being written and `tail -f` works.
//!
//! Three kinds of record: `{"kind":"step",...}` per optimizer step (loss, learning rate,
//! throughput, time split, memory, plus any extra fields), `{"kind":"eval",...}` per
//! evaluation (split and named metric values) and `{"kind":"end",...}` once a run has finished
//! (all its epochs, or early stopping; not when it was stopped by a signal or failed), which
//! `select` requires. Records of other kinds are kept as raw JSON by the reader, so new kinds do
//! not break `plot` and `select`.
//!
//! Non-finite numbers (a diverged loss) are written as JSON `null` and read back as NaN.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// File name of the metrics file inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One optimizer step. Throughput and timing fields default to 0 when absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub epoch: u64,
    /// Step within the epoch.
    pub step: u64,
    pub global_step: u64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Seed items (positive edges or nodes) processed per second, summed over ranks.
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub seeds_per_s: f64,
    /// Sampled edges per second, summed over ranks.
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub sampled_edges_per_s: f64,
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub time_sample_s: f64,
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub time_gather_s: f64,
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub time_compute_s: f64,
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub time_update_s: f64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// Any further fields (e.g. communication time, bytes exchanged), written at top level.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One evaluation of one split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub epoch: u64,
    pub global_step: u64,
    /// `valid`, `test` or `train`.
    pub split: String,
    /// Named metric values, e.g. `mrr`, `hits@10`, `accuracy` (see `LinkMetrics::to_map`).
    #[serde(deserialize_with = "map_f64_or_nan")]
    pub metrics: BTreeMap<String, f64>,
    /// Any further fields (e.g. evaluation time), written at top level.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Why a run ended (see [`EndRecord`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Every epoch asked for was trained.
    Completed,
    /// Validation stopped improving for `patience` evaluations.
    EarlyStop,
}

/// The last record of a finished run: written once training is over and its last checkpoint
/// is on disk. A resumed run that trains further appends step records after it, so a run is
/// finished when its last record is an end record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    pub epoch: u64,
    pub global_step: u64,
    pub reason: EndReason,
    /// The validation metric training selected by (`mrr`, `accuracy`) and its best value.
    pub metric: String,
    #[serde(default)]
    pub best_valid: Option<f64>,
}

/// A line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Step(StepRecord),
    Eval(EvalRecord),
    End(EndRecord),
    /// A record of a kind this build does not know, kept as written.
    Other(serde_json::Value),
}

impl Record {
    /// The record as one JSON object with its `kind` field.
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, value) = match self {
            Record::Step(s) => ("step", serde_json::to_value(s)),
            Record::Eval(e) => ("eval", serde_json::to_value(e)),
            Record::End(e) => ("end", serde_json::to_value(e)),
            Record::Other(v) => return v.clone(),
        };
        let mut value = value.unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("kind".to_string(), serde_json::Value::from(kind));
        }
        value
    }

    /// Parses one line (a JSON object with a `kind` field).
    pub fn from_json(mut value: serde_json::Value) -> std::result::Result<Record, String> {
        let serde_json::Value::Object(map) = &mut value else {
            return Err("not a JSON object".into());
        };
        let kind = match map.get("kind") {
            Some(serde_json::Value::String(k)) => k.clone(),
            _ => return Err("no string field 'kind'".into()),
        };
        match kind.as_str() {
            "step" | "eval" | "end" => {
                map.remove("kind");
                match kind.as_str() {
                    "step" => serde_json::from_value(value)
                        .map(Record::Step)
                        .map_err(|e| format!("step record: {e}")),
                    "eval" => serde_json::from_value(value)
                        .map(Record::Eval)
                        .map_err(|e| format!("eval record: {e}")),
                    _ => serde_json::from_value(value)
                        .map(Record::End)
                        .map_err(|e| format!("end record: {e}")),
                }
            }
            _ => Ok(Record::Other(value)),
        }
    }
}

fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn map_f64_or_nan<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    let raw = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// Writes `RUN_DIR/metrics.jsonl`, one flushed line per record. Only one process (rank 0)
/// should write a run's file.
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Starts a new metrics file in `run_dir` (created if needed), replacing any old one.
    pub fn create(run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
        let path = run_dir.join(METRICS_FILE);
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsWriter { path, file })
    }

    /// Continues the metrics file in `run_dir` (for a resumed run), creating it if absent. A
    /// partial last line (the process died while writing it) is cut off first. Records for
    /// steps that are run again after a resume are appended again; readers that plot keep the
    /// last record for each step.
    pub fn append(run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
        let path = run_dir.join(METRICS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        cut_partial_last_line(&path, &file)?;
        Ok(MetricsWriter { path, file })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record as one line and flushes it to the OS.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(&record.to_json())
            .map_err(|e| Error::invalid(&self.path, format!("serialising a record: {e}")))?;
        line.push(b'\n');
        // One write call per line: a reader never sees half a line followed by another.
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Writes a step record.
    pub fn step(&mut self, record: &StepRecord) -> Result<()> {
        self.write(&Record::Step(record.clone()))
    }

    /// Writes an eval record.
    pub fn eval(&mut self, record: &EvalRecord) -> Result<()> {
        self.write(&Record::Eval(record.clone()))
    }

    /// Writes the end record of a finished run.
    pub fn end(&mut self, record: &EndRecord) -> Result<()> {
        self.write(&Record::End(record.clone()))
    }
}

/// Truncates `file` after its last newline when it does not end with one. Reads only the tail
/// (metrics files of long runs are large).
fn cut_partial_last_line(path: &Path, file: &std::fs::File) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| Error::io(path, e);
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(());
    }
    let mut reader = file;
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        reader.seek(SeekFrom::Start(start)).map_err(io)?;
        reader.read_exact(buf).map_err(io)?;
        if end == len && buf.last() == Some(&b'\n') {
            return Ok(());
        }
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    log::warn!(
        "{}: dropping a partial last line of {} bytes",
        path.display(),
        len - end
    );
    file.set_len(end).map_err(io)
}

/// Reads every record of a metrics file (`RUN_DIR/metrics.jsonl` or any path). A bad line is an
/// error naming its line number, except an unterminated last line (a write cut short by a
/// crash), which is skipped with a warning. Empty lines are ignored.
pub fn read_metrics(path: &Path) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut records = Vec::new();
    let mut line = String::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let terminated = line.ends_with('\n');
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| e.to_string())
            .and_then(Record::from_json);
        match parsed {
            Ok(r) => records.push(r),
            Err(msg) if !terminated => {
                log::warn!(
                    "{}:{line_no}: skipping a partial last line ({msg})",
                    path.display()
                );
            }
            Err(msg) => return Err(Error::parse(path, line_no, msg)),
        }
    }
    Ok(records)
}

/// One evaluation as a line of `name=value` pairs in the form Katib's StdOut and File (TEXT)
/// metrics collectors parse (names of `[A-Za-z0-9_-]`, so `hits@10` becomes `hits_at_10`),
/// after the RFC 3339 timestamp Katib reads as the time of the values:
/// `2026-12-02T02:30:00Z epoch=3 global_step=120 valid-mrr=0.412300 valid-hits_at_10=0.800000`.
pub fn katib_line(
    timestamp: &str,
    epoch: u64,
    global_step: u64,
    split: &str,
    metrics: &BTreeMap<String, f64>,
) -> String {
    let name = |key: &str| -> String {
        key.replace('@', "_at_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut line = format!("{timestamp} epoch={epoch} global_step={global_step}");
    for (k, v) in metrics {
        // A non-finite value would not parse as a number; Katib then sees no value at all.
        if v.is_finite() {
            line.push_str(&format!(" {}-{}={v:.6}", name(split), name(k)));
        }
    }
    line
}

/// The metrics file of a run directory: `RUN_DIR/metrics.jsonl`.
pub fn metrics_path(run_dir: &Path) -> PathBuf {
    run_dir.join(METRICS_FILE)
}
