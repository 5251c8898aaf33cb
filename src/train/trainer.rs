//! The training loop, the same on one process and on W MPI ranks.
//!
//! Each rank draws positive edges (or seed nodes) from the training items it owns; the number of
//! steps in an epoch is agreed by all ranks before the epoch starts, and a rank with fewer items
//! wraps around, so no rank ever leaves the loop early. A step samples blocks (remote frontier
//! nodes through one exchange per hop), fetches input features (cache, then owners), computes
//! the local gradient scaled to the global batch, and sums gradients with one MPI_Allreduce over
//! the flat buffer; every rank then applies the same Adam update, so parameters stay identical
//! (checked by a checksum every `checksum_every` steps).
//!
//! Every random choice is keyed by (seed, epoch, step), so a run resumed from a checkpoint ends
//! bit-identical to an uninterrupted one.

use std::path::PathBuf;
use std::time::Instant;

use crate::backend::{AdamCoeffs, Backend};
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::{DistGraph, RoutedSampler};
use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::eval::inference;
use crate::nn::model::{Model, ModelConfig, StepCtx, Task};
use crate::sample::negative::negative_targets;
use crate::sample::neighbor::{NeighborSampler, NeighborSource};
use crate::sample::rng::fold;
use crate::sample::shuffle::{dedup_first_seen, epoch_permutation};
use crate::train::checkpoint::{Checkpoint, CheckpointDir};
use crate::train::config::TrainConfig;
use crate::train::features::InputFeatures;
use crate::train::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::train::tensorboard::TbWriter;

/// Where a run reads its data and writes its outputs.
#[derive(Clone, Debug)]
pub struct RunPaths {
    pub data: PathBuf,
    pub run_dir: PathBuf,
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, Default)]
pub struct TrainSummary {
    pub global_step: u64,
    pub epochs_done: u64,
    pub best_valid: Option<f64>,
    pub final_valid: Option<f64>,
    pub stopped_by_signal: bool,
    pub params_checksum: f64,
}

/// The parameter layout as checkpoints record it (names, offsets, shapes).
pub fn checkpoint_layout(
    layout: &crate::nn::params::ParamLayout,
) -> Vec<crate::train::checkpoint::ParamEntry> {
    layout
        .entries
        .iter()
        .map(|e| crate::train::checkpoint::ParamEntry {
            name: e.name.clone(),
            offset: e.offset,
            shape: vec![e.rows, e.cols],
        })
        .collect()
}

/// The name of the validation metric that selects the best checkpoint.
pub fn selection_metric(task: Task) -> &'static str {
    match task {
        Task::LinkPrediction => "mrr",
        Task::NodeClassification => "accuracy",
    }
}

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

/// The training state that a checkpoint holds, besides the flat buffers.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    epoch: u64,
    /// Steps already done in `epoch`.
    step: u64,
    global_step: u64,
    adam_t: u64,
    best: Option<f64>,
    evals_since_best: u64,
}

/// The backend's sampler over `part` when there is device memory for its adjacency beside the
/// step (see `features::fits_on_device`); `None` (host sampling, with the reason logged) otherwise.
fn part_sampler<'a, B: Backend>(
    backend: &'a B,
    part: &'a crate::graph::store::GraphPart,
) -> Result<Option<Box<dyn NeighborSource + 'a>>> {
    let Some((free, total)) = backend.device_memory()? else {
        return Ok(None);
    };
    let need = part.indptr.len() * 8 + part.indices.len() * 4;
    if !crate::train::features::fits_on_device(need, free, total) {
        log::warn!(
            "the adjacency of this rank ({:.2} GiB) does not fit on {} beside the step \
             ({:.2} GiB free): sampling on the host",
            need as f64 / (1u64 << 30) as f64,
            backend.name(),
            free as f64 / (1u64 << 30) as f64
        );
        return Ok(None);
    }
    let sampler = backend.part_sampler(part)?;
    if sampler.is_some() {
        log::info!(
            "sampling this rank's {} nodes on {} ({:.2} GiB adjacency)",
            part.num_local_nodes(),
            backend.name(),
            need as f64 / (1u64 << 30) as f64
        );
    }
    Ok(sampler)
}

