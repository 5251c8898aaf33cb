//! Building a block's index arrays in parallel: relabelling sampled neighbours to source
//! positions (new nodes appended in first-seen order) and the reverse index by source.
//!
//! All give exactly what the obvious one-thread loops give (a hash-map insert per edge; a
//! counting sort in edge order), for any thread count. Where the graph's node count is known
//! and bounded, the positions live in `DensePositions`, a table indexed by node id, and the
//! relabelling is one pass over the edges with a load (and, for a new node, a store) each, the
//! slots asked of the cache some edges ahead: on the ogbl-citation2-sized graph that pass takes
//! 9-11 ms per batch of 1.25M edges (AMD EPYC), where the hash-map relabelling took 40 ms at 1
//! thread and its parallel form below 74 at 2, and parallel table versions more than the pass
//! (an atomic minimum per node for its first edge and a prefix sum to number the new nodes: 48
//! ms at 2 threads; nodes spread over threads by cache line, each thread relabelling the edges
//! of its nodes and the new nodes merged by first edge: 41-44 ms, against 28-30 ms for the pass
//! before it prefetched): their extra random accesses cost more than the second core gives.
//! The pass runs on one thread while the others sample: the sampler relabels each chunk of
//! neighbour lists as soon as it and those before it are sampled (`sample_neighbors_each`).
//! Otherwise the positions are a hash map and the relabelling sorts the misses by (id, edge) to
//! find each new node's first edge, then orders the new nodes by that edge. The reverse index
//! counts per chunk of edges and lays the chunks out in edge order. Small inputs take
//! one-thread loops, where threads cost more than they save.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
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

/// Graphs with at most this many nodes keep a batch's positions in a `DensePositions` table
/// (4 bytes per node: 512 MiB at the bound); larger ones use the hash map.
pub const DENSE_MAX_NODES: u64 = 1 << 27;

/// A table slot no node of the batch holds.
const EMPTY: u32 = u32::MAX;

/// How far ahead of its edge the table relabelling asks for a slot.
const PREFETCH_EDGES: usize = 32;

/// Clean tables (every slot `EMPTY`) kept for the next batch: allocating and filling one per
/// batch would cost more than the relabelling.
static SPARE_TABLES: Mutex<Vec<Vec<AtomicU32>>> = Mutex::new(Vec::new());
const SPARE_TABLES_MAX: usize = 4;

/// The positions of one batch's sources, in a table indexed by node id (ids below `len`).
/// Leased from a pool of clean tables; `release` cleans the slots of the batch's sources and
/// returns the table. A table dropped without `release` (an error mid-batch) is freed.
pub struct DensePositions {
    slots: Vec<AtomicU32>,
    /// The node ids this batch may hold (a table from the pool can be longer).
    num_nodes: usize,
}

impl DensePositions {
    /// A clean table for node ids below `num_nodes`, or `None` above `DENSE_MAX_NODES`.
    pub fn lease(num_nodes: u64) -> Option<DensePositions> {
        if num_nodes > DENSE_MAX_NODES {
            return None;
        }
        let n = num_nodes as usize;
        let reused = SPARE_TABLES.lock().ok().and_then(|mut spare| {
            let best = (0..spare.len())
                .filter(|&i| spare[i].len() >= n)
                .min_by_key(|&i| spare[i].len())?;
            Some(spare.swap_remove(best))
        });
        let slots = reused.unwrap_or_else(|| {
            // Read at random: 2 MiB pages spare a TLB miss per edge.
            let mut slots = Vec::with_capacity(n);
            crate::util::advise_huge_pages(&slots);
            slots.extend((0..n).map(|_| AtomicU32::new(EMPTY)));
            slots
        });
        Some(DensePositions {
            slots,
            num_nodes: n,
        })
    }

    fn slot(&self, node: u64) -> Result<&AtomicU32> {
        self.slots[..self.num_nodes]
            .get(node as usize)
            .ok_or_else(|| {
                Error::Other(format!(
                    "neighbour sampling: node id {node} is outside the graph's {} nodes",
                    self.num_nodes
                ))
            })
    }

    /// Gives `nodes` the positions `first..`; a node already in the table is refused (and the
    /// slots set by this call are cleared again).
    pub fn insert_distinct(&mut self, nodes: &[u64], first: usize) -> Result<()> {
        for (i, &n) in nodes.iter().enumerate() {
            let slot = self.slot(n)?;
            if slot.load(Relaxed) != EMPTY {
                for &m in &nodes[..i] {
                    self.slots[m as usize].store(EMPTY, Relaxed);
                }
                return Err(Error::Other(format!(
                    "neighbour sampling: seed node {n} appears twice in the batch"
                )));
            }
            slot.store(position(first + i)?, Relaxed);
        }
        Ok(())
    }

