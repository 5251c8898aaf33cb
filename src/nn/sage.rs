//! The GraphSAGE layer with the mean aggregator and its hand-written backward.
//!
//! `out = h_dst · W_self + mean_{u in N(v)} h_u · W_neigh + b`, then (for every layer but the
//! last) ReLU and dropout. `W_neigh` follows `W_self` in the parameter buffer, so the two stack
//! as one `2·in x out` matrix, and the aggregation writes each destination's own row beside its
//! mean (`[h_dst | mean]`, `AggLayout::SelfAndMean`): the affine map is one product with K = 2·in,
//! its weight gradient one product and its input gradient one product, instead of two each.

use crate::backend::{AggLayout, Backend, DeviceBlock, DropoutKey};
use crate::error::Result;

/// One SAGE layer: dimensions and the offsets of its tensors in the flat parameter buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SageLayer {
    pub in_dim: usize,
    pub out_dim: usize,
    /// Offset of the stacked `[W_self; W_neigh]` (`2·in_dim x out_dim`): `W_self`'s rows, then
    /// `W_neigh`'s (two named tensors of the layout, pushed one after the other).
    pub weights: usize,
    /// Offset of the bias (`out_dim`).
    pub bias: usize,
    /// Whether ReLU (and dropout, when training) follow the affine map.
    pub activation: bool,
}

/// What the forward keeps for the backward.
pub struct SageForward<B: Backend> {
    /// Each destination's input beside the mean of its neighbours' (`[h_dst | mean]`,
    /// `num_dst x 2·in_dim`).
    pub agg: B::F,
    /// The layer's output after activation and dropout (`num_dst x out_dim`).
    pub out: B::F,
}

impl<B: Backend> SageForward<B> {
    /// Hands the buffers back to the backend.
    pub fn recycle(self, b: &B) {
        b.recycle(self.agg);
        b.recycle(self.out);
    }
}

impl SageLayer {
    /// Forward over `block` with input rows `h_src` (`num_src x in_dim`). `dropout` applies only
    /// when the layer has an activation.
    pub fn forward<B: Backend>(
        &self,
        b: &B,
        params: &B::F,
        block: &DeviceBlock<B>,
        h_src: &B::F,
        dropout: Option<DropoutKey>,
    ) -> Result<SageForward<B>> {
        let w = self.weights;
        let n = block.num_dst;
        let (i, o) = (self.in_dim, self.out_dim);
        let mut agg = b.scratch(n * 2 * i)?;
        b.mean_agg_fwd(block, AggLayout::SelfAndMean, h_src, i, &mut agg)?;
        let mut out = b.scratch(n * o)?;
        b.gemm(
            false,
            false,
            n,
            o,
            2 * i,
            1.0,
            (&agg, 0),
            (params, w),
            0.0,
            (&mut out, 0),
        )?;
        if self.activation {
            b.add_row_bias_relu(&mut out, n, o, (params, self.bias))?;
            if let Some(key) = dropout.filter(|k| k.p > 0.0) {
                b.dropout_fwd(&mut out, n, o, &block.node_ids, key)?;
            }
        } else {
            b.add_row_bias(&mut out, n, o, (params, self.bias))?;
        }
        Ok(SageForward { agg, out })
    }

    /// Backward. `grad_out` is dL/d(output) and is overwritten with dL/d(pre-activation).
    /// Writes (sets) this layer's gradients into `grads` at the layer's offsets and returns
    /// dL/d(h_src) (`num_src x in_dim`) when `want_input_grad`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        b: &B,
        params: &B::F,
        block: &DeviceBlock<B>,
        fwd: &SageForward<B>,
        grad_out: &mut B::F,
        dropout: Option<DropoutKey>,
        grads: &mut B::F,
        want_input_grad: bool,
    ) -> Result<Option<B::F>> {
        let w = self.weights;
        let n = block.num_dst;
        let (i, o) = (self.in_dim, self.out_dim);
        if self.activation {
            if let Some(key) = dropout.filter(|k| k.p > 0.0) {
                b.dropout_bwd(grad_out, n, o, &block.node_ids, key)?;
            }
            // The stored output is zero wherever the ReLU or the dropout zeroed it; dropped
            // elements already have zero gradient, so its sign pattern is the ReLU's.
            b.relu_bwd_col_sums(&fwd.out, grad_out, n, o, (grads, self.bias))?;
        } else {
            b.col_sums(grad_out, n, o, (grads, self.bias))?;
        }
        // d[W_self; W_neigh] = [h_dst | mean]^T · grad_out.
        b.gemm(
            true,
            false,
            2 * i,
            o,
            n,
            1.0,
            (&fwd.agg, 0),
            (grad_out, 0),
            0.0,
            (grads, w),
        )?;
        if !want_input_grad {
            return Ok(None);
        }
        // d[h_dst | mean] = grad_out · [W_self; W_neigh]^T, then both halves reach the sources:
        // the mean's through the reverse index, the self half to the destination rows.
        let mut grad_cat = b.scratch(n * 2 * i)?;
        b.gemm(
            false,
            true,
            n,
            2 * i,
            o,
            1.0,
            (grad_out, 0),
            (params, w),
            0.0,
            (&mut grad_cat, 0),
        )?;
        let mut grad_src = b.scratch(block.num_src * i)?;
        b.mean_agg_bwd(block, AggLayout::SelfAndMean, &grad_cat, i, &mut grad_src)?;
        b.recycle(grad_cat);
        Ok(Some(grad_src))
    }
}