/// One rank's trainer.
pub struct Trainer<'a, B: Backend> {
    pub cfg: TrainConfig,
    comm: &'a Comm,
    graph: &'a DistGraph<'a>,
    backend: &'a B,
    /// The backend's sampler over this rank's adjacency (on the GPU), if it has one and
    /// `device_sampling` is on; the host's `LocalCsr` otherwise.
    part_sampler: Option<Box<dyn NeighborSource + 'a>>,
    features: InputFeatures<B>,
    model: Model<B>,
    params: B::F,
    grads: B::F,
    adam_m: B::F,
    adam_v: B::F,
    pos: Position,
    paths: RunPaths,
    metrics: Option<MetricsWriter>,
    tb: Option<TbWriter>,
    ckpts: Option<CheckpointDir>,
    config_json: serde_json::Value,
    /// Rank 0's progress bar on a terminal (hidden otherwise, when log lines carry progress).
    progress: Option<indicatif::ProgressBar>,
    /// Whether this rank has seen a stop signal; sent with the next step's statistics.
    stop_raised: bool,
}

/// Per-step timings of this rank, in seconds.
#[derive(Clone, Copy, Debug, Default)]
struct StepTimes {
    sample: f64,
    gather: f64,
    compute: f64,
    allreduce: f64,
    update: f64,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// Builds the model, initialises or resumes the parameters (rank 0's are broadcast), and opens
    /// the run directory (rank 0 writes metrics and checkpoints).
    pub fn new(
        cfg: TrainConfig,
        comm: &'a Comm,
        graph: &'a DistGraph<'a>,
        backend: &'a B,
        paths: RunPaths,
        resume: bool,
    ) -> Result<Self> {
        cfg.validate()?;
        let part = graph.part;
        let num_classes = part.meta.num_classes as usize;
        if cfg.task == Task::NodeClassification && num_classes == 0 {
            return Err(Error::config(
                "task",
                format!(
                    "node-classification needs node labels, and {} has none",
                    paths.data.display()
                ),
            ));
        }
        let model = Model::<B>::new(model_config(&cfg, graph.feature_dim(), num_classes))?;
        let n = model.num_params();
        let config_json = serde_json::to_value(&cfg).map_err(|e| Error::Other(e.to_string()))?;
        let ckpts = if comm.is_root() {
            std::fs::create_dir_all(&paths.run_dir).map_err(|e| Error::io(&paths.run_dir, e))?;
            Some(CheckpointDir::new(paths.run_dir.join("checkpoints"))?)
        } else {
            None
        };

        // Rank 0 decides the starting point and broadcasts it: parameters, moments, position.
        let mut host_params = model.init_params(cfg.seed);
        let mut host_m = vec![0f32; n];
        let mut host_v = vec![0f32; n];
        let mut posv = [0u64; 6];
        let mut best_bits = [f64::NAN];
        let mut status = [0u64]; // 1 when rank 0 failed to load a checkpoint
        let mut failure = Vec::new();
        if let (true, Some(dir)) = (resume, ckpts.as_ref()) {
            match dir.latest_good() {
                Ok(Some((path, ck))) => {
                    match ck.check_compatible(
                        &part.meta.fingerprint,
                        &checkpoint_layout(model.layout()),
                    ) {
                        Ok(()) => {
                            log::info!(
                                "resuming from {} (epoch {}, step {}, global step {})",
                                path.display(),
                                ck.epoch,
                                ck.step,
                                ck.global_step
                            );
                            host_params = ck.params;
                            host_m = ck.adam_m;
                            host_v = ck.adam_v;
                            posv = [
                                ck.epoch,
                                ck.step,
                                ck.global_step,
                                ck.adam_t,
                                ck.config["loop_state"]["evals_since_best"]
                                    .as_u64()
                                    .unwrap_or(0),
                                1,
                            ];
                            best_bits = [ck.best_metric.unwrap_or(f64::NAN)];
                        }
                        Err(e) => {
                            status[0] = 1;
                            failure = e.to_string().into_bytes();
                        }
                    }
                }
                Ok(None) => log::info!(
                    "--resume: no checkpoint in {} yet, starting fresh",
                    dir.path().display()
                ),
                Err(e) => {
                    status[0] = 1;
                    failure = e.to_string().into_bytes();
                }
            }
        }
        comm.broadcast(&mut status, 0);
        comm.broadcast_bytes(&mut failure, 0);
        if status[0] != 0 {
            return Err(Error::Other(format!(
                "cannot resume: {}",
                String::from_utf8_lossy(&failure)
            )));
        }
        comm.broadcast(&mut host_params, 0);
        comm.broadcast(&mut host_m, 0);
        comm.broadcast(&mut host_v, 0);
        comm.broadcast(&mut posv, 0);
        comm.broadcast(&mut best_bits, 0);
        let pos = Position {
            epoch: posv[0],
            step: posv[1],
            global_step: posv[2],
            adam_t: posv[3],
            evals_since_best: posv[4],
            best: (!best_bits[0].is_nan()).then_some(best_bits[0]),
        };
        let part_sampler = if cfg.device_sampling {
            part_sampler(backend, part)?
        } else {
            None
        };
        let features = InputFeatures::new(backend, graph, cfg.features_on)?;
        if let Some(aware) = comm.cuda_aware_mpi() {
            if backend.device_memory()?.is_some() {
                log::info!(
                    "gradients reach MPI_Allreduce through page-locked host memory (MPI {} \
                     CUDA-aware; the {:.2} MB buffer crosses PCIe in well under a millisecond)",
                    if aware { "is" } else { "is not" },
                    n as f64 * 4e-6
                );
            }
        }
        let params = backend.upload(&host_params)?;
        let grads = backend.zeros(n)?;
        let adam_m = backend.upload(&host_m)?;
        let adam_v = backend.upload(&host_v)?;
        let (metrics, tb) = if comm.is_root() {
            std::fs::write(paths.run_dir.join("config.toml"), cfg.to_toml())
                .map_err(|e| Error::io(paths.run_dir.join("config.toml"), e))?;
            (
                Some(if resume {
                    MetricsWriter::append(&paths.run_dir)?
                } else {
                    MetricsWriter::create(&paths.run_dir)?
                }),
                Some(TbWriter::create(&paths.run_dir)?),
            )
        } else {
            (None, None)
        };
        Ok(Trainer {
            cfg,
            comm,
            graph,
            backend,
            part_sampler,
            features,
            model,
            params,
            grads,
            adam_m,
            adam_v,
            pos,
            paths,
            metrics,
            tb,
            ckpts,
            config_json,
            progress: None,
            stop_raised: false,
        })
    }