    /// What `relabel` does, with this table as the map: every entry of `nbrs` gets its position
    /// in `src_nodes` (appended to `indices`), new nodes appended in first-seen order.
    ///
    /// One thread, one pass: the slot of the edge `PREFETCH_EDGES` ahead is asked of the cache
    /// before this edge's is read, so the misses overlap instead of waiting one by one behind
    /// each mispredicted "is it new" branch (28-30 -> 9-11 ms per ogbl-citation2-sized batch).
    /// A branch-free form (the position as `min(slot, next)`, every slot stored) took 33 ms:
    /// it chains each edge's load into the next edge's count.
    pub fn relabel_into(
        &self,
        src_nodes: &mut Vec<u64>,
        nbrs: &[u64],
        indices: &mut Vec<u32>,
    ) -> Result<()> {
        position(src_nodes.len() + nbrs.len())?;
        src_nodes.reserve(nbrs.len());
        indices.reserve(nbrs.len());
        for (e, &n) in nbrs.iter().enumerate() {
            if let Some(ahead) = nbrs
                .get(e + PREFETCH_EDGES)
                .and_then(|&a| self.slots.get(a as usize))
            {
                crate::util::prefetch_lines(ahead as *const AtomicU32 as *const u8, 4, true);
            }
            let slot = self.slot(n)?;
            let mut p = slot.load(Relaxed);
            if p == EMPTY {
                p = src_nodes.len() as u32;
                slot.store(p, Relaxed);
                src_nodes.push(n);
            }
            indices.push(p);
        }
        Ok(())
    }

    /// Clears the slots of `sources` (every node given a position in this batch) and returns
    /// the table to the pool.
    pub fn release(self, sources: &[u64]) {
        sources.par_iter().with_min_len(4096).for_each(|&n| {
            if let Some(slot) = self.slots.get(n as usize) {
                slot.store(EMPTY, Relaxed);
            }
        });
        debug_assert!(self.slots.iter().all(|s| s.load(Relaxed) == EMPTY));
        if let Ok(mut spare) = SPARE_TABLES.lock() {
            if spare.len() < SPARE_TABLES_MAX {
                spare.push(self.slots);
            }
        }
    }
}

/// A source position as a slot value (below `EMPTY`).
fn position(p: usize) -> Result<u32> {
    if p >= EMPTY as usize {
        return Err(Error::Other(format!(
            "neighbour sampling: {p} sources or edges in one block exceed the u32 index range"
        )));
    }
    Ok(p as u32)
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
    // Chunks of whole destinations with about the same number of edges each, in edge order; one
    // per thread, as each also costs two arrays of a count per source (a hop's block has about
    // as many sources as edges: with 4 chunks per thread the hop-1 block of a citation2-sized
    // batch took 9 ms at 2 threads against 1.2 ms on one).
    let chunks = threads;
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
    fn the_position_table_relabels_as_the_one_thread_loop() {
        for (edges, universe, prefix) in [(200_000usize, 5_000u64, 1_000usize), (1_000, 500, 10)] {
            let nbrs = random_ids(edges, universe, universe + 1);
            let mut prefix_nodes: Vec<u64> = (0..prefix as u64).map(|i| i * 7 % universe).collect();
            prefix_nodes.sort_unstable();
            prefix_nodes.dedup();
            let mut map: NodeMap<u32> = prefix_nodes
                .iter()
                .enumerate()
                .map(|(i, &n)| (n, i as u32))
                .collect();
            let mut src_a = prefix_nodes.clone();
            let want = relabel_sequential(&mut map, &mut src_a, &nbrs);
            let mut table = DensePositions::lease(universe).unwrap();
            table.insert_distinct(&prefix_nodes, 0).unwrap();
            let mut src_b = prefix_nodes.clone();
            // Appended after what the index array already holds.
            let mut got = vec![7u32];
            table.relabel_into(&mut src_b, &nbrs, &mut got).unwrap();
            assert_eq!(got[0], 7);
            assert_eq!(got[1..], want[..]);
            assert_eq!(src_b, src_a);
            // An id outside the table is an error, not a panic; release cleans every slot
            // (checked in debug builds) so the pool's next lease starts empty.
            let err = table
                .relabel_into(&mut src_b, &[universe], &mut Vec::new())
                .unwrap_err();
            assert!(err.to_string().contains("outside the graph"), "{err}");
            table.release(&src_b);
            let mut next = DensePositions::lease(universe).unwrap();
            let mut fresh = Vec::new();
            let mut got = Vec::new();
            next.relabel_into(&mut fresh, &[3, 3, 1], &mut got).unwrap();
            assert_eq!(got, vec![0, 0, 1]);
            assert!(next.insert_distinct(&[7, 8, 7], 2).is_err());
            next.release(&[3, 1]);
        }
        assert!(DensePositions::lease(DENSE_MAX_NODES + 1).is_none());
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
