//! Node classification from frozen embeddings (node2vec's, or any per-node table): one-vs-rest
//! logistic regression trained on the dataset's train split and scored on valid and test with
//! micro-F1 (the accuracy, with one label per node) and macro-F1, as the DeepWalk and node2vec
//! papers report embeddings.
//!
//! Each class's binary problem is sklearn's `LogisticRegression(C = 1)`: the summed log-loss plus
//! half the squared weights (the bias unpenalised), on features standardised by the train
//! split's mean and deviation, minimised by accelerated gradient descent with the step from the
//! problem's curvature bound, until the gradient is below a tolerance (at most 400 iterations):
//! deterministic, and close to the optimum on these convex problems.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::distributed::graph::DistGraph;
use crate::error::{Error, Result};
use crate::eval::nodeclass::NodeClassAccumulator;

/// Most iterations of accelerated gradient descent per class.
const ITERATIONS: usize = 400;
/// The fit stops once no gradient component exceeds this times the number of samples (the
/// mean log-loss gradient is below it), as sklearn's solvers stop at a tolerance of 1e-4.
const TOLERANCE: f64 = 1e-4;

/// A linear classifier per class over standardised features.
pub struct OneVsRest {
    dim: usize,
    mean: Vec<f32>,
    scale: Vec<f32>,
    /// Per class: `dim` weights then the bias.
    weights: Vec<Vec<f64>>,
}