    /// Host copy of the parameters.
    pub fn host_params(&self) -> Result<Vec<f32>> {
        self.backend.download(&self.params)
    }

    /// Training items this rank owns: edge keys for link prediction, node ids for node
    /// classification.
    fn local_items(&self) -> Vec<u64> {
        let part = self.graph.part;
        match self.cfg.task {
            Task::LinkPrediction => part.train_edges.iter().map(|e| fold(e[0], e[1])).collect(),
            Task::NodeClassification => part.train_idx.clone(),
        }
    }

    /// This rank's share of the global batch.
    fn local_batch(&self) -> usize {
        let (w, r) = (self.comm.size(), self.comm.rank());
        let b = self.cfg.batch_size;
        b / w + usize::from(r < b % w)
    }

    /// Steps in an epoch, agreed by all ranks (the longest rank's pass, capped).
    fn agreed_steps(&self, n_local: usize) -> u64 {
        let lb = self.local_batch().max(1);
        let mine = n_local.div_ceil(lb) as u64;
        let mut v = [mine];
        self.comm.all_reduce_max_u64(&mut v);
        let mut steps = v[0].max(1);
        if self.cfg.steps_per_epoch > 0 {
            steps = steps.min(self.cfg.steps_per_epoch);
        }
        steps
    }

