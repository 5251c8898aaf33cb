//! Evaluation: layer-wise inference (`inference`), link-prediction / node-classification
//! metrics (`link`, `nodeclass`), and node classification from frozen embeddings (`probe`).

pub mod cli;
pub mod inference;
pub mod link;
pub mod nodeclass;
pub mod probe;

/// How held-out items are scored, the same flag for `train`'s validation passes and `eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default)]
pub struct ScoringArgs {
    /// Held-out edges scored per evaluation batch.
    #[arg(long, default_value_t = 256)]
    pub eval_batch_size: usize,
}

impl Default for ScoringArgs {
    fn default() -> Self {
        crate::runtime::declared_defaults()
    }
}
