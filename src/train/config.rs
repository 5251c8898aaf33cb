//! The training configuration, defined once (`TrainConfig`): defaults (OGB's reference
//! GraphSAGE for link prediction), then a TOML file, then the flags given on the command line,
//! validated before any work (`TrainConfig::resolve`). The effective configuration is printed and
//! stored in the run directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::ScoringArgs;
use crate::nn::adam::AdamConfig;
use crate::nn::model::{ModelConfig, Task};
use crate::nn::params::ParamInit;
use crate::runtime::ExecutionArgs;
use crate::sample::neighbor::SamplingRule;
use crate::train::features::FeaturePlacement;

/// Every setting of a training run, defined once: the struct is the command line (clap: help text
/// and default of every flag), the TOML file (serde: the same names with underscores) and the
/// record stored in the run directory and in checkpoints. Defaults are OGB's reference mini-batch
/// GraphSAGE for ogbl-citation2; `validate` checks every value.
/// Whether the next step's batch is prepared during the current step's compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct TrainConfig {
    /// What the model learns.
    #[arg(long, value_enum, default_value_t = Task::LinkPrediction)]
    pub task: Task,
    /// Passes over the training items.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Positive edges (or seed nodes) per step, over all ranks together.
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,
    /// Cap on steps per epoch (0 = a full pass over the training items, as OGB's reference trains).
    #[arg(long, default_value_t = 0)]
    pub steps_per_epoch: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.0005)]
    pub lr: f32,
    /// L2 weight decay added to the gradients (Adam's coupled form, as PyTorch's `Adam`).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Width of every SAGE layer (and of the predictor's hidden layers).
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// SAGE layers (= sampling hops); without --fanouts, OGB's pattern 15,10,5,5,... is cut to fit.
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    /// Neighbours sampled per hop, seeds' hop first, e.g. 15,10,5 (-1 takes all).
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_value = "15,10,5"
    )]
    pub fanouts: Vec<i32>,
    /// Which neighbours each layer aggregates over: each node sampled once and its edges shared by
    /// every layer (subgraph, PyG's rule) or fresh neighbours at every hop (per-layer, DGL's).
    #[arg(long, value_enum, default_value_t = SamplingRule::Subgraph)]
    pub sampling: SamplingRule,
    /// Initial parameters: glorot, or kaiming-uniform (PyTorch's Linear default).
    #[arg(long, value_enum, default_value_t = ParamInit::Glorot)]
    pub init: ParamInit,
    /// Dropout after every SAGE layer but the last, while training.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Dropout on the input features while training, as Planetoid-style node classifiers use it.
    #[arg(long, default_value_t = 0.0)]
    pub input_dropout: f32,
    /// Linear layers of the link predictor (an MLP on the element-wise product).
    #[arg(long, default_value_t = 3)]
    pub predictor_layers: usize,
    /// Random negative targets per positive training edge.
    #[arg(long, default_value_t = 1)]
    pub negatives_per_positive: usize,
    /// Evaluate on the validation split every N epochs (0 = at the end only).
    #[arg(long, default_value_t = 1)]
    pub eval_every: u64,
    /// How validation scores held-out items.
    #[serde(flatten)]
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Stop after N evaluations without improvement (0 = never).
    #[arg(long, default_value_t = 0)]
    pub patience: u64,
    /// Also checkpoint every N steps (0 = at epoch ends only).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    /// Also checkpoint when this many minutes have passed since the last checkpoint (rank 0's
    /// clock decides, so every rank checkpoints at the same step; 0 = off), so that a long epoch
    /// is not lost whole.
    #[arg(long, default_value_t = 30.0)]
    pub checkpoint_minutes: f64,
    /// Regular checkpoints kept besides best.ssck.
    #[arg(long, default_value_t = 3)]
    pub keep_last: usize,
    /// Compare a checksum of the parameters across ranks every N steps (0 = at the end only).
    #[arg(long, default_value_t = 50)]
    pub checksum_every: u64,
    /// Remote feature rows cached per rank (the most referenced by its adjacency).
    #[arg(long, default_value_t = 100_000)]
    pub feature_cache_rows: usize,
    /// Seed of every random choice (initialisation, order, negatives, sampling, dropout).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads and device (the flags every computing command shares).
    #[serde(flatten)]
    #[command(flatten)]
    pub execution: ExecutionArgs,
    /// Where a step's input features come from on a GPU: device memory when they fit (auto),
    /// always (device), or gathered on the host each step (host).
    #[arg(long, value_enum, default_value_t = FeaturePlacement::Auto)]
    pub features_on: FeaturePlacement,
    /// Sample this rank's nodes on the GPU when there is one (the same samples as the host's).
    #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
    pub device_sampling: bool,
    /// Prepare the next step's batch (negatives, sampling, feature rows, remote exchanges) while
    /// the current step computes: on, off, or auto (on when the step computes on a GPU, whose
    /// host threads are otherwise idle, or on the CPU with an OpenBLAS / BLIS gemm, whose own
    /// threads compute the products, unless a rank has one thread, whose core the step keeps
    /// busy, or the node's ranks already have more threads than it has cores; off with the
    /// gemm crate, which shares the workers that would prepare).
    /// Results are bit-identical either way.
    #[arg(long, value_enum, default_value_t = Pipeline::Auto)]
    pub pipeline: Pipeline,
    /// Log a step line every N steps.
    #[arg(long, default_value_t = 20)]
    pub log_every: u64,
}

