//! Negative targets for training edges: uniform over all nodes, by hash.
//!
//! Keyed by `(seed, epoch, step, global edge id, k)` under `Purpose::NegativeTrain`, so an edge's
//! negatives do not depend on which rank trains it or on the world size.

use crate::sample::rng::{Purpose, Stream};

/// `per_positive` uniform negative targets in `[0, num_nodes)` for each edge of `edge_ids`
/// (global edge ids), row-major `[edge_ids.len(), per_positive]`:
/// `below(hash(seed, epoch, step, NegativeTrain, edge_id, k), num_nodes)`.
pub fn negative_targets(
    seed: u64,
    epoch: u64,
    step: u64,
    edge_ids: &[u64],
    per_positive: usize,
    num_nodes: u64,
) -> Vec<u64> {
    let stream = Stream::new(seed, epoch, step, Purpose::NegativeTrain as u64);
    let mut out = Vec::with_capacity(edge_ids.len() * per_positive);
    for &e in edge_ids {
        let ids = stream.for_id(e);
        for k in 0..per_positive {
            out.push(ids.below(k as u64, num_nodes));
        }
    }
    out
}
