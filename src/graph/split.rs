//! Dataset splits decided at ingest time: which edges are held out for validation and test
//! (temporal as ogbl-citation2 does it, or random per source), the fixed negative targets of every
//! held-out edge, and seeded node-classification splits.
//!
//! Every choice is a pure function of `(seed, purpose, id, k)` through `sample::rng`, so the same
//! input and seed give the same split on any machine and with any thread count. Nothing here reads
//! files or knows about HDF5; `build` calls these on cleaned, sorted edges.

use rayon::prelude::*;

use crate::sample::rng::{IdStream, Purpose, Stream};

/// Sub-purposes of `Purpose::Split`, carried in the `step` word of the counter so that the
/// different decisions made at ingest time never share random numbers.
mod sub {
    pub const TEMPORAL: u64 = 1;
    pub const RANDOM: u64 = 2;
    pub const VALID_NEG: u64 = 3;
    pub const TEST_NEG: u64 = 4;
    pub const NODE_SPLIT: u64 = 5;
}

/// What happens to one cleaned edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EdgeRole {
    Train = 0,
    Valid = 1,
    Test = 2,
}

fn stream(seed: u64, sub: u64) -> Stream {
    Stream::new(seed, 0, sub, Purpose::Split as u64)
}

/// Calls `f(source, first, end)` for every run of equal sources in `edges` (sorted by source).
fn for_each_source(edges: &[[u32; 2]], mut f: impl FnMut(u32, usize, usize)) {
    let mut start = 0;
    while start < edges.len() {
        let s = edges[start][0];
        let mut end = start + 1;
        while end < edges.len() && edges[end][0] == s {
            end += 1;
        }
        f(s, start, end);
        start = end;
    }
}

/// Orders the edges `first..end` of one source by a hash of their target (ties, which need a
/// 64-bit collision, by target): the first ones in this order are the held-out ones.
fn hash_order(
    ids: IdStream,
    edges: &[[u32; 2]],
    first: usize,
    end: usize,
    out: &mut Vec<(u64, usize)>,
) {
    out.clear();
    out.extend((first..end).map(|i| (ids.at(edges[i][1] as u64), i)));
    out.sort_unstable();
}

/// Temporal split (ogbl-citation2): every source whose time is the latest time value and that has
/// at least two out-edges holds out one edge for validation and another for test, chosen by hash.
///
/// `edges` must be sorted by source; `time` has one value per node.
pub fn temporal_roles(edges: &[[u32; 2]], time: &[i64], seed: u64) -> Vec<EdgeRole> {
    let mut roles = vec![EdgeRole::Train; edges.len()];
    let Some(&latest) = time.iter().max() else {
        return roles;
    };
    let st = stream(seed, sub::TEMPORAL);
    let mut order = Vec::new();
    for_each_source(edges, |s, first, end| {
        if time[s as usize] != latest || end - first < 2 {
            return;
        }
        hash_order(st.for_id(s as u64), edges, first, end, &mut order);
        roles[order[0].1] = EdgeRole::Valid;
        roles[order[1].1] = EdgeRole::Test;
    });
    roles
}

/// Rounds `x` down or up at random so that the expected value is `x` (`u` uniform in [0, 1)).
fn stochastic_round(x: f64, u: f64) -> usize {
    let floor = x.floor();
    floor as usize + usize::from(u < x - floor)
}

/// Random per-source split: every source with at least three out-edges holds out about
/// `valid_fraction` / `test_fraction` of them (stochastically rounded, so the expected share is the
/// fraction); a source that holds out any edge holds out at least one of each, and always keeps at
/// least one training edge. Which edges, by hash.
pub fn random_roles(
    edges: &[[u32; 2]],
    seed: u64,
    valid_fraction: f64,
    test_fraction: f64,
) -> Vec<EdgeRole> {
    let mut roles = vec![EdgeRole::Train; edges.len()];
    let st = stream(seed, sub::RANDOM);
    let mut order = Vec::new();
    for_each_source(edges, |s, first, end| {
        let d = end - first;
        if d < 3 {
            return;
        }
        let ids = st.for_id(s as u64);
        // Counter words above every u32 target id, so they never collide with the edge keys.
        let u_valid = ids.at(u64::MAX) as f64 / u64::MAX as f64;
        let u_test = ids.at(u64::MAX - 1) as f64 / u64::MAX as f64;
        let mut n_valid = stochastic_round(d as f64 * valid_fraction, u_valid.min(0.999_999_999));
        let mut n_test = stochastic_round(d as f64 * test_fraction, u_test.min(0.999_999_999));
        if n_valid + n_test == 0 {
            return;
        }
        n_valid = n_valid.max(1);
        n_test = n_test.max(1);
        while n_valid + n_test > d - 1 {
            if n_valid >= n_test {
                n_valid -= 1;
            } else {
                n_test -= 1;
            }
        }
        hash_order(ids, edges, first, end, &mut order);
        for &(_, i) in &order[..n_valid] {
            roles[i] = EdgeRole::Valid;
        }
        for &(_, i) in &order[n_valid..n_valid + n_test] {
            roles[i] = EdgeRole::Test;
        }
    });
    roles
}

/// The number of fixed negatives per held-out edge for a graph of `num_nodes` nodes: the requested
/// number, but at most half the nodes (there are `num_nodes - 2` candidates per edge), and none for
/// a graph too small to have a candidate.
pub fn negatives_per_edge(requested: usize, num_nodes: u64) -> usize {
    if num_nodes < 3 {
        return 0;
    }
    requested.min((num_nodes / 2).max(1) as usize)
}

/// Which held-out set negatives are drawn for (they use different random numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldOut {
    Valid,
    Test,
}

