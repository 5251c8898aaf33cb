//! The training loop of the GNN, the same on one process and on W MPI ranks, read as the
//! algorithm: per epoch, the plan every rank agrees on (`batch::EpochPlan`); per step, prepare the
//! batch (`batch::Batch`) -> sample its blocks -> gather its input features -> forward, loss and
//! backward (`nn::Model`) -> MPI_Allreduce of the flat gradient -> the Adam update (`nn::Adam`)
//! -> the typed report (`report`). Around it: the starting point (`state`), evaluations,
//! checkpoints and early stopping.
//!
//! Every random choice is keyed by (seed, epoch, step), so a run resumed from a checkpoint ends
//! bit-identical to an uninterrupted one; parameters stay identical on every rank (a checksum is
//! compared every `checksum_every` steps).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::backend::{Backend, GemmWork, PartSampler};
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::DistGraph;
use crate::distributed::watchdog::StepWatch;
use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::eval::inference;
use crate::nn::adam::Adam;
use crate::nn::model::{Model, StepCtx, StepStats, Task};
use crate::sample::neighbor::NeighborSampler;
use crate::sample::rng::fold;
use crate::sample::shuffle::epoch_permutation;
use crate::train::batch::{local_items, EpochPlan};
use crate::train::checkpoint::checkpoint_layout;
use crate::train::checkpoint::{Checkpoint, CheckpointDir};
use crate::train::config::{adam_config, model_config, selection_metric, Pipeline, TrainConfig};
use crate::train::features::{device_sampler, InputFeatures};
use crate::train::metrics::{katib_line, EndReason, EndRecord, EvalRecord, MetricsWriter};
use crate::train::pipeline::{BatchSource, PreparedBatch};
use crate::train::report::{PhaseTimes, Reporter, StepFigures, StepPosition, StepTotals};
use crate::train::state::{agree_on_start, RunPosition};
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

/// The data-side parts of a trainer that prepare a batch. A macro rather than a method, so that
/// the borrow is of those fields only and the step can hold the gradients mutably beside it.
macro_rules! batch_source {
    ($trainer:expr) => {
        BatchSource {
            cfg: &$trainer.cfg,
            comm: $trainer.comm,
            graph: $trainer.graph,
            backend: $trainer.backend,
            sampler: &$trainer.sampler,
            part_sampler: $trainer.part_sampler.as_deref(),
            features: &$trainer.features,
        }
    };
}

