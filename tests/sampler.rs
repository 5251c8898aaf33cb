//! Neighbour sampling, blocks, negatives and the epoch order: the sampling rule, determinism,
//! block invariants, uniformity, and the CPU mean aggregation against a naive reference.

mod common;
use common::random_part;

use shardsage::backend::prelude::*;
use shardsage::backend::{CpuBackend, DeviceBlock};
use shardsage::graph::store::GraphPart;

use shardsage::sample::rng::{hash, unit_f32, Purpose, Stream};
use shardsage::sample::{
    dedup_first_seen, epoch_permutation, negative_targets, sample_node, Block, LocalCsr,
    NeighborSampler, NeighborSource, SamplingRule,
};

const RULES: [SamplingRule; 2] = [SamplingRule::Subgraph, SamplingRule::PerLayer];

fn seeds_of(n: usize, count: usize, salt: u64) -> Vec<u64> {
    let ids: Vec<u64> = (0..count as u64 * 3)
        .map(|i| hash(99, salt, 0, 0, i, 0) % n as u64)
        .collect();
    let (mut unique, _) = dedup_first_seen(&ids);
    unique.truncate(count);
    unique
}

#[test]
fn per_layer_sampled_neighbors_are_distinct_true_neighbors_of_the_right_count() {
    let part = random_part(400, 24, 1, 1, 0, 0);
    part.validate(std::path::Path::new("mem")).unwrap();
    let src = LocalCsr::new(&part);
    let seeds = seeds_of(400, 50, 0);
    for fanouts in [vec![5, 3], vec![-1, 2], vec![0, -1], vec![10, 10, 10]] {
        let sampler = NeighborSampler::new(fanouts.clone(), 7).with_rule(SamplingRule::PerLayer);
        let sb = sampler.sample(&src, &seeds, 0, 0).unwrap();
        assert_eq!(sb.blocks.len(), fanouts.len());
        for (hop, &fanout) in fanouts.iter().enumerate() {
            let block = &sb.blocks[fanouts.len() - 1 - hop];
            for v in 0..block.num_dst {
                let node = block.src_nodes[v];
                let truth = part.neighbors(node);
                let got: Vec<u64> = block
                    .neighbors(v)
                    .iter()
                    .map(|&p| block.src_nodes[p as usize])
                    .collect();
                let want = if fanout < 0 {
                    truth.len()
                } else {
                    truth.len().min(fanout as usize)
                };
                assert_eq!(got.len(), want, "node {node} fanout {fanout}");
                let mut sorted = got.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), got.len(), "duplicates for node {node}");
                assert!(got.iter().all(|g| truth.contains(&(*g as u32))));
                if fanout < 0 || truth.len() <= fanout as usize {
                    // All neighbours, in CSR order.
                    let all: Vec<u64> = truth.iter().map(|&t| t as u64).collect();
                    assert_eq!(got, all);
                }
            }
        }
    }
}

/// The global ids of destination `v`'s sampled neighbours in `block`.
fn neighbor_ids(block: &Block, v: usize) -> Vec<u64> {
    block
        .neighbors(v)
        .iter()
        .map(|&p| block.src_nodes[p as usize])
        .collect()
}