impl Default for TrainConfig {
    /// The defaults declared on the fields (what `--help` shows).
    fn default() -> Self {
        crate::runtime::declared_defaults()
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently do nothing).
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| Error::invalid(path, e.to_string()))?;
        // Checked here rather than by serde: its `deny_unknown_fields` cannot see through the
        // flattened execution settings.
        let known = Self::keys();
        if let Some(bad) = table.keys().find(|k| !known.contains(k)) {
            return Err(Error::invalid(
                path,
                format!("unknown setting `{bad}` (known: {})", known.join(", ")),
            ));
        }
        toml::from_str(&text).map_err(|e| Error::invalid(path, e.to_string()))
    }

    /// The names of every setting (TOML keys, and flags with `-` for `_`).
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(TrainConfig::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The effective configuration: `flags` (the declared defaults where no flag was given), with
    /// every key of the TOML `file` taking the place of a default, and the flags for which
    /// `given(key)` is true on top; then validated. A layer count given without fan-outs keeps
    /// OGB's pattern (15,10,5,5,...) cut to fit.
    pub fn resolve(
        flags: &TrainConfig,
        file: Option<&Path>,
        given: impl Fn(&str) -> bool,
    ) -> Result<TrainConfig> {
        let json =
            |c: &TrainConfig| serde_json::to_value(c).map_err(|e| Error::Other(e.to_string()));
        let mut merged = json(flags)?;
        let mut in_file = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| Error::invalid(path, e.to_string()))?;
            let from_file = json(&Self::from_toml_file(path)?)?;
            for key in table.keys().filter(|k| !given(k)) {
                merged[key.as_str()] = from_file[key.as_str()].clone();
            }
            in_file = table.keys().cloned().collect();
        }
        // JSON has no NaN or infinity: a non-finite number became null above, where the
        // default has a number. Name the field instead of serde's "invalid type: null".
        if let (Some(m), Ok(serde_json::Value::Object(d))) = (
            merged.as_object(),
            serde_json::to_value(TrainConfig::default()),
        ) {
            for (key, value) in m {
                if value.is_null() && d.get(key).is_some_and(|v| v.is_number()) {
                    return Err(Error::config(
                        key,
                        "must be a finite number, not NaN or infinity",
                    ));
                }
            }
        }
        let mut c: TrainConfig =
            serde_json::from_value(merged).map_err(|e| Error::Other(e.to_string()))?;
        let set = |key: &str| given(key) || in_file.iter().any(|k| k == key);
        if set("layers") && !set("fanouts") && c.fanouts.len() != c.layers {
            c.fanouts = [15, 10, 5, 5, 5, 5, 5, 5]
                .iter()
                .copied()
                .cycle()
                .take(c.layers)
                .collect();
        }
        c.validate()?;
        Ok(c)
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
        if !(self.checkpoint_minutes.is_finite() && self.checkpoint_minutes >= 0.0) {
            return c(
                "checkpoint_minutes",
                format!(
                    "must be 0 (off) or a positive number of minutes, not {}",
                    self.checkpoint_minutes
                ),
            );
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
        if self.scoring.eval_batch_size == 0 {
            return c("eval_batch_size", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return c("epochs", "must be at least 1".into());
        }
        Ok(())
    }
}

