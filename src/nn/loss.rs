//! Losses of the two tasks, on the backend, with host references for tests.
//!
//! Link prediction: binary cross-entropy with logits (positives label 1, negatives 0). Node
//! classification: softmax cross-entropy. Both return the unscaled loss sum and the gradient
//! multiplied by the caller's `grad_scale`.

use crate::backend::Backend;
use crate::error::Result;

/// BCE with logits over `logits` with `labels` (0 or 1): `(loss sum, grad_scale * dloss/dlogits)`.
pub fn bce_with_logits<B: Backend>(
    b: &B,
    logits: &B::F,
    labels: &[f32],
    grad_scale: f32,
) -> Result<(f64, B::F)> {
    let labels = b.upload(labels)?;
    let mut grad = b.scratch(b.len(logits))?;
    let loss = b.bce_with_logits(logits, &labels, grad_scale, &mut grad)?;
    Ok((loss, grad))
}

/// Softmax cross-entropy over rows of `classes` logits: `(loss sum, grad_scale * dloss/dlogits)`.
pub fn softmax_cross_entropy<B: Backend>(
    b: &B,
    logits: &B::F,
    classes: usize,
    labels: &[u32],
    grad_scale: f32,
) -> Result<(f64, B::F)> {
    let labels = b.upload_u32(labels)?;
    let mut grad = b.scratch(b.len(logits))?;
    let loss = b.softmax_xent(logits, classes, &labels, grad_scale, &mut grad)?;
    Ok((loss, grad))
}

/// Host reference of one BCE-with-logits term, in f64.
pub fn bce_reference(x: f64, y: f64) -> f64 {
    let p = 1.0 / (1.0 + (-x).exp());
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// Host reference of one softmax cross-entropy row, in f64.
pub fn softmax_xent_reference(x: &[f64], label: usize) -> f64 {
    let mx = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = mx + x.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
    lse - x[label]
}
