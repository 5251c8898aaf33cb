//! A step's batch made ready ahead of its compute: the batch (negatives, seeds), its sampled
//! blocks and its input feature rows, with the owner exchanges they need, and the global item
//! count that scales the gradient.
//!
//! None of it depends on the parameters (every random choice is keyed by seed, epoch and step),
//! so the trainer prepares step t+1 on the rank's main thread while step t's forward and
//! backward run on a second thread; the result is bit-identical to preparing it after step t.
//! Every MPI call stays on the main thread (the thread level asked for is `MPI_THREAD_FUNNELED`,
//! see `distributed::comm`), and each rank issues the same collectives in the same order:
//! prepare t+1, then step t's gradient allreduce and figures.

use std::time::Instant;

use crate::backend::{Backend, DeviceBlock, PartSampler};
use crate::distributed::graph::{DistGraph, RoutedSampler};
use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::nn::model::Task;
use crate::sample::block::SampledBlocks;
use crate::sample::neighbor::NeighborSampler;
use crate::train::batch::Batch;
use crate::train::config::TrainConfig;
use crate::train::features::InputFeatures;

/// What preparing a batch reads: the trainer's data-side parts, borrowed apart from the model,
/// parameters and gradients that the step's compute uses at the same time.
pub struct BatchSource<'s, 'g, B: Backend> {
    pub cfg: &'s TrainConfig,
    pub comm: &'s Comm,
    pub graph: &'s DistGraph<'g>,
    pub backend: &'s B,
    pub sampler: &'s NeighborSampler,
    /// The backend's sampler over the rank's adjacency, when it has one.
    pub part_sampler: Option<&'s (dyn PartSampler<B> + 's)>,
    pub features: &'s InputFeatures<B>,
}

/// A batch ready for the step `(epoch, step)` it was prepared for.
pub struct PreparedBatch<B: Backend> {
    pub epoch: u64,
    pub step: u64,
    pub batch: Batch,
    pub blocks: SampledBlocks,
    /// The same blocks on the device when the block chain built them there (the step then
    /// uploads nothing); `None`: the step uploads `blocks`.
    pub device_blocks: Option<Vec<DeviceBlock<B>>>,
    /// Input rows of `blocks.input_nodes()`, on the backend.
    pub features: B::F,
    /// This rank's items in the loss, and `1 / (items over all ranks)`.
    pub local_items: u64,
    pub grad_scale: f32,
    /// Seconds spent sampling (with the batch itself) and gathering feature rows.
    pub sample_s: f64,
    pub gather_s: f64,
    /// Seconds of the preparation that added to the step's time: all of it when prepared just
    /// before the step, what the previous step's compute did not hide when prepared ahead.
    pub exposed_s: f64,
    /// Feature-cache hits and lookups of this batch's gathering.
    pub cache_hits: u64,
    pub cache_lookups: u64,
}

impl<B: Backend> PreparedBatch<B> {
    /// Refuses a batch prepared for another step: a batch prepared ahead must never be used for
    /// the wrong one (after a resume, at an epoch boundary, when items wrap around).
    pub fn check_for(&self, epoch: u64, step: u64) -> Result<()> {
        if (self.epoch, self.step) == (epoch, step) {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "internal: the batch prepared for epoch {} step {} was offered to epoch {} \
                 step {}",
                self.epoch + 1,
                self.step + 1,
                epoch + 1,
                step + 1
            )))
        }
    }
}

impl<B: Backend> BatchSource<'_, '_, B> {
    /// Prepares the batch of the local items `picked` (indices into the rank's training edges or
    /// nodes) for `(epoch, step)`. Collective: every rank calls it for the same step.
    pub fn prepare(&self, epoch: u64, step: u64, picked: &[usize]) -> Result<PreparedBatch<B>> {
        let cfg = self.cfg;
        let part = self.graph.part;
        let t0 = Instant::now();
        let batch = match cfg.task {
            Task::LinkPrediction => Batch::links(
                part,
                picked,
                cfg.negatives_per_positive,
                cfg.seed,
                epoch,
                step,
            ),
            Task::NodeClassification => Batch::nodes(part, picked),
        };
        // The block chain where the device holds the whole graph; else hop by hop through the
        // owners (with the device sampling the owned nodes where it can).
        let chained = match self.part_sampler {
            Some(local) => local.sample_blocks(self.sampler, &batch.seeds, epoch, step)?,
            None => None,
        };
        let (blocks, device_blocks) = match chained {
            Some(s) => (s.blocks, Some(s.device)),
            None => {
                let blocks = match self.part_sampler {
                    Some(local) => {
                        let routed = RoutedSampler {
                            graph: self.graph,
                            local,
                        };
                        self.sampler.sample(&routed, &batch.seeds, epoch, step)?
                    }
                    None => self.sampler.sample(self.graph, &batch.seeds, epoch, step)?,
                };
                (blocks, None)
            }
        };
        let sample_s = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let features = self
            .features
            .gather(self.backend, self.graph, blocks.input_nodes())?;
        let gather_s = t1.elapsed().as_secs_f64();
        let (cache_hits, cache_lookups) = self.graph.take_cache_stats();

        // Scale so that summing over ranks gives the mean over the global batch.
        let local_items = batch.loss_items() as u64;
        let mut global = [local_items];
        self.comm.all_reduce_sum_u64(&mut global);
        Ok(PreparedBatch {
            epoch,
            step,
            batch,
            blocks,
            device_blocks,
            features,
            local_items,
            grad_scale: 1.0 / global[0].max(1) as f32,
            sample_s,
            gather_s,
            exposed_s: t0.elapsed().as_secs_f64(),
            cache_hits,
            cache_lookups,
        })
    }
}
