//! `shardsage walk`: random walks over the parts into one HDF5 file, rank 0 writing each round
//! as it is generated (its memory holds one round); `shardsage node2vec`: the walks streamed
//! into skip-gram training, the embeddings written as `embed` writes them.
//!
//! The file: `/walks` [walks_per_node x N, length] u32 global node ids, row `r * N + v` the walk
//! of round r from node v, padded with 4294967295 after a walk that ended early (a node without
//! neighbours); `/orig_id` [N] the original id of each global id; the settings as attributes.

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::DistGraph;
use crate::error::{Error, Result};
use crate::graph::store::{atomic_write, GraphPart, PartSelection};
use crate::runtime::{
    init_execution, load_rank_graph_selected, with_backend, with_rank, BackendJob, ExecutionArgs,
};
use crate::walk::resume::Node2vecCheckpoints;
use crate::walk::sgns::{Embeddings, RoundReport, SgnsConfig, SgnsDevice, SgnsPosition};
use crate::walk::{random_walks_from, HostTrials, TrialScanner, WalkConfig, WalkRound};

/// How walks are drawn (the flags of `walk` and `node2vec`).
#[derive(clap::Args, Debug, Clone)]
pub struct WalkSettings {
    /// Nodes per walk, the start included.
    #[arg(long, default_value_t = 40)]
    pub length: usize,
    /// Walks started from every node.
    #[arg(long, default_value_t = 10)]
    pub walks_per_node: usize,
    /// node2vec's return parameter (a step back has weight 1/p).
    #[arg(long, default_value_t = 1.0)]
    pub p: f64,
    /// node2vec's in-out parameter (a step away from the previous node's neighbourhood has
    /// weight 1/q).
    #[arg(long, default_value_t = 1.0)]
    pub q: f64,
    /// Seed of every random draw (walk steps; for node2vec also windows, negatives, initial
    /// vectors).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl WalkSettings {
    pub fn config(&self) -> WalkConfig {
        WalkConfig {
            length: self.length,
            walks_per_node: self.walks_per_node,
            p: self.p,
            q: self.q,
            seed: self.seed,
        }
    }
}

