//! Node-classification metrics: accuracy and macro-F1, from a confusion matrix of exact counts
//! that adds up across batches and MPI ranks.
//!
//! Macro-F1 averages the per-class F1 = 2TP / (2TP + FP + FN) over the classes that appear in
//! the labels or the predictions (as scikit-learn does with its default `labels=None`).

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Final node-classification metrics over `count` nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeClassMetrics {
    /// Share of nodes whose predicted class is the label.
    pub accuracy: f64,
    /// Mean per-class F1 over the classes present in labels or predictions.
    pub macro_f1: f64,
    /// Number of nodes scored.
    pub count: u64,
}

impl NodeClassMetrics {
    /// The metrics as named values for metrics.jsonl / TensorBoard: `accuracy`, `macro_f1`,
    /// `count`.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("accuracy".to_string(), self.accuracy),
            ("macro_f1".to_string(), self.macro_f1),
            ("count".to_string(), self.count as f64),
        ])
    }
}

/// Index of the largest value of each row of `logits` (`[n, num_classes]` row-major); the lowest
/// index wins a tie, and NaN never wins.
pub fn argmax_rows(logits: &[f32], num_classes: usize) -> Vec<u32> {
    if num_classes == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(num_classes)
        .map(|row| {
            let mut best = 0usize;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] || row[best].is_nan() && !v.is_nan() {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// Accumulates a confusion matrix; merge across ranks by summing [`NodeClassAccumulator::sums`].
#[derive(Clone, Debug, PartialEq)]
pub struct NodeClassAccumulator {
    num_classes: usize,
    /// `confusion[label * C + predicted]`.
    confusion: Vec<u64>,
}

impl NodeClassAccumulator {
    /// An empty accumulator for labels `0..num_classes`.
    pub fn new(num_classes: usize) -> Self {
        NodeClassAccumulator {
            num_classes,
            confusion: vec![0; num_classes * num_classes],
        }
    }

    /// Number of classes C.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Adds predicted classes and true labels of a batch of nodes.
    pub fn add(&mut self, predicted: &[u32], labels: &[u32]) -> Result<()> {
        if predicted.len() != labels.len() {
            return Err(Error::Other(format!(
                "node metrics: {} predictions for {} labels",
                predicted.len(),
                labels.len()
            )));
        }
        let c = self.num_classes;
        for (i, (&p, &l)) in predicted.iter().zip(labels).enumerate() {
            if p as usize >= c || l as usize >= c {
                return Err(Error::Other(format!(
                    "node metrics: item {i} has label {l} / prediction {p}, outside 0..{c}"
                )));
            }
            self.confusion[l as usize * c + p as usize] += 1;
        }
        Ok(())
    }

    /// Adds another accumulator's counts (same C).
    pub fn merge(&mut self, other: &NodeClassAccumulator) -> Result<()> {
        if other.num_classes != self.num_classes {
            return Err(Error::Other(format!(
                "node metrics: cannot merge {} classes into {}",
                other.num_classes, self.num_classes
            )));
        }
        for (a, b) in self.confusion.iter_mut().zip(&other.confusion) {
            *a += b;
        }
        Ok(())
    }

    /// The confusion matrix as `C*C` exact counts, to be summed element-wise across ranks.
    pub fn sums(&self) -> Vec<f64> {
        self.confusion.iter().map(|&c| c as f64).collect()
    }

    /// Rebuilds an accumulator from (summed) sums; C is the square root of the length.
    pub fn from_sums(sums: &[f64]) -> Result<Self> {
        let c = (sums.len() as f64).sqrt().round() as usize;
        if c * c != sums.len() {
            return Err(Error::Other(format!(
                "node metrics: sums length {} is not a square C*C",
                sums.len()
            )));
        }
        let mut confusion = Vec::with_capacity(sums.len());
        for (i, &v) in sums.iter().enumerate() {
            if !(v >= 0.0 && v.fract() == 0.0 && v < 9.007_199_254_740_992e15) {
                return Err(Error::Other(format!(
                    "node metrics: sums[{i}] = {v} is not an exact count"
                )));
            }
            confusion.push(v as u64);
        }
        Ok(NodeClassAccumulator {
            num_classes: c,
            confusion,
        })
    }

    /// Accuracy and macro-F1 over everything added; NaN with no nodes.
    pub fn finish(&self) -> NodeClassMetrics {
        let c = self.num_classes;
        let count: u64 = self.confusion.iter().sum();
        let correct: u64 = (0..c).map(|k| self.confusion[k * c + k]).sum();
        let mut f1_sum = 0.0f64;
        let mut classes = 0u64;
        for k in 0..c {
            let tp = self.confusion[k * c + k];
            let labelled: u64 = self.confusion[k * c..(k + 1) * c].iter().sum();
            let predicted: u64 = (0..c).map(|l| self.confusion[l * c + k]).sum();
            let fn_ = labelled - tp;
            let fp = predicted - tp;
            if tp + fp + fn_ == 0 {
                continue;
            }
            f1_sum += 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
            classes += 1;
        }
        if count == 0 {
            return NodeClassMetrics {
                accuracy: f64::NAN,
                macro_f1: f64::NAN,
                count,
            };
        }
        NodeClassMetrics {
            accuracy: correct as f64 / count as f64,
            macro_f1: f1_sum / classes as f64,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(
            argmax_rows(&[1.0, 3.0, 3.0, f32::NAN, 0.0, -1.0], 3),
            vec![1, 1]
        );
    }
}