#[test]
fn subgraph_rule_samples_each_node_once_and_every_layer_reuses_its_edges() {
    let part = random_part(600, 24, 1, 1, 0, 0);
    let src = LocalCsr::new(&part);
    let seeds = seeds_of(600, 40, 5);
    let (seed, epoch, step) = (7u64, 2u64, 3u64);
    for fanouts in [vec![15, 10, 5], vec![3, 6], vec![-1, 2, 2], vec![4]] {
        let sb = NeighborSampler::new(fanouts.clone(), seed)
            .with_rule(SamplingRule::Subgraph)
            .sample(&src, &seeds, epoch, step)
            .unwrap();
        let l = fanouts.len();
        // The node first reached at hop h is sampled with fanouts[h] and hop h's stream.
        let mut first = 0;
        let mut first_hop = std::collections::HashMap::new();
        for (hop, &fanout) in fanouts.iter().enumerate() {
            let block = &sb.blocks[l - 1 - hop];
            let stream = Stream::new(
                seed,
                epoch,
                step,
                Purpose::NeighborSample as u64 + hop as u64,
            );
            for v in first..block.num_dst {
                let node = block.src_nodes[v];
                let mut want = Vec::new();
                sample_node(part.neighbors(node), fanout, stream.for_id(node), &mut want);
                assert_eq!(neighbor_ids(block, v), want, "node {node} at hop {hop}");
                first_hop.insert(node, hop);
            }
            first = block.num_dst;
        }
        // Every layer aggregates a destination over the same edges, in the same order.
        for block in &sb.blocks {
            for v in 0..block.num_dst {
                let node = block.src_nodes[v];
                let hop = first_hop[&node];
                let own = &sb.blocks[l - 1 - hop];
                let pos = own.src_nodes.iter().position(|&x| x == node).unwrap();
                assert_eq!(neighbor_ids(block, v), neighbor_ids(own, pos));
            }
        }
        // The input layer holds the edges of every hop: at least as many as the per-layer rule.
        let per_layer = NeighborSampler::new(fanouts.clone(), seed)
            .with_rule(SamplingRule::PerLayer)
            .sample(&src, &seeds, epoch, step)
            .unwrap();
        assert_eq!(sb.blocks[l - 1], per_layer.blocks[l - 1]);
        assert_eq!(sb.input_nodes().len(), sb.blocks[0].num_src());
    }
}

/// `LocalCsr` whose sources relabel the blocks themselves (as the GPU sampler does) on the hops
/// `relabel_hop(hop)` picks, with the first-seen rule of `dedup_first_seen`; a broken variant
/// drops the frontier's order. It reports `node_id_bound` as given: `None` makes the sampler
/// keep positions in its hash map, `Some` in its id-indexed table.
struct RelabellingCsr<'a> {
    csr: LocalCsr<'a>,
    relabel_hop: fn(usize) -> bool,
    hop: std::cell::Cell<usize>,
    broken: bool,
    node_id_bound: Option<u64>,
}

impl<'a> RelabellingCsr<'a> {
    fn new(part: &'a GraphPart, relabel_hop: fn(usize) -> bool, bound: Option<u64>) -> Self {
        RelabellingCsr {
            csr: LocalCsr::new(part),
            relabel_hop,
            hop: std::cell::Cell::new(0),
            broken: false,
            node_id_bound: bound,
        }
    }
}

impl NeighborSource for RelabellingCsr<'_> {
    fn node_id_bound(&self) -> Option<u64> {
        self.node_id_bound
    }

    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> shardsage::Result<()> {
        self.csr
            .sample_neighbors(nodes, fanout, stream, out_counts, out_nbrs)
    }

    fn relabel(
        &self,
        frontier: &[u64],
        nbrs: &[u64],
    ) -> shardsage::Result<Option<(Vec<u64>, Vec<u32>)>> {
        let hop = self.hop.get();
        self.hop.set(hop + 1);
        if !(self.relabel_hop)(hop) {
            return Ok(None);
        }
        let keys: Vec<u64> = frontier.iter().chain(nbrs).copied().collect();
        let (mut sources, labels) = dedup_first_seen(&keys);
        if self.broken {
            sources.reverse();
        }
        Ok(Some((sources, labels[frontier.len()..].to_vec())))
    }
}

