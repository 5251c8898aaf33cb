//! Heads on top of the node embeddings: the link predictor (an MLP on the element-wise product of
//! two embeddings, as OGB's reference) and the node-classification head (one linear layer).

use crate::backend::Backend;
use crate::error::Result;

/// A dense layer `y = x · W + b` with `W` at `weight` (`in_dim x out_dim`) and `b` at `bias`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linear {
    pub in_dim: usize,
    pub out_dim: usize,
    pub weight: usize,
    pub bias: usize,
}

impl Linear {
    /// `rows x out_dim` output of the `rows x in_dim` input `x`.
    pub fn forward<B: Backend>(&self, b: &B, params: &B::F, x: &B::F, rows: usize) -> Result<B::F> {
        let mut y = b.scratch(rows * self.out_dim)?;
        b.gemm(
            false,
            false,
            rows,
            self.out_dim,
            self.in_dim,
            1.0,
            (x, 0),
            (params, self.weight),
            0.0,
            (&mut y, 0),
        )?;
        b.add_row_bias(&mut y, rows, self.out_dim, (params, self.bias))?;
        Ok(y)
    }

    /// Sets this layer's gradients in `grads` from `grad_y`, and returns dL/dx when asked.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        b: &B,
        params: &B::F,
        x: &B::F,
        rows: usize,
        grad_y: &B::F,
        grads: &mut B::F,
        want_input_grad: bool,
    ) -> Result<Option<B::F>> {
        let (i, o) = (self.in_dim, self.out_dim);
        b.col_sums(grad_y, rows, o, (grads, self.bias))?;
        b.gemm(
            true,
            false,
            i,
            o,
            rows,
            1.0,
            (x, 0),
            (grad_y, 0),
            0.0,
            (grads, self.weight),
        )?;
        if !want_input_grad {
            return Ok(None);
        }
        let mut grad_x = b.scratch(rows * i)?;
        b.gemm(
            false,
            true,
            rows,
            i,
            o,
            1.0,
            (grad_y, 0),
            (params, self.weight),
            0.0,
            (&mut grad_x, 0),
        )?;
        Ok(Some(grad_x))
    }
}

/// The link predictor: `logit = MLP(h_a ⊙ h_b)`, linear layers with ReLU between them (none after
/// the last, whose width is 1). No dropout inside the predictor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPredictor {
    pub layers: Vec<Linear>,
}

impl LinkPredictor {
    /// Activations of every layer for the `rows x dim` input `x0` (the element-wise product);
    /// the last one is the `rows x 1` logits.
    pub fn forward<B: Backend>(
        &self,
        b: &B,
        params: &B::F,
        x0: &B::F,
        rows: usize,
    ) -> Result<Vec<B::F>> {
        let mut acts: Vec<B::F> = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let input = if l == 0 { x0 } else { &acts[l - 1] };
            let mut y = layer.forward(b, params, input, rows)?;
            if l + 1 < self.layers.len() {
                b.relu_fwd(&mut y)?;
            }
            acts.push(y);
        }
        Ok(acts)
    }

    /// Sets the predictor's gradients and returns dL/dx0. `grad_logits` is dL/d(logits).
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        b: &B,
        params: &B::F,
        x0: &B::F,
        acts: &[B::F],
        rows: usize,
        grad_logits: B::F,
        grads: &mut B::F,
    ) -> Result<B::F> {
        let mut grad = grad_logits;
        for l in (0..self.layers.len()).rev() {
            let input = if l == 0 { x0 } else { &acts[l - 1] };
            let gx = self.layers[l].backward(b, params, input, rows, &grad, grads, true)?;
            let Some(mut gx) = gx else {
                unreachable!("input gradient was requested")
            };
            if l > 0 {
                b.relu_bwd(&acts[l - 1], &mut gx)?;
            }
            b.recycle(std::mem::replace(&mut grad, gx));
        }
        Ok(grad)
    }
}
