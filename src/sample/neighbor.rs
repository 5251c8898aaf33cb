//! Uniform neighbour sampling into per-layer blocks.
//!
//! The per-node rule (`sample_node`) is the one rule of the program: the CPU path here and the
//! CUDA sampling kernel implement exactly it, with the same counter-based draws, so a node gets the
//! same neighbours on any rank and any backend. Where the neighbours come from is abstracted by
//! `NeighborSource`: `LocalCsr` reads a part that owns every asked node; the distributed source
//! (in `dist`) asks the owners of remote nodes with an all-to-all exchange.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::store::GraphPart;
use crate::sample::block::{Block, SampledBlocks};
use crate::sample::rng::{floyd_sample, mix64, IdStream, Purpose, Stream};

/// Something that can sample the neighbours of a list of nodes.
pub trait NeighborSource {
    /// For each node of `nodes` (global ids, in order), samples its neighbours with
    /// `sample_node(neighbors, fanout, stream.for_id(node), ..)` and appends them to `out_nbrs`;
    /// `out_counts[i]` is how many were appended for `nodes[i]`. Both outputs are cleared first.
    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()>;

    /// The sources of a block, where this source builds them better than the sampler's host
    /// hash map (e.g. on the GPU that sampled `nbrs`): `frontier` (distinct) followed by the
    /// neighbours not in it, in first-seen order, and for every entry of `nbrs` its position in
    /// those sources. `None` (the default) leaves it to the host.
    fn relabel(&self, frontier: &[u64], nbrs: &[u64]) -> Result<Option<(Vec<u64>, Vec<u32>)>> {
        let _ = (frontier, nbrs);
        Ok(None)
    }
}

/// How many neighbours `sample_node` takes from a node of degree `degree`.
#[inline]
pub fn sample_count(degree: usize, fanout: i32) -> usize {
    if fanout < 0 || degree <= fanout as usize {
        degree
    } else {
        fanout as usize
    }
}

/// The per-node sampling rule. `out` is overwritten with the chosen neighbours (global ids):
/// all of `neighbors` in CSR order when `fanout < 0` or `degree <= fanout`; otherwise the
/// neighbours at the `fanout` positions `floyd_sample(ids, degree, fanout)` (ascending).
/// `ids` is `Stream::new(seed, epoch, step, Purpose::NeighborSample + hop).for_id(node)`.
pub fn sample_node(neighbors: &[u32], fanout: i32, ids: IdStream, out: &mut Vec<u64>) {
    let degree = neighbors.len();
    if sample_count(degree, fanout) == degree {
        out.clear();
        out.extend(neighbors.iter().map(|&n| n as u64));
        return;
    }
    floyd_sample(ids, degree as u64, fanout as usize, out);
    for p in out.iter_mut() {
        *p = neighbors[*p as usize] as u64;
    }
}

/// A `NeighborSource` over one part that owns every node it is asked about (a single-process
/// run, or the owned nodes of a rank).
pub struct LocalCsr<'a> {
    part: &'a GraphPart,
}

impl<'a> LocalCsr<'a> {
    pub fn new(part: &'a GraphPart) -> Self {
        LocalCsr { part }
    }
}

impl NeighborSource for LocalCsr<'_> {
    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()> {
        if let Some(&n) = nodes.iter().find(|&&n| !self.part.owns(n)) {
            return Err(Error::Other(format!(
                "neighbour sampling: node {n} is not owned by part {} (owns [{}, {}))",
                self.part.meta.part_id,
                self.part.first_node(),
                self.part.first_node() + self.part.num_local_nodes() as u64
            )));
        }
        out_counts.clear();
        out_counts.par_extend(
            nodes
                .par_iter()
                .map(|&n| sample_count(self.part.neighbors(n).len(), fanout) as u32),
        );
        let total: u64 = out_counts.iter().map(|&c| c as u64).sum();
        out_nbrs.clear();
        out_nbrs.resize(total as usize, 0);
        // One output slice per node, filled in parallel; the order is the input order.
        let mut slices = Vec::with_capacity(nodes.len());
        let mut rest = out_nbrs.as_mut_slice();
        for &c in out_counts.iter() {
            let (head, tail) = rest.split_at_mut(c as usize);
            slices.push(head);
            rest = tail;
        }
        slices
            .into_par_iter()
            .zip(nodes.par_iter())
            .with_min_len(64)
            .for_each_init(Vec::new, |scratch, (slice, &n)| {
                sample_node(self.part.neighbors(n), fanout, stream.for_id(n), scratch);
                slice.copy_from_slice(scratch);
            });
        Ok(())
    }
}

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
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Multi-layer uniform neighbour sampler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborSampler {
    /// Fan-out per hop, OGB order: `fanouts[0]` for the seeds' hop (the last layer); `-1` takes
    /// every neighbour.
    pub fanouts: Vec<i32>,
    pub seed: u64,
}

