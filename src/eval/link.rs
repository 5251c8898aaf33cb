//! Link-prediction metrics exactly as OGB computes them: MRR, Hits@K and AUC of each held-out
//! positive against its own fixed negatives.
//!
//! For a positive scored `p` with negatives `n_1..n_K`: optimistic = #(n > p), pessimistic =
//! #(n >= p), rank = 1 + (optimistic + pessimistic) / 2 (ties count half). Every metric depends
//! only on `s = optimistic + pessimistic` (an integer in `0..=2K`) and on `K`: 1/rank = 2/(2+s),
//! Hits@k holds when 2 + s <= 2k, and the per-query AUC, P(pos > neg) + 0.5 P(tie), is
//! `1 - s/(2K)`. So [`LinkAccumulator`] keeps a histogram of `s`: integer counts that add up
//! exactly across batches and MPI ranks (as f64 they are exact up to 2^53), and the final metrics
//! are computed once from the merged histogram, bit-identical at any world size.
//!
//! This module owns the arithmetic only; scoring the edges is the caller's job.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// The K of the Hits@K metrics reported (OGB reports 1, 3, 10, 50, 100 for ogbl-citation2).
pub const HITS_AT: [u32; 5] = [1, 3, 10, 50, 100];

/// Final link-prediction metrics over `count` held-out positives.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkMetrics {
    /// Mean reciprocal rank.
    pub mrr: f64,
    /// Hits@K for every K in [`HITS_AT`]: the share of positives with rank <= K.
    pub hits: BTreeMap<u32, f64>,
    /// Mean over queries of P(pos > neg) + 0.5 P(pos == neg).
    pub auc: f64,
    /// Number of held-out positives scored.
    pub count: u64,
}

impl LinkMetrics {
    /// The metrics as named values for metrics.jsonl / TensorBoard: `mrr`, `hits@1`, `hits@3`,
    /// `hits@10`, `hits@50`, `hits@100`, `auc`, `count`.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut map = BTreeMap::new();
        map.insert("mrr".to_string(), self.mrr);
        for (k, v) in &self.hits {
            map.insert(format!("hits@{k}"), *v);
        }
        map.insert("auc".to_string(), self.auc);
        map.insert("count".to_string(), self.count as f64);
        map
    }
}

/// `(optimistic, pessimistic)` for one positive: #negatives scoring above it, and at or above it.
pub fn optimistic_pessimistic(pos: f32, negs: &[f32]) -> (u64, u64) {
    let mut optimistic = 0u64;
    let mut pessimistic = 0u64;
    for &n in negs {
        optimistic += u64::from(n > pos);
        pessimistic += u64::from(n >= pos);
    }
    (optimistic, pessimistic)
}

/// OGB's rank of one positive: 1 + (optimistic + pessimistic) / 2.
pub fn rank_of(pos: f32, negs: &[f32]) -> f64 {
    let (o, p) = optimistic_pessimistic(pos, negs);
    1.0 + (o + p) as f64 / 2.0
}

/// Accumulates link-prediction results batch by batch; mergeable across ranks by plain sums.
///
/// ```
/// use shardsage::eval::link::LinkAccumulator;
/// let mut acc = LinkAccumulator::new(3);
/// acc.add(&[0.5], &[0.5, 0.5, 0.1]).unwrap(); // rank 2
/// let m = acc.finish();
/// assert_eq!(m.mrr, 0.5);
/// ```
///
/// Across MPI ranks: every rank builds `LinkAccumulator::new(K)` with the same K (also a rank
/// with no held-out edges), all-reduces `sums()` with SUM, and calls `from_sums` on the result.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkAccumulator {
    num_negatives: usize,
    /// `histogram[s]` = number of positives with optimistic + pessimistic = s, s in 0..=2K.
    histogram: Vec<u64>,
}

impl LinkAccumulator {
    /// An empty accumulator for queries of `num_negatives` (K) negatives each.
    pub fn new(num_negatives: usize) -> Self {
        LinkAccumulator {
            num_negatives,
            histogram: vec![0; 2 * num_negatives + 1],
        }
    }

    /// K, the number of negatives per positive.
    pub fn num_negatives(&self) -> usize {
        self.num_negatives
    }

    /// Number of positives added so far.
    pub fn count(&self) -> u64 {
        self.histogram.iter().sum()
    }

    /// Adds a batch: `pos[i]` is the score of positive i, `neg[i*K..(i+1)*K]` its negatives'
    /// scores (row-major `[m, K]`). A NaN score is an error (it would silently rank first).
    pub fn add(&mut self, pos: &[f32], neg: &[f32]) -> Result<()> {
        let k = self.num_negatives;
        if neg.len() != pos.len() * k {
            return Err(Error::Other(format!(
                "link metrics: {} positives need {} negative scores ({} per positive), got {}",
                pos.len(),
                pos.len() * k,
                k,
                neg.len()
            )));
        }
        if k == 0 {
            // Without negatives every positive ranks first.
            self.histogram[0] += pos.len() as u64;
            return Ok(());
        }
        for (i, (&p, negs)) in pos.iter().zip(neg.chunks_exact(k)).enumerate() {
            if p.is_nan() || negs.iter().any(|n| n.is_nan()) {
                return Err(Error::Numeric(format!(
                    "link metrics: NaN score for positive {i} of a batch of {}",
                    pos.len()
                )));
            }
            let (o, pe) = optimistic_pessimistic(p, negs);
            self.histogram[(o + pe) as usize] += 1;
        }
        Ok(())
    }