    /// Runs epochs until `cfg.epochs`, early stopping, or a stop signal.
    pub fn fit(&mut self, stop: &StopSignal) -> Result<TrainSummary> {
        let items = self.local_items();
        let mut summary = TrainSummary::default();
        let total_items = {
            let mut v = [items.len() as u64];
            self.comm.all_reduce_sum_u64(&mut v);
            v[0]
        };
        if total_items == 0 {
            return Err(Error::Other(format!(
                "{}: no training {} on any rank",
                self.paths.data.display(),
                match self.cfg.task {
                    Task::LinkPrediction => "edges",
                    Task::NodeClassification => "nodes (node/train_idx)",
                }
            )));
        }
        let steps = self.agreed_steps(items.len());
        if self.comm.is_root() {
            log::info!(
                "training: {} epochs x {steps} steps, global batch {}, {} ranks, {} training items",
                self.cfg.epochs,
                self.cfg.batch_size,
                self.comm.size(),
                total_items
            );
        }
        while self.pos.epoch < self.cfg.epochs {
            let epoch = self.pos.epoch;
            let order = epoch_permutation(self.cfg.seed, epoch, &items);
            let epoch_start = Instant::now();
            if self.comm.is_root() && crate::util::stderr_is_terminal() {
                let pb = crate::util::progress_bar(steps, &format!("epoch {}", epoch + 1));
                pb.set_position(self.pos.step);
                self.progress = Some(pb);
            }
            while self.pos.step < steps {
                let step = self.pos.step;
                let lb = self.local_batch();
                let picked: Vec<usize> = if order.is_empty() {
                    Vec::new()
                } else {
                    (0..lb)
                        .map(|i| order[(step as usize * lb + i) % order.len()])
                        .collect()
                };
                self.stop_raised = stop.raised();
                let stats = self.train_step(epoch, step, &picked)?;
                self.pos.step += 1;
                self.pos.global_step += 1;
                if self.cfg.checksum_every > 0
                    && self.pos.global_step.is_multiple_of(self.cfg.checksum_every)
                {
                    self.check_params_agree()?;
                }
                self.log_step(&stats, steps)?;
                if stats.stop_requested() {
                    self.save_checkpoint(false)?;
                    if self.comm.is_root() {
                        println!("checkpointed at step {} on signal", self.pos.global_step);
                    }
                    summary.stopped_by_signal = true;
                    summary.global_step = self.pos.global_step;
                    summary.epochs_done = self.pos.epoch;
                    summary.best_valid = self.pos.best;
                    summary.params_checksum = self.backend.sum(&self.params)?;
                    return Ok(summary);
                }
                if self.cfg.checkpoint_every > 0
                    && self
                        .pos
                        .global_step
                        .is_multiple_of(self.cfg.checkpoint_every)
                {
                    self.save_checkpoint(false)?;
                }
            }
            self.pos.epoch += 1;
            self.pos.step = 0;
            if self.comm.is_root() {
                log::info!(
                    "epoch {} done in {:.1}s",
                    epoch + 1,
                    epoch_start.elapsed().as_secs_f64()
                );
            }
            let last = self.pos.epoch == self.cfg.epochs;
            let do_eval = last
                || (self.cfg.eval_every > 0 && self.pos.epoch.is_multiple_of(self.cfg.eval_every));
            let mut improved = false;
            if do_eval {
                let value = self.evaluate_and_log("valid")?;
                summary.final_valid = Some(value);
                if self.pos.best.is_none_or(|b| value > b) {
                    self.pos.best = Some(value);
                    self.pos.evals_since_best = 0;
                    improved = true;
                } else {
                    self.pos.evals_since_best += 1;
                }
            }
            self.save_checkpoint(improved)?;
            if self.cfg.patience > 0 && self.pos.evals_since_best >= self.cfg.patience {
                if self.comm.is_root() {
                    log::info!(
                        "early stop: no validation improvement in {} evaluations",
                        self.pos.evals_since_best
                    );
                }
                break;
            }
        }
        self.check_params_agree()?;
        summary.global_step = self.pos.global_step;
        summary.epochs_done = self.pos.epoch;
        summary.best_valid = self.pos.best;
        summary.params_checksum = self.backend.sum(&self.params)?;
        Ok(summary)
    }

