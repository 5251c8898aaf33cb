//! Skip-gram with negative sampling (SGNS) over random walks: the second stage of DeepWalk and
//! node2vec embeddings.
//!
//! Both tables (input and output vectors, `dim` columns) are partitioned by node owner, so a
//! rank holds 1/W of them. Training goes in mini-batches: every rank takes its next
//! `batch_positions` walk positions (its walks are those starting at its nodes), forms the
//! (centre, context) pairs of word2vec's reduced window (a window of `1 + below(window)` on each
//! side, per position) and `negatives` negatives per pair from degree^0.75 (an alias table, the
//! same on every rank), fetches the rows the batch needs from their owners, computes every pair's
//! gradient from the batch's starting values, sums them per row in pair order, and sends the sums
//! back to the owners. The learning rate falls linearly to 1e-4 of its start over the run, as in
//! word2vec. Every draw is counter-based and every sum is in a fixed order: a run is the same
//! for a fixed seed and world size (and thread count does not matter).

use rayon::prelude::*;

use crate::distributed::graph::DistGraph;
use crate::error::{Error, Result};
use crate::sample::rng::{below, fold, hash, unit_f32, Purpose};
use crate::walk::{RoundSink, WalkConfig, WalkRound, NO_NODE};

/// How the embeddings are trained.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgnsConfig {
    pub dim: usize,
    /// Context nodes on each side of a position (at most; word2vec's reduced window).
    pub window: usize,
    pub negatives: usize,
    /// The starting learning rate.
    pub lr: f64,
    /// Passes over the walks.
    pub epochs: usize,
    /// Walk positions per rank and mini-batch.
    pub batch_positions: usize,
    pub seed: u64,
}

impl SgnsConfig {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("dim", self.dim),
            ("window", self.window),
            ("epochs", self.epochs),
            ("batch_positions", self.batch_positions),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(
                "lr",
                format!("must be positive, not {}", self.lr),
            ));
        }
        Ok(())
    }
}

/// Draws nodes with probability proportional to degree^0.75 (Walker's alias method).
pub struct NegativeTable {
    prob: Vec<f32>,
    alias: Vec<u32>,
}

impl NegativeTable {
    /// From every node's degree (a node of degree 0 is never drawn).
    pub fn new(degrees: &[u32]) -> Result<Self> {
        let n = degrees.len();
        let w: Vec<f64> = degrees.iter().map(|&d| (d as f64).powf(0.75)).collect();
        let total: f64 = w.iter().sum();
        if total <= 0.0 {
            return Err(Error::Other(
                "no node has a neighbour: nothing to sample".into(),
            ));
        }
        let mut scaled: Vec<f64> = w.iter().map(|x| x * n as f64 / total).collect();
        let mut prob = vec![1f32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s] as f32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Ok(NegativeTable { prob, alias })
    }

    /// The node drawn by random word `h`.
    pub fn draw(&self, h: u64) -> u32 {
        let i = below(h, self.prob.len() as u64) as usize;
        if unit_f32(h.rotate_left(32) ^ 0x5DEE_CE66_D1CE_4E5B) < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }
}

/// A rank's share of the two tables: rows of the nodes it owns.
pub struct Embeddings {
    pub dim: usize,
    pub input: Vec<f32>,
    pub output: Vec<f32>,
}

impl Embeddings {
    /// word2vec's start: input rows uniform in [-0.5/dim, 0.5/dim), output rows zero.
    pub fn init(g: &DistGraph<'_>, dim: usize, seed: u64) -> Self {
        let first = g.part.first_node();
        let n = g.part.num_local_nodes();
        let mut input = vec![0f32; n * dim];
        input.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
            let id = first + i as u64;
            for (k, x) in row.iter_mut().enumerate() {
                let u = unit_f32(hash(seed, 0, 0, Purpose::Init as u64 + 64, id, k as u64));
                *x = (u - 0.5) / dim as f32;
            }
        });
        Embeddings {
            dim,
            input,
            output: vec![0f32; n * dim],
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-30.0, 30.0)).exp())
}

