//! Training: the GNN's loop (`trainer`) and the parts any trainer reuses — the batch and epoch
//! plan (`batch`), the starting point and resume (`state`), the typed step report (`report`),
//! checkpoints, metrics (JSONL and TensorBoard), the configuration, plots and model selection.

pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod features;
pub mod metrics;
pub mod pipeline;
pub mod plot;
pub mod report;
pub mod select;
pub mod state;
pub mod tensorboard;
pub mod trainer;