/// `k` fixed negative targets for each held-out edge, row-major `[held.len(), k]`: uniform by hash
/// over all nodes except the edge's source and positive target (with repetition, as OGB's are).
/// Row `i` depends only on `(seed, which, i)`, so the result is independent of the thread count.
pub fn fixed_negatives(
    held: &[[u32; 2]],
    num_nodes: u64,
    k: usize,
    seed: u64,
    which: HeldOut,
) -> Vec<u64> {
    let mut out = vec![0u64; held.len() * k];
    if k == 0 || num_nodes < 3 {
        return out;
    }
    let st = stream(
        seed,
        match which {
            HeldOut::Valid => sub::VALID_NEG,
            HeldOut::Test => sub::TEST_NEG,
        },
    );
    out.par_chunks_mut(k)
        .zip(held.par_iter())
        .enumerate()
        .for_each(|(i, (row, e))| {
            let ids = st.for_id(i as u64);
            let (a, b) = (e[0].min(e[1]) as u64, e[0].max(e[1]) as u64);
            // Draw from the `num_nodes - 2` others (one fewer when a given edge is a self-loop) and
            // step over the excluded ids in ascending order.
            let excluded = if a == b { 1 } else { 2 };
            for (j, slot) in row.iter_mut().enumerate() {
                let mut v = ids.below(j as u64, num_nodes - excluded);
                if v >= a {
                    v += 1;
                }
                if excluded == 2 && v >= b {
                    v += 1;
                }
                *slot = v;
            }
        });
    out
}

/// Seeded node-classification split: nodes shuffled by hash, then cut by `fractions` (train,
/// valid, test). When the fractions sum to one, test takes every remaining node, so no node is
/// lost to rounding; each node is in at most one set. Each set is returned sorted ascending.
pub fn node_split(num_nodes: u64, fractions: [f64; 3], seed: u64) -> [Vec<u64>; 3] {
    let st = stream(seed, sub::NODE_SPLIT);
    let mut order: Vec<(u64, u64)> = (0..num_nodes)
        .into_par_iter()
        .map(|i| (st.at(i, 0), i))
        .collect();
    order.par_sort_unstable();
    let n = num_nodes as f64;
    let n_train = ((n * fractions[0]).round() as u64).min(num_nodes);
    let n_valid = ((n * fractions[1]).round() as u64).min(num_nodes - n_train);
    let sum: f64 = fractions.iter().sum();
    let n_test = if (sum - 1.0).abs() < 1e-9 {
        num_nodes - n_train - n_valid
    } else {
        ((n * fractions[2]).round() as u64).min(num_nodes - n_train - n_valid)
    };
    let take = |from: u64, len: u64| {
        let mut v: Vec<u64> = order[from as usize..(from + len) as usize]
            .iter()
            .map(|p| p.1)
            .collect();
        v.sort_unstable();
        v
    };
    [
        take(0, n_train),
        take(n_train, n_valid),
        take(n_train + n_valid, n_test),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn star(sources: u32, per: u32) -> Vec<[u32; 2]> {
        let mut e = Vec::new();
        for s in 0..sources {
            for t in 0..per {
                e.push([s, sources + t]);
            }
        }
        e
    }

    #[test]
    fn temporal_holds_out_one_of_each_per_latest_source() {
        let edges = star(4, 5);
        let mut time = vec![2000i64; 9];
        time[1] = 2001;
        time[3] = 2001;
        let roles = temporal_roles(&edges, &time, 7);
        for s in 0..4usize {
            let r = &roles[s * 5..(s + 1) * 5];
            let v = r.iter().filter(|&&x| x == EdgeRole::Valid).count();
            let t = r.iter().filter(|&&x| x == EdgeRole::Test).count();
            let expect = usize::from(s == 1 || s == 3);
            assert_eq!((v, t), (expect, expect), "source {s}");
        }
        assert_eq!(roles, temporal_roles(&edges, &time, 7));
        assert_ne!(roles, temporal_roles(&edges, &time, 8));
    }

    #[test]
    fn random_keeps_a_training_edge_and_both_sets_per_selected_source() {
        let edges = star(500, 3);
        let roles = random_roles(&edges, 1, 0.3, 0.3);
        let mut selected = 0;
        for r in roles.chunks(3) {
            let v = r.iter().filter(|&&x| x == EdgeRole::Valid).count();
            let t = r.iter().filter(|&&x| x == EdgeRole::Test).count();
            assert!(v + t == 0 || (v == 1 && t == 1));
            selected += usize::from(v > 0);
        }
        assert!(selected > 300, "{selected}");
    }

    #[test]
    fn negatives_exclude_the_edge_and_stay_in_range() {
        let held = vec![[0u32, 1], [5, 2], [9, 8]];
        let negs = fixed_negatives(&held, 10, 4, 3, HeldOut::Valid);
        assert_eq!(negs.len(), 12);
        for (row, e) in negs.chunks(4).zip(&held) {
            for &v in row {
                assert!(v < 10 && v != e[0] as u64 && v != e[1] as u64);
            }
        }
        assert_ne!(negs, fixed_negatives(&held, 10, 4, 3, HeldOut::Test));
    }

    #[test]
    fn node_split_partitions_all_nodes() {
        let [a, b, c] = node_split(1001, [0.6, 0.2, 0.2], 4);
        let mut all: Vec<u64> = a.iter().chain(&b).chain(&c).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1001).collect::<Vec<_>>());
        assert_eq!((a.len(), b.len()), (601, 200));
        let [a, b, c] = node_split(100, [0.1, 0.1, 0.1], 4);
        assert_eq!((a.len(), b.len(), c.len()), (10, 10, 10));
    }
}