/// The SGNS loss of one centre vector against its context (first) and negatives:
/// -log s(v.u_0) - sum log s(-v.u_j); and per output j the factor c_j = label_j - s(v.u_j), so
/// that d loss / d v = -sum c_j u_j and d loss / d u_j = -c_j v.
pub fn pair_loss<'u>(v: &[f32], outs: impl Iterator<Item = &'u [f32]>) -> (Vec<f32>, f64) {
    let mut factors = Vec::new();
    let mut loss = 0f64;
    for (j, u) in outs.enumerate() {
        let dot: f32 = v.iter().zip(u).map(|(a, b)| a * b).sum();
        let s = sigmoid(dot);
        let label = if j == 0 { 1.0 } else { 0.0 };
        loss -= if j == 0 {
            (s.max(1e-7) as f64).ln()
        } else {
            ((1.0 - s).max(1e-7) as f64).ln()
        };
        factors.push(label - s);
    }
    (factors, loss)
}

/// The (centre, context) pairs of some walk positions, each with its negatives.
struct Pairs {
    centre: Vec<u32>,
    context: Vec<u32>,
    /// `negatives` per pair, row-major.
    negative: Vec<u32>,
}

/// Pairs of positions `positions` (indices into a round's `[walks, length]` matrix).
fn pairs_of(
    round: &WalkRound,
    positions: std::ops::Range<usize>,
    cfg: &SgnsConfig,
    epoch: usize,
    negatives: &NegativeTable,
) -> Pairs {
    let len = round.length;
    let per_position: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)> = positions
        .into_par_iter()
        .map(|p| {
            let (w, i) = (p / len, p % len);
            let walk = &round.nodes[w * len..(w + 1) * len];
            let c = walk[i];
            let mut out = (Vec::new(), Vec::new(), Vec::new());
            if c == NO_NODE {
                return out;
            }
            // The position's key (its walk's start node and its index): the same pairs
            // whatever the batching and the world size.
            let pos = fold(round.first_node + w as u64, i as u64);
            let (r, e) = (round.round as u64, epoch as u64);
            let b = 1 + below(
                hash(cfg.seed, e, r, Purpose::Walk as u64 + 1, pos, 0),
                cfg.window as u64,
            ) as usize;
            let lo = i.saturating_sub(b);
            let hi = (i + b).min(len - 1);
            for (j, &o) in walk.iter().enumerate().take(hi + 1).skip(lo) {
                if j == i || o == NO_NODE {
                    continue;
                }
                out.0.push(c);
                out.1.push(o);
                for k in 0..cfg.negatives {
                    let h = hash(
                        cfg.seed,
                        e,
                        r,
                        Purpose::Walk as u64 + 2,
                        pos,
                        (j * cfg.negatives + k) as u64,
                    );
                    out.2.push(negatives.draw(h));
                }
            }
            out
        })
        .collect();
    let mut pairs = Pairs {
        centre: Vec::new(),
        context: Vec::new(),
        negative: Vec::new(),
    };
    for (c, o, n) in per_position {
        pairs.centre.extend(c);
        pairs.context.extend(o);
        pairs.negative.extend(n);
    }
    pairs
}

/// Distinct ids of a list in first-seen order, and each entry's index among them.
fn distinct(ids: impl Iterator<Item = u32>) -> (Vec<u64>, Vec<u32>) {
    let mut at = crate::nodemap::NodeMap::<u32>::default();
    let mut order = Vec::new();
    let idx = ids
        .map(|id| {
            *at.entry(id as u64).or_insert_with(|| {
                order.push(id as u64);
                (order.len() - 1) as u32
            })
        })
        .collect();
    (order, idx)
}

