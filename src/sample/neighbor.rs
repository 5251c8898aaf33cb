//! Uniform neighbour sampling into per-layer blocks, under one of two rules (`SamplingRule`).
//!
//! The per-node rule (`sample_node`) is the one rule of the program: the CPU path here and the
//! CUDA sampling kernel implement exactly it, with the same counter-based draws, so a node gets the
//! same neighbours on any rank and any backend. Where the neighbours come from is abstracted by
//! `NeighborSource`: `LocalCsr` reads a part that owns every asked node; the distributed source
//! (in `distributed`) asks the owners of remote nodes with an all-to-all exchange.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::store::GraphPart;
use crate::nodemap::NodeMap;
use crate::sample::block::{Block, SampledBlocks};
use crate::sample::relabel::{relabel, DensePositions};
use crate::sample::rng::{floyd_sample, IdStream, Purpose, Stream};

/// What `NeighborSource::sample_neighbors_each` hands each piece of its lists to: the counts
/// of the next nodes and their neighbours.
pub type OnPiece<'a> = dyn FnMut(&[u32], &[u64]) -> Result<()> + Send + 'a;

/// One chunk's counts and neighbours.
type SampledChunk = (Vec<u32>, Vec<u64>);

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

    /// What `sample_neighbors` samples, handed to `each` in pieces, in node order: each call
    /// gives the counts of the next nodes and their neighbours. The sampler relabels a piece
    /// while later ones are still being sampled. The default samples everything and makes one
    /// call.
    fn sample_neighbors_each(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        each: &mut OnPiece<'_>,
    ) -> Result<()> {
        let (mut counts, mut nbrs) = (Vec::new(), Vec::new());
        self.sample_neighbors(nodes, fanout, stream, &mut counts, &mut nbrs)?;
        each(&counts, &nbrs)
    }

    /// The sources of a block, where this source builds them better than the sampler's host
    /// hash map (e.g. on the GPU that sampled `nbrs`): `frontier` (distinct) followed by the
    /// neighbours not in it, in first-seen order, and for every entry of `nbrs` its position in
    /// those sources. `None` (the default) leaves it to the host.
    fn relabel(&self, frontier: &[u64], nbrs: &[u64]) -> Result<Option<(Vec<u64>, Vec<u32>)>> {
        let _ = (frontier, nbrs);
        Ok(None)
    }

    /// An upper bound on the node ids this source returns (the graph's node count), when it
    /// knows one: the sampler then keeps a batch's source positions in a table indexed by id
    /// (`DensePositions`) instead of a hash map, and relabels on the host as the pieces of
    /// `sample_neighbors_each` arrive (`relabel` is not asked). `None` (the default) keeps the
    /// map.
    fn node_id_bound(&self) -> Option<u64> {
        None
    }

    /// `NeighborSampler::sample` calls this with the batch's rule before the first hop and with
    /// `None` after the last. A source that samples for other ranks keeps per-batch state here
    /// (see `DistGraph`); the default keeps none.
    fn set_batch_rule(&self, rule: Option<SamplingRule>) {
        let _ = rule;
    }
}

/// Ends a batch on the source however `NeighborSampler::sample` returns.
struct BatchGuard<'a>(&'a dyn NeighborSource);

impl Drop for BatchGuard<'_> {
    fn drop(&mut self) {
        self.0.set_batch_rule(None);
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

/// Nodes a task of `LocalCsr::sample_neighbors` samples in one go.
const CHUNK_NODES: usize = 1024;
/// How many nodes ahead the sampler asks the cache for a node's CSR offsets (and, half as far
/// ahead, for the start of its neighbour list): both are at random places in arrays far larger
/// than the caches.
const PREFETCH_NODES: usize = 8;

/// A mutex's guard, also after a panic elsewhere (the chunk slots hold plain data).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalCsr<'_> {
    fn check_owned(&self, nodes: &[u64]) -> Result<()> {
        let not_owned = nodes
            .par_iter()
            .with_min_len(1 << 14)
            .find_first(|&&n| !self.part.owns(n));
        match not_owned {
            Some(&n) => Err(Error::Other(format!(
                "neighbour sampling: node {n} is not owned by part {} (owns [{}, {}))",
                self.part.meta.part_id,
                self.part.first_node(),
                self.part.first_node() + self.part.num_local_nodes() as u64
            ))),
            None => Ok(()),
        }
    }

    /// The counts and neighbours of one chunk of owned nodes, each node's CSR row read once.
    fn sample_chunk(&self, chunk: &[u64], fanout: i32, stream: Stream) -> SampledChunk {
        let part = self.part;
        let first = part.first_node();
        let mut counts = Vec::with_capacity(chunk.len());
        let mut nbrs = Vec::with_capacity(chunk.len() * fanout.max(1) as usize);
        let mut scratch = Vec::new();
        for (i, &n) in chunk.iter().enumerate() {
            if let Some(&a) = chunk.get(i + PREFETCH_NODES) {
                if let Some(p) = part.indptr.get((a - first) as usize) {
                    crate::util::prefetch_lines(p as *const u64 as *const u8, 16, true);
                }
            }
            if let Some(&a) = chunk.get(i + PREFETCH_NODES / 2) {
                let row = part.neighbors(a);
                crate::util::prefetch_lines(row.as_ptr() as *const u8, 4, true);
            }
            sample_node(part.neighbors(n), fanout, stream.for_id(n), &mut scratch);
            counts.push(scratch.len() as u32);
            nbrs.extend_from_slice(&scratch);
        }
        (counts, nbrs)
    }
}

