//! Layer-wise full-neighbourhood inference over all nodes, and the evaluations built on it.
//!
//! Layer by layer, each rank computes the embeddings of the nodes it owns from all of their
//! neighbours: embeddings of neighbours owned elsewhere (the halo) are exchanged once per layer,
//! and local nodes are processed in chunks so memory stays bounded. Held-out edges are scored on
//! the rank that owns their source (targets and negatives fetched from their owners), and the
//! metric sums are all-reduced, so every world size reports the same numbers.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::backend::Backend;
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::DistGraph;
use crate::error::{Error, Result};
use crate::eval::link::LinkAccumulator;
use crate::eval::nodeclass::NodeClassAccumulator;
use crate::nn::model::{Model, Task};
use crate::nodemap::NodeMap;
use crate::sample::block::Block;
use crate::sample::shuffle::dedup_first_seen;

/// Local nodes per inference chunk.
const CHUNK_NODES: usize = 4096;
/// Local nodes per chunk on a backend with its own device memory: fewer, larger launches (a
/// chunk's source rows are about 20 x 16384 x width floats, a few hundred MiB at most).
const DEVICE_CHUNK_NODES: usize = 16384;
/// Held-out edges scored together (each with its K negatives).
const SCORE_EDGES: usize = 32;

/// Embeddings of every node this rank owns after the last SAGE layer, row-major
/// `[n_local, hidden]`. A collective (one exchange per layer).
pub fn embed_local<B: Backend>(
    g: &DistGraph<'_>,
    b: &B,
    model: &Model<B>,
    params: &B::F,
    stop: &StopSignal,
) -> Result<(Vec<f32>, usize)> {
    embed_local_each(g, b, model, params, stop, &mut |_, _, _| Ok(()))
}

/// Takes each layer's output on this rank (layer index, rows `[n_local, dim]`, dim) as soon as
/// the layer is done; may run collectives (every rank calls it at the same point).
pub type LayerSink<'s> = dyn FnMut(usize, &[f32], usize) -> Result<()> + 's;

/// `embed_local`, handing every layer's output to `each_layer` on the way (the server keeps
/// them: a new node's embedding is computed from its neighbours' rows of every layer).
pub fn embed_local_each<B: Backend>(
    g: &DistGraph<'_>,
    b: &B,
    model: &Model<B>,
    params: &B::F,
    stop: &StopSignal,
    each_layer: &mut LayerSink<'_>,
) -> Result<(Vec<f32>, usize)> {
    let part = g.part;
    let n = part.num_local_nodes();
    let first = part.first_node();
    let halo = g.halo();
    let halo_pos: NodeMap<u32> = halo
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();
    let chunk_nodes = if b.device_memory()?.is_some() {
        DEVICE_CHUNK_NODES
    } else {
        CHUNK_NODES
    };
    // Layer 0 reads the features in place; later layers own their input.
    let mut h: Cow<[f32]> = Cow::Borrowed(&part.features);
    let mut dim = g.feature_dim();
    for (layer, sage) in model.sage_layers().iter().enumerate() {
        stop.check_agreed(g.comm, "inference")?;
        let halo_rows = g.exchange_rows(&halo, dim, &h)?;
        let out_dim = sage.out_dim;
        let mut next = Vec::with_capacity(n * out_dim);
        for start in (0..n).step_by(chunk_nodes) {
            let end = (start + chunk_nodes).min(n);
            let block = full_block(part, first, start, end)?;
            let mut rows = Vec::with_capacity(block.src_nodes.len() * dim);
            for &id in &block.src_nodes {
                if part.owns(id) {
                    let i = (id - first) as usize;
                    rows.extend_from_slice(&h[i * dim..(i + 1) * dim]);
                } else {
                    let j = *halo_pos.get(&id).ok_or_else(|| Error::Rank {
                        rank: g.rank(),
                        msg: format!("node {id} is neither owned nor in the halo"),
                    })? as usize;
                    rows.extend_from_slice(&halo_rows[j * dim..(j + 1) * dim]);
                }
            }
            let h_src = b.upload(&rows)?;
            let out = model.layer_forward(b, params, layer, &block, &h_src)?;
            next.extend_from_slice(&b.download(&out)?);
        }
        each_layer(layer, &next, out_dim)?;
        h = Cow::Owned(next);
        dim = out_dim;
    }
    Ok((h.into_owned(), dim))
}

