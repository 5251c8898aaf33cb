//! `shardsage plot RUN_DIR`: renders a run's `metrics.jsonl` into one SVG image: the training
//! loss per global step (raw and smoothed) and one panel per evaluation metric with a curve per
//! split, against the epoch.
//!
//! Records repeated after a resume (the same step or evaluation written twice) are collapsed,
//! the later one winning. Non-finite values are left out of the curves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::train::metrics::{metrics_path, read_metrics, Record};
use crate::{Error, Result};

/// Arguments of `shardsage plot`.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Run directory holding metrics.jsonl.
    pub run_dir: PathBuf,
    /// Output SVG file [default: RUN_DIR/curves.svg].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Smoothing of the loss curve: weight of the past in an exponential moving average, in
    /// [0, 1); 0 draws no smoothed curve.
    #[arg(long, default_value_t = 0.9)]
    pub smooth: f64,
}

const STEP_AXIS: &str = "global step";

/// The curves of one run, ready to draw.
#[derive(Debug, Default, PartialEq)]
pub struct Curves {
    /// (global step, loss), by step.
    pub loss: Vec<(f64, f64)>,
    /// metric name -> split -> (epoch, value), by global step.
    pub metrics: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>,
}

/// Collects the curves from the records; the last record for a step (or for a split at a
/// global step) wins. Non-finite values are dropped; the `count` metric is not a curve.
pub fn curves(records: &[Record]) -> Curves {
    let mut loss = BTreeMap::new();
    let mut evals: BTreeMap<(String, String, u64), (f64, f64)> = BTreeMap::new();
    for r in records {
        match r {
            Record::Step(s) => {
                loss.insert(s.global_step, s.loss);
            }
            Record::Eval(e) => {
                for (name, &v) in &e.metrics {
                    if name != "count" {
                        evals.insert(
                            (name.clone(), e.split.clone(), e.global_step),
                            (e.epoch as f64, v),
                        );
                    }
                }
            }
            Record::End(_) | Record::Other(_) => {}
        }
    }
    let mut curves = Curves {
        loss: loss
            .into_iter()
            .filter(|(_, l)| l.is_finite())
            .map(|(s, l)| (s as f64, l))
            .collect(),
        metrics: BTreeMap::new(),
    };
    for ((name, split, _), (epoch, v)) in evals {
        let series = curves
            .metrics
            .entry(name)
            .or_default()
            .entry(split)
            .or_default();
        if v.is_finite() {
            series.push((epoch, v));
        }
    }
    curves
}

/// Exponential moving average with weight `w` on the past, bias-corrected as TensorBoard does.
pub fn smooth(points: &[(f64, f64)], w: f64) -> Vec<(f64, f64)> {
    let mut last = 0.0;
    let mut weight = 1.0;
    points
        .iter()
        .map(|&(x, y)| {
            last = last * w + (1.0 - w) * y;
            weight *= w;
            (x, last / (1.0 - weight))
        })
        .collect()
}

/// Panel order: mrr, hits@K by K, then the rest by name.
fn metric_order(name: &str) -> (u8, u64, String) {
    if name == "mrr" {
        return (0, 0, String::new());
    }
    if let Some(k) = name.strip_prefix("hits@").and_then(|k| k.parse().ok()) {
        return (1, k, String::new());
    }
    (2, 0, name.to_string())
}

fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad)..(hi + pad)
}

fn plot_err(out: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(out, format!("drawing the plot: {e}"))
}

/// One panel's series: label, colour, points, whether to mark the points.
type Series = (String, RGBColor, Vec<(f64, f64)>, bool);

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    series: &[Series],
) -> std::result::Result<(), String> {
    let xs = range(series.iter().flat_map(|s| s.2.iter().map(|p| p.0)));
    let ys = range(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(xs, ys)
        .map_err(|e| e.to_string())?;
    let integer_x = |x: &f64| format!("{x:.0}");
    let mut mesh = chart.configure_mesh();
    if x_desc == STEP_AXIS {
        mesh.x_label_formatter(&integer_x);
    }
    mesh.x_desc(x_desc)
        .y_desc(title)
        .draw()
        .map_err(|e| e.to_string())?;
    for (label, color, points, mark) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if *mark {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the curves of `run_dir`'s metrics.jsonl into `out` (SVG). `smoothing` as in
/// [`PlotArgs::smooth`].
pub fn plot_run(run_dir: &Path, out: &Path, smoothing: f64) -> Result<()> {
    if !(0.0..1.0).contains(&smoothing) {
        return Err(Error::config("smooth", "must be in [0, 1)"));
    }
    let path = metrics_path(run_dir);
    if !path.is_file() {
        return Err(Error::invalid(
            &path,
            "no metrics file: is this a run directory (written by `shardsage train`)?",
        ));
    }
    let curves = curves(&read_metrics(&path)?);
    if curves.loss.is_empty() && curves.metrics.is_empty() {
        return Err(Error::invalid(
            &path,
            "no step or eval records with finite values to plot",
        ));
    }
    let mut panels: Vec<(String, &str, Vec<Series>)> = Vec::new();
    if !curves.loss.is_empty() {
        let mut s = vec![(
            "loss".to_string(),
            RGBColor(150, 170, 220),
            curves.loss.clone(),
            false,
        )];
        if smoothing > 0.0 {
            s.push((
                format!("loss (smoothed {smoothing})"),
                RGBColor(20, 60, 160),
                smooth(&curves.loss, smoothing),
                false,
            ));
        }
        panels.push(("training loss".into(), STEP_AXIS, s));
    }
    let mut names: Vec<&String> = curves.metrics.keys().collect();
    names.sort_by_key(|n| metric_order(n));
    for name in names {
        let splits = &curves.metrics[name];
        let s = splits
            .iter()
            .enumerate()
            .map(|(i, (split, points))| {
                let c = Palette99::pick(i).to_rgba();
                (split.clone(), RGBColor(c.0, c.1, c.2), points.clone(), true)
            })
            .collect();
        panels.push((name.clone(), "epoch", s));
    }

    let cols = if panels.len() > 1 { 2 } else { 1 };
    let rows = panels.len().div_ceil(cols);
    let size = (560 * cols as u32, 380 * rows as u32 + 40);
    let title = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| run_dir.display().to_string());
    {
        let root = SVGBackend::new(out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(out, e))?;
        let root = root
            .titled(&title, ("sans-serif", 22))
            .map_err(|e| plot_err(out, e))?;
        let areas = root.split_evenly((rows, cols));
        for ((name, x_desc, series), area) in panels.iter().zip(&areas) {
            draw_panel(area, name, x_desc, series).map_err(|e| plot_err(out, e))?;
        }
        root.present().map_err(|e| plot_err(out, e))?;
    }
    Ok(())
}

/// `shardsage plot`.
pub fn run(args: &PlotArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run_dir.join("curves.svg"));
    plot_run(&args.run_dir, &out, args.smooth)?;
    println!("wrote {}", out.display());
    Ok(())
}