impl NeighborSource for LocalCsr<'_> {
    fn node_id_bound(&self) -> Option<u64> {
        Some(self.part.meta.num_nodes)
    }

    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()> {
        self.check_owned(nodes)?;
        // By chunks of `CHUNK_NODES`, each into its own buffers, then laid out in order: each
        // node's CSR row is read once (a first pass to count would read every row twice, and
        // at random).
        let chunks: Vec<SampledChunk> = nodes
            .par_chunks(CHUNK_NODES)
            .map(|chunk| self.sample_chunk(chunk, fanout, stream))
            .collect();
        out_counts.clear();
        out_counts.reserve(nodes.len());
        for (c, _) in &chunks {
            out_counts.extend_from_slice(c);
        }
        let total: usize = chunks.iter().map(|(_, n)| n.len()).sum();
        out_nbrs.clear();
        out_nbrs.reserve(total);
        let mut slices = Vec::with_capacity(chunks.len());
        let mut rest = &mut out_nbrs.spare_capacity_mut()[..total];
        for (_, n) in &chunks {
            let (head, tail) = rest.split_at_mut(n.len());
            slices.push(head);
            rest = tail;
        }
        slices
            .into_par_iter()
            .zip(chunks.par_iter())
            .for_each(|(dst, (_, src))| {
                for (d, &s) in dst.iter_mut().zip(src) {
                    d.write(s);
                }
            });
        // SAFETY: the chunks' slices cover the first `total` elements, each written above.
        unsafe { out_nbrs.set_len(total) };
        Ok(())
    }

    /// The chunks are claimed by the pool's threads in turn; whichever thread finishes one also
    /// hands every finished chunk that is next in order to `each` (one thread at a time, the
    /// others go on sampling), so the caller's relabelling overlaps the sampling instead of
    /// waiting for all of it. What the threads leave is handed over in order at the end.
    fn sample_neighbors_each(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        each: &mut OnPiece<'_>,
    ) -> Result<()> {
        self.check_owned(nodes)?;
        let chunks: Vec<&[u64]> = nodes.chunks(CHUNK_NODES).collect();
        let done: Vec<Mutex<Option<SampledChunk>>> =
            chunks.iter().map(|_| Mutex::new(None)).collect();
        let claimed = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        // The next chunk to hand over, the consumer and its first error.
        let consumer = Mutex::new((0usize, each, None::<Error>));
        type Consumer<'c, 'x> = (usize, &'c mut OnPiece<'x>, Option<Error>);
        let hand_over = |c: &mut Consumer| {
            while c.2.is_none() {
                let Some(slot) = done.get(c.0) else { break };
                let Some((counts, nbrs)) = lock(slot).take() else {
                    break;
                };
                if let Err(e) = (c.1)(&counts, &nbrs) {
                    c.2 = Some(e);
                    failed.store(true, Relaxed);
                }
                c.0 += 1;
            }
        };
        let work = || {
            while !failed.load(Relaxed) {
                let k = claimed.fetch_add(1, Relaxed);
                let Some(chunk) = chunks.get(k) else { break };
                *lock(&done[k]) = Some(self.sample_chunk(chunk, fanout, stream));
                if let Ok(mut c) = consumer.try_lock() {
                    hand_over(&mut c);
                }
            }
        };
        if chunks.len() > 1 {
            rayon::scope(|s| {
                for _ in 1..rayon::current_num_threads() {
                    s.spawn(|_| work());
                }
                work();
            });
        } else {
            work();
        }
        let mut c = consumer.into_inner().unwrap_or_else(|e| e.into_inner());
        hand_over(&mut c);
        match c.2 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Which neighbours each layer of a batch aggregates over. Both rules draw a node's neighbours
/// with `sample_node` and the stream of the hop that samples it, so either is deterministic on
/// any rank, world size and backend.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum SamplingRule {
    /// Each node's neighbours are sampled once, at the hop that first reaches it (with that hop's
    /// fan-out), and every layer aggregates over those same edges: a seed sees its
    /// `fanouts[0]` neighbours at every layer, a node first reached at hop 1 its `fanouts[1]`.
    /// The rule of PyG's `NeighborLoader` / `LinkNeighborLoader` (with `trim_to_layer`).
    #[default]
    Subgraph,
    /// Fresh neighbours for every destination at every hop, with that hop's fan-out: a seed sees
    /// `fanouts[L-1]` neighbours at the input layer. The rule of DGL's `NeighborSampler` blocks
    /// (fewer edges per step).
    PerLayer,
}