#[test]
fn blocks_relabelled_by_the_source_equal_the_host_blocks() {
    let part = random_part(800, 20, 4, 1, 0, 0);
    let seeds = seeds_of(800, 50, 3);
    for rule in RULES {
        let sampler = NeighborSampler::new(vec![6, 4, 3], 21).with_rule(rule);
        let host = sampler.sample(&LocalCsr::new(&part), &seeds, 1, 2).unwrap();
        let every: fn(usize) -> bool = |_| true;
        let odd: fn(usize) -> bool = |h| h % 2 == 1;
        let even: fn(usize) -> bool = |h| h % 2 == 0;
        for relabel_hop in [every, odd, even] {
            let src = RelabellingCsr::new(&part, relabel_hop, None);
            assert_eq!(sampler.sample(&src, &seeds, 1, 2).unwrap(), host);
        }
        let broken = |bound| RelabellingCsr {
            broken: true,
            ..RelabellingCsr::new(&part, every, bound)
        };
        let err = sampler.sample(&broken(None), &seeds, 1, 2).unwrap_err();
        assert!(err.to_string().contains("frontier"), "{err}");
        // A source that bounds its ids is relabelled by the host's table as it samples; its
        // own relabelling (here a wrong one) is not asked.
        assert_eq!(
            sampler.sample(&broken(Some(800)), &seeds, 1, 2).unwrap(),
            host
        );
    }
}

#[test]
fn blocks_are_deterministic_and_vary_with_step() {
    let part = random_part(500, 30, 2, 1, 0, 0);
    let src = LocalCsr::new(&part);
    let seeds = seeds_of(500, 64, 1);
    for rule in RULES {
        let sampler = NeighborSampler::new(vec![4, 3], 11).with_rule(rule);
        let a = sampler.sample(&src, &seeds, 2, 5).unwrap();
        let b = sampler.sample(&src, &seeds, 2, 5).unwrap();
        assert_eq!(a, b);
        let c = sampler.sample(&src, &seeds, 2, 6).unwrap();
        assert_ne!(a.blocks, c.blocks);
        let d = sampler.sample(&src, &seeds, 3, 5).unwrap();
        assert_ne!(a.blocks, d.blocks);
        let e = NeighborSampler::new(vec![4, 3], 12)
            .with_rule(rule)
            .sample(&src, &seeds, 2, 5)
            .unwrap();
        assert_ne!(a.blocks, e.blocks);
    }
}

#[test]
fn blocks_keep_the_dst_prefix_and_dedup_in_first_seen_order() {
    let part = random_part(300, 20, 3, 1, 0, 0);
    let src = LocalCsr::new(&part);
    let seeds = seeds_of(300, 40, 2);
    for rule in RULES {
        let sb = NeighborSampler::new(vec![6, 4, 2], 3)
            .with_rule(rule)
            .sample(&src, &seeds, 0, 1)
            .unwrap();
        let l = sb.blocks.len();
        assert_eq!(sb.blocks[l - 1].dst_nodes(), seeds.as_slice());
        for w in sb.blocks.windows(2) {
            assert_eq!(w[0].dst_nodes(), w[1].src_nodes.as_slice());
        }
        for block in &sb.blocks {
            let mut s = block.src_nodes.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), block.src_nodes.len(), "src_nodes not distinct");
            // New sources (beyond the prefix) first appear in `indices` in ascending position.
            let mut next_new = block.num_dst as u32;
            for &p in &block.indices {
                if p >= next_new {
                    assert_eq!(p, next_new, "new source out of first-seen order");
                    next_new += 1;
                }
            }
            assert_eq!(next_new as usize, block.num_src());
            // Reverse index: each edge once, ascending per source, consistent with the forward CSR.
            assert_eq!(block.rev_indptr.len(), block.num_src() + 1);
            let mut seen = vec![false; block.num_edges()];
            for u in 0..block.num_src() {
                let edges = &block.rev_edges
                    [block.rev_indptr[u] as usize..block.rev_indptr[u + 1] as usize];
                assert!(edges.windows(2).all(|w| w[0] < w[1]));
                for &e in edges {
                    assert_eq!(block.indices[e as usize] as usize, u);
                    let v = block.edge_dst[e as usize] as usize;
                    assert!(block.indptr[v] <= e && e < block.indptr[v + 1]);
                    assert!(!seen[e as usize]);
                    seen[e as usize] = true;
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
        assert_eq!(sb.input_nodes(), sb.blocks[0].src_nodes.as_slice());
    }
}

#[test]
fn blocks_do_not_depend_on_the_thread_count() {
    let part = random_part(2000, 40, 4, 1, 0, 0);
    let src = LocalCsr::new(&part);
    let seeds = seeds_of(2000, 300, 3);
    for rule in RULES {
        let sampler = NeighborSampler::new(vec![10, 5], 5).with_rule(rule);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| sampler.sample(&src, &seeds, 1, 9).unwrap())
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }
}