/// Random walks (DeepWalk with p = q = 1, node2vec otherwise) from every node of the parts.
#[derive(clap::Args, Debug)]
pub struct WalkArgs {
    /// Directory of parts (from `partition`).
    #[arg(long)]
    pub data: PathBuf,
    /// The HDF5 file to write (replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub walk: WalkSettings,
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

/// Node embeddings from random walks: walks streamed straight into skip-gram training with
/// negative sampling, written as `embed` writes them.
#[derive(clap::Args, Debug)]
pub struct Node2vecArgs {
    /// Directory of parts (from `partition`).
    #[arg(long)]
    pub data: PathBuf,
    /// The embeddings file to write (`/embedding`, `/orig_id`; replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub walk: WalkSettings,
    /// Embedding width.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Context nodes on each side of a walk position (at most: word2vec's reduced window).
    #[arg(long, default_value_t = 10)]
    pub window: usize,
    /// Negative nodes per (node, context) pair, drawn by degree^0.75.
    #[arg(long, default_value_t = 5)]
    pub negatives: usize,
    /// Starting learning rate (falls linearly to 1e-4 of it).
    #[arg(long, default_value_t = 0.025)]
    pub lr: f64,
    /// Passes over the walks (each regenerates the same walks instead of storing them).
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Walk positions per rank and episode: each episode's pairs are bucketed and the output
    /// table travels once round the ranks (more positions: fewer trips, more memory, a coarser
    /// update order). 0: two per node of the graph over the ranks, between 4096 and 2^21.
    #[arg(long, default_value_t = 0)]
    pub episode_positions: usize,
    /// Blocks of each rank's rows in the conflict-free schedule: at most this many threads of a
    /// rank update at once; results depend on it (and on the world size), not on the threads.
    #[arg(long, default_value_t = 64)]
    pub blocks: usize,
    /// Sub-sampling of frequent nodes, as word2vec's `sample` (its default 1e-3; 0: off).
    #[arg(long, default_value_t = 1e-3)]
    pub sample: f64,
    /// Also write the run's figures (times, pairs, metrics per split) as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where metrics.jsonl (a record per round and per evaluated split), tb/ (TensorBoard) and,
    /// unless --checkpoint-dir says otherwise, checkpoints/ go (`shardsage plot` reads it).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Checkpoints go here (a directory per rank), at round ends every --checkpoint-minutes
    /// and when SIGTERM or SIGUSR1 arrives (the run then stops with status 0).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Minutes between checkpoints (at the first round end after them; 0: every round); the
    /// last round is always checkpointed.
    #[arg(long, default_value_t = 30.0)]
    pub checkpoint_minutes: f64,
    /// Continue from the newest checkpoint set in --checkpoint-dir that every rank has intact
    /// (a fresh start if there is none); the result is the uninterrupted run's.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

/// Trains node2vec / DeepWalk embeddings and writes them. A collective over the job's ranks.
pub fn run_node2vec(args: &Node2vecArgs) -> Result<()> {
    let walk = args.walk.config();
    walk.validate()?;
    let sgns = SgnsConfig {
        dim: args.dim,
        window: args.window,
        negatives: args.negatives,
        lr: args.lr,
        epochs: args.epochs,
        episode_positions: args.episode_positions,
        blocks: args.blocks,
        sample: args.sample,
        seed: walk.seed,
    };
    sgns.validate()?;
    if !(args.checkpoint_minutes.is_finite() && args.checkpoint_minutes >= 0.0) {
        return Err(Error::config(
            "checkpoint_minutes",
            format!("must be 0 or more, not {}", args.checkpoint_minutes),
        ));
    }
    let checkpoint_dir = args
        .checkpoint_dir
        .clone()
        .or_else(|| args.run_dir.as_ref().map(|d| d.join("checkpoints")));
    if args.resume && checkpoint_dir.is_none() {
        return Err(Error::config(
            "resume",
            "needs --checkpoint-dir or --run-dir to resume from",
        ));
    }
    with_rank(|comm| {
        // After MPI start-up: a rank lost inside MPI_Init can leave Open MPI 4.1's mpirun
        // waiting after every rank has ended (docs/ARCHITECTURE.md, "Never lose a run"), so a
        // rank only announces that it takes stop signals once it is part of the job.
        let stop = StopSignal::install()?;
        let threads = init_execution(comm, &args.execution);
        // Neither the features nor the training edges (nor, until the evaluation, the
        // negatives): walks and skip-gram read the adjacency only.
        let part = load_rank_graph_selected(comm, &args.data, PartSelection::WALKS)?;
        let g = DistGraph::new(&part, comm, 0)?;
        let mut emb = Embeddings::init(&g, sgns.dim, sgns.seed);
        let checkpoints = match &checkpoint_dir {
            Some(dir) => Some(Node2vecCheckpoints::new(
                dir,
                comm,
                &walk,
                &sgns,
                &part.meta.fingerprint,
            )?),
            None => None,
        };
        let start = match (&checkpoints, args.resume) {
            (Some(c), true) => c.resume(comm, &mut emb)?.unwrap_or_default(),
            _ => SgnsPosition::default(),
        };
        if comm.is_root() {
            log::info!(
                "node2vec: {} walks per node x {} nodes, length {}, p {} q {}; dim {}, window {}, \
                 {} negatives, lr {}, {} epochs; {} ranks x {threads} threads",
                walk.walks_per_node,
                part.meta.num_nodes,
                walk.length,
                walk.p,
                walk.q,
                sgns.dim,
                sgns.window,
                sgns.negatives,
                sgns.lr,
                sgns.epochs,
                comm.size()
            );
        }
        let mut report = RoundReporter::new(
            comm,
            args.run_dir.as_deref(),
            (sgns.epochs * walk.walks_per_node) as u64,
            (start.epoch * walk.walks_per_node + start.round) as u64,
        )?;
        let started = std::time::Instant::now();
        let mut last_checkpoint = std::time::Instant::now();
        let mut pairs_total = 0u64;
        let training_started = std::cell::Cell::new(false);
        let job = OnWalkDevice {
            part: &part,
            dim: Some(sgns.dim),
            body: |d: WalkDevice<'_, '_>| {
                let scanner = d.scanner;
                crate::walk::sgns::train(
                    &g,
                    &sgns,
                    &walk,
                    &mut emb,
                    start,
                    &mut |first, sink| {
                        random_walks_from(&g, &walk, scanner, first, &mut |round| {
                            sink(round)?;
                            // Before training has reported a round (the counting pass over
                            // the walks: minutes on big graphs), a stop is agreed here after
                            // each round of walks; from then on at round ends, below.
                            if !training_started.get() {
                                stop.check_agreed(comm, "node2vec walks")?;
                            }
                            Ok(())
                        })
                    },
                    &mut |r| {
                        training_started.set(true);
                        pairs_total += r.pairs;
                        if r.complete {
                            report.round(
                                r,
                                walk.walks_per_node,
                                started.elapsed().as_secs_f64(),
                            )?;
                        }
                        let Some(c) = &checkpoints else {
                            return stop.check_agreed(comm, "node2vec training");
                        };
                        // Rank 0's clock decides, so that every rank writes at the same round.
                        // ... and the last round always, so that a finished job submitted again only
                        // writes its embeddings again.
                        let due = comm.is_root()
                            && (last_checkpoint.elapsed().as_secs_f64()
                                >= args.checkpoint_minutes * 60.0
                                || r.next.epoch == sgns.epochs);
                        let mut flags = [stop.raised() as u64, due as u64];
                        comm.all_reduce_max_u64(&mut flags);
                        if flags[0] > 0 || flags[1] > 0 {
                            let (input, output) = (r.tables)();
                            let path = c.save(r.next, input, output, sgns.dim)?;
                            comm.barrier();
                            last_checkpoint = std::time::Instant::now();
                            if comm.is_root() {
                                log::info!(
                                    "checkpoint {}: resumes at epoch {} round {} episode {}",
                                    path.display(),
                                    r.next.epoch + 1,
                                    r.next.round + 1,
                                    r.next.episode + 1
                                );
                            }
                        }
                        if flags[0] > 0 {
                            return Err(Error::Stopped("node2vec training".into()));
                        }
                        Ok(())
                    },
                    &|| stop.raised(),
                    d.sgns,
                )
            },
        };
        let trained = with_backend(&args.execution, threads, comm.local_rank(), job);
        match trained {
            Err(Error::Stopped(during)) => {
                if comm.is_root() {
                    log::info!(
                        "stopped by signal during {during}{}",
                        if !training_started.get() {
                            "; nothing trained in this run, nothing new saved"
                        } else if checkpoints.is_some() {
                            "; the checkpoint above resumes it (--resume)"
                        } else {
                            "; no --checkpoint-dir, nothing saved"
                        }
                    );
                }
                return Ok(());
            }
            other => other?,
        }
        let train_s = started.elapsed().as_secs_f64();
        crate::eval::cli::write_node_table(&g, &emb.input, sgns.dim, &args.out, 0)?;
        report.finish();
        // The evaluation reads the fixed negatives only now, with the output table gone: at
        // ogbl-citation2's size they are 4 GB and the output table 1.5 GB.
        let num_nodes = part.meta.num_nodes;
        emb.output = Vec::new();
        drop(g);
        drop(part);
        let part = load_rank_graph_selected(
            comm,
            &args.data,
            PartSelection {
                negatives: true,
                ..PartSelection::WALKS
            },
        )?;
        let g = DistGraph::new(&part, comm, 0)?;
        let metrics = evaluate_embeddings(&g, &emb.input, sgns.dim)?;
        report.evaluated(
            &metrics,
            sgns.epochs as u64,
            (sgns.epochs * walk.walks_per_node) as u64,
        )?;
        if let (Some(path), true) = (&args.json, comm.is_root()) {
            let tokens = (walk.walks_per_node * walk.length) as u64 * num_nodes;
            let summary = serde_json::json!({
                "implementation": "shardsage node2vec",
                "ranks": comm.size(),
                "threads": threads,
                "num_nodes": num_nodes,
                "walk": walk,
                "sgns": sgns,
                "train_s": train_s,
                "pairs": pairs_total,
                "tokens": tokens * sgns.epochs as u64,
                "tokens_per_s": (tokens * sgns.epochs as u64) as f64 / train_s.max(1e-9),
                "peak_rss_mib": crate::util::peak_rss_bytes() as f64 / (1 << 20) as f64,
                "metrics": metrics,
            });
            atomic_write(path, |tmp| {
                std::fs::write(tmp, summary.to_string()).map_err(|e| Error::io(tmp, e))
            })?;
        }
        Ok(())
    })
}

/// Rank 0's account of a node2vec run: a log line, a metrics.jsonl record and TensorBoard
/// scalars per round (with --run-dir), a progress bar on a terminal.
struct RoundReporter {
    metrics: Option<crate::train::metrics::MetricsWriter>,
    tb: Option<crate::train::tensorboard::TbWriter>,
    bar: Option<indicatif::ProgressBar>,
}

impl RoundReporter {
    fn new(
        comm: &crate::distributed::Comm,
        run_dir: Option<&Path>,
        rounds: u64,
        done: u64,
    ) -> Result<Self> {
        let (mut metrics, mut tb, mut bar) = (None, None, None);
        if comm.is_root() {
            if let Some(dir) = run_dir {
                // Appended, so a resumed run continues the same file.
                metrics = Some(crate::train::metrics::MetricsWriter::append(dir)?);
                tb = Some(crate::train::tensorboard::TbWriter::create(dir)?);
            }
            let b = crate::util::progress_bar(rounds, "rounds");
            b.set_position(done);
            bar = Some(b);
        }
        Ok(RoundReporter { metrics, tb, bar })
    }

