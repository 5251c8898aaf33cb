//! Building a block's index arrays in parallel: relabelling sampled neighbours to source
//! positions (new nodes appended in first-seen order) and the reverse index by source.
//!
//! Both give exactly what the obvious one-thread loops give (a hash-map insert per edge; a
//! counting sort in edge order), for any thread count: the relabelling sorts the misses by
//! (id, edge) to find each new node's first edge, then orders the new nodes by that edge; the
//! reverse index counts per chunk of edges and lays the chunks out in edge order. Small inputs
//! take the one-thread loops, where threads cost more than they save.

use rayon::prelude::*;

use crate::nodemap::NodeMap;

/// Inputs below this many edges are built on one thread.
pub const PARALLEL_MIN_EDGES: usize = 32 * 1024;

/// A slice that parallel tasks write at disjoint positions.
struct DisjointWrites<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: used only where every position is written by at most one task (stated at each use),
// so no two threads touch the same element; `T: Send` values cross threads by value.
unsafe impl<T: Send> Sync for DisjointWrites<T> {}

impl<T> DisjointWrites<T> {
    fn new(slice: &mut [T]) -> Self {
        DisjointWrites {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
        }
    }
    /// # Safety
    /// No other task writes or reads position `i` while the writer lives.
    unsafe fn write(&self, i: usize, v: T) {
        assert!(i < self.len, "disjoint write out of range");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { self.ptr.add(i).write(v) }
    }
}

/// Relabels `nbrs` to positions in `src_nodes`: a node already there (`pos` maps every node
/// of `src_nodes` to its position) keeps its position; a new node is appended to `src_nodes`
/// (and to `pos`) in the order of its first occurrence in `nbrs`. Returns the position of each
/// neighbour.
pub fn relabel(pos: &mut NodeMap<u32>, src_nodes: &mut Vec<u64>, nbrs: &[u64]) -> Vec<u32> {
    if nbrs.len() < PARALLEL_MIN_EDGES || rayon::current_num_threads() == 1 {
        return relabel_sequential(pos, src_nodes, nbrs);
    }
    const MISS: u32 = u32::MAX;
    let mut indices: Vec<u32> = nbrs
        .par_iter()
        .map(|n| pos.get(n).copied().unwrap_or(MISS))
        .collect();
    // The misses as (id, edge), sorted: each id's group starts with its first edge.
    let mut misses: Vec<(u64, u32)> = indices
        .par_iter()
        .enumerate()
        .filter(|(_, &p)| p == MISS)
        .map(|(e, _)| (nbrs[e], e as u32))
        .collect();
    if misses.is_empty() {
        return indices;
    }
    misses.par_sort_unstable();
    let group_starts: Vec<u32> = (0..misses.len())
        .into_par_iter()
        .filter(|&i| i == 0 || misses[i - 1].0 != misses[i].0)
        .map(|i| i as u32)
        .collect();
    // New nodes in first-seen order: groups sorted by their first edge.
    let mut by_first_edge: Vec<(u32, u32)> = group_starts
        .par_iter()
        .enumerate()
        .map(|(g, &start)| (misses[start as usize].1, g as u32))
        .collect();
    by_first_edge.par_sort_unstable();
    let mut rank = vec![0u32; group_starts.len()];
    {
        let out = DisjointWrites::new(&mut rank);
        by_first_edge
            .par_iter()
            .enumerate()
            .for_each(|(r, &(_, g))| {
                // SAFETY: every group appears once in `by_first_edge`.
                unsafe { out.write(g as usize, r as u32) }
            });
    }
    let first_new = src_nodes.len() as u32;
    {
        let out = DisjointWrites::new(&mut indices);
        group_starts.par_iter().enumerate().for_each(|(g, &start)| {
            let end = group_starts
                .get(g + 1)
                .map_or(misses.len(), |&s| s as usize);
            let p = first_new + rank[g];
            for &(_, e) in &misses[start as usize..end] {
                // SAFETY: each edge id is in exactly one group.
                unsafe { out.write(e as usize, p) }
            }
        });
    }
    src_nodes.reserve(by_first_edge.len());
    pos.reserve(by_first_edge.len());
    for (r, &(first_edge, _)) in by_first_edge.iter().enumerate() {
        let n = nbrs[first_edge as usize];
        src_nodes.push(n);
        pos.insert(n, first_new + r as u32);
    }
    indices
}