impl NeighborSampler {
    pub fn new(fanouts: Vec<i32>, seed: u64) -> Self {
        NeighborSampler { fanouts, seed }
    }

    /// Samples the blocks of one batch. `seeds` must be distinct. Hop `h` samples the current
    /// frontier with `fanouts[h]` and the stream `(seed, epoch, step, NeighborSample + h)` and
    /// produces `blocks[L-1-h]`; its sources are the frontier followed by the new neighbours in
    /// first-seen order, and they are the next hop's frontier.
    pub fn sample(
        &self,
        src: &dyn NeighborSource,
        seeds: &[u64],
        epoch: u64,
        step: u64,
    ) -> Result<SampledBlocks> {
        if self.fanouts.is_empty() {
            return Err(Error::config("fanouts", "at least one layer is needed"));
        }
        let mut pos: IdMap<u32> = IdMap::default();
        pos.reserve(seeds.len() * 8);
        for (i, &s) in seeds.iter().enumerate() {
            if pos.insert(s, i as u32).is_some() {
                return Err(Error::Other(format!(
                    "neighbour sampling: seed node {s} appears twice in the batch"
                )));
            }
        }
        let mut frontier = seeds.to_vec();
        let mut blocks = Vec::with_capacity(self.fanouts.len());
        let mut counts = Vec::new();
        let mut nbrs = Vec::new();
        for (hop, &fanout) in self.fanouts.iter().enumerate() {
            let stream = Stream::new(
                self.seed,
                epoch,
                step,
                Purpose::NeighborSample as u64 + hop as u64,
            );
            src.sample_neighbors(&frontier, fanout, stream, &mut counts, &mut nbrs)?;
            let total: u64 = counts.iter().map(|&c| c as u64).sum();
            if counts.len() != frontier.len() || total != nbrs.len() as u64 {
                return Err(Error::Other(format!(
                    "neighbour source returned {} counts (sum {total}) and {} neighbours for {} nodes",
                    counts.len(),
                    nbrs.len(),
                    frontier.len()
                )));
            }
            if total > u32::MAX as u64 {
                return Err(Error::Other(format!(
                    "neighbour sampling: {total} edges in one block exceed the u32 index range"
                )));
            }
            let num_dst = frontier.len();
            let mut src_nodes = frontier;
            let mut indptr = Vec::with_capacity(num_dst + 1);
            indptr.push(0u32);
            let mut acc = 0u32;
            for &c in &counts {
                acc += c;
                indptr.push(acc);
            }
            let indices = match src.relabel(&src_nodes, &nbrs)? {
                Some((sources, indices)) => {
                    if sources.get(..num_dst) != Some(&src_nodes[..]) || indices.len() != nbrs.len()
                    {
                        return Err(Error::Other(format!(
                            "neighbour source relabelled {} neighbours into {} indices and {} \
                             sources that do not start with the {num_dst} frontier nodes",
                            nbrs.len(),
                            indices.len(),
                            sources.len()
                        )));
                    }
                    src_nodes = sources;
                    indices
                }
                None => {
                    // `pos` holds every earlier source unless a previous hop was deduplicated
                    // by the source.
                    if pos.len() != src_nodes.len() {
                        pos.clear();
                        pos.extend(src_nodes.iter().enumerate().map(|(i, &n)| (n, i as u32)));
                    }
                    let mut indices = Vec::with_capacity(nbrs.len());
                    for &n in &nbrs {
                        let next = src_nodes.len() as u32;
                        let p = *pos.entry(n).or_insert(next);
                        if p == next {
                            src_nodes.push(n);
                        }
                        indices.push(p);
                    }
                    indices
                }
            };
            frontier = src_nodes.clone();
            blocks.push(Block::new(src_nodes, num_dst, indptr, indices)?);
        }
        blocks.reverse();
        Ok(SampledBlocks {
            seeds: seeds.to_vec(),
            blocks,
        })
    }
}