/// The name of the validation metric that selects the best checkpoint.
pub fn selection_metric(task: Task) -> &'static str {
    match task {
        Task::LinkPrediction => "mrr",
        Task::NodeClassification => "accuracy",
    }
}

/// The model a run of `cfg` trains, for `in_dim`-wide features and `num_classes` classes.
pub fn model_config(cfg: &TrainConfig, in_dim: usize, num_classes: usize) -> ModelConfig {
    ModelConfig {
        task: cfg.task,
        in_dim,
        hidden: cfg.hidden,
        num_layers: cfg.layers,
        dropout: cfg.dropout,
        input_dropout: cfg.input_dropout,
        predictor_layers: cfg.predictor_layers,
        num_classes,
        init: cfg.init,
    }
}

/// Adam as the reference trains with it: PyTorch's betas and eps, the run's lr and weight decay.
pub fn adam_config(cfg: &TrainConfig) -> AdamConfig {
    AdamConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..AdamConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::DeviceKind;

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
    fn defaults_then_file_then_given_flags() {
        let dir = std::env::temp_dir().join(format!("shardsage-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "lr = 0.01\nhidden = 64\nlayers = 2\n").unwrap();
        // Flags as parsed: `hidden` given on the command line, `lr` left at its default.
        let flags = TrainConfig {
            hidden: 32,
            ..TrainConfig::default()
        };
        let c = TrainConfig::resolve(&flags, Some(&file), |k| k == "hidden").unwrap();
        assert_eq!((c.lr, c.hidden, c.layers), (0.01, 32, 2));
        // Two layers from the file without fan-outs: OGB's pattern cut to fit.
        assert_eq!(c.fanouts, vec![15, 10]);
        let c = TrainConfig::resolve(&flags, None, |_| false).unwrap();
        assert_eq!((c.lr, c.hidden), (0.0005, 32));
        std::fs::write(&file, "learning_rate = 0.01\n").unwrap();
        let e = TrainConfig::resolve(&flags, Some(&file), |_| false).unwrap_err();
        assert!(e.to_string().contains("learning_rate"), "{e}");
        std::fs::write(&file, "dropout = 1.5\n").unwrap();
        let e = TrainConfig::resolve(&flags, Some(&file), |_| false).unwrap_err();
        assert!(e.to_string().contains("dropout"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn toml_round_trip_and_unknown_keys_rejected() {
        let c = TrainConfig::default();
        let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(c, back);
        let dir = std::env::temp_dir().join(format!("shardsage-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "batchsize = 3\n").unwrap();
        let e = TrainConfig::from_toml_file(&file).unwrap_err().to_string();
        assert!(e.contains("batchsize") && e.contains("batch_size"), "{e}");
        // The flattened execution settings are settings like the others.
        std::fs::write(&file, "threads = 3\ndevice = \"cpu\"\n").unwrap();
        let c = TrainConfig::from_toml_file(&file).unwrap();
        assert_eq!(
            (c.execution.threads, c.execution.device),
            (3, DeviceKind::Cpu)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