    fn round(
        &mut self,
        r: &RoundReport<'_>,
        rounds_per_epoch: usize,
        elapsed_s: f64,
    ) -> Result<()> {
        let Some(bar) = &self.bar else {
            return Ok(());
        };
        bar.inc(1);
        bar.suspend(|| {
            log::info!(
                "epoch {} round {}: {} pairs, loss {:.4}, {:.1} s",
                r.epoch + 1,
                r.round + 1,
                r.pairs,
                r.loss,
                elapsed_s
            )
        });
        let global = (r.epoch * rounds_per_epoch + r.round + 1) as u64;
        if let Some(m) = self.metrics.as_mut() {
            m.step(&crate::train::metrics::StepRecord {
                epoch: r.epoch as u64,
                step: r.round as u64,
                global_step: global,
                loss: r.loss,
                lr: r.lr,
                seeds_per_s: r.pairs as f64 / r.seconds.max(1e-9),
                peak_rss_bytes: crate::util::peak_rss_bytes(),
                extra: [("pairs".to_string(), serde_json::json!(r.pairs))].into(),
                ..Default::default()
            })?;
        }
        if let Some(tb) = self.tb.as_mut() {
            tb.scalar("node2vec/loss", global as i64, r.loss as f32)?;
            tb.scalar(
                "node2vec/pairs_per_s",
                global as i64,
                (r.pairs as f64 / r.seconds.max(1e-9)) as f32,
            )?;
            tb.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Writes the evaluation records and, the run being done, its end record (`select` ranks
    /// node2vec runs by their valid MRR like GraphSAGE runs).
    fn evaluated(&mut self, all: &SplitMetrics, epochs: u64, global: u64) -> Result<()> {
        for (split, metrics) in all {
            if let Some(m) = self.metrics.as_mut() {
                m.eval(&crate::train::metrics::EvalRecord {
                    epoch: 0,
                    global_step: global,
                    split: split.clone(),
                    metrics: metrics.clone(),
                    extra: Default::default(),
                })?;
            }
            if let Some(tb) = self.tb.as_mut() {
                for (k, v) in metrics {
                    tb.scalar(&format!("{split}/{k}"), global as i64, *v as f32)?;
                }
                tb.flush()?;
            }
        }
        if let Some(m) = self.metrics.as_mut() {
            m.end(&crate::train::metrics::EndRecord {
                epoch: epochs,
                global_step: global,
                reason: crate::train::metrics::EndReason::Completed,
                metric: "mrr".to_string(),
                best_valid: all.get("valid").and_then(|m| m.get("mrr").copied()),
            })?;
        }
        Ok(())
    }
}

/// Metrics per split name.
type SplitMetrics = std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>;

/// OGB's link-prediction metrics of walk embeddings on the held-out splits the dataset has,
/// scored by dot product, and node classification where it has labels (one-vs-rest logistic
/// regression, micro- and macro-F1); rank 0 prints one line per split. A collective.
fn evaluate_embeddings(g: &DistGraph<'_>, table: &[f32], dim: usize) -> Result<SplitMetrics> {
    let mut all = std::collections::BTreeMap::new();
    let never = crate::distributed::fault::StopSignal::never();
    let score =
        |p: &crate::eval::inference::PairGroup<'_>| Ok(crate::eval::inference::dot_scores(p));
    for split in ["valid", "test"] {
        let mut count = [crate::eval::inference::held_out(g.part, split)?.0.len() as u64];
        g.comm.all_reduce_sum_u64(&mut count);
        if count[0] == 0 {
            continue;
        }
        let m =
            crate::eval::inference::evaluate_link_with(g, table, dim, split, 256, &never, &score)?;
        if g.comm.is_root() {
            let shown: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
            println!("{split} (dot product): {}", shown.join(" "));
        }
        all.insert(split.to_string(), m);
    }
    for (split, m) in crate::eval::probe::evaluate_node_classification(g, table, dim)? {
        if g.comm.is_root() {
            let shown: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
            println!(
                "{split} (node classification, logistic regression on the embeddings): {}",
                shown.join(" ")
            );
        }
        all.insert(format!("{split}_nodeclass"), m);
    }
    Ok(all)
}

pub fn run(args: &WalkArgs) -> Result<()> {
    let cfg = args.walk.config();
    cfg.validate()?;
    with_rank(|comm| {
        let threads = init_execution(comm, &args.execution);
        // Neither the features nor the training edges (nor, until the evaluation, the
        // negatives): walks and skip-gram read the adjacency only.
        let part = load_rank_graph_selected(comm, &args.data, PartSelection::WALKS)?;
        let g = DistGraph::new(&part, comm, 0)?;
        let n = part.meta.num_nodes;
        // Original ids, gathered once on rank 0 (8 bytes a node).
        let ids: Vec<u64> = if comm.is_root() {
            (0..n).collect()
        } else {
            Vec::new()
        };
        let first = part.first_node();
        let (_, orig) = g.ask_owners(&ids, |id, out: &mut Vec<u64>| {
            out.push(part.orig_id[(id - first) as usize])
        })?;
        if comm.is_root() {
            log::info!(
                "walks: {} per node x {n} nodes, length {}, p {} q {}, {} ranks x {threads} threads",
                cfg.walks_per_node,
                cfg.length,
                cfg.p,
                cfg.q,
                comm.size()
            );
        }
        let started = std::time::Instant::now();
        let job = OnWalkDevice {
            part: &part,
            dim: None,
            body: |d: WalkDevice<'_, '_>| write_rank_walks(args, &cfg, &g, d.scanner, &orig),
        };
        with_backend(&args.execution, threads, comm.local_rank(), job)?;
        if comm.is_root() {
            let steps = (cfg.length - 1) as f64 * cfg.walks_per_node as f64 * n as f64;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "wrote {} walks of length {} to {} in {secs:.1} s ({:.2}M steps/s)",
                cfg.walks_per_node as u64 * n,
                cfg.length,
                args.out.display(),
                steps / secs.max(1e-9) / 1e6
            );
        }
        Ok(())
    })
}

/// What the backend `--device` picks offers the walk commands: its trial scanner (the host's
/// when it has none) and its skip-gram device (None: the host).
pub struct WalkDevice<'d, 's> {
    pub scanner: &'d dyn TrialScanner,
    pub sgns: Option<&'d mut (dyn SgnsDevice + 's)>,
}

/// Runs a piece of the walk commands with the backend `--device` picks.
struct OnWalkDevice<'p, F> {
    part: &'p GraphPart,
    /// The width of the skip-gram tables, when the piece trains them.
    dim: Option<usize>,
    body: F,
}

impl<T, F: FnOnce(WalkDevice<'_, '_>) -> Result<T>> BackendJob for OnWalkDevice<'_, F> {
    type Output = T;
    fn run<B: Backend>(self, backend: B) -> Result<T> {
        let host = HostTrials::of(self.part);
        let device_scanner = backend.part_walker(self.part)?;
        let mut sgns = match self.dim {
            Some(dim) => backend.sgns_device(dim)?,
            None => None,
        };
        if device_scanner.is_some() || sgns.is_some() {
            log::info!(
                "on {}: walk steps{}",
                backend.name(),
                if sgns.is_some() { " and skip-gram" } else { "" }
            );
        }
        let scanner: &dyn TrialScanner = match &device_scanner {
            Some(d) => &**d,
            None => &host,
        };
        (self.body)(WalkDevice {
            scanner,
            sgns: sgns.as_deref_mut(),
        })
    }
}

/// `walk`'s collective part: every round's walks, gathered into the file on rank 0.
fn write_rank_walks(
    args: &WalkArgs,
    cfg: &WalkConfig,
    g: &DistGraph<'_>,
    scanner: &dyn TrialScanner,
    orig: &[u64],
) -> Result<()> {
    let comm = g.comm;
    let n = g.part.meta.num_nodes;
    // Every rank's round goes to rank 0, in rank order (= start-node order).
    let gather = |round: &WalkRound| -> Result<Vec<u32>> {
        let mut send = vec![Vec::new(); comm.size()];
        send[0] = round.nodes.clone();
        Ok(comm.all_to_all_v(&send)?.concat())
    };
    if !comm.is_root() {
        return random_walks_from(g, cfg, scanner, 0, &mut |round| gather(round).map(|_| ()));
    }
    write_walks(&args.out, cfg, n as usize, orig, |sink| {
        random_walks_from(g, cfg, scanner, 0, &mut |round| {
            let rows = gather(round)?;
            sink(round.round, rows)
        })
    })
}

/// Takes one round's walks of every node (row-major `[N, length]`).
type RoundSink<'s> = dyn FnMut(usize, Vec<u32>) -> Result<()> + 's;

/// Writes the walks file atomically from the rounds `fill` hands over. A second thread
/// compresses and writes each round while `fill` generates the next (deflate on one thread
/// took as long as the walks on two); at most one round waits for it.
fn write_walks(
    path: &Path,
    cfg: &WalkConfig,
    n: usize,
    orig: &[u64],
    fill: impl FnOnce(&mut RoundSink<'_>) -> Result<()>,
) -> Result<()> {
    atomic_write(path, |tmp| {
        let h = |e: hdf5::Error| Error::hdf5(tmp, e);
        let file = hdf5::File::create(tmp).map_err(h)?;
        let len = cfg.length;
        let rows = cfg.walks_per_node * n;
        let walks = file
            .new_dataset::<u32>()
            .chunk(((n.clamp(1, 1 << 16)), len))
            .shuffle()
            .deflate(1)
            .shape((rows, len))
            .create("walks")
            .map_err(h)?;
        for (name, v) in [("p", cfg.p), ("q", cfg.q)] {
            walks
                .new_attr::<f64>()
                .create(name)
                .and_then(|a| a.write_scalar(&v))
                .map_err(h)?;
        }
        for (name, v) in [
            ("length", len as u64),
            ("walks_per_node", cfg.walks_per_node as u64),
            ("seed", cfg.seed),
        ] {
            walks
                .new_attr::<u64>()
                .create(name)
                .and_then(|a| a.write_scalar(&v))
                .map_err(h)?;
        }
        file.new_dataset_builder()
            .with_data(orig)
            .create("orig_id")
            .map_err(h)?;
        let write_round = |round: usize, nodes: Vec<u32>| -> Result<()> {
            if nodes.len() != n * len {
                return Err(Error::Other(format!(
                    "round {round}: {} walk entries for {n} nodes x {len}",
                    nodes.len()
                )));
            }
            let view = ndarray::ArrayView2::from_shape((n, len), &nodes[..])
                .map_err(|e| Error::invalid(tmp, e.to_string()))?;
            walks
                .write_slice(&view, ndarray::s![round * n..(round + 1) * n, ..])
                .map_err(h)
        };
        std::thread::scope(|scope| {
            let (to_writer, rounds) = std::sync::mpsc::sync_channel::<(usize, Vec<u32>)>(0);
            let writer = scope.spawn(move || -> Result<()> {
                for (round, nodes) in rounds {
                    write_round(round, nodes)?;
                }
                Ok(())
            });
            let filled = fill(&mut |round, nodes| {
                // A closed channel means the writer stopped on an error, which join reports.
                to_writer
                    .send((round, nodes))
                    .map_err(|_| Error::Other(format!("{}: the writer stopped", tmp.display())))
            });
            drop(to_writer);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(Error::Other("the walk file's writer panicked".into())));
            written.and(filled)
        })?;
        file.flush().map_err(h)?;
        Ok(())
    })
}