/// `LocalCsr` samples by chunks of nodes, each into its own buffer: the lists it lays out are
/// each node's own draws (`sample_node` with the node's stream), in the input order, across
/// chunk boundaries and for a repeated node, a node without edges, fan-outs -1 and 0, at any
/// thread count.
#[test]
fn local_neighbour_lists_are_each_nodes_own_draws_in_order() {
    let part = random_part(20_000, 30, 6, 1, 0, 0);
    let src = LocalCsr::new(&part);
    let mut nodes = seeds_of(20_000, 5_000, 11);
    nodes.retain(|&n| n != 0);
    nodes.insert(1_500, 0); // node 0 has no edges
    nodes.push(nodes[7]);
    assert!(part.neighbors(0).is_empty());
    let stream = Stream::new(3, 1, 4, Purpose::NeighborSample as u64);
    for fanout in [-1, 0, 3, 15] {
        let mut want_counts = Vec::new();
        let mut want_nbrs = Vec::new();
        let mut one = Vec::new();
        for &n in &nodes {
            sample_node(part.neighbors(n), fanout, stream.for_id(n), &mut one);
            want_counts.push(one.len() as u32);
            want_nbrs.extend_from_slice(&one);
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (mut counts, mut nbrs) = (vec![9], vec![9]);
            pool.install(|| src.sample_neighbors(&nodes, fanout, stream, &mut counts, &mut nbrs))
                .unwrap();
            assert_eq!(counts, want_counts, "fan-out {fanout}, {threads} threads");
            assert_eq!(nbrs, want_nbrs, "fan-out {fanout}, {threads} threads");
            // The same lists handed over in pieces, in order, while other threads sample.
            let (mut counts, mut nbrs, mut pieces) = (Vec::new(), Vec::new(), 0);
            pool.install(|| {
                src.sample_neighbors_each(&nodes, fanout, stream, &mut |c, n| {
                    counts.extend_from_slice(c);
                    nbrs.extend_from_slice(n);
                    pieces += 1;
                    Ok(())
                })
            })
            .unwrap();
            assert!(pieces > 1, "{pieces} pieces");
            assert_eq!(
                counts, want_counts,
                "pieces, fan-out {fanout}, {threads} threads"
            );
            assert_eq!(
                nbrs, want_nbrs,
                "pieces, fan-out {fanout}, {threads} threads"
            );
            // The consumer's first error ends the sampling and is returned; nothing is handed
            // over after it.
            let mut calls = 0;
            let err = pool
                .install(|| {
                    src.sample_neighbors_each(&nodes, fanout, stream, &mut |_, _| {
                        calls += 1;
                        match calls {
                            2 => Err(shardsage::Error::Other("piece refused".into())),
                            _ => Ok(()),
                        }
                    })
                })
                .unwrap_err();
            assert!(err.to_string().contains("piece refused"), "{err}");
            assert_eq!(calls, 2, "fan-out {fanout}, {threads} threads");
        }
    }
    let (mut counts, mut nbrs) = (vec![9], vec![9]);
    src.sample_neighbors(&[], 5, stream, &mut counts, &mut nbrs)
        .unwrap();
    assert!(counts.is_empty() && nbrs.is_empty());
}