/// Where a batch keeps its sources' positions while its blocks are built.
enum Positions {
    /// A table indexed by node id, when the source bounds the ids.
    Dense(DensePositions),
    Map(NodeMap<u32>),
}

/// Multi-layer uniform neighbour sampler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborSampler {
    /// Fan-out per hop, OGB order: `fanouts[0]` for the seeds' hop (the last layer); `-1` takes
    /// every neighbour.
    pub fanouts: Vec<i32>,
    pub seed: u64,
    pub rule: SamplingRule,
    /// Whether the input layer's block (the last hop's) gets its reverse index; training skips
    /// it (`forward_only_input`), as the first layer's inputs take no gradient.
    pub input_reverse: bool,
}

impl NeighborSampler {
    /// A sampler with the default rule (`SamplingRule::Subgraph`).
    pub fn new(fanouts: Vec<i32>, seed: u64) -> Self {
        NeighborSampler {
            fanouts,
            seed,
            rule: SamplingRule::default(),
            input_reverse: true,
        }
    }

    pub fn with_rule(mut self, rule: SamplingRule) -> Self {
        self.rule = rule;
        self
    }

    /// Builds the input layer's block without its reverse index (`Block::forward_only`): the
    /// batch's largest block, which a training step never aggregates backward.
    pub fn forward_only_input(mut self) -> Self {
        self.input_reverse = false;
        self
    }

    fn check_layers(&self) -> Result<()> {
        if self.fanouts.is_empty() {
            return Err(Error::config("fanouts", "at least one layer is needed"));
        }
        Ok(())
    }

    /// Refuses a batch the sampler cannot take (no layers, a seed twice); returns the seeds'
    /// positions. Every implementation of the sampling rule calls it first.
    pub fn check_batch(&self, seeds: &[u64]) -> Result<NodeMap<u32>> {
        self.check_layers()?;
        let mut pos: NodeMap<u32> = NodeMap::default();
        pos.reserve(seeds.len() * 8);
        for (i, &s) in seeds.iter().enumerate() {
            if pos.insert(s, i as u32).is_some() {
                return Err(Error::Other(format!(
                    "neighbour sampling: seed node {s} appears twice in the batch"
                )));
            }
        }
        Ok(pos)
    }