    /// Adds another accumulator's counts (same K).
    pub fn merge(&mut self, other: &LinkAccumulator) -> Result<()> {
        if other.num_negatives != self.num_negatives {
            return Err(Error::Other(format!(
                "link metrics: cannot merge results with {} negatives per positive into {}",
                other.num_negatives, self.num_negatives
            )));
        }
        for (a, b) in self.histogram.iter_mut().zip(&other.histogram) {
            *a += b;
        }
        Ok(())
    }

    /// The state as a vector of `2K + 1` exact integer counts, to be summed element-wise across
    /// ranks (MPI_Allreduce with SUM) and turned back with [`LinkAccumulator::from_sums`].
    pub fn sums(&self) -> Vec<f64> {
        self.histogram.iter().map(|&c| c as f64).collect()
    }

    /// Rebuilds an accumulator from (summed) [`LinkAccumulator::sums`]; K is implied by the
    /// length. Errors on an even length or a value that is not a non-negative integer.
    pub fn from_sums(sums: &[f64]) -> Result<Self> {
        if sums.len().is_multiple_of(2) {
            return Err(Error::Other(format!(
                "link metrics: sums must have odd length 2K+1, got {}",
                sums.len()
            )));
        }
        let mut histogram = Vec::with_capacity(sums.len());
        for (i, &v) in sums.iter().enumerate() {
            if !(v >= 0.0 && v.fract() == 0.0 && v < 9.007_199_254_740_992e15) {
                return Err(Error::Other(format!(
                    "link metrics: sums[{i}] = {v} is not an exact count"
                )));
            }
            histogram.push(v as u64);
        }
        Ok(LinkAccumulator {
            num_negatives: sums.len() / 2,
            histogram,
        })
    }

    /// The metrics over everything added. With no positives every metric is NaN (count 0).
    pub fn finish(&self) -> LinkMetrics {
        let count = self.count();
        let k = self.num_negatives as f64;
        let mut sum_rr = 0.0f64;
        let mut sum_s = 0u64;
        let mut hits = [0u64; HITS_AT.len()];
        for (s, &c) in self.histogram.iter().enumerate() {
            if c == 0 {
                continue;
            }
            sum_rr += c as f64 * (2.0 / (2.0 + s as f64));
            sum_s += c * s as u64;
            for (h, &at) in hits.iter_mut().zip(&HITS_AT) {
                // rank = 1 + s/2 <= at  <=>  s <= 2(at - 1)
                if (s as u64) <= 2 * (u64::from(at) - 1) {
                    *h += c;
                }
            }
        }
        let n = count as f64;
        let auc = if self.num_negatives == 0 {
            1.0
        } else {
            1.0 - sum_s as f64 / (2.0 * k * n)
        };
        let nan_if_empty = |v: f64| if count == 0 { f64::NAN } else { v };
        LinkMetrics {
            mrr: nan_if_empty(sum_rr / n),
            hits: HITS_AT
                .iter()
                .zip(hits)
                .map(|(&at, h)| (at, nan_if_empty(h as f64 / n)))
                .collect(),
            auc: nan_if_empty(auc),
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_count_half() {
        assert_eq!(optimistic_pessimistic(0.5, &[0.5, 0.5, 0.1]), (0, 2));
        assert_eq!(rank_of(0.5, &[0.5, 0.5, 0.1]), 2.0);
        let mut acc = LinkAccumulator::new(3);
        acc.add(&[0.5], &[0.5, 0.5, 0.1]).unwrap();
        let m = acc.finish();
        assert_eq!(m.mrr, 0.5);
        assert_eq!(m.hits[&1], 0.0);
        assert_eq!(m.hits[&3], 1.0);
        // one negative below (1), two ties (0.5 each): 2/3
        assert!((m.auc - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(m.count, 1);
    }

    #[test]
    fn all_better_and_all_worse() {
        let mut acc = LinkAccumulator::new(4);
        // positive above all negatives: rank 1
        acc.add(&[0.9], &[0.1, 0.2, 0.3, 0.4]).unwrap();
        let m = acc.finish();
        assert_eq!((m.mrr, m.auc, m.hits[&1]), (1.0, 1.0, 1.0));
        // positive below all negatives: rank 5
        let mut acc = LinkAccumulator::new(4);
        acc.add(&[-1.0], &[0.1, 0.2, 0.3, 0.4]).unwrap();
        let m = acc.finish();
        assert_eq!(m.mrr, 0.2);
        assert_eq!(m.auc, 0.0);
        assert_eq!(m.hits[&3], 0.0);
        assert_eq!(m.hits[&10], 1.0);
    }

    #[test]
    fn shape_and_nan_errors() {
        let mut acc = LinkAccumulator::new(2);
        assert!(acc.add(&[0.1, 0.2], &[0.0; 3]).is_err());
        assert!(matches!(
            acc.add(&[f32::NAN], &[0.0, 1.0]),
            Err(Error::Numeric(_))
        ));
        assert!(LinkAccumulator::from_sums(&[1.0, 2.0]).is_err());
        assert!(LinkAccumulator::from_sums(&[1.0, 0.5, 2.0]).is_err());
        assert!(acc.finish().mrr.is_nan());
    }
}
