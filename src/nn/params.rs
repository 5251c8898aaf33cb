//! The flat parameter buffer: every weight of the model is a named view into one `f32` vector.
//!
//! Gradients and Adam moments use the same layout, so one allreduce averages all gradients and one
//! write checkpoints the model. Initialisation is deterministic (counter-based hash): Glorot
//! uniform for weight matrices, zeros for biases.

use serde::{Deserialize, Serialize};

use crate::sample::rng::{hash, unit_f32, Purpose};

/// What a tensor is, which decides its initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// A `rows x cols` matrix used as `x · W` (rows = fan-in, cols = fan-out): Glorot uniform.
    Weight,
    /// A `1 x cols` bias: zeros.
    Bias,
}

/// One named tensor in the flat buffer: elements `offset .. offset + rows * cols`, row-major.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    pub name: String,
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub kind: ParamKind,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The element range of this tensor in the flat buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layout of the flat buffer: tensors packed back to back in push order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamLayout {
    pub entries: Vec<ParamEntry>,
}

impl ParamLayout {
    /// Appends a tensor and returns its offset.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        kind: ParamKind,
    ) -> usize {
        let offset = self.total_len();
        self.entries.push(ParamEntry {
            name: name.into(),
            offset,
            rows,
            cols,
            kind,
        });
        offset
    }
    /// Total number of parameters.
    pub fn total_len(&self) -> usize {
        self.entries.last().map(|e| e.offset + e.len()).unwrap_or(0)
    }
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
    /// Initial values: tensor `t` (push order) draws element `i` from
    /// `unit_f32(hash(seed, 0, 0, Purpose::Init + t, i, 0))`, mapped to Glorot's
    /// `U(-sqrt(6 / (rows + cols)), +sqrt(6 / (rows + cols)))` for weights; biases are zero.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut out = vec![0.0f32; self.total_len()];
        for (t, e) in self.entries.iter().enumerate() {
            if e.kind == ParamKind::Bias {
                continue;
            }
            let limit = (6.0f64 / (e.rows + e.cols).max(1) as f64).sqrt() as f32;
            let purpose = Purpose::Init as u64 + t as u64;
            for (i, v) in out[e.range()].iter_mut().enumerate() {
                let u = unit_f32(hash(seed, 0, 0, purpose, i as u64, 0));
                *v = (2.0 * u - 1.0) * limit;
            }
        }
        out
    }
}
