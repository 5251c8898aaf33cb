//! The training steps of the two tasks on top of the SAGE stack: link prediction (predictor on
//! the element-wise product of pair embeddings, BCE) and node classification (linear head,
//! softmax cross-entropy), each forward, loss and hand-written backward in one place.

use std::time::Instant;

use super::{Model, StepCtx, StepStats, StepTimings};
use crate::backend::{AggLayout, Backend, DeviceBlock};
use crate::error::{Error, Result};
use crate::nn::loss;
use crate::sample::block::SampledBlocks;

impl<B: Backend> Model<B> {
    fn check_grads(&self, b: &B, grads: &B::F) -> Result<()> {
        if b.len(grads) != self.num_params() {
            return Err(Error::Other(format!(
                "gradient buffer has {} values, the model has {}",
                b.len(grads),
                self.num_params()
            )));
        }
        Ok(())
    }

    /// One link-prediction step. `device_blocks`: `blocks` already on the device (the block
    /// chain); `None` uploads them. `pos` and `neg` are pairs of positions into `blocks.seeds`;
    /// the loss is BCE with label 1 for `pos` and 0 for `neg`. Sets `grads` (every element) to
    /// `grad_scale * d(sum of per-pair losses)/d(params)`; returns the unscaled loss sum.
    #[allow(clippy::too_many_arguments)]
    pub fn link_step(
        &self,
        b: &B,
        params: &B::F,
        grads: &mut B::F,
        blocks: &SampledBlocks,
        device_blocks: Option<Vec<DeviceBlock<B>>>,
        input_features: &B::F,
        pos: &[(u32, u32)],
        neg: &[(u32, u32)],
        grad_scale: f32,
        ctx: StepCtx,
    ) -> Result<StepStats> {
        let Some(predictor) = &self.predictor else {
            return Err(Error::config(
                "task",
                "link_step needs a link-prediction model",
            ));
        };
        self.check_grads(b, grads)?;
        let num_seeds = blocks.seeds.len();
        let pairs: Vec<(u32, u32)> = pos.iter().chain(neg).copied().collect();
        if let Some(p) = pairs
            .iter()
            .find(|p| p.0 as usize >= num_seeds || p.1 as usize >= num_seeds)
        {
            return Err(Error::Other(format!(
                "pair ({}, {}) points outside the {num_seeds} seeds",
                p.0, p.1
            )));
        }
        let mut timings = StepTimings::default();
        let fwd = self.forward_layers(
            b,
            params,
            blocks,
            device_blocks,
            input_features,
            &ctx,
            &mut timings,
        )?;
        let caches = &fwd.caches;
        let t0 = Instant::now();
        let rows = pairs.len();
        let hidden = self.config.hidden;
        let a_pos: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let b_pos: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let pick_a = DeviceBlock::from_positions(b, num_seeds, &a_pos)?;
        let pick_b = DeviceBlock::from_positions(b, num_seeds, &b_pos)?;
        let emb = &caches[self.layers.len() - 1].out;
        let mut h_a = b.scratch(rows * hidden)?;
        let mut h_b = b.scratch(rows * hidden)?;
        b.mean_agg_fwd(&pick_a, AggLayout::Mean, emb, hidden, &mut h_a)?;
        b.mean_agg_fwd(&pick_b, AggLayout::Mean, emb, hidden, &mut h_b)?;
        let mut x0 = b.scratch(rows * hidden)?;
        b.mul(&h_a, &h_b, &mut x0)?;
        let acts = predictor.forward(b, params, &x0, rows)?;
        let labels: Vec<f32> = (0..rows)
            .map(|i| if i < pos.len() { 1.0 } else { 0.0 })
            .collect();
        let logits = acts
            .last()
            .ok_or_else(|| Error::Other("empty predictor".into()))?;
        let (loss_sum, grad_logits) = loss::bce_with_logits(b, logits, &labels, grad_scale)?;
        b.synchronize()?;
        timings.forward_s += t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        b.fill(grads, 0.0)?;
        let grad_x0 = predictor.backward(b, params, &x0, &acts, rows, grad_logits, grads)?;
        let mut grad_ha = b.scratch(rows * hidden)?;
        let mut grad_hb = b.scratch(rows * hidden)?;
        b.mul_bwd(&h_a, &h_b, &grad_x0, &mut grad_ha, &mut grad_hb)?;
        let mut grad_emb = b.scratch(num_seeds * hidden)?;
        b.mean_agg_bwd(&pick_a, AggLayout::Mean, &grad_ha, hidden, &mut grad_emb)?;
        let mut grad_emb_b = b.scratch(num_seeds * hidden)?;
        b.mean_agg_bwd(&pick_b, AggLayout::Mean, &grad_hb, hidden, &mut grad_emb_b)?;
        b.axpy(1.0, &grad_emb_b, &mut grad_emb)?;
        self.backward_layers(b, params, grads, &fwd, grad_emb, &ctx)?;
        for buf in [h_a, h_b, x0, grad_x0, grad_ha, grad_hb, grad_emb_b]
            .into_iter()
            .chain(acts)
        {
            b.recycle(buf);
        }
        fwd.recycle(b);
        b.synchronize()?;
        timings.backward_s += t1.elapsed().as_secs_f64();
        Ok(StepStats {
            loss_sum,
            count: rows,
            timings,
        })
    }

    /// One node-classification step: `labels[i]` is the class of `blocks.seeds[i]`. Sets `grads`
    /// to `grad_scale * d(sum of per-node softmax cross-entropies)/d(params)`.
    #[allow(clippy::too_many_arguments)]
    pub fn node_step(
        &self,
        b: &B,
        params: &B::F,
        grads: &mut B::F,
        blocks: &SampledBlocks,
        device_blocks: Option<Vec<DeviceBlock<B>>>,
        input_features: &B::F,
        labels: &[u32],
        grad_scale: f32,
        ctx: StepCtx,
    ) -> Result<StepStats> {
        let Some(head) = &self.head else {
            return Err(Error::config(
                "task",
                "node_step needs a node-classification model",
            ));
        };
        self.check_grads(b, grads)?;
        let num_seeds = blocks.seeds.len();
        if labels.len() != num_seeds {
            return Err(Error::Other(format!(
                "{} labels for {num_seeds} seed nodes",
                labels.len()
            )));
        }
        let mut timings = StepTimings::default();
        let fwd = self.forward_layers(
            b,
            params,
            blocks,
            device_blocks,
            input_features,
            &ctx,
            &mut timings,
        )?;
        let caches = &fwd.caches;
        let t0 = Instant::now();
        let emb = &caches[self.layers.len() - 1].out;
        let logits = head.forward(b, params, emb, num_seeds)?;
        let (loss_sum, grad_logits) =
            loss::softmax_cross_entropy(b, &logits, self.config.num_classes, labels, grad_scale)?;
        b.synchronize()?;
        timings.forward_s += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        b.fill(grads, 0.0)?;
        let grad_emb = head
            .backward(b, params, emb, num_seeds, &grad_logits, grads, true)?
            .ok_or_else(|| Error::Other("head input gradient missing".into()))?;
        self.backward_layers(b, params, grads, &fwd, grad_emb, &ctx)?;
        b.recycle(logits);
        b.recycle(grad_logits);
        fwd.recycle(b);
        b.synchronize()?;
        timings.backward_s += t1.elapsed().as_secs_f64();
        Ok(StepStats {
            loss_sum,
            count: num_seeds,
            timings,
        })
    }
}
