//! The whole model: SAGE layers plus a task head, its parameter layout, and the training step
//! (forward, loss, hand-written backward) of each task.

use std::marker::PhantomData;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, DeviceBlock, DropoutKey};
use crate::error::{Error, Result};
use crate::nn::params::{ParamInit, ParamKind, ParamLayout};
use crate::nn::predictor::{Linear, LinkPredictor};
use crate::nn::sage::{SageForward, SageLayer};
use crate::sample::block::{Block, SampledBlocks};
use crate::sample::rng::Purpose;

mod steps;

/// What the model is trained for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Predict missing edges (citations): BCE against random negatives, scored by MRR / Hits@K
    /// against fixed negatives.
    LinkPrediction,
    /// Predict node classes: softmax cross-entropy, scored by accuracy / macro-F1.
    NodeClassification,
}

/// The model's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub task: Task,
    /// Input feature width.
    pub in_dim: usize,
    /// Width of every SAGE layer's output (and of the predictor's hidden layers).
    pub hidden: usize,
    /// Number of SAGE layers (= number of sampling hops).
    pub num_layers: usize,
    /// Dropout probability after each SAGE layer but the last, when training.
    pub dropout: f32,
    /// Dropout probability on the input features, when training (Planetoid-style models use it
    /// on sparse bag-of-words inputs).
    #[serde(default)]
    pub input_dropout: f32,
    /// Linear layers of the link predictor (OGB's reference: 3); ignored for node classification.
    pub predictor_layers: usize,
    /// Number of classes; used by node classification only.
    pub num_classes: usize,
    /// How the initial parameters are drawn.
    #[serde(default)]
    pub init: ParamInit,
}

impl ModelConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::config(f, m));
        if self.in_dim == 0 {
            return bad("in_dim", "the input features must have at least one column");
        }
        if self.hidden == 0 {
            return bad("hidden", "must be at least 1");
        }
        if self.num_layers == 0 {
            return bad("num_layers", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.input_dropout) {
            return bad("input_dropout", "must be in [0, 1)");
        }
        match self.task {
            Task::LinkPrediction if self.predictor_layers == 0 => {
                bad("predictor_layers", "must be at least 1")
            }
            Task::NodeClassification if self.num_classes < 2 => bad(
                "num_classes",
                "node classification needs at least 2 classes",
            ),
            _ => Ok(()),
        }
    }
}

/// Where a step is: keys the dropout masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StepCtx {
    pub seed: u64,
    pub epoch: u64,
    pub step: u64,
    /// Dropout on (training) or off (evaluation).
    pub train: bool,
}

/// Wall time of the phases of a step, in seconds (the backend is synchronised at each boundary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepTimings {
    pub upload_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
}

/// What a step reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepStats {
    /// Sum of the per-item losses (unscaled).
    pub loss_sum: f64,
    /// Number of items (pairs or nodes) in the loss.
    pub count: usize,
    pub timings: StepTimings,
}

/// The uploaded blocks and each SAGE layer's forward cache of one step.
struct StackForward<B: Backend> {
    dblocks: Vec<DeviceBlock<B>>,
    caches: Vec<SageForward<B>>,
}

impl<B: Backend> StackForward<B> {
    fn recycle(self, b: &B) {
        for c in self.caches {
            c.recycle(b);
        }
    }
}

/// Added to `Purpose::Dropout` for the input-feature mask (layer masks add the layer index).
const INPUT_DROPOUT_KEY: u64 = 0xff;

/// GraphSAGE with a link predictor or a classification head, over backend `B`.
pub struct Model<B: Backend> {
    config: ModelConfig,
    layout: ParamLayout,
    layers: Vec<SageLayer>,
    predictor: Option<LinkPredictor>,
    head: Option<Linear>,
    _backend: PhantomData<fn() -> B>,
}