/// Sums `weight x source row` into target rows, per target in entry order: entry e adds
/// `w[e] * src[s[e]]` to target `t[e]`.
fn sum_per_row(
    targets: usize,
    dim: usize,
    t: &[u32],
    s: &[u32],
    w: &[f32],
    src: &[f32],
) -> Vec<f32> {
    // Entries grouped by target, in entry order within each (a stable counting sort).
    let mut start = vec![0usize; targets + 1];
    for &x in t {
        start[x as usize + 1] += 1;
    }
    for i in 0..targets {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut by_target = vec![0usize; t.len()];
    for (e, &x) in t.iter().enumerate() {
        by_target[fill[x as usize]] = e;
        fill[x as usize] += 1;
    }
    let mut out = vec![0f32; targets * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(r, row)| {
        for &e in &by_target[start[r]..start[r + 1]] {
            let from = &src[s[e] as usize * dim..(s[e] as usize + 1) * dim];
            for (a, b) in row.iter_mut().zip(from) {
                *a += w[e] * b;
            }
        }
    });
    out
}

/// One mini-batch: fetch, gradients, updates sent to the owners. A collective. Returns the
/// batch's summed loss and pair count (this rank's).
fn train_batch(
    g: &DistGraph<'_>,
    emb: &mut Embeddings,
    pairs: &Pairs,
    lr: f32,
    k: usize,
) -> Result<(f64, u64)> {
    let dim = emb.dim;
    let (centres, ci) = distinct(pairs.centre.iter().copied());
    let (outs, oi) = distinct(pairs.context.iter().chain(&pairs.negative).copied());
    let v = g.exchange_rows(&centres, dim, &emb.input)?;
    let u = g.exchange_rows(&outs, dim, &emb.output)?;
    let m = pairs.centre.len();
    let (ctx_i, neg_i) = oi.split_at(m);
    // Every (centre, output) product of the batch: the positive first, then the negatives.
    let per_pair: Vec<(Vec<f32>, f64)> = (0..m)
        .into_par_iter()
        .map(|p| {
            let outs = std::iter::once(&ctx_i[p])
                .chain(&neg_i[p * k..(p + 1) * k])
                .map(|&o| &u[o as usize * dim..(o as usize + 1) * dim]);
            let vc = &v[ci[p] as usize * dim..(ci[p] as usize + 1) * dim];
            let (mut g, loss) = pair_loss(vc, outs);
            g.iter_mut().for_each(|x| *x *= lr);
            (g, loss)
        })
        .collect();
    let loss: f64 = per_pair.iter().map(|(_, l)| l).sum();
    // Entries (centre row, output row, weight) of every product.
    let mut t_in = Vec::with_capacity(m * (k + 1));
    let mut t_out = Vec::with_capacity(m * (k + 1));
    let mut w = Vec::with_capacity(m * (k + 1));
    for (p, (gs, _)) in per_pair.iter().enumerate() {
        for (j, &gj) in gs.iter().enumerate() {
            let o = if j == 0 {
                ctx_i[p]
            } else {
                neg_i[p * k + j - 1]
            };
            t_in.push(ci[p]);
            t_out.push(o);
            w.push(gj);
        }
    }
    let d_in = sum_per_row(centres.len(), dim, &t_in, &t_out, &w, &u);
    let d_out = sum_per_row(outs.len(), dim, &t_out, &t_in, &w, &v);
    g.add_rows_to_owners(&centres, dim, &d_in, &mut emb.input)?;
    g.add_rows_to_owners(&outs, dim, &d_out, &mut emb.output)?;
    Ok((loss, m as u64))
}

/// Trains on the rounds of walks that `walks(sink)` generates (each rank's own walks), once per
/// epoch; `progress(epoch, pairs, mean loss)` after each round. A collective.
pub fn train(
    g: &DistGraph<'_>,
    cfg: &SgnsConfig,
    walk: &WalkConfig,
    negatives: &NegativeTable,
    emb: &mut Embeddings,
    walks: &mut dyn FnMut(&mut RoundSink<'_>) -> Result<()>,
    progress: &mut dyn FnMut(usize, u64, f64),
) -> Result<()> {
    cfg.validate()?;
    let (walks_per_node, length) = (walk.walks_per_node, walk.length);
    // Batches per round: the most any rank needs (the others take part with empty ones).
    let mut per_round = [(g.part.num_local_nodes() * length).div_ceil(cfg.batch_positions) as u64];
    g.comm.all_reduce_max_u64(&mut per_round);
    let per_round = per_round[0] as usize;
    let total = (cfg.epochs * walks_per_node * per_round).max(1);
    let mut done = 0usize;
    for epoch in 0..cfg.epochs {
        walks(&mut |round| {
            let positions = round.nodes.len();
            let (mut loss, mut count) = (0f64, 0u64);
            for b in 0..per_round {
                let lr = (cfg.lr * (1.0 - done as f64 / total as f64)).max(cfg.lr * 1e-4) as f32;
                let lo = (b * cfg.batch_positions).min(positions);
                let hi = ((b + 1) * cfg.batch_positions).min(positions);
                let pairs = pairs_of(round, lo..hi, cfg, epoch, negatives);
                let (l, c) = train_batch(g, emb, &pairs, lr, cfg.negatives)?;
                loss += l;
                count += c;
                done += 1;
            }
            let mut sums = [loss, count as f64];
            g.comm.all_reduce_sum_f64(&mut sums);
            progress(epoch, sums[1] as u64, sums[0] / sums[1].max(1.0));
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_gradient_matches_finite_differences() {
        let v: Vec<f32> = (0..6).map(|i| 0.3 * (i as f32 - 2.5)).collect();
        let outs: Vec<Vec<f32>> = (0..4)
            .map(|j| {
                (0..6)
                    .map(|i| 0.2 * ((i * 7 + j * 3) % 5) as f32 - 0.4)
                    .collect()
            })
            .collect();
        let loss = |v: &[f32], outs: &[Vec<f32>]| pair_loss(v, outs.iter().map(|o| &o[..])).1;
        let (c, _) = pair_loss(&v, outs.iter().map(|o| &o[..]));
        let eps = 1e-3f32;
        for i in 0..6 {
            let analytic: f64 = -(0..4).map(|j| (c[j] * outs[j][i]) as f64).sum::<f64>();
            let (mut a, mut b) = (v.clone(), v.clone());
            a[i] += eps;
            b[i] -= eps;
            let numeric = (loss(&a, &outs) - loss(&b, &outs)) / (2.0 * eps as f64);
            assert!(
                (analytic - numeric).abs() < 1e-3,
                "d/dv[{i}]: {analytic} vs {numeric}"
            );
        }
        for j in 0..4 {
            for i in 0..6 {
                let analytic = -(c[j] * v[i]) as f64;
                let (mut a, mut b) = (outs.clone(), outs.clone());
                a[j][i] += eps;
                b[j][i] -= eps;
                let numeric = (loss(&v, &a) - loss(&v, &b)) / (2.0 * eps as f64);
                assert!(
                    (analytic - numeric).abs() < 1e-3,
                    "d/du{j}[{i}]: {analytic} vs {numeric}"
                );
            }
        }
    }

    #[test]
    fn negatives_follow_degree_to_the_three_quarters() {
        let degrees = [1u32, 16, 0, 81];
        let t = NegativeTable::new(&degrees).unwrap();
        let mut counts = [0u64; 4];
        let draws = 200_000u64;
        for k in 0..draws {
            counts[t.draw(hash(5, 0, 0, 1, k, 0)) as usize] += 1;
        }
        let w = [1.0, 8.0, 0.0, 27.0];
        let total: f64 = w.iter().sum();
        for i in 0..4 {
            let want = w[i] / total;
            let got = counts[i] as f64 / draws as f64;
            assert!((got - want).abs() < 0.01, "node {i}: {got} vs {want}");
        }
        assert!(NegativeTable::new(&[0, 0]).is_err());
    }
}
