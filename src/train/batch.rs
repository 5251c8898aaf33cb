//! A step's batch before sampling, from the training items a rank picked for it: the seed nodes
//! (distinct, first-seen order) and what they serve — positive and negative pairs for link
//! prediction, labels for node classification — plus the epoch plan every rank agrees on (how
//! many steps, which items each step takes). The batch depends only on the items, the seed, the
//! epoch and the step, never on the parameters.

use crate::distributed::Comm;
use crate::graph::store::GraphPart;
use crate::nn::model::Task;
use crate::sample::negative::negative_targets;
use crate::sample::rng::fold;
use crate::sample::shuffle::dedup_first_seen;

/// Seeds and their pairs or labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub seeds: Vec<u64>,
    /// Positions into `seeds` of positive and negative (source, target) pairs.
    pub pos: Vec<(u32, u32)>,
    pub neg: Vec<(u32, u32)>,
    /// The class of each seed (node classification).
    pub labels: Vec<u32>,
}

impl Batch {
    /// Link prediction: the picked training edges of `part`, each with `negatives` uniform
    /// negative targets keyed by the edge (`negative_targets`).
    pub fn links(
        part: &GraphPart,
        picked: &[usize],
        negatives: usize,
        seed: u64,
        epoch: u64,
        step: u64,
    ) -> Batch {
        let edges: Vec<[u64; 2]> = picked.iter().map(|&i| part.train_edges[i]).collect();
        let keys: Vec<u64> = edges.iter().map(|e| fold(e[0], e[1])).collect();
        let k = negatives;
        let negs = negative_targets(seed, epoch, step, &keys, k, part.meta.num_nodes);
        let mut endpoints = Vec::with_capacity(edges.len() * (2 + k));
        for e in &edges {
            endpoints.push(e[0]);
            endpoints.push(e[1]);
        }
        endpoints.extend_from_slice(&negs);
        let (seeds, at) = dedup_first_seen(&endpoints);
        let m = edges.len();
        Batch {
            seeds,
            pos: (0..m).map(|i| (at[2 * i], at[2 * i + 1])).collect(),
            neg: (0..m * k)
                .map(|j| (at[2 * (j / k)], at[2 * m + j]))
                .collect(),
            labels: Vec::new(),
        }
    }

    /// Node classification: the picked training nodes of `part` and their labels.
    pub fn nodes(part: &GraphPart, picked: &[usize]) -> Batch {
        let nodes: Vec<u64> = picked.iter().map(|&i| part.train_idx[i]).collect();
        let (seeds, _) = dedup_first_seen(&nodes);
        let label_of = |id: u64| -> u32 {
            part.label
                .as_ref()
                .map(|l| l[(id - part.first_node()) as usize] as u32)
                .unwrap_or(0)
        };
        let labels = seeds.iter().map(|&s| label_of(s)).collect();
        Batch {
            seeds,
            labels,
            ..Batch::default()
        }
    }

    /// Items in the loss: pairs or labelled nodes.
    pub fn loss_items(&self) -> usize {
        self.pos.len() + self.neg.len() + self.labels.len()
    }
}

/// Training items this rank owns: edge keys for link prediction, node ids for node
/// classification (the keys of the epoch order).
pub fn local_items(part: &GraphPart, task: Task) -> Vec<u64> {
    match task {
        Task::LinkPrediction => part.train_edges.iter().map(|e| fold(e[0], e[1])).collect(),
        Task::NodeClassification => part.train_idx.clone(),
    }
}

/// How one epoch runs on this rank: the number of steps (agreed by all ranks) and this rank's
/// share of each step's global batch, drawn from its own items in the epoch's order.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    pub steps: u64,
    local_batch: usize,
}

impl EpochPlan {
    /// Every rank calls this (one collective): the longest rank's pass, capped by `max_steps`
    /// when that is not 0. A rank with fewer items wraps around, so no rank leaves early.
    pub fn agree(comm: &Comm, local_items: usize, batch_size: usize, max_steps: u64) -> EpochPlan {
        let (w, r) = (comm.size(), comm.rank());
        let local_batch = batch_size / w + usize::from(r < batch_size % w);
        let mine = local_items.div_ceil(local_batch.max(1)) as u64;
        let mut v = [mine];
        comm.all_reduce_max_u64(&mut v);
        let mut steps = v[0].max(1);
        if max_steps > 0 {
            steps = steps.min(max_steps);
        }
        EpochPlan { steps, local_batch }
    }

    /// The items (indices into this rank's items) of `step`, from the epoch's `order`.
    pub fn pick(&self, order: &[usize], step: u64) -> Vec<usize> {
        if order.is_empty() {
            return Vec::new();
        }
        let lb = self.local_batch;
        (0..lb)
            .map(|i| order[(step as usize * lb + i) % order.len()])
            .collect()
    }
}
