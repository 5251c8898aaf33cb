//! Node classification from frozen embeddings (node2vec's, or any per-node table): one-vs-rest
//! logistic regression trained on the dataset's train split and scored on valid and test with
//! micro-F1 (the accuracy, with one label per node) and macro-F1, as the DeepWalk and node2vec
//! papers report embeddings.
//!
//! Each class's binary problem is sklearn's `LogisticRegression(C = 1)`: the summed log-loss plus
//! half the squared weights (the bias unpenalised), on features standardised by the train
//! split's mean and deviation, minimised by accelerated gradient descent with the step from the
//! problem's curvature bound, until the gradient is below a tolerance (at most 400 iterations):
//! deterministic, and close to the optimum on these convex problems. All classes iterate
//! together, each iteration two matrix products over the train rows.

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
        let weights = fit_all(&z, labels, dim, classes, lipschitz);
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

/// `dst = op(a) · b` for row-major f64 matrices by the `gemm` crate on rayon's threads: `a` is
/// `m x k` (or, `a_transposed`, stored `k x m`), `b` is `k x cols`, `dst` is `m x cols`.
fn product(
    dst: &mut [f64],
    a: &[f64],
    a_transposed: bool,
    b: &[f64],
    (m, k, cols): (usize, usize, usize),
) {
    assert!(dst.len() == m * cols && a.len() == m * k && b.len() == k * cols);
    if m == 0 || cols == 0 {
        return;
    }
    if k == 0 {
        dst.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let (a_rs, a_cs) = if a_transposed {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the lengths were checked above for these shapes and strides; `dst` is a unique
    // borrow, so it aliases neither input. With `read_dst` false the crate overwrites `dst`.
    unsafe {
        gemm::gemm(
            m,
            cols,
            k,
            dst.as_mut_ptr(),
            1,
            cols as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            1,
            cols as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// The largest eigenvalue of `A^T A` for `A = [z 1]` (`n x (dim + 1)`), by power iteration.
fn largest_eigenvalue(z: &[f64], n: usize, dim: usize) -> f64 {
    let mut v = vec![1.0 / ((dim + 1) as f64).sqrt(); dim + 1];
    let mut lambda = 0.0;
    let mut av = vec![0f64; n];
    let mut w = vec![0f64; dim + 1];
    for _ in 0..50 {
        product(&mut av, z, false, &v[..dim], (n, dim, 1));
        av.iter_mut().for_each(|a| *a += v[dim]);
        product(&mut w[..dim], z, true, &av, (dim, n, 1));
        w[dim] = av.iter().sum();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        lambda = norm;
        v = w.iter().map(|x| x / norm).collect();
    }
    lambda
}

/// Minimises, for every class c at once, `sum_i log(1 + exp(-y_ic (w_c.z_i + b_c))) +
/// |w_c|^2 / 2` with `y_ic` +1 for the class's rows and -1 for the rest (Nesterov's accelerated
/// gradient, step 1/L, each class stopping at its own tolerance). An iteration is two products
/// over the rows, the margins `Z W` and the gradients `Z^T S`, rather than two passes over the
/// rows per class: 40 classes of 120k rows took minutes one class at a time. Returns per class
/// `dim` weights then the bias.
fn fit_all(z: &[f64], labels: &[u32], dim: usize, classes: usize, lipschitz: f64) -> Vec<Vec<f64>> {
    let (n, c) = (labels.len(), classes);
    let step = 1.0 / lipschitz;
    // Weights as `(dim + 1) x C`, class j in column j, its bias in the last row.
    let mut w = vec![0f64; (dim + 1) * c];
    let mut prev = w.clone();
    let mut look = w.clone();
    let mut grad = vec![0f64; (dim + 1) * c];
    let mut residual = vec![0f64; n * c];
    let mut done = vec![false; c];
    for t in 0..ITERATIONS {
        let momentum = t as f64 / (t as f64 + 3.0);
        for (i, l) in look.iter_mut().enumerate() {
            *l = if done[i % c] {
                w[i]
            } else {
                w[i] + momentum * (w[i] - prev[i])
            };
        }
        product(&mut residual, z, false, &look[..dim * c], (n, dim, c));
        let bias = &look[dim * c..];
        residual
            .par_chunks_mut(c)
            .zip(labels.par_iter())
            .for_each(|(row, &label)| {
                for (j, r) in row.iter_mut().enumerate() {
                    let y = if label as usize == j { 1.0 } else { -1.0 };
                    let m = y * (*r + bias[j]);
                    // d/dm log(1 + e^-m) = -1 / (1 + e^m)
                    *r = -y / (1.0 + m.exp());
                }
            });
        product(&mut grad[..dim * c], z, true, &residual, (dim, n, c));
        let (grad_w, grad_b) = grad.split_at_mut(dim * c);
        grad_b.iter_mut().for_each(|g| *g = 0.0);
        for row in residual.chunks(c) {
            for (g, r) in grad_b.iter_mut().zip(row) {
                *g += r;
            }
        }
        for (g, l) in grad_w.iter_mut().zip(&look) {
            *g += l;
        }
        let tolerance = TOLERANCE * n as f64;
        for j in 0..c {
            if done[j] {
                continue;
            }
            if (0..=dim).all(|k| grad[k * c + j].abs() <= tolerance) {
                // Converged at the look-ahead point, as a one-class fit returns it.
                done[j] = true;
                for k in 0..=dim {
                    w[k * c + j] = look[k * c + j];
                    prev[k * c + j] = look[k * c + j];
                }
                continue;
            }
            for k in 0..=dim {
                let i = k * c + j;
                prev[i] = w[i];
                w[i] = look[i] - step * grad[i];
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    (0..c)
        .map(|j| (0..=dim).map(|k| w[k * c + j]).collect())
        .collect()
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
        // One feature, overlapping classes: at every class's fitted weights the gradient is
        // within the tolerance the fit stops at (the classes stop at different iterations).
        let x: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) / 7.0).collect();
        let labels: Vec<u32> = (0..40)
            .map(|i| match (i * 37) % 40 {
                r if r < 25 => 0,
                r if r < 33 => 1,
                _ => 2,
            })
            .collect();
        let z: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let lipschitz = 0.25 * largest_eigenvalue(&z, 40, 1) + 1.0;
        let fitted = fit_all(&z, &labels, 1, 3, lipschitz);
        for (class, w) in fitted.iter().enumerate() {
            let (mut g0, mut g1) = (w[0], 0.0);
            for (i, &v) in x.iter().enumerate() {
                let y = if labels[i] as usize == class {
                    1.0
                } else {
                    -1.0
                };
                let m = y * (w[1] + w[0] * v as f64);
                let g = -y / (1.0 + m.exp());
                g0 += g * v as f64;
                g1 += g;
            }
            assert!(
                g0.abs() <= TOLERANCE * 40.0 && g1.abs() <= TOLERANCE * 40.0,
                "class {class}: gradient ({g0}, {g1}) at {w:?}"
            );
        }
    }

    #[test]
    fn the_power_iteration_finds_the_largest_eigenvalue() {
        // A = [z 1] with z = (1, 2, 3): A^T A = [[14, 6], [6, 3]], eigenvalues (17 ± sqrt(265)) / 2.
        let z = [1.0, 2.0, 3.0];
        let want = (17.0 + 265f64.sqrt()) / 2.0;
        let got = largest_eigenvalue(&z, 3, 1);
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
    }
}