/// The block of local rows `start..end` with all their message-passing neighbours.
fn full_block(
    part: &crate::graph::store::GraphPart,
    first: u64,
    start: usize,
    end: usize,
) -> Result<Block> {
    let dst: Vec<u64> = (start..end).map(|i| first + i as u64).collect();
    let lists = (start..end).map(|i| {
        part.indices[part.indptr[i] as usize..part.indptr[i + 1] as usize]
            .iter()
            .map(|&v| v as u64)
    });
    Block::with_all_neighbors(dst, lists)
}

/// Held-out positives of a split, their negatives (row-major `[m, K]`) and K.
pub type HeldOut<'p> = (&'p [[u64; 2]], &'p [u64], usize);

/// Held-out edges of a split with their negatives.
pub fn held_out<'p>(part: &'p crate::graph::store::GraphPart, split: &str) -> Result<HeldOut<'p>> {
    match split {
        "valid" => Ok((&part.valid_edges, &part.valid_neg, part.num_neg)),
        "test" => Ok((&part.test_edges, &part.test_neg, part.num_neg)),
        other => Err(Error::config(
            "split",
            format!("'{other}' is not valid or test"),
        )),
    }
}

/// Held-out edges and their candidates, as a [`PairScorer`] gets them: `src` holds one row per
/// edge, `cand` the candidates' rows (each once), and `at[q * per_source + j]` is the row in
/// `cand` of edge q's candidate j (its target, then its negatives).
pub struct PairGroup<'a> {
    pub src: &'a [f32],
    pub cand: &'a [f32],
    pub at: &'a [u32],
    pub per_source: usize,
    pub dim: usize,
}

impl<'a> PairGroup<'a> {
    /// The group's pairs in `at`'s order: (source row, candidate row).
    pub fn pairs(&self) -> impl Iterator<Item = (&'a [f32], &'a [f32])> + '_ {
        let dim = self.dim;
        self.at
            .chunks(self.per_source.max(1))
            .enumerate()
            .flat_map(move |(q, group)| {
                let src_row = &self.src[q * dim..(q + 1) * dim];
                group.iter().map(move |&j| {
                    let j = j as usize;
                    (src_row, &self.cand[j * dim..(j + 1) * dim])
                })
            })
    }

    /// The group's pairs as two row-major `[pairs, dim]` tables (each source row repeated for
    /// its candidates), for a scorer that takes whole pairs of rows.
    pub fn tables(&self) -> (Vec<f32>, Vec<f32>) {
        let len = self.at.len() * self.dim;
        let (mut a, mut b) = (Vec::with_capacity(len), Vec::with_capacity(len));
        for (src_row, cand_row) in self.pairs() {
            a.extend_from_slice(src_row);
            b.extend_from_slice(cand_row);
        }
        (a, b)
    }
}

/// Scores a group's pairs, in the order of its `at`.
pub type PairScorer<'s> = dyn Fn(&PairGroup<'_>) -> Result<Vec<f32>> + Sync + 's;

/// Scores held-out edges against their fixed negatives from embeddings `h` (this rank's rows)
/// with a pair scorer (the trained predictor, or a dot product for walk embeddings); returns
/// the accumulated OGB metrics over all ranks. A collective.
pub fn evaluate_link_with(
    g: &DistGraph<'_>,
    h: &[f32],
    dim: usize,
    split: &str,
    batch: usize,
    stop: &StopSignal,
    score: &PairScorer<'_>,
) -> Result<BTreeMap<String, f64>> {
    let part = g.part;
    let first = part.first_node();
    let (edges, negs, k) = held_out(part, split)?;
    let batch = batch.max(1);
    let mut chunks = [edges.len().div_ceil(batch) as u64];
    g.comm.all_reduce_max_u64(&mut chunks);
    let mut acc = LinkAccumulator::new(k);
    for c in 0..chunks[0] as usize {
        // Every 16 chunks (a few thousand held-out edges): a stop is acted on within a
        // fraction of a second, and the extra all-reduce costs nothing next to the exchange.
        if c % 16 == 0 {
            stop.check_agreed(g.comm, "evaluation")?;
        }
        let lo = (c * batch).min(edges.len());
        let hi = ((c + 1) * batch).min(edges.len());
        // Targets and negatives of this chunk, fetched from their owners in one exchange.
        // Candidates in pair order (target, then its K negatives), each fetched once.
        let mut candidates: Vec<u64> = Vec::with_capacity((hi - lo) * (k + 1));
        for i in lo..hi {
            candidates.push(edges[i][1]);
            candidates.extend_from_slice(&negs[i * k..(i + 1) * k]);
        }
        let (wanted, at) = dedup_first_seen(&candidates);
        let rows = g.exchange_rows(&wanted, dim, h)?;
        for s in (lo..hi).step_by(SCORE_EDGES) {
            let e = (s + SCORE_EDGES).min(hi);
            let mut src = Vec::with_capacity((e - s) * dim);
            for edge in &edges[s..e] {
                let i = (edge[0] - first) as usize;
                src.extend_from_slice(&h[i * dim..(i + 1) * dim]);
            }
            let scores = score(&PairGroup {
                src: &src,
                cand: &rows,
                at: &at[(s - lo) * (k + 1)..(e - lo) * (k + 1)],
                per_source: k + 1,
                dim,
            })?;
            let mut pos = Vec::with_capacity(e - s);
            let mut neg = Vec::with_capacity((e - s) * k);
            for q in 0..(e - s) {
                pos.push(scores[q * (k + 1)]);
                neg.extend_from_slice(&scores[q * (k + 1) + 1..(q + 1) * (k + 1)]);
            }
            acc.add(&pos, &neg)?;
        }
    }
    let mut sums = acc.sums();
    g.comm.all_reduce_sum_f64(&mut sums);
    Ok(LinkAccumulator::from_sums(&sums)?.finish().to_map())
}

