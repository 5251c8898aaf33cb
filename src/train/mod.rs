//! Training: the loop, checkpoints, metrics, plots, model selection.

pub mod cli;
pub mod config;
pub mod plot;
pub mod select;
pub mod trainer;