    /// One step on the given local items (indices into the rank's training edges or nodes).
    /// Public so that tests can compare a W-rank step with a single-process one on the same
    /// global batch.
    pub fn train_step(&mut self, epoch: u64, step: u64, picked: &[usize]) -> Result<StepStatsAll> {
        let part = self.graph.part;
        let cfg = &self.cfg;
        let mut t = StepTimes::default();
        let t0 = Instant::now();
        let sampler = NeighborSampler::new(cfg.fanouts.clone(), cfg.seed).with_rule(cfg.sampling);
        let ctx = StepCtx {
            seed: cfg.seed,
            epoch,
            step,
            train: true,
        };

        // Seeds and the pairs (or labels) they serve.
        let (seeds, pos_pairs, neg_pairs, labels) = match cfg.task {
            Task::LinkPrediction => {
                let edges: Vec<[u64; 2]> = picked.iter().map(|&i| part.train_edges[i]).collect();
                let keys: Vec<u64> = edges.iter().map(|e| fold(e[0], e[1])).collect();
                let k = cfg.negatives_per_positive;
                let negs = negative_targets(cfg.seed, epoch, step, &keys, k, part.meta.num_nodes);
                let mut endpoints = Vec::with_capacity(edges.len() * (2 + k));
                for e in &edges {
                    endpoints.push(e[0]);
                    endpoints.push(e[1]);
                }
                endpoints.extend_from_slice(&negs);
                let (seeds, at) = dedup_first_seen(&endpoints);
                let m = edges.len();
                let pos: Vec<(u32, u32)> = (0..m).map(|i| (at[2 * i], at[2 * i + 1])).collect();
                let neg: Vec<(u32, u32)> = (0..m * k)
                    .map(|j| (at[2 * (j / k)], at[2 * m + j]))
                    .collect();
                (seeds, pos, neg, Vec::new())
            }
            Task::NodeClassification => {
                let nodes: Vec<u64> = picked.iter().map(|&i| part.train_idx[i]).collect();
                let (seeds, at) = dedup_first_seen(&nodes);
                let label_of = |id: u64| -> u32 {
                    part.label
                        .as_ref()
                        .map(|l| l[(id - part.first_node()) as usize] as u32)
                        .unwrap_or(0)
                };
                let _ = at;
                let labels: Vec<u32> = seeds.iter().map(|&s| label_of(s)).collect();
                (seeds, Vec::new(), Vec::new(), labels)
            }
        };
        let blocks = match &self.part_sampler {
            Some(local) => {
                let routed = RoutedSampler {
                    graph: self.graph,
                    local: local.as_ref(),
                };
                sampler.sample(&routed, &seeds, epoch, step)?
            }
            None => sampler.sample(self.graph, &seeds, epoch, step)?,
        };
        t.sample = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let feats = self
            .features
            .gather(self.backend, self.graph, blocks.input_nodes())?;
        t.gather = t1.elapsed().as_secs_f64();

        // Scale so that summing over ranks gives the mean over the global batch.
        let local_count = match cfg.task {
            Task::LinkPrediction => (pos_pairs.len() + neg_pairs.len()) as u64,
            Task::NodeClassification => labels.len() as u64,
        };
        let mut global = [local_count];
        self.comm.all_reduce_sum_u64(&mut global);
        let grad_scale = 1.0 / global[0].max(1) as f32;

        let t2 = Instant::now();
        let stats = match cfg.task {
            Task::LinkPrediction => self.model.link_step(
                self.backend,
                &self.params,
                &mut self.grads,
                &blocks,
                &feats,
                &pos_pairs,
                &neg_pairs,
                grad_scale,
                ctx,
            )?,
            Task::NodeClassification => self.model.node_step(
                self.backend,
                &self.params,
                &mut self.grads,
                &blocks,
                &feats,
                &labels,
                grad_scale,
                ctx,
            )?,
        };
        t.compute = t2.elapsed().as_secs_f64();

        let t3 = Instant::now();
        if self.comm.size() > 1 {
            let comm = self.comm;
            self.backend
                .host_round_trip(&mut self.grads, &mut |host: &mut [f32]| {
                    comm.all_reduce_sum_f32(host);
                    Ok(())
                })?;
        }
        t.allreduce = t3.elapsed().as_secs_f64();

        let t4 = Instant::now();
        self.pos.adam_t += 1;
        let tt = self.pos.adam_t as i32;
        let coeffs = AdamCoeffs {
            lr: cfg.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.weight_decay,
            bias1: (1.0 - 0.9f64.powi(tt)) as f32,
            bias2: (1.0 - 0.999f64.powi(tt)) as f32,
        };
        self.backend.adam_update(
            &mut self.params,
            &self.grads,
            &mut self.adam_m,
            &mut self.adam_v,
            &coeffs,
        )?;
        t.update = t4.elapsed().as_secs_f64();

        // Loss over the global batch, and the time split summed and maxed over ranks.
        let sampled_edges: usize = blocks.blocks.iter().map(|b| b.indices.len()).sum();
        let (hits, lookups) = self.graph.take_cache_stats();
        let bytes = self.comm.take_bytes_sent() as f64;
        let mut sums = [
            stats.loss_sum,
            local_count as f64,
            seeds.len() as f64,
            sampled_edges as f64,
            t.sample,
            t.gather,
            t.compute,
            t.allreduce,
            t.update,
            bytes,
            hits as f64,
            lookups as f64,
        ];
        // The last entry carries the stop flag: any rank's signal reaches all in this same call.
        let mut maxes = [
            t.sample,
            t.gather,
            t.compute,
            t.allreduce,
            t.update,
            bytes,
            t0.elapsed().as_secs_f64(),
            f64::from(u8::from(self.stop_raised)),
        ];
        self.comm.all_reduce_sum_f64(&mut sums);
        self.comm.all_reduce_max_f64(&mut maxes);
        let loss = sums[0] / sums[1].max(1.0);
        if !loss.is_finite() {
            return Err(Error::Numeric(format!(
                "loss is {loss} at epoch {} step {} (global step {}); the last good checkpoint is kept",
                epoch + 1,
                step + 1,
                self.pos.global_step + 1
            )));
        }
        Ok(StepStatsAll { loss, sums, maxes })
    }

