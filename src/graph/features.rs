//! Node features for graphs that ship none: seeded N(0, 1) values, or standardised functions of
//! the training degrees padded with seeded noise. Counter-based, so the same seed gives the same
//! features on any thread count.

use rayon::prelude::*;

use crate::sample::rng::{self, Purpose, Stream};

/// Synthetic node features for graphs that ship none.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum SyntheticFeatures {
    /// Seeded N(0, 1) features of the chosen width.
    Random,
    /// Degree-based structural features (log in/out degree and their powers), padded with seeded
    /// noise to the chosen width.
    Degree,
}

/// Seeded N(0, 1) features: value `(node, col)` is `normal` of the hashes `(seed, Features, node,
/// 2 col)` and `(.., 2 col + 1)`.
fn random_value(st: Stream, node: usize, col: usize) -> f32 {
    let ids = st.for_id(node as u64);
    rng::normal(ids.at(2 * col as u64), ids.at(2 * col as u64 + 1))
}

fn features_stream(seed: u64) -> Stream {
    Stream::new(seed, 0, 0, Purpose::Features as u64)
}

/// Row-major `[n, dim]` seeded N(0, 1) features.
pub fn random_features(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let st = features_stream(seed);
    let mut f = vec![0f32; n * dim];
    f.par_chunks_mut(dim.max(1))
        .enumerate()
        .for_each(|(node, row)| {
            for (col, v) in row.iter_mut().enumerate() {
                *v = random_value(st, node, col);
            }
        });
    f
}

/// Number of structural columns of degree features.
const DEGREE_COLUMNS: usize = 8;

/// Degree-based features from the training edges: with `a = ln(1 + in-degree)` and
/// `b = ln(1 + out-degree)`, the columns `a, b, a², b², ab, a³, b³, ln(1 + in + out)`, each
/// standardised to mean 0 and variance 1, then seeded N(0, 1) noise up to `dim` columns (or the
/// first `dim` structural columns when `dim < 8`).
///
/// For an undirected graph (`directed == false`) both degrees are the node's total degree, since
/// which end of an edge is stored first carries no meaning there.
pub fn degree_features(
    n: usize,
    dim: usize,
    train: &[[u32; 2]],
    directed: bool,
    seed: u64,
) -> Vec<f32> {
    let mut deg_in = vec![0u64; n];
    let mut deg_out = vec![0u64; n];
    for e in train {
        deg_out[e[0] as usize] += 1;
        deg_in[e[1] as usize] += 1;
    }
    if !directed {
        for (i, o) in deg_in.iter_mut().zip(deg_out.iter_mut()) {
            *i += *o;
            *o = *i;
        }
    }
    let structural = |i: usize| -> [f64; DEGREE_COLUMNS] {
        let a = (deg_in[i] as f64).ln_1p();
        let b = (deg_out[i] as f64).ln_1p();
        [
            a,
            b,
            a * a,
            b * b,
            a * b,
            a * a * a,
            b * b * b,
            ((deg_in[i] + deg_out[i]) as f64).ln_1p(),
        ]
    };
    // Sums in node order (sequential, so the result does not depend on the thread count).
    let mut sum = [0f64; DEGREE_COLUMNS];
    let mut sum_sq = [0f64; DEGREE_COLUMNS];
    for i in 0..n {
        for (c, x) in structural(i).into_iter().enumerate() {
            sum[c] += x;
            sum_sq[c] += x * x;
        }
    }
    let mut mean = [0f64; DEGREE_COLUMNS];
    let mut inv_std = [0f64; DEGREE_COLUMNS];
    for c in 0..DEGREE_COLUMNS {
        mean[c] = sum[c] / n as f64;
        let var = (sum_sq[c] / n as f64 - mean[c] * mean[c]).max(0.0);
        inv_std[c] = if var > 1e-12 { 1.0 / var.sqrt() } else { 0.0 };
    }
    let st = features_stream(seed);
    let mut f = vec![0f32; n * dim];
    f.par_chunks_mut(dim.max(1))
        .enumerate()
        .for_each(|(node, row)| {
            let s = structural(node);
            for (col, v) in row.iter_mut().enumerate() {
                *v = if col < DEGREE_COLUMNS {
                    ((s[col] - mean[col]) * inv_std[col]) as f32
                } else {
                    random_value(st, node, col)
                };
            }
        });
    f
}
