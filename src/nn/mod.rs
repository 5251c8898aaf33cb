//! The model: GraphSAGE (mean aggregator) with a link predictor or a classification head, its
//! flat parameter buffer, losses and Adam, all with hand-written backward passes over the
//! `backend::Backend` seam.
//!
//! # API summary
//!
//! ```text
//! let cfg = ModelConfig { task: Task::LinkPrediction, in_dim: 128, hidden: 256, num_layers: 3,
//!                         dropout: 0.0, predictor_layers: 3, num_classes: 0 };
//! let model = Model::<CpuBackend>::new(cfg)?;              // validates the config
//! let mut params = b.upload(&model.init_params(seed))?;    // one flat buffer (model.layout())
//! let mut grads = b.zeros(model.num_params())?;
//! let mut adam = Adam::new(&b, AdamConfig { lr: 5e-4, ..Default::default() }, model.num_params())?;
//! // per step: blocks = NeighborSampler::sample(..), features of blocks.input_nodes() uploaded
//! let stats = model.link_step(&b, &params, &mut grads, &blocks, None, &features, &pos, &neg,
//!                             1.0 / global_pairs as f32, StepCtx { seed, epoch, step, train: true })?;
//! // (allreduce-sum grads across ranks here)
//! adam.step(&b, &mut params, &grads)?;
//! ```
//!
//! - `Model::link_step` / `Model::node_step` SET every gradient element to
//!   `grad_scale * d(sum of per-item losses)/d(params)` and return `StepStats { loss_sum, count,
//!   timings }` (loss unscaled). Pairs are positions into `blocks.seeds`; labels are per seed.
//! - `Model::embed` runs the SAGE stack forward for the seeds (no gradient).
//! - Layer-wise inference: `Model::layer_forward(b, params, layer, &block, &h_src)` (no dropout,
//!   ReLU on all but the last layer), then `Model::score_pairs(b, params, &h_a, &h_b)` (predictor
//!   logits of row-aligned pairs) or `Model::classify(b, params, &h)` (class logits).
//! - `ParamLayout` names every tensor (`sage.{l}.w_self|w_neigh|bias`, `pred.{i}.weight|bias`,
//!   `head.weight|bias`) with its offset; gradients and Adam moments share it.
//! - `Adam::state` / `Adam::from_state` move `AdamState { t, m, v }` to and from the host for
//!   checkpoints.

pub mod adam;
pub mod loss;
pub mod model;
pub mod params;
pub mod predictor;
pub mod sage;

pub use adam::{Adam, AdamConfig, AdamState};
pub use model::{Model, ModelConfig, StepCtx, StepStats, StepTimings, Task};
pub use params::{ParamEntry, ParamInit, ParamKind, ParamLayout};