impl<B: Backend> Model<B> {
    /// Builds the layout: `sage.{l}.w_self`, `sage.{l}.w_neigh`, `sage.{l}.bias` per layer, then
    /// `pred.{i}.weight` / `pred.{i}.bias` (link prediction) or `head.weight` / `head.bias`.
    pub fn new(config: ModelConfig) -> Result<Self> {
        config.validate()?;
        let mut layout = ParamLayout::default();
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let in_dim = if l == 0 { config.in_dim } else { config.hidden };
            let out_dim = config.hidden;
            // W_neigh right after W_self: the layer uses them as one stacked matrix.
            let weights = layout.push(
                format!("sage.{l}.w_self"),
                in_dim,
                out_dim,
                ParamKind::Weight,
            );
            layout.push(
                format!("sage.{l}.w_neigh"),
                in_dim,
                out_dim,
                ParamKind::Weight,
            );
            let bias = layout.push(
                format!("sage.{l}.bias"),
                1,
                out_dim,
                ParamKind::Bias { fan_in: in_dim },
            );
            layers.push(SageLayer {
                in_dim,
                out_dim,
                weights,
                bias,
                activation: l + 1 < config.num_layers,
            });
        }
        let mut linear = |name: &str, in_dim: usize, out_dim: usize| Linear {
            in_dim,
            out_dim,
            weight: layout.push(format!("{name}.weight"), in_dim, out_dim, ParamKind::Weight),
            bias: layout.push(
                format!("{name}.bias"),
                1,
                out_dim,
                ParamKind::Bias { fan_in: in_dim },
            ),
        };
        let (predictor, head) = match config.task {
            Task::LinkPrediction => {
                let n = config.predictor_layers;
                let layers = (0..n)
                    .map(|i| {
                        let out = if i + 1 == n { 1 } else { config.hidden };
                        linear(&format!("pred.{i}"), config.hidden, out)
                    })
                    .collect();
                (Some(LinkPredictor { layers }), None)
            }
            Task::NodeClassification => (
                None,
                Some(linear("head", config.hidden, config.num_classes)),
            ),
        };
        Ok(Model {
            config,
            layout,
            layers,
            predictor,
            head,
            _backend: PhantomData,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    pub fn num_params(&self) -> usize {
        self.layout.total_len()
    }
    /// The link predictor (link-prediction models only).
    pub fn predictor(&self) -> Option<&LinkPredictor> {
        self.predictor.as_ref()
    }
    pub fn sage_layers(&self) -> &[SageLayer] {
        &self.layers
    }
    /// Deterministic initial parameters under the config's scheme (see `ParamLayout::init`).
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        self.layout.init(seed, self.config.init)
    }

    fn input_dropout_key(&self, ctx: &StepCtx) -> Option<DropoutKey> {
        (ctx.train && self.config.input_dropout > 0.0).then(|| DropoutKey {
            seed: ctx.seed,
            epoch: ctx.epoch,
            step: ctx.step,
            purpose: Purpose::Dropout as u64 + INPUT_DROPOUT_KEY,
            p: self.config.input_dropout,
        })
    }

    fn dropout_key(&self, ctx: &StepCtx, layer: usize) -> Option<DropoutKey> {
        (ctx.train && self.config.dropout > 0.0).then(|| DropoutKey {
            seed: ctx.seed,
            epoch: ctx.epoch,
            step: ctx.step,
            purpose: Purpose::Dropout as u64 + layer as u64,
            p: self.config.dropout,
        })
    }

    fn check_inputs(
        &self,
        b: &B,
        params: &B::F,
        blocks: &SampledBlocks,
        input_features: &B::F,
    ) -> Result<()> {
        if b.len(params) != self.num_params() {
            return Err(Error::Other(format!(
                "parameter buffer has {} values, the model has {}",
                b.len(params),
                self.num_params()
            )));
        }
        if blocks.blocks.len() != self.layers.len() {
            return Err(Error::Other(format!(
                "{} sampled blocks for a model of {} layers (fan-outs and num_layers differ)",
                blocks.blocks.len(),
                self.layers.len()
            )));
        }
        let want = blocks.blocks[0].num_src() * self.config.in_dim;
        if b.len(input_features) != want {
            return Err(Error::Other(format!(
                "input features hold {} values, expected {} rows x {}",
                b.len(input_features),
                blocks.blocks[0].num_src(),
                self.config.in_dim
            )));
        }
        Ok(())
    }

    /// Forward through all SAGE layers; returns the device blocks (`device_blocks`, or
    /// `blocks` uploaded) and each layer's cache.
    #[allow(clippy::too_many_arguments)]
    fn forward_layers(
        &self,
        b: &B,
        params: &B::F,
        blocks: &SampledBlocks,
        device_blocks: Option<Vec<DeviceBlock<B>>>,
        input_features: &B::F,
        ctx: &StepCtx,
        timings: &mut StepTimings,
    ) -> Result<StackForward<B>> {
        self.check_inputs(b, params, blocks, input_features)?;
        let t0 = Instant::now();
        let dblocks = match device_blocks {
            Some(d) => {
                DeviceBlock::check_match(&d, blocks)?;
                d
            }
            None => blocks
                .blocks
                .iter()
                .map(|blk| DeviceBlock::upload(b, blk))
                .collect::<Result<Vec<_>>>()?,
        };
        b.synchronize()?;
        timings.upload_s += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let dropped_input = match self.input_dropout_key(ctx) {
            Some(key) => {
                let n = b.len(input_features);
                let mut x = b.scratch(n)?;
                b.copy((input_features, 0), (&mut x, 0), n)?;
                let rows = blocks.blocks[0].num_src();
                b.dropout_fwd(&mut x, rows, self.config.in_dim, &dblocks[0].node_ids, key)?;
                Some(x)
            }
            None => None,
        };
        let input = dropped_input.as_ref().unwrap_or(input_features);
        let mut caches: Vec<SageForward<B>> = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let h_src = if l == 0 { input } else { &caches[l - 1].out };
            let fwd = layer.forward(b, params, &dblocks[l], h_src, self.dropout_key(ctx, l))?;
            caches.push(fwd);
        }
        // The backward needs no layer's input: each cache holds its destinations' rows.
        if let Some(x) = dropped_input {
            b.recycle(x);
        }
        b.synchronize()?;
        timings.forward_s += t1.elapsed().as_secs_f64();
        Ok(StackForward { dblocks, caches })
    }

