//! The flat parameter buffer: every weight of the model is a named view into one `f32` vector.
//!
//! Gradients and Adam moments use the same layout, so one allreduce averages all gradients and one
//! write checkpoints the model. Initialisation is deterministic (counter-based hash), under one of
//! two schemes (`ParamInit`).

use serde::{Deserialize, Serialize};

use crate::sample::rng::{hash, unit_f32, Purpose};

/// What a tensor is, which decides its initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// A `rows x cols` matrix used as `x · W` (rows = fan-in, cols = fan-out).
    Weight,
    /// A `1 x cols` bias added after a product whose input has `fan_in` columns.
    Bias { fan_in: usize },
}

/// How the initial parameters are drawn (all from the counter-based hash, so any rank and any run
/// with the same seed gets the same values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ParamInit {
    /// Glorot (Xavier) uniform weights `U(±sqrt(6 / (fan_in + fan_out)))`, zero biases. The
    /// default: it learned faster than `KaimingUniform` on real citation graphs (docs/quality.md).
    #[default]
    Glorot,
    /// PyTorch's and PyG's `Linear` default: weights and biases `U(-1/sqrt(fan_in),
    /// +1/sqrt(fan_in))` (Kaiming uniform with `a = sqrt(5)`).
    KaimingUniform,
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
    /// `unit_f32(hash(seed, 0, 0, Purpose::Init + t, i, 0))`, mapped to `U(-limit, +limit)` with
    /// the scheme's limit (a Glorot bias is zero).
    pub fn init(&self, seed: u64, scheme: ParamInit) -> Vec<f32> {
        let mut out = vec![0.0f32; self.total_len()];
        for (t, e) in self.entries.iter().enumerate() {
            let limit = match (scheme, e.kind) {
                (ParamInit::Glorot, ParamKind::Bias { .. }) => continue,
                (ParamInit::Glorot, ParamKind::Weight) => {
                    (6.0f64 / (e.rows + e.cols).max(1) as f64).sqrt() as f32
                }
                (ParamInit::KaimingUniform, ParamKind::Weight) => {
                    (1.0 / (e.rows.max(1) as f64).sqrt()) as f32
                }
                (ParamInit::KaimingUniform, ParamKind::Bias { fan_in }) => {
                    (1.0 / (fan_in.max(1) as f64).sqrt()) as f32
                }
            };
            let purpose = Purpose::Init as u64 + t as u64;
            for (i, v) in out[e.range()].iter_mut().enumerate() {
                let u = unit_f32(hash(seed, 0, 0, purpose, i as u64, 0));
                *v = (2.0 * u - 1.0) * limit;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ParamLayout {
        let mut l = ParamLayout::default();
        l.push("w", 64, 16, ParamKind::Weight);
        l.push("b", 1, 16, ParamKind::Bias { fan_in: 64 });
        l.push("w2", 16, 1, ParamKind::Weight);
        l
    }

    fn max_abs(v: &[f32]) -> f32 {
        v.iter().fold(0.0, |m, x| m.max(x.abs()))
    }

    #[test]
    fn each_scheme_draws_within_its_bounds_and_fills_them() {
        let l = layout();
        let (w, b, w2) = (
            l.entries[0].range(),
            l.entries[1].range(),
            l.entries[2].range(),
        );
        let g = l.init(3, ParamInit::Glorot);
        let glorot = |i: f32, o: f32| (6.0 / (i + o)).sqrt();
        assert!(max_abs(&g[w.clone()]) <= glorot(64.0, 16.0));
        assert!(max_abs(&g[w.clone()]) > 0.9 * glorot(64.0, 16.0));
        assert!(g[b.clone()].iter().all(|&x| x == 0.0));
        assert!(max_abs(&g[w2.clone()]) <= glorot(16.0, 1.0));
        let k = l.init(3, ParamInit::KaimingUniform);
        assert!(max_abs(&k[w.clone()]) <= 1.0 / 8.0 && max_abs(&k[w.clone()]) > 0.9 / 8.0);
        // The bias bound comes from the fan-in of its product, not from its own shape.
        assert!(max_abs(&k[b.clone()]) <= 1.0 / 8.0 && max_abs(&k[b]) > 0.5 / 8.0);
        assert!(max_abs(&k[w2.clone()]) <= 0.25 && max_abs(&k[w2]) > 0.2);
        // Deterministic per seed, different across seeds; both schemes share the draws.
        assert_eq!(k, l.init(3, ParamInit::KaimingUniform));
        assert_ne!(k, l.init(4, ParamInit::KaimingUniform));
        let ratio = glorot(64.0, 16.0) * 8.0;
        for i in w {
            assert!((g[i] - k[i] * ratio).abs() < 1e-6);
        }
    }
}
