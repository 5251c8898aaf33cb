//! Sampled blocks: the bipartite message-passing graph of one GNN layer for one batch.
//!
//! A block maps `num_dst` destination nodes to their sampled neighbours among `src_nodes`. The
//! destinations are the prefix `src_nodes[..num_dst]`, so a layer's self term reads the first rows
//! of its input without a copy. Besides the forward CSR (`indptr`/`indices`, by destination) a
//! block carries the reverse index (`rev_indptr`/`rev_edges`, by source, ascending edge id) and
//! `edge_dst`, so the backward pass is a segmented sum in a fixed order: no float atomics, the same
//! bits on every run. Blocks no backward pass reads (the input layer of a training batch, whose
//! inputs are features without a gradient; layer-wise inference) are built forward only: their
//! reverse arrays are empty, which costs nothing at the batch's largest hop.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::nodemap::NodeMap;
use crate::sample::relabel::reverse_index_unchecked;

/// One layer's sampled bipartite graph.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Block {
    /// Global ids of the source nodes (the layer's input rows); the destination nodes (the
    /// layer's output rows) are the prefix `src_nodes[..num_dst]`.
    pub src_nodes: Vec<u64>,
    pub num_dst: usize,
    /// `num_dst + 1` offsets into `indices`: the edges of destination `v` are
    /// `indptr[v]..indptr[v+1]` (edge id = position in `indices`).
    pub indptr: Vec<u32>,
    /// Source position (row of `src_nodes`) of each edge.
    pub indices: Vec<u32>,
    /// `num_src + 1` offsets into `rev_edges`.
    pub rev_indptr: Vec<u32>,
    /// For each source position `u`, the ids of the edges leaving `u`, ascending.
    pub rev_edges: Vec<u32>,
    /// Destination of each edge (`edge_dst[e] = v` for `e` in `indptr[v]..indptr[v+1]`).
    pub edge_dst: Vec<u32>,
}

/// The reverse index of a CSR: `(rev_indptr, rev_edges, edge_dst)`.
pub type ReverseIndex = (Vec<u32>, Vec<u32>, Vec<u32>);

/// Builds the reverse index of a CSR with `num_src` source positions (a counting sort, in parallel
/// for large blocks, so the edge ids of each source come out ascending).
pub fn reverse_index(num_src: usize, indptr: &[u32], indices: &[u32]) -> Result<ReverseIndex> {
    check_csr(num_src, indptr, indices)?;
    Ok(reverse_index_unchecked(num_src, indptr, indices))
}

/// Refuses a forward CSR whose `indptr` is not a prefix sum of `indices` or with a source
/// position at or above `num_src`.
fn check_csr(num_src: usize, indptr: &[u32], indices: &[u32]) -> Result<()> {
    let num_edges = indices.len();
    if indptr.is_empty()
        || indptr[0] != 0
        || *indptr.last().unwrap_or(&0) as usize != num_edges
        || indptr
            .par_windows(2)
            .with_min_len(1 << 16)
            .any(|w| w[0] > w[1])
    {
        return Err(Error::Other(
            "block: indptr is not a prefix sum of indices".into(),
        ));
    }
    if let Some(&u) = indices.par_iter().find_any(|&&u| u as usize >= num_src) {
        return Err(Error::Other(format!(
            "block: edge source {u} >= num_src {num_src}"
        )));
    }
    Ok(())
}

impl Block {
    /// A block over whole neighbourhoods (not sampled): destinations `dst` are the first
    /// sources, `lists` gives each destination's neighbours, every mention is an edge, and the
    /// sources past the destinations are the distinct neighbours in order of first mention. For
    /// layer-wise inference and for a served new paper.
    pub fn with_all_neighbors<I, L>(dst: Vec<u64>, lists: I) -> Result<Block>
    where
        I: IntoIterator<Item = L>,
        L: IntoIterator<Item = u64>,
    {
        let num_dst = dst.len();
        let mut pos: NodeMap<u32> = dst
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        let mut src = dst;
        let mut indptr = Vec::with_capacity(num_dst + 1);
        let mut indices = Vec::new();
        indptr.push(0u32);
        for list in lists {
            for v in list {
                let p = *pos.entry(v).or_insert_with(|| {
                    src.push(v);
                    (src.len() - 1) as u32
                });
                indices.push(p);
            }
            indptr.push(indices.len() as u32);
        }
        // Inference and serving only aggregate forward.
        Block::forward_only(src, num_dst, indptr, indices)
    }

