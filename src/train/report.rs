//! What a step reports, typed: one rank's figures (`StepFigures`), reduced over all ranks with
//! exactly two collectives (one sum, one max), and written as a metrics record, a TensorBoard
//! scalar and a log line or progress bar (`Reporter`). A second model reports through the same
//! parts; nothing here knows what a GNN is.

use crate::distributed::Comm;
use crate::error::Result;
use crate::train::metrics::{MetricsWriter, StepRecord};
use crate::train::tensorboard::TbWriter;

/// Wall time of the phases of a step on one rank, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    pub sample: f64,
    pub gather: f64,
    pub compute: f64,
    pub allreduce: f64,
    pub update: f64,
    /// The part of the batch's preparation (sample + gather) the step waited for: all of it
    /// without the pipeline, what the previous step's compute did not hide with it.
    pub exposed_prepare: f64,
    /// Of `compute`, the time in matrix products (zero where the backend does not time them).
    pub gemm: f64,
}

impl PhaseTimes {
    const NAMES: [&'static str; PHASES] = [
        "sample",
        "gather",
        "compute",
        "allreduce",
        "update",
        "exposed_prepare",
        "gemm",
    ];

    fn values(&self) -> [f64; PHASES] {
        [
            self.sample,
            self.gather,
            self.compute,
            self.allreduce,
            self.update,
            self.exposed_prepare,
            self.gemm,
        ]
    }
    fn from_values(v: &[f64]) -> Self {
        PhaseTimes {
            sample: v[0],
            gather: v[1],
            compute: v[2],
            allreduce: v[3],
            update: v[4],
            exposed_prepare: v[5],
            gemm: v[6],
        }
    }
}

/// One rank's figures of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepFigures {
    /// Sum of the per-item losses (unscaled).
    pub loss_sum: f64,
    /// Items (pairs or nodes) in the loss.
    pub items: f64,
    pub seeds: f64,
    pub sampled_edges: f64,
    pub times: PhaseTimes,
    /// Bytes this rank sent in exchanges during the step.
    pub bytes_sent: f64,
    pub cache_hits: f64,
    pub cache_lookups: f64,
    /// Wall time of the whole step.
    pub wall: f64,
    /// Whether this rank has seen a stop signal (SIGTERM / SIGUSR1).
    pub stop: bool,
    /// Floating-point operations of the step's matrix products.
    pub gemm_flops: f64,
    /// Whether a time-based checkpoint is due after this step (set by rank 0 only).
    pub checkpoint_due: bool,
}

const PHASES: usize = 7;
const FIELDS: usize = 11 + PHASES;

impl StepFigures {
    fn to_array(self) -> [f64; FIELDS] {
        let t = self.times.values();
        [
            self.loss_sum,
            self.items,
            self.seeds,
            self.sampled_edges,
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            t[5],
            t[6],
            self.bytes_sent,
            self.cache_hits,
            self.cache_lookups,
            self.wall,
            f64::from(u8::from(self.stop)),
            self.gemm_flops,
            f64::from(u8::from(self.checkpoint_due)),
        ]
    }
    fn from_array(v: &[f64; FIELDS]) -> Self {
        StepFigures {
            loss_sum: v[0],
            items: v[1],
            seeds: v[2],
            sampled_edges: v[3],
            times: PhaseTimes::from_values(&v[4..4 + PHASES]),
            bytes_sent: v[4 + PHASES],
            cache_hits: v[5 + PHASES],
            cache_lookups: v[6 + PHASES],
            wall: v[7 + PHASES],
            stop: v[8 + PHASES] != 0.0,
            gemm_flops: v[9 + PHASES],
            checkpoint_due: v[10 + PHASES] != 0.0,
        }
    }

    /// The figures of all ranks: their sums and their maxima (two collectives, every rank).
    pub fn reduce(self, comm: &Comm) -> StepTotals {
        let mut sum = self.to_array();
        let mut max = sum;
        comm.all_reduce_sum_f64(&mut sum);
        comm.all_reduce_max_f64(&mut max);
        StepTotals {
            sum: StepFigures::from_array(&sum),
            max: StepFigures::from_array(&max),
        }
    }
}

/// A step's figures over all ranks.
#[derive(Clone, Copy, Debug)]
pub struct StepTotals {
    pub sum: StepFigures,
    pub max: StepFigures,
}

impl StepTotals {
    /// Mean loss over the global batch.
    pub fn loss(&self) -> f64 {
        self.sum.loss_sum / self.sum.items.max(1.0)
    }
    /// Whether any rank had a stop signal when the step began (every rank sees the same answer).
    pub fn stop_requested(&self) -> bool {
        self.max.stop
    }
    /// Whether rank 0 found a time-based checkpoint due (every rank sees the same answer).
    pub fn checkpoint_due(&self) -> bool {
        self.max.checkpoint_due
    }
    /// The slowest rank's step time.
    pub fn wall(&self) -> f64 {
        self.max.wall.max(1e-9)
    }
}

/// Where a step is, for the record.
#[derive(Clone, Copy, Debug)]
pub struct StepPosition {
    pub epoch: u64,
    /// Steps done in `epoch`, this one included.
    pub step: u64,
    pub steps_per_epoch: u64,
    pub global_step: u64,
}

