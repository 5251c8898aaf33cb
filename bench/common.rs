//! Shared helpers of the benchmark programs (`examples/bench_*.rs`, which include this file with
//! `#[path]`): run metadata (machine, date, commit, command), medians of repeated timings, the
//! STREAM-like bandwidth probe every ratio is measured against, result files (JSON under
//! `bench/results/`, a section of `bench/RESULTS.md`), plain tables and SVG charts.
//!
//! Absolute times on a shared machine are noisy, so each program measures the quantities it
//! compares side by side in one run and reports medians of several repetitions.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use plotters::prelude::*;
use rayon::prelude::*;

pub type BenchResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The repository root (where `bench/` lives): `$BENCH_REPO_ROOT` when set (a bundled program
/// runs in another checkout than the one that built it, see scripts/gpu-run.sh), else the build's.
pub fn repo_root() -> PathBuf {
    std::env::var_os("BENCH_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The value after `name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn arg_usize(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn arg_list(name: &str, default: &[usize]) -> Vec<usize> {
    arg(name)
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// The sampler seeds of `batches` training batches of `batch_size` positive edges, as a training
/// step draws them: the edges in epoch 0's shuffled order, their two endpoints plus one uniform
/// negative target each, deduplicated in first-seen order.
pub fn batch_seed_sets(
    part: &shardsage::graph::store::GraphPart,
    batches: usize,
    batch_size: usize,
) -> Vec<Vec<u64>> {
    use shardsage::sample::negative::negative_targets;
    use shardsage::sample::shuffle::{dedup_first_seen, epoch_permutation};
    let ids: Vec<u64> = (0..part.train_edges.len() as u64).collect();
    let order = epoch_permutation(0, 0, &ids);
    (0..batches)
        .map(|b| {
            let chunk: Vec<usize> = (0..batch_size)
                .map(|i| order[(b * batch_size + i) % order.len()])
                .collect();
            let edge_ids: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
            let neg = negative_targets(0, 0, b as u64, &edge_ids, 1, part.meta.num_nodes);
            let mut endpoints = Vec::with_capacity(3 * batch_size);
            for (k, &i) in chunk.iter().enumerate() {
                endpoints.push(part.train_edges[i][0]);
                endpoints.push(part.train_edges[i][1]);
                endpoints.push(neg[k]);
            }
            dedup_first_seen(&endpoints).0
        })
        .collect()
}

pub fn results_dir() -> PathBuf {
    repo_root().join("bench").join("results")
}

fn run_text(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Machine, date, commit and command of this run, for the JSON and the report.
pub fn run_meta() -> serde_json::Value {
    let lscpu = run_text("lscpu", &[]).unwrap_or_default();
    let field = |name: &str| {
        lscpu
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let root = repo_root();
    let root = root.to_string_lossy();
    // A bundled program names the commit it was built from (`$BENCH_COMMIT`): the checkout it
    // runs in may have no git history.
    let bundled_commit = std::env::var("BENCH_COMMIT").ok();
    let commit = bundled_commit.clone().unwrap_or_else(|| {
        run_text("git", &["-C", &root, "rev-parse", "--short", "HEAD"]).unwrap_or_default()
    });
    let dirty = bundled_commit.is_none()
        && run_text(
            "git",
            // The results this program writes do not make the code dirty.
            &[
                "-C",
                &root,
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!bench/results",
                ":!bench/RESULTS.md",
            ],
        )
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    serde_json::json!({
        "date": run_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        "commit": if dirty { format!("{commit} (with uncommitted changes)") } else { commit },
        "cpu_model": field("Model name"),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "l3_cache": field("L3 cache"),
        "load_avg_1m": std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok())),
        "memory_gib": (mem_kib as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        "command": std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
            std::env::args().collect::<Vec<_>>().join(" ")
        }),
    })
}

/// One markdown line describing the run (for RESULTS.md).
pub fn meta_line(meta: &serde_json::Value) -> String {
    format!(
        "Run {} on commit `{}`: {} ({} cores, L3 {}, {} GiB memory; load average {} at the \
         start: the machine is shared). Command: `{}`.",
        meta["date"].as_str().unwrap_or(""),
        meta["commit"].as_str().unwrap_or(""),
        meta["cpu_model"].as_str().unwrap_or(""),
        meta["cores"],
        meta["l3_cache"].as_str().unwrap_or(""),
        meta["memory_gib"],
        meta["load_avg_1m"],
        meta["command"].as_str().unwrap_or(""),
    )
}

/// Median seconds of `reps` products `C = op(A) · op(B)` (`m x k` times `k x n`, row-major, the
/// backend's `gemm` contract) on `be`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_seconds(
    be: &shardsage::backend::CpuBackend,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    reps: usize,
) -> BenchResult<f64> {
    use shardsage::backend::prelude::*;
    let a = be.upload(&vec![0.5f32; m * k])?;
    let b = be.upload(&vec![0.25f32; k * n])?;
    let mut c = be.zeros(m * n)?;
    let mut err = None;
    let times = time_reps(reps, || {
        if let Err(e) = be.gemm(
            trans_a,
            trans_b,
            m,
            n,
            k,
            1.0,
            (&a, 0),
            (&b, 0),
            0.0,
            (&mut c, 0),
        ) {
            err = Some(e);
        }
    });
    match err {
        Some(e) => Err(e.into()),
        None => Ok(median(&times)),
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Runs `f` once to warm up, then `reps` times; returns the seconds of each timed run.
pub fn time_reps(reps: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// STREAM-like bandwidth probe

/// Elements per parallel task of the probe (256 KiB of f32).
const STREAM_CHUNK: usize = 64 * 1024;

/// Arrays of the probe; allocated and touched once (first-touch page faults are not timed).
pub struct Stream {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
}

impl Stream {
    /// Three arrays of `bytes` each.
    pub fn new(bytes: usize) -> Stream {
        let n = bytes / 4;
        Stream {
            a: vec![1.0; n],
            b: vec![2.0; n],
            c: vec![0.5; n],
        }
    }
    pub fn array_bytes(&self) -> usize {
        self.a.len() * 4
    }

    /// `b = a` with the threads of `pool`; STREAM counts 2 x array bytes (read + write).
    pub fn copy(&mut self, pool: &rayon::ThreadPool) {
        let (a, b) = (&self.a, &mut self.b);
        pool.install(|| {
            b.par_chunks_mut(STREAM_CHUNK)
                .zip(a.par_chunks(STREAM_CHUNK))
                .for_each(|(d, s)| {
                    for (x, y) in d.iter_mut().zip(s) {
                        *x = *y;
                    }
                })
        });
    }

    /// `a = b + s * c`; STREAM counts 3 x array bytes.
    pub fn triad(&mut self, pool: &rayon::ThreadPool, s: f32) {
        let (a, b, c) = (&mut self.a, &self.b, &self.c);
        pool.install(|| {
            a.par_chunks_mut(STREAM_CHUNK)
                .zip(b.par_chunks(STREAM_CHUNK))
                .zip(c.par_chunks(STREAM_CHUNK))
                .for_each(|((x, y), z)| {
                    for ((x, y), z) in x.iter_mut().zip(y).zip(z) {
                        *x = *y + s * *z;
                    }
                })
        });
    }

    /// Median copy bandwidth in bytes/s over `reps` runs.
    pub fn copy_bandwidth(&mut self, pool: &rayon::ThreadPool, reps: usize) -> (f64, Vec<f64>) {
        let bytes = 2.0 * self.array_bytes() as f64;
        let times = time_reps(reps, || self.copy(pool));
        let bw: Vec<f64> = times.iter().map(|t| bytes / t).collect();
        (median(&bw), bw)
    }

    /// Median triad bandwidth in bytes/s over `reps` runs.
    pub fn triad_bandwidth(&mut self, pool: &rayon::ThreadPool, reps: usize) -> (f64, Vec<f64>) {
        let bytes = 3.0 * self.array_bytes() as f64;
        let times = time_reps(reps, || self.triad(pool, 3.0));
        let bw: Vec<f64> = times.iter().map(|t| bytes / t).collect();
        (median(&bw), bw)
    }
}

pub fn pool(threads: usize) -> BenchResult<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?)
}

pub fn all_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------
// Output

pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
pub const GB: f64 = 1e9;

/// A markdown table (also readable as plain text).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:>w$}", c, w = widths[i]))
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut s = line(headers.iter().map(|h| h.to_string()).collect());
    s.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        s.push_str(&line(r.clone()));
    }
    s
}

