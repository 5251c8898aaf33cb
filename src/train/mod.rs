//! Training: the loop, checkpoints, metrics, plots, model selection.

pub mod checkpoint;
pub mod cli;
pub mod metrics;
pub mod plot;
pub mod select;
pub mod tensorboard;