/// Rank 0's outputs for step records: metrics.jsonl, TensorBoard, and a progress bar on a
/// terminal or a log line every `log_every` steps otherwise. Other ranks hold none and write
/// nothing.
pub struct Reporter {
    metrics: Option<MetricsWriter>,
    tb: Option<TbWriter>,
    progress: Option<indicatif::ProgressBar>,
    log_every: u64,
    world: usize,
}

impl Reporter {
    pub fn new(
        metrics: Option<MetricsWriter>,
        tb: Option<TbWriter>,
        log_every: u64,
        world: usize,
    ) -> Self {
        Reporter {
            metrics,
            tb,
            progress: None,
            log_every: log_every.max(1),
            world,
        }
    }

    pub fn metrics(&mut self) -> Option<&mut MetricsWriter> {
        self.metrics.as_mut()
    }
    pub fn tb(&mut self) -> Option<&mut TbWriter> {
        self.tb.as_mut()
    }

    /// Starts an epoch's progress bar (rank 0 on a terminal only).
    pub fn start_epoch(&mut self, epoch: u64, steps: u64, done: u64) {
        if self.metrics.is_some() && crate::util::stderr_is_terminal() {
            let pb = crate::util::progress_bar(steps, &format!("epoch {}", epoch + 1));
            pb.set_position(done);
            self.progress = Some(pb);
        }
    }

    /// Records one step; `lr` and `batch_size` are shown as they are.
    pub fn step(
        &mut self,
        at: StepPosition,
        totals: &StepTotals,
        lr: f64,
        batch_size: usize,
    ) -> Result<()> {
        let Some(metrics) = self.metrics.as_mut() else {
            return Ok(());
        };
        let (sum, max) = (&totals.sum, &totals.max);
        let wall = totals.wall();
        let mut extra = std::collections::BTreeMap::new();
        for (i, n) in PhaseTimes::NAMES.iter().enumerate() {
            extra.insert(
                format!("time_{n}_sum_s"),
                serde_json::json!(sum.times.values()[i]),
            );
            extra.insert(
                format!("time_{n}_max_s"),
                serde_json::json!(max.times.values()[i]),
            );
        }
        extra.insert(
            "bytes_exchanged_sum".into(),
            serde_json::json!(sum.bytes_sent),
        );
        extra.insert(
            "bytes_exchanged_max".into(),
            serde_json::json!(max.bytes_sent),
        );
        extra.insert("world_size".into(), serde_json::json!(self.world));
        let hit_rate = if sum.cache_lookups > 0.0 {
            sum.cache_hits / sum.cache_lookups
        } else {
            1.0
        };
        extra.insert("feature_cache_hit_rate".into(), serde_json::json!(hit_rate));
        extra.insert("step_time_s".into(), serde_json::json!(wall));
        extra.insert("gemm_flops_sum".into(), serde_json::json!(sum.gemm_flops));
        let rec = StepRecord {
            epoch: at.epoch,
            step: at.step,
            global_step: at.global_step,
            loss: totals.loss(),
            lr,
            seeds_per_s: sum.seeds / wall,
            sampled_edges_per_s: sum.sampled_edges / wall,
            time_sample_s: max.times.sample,
            time_gather_s: max.times.gather,
            time_compute_s: max.times.compute,
            time_update_s: max.times.allreduce + max.times.update,
            peak_rss_bytes: crate::util::peak_rss_bytes(),
            extra,
        };
        metrics.step(&rec)?;
        if let Some(tb) = self.tb.as_mut() {
            tb.scalar("train/loss", at.global_step as i64, rec.loss as f32)?;
            tb.scalar(
                "train/seeds_per_s",
                at.global_step as i64,
                rec.seeds_per_s as f32,
            )?;
        }
        if let Some(pb) = &self.progress {
            pb.set_position(at.step);
            pb.set_message(format!(
                "epoch {} loss {:.4} | {:.0} items/s",
                at.epoch + 1,
                rec.loss,
                batch_size as f64 / wall
            ));
            if at.step == at.steps_per_epoch {
                pb.finish_and_clear();
                self.progress = None;
            }
        } else if at.global_step.is_multiple_of(self.log_every) || at.step == at.steps_per_epoch {
            log::info!(
                "epoch {} step {}/{} loss {:.4} | {:.0} seeds/s, {:.0} sampled edges/s | sample {:.3}s gather {:.3}s compute {:.3}s allreduce {:.3}s",
                at.epoch + 1,
                at.step,
                at.steps_per_epoch,
                rec.loss,
                rec.seeds_per_s,
                rec.sampled_edges_per_s,
                max.times.sample,
                max.times.gather,
                max.times.compute,
                max.times.allreduce
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_survive_the_array_round_trip() {
        let f = StepFigures {
            loss_sum: 1.5,
            items: 2.0,
            seeds: 3.0,
            sampled_edges: 4.0,
            times: PhaseTimes {
                sample: 0.1,
                gather: 0.2,
                compute: 0.3,
                allreduce: 0.4,
                update: 0.5,
                exposed_prepare: 0.05,
                gemm: 0.25,
            },
            bytes_sent: 6.0,
            cache_hits: 7.0,
            cache_lookups: 8.0,
            wall: 0.9,
            stop: true,
            gemm_flops: 1e9,
            checkpoint_due: true,
        };
        assert_eq!(StepFigures::from_array(&f.to_array()), f);
        let t = StepTotals { sum: f, max: f };
        assert_eq!(t.loss(), 0.75);
        assert!(t.stop_requested() && t.checkpoint_due());
    }
}