    fn log_step(&mut self, s: &StepStatsAll, steps: u64) -> Result<()> {
        let (Some(metrics), true) = (self.metrics.as_mut(), self.comm.is_root()) else {
            return Ok(());
        };
        let wall = s.maxes[6].max(1e-9);
        let mut extra = std::collections::BTreeMap::new();
        let names = ["sample", "gather", "compute", "allreduce", "update"];
        for (i, n) in names.iter().enumerate() {
            extra.insert(format!("time_{n}_sum_s"), serde_json::json!(s.sums[4 + i]));
            extra.insert(format!("time_{n}_max_s"), serde_json::json!(s.maxes[i]));
        }
        extra.insert("bytes_exchanged_sum".into(), serde_json::json!(s.sums[9]));
        extra.insert("bytes_exchanged_max".into(), serde_json::json!(s.maxes[5]));
        extra.insert("world_size".into(), serde_json::json!(self.comm.size()));
        let hit_rate = if s.sums[11] > 0.0 {
            s.sums[10] / s.sums[11]
        } else {
            1.0
        };
        extra.insert("feature_cache_hit_rate".into(), serde_json::json!(hit_rate));
        extra.insert("step_time_s".into(), serde_json::json!(wall));
        let rec = StepRecord {
            epoch: self.pos.epoch,
            step: self.pos.step,
            global_step: self.pos.global_step,
            loss: s.loss,
            lr: self.cfg.lr as f64,
            seeds_per_s: s.sums[2] / wall,
            sampled_edges_per_s: s.sums[3] / wall,
            time_sample_s: s.maxes[0],
            time_gather_s: s.maxes[1],
            time_compute_s: s.maxes[2],
            time_update_s: s.maxes[3] + s.maxes[4],
            peak_rss_bytes: crate::util::peak_rss_bytes(),
            extra,
        };
        metrics.step(&rec)?;
        if let Some(tb) = self.tb.as_mut() {
            tb.scalar("train/loss", self.pos.global_step as i64, s.loss as f32)?;
            tb.scalar(
                "train/seeds_per_s",
                self.pos.global_step as i64,
                rec.seeds_per_s as f32,
            )?;
        }
        if let Some(pb) = &self.progress {
            pb.set_position(self.pos.step);
            pb.set_message(format!(
                "epoch {} loss {:.4} | {:.0} items/s",
                self.pos.epoch + 1,
                s.loss,
                self.cfg.batch_size as f64 / wall
            ));
            if self.pos.step == steps {
                pb.finish_and_clear();
                self.progress = None;
            }
        } else if self
            .pos
            .global_step
            .is_multiple_of(self.cfg.log_every.max(1))
            || self.pos.step == steps
        {
            log::info!(
                "epoch {} step {}/{} loss {:.4} | {:.0} seeds/s, {:.0} sampled edges/s | sample {:.3}s gather {:.3}s compute {:.3}s allreduce {:.3}s",
                self.pos.epoch + 1,
                self.pos.step,
                steps,
                s.loss,
                rec.seeds_per_s,
                rec.sampled_edges_per_s,
                s.maxes[0],
                s.maxes[1],
                s.maxes[2],
                s.maxes[3]
            );
        }
        Ok(())
    }

