//! Evaluation: layer-wise inference and link-prediction / node-classification metrics.

pub mod cli;
pub mod link;
pub mod nodeclass;