/// Blocks large enough for the parallel relabelling and reverse index (above
/// `relabel::PARALLEL_MIN_EDGES` edges per hop) equal the one-thread blocks: duplicates across
/// destinations, an isolated seed, all neighbours (fan-out -1) and a zero fan-out.
#[test]
fn the_parallel_block_builder_gives_the_one_thread_blocks() {
    let part = random_part(20_000, 30, 6, 1, 0, 0);
    let src = LocalCsr::new(&part);
    let mut seeds = seeds_of(20_000, 2_500, 4);
    seeds.retain(|&s| s != 0);
    seeds.insert(0, 0); // node 0 has no edges
    for rule in RULES {
        for fanouts in [vec![-1, 10, 5], vec![15, 0, 10]] {
            let sampler = NeighborSampler::new(fanouts.clone(), 8).with_rule(rule);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| sampler.sample(&src, &seeds, 2, 5).unwrap())
            };
            let one = run(1);
            let edges = one.blocks.iter().map(|b| b.num_edges()).max().unwrap();
            assert!(
                edges >= shardsage::sample::relabel::PARALLEL_MIN_EDGES,
                "{fanouts:?}: only {edges} edges"
            );
            assert_eq!(one, run(2), "{rule:?} {fanouts:?} at 2 threads");
            assert_eq!(one, run(4), "{rule:?} {fanouts:?} at 4 threads");
        }
    }
}

/// The id-indexed position table (`LocalCsr` bounds its ids) and the hash map give the same
/// blocks, at 1 and 2 threads (the map's parallel relabelling), for both rules; a batch
/// refused for a duplicate seed leaves nothing behind for the next one.
#[test]
fn the_position_table_and_the_hash_map_give_the_same_blocks() {
    let part = random_part(20_000, 30, 6, 1, 0, 0);
    let seeds = seeds_of(20_000, 2_500, 9);
    for rule in RULES {
        let sampler = NeighborSampler::new(vec![15, 10, 5], 3).with_rule(rule);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (table, map) = pool.install(|| {
                (
                    sampler.sample(&LocalCsr::new(&part), &seeds, 1, 7).unwrap(),
                    sampler
                        .sample(&RelabellingCsr::new(&part, |_| false, None), &seeds, 1, 7)
                        .unwrap(),
                )
            });
            assert_eq!(table, map, "{rule:?} at {threads} threads");
            let mut twice = seeds.clone();
            twice.push(seeds[100]);
            let err = sampler
                .sample(&LocalCsr::new(&part), &twice, 1, 7)
                .unwrap_err();
            assert!(err.to_string().contains("appears twice"), "{err}");
            let again = pool.install(|| sampler.sample(&LocalCsr::new(&part), &seeds, 1, 7));
            assert_eq!(
                again.unwrap(),
                table,
                "{rule:?}: the batch after a refused one"
            );
        }
    }
}

/// `forward_only_input` leaves out the reverse index of the input layer's block only: the same
/// forward CSR and the same mean, and a backward over that block is refused, not computed.
#[test]
fn the_input_block_can_be_built_forward_only() {
    let part = random_part(5_000, 20, 5, 1, 0, 0);
    let seeds = seeds_of(5_000, 300, 2);
    for rule in RULES {
        let sampler = NeighborSampler::new(vec![8, 5, 3], 4).with_rule(rule);
        let full = sampler.sample(&LocalCsr::new(&part), &seeds, 0, 1).unwrap();
        let lean = sampler
            .clone()
            .forward_only_input()
            .sample(&LocalCsr::new(&part), &seeds, 0, 1)
            .unwrap();
        assert_eq!(full.blocks[1..], lean.blocks[1..], "{rule:?}");
        let (a, b) = (&full.blocks[0], &lean.blocks[0]);
        assert!(a.has_reverse_index() && !b.has_reverse_index());
        assert!(b.rev_indptr.is_empty() && b.rev_edges.is_empty() && b.edge_dst.is_empty());
        assert_eq!(
            (&a.src_nodes, a.num_dst, &a.indptr, &a.indices),
            (&b.src_nodes, b.num_dst, &b.indptr, &b.indices)
        );
        let be = CpuBackend::new(2).unwrap();
        let dim = 8;
        let h: Vec<f32> = (0..a.num_src() * dim).map(|i| (i % 13) as f32).collect();
        let h = be.upload(&h).unwrap();
        let mean = |block: &Block| {
            let db = DeviceBlock::upload(&be, block).unwrap();
            let mut out = be.zeros(block.num_dst * dim).unwrap();
            be.mean_agg_fwd(&db, AggLayout::Mean, &h, dim, &mut out)
                .unwrap();
            (db, out)
        };
        let (_, want) = mean(a);
        let (db, got) = mean(b);
        assert_eq!(got, want);
        let mut grad = be.zeros(b.num_src() * dim).unwrap();
        let err = be
            .mean_agg_bwd(&db, AggLayout::Mean, &got, dim, &mut grad)
            .unwrap_err();
        assert!(err.to_string().contains("forward only"), "{err}");
    }
}