    /// Evaluates on `split` (all ranks), logs the metrics, returns the selection metric.
    pub fn evaluate_and_log(&mut self, split: &str) -> Result<f64> {
        let t = Instant::now();
        let metrics = inference::evaluate(
            self.graph,
            self.backend,
            &self.model,
            &self.params,
            self.cfg.task,
            split,
            self.cfg.eval_batch_size,
        )?;
        let key = selection_metric(self.cfg.task);
        let value = metrics.get(key).copied().unwrap_or(f64::NAN);
        if self.comm.is_root() {
            let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
            log::info!(
                "eval {split} after epoch {}: {} ({:.1}s)",
                self.pos.epoch,
                shown.join(" "),
                t.elapsed().as_secs_f64()
            );
            if let Some(m) = self.metrics.as_mut() {
                m.eval(&EvalRecord {
                    epoch: self.pos.epoch,
                    global_step: self.pos.global_step,
                    split: split.to_string(),
                    metrics: metrics.clone(),
                    extra: Default::default(),
                })?;
            }
            if let Some(tb) = self.tb.as_mut() {
                for (k, v) in &metrics {
                    tb.scalar(
                        &format!("{split}/{k}"),
                        self.pos.global_step as i64,
                        *v as f32,
                    )?;
                }
            }
        }
        Ok(value)
    }

    /// All ranks compare a checksum of their parameters; a mismatch ends the job.
    pub fn check_params_agree(&self) -> Result<()> {
        let host = self.backend.download(&self.params)?;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for x in &host {
            h = fold(h, x.to_bits() as u64);
        }
        let all = self.comm.all_gather_u64(h);
        if all.iter().any(|&x| x != all[0]) {
            return Err(Error::Rank {
                rank: self.comm.rank(),
                msg: format!(
                    "parameters differ between ranks at global step {} (checksums {all:x?})",
                    self.pos.global_step
                ),
            });
        }
        Ok(())
    }

    /// Rank 0 writes a checkpoint (atomically); `best` also refreshes best.ssck.
    pub fn save_checkpoint(&mut self, best: bool) -> Result<()> {
        // Buffers may live on a device: every rank downloads (cheap) to keep ranks in lock-step.
        let params = self.backend.download(&self.params)?;
        let m = self.backend.download(&self.adam_m)?;
        let v = self.backend.download(&self.adam_v)?;
        let Some(dir) = self.ckpts.as_mut() else {
            return Ok(());
        };
        let ck = Checkpoint {
            params,
            adam_m: m,
            adam_v: v,
            adam_t: self.pos.adam_t,
            epoch: self.pos.epoch,
            step: self.pos.step,
            global_step: self.pos.global_step,
            config: serde_json::json!({
                "train_config": self.config_json,
                "loop_state": { "evals_since_best": self.pos.evals_since_best },
            }),
            dataset_fingerprint: self.graph.part.meta.fingerprint.clone(),
            layout: checkpoint_layout(self.model.layout()),
            best_metric: self.pos.best,
            world_size: self.comm.size(),
        };
        let path = dir.save(&ck, self.cfg.keep_last)?;
        log::debug!("checkpoint {}", path.display());
        if best {
            dir.save_best(&ck)?;
        }
        Ok(())
    }
}

/// A step's loss over the global batch, with the reduced counters and timings.
#[derive(Clone, Debug)]
pub struct StepStatsAll {
    pub loss: f64,
    sums: [f64; 12],
    maxes: [f64; 8],
}

impl StepStatsAll {
    /// Whether any rank had a stop signal when the step began (all ranks see the same answer).
    pub fn stop_requested(&self) -> bool {
        self.maxes[7] != 0.0
    }
}
