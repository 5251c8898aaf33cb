//! Sampling: counter-based randomness (`rng`), uniform neighbour sampling into per-layer blocks
//! (`neighbor`, `block`), negative sampling (`negative`) and the epoch order of training edges
//! (`shuffle`).
//!
//! Every random choice here is a pure function of `(seed, epoch, step, purpose, id, k)`, so the
//! same batch yields the same blocks on any rank, at any world size and thread count.

pub mod block;
pub mod negative;
pub mod neighbor;
pub mod relabel;
pub mod rng;
pub mod shuffle;

pub use block::{Block, SampledBlocks};
pub use negative::negative_targets;
pub use neighbor::{
    sample_count, sample_node, LocalCsr, NeighborSampler, NeighborSource, SamplingRule,
};
pub use shuffle::{dedup_first_seen, epoch_permutation};
