//! Training: the loop (`trainer`), its configuration, checkpoints, metrics (JSONL and
//! TensorBoard), plots and model selection.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod features;
pub mod metrics;
pub mod plot;
pub mod select;
pub mod tensorboard;
pub mod trainer;