    /// Backward through all SAGE layers from dL/d(seed embeddings); sets their gradients.
    #[allow(clippy::too_many_arguments)]
    fn backward_layers(
        &self,
        b: &B,
        params: &B::F,
        grads: &mut B::F,
        fwd: &StackForward<B>,
        grad_emb: B::F,
        ctx: &StepCtx,
    ) -> Result<()> {
        let (dblocks, caches) = (&fwd.dblocks, &fwd.caches);
        let mut grad = grad_emb;
        for l in (0..self.layers.len()).rev() {
            let key = self.dropout_key(ctx, l);
            let gin = self.layers[l].backward(
                b,
                params,
                &dblocks[l],
                &caches[l],
                &mut grad,
                key,
                grads,
                l > 0,
            )?;
            if let Some(g) = gin {
                b.recycle(std::mem::replace(&mut grad, g));
            }
        }
        b.recycle(grad);
        Ok(())
    }

    /// Embeddings of `blocks.seeds` (`seeds x hidden`), forward only.
    pub fn embed(
        &self,
        b: &B,
        params: &B::F,
        blocks: &SampledBlocks,
        input_features: &B::F,
        ctx: StepCtx,
    ) -> Result<B::F> {
        let mut t = StepTimings::default();
        let mut fwd = self.forward_layers(b, params, blocks, None, input_features, &ctx, &mut t)?;
        let last = fwd.caches.pop();
        fwd.recycle(b);
        match last {
            Some(last) => {
                b.recycle(last.agg);
                Ok(last.out)
            }
            None => b.zeros(0),
        }
    }