#[test]
fn each_neighbor_is_chosen_about_fanout_over_degree_of_the_time() {
    // A star: node 0 has 20 neighbours; sample 5 of them per step, 4000 steps.
    let part = random_part(30, 0, 5, 1, 0, 0);
    let mut part = part;
    let mut indptr = vec![0u64, 20];
    indptr.extend(std::iter::repeat_n(20u64, 29));
    part.indptr = indptr;
    part.indices = (1..=20).collect();
    part.validate(std::path::Path::new("mem")).unwrap();
    let src = LocalCsr::new(&part);
    let sampler = NeighborSampler::new(vec![5], 8);
    let mut counts = [0u32; 21];
    let steps = 4000;
    for step in 0..steps {
        let sb = sampler.sample(&src, &[0], 0, step).unwrap();
        let b = &sb.blocks[0];
        for &p in b.neighbors(0) {
            counts[b.src_nodes[p as usize] as usize] += 1;
        }
    }
    // Expected 4000 * 5 / 20 = 1000 per neighbour; binomial sd ~27.
    for (v, &c) in counts.iter().enumerate().skip(1) {
        assert!((880..1120).contains(&c), "neighbour {v} chosen {c} times");
    }
}

#[test]
fn sampling_rejects_duplicate_seeds_and_unowned_nodes() {
    let part = random_part(100, 6, 6, 2, 1, 0); // owns [50, 100)
    let src = LocalCsr::new(&part);
    let sampler = NeighborSampler::new(vec![3], 1);
    assert!(sampler.sample(&src, &[60, 61, 60], 0, 0).is_err());
    let err = sampler.sample(&src, &[10], 0, 0).unwrap_err().to_string();
    assert!(err.contains("node 10 is not owned"), "{err}");
    let mut counts = Vec::new();
    let mut nbrs = Vec::new();
    let stream = Stream::new(1, 0, 0, Purpose::NeighborSample as u64);
    src.sample_neighbors(&[55, 70], 2, stream, &mut counts, &mut nbrs)
        .unwrap();
    assert_eq!(counts.len(), 2);
    assert_eq!(nbrs.len() as u32, counts.iter().sum::<u32>());
    assert!(NeighborSampler::new(vec![], 1)
        .sample(&src, &[60], 0, 0)
        .is_err());
}

/// Naive mean aggregation in f64 for comparison.
fn naive_mean(block: &Block, h: &[f32], dim: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; block.num_dst * dim];
    for v in 0..block.num_dst {
        let nb = block.neighbors(v);
        for &u in nb {
            for j in 0..dim {
                out[v * dim + j] += h[u as usize * dim + j] as f64;
            }
        }
        if !nb.is_empty() {
            for j in 0..dim {
                out[v * dim + j] /= nb.len() as f64;
            }
        }
    }
    out
}