/// One rank's trainer.
pub struct Trainer<'a, B: Backend> {
    pub cfg: TrainConfig,
    comm: &'a Comm,
    graph: &'a DistGraph<'a>,
    backend: &'a B,
    /// The backend's sampler over this rank's adjacency (on the GPU), if it has one and
    /// `device_sampling` is on; the host's `LocalCsr` otherwise.
    part_sampler: Option<Box<dyn PartSampler<B> + 'a>>,
    sampler: NeighborSampler,
    features: InputFeatures<B>,
    model: Model<B>,
    params: B::F,
    grads: B::F,
    adam: Adam<B>,
    pos: RunPosition,
    paths: RunPaths,
    reporter: Reporter,
    ckpts: Option<CheckpointDir>,
    config_json: serde_json::Value,
    /// Whether this rank has seen a stop signal; sent with the next step's figures.
    stop_raised: bool,
    /// When the last checkpoint was written (or the run started), for `checkpoint_minutes`.
    last_checkpoint: Instant,
    /// Whether the next step's batch is prepared during the current step's compute.
    pipelined: bool,
    /// The watchdog's view of the steps (their phase and, once timed, their deadline).
    step_watch: StepWatch,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// Builds the model, agrees on the starting point (rank 0's initial parameters or checkpoint,
    /// broadcast), and opens the run directory (rank 0 writes metrics and checkpoints).
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
        let start = agree_on_start(
            comm,
            ckpts.as_ref(),
            resume,
            &part.meta.fingerprint,
            &checkpoint_layout(model.layout()),
            model.init_params(cfg.seed),
        )?;
        let part_sampler = if cfg.device_sampling {
            device_sampler(backend, part)?
        } else {
            None
        };
        let features = InputFeatures::new(backend, graph, cfg.features_on)?;
        let pipelined = match cfg.pipeline {
            Pipeline::On => true,
            Pipeline::Off => false,
            Pipeline::Auto => backend.computes_beside_host_threads(),
        };
        log::info!(
            "batch pipeline: {} (--pipeline {})",
            if pipelined { "on" } else { "off" },
            format!("{:?}", cfg.pipeline).to_lowercase()
        );
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
        let params = backend.upload(&start.params)?;
        let grads = backend.zeros(n)?;
        let adam = Adam::from_state(backend, adam_config(&cfg), &start.adam)?;
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
            // The first layer computes no input gradient (`backward_layers`), so its block
            // needs no reverse index.
            sampler: NeighborSampler::new(cfg.fanouts.clone(), cfg.seed)
                .with_rule(cfg.sampling)
                .forward_only_input(),
            reporter: Reporter::new(metrics, tb, cfg.log_every, comm.size()),
            cfg,
            comm,
            graph,
            backend,
            part_sampler,
            features,
            model,
            params,
            grads,
            adam,
            pos: start.position,
            paths,
            ckpts,
            config_json,
            stop_raised: false,
            last_checkpoint: Instant::now(),
            pipelined,
            step_watch: StepWatch::default(),
        })
    }

    /// Host copy of the parameters.
    pub fn host_params(&self) -> Result<Vec<f32>> {
        self.backend.download(&self.params)
    }

    fn summary(&self, stopped_by_signal: bool, final_valid: Option<f64>) -> Result<TrainSummary> {
        Ok(TrainSummary {
            global_step: self.pos.global_step,
            epochs_done: self.pos.epoch,
            best_valid: self.pos.best,
            final_valid,
            stopped_by_signal,
            params_checksum: self.backend.sum(&self.params)?,
        })
    }

    /// The end of a run stopped by a signal: a checkpoint of where it is.
    fn stopped_with_checkpoint(&mut self, final_valid: Option<f64>) -> Result<TrainSummary> {
        self.save_checkpoint(false)?;
        if self.comm.is_root() {
            println!("checkpointed at step {} on signal", self.pos.global_step);
        }
        self.summary(true, final_valid)
    }

    /// Runs epochs until `cfg.epochs`, early stopping, or a stop signal.
    pub fn fit(&mut self, stop: &StopSignal) -> Result<TrainSummary> {
        let items = local_items(self.graph.part, self.cfg.task);
        // With the item count, whether a stop signal came during loading: then no step runs.
        let (total_items, stopped_while_loading) = {
            let mut v = [items.len() as u64, stop.raised() as u64];
            self.comm.all_reduce_sum_u64(&mut v);
            (v[0], v[1] > 0)
        };
        if stopped_while_loading {
            if self.comm.is_root() {
                println!("stopped by signal before training started; no new checkpoint");
            }
            return self.summary(true, None);
        }
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
        let plan = EpochPlan::agree(
            self.comm,
            items.len(),
            self.cfg.batch_size,
            self.cfg.steps_per_epoch,
        );
        let steps = plan.steps;
        if self.comm.is_root() {
            log::info!(
                "training: {} epochs x {steps} steps, global batch {}, {} ranks, {} training items",
                self.cfg.epochs,
                self.cfg.batch_size,
                self.comm.size(),
                total_items
            );
        }
        let mut final_valid = None;
        let mut reason = EndReason::Completed;
        while self.pos.epoch < self.cfg.epochs {
            let epoch = self.pos.epoch;
            let order = epoch_permutation(self.cfg.seed, epoch, &items);
            let epoch_start = Instant::now();
            self.reporter.start_epoch(epoch, steps, self.pos.step);
            // The batch of the step after the current one, prepared during the current one's
            // compute; never across an epoch's end (evaluation and checkpoints come between).
            let mut ahead: Option<PreparedBatch<B>> = None;
            while self.pos.step < steps {
                let step = self.pos.step;
                let step_start = Instant::now();
                self.step_watch.enter(self.comm, epoch, step);
                self.stop_raised = stop.raised();
                let prepared = match ahead.take() {
                    Some(p) => {
                        p.check_for(epoch, step)?;
                        p
                    }
                    None => batch_source!(self).prepare(epoch, step, &plan.pick(&order, step))?,
                };
                let next = (self.pipelined && step + 1 < steps)
                    .then(|| (epoch, step + 1, plan.pick(&order, step + 1)));
                let (totals, next_batch) = self.run_step(prepared, next)?;
                ahead = next_batch;
                self.step_watch.record(self.comm, step_start.elapsed());
                self.pos.step += 1;
                self.pos.global_step += 1;
                if self.cfg.checksum_every > 0
                    && self.pos.global_step.is_multiple_of(self.cfg.checksum_every)
                {
                    self.check_params_agree()?;
                }
                let at = StepPosition {
                    epoch,
                    step: self.pos.step,
                    steps_per_epoch: steps,
                    global_step: self.pos.global_step,
                };
                self.reporter
                    .step(at, &totals, self.cfg.lr as f64, self.cfg.batch_size)?;
                if totals.stop_requested() {
                    return self.stopped_with_checkpoint(final_valid);
                }
                let every = self.cfg.checkpoint_every > 0
                    && self
                        .pos
                        .global_step
                        .is_multiple_of(self.cfg.checkpoint_every);
                if every || totals.checkpoint_due() {
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
                let value = match self.evaluate_and_log("valid", stop) {
                    Err(Error::Stopped(_)) => {
                        // Back to the end of the epoch's last step: a resume evaluates again.
                        self.pos.epoch -= 1;
                        self.pos.step = steps;
                        return self.stopped_with_checkpoint(final_valid);
                    }
                    v => v?,
                };
                final_valid = Some(value);
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
                reason = EndReason::EarlyStop;
                break;
            }
        }
        self.check_params_agree()?;
        if let Some(m) = self.reporter.metrics() {
            // After the last checkpoint: `select` takes a run with this record as finished.
            m.end(&EndRecord {
                epoch: self.pos.epoch,
                global_step: self.pos.global_step,
                reason,
                metric: selection_metric(self.cfg.task).to_string(),
                best_valid: self.pos.best,
            })?;
        }
        self.summary(false, final_valid)
    }

    /// One step on the given local items (indices into the rank's training edges or nodes),
    /// prepared and computed one after the other. Public so that tests can compare a W-rank step
    /// with a single-process one on the same global batch.
    pub fn train_step(&mut self, epoch: u64, step: u64, picked: &[usize]) -> Result<StepTotals> {
        let prepared = batch_source!(self).prepare(epoch, step, picked)?;
        Ok(self.run_step(prepared, None)?.0)
    }

    /// Runs the step of `prepared`: forward, loss and backward, then the gradient allreduce, the
    /// update and the figures. With `next` (the epoch, step and local items of the following
    /// step), that step's batch is prepared on this thread while the forward and backward run
    /// on another, and returned.
    fn run_step(
        &mut self,
        mut prepared: PreparedBatch<B>,
        next: Option<(u64, u64, Vec<usize>)>,
    ) -> Result<(StepTotals, Option<PreparedBatch<B>>)> {
        let t0 = Instant::now();
        let mut t = PhaseTimes {
            sample: prepared.sample_s,
            gather: prepared.gather_s,
            exposed_prepare: prepared.exposed_s,
            ..PhaseTimes::default()
        };
        let ctx = StepCtx {
            seed: self.cfg.seed,
            epoch: prepared.epoch,
            step: prepared.step,
            train: true,
        };
        let source = batch_source!(self);
        let (model, backend, params, grads) =
            (&self.model, self.backend, &self.params, &mut self.grads);
        let task = self.cfg.task;
        let device_blocks = prepared.device_blocks.take();
        let p = &prepared;
        let compute = move || -> Result<(StepStats, f64, GemmWork)> {
            backend.take_gemm_work();
            let started = Instant::now();
            let stats = match task {
                Task::LinkPrediction => model.link_step(
                    backend,
                    params,
                    grads,
                    &p.blocks,
                    device_blocks,
                    &p.features,
                    &p.batch.pos,
                    &p.batch.neg,
                    p.grad_scale,
                    ctx,
                )?,
                Task::NodeClassification => model.node_step(
                    backend,
                    params,
                    grads,
                    &p.blocks,
                    device_blocks,
                    &p.features,
                    &p.batch.labels,
                    p.grad_scale,
                    ctx,
                )?,
            };
            let secs = started.elapsed().as_secs_f64();
            Ok((stats, secs, backend.take_gemm_work()))
        };
        let (stats, gemm, ahead) = match next {
            None => {
                let (stats, secs, gemm) = compute()?;
                t.compute = secs;
                (stats, gemm, None)
            }
            Some((epoch, step, picked)) => std::thread::scope(|scope| {
                let worker = std::thread::Builder::new()
                    .name("step-compute".into())
                    .spawn_scoped(scope, compute)
                    .map_err(|e| Error::Other(format!("cannot start the compute thread: {e}")))?;
                let ahead = source.prepare(epoch, step, &picked);
                let prepared_at = Instant::now();
                let computed = worker
                    .join()
                    .map_err(|_| Error::Other("the step's compute thread panicked".into()))?;
                let (stats, secs, gemm) = computed?;
                t.compute = secs;
                let mut ahead = ahead?;
                // The part of its preparation the compute did not hide; it is the next step's.
                ahead.exposed_s = prepared_at
                    .saturating_duration_since(t0 + Duration::from_secs_f64(secs))
                    .as_secs_f64();
                Ok::<_, Error>((stats, gemm, Some(ahead)))
            })?,
        };

        t.gemm = gemm.seconds;
        // The batch's input rows go back to the backend's spare buffers, for the next batch's
        // (a fresh buffer of that size cost a zero fill and its page faults every step).
        let features = std::mem::replace(&mut prepared.features, self.backend.zeros(0)?);
        self.backend.recycle(features);

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
        self.adam
            .step(self.backend, &mut self.params, &self.grads)?;
        t.update = t4.elapsed().as_secs_f64();

        // Loss over the global batch, and the figures summed and maxed over ranks.
        let blocks = &prepared.blocks;
        let totals = StepFigures {
            loss_sum: stats.loss_sum,
            items: prepared.local_items as f64,
            seeds: prepared.batch.seeds.len() as f64,
            sampled_edges: blocks.blocks.iter().map(|b| b.indices.len()).sum::<usize>() as f64,
            times: t,
            bytes_sent: self.comm.take_bytes_sent() as f64,
            cache_hits: prepared.cache_hits as f64,
            cache_lookups: prepared.cache_lookups as f64,
            wall: t0.elapsed().as_secs_f64() + prepared.exposed_s,
            stop: self.stop_raised,
            gemm_flops: gemm.flops,
            checkpoint_due: self.comm.is_root()
                && self.cfg.checkpoint_minutes > 0.0
                && self.last_checkpoint.elapsed().as_secs_f64()
                    >= self.cfg.checkpoint_minutes * 60.0,
        }
        .reduce(self.comm);
        let loss = totals.loss();
        if !loss.is_finite() {
            return Err(Error::Numeric(format!(
                "loss is {loss} at epoch {} step {} (global step {}); the last good checkpoint is kept",
                prepared.epoch + 1,
                prepared.step + 1,
                self.pos.global_step + 1
            )));
        }
        Ok((totals, ahead))
    }

    /// Evaluates on `split` (all ranks), logs the metrics, returns the selection metric.
    pub fn evaluate_and_log(&mut self, split: &str, stop: &StopSignal) -> Result<f64> {
        let t = Instant::now();
        self.comm.set_phase(
            format!("evaluation ({split}) after epoch {}", self.pos.epoch),
            None,
        );
        let metrics = inference::evaluate(
            self.graph,
            self.backend,
            &self.model,
            &self.params,
            self.cfg.task,
            split,
            self.cfg.scoring.eval_batch_size,
            stop,
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
            // On stdout in the `name=value` form that Katib's StdOut metrics collector parses
            // (docs/kubernetes.md), e.g. `2026-12-02T02:30:00Z epoch=3 global_step=120 valid-mrr=0.412300`.
            println!(
                "{}",
                katib_line(
                    &crate::util::now_rfc3339_utc(),
                    self.pos.epoch,
                    self.pos.global_step,
                    split,
                    &metrics
                )
            );
            if let Some(m) = self.reporter.metrics() {
                m.eval(&EvalRecord {
                    epoch: self.pos.epoch,
                    global_step: self.pos.global_step,
                    split: split.to_string(),
                    metrics: metrics.clone(),
                    extra: Default::default(),
                })?;
            }
            if let Some(tb) = self.reporter.tb() {
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
        let adam = self.adam.state(self.backend)?;
        self.comm.set_phase("checkpoint write on rank 0", None);
        // The others wait here, under the generous deadline, while rank 0 writes.
        let Some(dir) = self.ckpts.as_mut() else {
            self.comm.barrier();
            return Ok(());
        };
        let ck = Checkpoint {
            params,
            adam_m: adam.m,
            adam_v: adam.v,
            adam_t: adam.t,
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
        self.last_checkpoint = Instant::now();
        // best.ssck first, the step's checkpoint (what a resume starts from) last: a crash
        // between the two resumes from the previous checkpoint, which replays the same steps
        // bit for bit and writes the same best.ssck again, so the two never disagree.
        if best {
            dir.save_best(&ck)?;
        }
        let path = dir.save(&ck, self.cfg.keep_last)?;
        log::debug!("checkpoint {}", path.display());
        // Written: the others are already waiting, unless one of them has stalled.
        self.comm
            .set_phase("checkpoint written", self.step_watch.deadline());
        self.comm.barrier();
        Ok(())
    }
}
