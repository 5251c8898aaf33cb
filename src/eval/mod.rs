//! Evaluation: layer-wise inference (`inference`) and link-prediction / node-classification
//! metrics (`link`, `nodeclass`).

pub mod cli;
pub mod inference;
pub mod link;
pub mod nodeclass;
