//! node2vec's checkpoints: every rank's share of the two tables and the next round to train, in
//! the checkpoint format GraphSAGE uses (`.ssck`: atomic, checksummed, without Adam's moments),
//! one directory per rank (`rank-00000/ckpt-<rounds done>.ssck`, the last two kept).
//!
//! Ranks write at the same round ends (the decision is agreed), so a set is complete when every
//! rank has the same `<rounds done>`; resuming picks the newest round every rank has intact.

use std::path::{Path, PathBuf};

use crate::distributed::comm::Comm;
use crate::error::{Error, Result};
use crate::train::checkpoint::{Checkpoint, CheckpointDir, ParamEntry};
use crate::walk::sgns::{Embeddings, SgnsConfig, SgnsPosition};
use crate::walk::WalkConfig;

/// Checkpoints kept per rank: the newest set may be incomplete when a job dies mid-write.
const KEEP_LAST: usize = 2;

/// The bits of a checkpoint's global step that hold the episode within a round.
const EPISODE_MASK: u64 = (1 << 32) - 1;

/// One rank's checkpoint directory for a run.
pub struct Node2vecCheckpoints {
    dir: CheckpointDir,
    /// What a checkpoint must match to be resumed from.
    config: serde_json::Value,
    fingerprint: String,
    world_size: usize,
    rounds_per_epoch: usize,
}

impl Node2vecCheckpoints {
    pub fn new(
        root: &Path,
        comm: &Comm,
        walk: &WalkConfig,
        sgns: &SgnsConfig,
        fingerprint: &str,
    ) -> Result<Self> {
        let dir = CheckpointDir::new(rank_dir(root, comm.rank()))?;
        Ok(Node2vecCheckpoints {
            dir,
            // "position" marks files whose global step counts episodes within rounds (see
            // `position_key`); files from before it are refused as written with other settings.
            config: serde_json::json!({
                "node2vec": { "walk": walk, "sgns": sgns },
                "position": "round-episode",
            }),
            fingerprint: fingerprint.to_string(),
            world_size: comm.size(),
            rounds_per_epoch: walk.walks_per_node.max(1),
        })
    }

    /// Saves this rank's tables with the position a resumed run starts at.
    pub fn save(
        &self,
        next: SgnsPosition,
        input: Vec<f32>,
        output: Vec<f32>,
        dim: usize,
    ) -> Result<PathBuf> {
        let rows = input.len() / dim.max(1);
        let layout = vec![
            ParamEntry {
                name: "input".into(),
                offset: 0,
                shape: vec![rows, dim],
            },
            ParamEntry {
                name: "output".into(),
                offset: rows * dim,
                shape: vec![rows, dim],
            },
        ];
        let mut params = input;
        params.extend_from_slice(&output);
        let ckpt = Checkpoint {
            params,
            adam_m: Vec::new(),
            adam_v: Vec::new(),
            adam_t: 0,
            epoch: next.epoch as u64,
            step: next.round as u64,
            global_step: self.position_key(next),
            config: self.config.clone(),
            dataset_fingerprint: self.fingerprint.clone(),
            layout,
            best_metric: None,
            world_size: self.world_size,
        };
        self.dir.save(&ckpt, KEEP_LAST)
    }

    /// The newest checkpoint set every rank has intact, loaded into `emb`, and its position;
    /// `None` (a fresh start) when some rank has none. A collective.
    pub fn resume(&self, comm: &Comm, emb: &mut Embeddings) -> Result<Option<SgnsPosition>> {
        let latest = self.dir.latest_good()?;
        let mine = latest.as_ref().map_or(0, |(_, c)| c.global_step + 1);
        let mut agreed = [mine];
        comm.all_reduce_min_u64(&mut agreed);
        if agreed[0] == 0 {
            if mine > 0 {
                log::warn!(
                    "[r{}] another rank has no intact checkpoint: starting afresh",
                    comm.rank()
                );
            }
            return Ok(None);
        }
        let step = agreed[0] - 1;
        let (path, ckpt) = match latest {
            Some((path, ckpt)) if ckpt.global_step == step => (path, ckpt),
            _ => {
                let path = self.dir.path_for(step);
                let ckpt = Checkpoint::load(&path)?;
                (path, ckpt)
            }
        };
        self.check(&path, &ckpt, emb)?;
        let half = ckpt.params.len() / 2;
        emb.input.copy_from_slice(&ckpt.params[..half]);
        emb.output.copy_from_slice(&ckpt.params[half..]);
        log::info!("resumed from {}", path.display());
        let next = SgnsPosition {
            epoch: ckpt.epoch as usize,
            round: ckpt.step as usize,
            episode: (ckpt.global_step & EPISODE_MASK) as usize,
        };
        if self.position_key(next) != ckpt.global_step {
            return Err(Error::invalid(
                &path,
                format!(
                    "its position (epoch {}, round {}) does not match its step {}",
                    ckpt.epoch, ckpt.step, ckpt.global_step
                ),
            ));
        }
        Ok(Some(next))
    }

    /// The checkpoint's global step: rounds done, then the episode within the next round in
    /// the low 32 bits, so that later positions sort later.
    fn position_key(&self, at: SgnsPosition) -> u64 {
        (((at.epoch * self.rounds_per_epoch + at.round) as u64) << 32) | at.episode as u64
    }

    fn check(&self, path: &Path, ckpt: &Checkpoint, emb: &Embeddings) -> Result<()> {
        let refuse = |what: String| Err(Error::invalid(path, what));
        if ckpt.dataset_fingerprint != self.fingerprint {
            return refuse("written for another dataset (fingerprints differ)".into());
        }
        if ckpt.world_size != self.world_size {
            return refuse(format!(
                "written by {} ranks; this run has {} (node2vec's schedule depends on it)",
                ckpt.world_size, self.world_size
            ));
        }
        if ckpt.config != self.config {
            return refuse(format!(
                "written with other settings: {} (this run: {})",
                ckpt.config, self.config
            ));
        }
        if ckpt.params.len() != emb.input.len() + emb.output.len() {
            return refuse(format!(
                "holds {} values; this rank's tables have {}",
                ckpt.params.len(),
                emb.input.len() + emb.output.len()
            ));
        }
        Ok(())
    }
}

/// Where rank `rank` keeps its checkpoints under `root`.
pub fn rank_dir(root: &Path, rank: usize) -> PathBuf {
    root.join(format!("rank-{rank:05}"))
}
