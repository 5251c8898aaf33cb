//! `shardsage train`: sets up the rank (communicator, fault handling, threads, device), loads
//! this rank's parts, and runs the trainer. Errors on any rank end the whole job with the rank and
//! the cause; they never leave other ranks waiting.

use std::path::PathBuf;

use crate::backend::Backend;
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::DistGraph;
use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::nn::model::Task;
use crate::nn::params::ParamInit;
use crate::runtime::{
    init_threads, load_rank_graph, with_backend, with_rank, BackendJob, DeviceKind,
};
use crate::sample::neighbor::SamplingRule;
use crate::train::config::{parse_fanouts, TrainConfig};
use crate::train::features::FeaturePlacement;
use crate::train::trainer::{RunPaths, Trainer};

/// Train GraphSAGE on a directory of parts; run under `mpirun -np W` for W ranks (W must divide
/// the number of parts). Settings come from the defaults (OGB's reference model), then
/// `--config`, then the flags below.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Directory written by `shardsage partition` (part-*.h5 + manifest.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Where metrics.jsonl, tb/, checkpoints/ and config.toml go.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// A TOML file with any of the settings (keys as the long flags, with underscores).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the latest good checkpoint in RUN_DIR/checkpoints (fresh start if none).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Positive edges (or seed nodes) per step over all ranks.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Cap on steps per epoch (0 = a full pass).
    #[arg(long)]
    pub steps_per_epoch: Option<u64>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub weight_decay: Option<f32>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    /// Neighbours per hop, seeds' hop first, e.g. 15,10,5 (-1 = all).
    #[arg(long, allow_hyphen_values = true)]
    pub fanouts: Option<String>,
    /// Which neighbours each layer aggregates over: each node's sample shared by every layer
    /// (subgraph, PyG's rule) or fresh neighbours at every hop (per-layer, DGL's blocks).
    #[arg(long, value_enum)]
    pub sampling: Option<SamplingRule>,
    /// Initial parameters: kaiming-uniform (PyTorch's Linear default) or glorot.
    #[arg(long, value_enum)]
    pub init: Option<ParamInit>,
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Dropout on the input features while training (0 = off).
    #[arg(long)]
    pub input_dropout: Option<f32>,
    #[arg(long)]
    pub predictor_layers: Option<usize>,
    #[arg(long)]
    pub negatives_per_positive: Option<usize>,
    /// Evaluate on validation every N epochs (0 = at the end only).
    #[arg(long)]
    pub eval_every: Option<u64>,
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Early stopping after N evaluations without improvement (0 = off).
    #[arg(long)]
    pub patience: Option<u64>,
    /// Also checkpoint every N steps.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    #[arg(long)]
    pub keep_last: Option<usize>,
    #[arg(long)]
    pub checksum_every: Option<u64>,
    #[arg(long)]
    pub feature_cache_rows: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// CPU threads per rank (0 = the cores of this machine divided among its ranks).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,
    /// Where a step's input features come from on a GPU: device memory when they fit (auto),
    /// always (device), or gathered on the host each step (host).
    #[arg(long, value_enum)]
    pub features_on: Option<FeaturePlacement>,
    /// Sample this rank's nodes on the GPU (true) or on the host (false); same samples either way.
    #[arg(long, action = clap::ArgAction::Set)]
    pub device_sampling: Option<bool>,
    #[arg(long)]
    pub log_every: Option<u64>,
}

impl TrainArgs {
    /// Defaults, then the config file, then the flags.
    pub fn effective_config(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::from_toml_file(p)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        if let Some(f) = &self.fanouts {
            c.fanouts = parse_fanouts(f).map_err(|e| Error::config("fanouts", e))?;
        }
        set!(
            task,
            epochs,
            batch_size,
            steps_per_epoch,
            lr,
            weight_decay,
            hidden,
            layers,
            sampling,
            init,
            dropout,
            input_dropout,
            predictor_layers,
            negatives_per_positive,
            eval_every,
            eval_batch_size,
            patience,
            checkpoint_every,
            keep_last,
            checksum_every,
            feature_cache_rows,
            seed,
            threads,
            device,
            features_on,
            device_sampling,
            log_every
        );
        // A layer count given without fan-outs keeps OGB's pattern where it fits.
        if self.layers.is_some() && self.fanouts.is_none() && c.fanouts.len() != c.layers {
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
}

struct TrainJob<'a> {
    cfg: TrainConfig,
    comm: &'a Comm,
    graph: &'a DistGraph<'a>,
    paths: RunPaths,
    resume: bool,
    stop: StopSignal,
}

impl BackendJob for TrainJob<'_> {
    type Output = crate::train::trainer::TrainSummary;
    fn run<B: Backend>(self, backend: B) -> Result<Self::Output> {
        let mut trainer = Trainer::new(
            self.cfg,
            self.comm,
            self.graph,
            &backend,
            self.paths,
            self.resume,
        )?;
        trainer.fit(&self.stop)
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let stop = StopSignal::install()?;
    with_rank(|comm| {
        let cfg = args.effective_config()?;
        let threads = init_threads(cfg.threads);
        if comm.is_root() {
            log::info!("effective config:\n{}", cfg.to_toml());
        }
        let part = load_rank_graph(comm, &args.data)?;
        let graph = DistGraph::new(&part, comm, cfg.feature_cache_rows)?;
        let mut mem = [crate::util::rss_bytes()];
        comm.all_reduce_max_u64(&mut mem);
        if comm.is_root() {
            log::info!(
                "{} ranks loaded; max RSS per rank after loading {:.1} MiB; remote feature cache {} rows",
                comm.size(),
                mem[0] as f64 / (1 << 20) as f64,
                graph.cache_len()
            );
        }
        let job = TrainJob {
            cfg: cfg.clone(),
            comm,
            graph: &graph,
            paths: RunPaths {
                data: args.data.clone(),
                run_dir: args.run_dir.clone(),
            },
            resume: args.resume,
            stop: stop.clone(),
        };
        let summary = with_backend(cfg.device, threads, comm.local_rank(), job)?;
        if comm.is_root() {
            let metric = crate::train::trainer::selection_metric(cfg.task);
            if let Some(v) = summary.final_valid {
                println!("final valid {metric}={v:.4}");
            }
            if let Some(v) = summary.best_valid {
                println!("best valid {metric}={v:.4}");
            }
            println!(
                "trained {} steps ({} epochs) on {} ranks; parameter checksum {:.6e}",
                summary.global_step,
                summary.epochs_done,
                comm.size(),
                summary.params_checksum
            );
        }
        Ok(())
    })
}