#[test]
fn cpu_mean_aggregation_matches_a_naive_reference() {
    let part = random_part(800, 20, 7, 1, 0, 0);
    let src = LocalCsr::new(&part);
    let seeds = seeds_of(800, 100, 4);
    let sb = NeighborSampler::new(vec![7, 0], 2)
        .sample(&src, &seeds, 0, 0)
        .unwrap();
    for threads in [1, 2] {
        let be = CpuBackend::new(threads).unwrap();
        for block in &sb.blocks {
            for dim in [1, 7, 64, 100, 192] {
                let h: Vec<f32> = (0..block.num_src() * dim)
                    .map(|i| unit_f32(hash(3, 0, 0, 0, i as u64, 0)) - 0.5)
                    .collect();
                let db = DeviceBlock::upload(&be, block).unwrap();
                let mean = naive_mean(block, &h, dim);
                for layout in [AggLayout::Mean, AggLayout::SelfAndMean] {
                    let width = layout.width(dim);
                    let mut out = be.zeros(block.num_dst * width).unwrap();
                    be.mean_agg_fwd(&db, layout, &be.upload(&h).unwrap(), dim, &mut out)
                        .unwrap();
                    // Mean: the mean's rows; SelfAndMean: [h[v] | mean[v]].
                    let want: Vec<f64> = (0..block.num_dst)
                        .flat_map(|v| {
                            let own = &h[v * dim..(v + 1) * dim];
                            let own = own.iter().map(|&x| x as f64);
                            let own = own.take(width - dim);
                            own.chain(mean[v * dim..(v + 1) * dim].iter().copied())
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    assert_eq!(out.len(), want.len());
                    for (g, w) in out.iter().zip(&want) {
                        assert!((*g as f64 - w).abs() < 1e-5, "{layout:?}: {g} vs {w}");
                    }
                    // Backward: <grad_out, F h> == <F^T grad_out, h> for the linear map F.
                    let g: Vec<f32> = (0..block.num_dst * width)
                        .map(|i| unit_f32(hash(4, 0, 0, 0, i as u64, 0)) - 0.5)
                        .collect();
                    let mut gs = be.zeros(block.num_src() * dim).unwrap();
                    be.mean_agg_bwd(&db, layout, &g, dim, &mut gs).unwrap();
                    let lhs: f64 = g.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
                    let rhs: f64 = gs.iter().zip(&h).map(|(a, b)| *a as f64 * *b as f64).sum();
                    assert!(
                        (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
                        "{layout:?}: {lhs} vs {rhs}"
                    );
                }
            }
        }
    }
}

#[test]
fn negatives_are_keyed_by_edge_and_in_range() {
    let edges = [5u64, 17, 1_000_000];
    let all = negative_targets(1, 2, 3, &edges, 4, 1000);
    assert_eq!(all.len(), 12);
    assert!(all.iter().all(|&t| t < 1000));
    // An edge's negatives do not depend on the other edges in the list.
    assert_eq!(
        negative_targets(1, 2, 3, &[17], 4, 1000),
        all[4..8].to_vec()
    );
    assert_ne!(
        negative_targets(1, 2, 4, &[17], 4, 1000),
        all[4..8].to_vec()
    );
    // Roughly uniform.
    let many: Vec<u64> = (0..20_000).collect();
    let t = negative_targets(9, 0, 0, &many, 1, 10);
    let mut counts = [0u32; 10];
    for &x in &t {
        counts[x as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (1800..2200).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn epoch_permutation_is_a_seeded_permutation() {
    let ids: Vec<u64> = (100..1100).collect();
    let p0 = epoch_permutation(3, 0, &ids);
    let mut sorted = p0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(p0, epoch_permutation(3, 0, &ids));
    assert_ne!(p0, epoch_permutation(3, 1, &ids));
    assert_ne!(p0, (0..1000).collect::<Vec<_>>());
    // The relative order of two items depends only on their global ids.
    let sub = epoch_permutation(3, 0, &ids[10..20]);
    let order_full: Vec<u64> = p0
        .iter()
        .map(|&i| ids[i])
        .filter(|g| (110..120).contains(g))
        .collect();
    let order_sub: Vec<u64> = sub.iter().map(|&i| ids[10 + i]).collect();
    assert_eq!(order_full, order_sub);
    let (u, pos) = dedup_first_seen(&[4, 2, 4, 9, 2]);
    assert_eq!(u, vec![4, 2, 9]);
    assert_eq!(pos, vec![0, 1, 0, 2, 1]);
}