impl OneVsRest {
    /// Fits on `x` (`n x dim`, row-major) with labels in `0..classes`.
    pub fn fit(x: &[f32], labels: &[u32], dim: usize, classes: usize) -> Result<Self> {
        let n = labels.len();
        if n == 0 || x.len() != n * dim {
            return Err(Error::Other(format!(
                "logistic regression: {} labels for {} values of width {dim}",
                n,
                x.len()
            )));
        }
        let mut mean = vec![0f64; dim];
        for row in x.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0f64; dim];
        for row in x.chunks(dim) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let scale: Vec<f32> = var
            .iter()
            .map(|&s| {
                let sd = (s / n as f64).sqrt();
                if sd > 1e-12 {
                    (1.0 / sd) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let z: Vec<f64> = x
            .chunks(dim)
            .flat_map(|row| {
                row.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((&v, &m), &s)| ((v - m) * s) as f64)
            })
            .collect();
        // Curvature bound of the log-loss part: 1/4 of the largest eigenvalue of [z 1]^T [z 1]
        // (power iteration), plus the penalty's 1.
        let lipschitz = 0.25 * largest_eigenvalue(&z, n, dim) + 1.0;
        let weights = (0..classes)
            .into_par_iter()
            .map(|c| {
                let y: Vec<f64> = labels
                    .iter()
                    .map(|&l| if l as usize == c { 1.0 } else { -1.0 })
                    .collect();
                fit_binary(&z, &y, dim, lipschitz)
            })
            .collect();
        Ok(OneVsRest {
            dim,
            mean,
            scale,
            weights,
        })
    }

    /// The class with the highest score for each row of `x`.
    pub fn predict(&self, x: &[f32]) -> Vec<u32> {
        x.par_chunks(self.dim)
            .map(|row| {
                let z: Vec<f64> = row
                    .iter()
                    .zip(&self.mean)
                    .zip(&self.scale)
                    .map(|((&v, &m), &s)| ((v - m) * s) as f64)
                    .collect();
                let mut best = (0u32, f64::NEG_INFINITY);
                for (c, w) in self.weights.iter().enumerate() {
                    let s = w[self.dim] + z.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
                    if s > best.1 {
                        best = (c as u32, s);
                    }
                }
                best.0
            })
            .collect()
    }
}

/// The largest eigenvalue of `A^T A` for `A = [z 1]` (`n x (dim + 1)`), by power iteration.
fn largest_eigenvalue(z: &[f64], n: usize, dim: usize) -> f64 {
    let mut v = vec![1.0 / ((dim + 1) as f64).sqrt(); dim + 1];
    let mut lambda = 0.0;
    for _ in 0..50 {
        let av: Vec<f64> = (0..n)
            .map(|i| {
                v[dim]
                    + z[i * dim..(i + 1) * dim]
                        .iter()
                        .zip(&v)
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
            })
            .collect();
        let mut w = vec![0f64; dim + 1];
        for (i, &a) in av.iter().enumerate() {
            for (wk, zk) in w.iter_mut().zip(&z[i * dim..(i + 1) * dim]) {
                *wk += a * zk;
            }
            w[dim] += a;
        }
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        lambda = norm;
        v = w.iter().map(|x| x / norm).collect();
    }
    lambda
}

/// Minimises `sum_i log(1 + exp(-y_i (w.z_i + b))) + |w|^2 / 2` (Nesterov's accelerated
/// gradient, step 1/L); returns `dim` weights then the bias.
fn fit_binary(z: &[f64], y: &[f64], dim: usize, lipschitz: f64) -> Vec<f64> {
    let n = y.len();
    let step = 1.0 / lipschitz;
    let mut w = vec![0f64; dim + 1];
    let mut prev = w.clone();
    for t in 0..ITERATIONS {
        let momentum = t as f64 / (t as f64 + 3.0);
        let look: Vec<f64> = w
            .iter()
            .zip(&prev)
            .map(|(a, b)| a + momentum * (a - b))
            .collect();
        let mut grad = vec![0f64; dim + 1];
        for i in 0..n {
            let zi = &z[i * dim..(i + 1) * dim];
            let m = y[i] * (look[dim] + zi.iter().zip(&look).map(|(a, b)| a * b).sum::<f64>());
            // d/dm log(1 + e^-m) = -1 / (1 + e^m)
            let g = -y[i] / (1.0 + m.exp());
            for (gk, zk) in grad.iter_mut().zip(zi) {
                *gk += g * zk;
            }
            grad[dim] += g;
        }
        for (gk, wk) in grad.iter_mut().zip(&look).take(dim) {
            *gk += wk;
        }
        if grad.iter().all(|g| g.abs() <= TOLERANCE * n as f64) {
            return look;
        }
        prev = w;
        w = look.iter().zip(&grad).map(|(a, g)| a - step * g).collect();
    }
    w
}

/// Micro-F1 (accuracy) and macro-F1 of one-vs-rest logistic regression on `table` (rows by this
/// rank's local node, `dim` wide), trained on the train split and scored on the valid and test
/// splits the dataset has; empty when it has no labels. A collective; every rank gets the
/// metrics.
pub fn evaluate_node_classification(
    g: &DistGraph<'_>,
    table: &[f32],
    dim: usize,
) -> Result<BTreeMap<String, BTreeMap<String, f64>>> {
    let part = g.part;
    let classes = part.meta.num_classes as usize;
    let mut have = [(classes > 0 && part.label.is_some()) as u64];
    g.comm.all_reduce_min_u64(&mut have);
    if have[0] == 0 {
        return Ok(BTreeMap::new());
    }
    let labels = part.label.as_deref().unwrap_or(&[]);
    let first = part.first_node();
    // Every labelled split node's (split, label) and embedding row, gathered on rank 0.
    let ranks = g.comm.size();
    let (mut keys, mut rows) = (vec![Vec::new(); ranks], vec![Vec::new(); ranks]);
    for (s, idx) in [&part.train_idx, &part.valid_idx, &part.test_idx]
        .into_iter()
        .enumerate()
    {
        for &id in idx.iter() {
            let i = (id - first) as usize;
            let label = labels.get(i).copied().unwrap_or(-1);
            if label < 0 || label as usize >= classes {
                continue;
            }
            keys[0].push(s as u64);
            keys[0].push(label as u64);
            rows[0].extend_from_slice(&table[i * dim..(i + 1) * dim]);
        }
    }
    let keys = g.comm.all_to_all_v(&keys)?.concat();
    let rows = g.comm.all_to_all_v(&rows)?.concat();
    let mut out = BTreeMap::new();
    if g.comm.is_root() {
        let split_rows = |s: u64| -> (Vec<f32>, Vec<u32>) {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for (k, pair) in keys.chunks(2).enumerate() {
                if pair[0] == s {
                    x.extend_from_slice(&rows[k * dim..(k + 1) * dim]);
                    y.push(pair[1] as u32);
                }
            }
            (x, y)
        };
        let (x, y) = split_rows(0);
        if !y.is_empty() {
            let model = OneVsRest::fit(&x, &y, dim, classes)?;
            for (s, name) in [(1u64, "valid"), (2, "test")] {
                let (x, y) = split_rows(s);
                if y.is_empty() {
                    continue;
                }
                let mut acc = NodeClassAccumulator::new(classes);
                acc.add(&model.predict(&x), &y)?;
                let m = acc.finish();
                let metrics = BTreeMap::from([
                    ("micro_f1".to_string(), m.accuracy),
                    ("macro_f1".to_string(), m.macro_f1),
                    ("count".to_string(), y.len() as f64),
                ]);
                out.insert(name.to_string(), metrics);
            }
        }
    }
    // Every rank returns the same metrics.
    let mut flat: Vec<f64> = ["valid", "test"]
        .iter()
        .flat_map(|s| {
            let m = out.get(*s);
            ["micro_f1", "macro_f1", "count"]
                .map(|k| m.and_then(|m| m.get(k)).copied().unwrap_or(f64::NAN))
        })
        .collect();
    g.comm.broadcast(&mut flat, 0);
    let mut all = BTreeMap::new();
    for (i, s) in ["valid", "test"].iter().enumerate() {
        let v = &flat[i * 3..i * 3 + 3];
        if v[2].is_finite() {
            all.insert(
                s.to_string(),
                BTreeMap::from([
                    ("micro_f1".to_string(), v[0]),
                    ("macro_f1".to_string(), v[1]),
                    ("count".to_string(), v[2]),
                ]),
            );
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_classes_are_learned_and_held_out_points_classified() {
        // Three classes around three centres in 4 dimensions, with a deterministic spread.
        let centres = [
            [2.0f32, 0.0, 0.0, 1.0],
            [0.0, 2.0, 0.0, -1.0],
            [0.0, 0.0, 2.0, 0.0],
        ];
        let point = |c: usize, k: usize| -> Vec<f32> {
            (0..4)
                .map(|d| centres[c][d] + 0.3 * (((k * 7 + d * 13) % 11) as f32 / 11.0 - 0.5))
                .collect()
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for k in 0..30 {
            for c in 0..3 {
                x.extend(point(c, k));
                y.push(c as u32);
            }
        }
        let model = OneVsRest::fit(&x, &y, 4, 3).unwrap();
        let (mut hx, mut hy) = (Vec::new(), Vec::new());
        for k in 100..110 {
            for c in 0..3 {
                hx.extend(point(c, k));
                hy.push(c as u32);
            }
        }
        assert_eq!(model.predict(&hx), hy);
        assert!(OneVsRest::fit(&x, &y[..3], 4, 3).is_err());
    }

    #[test]
    fn the_fit_reaches_the_penalised_optimum() {
        // One feature, overlapping classes: the gradient at the fitted weights is within the
        // tolerance the fit stops at.
        let x: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) / 7.0).collect();
        let y: Vec<f64> = (0..40)
            .map(|i| if (i * 37) % 40 < 25 { 1.0 } else { -1.0 })
            .collect();
        let w = fit_binary(&x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &y, 1, {
            let z: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            0.25 * largest_eigenvalue(&z, 40, 1) + 1.0
        });
        let (mut g0, mut g1) = (w[0], 0.0);
        for (i, &v) in x.iter().enumerate() {
            let m = y[i] * (w[1] + w[0] * v as f64);
            let g = -y[i] / (1.0 + m.exp());
            g0 += g * v as f64;
            g1 += g;
        }
        assert!(
            g0.abs() <= TOLERANCE * 40.0 && g1.abs() <= TOLERANCE * 40.0,
            "gradient ({g0}, {g1}) at {w:?}"
        );
    }
}