    /// Layer `layer` of the SAGE stack over `block` (no dropout): `num_dst x hidden` output from
    /// the `num_src x in` input `h_src`, ReLU included for all layers but the last. For
    /// layer-wise full-neighbourhood inference.
    pub fn layer_forward(
        &self,
        b: &B,
        params: &B::F,
        layer: usize,
        block: &Block,
        h_src: &B::F,
    ) -> Result<B::F> {
        let Some(l) = self.layers.get(layer) else {
            return Err(Error::Other(format!(
                "layer {layer} does not exist (the model has {})",
                self.layers.len()
            )));
        };
        if b.len(h_src) != block.num_src() * l.in_dim {
            return Err(Error::Other(format!(
                "layer {layer} input holds {} values, expected {} rows x {}",
                b.len(h_src),
                block.num_src(),
                l.in_dim
            )));
        }
        let dblock = DeviceBlock::upload(b, block)?;
        let fwd = l.forward(b, params, &dblock, h_src, None)?;
        b.recycle(fwd.agg);
        Ok(fwd.out)
    }

    /// `score_pairs` of host rows: uploads both, scores them, and gives the uploads back to the
    /// backend's buffer pool (dropped, each call of an evaluation took two buffers of the
    /// batch's size out of the pool for good).
    pub fn score_host_pairs(
        &self,
        b: &B,
        params: &B::F,
        h_a: &[f32],
        h_b: &[f32],
    ) -> Result<Vec<f32>> {
        let (a, c) = (b.upload(h_a)?, b.upload(h_b)?);
        let scores = self.score_pairs(b, params, &a, &c);
        b.recycle(a);
        b.recycle(c);
        scores
    }

    /// Predictor logits for row-aligned embedding pairs (`h_a[i]`, `h_b[i]`), each `rows x hidden`.
    pub fn score_pairs(&self, b: &B, params: &B::F, h_a: &B::F, h_b: &B::F) -> Result<Vec<f32>> {
        if self.predictor.is_none() {
            return Err(Error::config(
                "task",
                "score_pairs needs a link-prediction model",
            ));
        }
        let hidden = self.config.hidden;
        if b.len(h_a) != b.len(h_b) || b.len(h_a) % hidden != 0 {
            return Err(Error::Other(format!(
                "score_pairs: {} and {} values are not two equal sets of {hidden}-wide rows",
                b.len(h_a),
                b.len(h_b)
            )));
        }
        let rows = b.len(h_a) / hidden;
        let mut x0 = b.scratch(rows * hidden)?;
        b.mul(h_a, h_b, &mut x0)?;
        let out = self.score_products(b, params, &x0, rows);
        b.recycle(x0);
        out
    }

    /// Predictor logits of `rows` pair products `h_a ⊙ h_b` already formed (`x0`, `rows x
    /// hidden`): the second half of `score_pairs`, for callers that build the products
    /// themselves.
    pub fn score_products(&self, b: &B, params: &B::F, x0: &B::F, rows: usize) -> Result<Vec<f32>> {
        let Some(predictor) = &self.predictor else {
            return Err(Error::config(
                "task",
                "score_products needs a link-prediction model",
            ));
        };
        if b.len(x0) != rows * self.config.hidden {
            return Err(Error::Other(format!(
                "score_products: {} values are not {rows} rows of {}",
                b.len(x0),
                self.config.hidden
            )));
        }
        let mut acts = predictor.forward(b, params, x0, rows)?;
        let logits = acts
            .pop()
            .ok_or_else(|| Error::Other("empty predictor".into()))?;
        let out = b.download(&logits);
        for buf in acts.into_iter().chain([logits]) {
            b.recycle(buf);
        }
        out
    }

    /// Class logits (`rows x num_classes`, row-major) of embeddings `h` (`rows x hidden`).
    pub fn classify(&self, b: &B, params: &B::F, h: &B::F) -> Result<Vec<f32>> {
        let Some(head) = &self.head else {
            return Err(Error::config(
                "task",
                "classify needs a node-classification model",
            ));
        };
        let hidden = self.config.hidden;
        if b.len(h) % hidden != 0 {
            return Err(Error::Other(format!(
                "classify: {} values are not {hidden}-wide rows",
                b.len(h)
            )));
        }
        let logits = head.forward(b, params, h, b.len(h) / hidden)?;
        b.download(&logits)
    }
}