    /// Samples the blocks of one batch. `seeds` must be distinct. Hop `h` produces
    /// `blocks[L-1-h]`, whose destinations are the hop's frontier (the seeds for `h = 0`) and
    /// whose sources are the frontier followed by the new neighbours in first-seen order (the
    /// next hop's frontier). The nodes sampled at hop `h`, with `fanouts[h]` and the stream
    /// `(seed, epoch, step, NeighborSample + h)`, are the whole frontier (`PerLayer`) or only its
    /// nodes not sampled at an earlier hop (`Subgraph`, whose block then keeps the earlier hops'
    /// edges of the other destinations).
    pub fn sample(
        &self,
        src: &dyn NeighborSource,
        seeds: &[u64],
        epoch: u64,
        step: u64,
    ) -> Result<SampledBlocks> {
        let mut positions = match src.node_id_bound().and_then(DensePositions::lease) {
            Some(mut table) => {
                self.check_layers()?;
                table.insert_distinct(seeds, 0)?;
                Positions::Dense(table)
            }
            None => Positions::Map(self.check_batch(seeds)?),
        };
        src.set_batch_rule(Some(self.rule));
        let _batch = BatchGuard(src);
        let mut blocks: Vec<Block> = Vec::with_capacity(self.fanouts.len());
        let mut counts = Vec::new();
        let mut nbrs = Vec::new();
        for (hop, &fanout) in self.fanouts.iter().enumerate() {
            let stream = Stream::new(
                self.seed,
                epoch,
                step,
                Purpose::NeighborSample as u64 + hop as u64,
            );
            // This hop's destinations: the previous block's sources.
            let frontier: &[u64] = blocks.last().map_or(seeds, |b| &b.src_nodes);
            // Under `Subgraph` the previous block's destinations were sampled already and keep
            // their edges; only the nodes it added are sampled now.
            let kept = match (self.rule, blocks.last()) {
                (SamplingRule::Subgraph, Some(prev)) => Some(prev),
                _ => None,
            };
            let first_new = kept.map_or(0, |b| b.num_dst);
            let to_sample = &frontier[first_new..];
            let num_dst = frontier.len();
            let kept_indices: &[u32] = kept.map_or(&[], |b| &b.indices);
            // Room for every draw of a bounded fan-out (a block's sources and indices are the
            // batch's largest arrays: growing them would copy them).
            let draws = to_sample.len() * fanout.max(0) as usize;
            let mut src_nodes = Vec::with_capacity(num_dst + draws);
            src_nodes.par_extend(frontier.par_iter().with_min_len(1 << 16));
            let mut indices = Vec::with_capacity(kept_indices.len() + draws);
            indices.extend_from_slice(kept_indices);
            counts.clear();
            match &mut positions {
                Positions::Dense(table) => {
                    // Each piece is relabelled as soon as it and every piece before it are
                    // sampled, while the pool's other threads sample the next ones.
                    let table = &*table;
                    src.sample_neighbors_each(to_sample, fanout, stream, &mut |c, n| {
                        let total: u64 = c.iter().map(|&c| c as u64).sum();
                        if total != n.len() as u64 {
                            return Err(Error::Other(format!(
                                "neighbour source returned {} counts (sum {total}) with {} \
                                 neighbours",
                                c.len(),
                                n.len()
                            )));
                        }
                        counts.extend_from_slice(c);
                        table.relabel_into(&mut src_nodes, n, &mut indices)
                    })?;
                }
                Positions::Map(pos) => {
                    src.sample_neighbors(to_sample, fanout, stream, &mut counts, &mut nbrs)?;
                    let total: u64 = counts.iter().map(|&c| c as u64).sum();
                    if total != nbrs.len() as u64 {
                        return Err(Error::Other(format!(
                            "neighbour source returned {} counts (sum {total}) and {} neighbours",
                            counts.len(),
                            nbrs.len()
                        )));
                    }
                    match src.relabel(&src_nodes, &nbrs)? {
                        Some((sources, new_indices)) => {
                            if sources.get(..num_dst) != Some(&src_nodes[..])
                                || new_indices.len() != nbrs.len()
                            {
                                return Err(Error::Other(format!(
                                    "neighbour source relabelled {} neighbours into {} indices \
                                     and {} sources that do not start with the {num_dst} \
                                     frontier nodes",
                                    nbrs.len(),
                                    new_indices.len(),
                                    sources.len()
                                )));
                            }
                            src_nodes = sources;
                            indices.extend_from_slice(&new_indices);
                        }
                        None => {
                            // `pos` holds every earlier source unless a previous hop was
                            // deduplicated by the source.
                            if pos.len() != src_nodes.len() {
                                pos.clear();
                                pos.extend(
                                    src_nodes.iter().enumerate().map(|(i, &n)| (n, i as u32)),
                                );
                            }
                            indices.extend(relabel(pos, &mut src_nodes, &nbrs));
                        }
                    }
                }
            }
            if counts.len() != to_sample.len() {
                return Err(Error::Other(format!(
                    "neighbour source returned {} counts for {} nodes",
                    counts.len(),
                    to_sample.len()
                )));
            }
            if indices.len() > u32::MAX as usize {
                return Err(Error::Other(format!(
                    "neighbour sampling: {} edges in one block exceed the u32 index range",
                    indices.len()
                )));
            }
            // Earlier hops' source positions stay valid: the sources only grow at the end, so
            // the kept edges come first, unchanged.
            let mut indptr = Vec::with_capacity(num_dst + 1);
            match kept {
                Some(prev) => indptr.extend_from_slice(&prev.indptr),
                None => indptr.push(0u32),
            }
            let mut acc = kept_indices.len() as u32;
            for &c in &counts {
                acc += c;
                indptr.push(acc);
            }
            let input_layer = hop + 1 == self.fanouts.len();
            blocks.push(if input_layer && !self.input_reverse {
                Block::forward_only(src_nodes, num_dst, indptr, indices)?
            } else {
                Block::new(src_nodes, num_dst, indptr, indices)?
            });
        }
        if let Positions::Dense(table) = positions {
            // The last hop's sources are every node the batch gave a position.
            table.release(blocks.last().map_or(seeds, |b| &b.src_nodes));
        }
        blocks.reverse();
        Ok(SampledBlocks {
            seeds: seeds.to_vec(),
            blocks,
        })
    }
}