/// The one-thread relabelling: a hash-map lookup or insert per neighbour.
pub fn relabel_sequential(
    pos: &mut NodeMap<u32>,
    src_nodes: &mut Vec<u64>,
    nbrs: &[u64],
) -> Vec<u32> {
    let mut indices = Vec::with_capacity(nbrs.len());
    for &n in nbrs {
        let next = src_nodes.len() as u32;
        let p = *pos.entry(n).or_insert(next);
        if p == next {
            src_nodes.push(n);
        }
        indices.push(p);
    }
    indices
}

/// The reverse index of a checked CSR (`indptr` a prefix sum of `indices`, every source below
/// `num_src`): `(rev_indptr, rev_edges, edge_dst)`, the edge ids of each source ascending.
pub fn reverse_index_unchecked(
    num_src: usize,
    indptr: &[u32],
    indices: &[u32],
) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let num_edges = indices.len();
    let num_dst = indptr.len() - 1;
    let mut edge_dst = vec![0u32; num_edges];
    let threads = rayon::current_num_threads();
    if num_edges < PARALLEL_MIN_EDGES || threads == 1 {
        let mut rev_indptr = vec![0u32; num_src + 1];
        for &u in indices {
            rev_indptr[u as usize + 1] += 1;
        }
        for i in 0..num_src {
            rev_indptr[i + 1] += rev_indptr[i];
        }
        let mut fill = rev_indptr.clone();
        let mut rev_edges = vec![0u32; num_edges];
        for v in 0..num_dst {
            for e in indptr[v]..indptr[v + 1] {
                let u = indices[e as usize] as usize;
                rev_edges[fill[u] as usize] = e;
                fill[u] += 1;
                edge_dst[e as usize] = v as u32;
            }
        }
        return (rev_indptr, rev_edges, edge_dst);
    }
    // Chunks of whole destinations with about the same number of edges each, in edge order.
    let chunks = threads * 4;
    let mut bounds = vec![0usize];
    for c in 1..chunks {
        let target = (num_edges * c / chunks) as u32;
        let v = indptr.partition_point(|&x| x < target).min(num_dst);
        if v > *bounds.last().unwrap_or(&0) {
            bounds.push(v);
        }
    }
    bounds.push(num_dst);
    bounds.dedup();
    let ranges: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    // Per chunk, the count of edges per source.
    let counts: Vec<Vec<u32>> = ranges
        .par_iter()
        .map(|&(v0, v1)| {
            let mut c = vec![0u32; num_src];
            for &u in &indices[indptr[v0] as usize..indptr[v1] as usize] {
                c[u as usize] += 1;
            }
            c
        })
        .collect();
    // Each chunk's first slot per source: the source's start plus the earlier chunks' counts.
    // Two passes over ranges of sources: their totals, then (after a prefix over the ranges)
    // the slots.
    let src_ranges: Vec<(usize, usize)> = {
        let per = num_src.div_ceil(chunks).max(1);
        (0..num_src.div_ceil(per))
            .map(|r| (r * per, ((r + 1) * per).min(num_src)))
            .collect()
    };
    let range_totals: Vec<u32> = src_ranges
        .par_iter()
        .map(|&(u0, u1)| counts.iter().map(|c| c[u0..u1].iter().sum::<u32>()).sum())
        .collect();
    let mut range_starts = Vec::with_capacity(src_ranges.len());
    let mut acc = 0u32;
    for t in &range_totals {
        range_starts.push(acc);
        acc += t;
    }
    let mut rev_indptr = vec![0u32; num_src + 1];
    rev_indptr[num_src] = acc;
    let mut starts: Vec<Vec<u32>> = vec![vec![0u32; num_src]; ranges.len()];
    {
        let indptr_out = DisjointWrites::new(&mut rev_indptr);
        let start_out: Vec<DisjointWrites<u32>> =
            starts.iter_mut().map(|s| DisjointWrites::new(s)).collect();
        src_ranges
            .par_iter()
            .zip(range_starts.par_iter())
            .for_each(|(&(u0, u1), &first)| {
                let mut acc = first;
                for u in u0..u1 {
                    // SAFETY: source ranges are disjoint, so position `u` of every array
                    // belongs to this task alone.
                    unsafe { indptr_out.write(u, acc) };
                    for (k, c) in counts.iter().enumerate() {
                        unsafe { start_out[k].write(u, acc) };
                        acc += c[u];
                    }
                }
            });
    }
    let mut rev_edges = vec![0u32; num_edges];
    {
        let rev = DisjointWrites::new(&mut rev_edges);
        let dst = DisjointWrites::new(&mut edge_dst);
        ranges
            .par_iter()
            .zip(starts.par_iter_mut())
            .for_each(|(&(v0, v1), fill)| {
                for v in v0..v1 {
                    for e in indptr[v]..indptr[v + 1] {
                        let u = indices[e as usize] as usize;
                        // SAFETY: the slots `fill[u]..` of this chunk are its own (the chunks'
                        // counts lay them out apart), and edge `e` lies in this chunk only.
                        unsafe {
                            rev.write(fill[u] as usize, e);
                            dst.write(e as usize, v as u32);
                        }
                        fill[u] += 1;
                    }
                }
            });
    }
    (rev_indptr, rev_edges, edge_dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::rng::{below, hash};

    fn random_ids(n: usize, universe: u64, salt: u64) -> Vec<u64> {
        (0..n as u64)
            .map(|i| below(hash(3, salt, 0, 0, i, 0), universe))
            .collect()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn parallel_relabelling_equals_the_one_thread_loop() {
        // Many duplicates (small universe), few (large), none new, and below the threshold.
        for (edges, universe, prefix) in [
            (200_000usize, 5_000u64, 1_000usize),
            (100_000, 10_000_000, 3_000),
            (50_000, 2_000, 2_000),
            (1_000, 500, 10),
            (0, 10, 5),
        ] {
            let nbrs = random_ids(edges, universe, universe);
            let mut prefix_nodes: Vec<u64> = (0..prefix as u64).map(|i| i * 7 % universe).collect();
            prefix_nodes.sort_unstable();
            prefix_nodes.dedup();
            let map: NodeMap<u32> = prefix_nodes
                .iter()
                .enumerate()
                .map(|(i, &n)| (n, i as u32))
                .collect();
            let (mut pos_a, mut src_a) = (map.clone(), prefix_nodes.clone());
            let want = relabel_sequential(&mut pos_a, &mut src_a, &nbrs);
            for threads in [2, 3, 8] {
                let (mut pos_b, mut src_b) = (map.clone(), prefix_nodes.clone());
                let got = pool(threads).install(|| relabel(&mut pos_b, &mut src_b, &nbrs));
                assert_eq!(got, want, "{edges} edges, {threads} threads");
                assert_eq!(src_b, src_a);
                assert_eq!(pos_b, pos_a);
            }
        }
    }

    #[test]
    fn parallel_reverse_index_equals_the_counting_sort() {
        // Destinations of degree 0 and of very high degree, sources never used.
        for (num_dst, num_src, salt) in [(20_000usize, 60_000usize, 1u64), (5_000, 100_000, 2)] {
            let mut indptr = vec![0u32];
            let mut indices = Vec::new();
            for v in 0..num_dst as u64 {
                let deg = match v % 7 {
                    0 => 0,
                    1 => 40,
                    _ => below(hash(4, salt, 0, 0, v, 0), 12),
                };
                for k in 0..deg {
                    indices.push(below(hash(5, salt, 0, 0, v, k), num_src as u64 / 2) as u32);
                }
                indptr.push(indices.len() as u32);
            }
            assert!(indices.len() >= PARALLEL_MIN_EDGES);
            let want = pool(1).install(|| reverse_index_unchecked(num_src, &indptr, &indices));
            for threads in [2, 5] {
                let got =
                    pool(threads).install(|| reverse_index_unchecked(num_src, &indptr, &indices));
                assert_eq!(got, want, "{threads} threads");
            }
        }
    }
}
