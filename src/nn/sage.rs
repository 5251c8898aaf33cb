//! The GraphSAGE layer with the mean aggregator and its hand-written backward.
//!
//! `out = h_dst · W_self + mean_{u in N(v)} h_u · W_neigh + b`, then (for every layer but the
//! last) ReLU and dropout. `h_dst` is the prefix of `h_src` (a block's destinations are the first
//! source rows), so the self term needs no copy.

use crate::backend::{Backend, DeviceBlock, DropoutKey};
use crate::error::Result;

/// One SAGE layer: dimensions and the offsets of its tensors in the flat parameter buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SageLayer {
    pub in_dim: usize,
    pub out_dim: usize,
    /// Offset of `W_self` (`in_dim x out_dim`).
    pub w_self: usize,
    /// Offset of `W_neigh` (`in_dim x out_dim`).
    pub w_neigh: usize,
    /// Offset of the bias (`out_dim`).
    pub bias: usize,
    /// Whether ReLU (and dropout, when training) follow the affine map.
    pub activation: bool,
}

/// What the forward keeps for the backward.
pub struct SageForward<B: Backend> {
    /// Mean of the neighbours' inputs (`num_dst x in_dim`).
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
        let n = block.num_dst;
        let mut agg = b.scratch(n * self.in_dim)?;
        b.mean_agg_fwd(block, h_src, self.in_dim, &mut agg)?;
        let mut out = b.scratch(n * self.out_dim)?;
        let (i, o) = (self.in_dim, self.out_dim);
        b.gemm(
            false,
            false,
            n,
            o,
            i,
            1.0,
            (h_src, 0),
            (params, self.w_self),
            0.0,
            (&mut out, 0),
        )?;
        b.gemm(
            false,
            false,
            n,
            o,
            i,
            1.0,
            (&agg, 0),
            (params, self.w_neigh),
            1.0,
            (&mut out, 0),
        )?;
        b.add_row_bias(&mut out, n, o, (params, self.bias))?;
        if self.activation {
            b.relu_fwd(&mut out)?;
            if let Some(key) = dropout.filter(|k| k.p > 0.0) {
                b.dropout_fwd(&mut out, n, o, &block.node_ids, key)?;
            }
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
        h_src: &B::F,
        fwd: &SageForward<B>,
        grad_out: &mut B::F,
        dropout: Option<DropoutKey>,
        grads: &mut B::F,
        want_input_grad: bool,
    ) -> Result<Option<B::F>> {
        let n = block.num_dst;
        let (i, o) = (self.in_dim, self.out_dim);
        if self.activation {
            if let Some(key) = dropout.filter(|k| k.p > 0.0) {
                b.dropout_bwd(grad_out, n, o, &block.node_ids, key)?;
            }
            // The stored output is zero wherever the ReLU or the dropout zeroed it; dropped
            // elements already have zero gradient, so its sign pattern is the ReLU's.
            b.relu_bwd(&fwd.out, grad_out)?;
        }
        b.col_sums(grad_out, n, o, (grads, self.bias))?;
        b.gemm(
            true,
            false,
            i,
            o,
            n,
            1.0,
            (h_src, 0),
            (grad_out, 0),
            0.0,
            (grads, self.w_self),
        )?;
        b.gemm(
            true,
            false,
            i,
            o,
            n,
            1.0,
            (&fwd.agg, 0),
            (grad_out, 0),
            0.0,
            (grads, self.w_neigh),
        )?;
        if !want_input_grad {
            return Ok(None);
        }
        let mut grad_agg = b.scratch(n * i)?;
        b.gemm(
            false,
            true,
            n,
            i,
            o,
            1.0,
            (grad_out, 0),
            (params, self.w_neigh),
            0.0,
            (&mut grad_agg, 0),
        )?;
        let mut grad_src = b.scratch(block.num_src * i)?;
        b.mean_agg_bwd(block, &grad_agg, i, &mut grad_src)?;
        b.recycle(grad_agg);
        // The self term reaches the destination rows, the prefix of the sources.
        b.gemm(
            false,
            true,
            n,
            i,
            o,
            1.0,
            (grad_out, 0),
            (params, self.w_self),
            1.0,
            (&mut grad_src, 0),
        )?;
        Ok(Some(grad_src))
    }
}
