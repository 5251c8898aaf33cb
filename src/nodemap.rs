//! Hash maps keyed by global node id (block relabelling, batch deduplication, the sampler's
//! per-batch memory, inference's halo index). Ids are spread by the counter-based mix already, so
//! the hasher is one mix instead of SipHash, which is slow on these hot paths.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::sample::rng::mix64;

/// A hasher for node ids (already well spread by the mix; SipHash is slow on the hot path).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix64(v);
    }
}

/// A map keyed by global node id.
pub type NodeMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
