//! The training configuration: defaults (OGB's reference GraphSAGE for link prediction), a TOML
//! file, then command-line overrides, validated before any work. The effective configuration is
//! printed and stored in the run directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::model::Task;
use crate::nn::params::ParamInit;
use crate::runtime::DeviceKind;
use crate::sample::neighbor::SamplingRule;
use crate::train::features::FeaturePlacement;

/// Every knob of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub task: Task,
    pub epochs: u64,
    /// Positive edges (or seed nodes) per step, over all ranks together.
    pub batch_size: usize,
    /// Cap on steps per epoch; 0 (the default) = a full pass over the training items, as OGB's
    /// reference trains.
    pub steps_per_epoch: u64,
    pub lr: f32,
    pub weight_decay: f32,
    pub hidden: usize,
    pub layers: usize,
    /// Neighbours sampled per hop, seeds' hop first; -1 takes all.
    pub fanouts: Vec<i32>,
    /// Which neighbours each layer aggregates over: `subgraph` (each node sampled once, when first
    /// reached, and every layer uses those edges; PyG's rule) or `per-layer` (fresh neighbours at
    /// every hop; DGL's blocks).
    pub sampling: SamplingRule,
    /// Initial parameters: `kaiming-uniform` (PyTorch's Linear default) or `glorot`.
    pub init: ParamInit,
    pub dropout: f32,
    /// Dropout on the input features (0 = off), as Planetoid-style node classifiers use it.
    pub input_dropout: f32,
    /// Layers of the link-predictor MLP.
    pub predictor_layers: usize,
    /// Random negative targets per positive training edge.
    pub negatives_per_positive: usize,
    /// Evaluate on the validation split every N epochs (0 = only at the end).
    pub eval_every: u64,
    /// Held-out edges scored per evaluation batch.
    pub eval_batch_size: usize,
    /// Stop after this many evaluations without improvement (0 = never).
    pub patience: u64,
    /// Also checkpoint every N steps (0 = at epoch ends only).
    pub checkpoint_every: u64,
    /// Regular checkpoints kept besides the best one.
    pub keep_last: usize,
    /// Compare a checksum of the parameters across ranks every N steps.
    pub checksum_every: u64,
    /// Remote feature rows cached per rank.
    pub feature_cache_rows: usize,
    pub seed: u64,
    /// CPU threads per rank (0 = all cores, divided among the ranks on this machine).
    pub threads: usize,
    pub device: DeviceKind,
    /// Where input feature rows live on a GPU (`auto`, `device`, `host`); the CPU backend always
    /// reads them in place.
    pub features_on: FeaturePlacement,
    /// Sample this rank's nodes on the GPU when the backend has one (the same samples as the host
    /// sampler, bit for bit).
    pub device_sampling: bool,
    /// Log a step line every N steps.
    pub log_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        // OGB's reference mini-batch GraphSAGE for ogbl-citation2.
        TrainConfig {
            task: Task::LinkPrediction,
            epochs: 10,
            batch_size: 512,
            steps_per_epoch: 0,
            lr: 0.0005,
            weight_decay: 0.0,
            hidden: 256,
            layers: 3,
            fanouts: vec![15, 10, 5],
            sampling: SamplingRule::default(),
            init: ParamInit::default(),
            dropout: 0.0,
            input_dropout: 0.0,
            predictor_layers: 3,
            negatives_per_positive: 1,
            eval_every: 1,
            eval_batch_size: 256,
            patience: 0,
            checkpoint_every: 0,
            keep_last: 3,
            checksum_every: 50,
            feature_cache_rows: 100_000,
            seed: 0,
            threads: 0,
            device: DeviceKind::Auto,
            features_on: FeaturePlacement::Auto,
            device_sampling: true,
            log_every: 20,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently do nothing).
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::invalid(path, e.to_string()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let c = |field: &str, msg: String| Err(Error::config(field, msg));
        if self.batch_size == 0 {
            return c("batch_size", "must be at least 1".into());
        }
        if self.hidden == 0 {
            return c("hidden", "must be at least 1".into());
        }
        if self.layers == 0 {
            return c("layers", "must be at least 1".into());
        }
        if self.fanouts.len() != self.layers {
            return c(
                "fanouts",
                format!(
                    "has {} entries ({:?}) for {} layers: give one fan-out per layer",
                    self.fanouts.len(),
                    self.fanouts,
                    self.layers
                ),
            );
        }
        if self.fanouts.iter().any(|&f| f == 0 || f < -1) {
            return c(
                "fanouts",
                format!(
                    "{:?}: each must be positive, or -1 for all neighbours",
                    self.fanouts
                ),
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return c("lr", format!("{} must be a positive number", self.lr));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return c("dropout", format!("{} must be in [0, 1)", self.dropout));
        }
        if !(0.0..1.0).contains(&self.input_dropout) {
            return c(
                "input_dropout",
                format!("{} must be in [0, 1)", self.input_dropout),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return c(
                "weight_decay",
                format!("{} must be >= 0", self.weight_decay),
            );
        }
        if self.predictor_layers == 0 {
            return c("predictor_layers", "must be at least 1".into());
        }
        if self.negatives_per_positive == 0 {
            return c("negatives_per_positive", "must be at least 1".into());
        }
        if self.eval_batch_size == 0 {
            return c("eval_batch_size", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return c("epochs", "must be at least 1".into());
        }
        Ok(())
    }
}

/// Parses a fan-out list such as `15,10,5` or `-1,-1`.
pub fn parse_fanouts(s: &str) -> std::result::Result<Vec<i32>, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<i32>()
                .map_err(|_| format!("'{p}' in '{s}' is not an integer"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ogb_reference_and_valid() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        assert_eq!((c.layers, c.hidden, c.batch_size), (3, 256, 512));
        assert_eq!(c.fanouts, vec![15, 10, 5]);
        assert_eq!(c.lr, 0.0005);
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut c = TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("batch_size"));
        c.batch_size = 8;
        c.fanouts = vec![10, 5];
        assert!(c.validate().unwrap_err().to_string().contains("fanouts"));
        c.fanouts = vec![10, 5, 5];
        c.hidden = 0;
        assert!(c.validate().unwrap_err().to_string().contains("hidden"));
    }

    #[test]
    fn toml_round_trip_and_unknown_keys_rejected() {
        let c = TrainConfig::default();
        let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(c, back);
        assert!(toml::from_str::<TrainConfig>("batchsize = 3").is_err());
    }
}