/// `evaluate_link_with` the model's link predictor.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_link<B: Backend>(
    g: &DistGraph<'_>,
    b: &B,
    model: &Model<B>,
    params: &B::F,
    h: &[f32],
    dim: usize,
    split: &str,
    batch: usize,
    stop: &StopSignal,
) -> Result<BTreeMap<String, f64>> {
    let score = |p: &PairGroup<'_>| {
        let (a, c) = p.tables();
        model.score_host_pairs(b, params, &a, &c)
    };
    evaluate_link_with(g, h, dim, split, batch, stop, &score)
}

/// A group's scores by dot product (walk embeddings), read in place: no pair tables.
pub fn dot_scores(p: &PairGroup<'_>) -> Vec<f32> {
    p.pairs().map(|(a, b)| crate::util::dot(a, b)).collect()
}

/// Classifies the nodes of a split; returns accuracy and macro-F1 over all ranks. A collective.
pub fn evaluate_nodes<B: Backend>(
    g: &DistGraph<'_>,
    b: &B,
    model: &Model<B>,
    params: &B::F,
    h: &[f32],
    dim: usize,
    split: &str,
) -> Result<BTreeMap<String, f64>> {
    let part = g.part;
    let first = part.first_node();
    let idx = match split {
        "valid" => &part.valid_idx,
        "test" => &part.test_idx,
        "train" => &part.train_idx,
        other => {
            return Err(Error::config(
                "split",
                format!("'{other}' is not train, valid or test"),
            ))
        }
    };
    let labels = part.label.as_ref().ok_or_else(|| {
        Error::config(
            "task",
            "node classification needs labels, and this graph has none",
        )
    })?;
    let classes = part.meta.num_classes as usize;
    let mut acc = NodeClassAccumulator::new(classes);
    for chunk in idx.chunks(CHUNK_NODES) {
        let mut rows = Vec::with_capacity(chunk.len() * dim);
        for &id in chunk {
            let i = (id - first) as usize;
            rows.extend_from_slice(&h[i * dim..(i + 1) * dim]);
        }
        let logits = model.classify(b, params, &b.upload(&rows)?)?;
        for (r, &id) in chunk.iter().enumerate() {
            let row = &logits[r * classes..(r + 1) * classes];
            let pred = row
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (j, &x)| {
                    if x > best.1 {
                        (j, x)
                    } else {
                        best
                    }
                })
                .0;
            acc.add(&[pred as u32], &[labels[(id - first) as usize] as u32])?;
        }
    }
    let mut sums = acc.sums();
    g.comm.all_reduce_sum_f64(&mut sums);
    Ok(NodeClassAccumulator::from_sums(&sums)?.finish().to_map())
}

/// Full evaluation of a split: inference, then the task's metrics. A collective.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    g: &DistGraph<'_>,
    b: &B,
    model: &Model<B>,
    params: &B::F,
    task: Task,
    split: &str,
    batch: usize,
    stop: &StopSignal,
) -> Result<BTreeMap<String, f64>> {
    let (h, dim) = embed_local(g, b, model, params, stop)?;
    match task {
        Task::LinkPrediction => evaluate_link(g, b, model, params, &h, dim, split, batch, stop),
        Task::NodeClassification => evaluate_nodes(g, b, model, params, &h, dim, split),
    }
}