/// Writes `bench/results/<name>.json` (pretty) and returns its path.
pub fn write_json(name: &str, value: &serde_json::Value) -> BenchResult<PathBuf> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!(".{name}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(value)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Replaces (or appends) the section of `bench/RESULTS.md` between this scenario's markers, so
/// each `make bench-<name>` refreshes only its own figures.
pub fn update_results_md(name: &str, body: &str) -> BenchResult<PathBuf> {
    let path = repo_root().join("bench").join("RESULTS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmark results\n\nEach section is written by its `make bench-<name>` run (see \
         bench/README.md); figures are medians of repeated measurements on the machine named in \
         the section.\n"
            .to_string()
    });
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{}{}", &old[..b], section, &old[e + end.len()..])
        }
        _ => format!("{}\n{}\n", old.trim_end(), section),
    };
    std::fs::write(&path, new)?;
    Ok(path)
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn plot_err<E: std::fmt::Debug>(e: E) -> Box<dyn std::error::Error> {
    format!("plot: {e:?}").into()
}

/// A grouped bar chart: one group per category, one bar per series. `values[s][c]` is series
/// `s` in category `c` (NaN draws nothing). An optional horizontal reference line is drawn at
/// `reference` (e.g. 100% of copy bandwidth).
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    reference: Option<(f64, &str)>,
) -> BenchResult<()> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .chain(reference.map(|r| r.0))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        * 1.15;
    let ymax = if ymax > 0.0 { ymax } else { 1.0 };
    let n_cat = categories.len().max(1);
    let n_ser = series.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n_cat as f64, 0.0..ymax)
        .map_err(plot_err)?;
    let cats = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n_cat * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 && i < cats.len() {
                cats[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(plot_err)?;
    let width = 0.8 / n_ser as f64;
    for (s, (name, values)) in series.iter().enumerate() {
        let c = color(s);
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let x0 = i as f64 + 0.1 + s as f64 * width;
                        Rectangle::new([(x0, 0.0), (x0 + width * 0.92, v)], c.filled())
                    }),
            )
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    if let Some((y, label)) = reference {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, y), (n_cat as f64, y)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?
            .label(label.to_string())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A line chart of several series of (x, y) points.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> BenchResult<()> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let pts = series.iter().flat_map(|(_, p)| p.iter().copied());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        if y.is_finite() {
            y1 = y1.max(y);
        }
    }
    if x0 >= x1 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(plot_err)?;
    for (s, (name, p)) in series.iter().enumerate() {
        let c = color(s);
        let p: Vec<(f64, f64)> = p.iter().copied().filter(|(_, y)| y.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(p.clone(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], c.stroke_width(2)));
        chart
            .draw_series(p.iter().map(|&(x, y)| Circle::new((x, y), 3, c.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// `x` with a unit prefix (k, M, G).
pub fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}