    /// A block from its forward CSR; builds the reverse index. Fails when the arrays are
    /// inconsistent (`indptr` of the wrong length, a source position out of range).
    pub fn new(
        src_nodes: Vec<u64>,
        num_dst: usize,
        indptr: Vec<u32>,
        indices: Vec<u32>,
    ) -> Result<Block> {
        let mut block = Block::forward_only(src_nodes, num_dst, indptr, indices)?;
        (block.rev_indptr, block.rev_edges, block.edge_dst) =
            reverse_index_unchecked(block.src_nodes.len(), &block.indptr, &block.indices);
        Ok(block)
    }

    /// A block from its forward CSR without the reverse index, for layers no backward pass
    /// reads (checked as `new` checks; `mean_agg_bwd` refuses it).
    pub fn forward_only(
        src_nodes: Vec<u64>,
        num_dst: usize,
        indptr: Vec<u32>,
        indices: Vec<u32>,
    ) -> Result<Block> {
        if indptr.len() != num_dst + 1 || num_dst > src_nodes.len() {
            return Err(Error::Other(format!(
                "block: indptr has {} entries for {num_dst} destinations ({} sources)",
                indptr.len(),
                src_nodes.len()
            )));
        }
        check_csr(src_nodes.len(), &indptr, &indices)?;
        Ok(Block {
            src_nodes,
            num_dst,
            indptr,
            indices,
            ..Block::default()
        })
    }

    /// Whether the block carries its reverse index (`new`, not `forward_only`).
    pub fn has_reverse_index(&self) -> bool {
        self.rev_indptr.len() == self.src_nodes.len() + 1
    }

    pub fn num_src(&self) -> usize {
        self.src_nodes.len()
    }
    pub fn num_edges(&self) -> usize {
        self.indices.len()
    }
    /// Global ids of the destination nodes.
    pub fn dst_nodes(&self) -> &[u64] {
        &self.src_nodes[..self.num_dst]
    }
    /// Number of sampled neighbours of destination `v`.
    pub fn degree(&self, v: usize) -> usize {
        (self.indptr[v + 1] - self.indptr[v]) as usize
    }
    /// Source positions of the sampled neighbours of destination `v`.
    pub fn neighbors(&self, v: usize) -> &[u32] {
        &self.indices[self.indptr[v] as usize..self.indptr[v + 1] as usize]
    }
}

/// The blocks of one mini-batch, input layer first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SampledBlocks {
    /// The batch's seed nodes (distinct), in the order given to the sampler.
    pub seeds: Vec<u64>,
    /// `blocks[0]` is the input layer: its `src_nodes` are the nodes whose features are
    /// gathered. `blocks[l].dst_nodes() == blocks[l + 1].src_nodes`, and
    /// `blocks[L-1].dst_nodes() == seeds`.
    pub blocks: Vec<Block>,
}

impl SampledBlocks {
    /// Global ids of the nodes whose input features the first layer reads.
    pub fn input_nodes(&self) -> &[u64] {
        self.blocks
            .first()
            .map(|b| b.src_nodes.as_slice())
            .unwrap_or(&self.seeds)
    }
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_neighbourhoods_keep_every_mention_and_number_new_sources_by_first_mention() {
        // Destinations 10 and 20; 20 is also a neighbour of 10, 7 is mentioned twice, 30 has
        // no neighbours.
        let b =
            Block::with_all_neighbors(vec![10, 20, 30], [vec![7u64, 20, 7], vec![5, 10], vec![]])
                .unwrap();
        assert_eq!(b.src_nodes, [10, 20, 30, 7, 5]);
        assert_eq!(b.num_dst, 3);
        assert_eq!(b.indptr, [0, 3, 5, 5]);
        assert_eq!(b.indices, [3, 1, 3, 4, 0]);
    }
}
