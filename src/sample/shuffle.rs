//! The order of training items in an epoch, and the batch helpers that go with it.
//!
//! The permutation is a sort by `hash(seed, epoch, 0, Shuffle, global id, 0)`, so it depends only
//! on the items' global ids: the same edge lands in the same place on any rank.

use crate::nodemap::NodeMap;
use crate::sample::rng::{Purpose, Stream};

/// A permutation of `0..global_ids.len()`: local indices sorted by
/// `(hash(seed, epoch, 0, Shuffle, global_ids[i], 0), global_ids[i], i)`.
pub fn epoch_permutation(seed: u64, epoch: u64, global_ids: &[u64]) -> Vec<usize> {
    let stream = Stream::new(seed, epoch, 0, Purpose::Shuffle as u64);
    let mut keyed: Vec<(u64, u64, usize)> = global_ids
        .iter()
        .enumerate()
        .map(|(i, &g)| (stream.at(g, 0), g, i))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// Distinct ids in first-seen order, and the position of each input id among them. Turns the
/// endpoints of a batch of pairs into sampler seeds plus pair positions.
pub fn dedup_first_seen(ids: &[u64]) -> (Vec<u64>, Vec<u32>) {
    let mut pos: NodeMap<u32> = NodeMap::default();
    pos.reserve(ids.len());
    let mut unique = Vec::new();
    let positions = ids
        .iter()
        .map(|&id| {
            let next = unique.len() as u32;
            let p = *pos.entry(id).or_insert(next);
            if p == next {
                unique.push(id);
            }
            p
        })
        .collect();
    (unique, positions)
}
