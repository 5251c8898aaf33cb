//! `shardsage train`: sets up the rank (communicator, fault handling, threads, device), loads
//! this rank's parts, and runs the trainer. Errors on any rank end the whole job with the rank and
//! the cause; they never leave other ranks waiting.

use std::path::PathBuf;

use crate::backend::Backend;
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::DistGraph;
use crate::distributed::Comm;
use crate::error::Result;
use crate::runtime::{init_execution, load_rank_graph, with_backend, with_rank, BackendJob};
use crate::train::config::TrainConfig;
use crate::train::trainer::{RunPaths, Trainer};

/// Train GraphSAGE on a directory of parts; run under `mpirun -np W` for W ranks (W must divide
/// the number of parts). Settings come from the defaults (OGB's reference model), then
/// `--config`, then the flags given.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Directory written by `shardsage partition` (part-*.h5 + manifest.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Where metrics.jsonl, tb/, checkpoints/ and config.toml go.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// A TOML file with any of the settings below (keys as the long flags, with underscores).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the latest good checkpoint in RUN_DIR/checkpoints (fresh start if none).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub settings: TrainConfig,
}

impl TrainArgs {
    /// Defaults, then the config file, then the flags `matches` (this subcommand's) says were
    /// given on the command line.
    pub fn effective_config(&self, matches: &clap::ArgMatches) -> Result<TrainConfig> {
        TrainConfig::resolve(&self.settings, self.config.as_deref(), |key| {
            matches!(
                matches.value_source(key),
                Some(clap::parser::ValueSource::CommandLine)
            )
        })
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

pub fn run(args: &TrainArgs, matches: &clap::ArgMatches) -> Result<()> {
    with_rank(|comm| {
        // After MPI start-up: a rank lost inside MPI_Init can leave Open MPI 4.1's mpirun
        // waiting after every rank has ended (docs/ARCHITECTURE.md, "Never lose a run"), so a
        // rank only announces that it takes stop signals once it is part of the job.
        let stop = StopSignal::install()?;
        let cfg = args.effective_config(matches)?;
        let threads = init_execution(comm, &cfg.execution);
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
        let summary = with_backend(&cfg.execution, threads, comm.local_rank(), job)?;
        if comm.is_root() {
            let metric = crate::train::config::selection_metric(cfg.task);
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
