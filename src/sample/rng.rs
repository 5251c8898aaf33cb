//! Counter-based randomness: every random choice is a pure function of
//! `(seed, epoch, step, purpose, id, k)`.
//!
//! There is no generator state to carry, share or checkpoint: the same node in the same batch gets
//! the same sample on any rank, at any world size, on the CPU or on the GPU (the CUDA kernels in
//! `kernels/common.cuh` implement the identical mix). The mix is SplitMix64's finaliser applied
//! once per counter word, so a prefix can be computed once and reused (`Stream`).

/// Odd constant added before each mix so that zero words still change the state.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finaliser: a bijective 64-bit mix with full avalanche.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds one counter word into a hash state.
#[inline(always)]
pub fn fold(state: u64, word: u64) -> u64 {
    mix64(state ^ word.wrapping_add(GOLDEN))
}

/// What a random number is for; part of the counter so that different uses never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// Neighbour sampling; the layer index is added (`NeighborSample as u64 + layer`).
    NeighborSample = 0x100,
    /// Negative targets for training edges.
    NegativeTrain = 0x200,
    /// Dropout masks; the layer index is added.
    Dropout = 0x300,
    /// Shuffling the order of training edges in an epoch.
    Shuffle = 0x400,
    /// Parameter initialisation; the tensor index is added.
    Init = 0x500,
    /// Dataset splits and fixed evaluation negatives (ingest time).
    Split = 0x600,
    /// Graph generation.
    Generate = 0x700,
    /// Random node features for graphs that have none.
    Features = 0x800,
    /// Partitioning by hash.
    Partition = 0x900,
    /// Random-walk steps (candidate and acceptance draws of every trial).
    Walk = 0xA00,
}

/// `hash(seed, epoch, step, purpose, id, k)`: the one random function of the program.
#[inline(always)]
pub fn hash(seed: u64, epoch: u64, step: u64, purpose: u64, id: u64, k: u64) -> u64 {
    Stream::new(seed, epoch, step, purpose).at(id, k)
}

/// A counter prefix `(seed, epoch, step, purpose)` folded once, for drawing many numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    state: u64,
}

impl Stream {
    #[inline(always)]
    pub fn new(seed: u64, epoch: u64, step: u64, purpose: u64) -> Self {
        let s = fold(fold(fold(fold(GOLDEN, seed), epoch), step), purpose);
        Stream { state: s }
    }
    /// The prefix extended with an id, for drawing `k = 0, 1, ...` for that id.
    #[inline(always)]
    pub fn for_id(self, id: u64) -> IdStream {
        IdStream {
            state: fold(self.state, id),
        }
    }
    #[inline(always)]
    pub fn at(self, id: u64, k: u64) -> u64 {
        self.for_id(id).at(k)
    }
    /// The folded prefix itself, `fold(fold(fold(fold(GOLDEN, seed), epoch), step), purpose)`:
    /// what the device hash kernels take in place of the four words (they compute
    /// `fold(fold(state, id), k)`, which is `at(id, k)`).
    #[inline(always)]
    pub fn state(self) -> u64 {
        self.state
    }
}

/// A counter prefix `(seed, epoch, step, purpose, id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdStream {
    state: u64,
}

impl IdStream {
    #[inline(always)]
    pub fn at(self, k: u64) -> u64 {
        fold(self.state, k)
    }
    /// A uniform integer in `[0, n)` (Lemire's multiply-high; bias below 2^-32 for n < 2^32).
    #[inline(always)]
    pub fn below(self, k: u64, n: u64) -> u64 {
        below(self.at(k), n)
    }
    /// A uniform f32 in `[0, 1)` from the top 24 bits.
    #[inline(always)]
    pub fn unit_f32(self, k: u64) -> f32 {
        unit_f32(self.at(k))
    }
}

/// Maps a 64-bit hash to `[0, n)` by the high word of `(h >> 32) * n` for n < 2^32, else modulo.
#[inline(always)]
pub fn below(h: u64, n: u64) -> u64 {
    if n <= u32::MAX as u64 {
        ((h >> 32) * n) >> 32
    } else {
        h % n
    }
}

/// Maps a 64-bit hash to a uniform f32 in `[0, 1)`.
#[inline(always)]
pub fn unit_f32(h: u64) -> f32 {
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A standard normal deviate from two hashes (Box-Muller).
pub fn normal(h1: u64, h2: u64) -> f32 {
    let u1 = ((h1 >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // (0, 1]
    let u2 = (h2 >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Floyd's algorithm: `k` distinct positions out of `0..n` (k < n), ascending.
///
/// Used by the neighbour sampler on the CPU and, with the same draws, by the CUDA sampling kernel:
/// for `j` in `n-k .. n`, draw `t = below(hash(.., j), j + 1)`; take `t` unless already taken, then
/// take `j`.
pub fn floyd_sample(ids: IdStream, n: u64, k: usize, out: &mut Vec<u64>) {
    out.clear();
    debug_assert!((k as u64) < n);
    for j in (n - k as u64)..n {
        let t = ids.below(j, j + 1);
        if out.contains(&t) {
            out.push(j);
        } else {
            out.push(t);
        }
    }
    out.sort_unstable();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_a_pure_function_of_its_counters() {
        let a = hash(1, 2, 3, 4, 5, 6);
        assert_eq!(a, hash(1, 2, 3, 4, 5, 6));
        assert_ne!(a, hash(1, 2, 3, 4, 5, 7));
        assert_ne!(a, hash(2, 2, 3, 4, 5, 6));
        assert_eq!(Stream::new(1, 2, 3, 4).for_id(5).at(6), a);
    }

    #[test]
    fn the_folded_state_reproduces_hash() {
        for (seed, epoch, step) in [(0, 0, 0), (42, 3, 17), (u64::MAX, 9, 1 << 40)] {
            let purpose = Purpose::NeighborSample as u64 + 2;
            let state = Stream::new(seed, epoch, step, purpose).state();
            assert_eq!(
                state,
                fold(fold(fold(fold(GOLDEN, seed), epoch), step), purpose)
            );
            assert_eq!(
                fold(fold(state, 77), 5),
                hash(seed, epoch, step, purpose, 77, 5)
            );
        }
    }

    #[test]
    fn floyd_gives_distinct_sorted_positions_and_covers_all() {
        let mut out = Vec::new();
        let mut seen = vec![0u32; 20];
        for id in 0..2000 {
            let s = Stream::new(7, 0, 0, Purpose::NeighborSample as u64).for_id(id);
            floyd_sample(s, 20, 5, &mut out);
            assert_eq!(out.len(), 5);
            assert!(out.windows(2).all(|w| w[0] < w[1]));
            for &p in &out {
                seen[p as usize] += 1;
            }
        }
        // Each position is chosen with probability 5/20: about 500 times in 2000 draws.
        for &c in &seen {
            assert!((400..600).contains(&c), "position counts {seen:?}");
        }
    }

    #[test]
    fn below_and_unit_are_in_range() {
        for i in 0..10_000u64 {
            let h = mix64(i);
            assert!(below(h, 7) < 7);
            let u = unit_f32(h);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
