//! The distributed graph as one rank sees it: the nodes it owns (a `GraphPart` at rank
//! granularity, so `owner_of` gives a rank) plus collective exchanges for everything owned
//! elsewhere — sampled neighbours, feature rows, embedding rows — one all-to-all round each.
//!
//! Every method here is a collective: all ranks call it in the same order, even with nothing to
//! ask. Owners answer with the same counter-based sampling rule as a local lookup, so a node's
//! sample never depends on which rank asked or on the world size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::distributed::comm::{Comm, Wire};
use crate::error::{Error, Result};
use crate::graph::store::{owner_of, GraphPart};
use crate::nodemap::NodeMap;
use crate::sample::neighbor::{LocalCsr, NeighborSource, SamplingRule};
use crate::sample::rng::Stream;

/// A rank's view of the partitioned graph.
pub struct DistGraph<'a> {
    pub part: &'a GraphPart,
    pub comm: &'a Comm,
    cache: FeatureCache,
    /// During a batch under `SamplingRule::Subgraph` on several ranks: the draw (fan-out and
    /// stream) each owned node got when any rank first asked for it. A node that one rank reaches
    /// at hop 0 and another at hop 2 is then sampled once, with hop 0's draw, on both: the
    /// samples are those of one process holding the whole global batch.
    first_draws: Mutex<Option<NodeMap<(i32, Stream)>>>,
}

/// Marks a row of `FeatureLocations::rows` that is neither owned nor cached.
pub const FETCHED: u32 = u32::MAX;

/// Where a list of feature rows comes from (see `DistGraph::locate_features`).
pub struct FeatureLocations {
    /// Per id: its row in the resident table (owned rows, then cached rows), or `FETCHED`.
    pub rows: Vec<u32>,
    /// Positions (in the id list) of the `FETCHED` rows, ascending.
    pub fetched_pos: Vec<u32>,
    /// Their rows, fetched from the owners, in the order of `fetched_pos`.
    pub fetched: Vec<f32>,
}

/// A bounded cache of remote feature rows: the remote nodes most referenced by this rank's
/// adjacency, fetched once at start-up.
#[derive(Default)]
struct FeatureCache {
    index: HashMap<u64, u32>,
    rows: Vec<f32>,
    hits: AtomicU64,
    lookups: AtomicU64,
}

impl<'a> DistGraph<'a> {
    /// Wraps the rank's part; `cache_rows` remote feature rows are fetched now (a collective).
    pub fn new(part: &'a GraphPart, comm: &'a Comm, cache_rows: usize) -> Result<Self> {
        if part.meta.num_parts as usize != comm.size() || part.meta.part_id as usize != comm.rank()
        {
            return Err(Error::Rank {
                rank: comm.rank(),
                msg: format!(
                    "graph view is for rank {} of {}, but this is rank {} of {}",
                    part.meta.part_id,
                    part.meta.num_parts,
                    comm.rank(),
                    comm.size()
                ),
            });
        }
        let mut g = DistGraph {
            part,
            comm,
            cache: FeatureCache::default(),
            first_draws: Mutex::new(None),
        };
        g.fill_cache(cache_rows)?;
        Ok(g)
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
    pub fn feature_dim(&self) -> usize {
        self.part.meta.feature_dim as usize
    }
    pub fn owner(&self, id: u64) -> usize {
        owner_of(&self.part.meta.node_offset, id)
    }

    /// (hits, lookups) of the remote-feature cache since the last call; resets them.
    pub fn take_cache_stats(&self) -> (u64, u64) {
        (
            self.cache.hits.swap(0, Ordering::Relaxed),
            self.cache.lookups.swap(0, Ordering::Relaxed),
        )
    }

    pub fn cache_len(&self) -> usize {
        self.cache.index.len()
    }

    /// Asks the owner of each id for a variable-length answer (`answer(id, out)` runs on the
    /// owner); returns per-id counts and the answers concatenated in the order of `ids`.
    pub fn ask_owners<T, F>(&self, ids: &[u64], answer: F) -> Result<(Vec<u32>, Vec<T>)>
    where
        T: Wire,
        F: Fn(u64, &mut Vec<T>) + Sync,
    {
        self.ask_owners_batch(ids, |req: &[u64]| {
            let answers: Vec<Vec<T>> = req
                .par_iter()
                .map(|&id| {
                    let mut v = Vec::new();
                    answer(id, &mut v);
                    v
                })
                .collect();
            let counts = answers.iter().map(|a| a.len() as u32).collect();
            Ok((counts, answers.concat()))
        })
    }

    /// Each id's owner, and per owner the ids to ask it for, in order (this rank's own ids are
    /// not requested).
    fn route(&self, ids: &[u64]) -> (Vec<usize>, Vec<Vec<u64>>) {
        let me = self.rank();
        let offsets = &self.part.meta.node_offset;
        let mut requests: Vec<Vec<u64>> = vec![Vec::new(); self.comm.size()];
        let owners = ids
            .iter()
            .map(|&id| {
                if self.part.owns(id) {
                    return me;
                }
                let o = owner_of(offsets, id);
                requests[o].push(id);
                o
            })
            .collect();
        (owners, requests)
    }

    /// Refuses a request for a node this rank does not own.
    fn check_owned(&self, req: &[u64]) -> Result<()> {
        match req.iter().find(|&&id| !self.part.owns(id)) {
            Some(&id) => Err(Error::Rank {
                rank: self.rank(),
                msg: format!("asked for node {id}, which this rank does not own"),
            }),
            None => Ok(()),
        }
    }

    /// The exchange behind `ask_owners`: the owner answers each list of requested ids at once
    /// (`answer(ids)` returns per-id counts and the concatenated answers), so batch routines
    /// such as `LocalCsr` sampling fill their output in place.
    pub fn ask_owners_batch<T, F>(&self, ids: &[u64], answer: F) -> Result<(Vec<u32>, Vec<T>)>
    where
        T: Wire,
        F: Fn(&[u64]) -> Result<(Vec<u32>, Vec<T>)>,
    {
        let size = self.comm.size();
        let me = self.rank();
        let (owners, requests) = self.route(ids);
        let incoming = self.comm.all_to_all_v(&requests)?;
        // Answer every request (remote and our own) in parallel, in a fixed order.
        let answer_all = |req: &[u64]| -> Result<(Vec<u32>, Vec<T>)> {
            self.check_owned(req)?;
            answer(req)
        };
        let mut reply_counts: Vec<Vec<u32>> = Vec::with_capacity(size);
        let mut reply_data: Vec<Vec<T>> = Vec::with_capacity(size);
        for req in &incoming {
            let (c, d) = answer_all(req)?;
            reply_counts.push(c);
            reply_data.push(d);
        }
        let got_counts = self.comm.all_to_all_v(&reply_counts)?;
        let got_data = self.comm.all_to_all_v(&reply_data)?;
        let local_ids: Vec<u64> = ids
            .iter()
            .zip(&owners)
            .filter(|(_, &o)| o == me)
            .map(|(&id, _)| id)
            .collect();
        let (local_counts, local_data) = answer_all(&local_ids)?;

        // Merge in the order of `ids`: cursors into each owner's reply stream.
        let mut counts = Vec::with_capacity(ids.len());
        let mut data = Vec::new();
        let mut next_item = vec![0usize; size];
        let mut next_val = vec![0usize; size];
        let (mut li, mut lv) = (0usize, 0usize);
        for &o in &owners {
            let (c, src): (usize, &[T]) = if o == me {
                let c = local_counts[li] as usize;
                li += 1;
                let s = &local_data[lv..lv + c];
                lv += c;
                (c, s)
            } else {
                let c = *got_counts[o].get(next_item[o]).ok_or_else(|| Error::Rank {
                    rank: me,
                    msg: format!("rank {o} answered fewer items than asked"),
                })? as usize;
                next_item[o] += 1;
                let start = next_val[o];
                next_val[o] += c;
                let s = got_data[o]
                    .get(start..start + c)
                    .ok_or_else(|| Error::Rank {
                        rank: me,
                        msg: format!("rank {o} answered fewer values than it announced"),
                    })?;
                (c, s)
            };
            counts.push(c as u32);
            data.extend_from_slice(src);
        }
        Ok((counts, data))
    }

    /// All global ids in blocks of `block`, in order, for exchanges rank 0 drives: `(first id,
    /// ids)` with the block's ids on rank 0 and none elsewhere (every rank takes part in each
    /// block's exchange, so rank 0's memory does not grow with the graph).
    pub fn root_id_blocks(&self, block: u64) -> impl Iterator<Item = (u64, Vec<u64>)> + '_ {
        let n = self.part.meta.num_nodes;
        let block = block.max(1);
        let root = self.comm.is_root();
        (0..n).step_by(block as usize).map(move |start| {
            let ids = if root {
                (start..(start + block).min(n)).collect()
            } else {
                Vec::new()
            };
            (start, ids)
        })
    }

    /// Rows of a per-owned-node table (`dim` columns, indexed by local row) for any global ids:
    /// owned rows are copied, others fetched from their owners.
    pub fn exchange_rows(&self, ids: &[u64], dim: usize, local_table: &[f32]) -> Result<Vec<f32>> {
        // Rows have one width, so unlike `ask_owners_batch` nothing is counted or merged: each
        // row is copied once, from the local table or from its owner's reply, straight to its
        // place (at W = 1 the generic merge copied every row three times).
        let me = self.rank();
        let first = self.part.first_node();
        let size = self.comm.size();
        let (owners, requests) = self.route(ids);
        // Per remote id, its index in the request to its owner.
        let mut next = vec![0usize; size];
        let slot: Vec<usize> = owners
            .iter()
            .map(|&o| {
                next[o] += 1;
                next[o] - 1
            })
            .collect();
        let asked: Vec<usize> = requests.iter().map(Vec::len).collect();
        let incoming = self.comm.all_to_all_v(&requests)?;
        drop(requests);
        let mut replies: Vec<Vec<f32>> = Vec::with_capacity(size);
        for req in &incoming {
            self.check_owned(req)?;
            let mut out = vec![0f32; req.len() * dim];
            if dim > 0 {
                out.par_chunks_mut(dim)
                    .zip(req.par_iter())
                    .for_each(|(row, &id)| {
                        let i = (id - first) as usize;
                        row.copy_from_slice(&local_table[i * dim..(i + 1) * dim]);
                    });
            }
            replies.push(out);
        }
        drop(incoming);
        let got = self.comm.all_to_all_v(&replies)?;
        drop(replies);
        for (o, (rows, &asked)) in got.iter().zip(&asked).enumerate() {
            if rows.len() != asked * dim {
                return Err(Error::Rank {
                    rank: me,
                    msg: format!(
                        "rank {o} answered {} values for {asked} rows of width {dim}",
                        rows.len()
                    ),
                });
            }
        }
        let mut out = vec![0f32; ids.len() * dim];
        if dim > 0 {
            out.par_chunks_mut(dim)
                .zip(ids.par_iter().zip(owners.par_iter().zip(slot.par_iter())))
                .for_each(|(row, (&id, (&o, &k)))| {
                    let src = if o == me {
                        let i = (id - first) as usize;
                        &local_table[i * dim..(i + 1) * dim]
                    } else {
                        &got[o][k * dim..(k + 1) * dim]
                    };
                    row.copy_from_slice(src);
                });
        }
        Ok(out)
    }

    /// Feature rows of `ids` (row-major), from this rank, the cache, or the owners.
    pub fn fetch_features(&self, ids: &[u64]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.feature_dim()];
        self.fetch_features_into(ids, &mut out)?;
        Ok(out)
    }

    /// `fetch_features` into `out` (`ids.len() x feature_dim`, every row overwritten).
    pub fn fetch_features_into(&self, ids: &[u64], out: &mut [f32]) -> Result<()> {
        let f = self.feature_dim();
        if out.len() != ids.len() * f {
            return Err(Error::Other(format!(
                "feature buffer holds {} values, {} rows of {f} need {}",
                out.len(),
                ids.len(),
                ids.len() * f
            )));
        }
        let at = self.locate_features(ids)?;
        let (owned, cached) = (&self.part.features, &self.cache.rows);
        let first_cached = self.part.num_local_nodes();
        if f > 0 {
            out.par_chunks_mut(f)
                .zip(at.rows.par_iter())
                .for_each(|(row, &r)| {
                    let r = r as usize;
                    if r < first_cached {
                        row.copy_from_slice(&owned[r * f..(r + 1) * f]);
                    } else if r != FETCHED as usize {
                        let c = r - first_cached;
                        row.copy_from_slice(&cached[c * f..(c + 1) * f]);
                    }
                });
            for (row, &i) in at.fetched.chunks_exact(f).zip(&at.fetched_pos) {
                out[i as usize * f..(i as usize + 1) * f].copy_from_slice(row);
            }
        }
        Ok(())
    }

    /// The rows this rank can serve without asking: its own feature rows (local row order), then
    /// the cached remote rows. `locate_features` indexes this pair as one table.
    pub fn resident_features(&self) -> (&[f32], &[f32]) {
        (&self.part.features, &self.cache.rows)
    }

    /// Where the feature row of each of `ids` is: its row in `resident_features()` (owned rows
    /// first, then cached ones), or `FETCHED` with the row fetched from its owner. A collective
    /// (every rank calls it, even with nothing to fetch).
    pub fn locate_features(&self, ids: &[u64]) -> Result<FeatureLocations> {
        let first = self.part.first_node();
        let first_cached = self.part.num_local_nodes() as u64;
        let mut rows = Vec::with_capacity(ids.len());
        let mut fetched_pos = Vec::new();
        let mut missing_ids = Vec::new();
        let mut hits = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            if self.part.owns(id) {
                rows.push((id - first) as u32);
                continue;
            }
            if let Some(&c) = self.cache.index.get(&id) {
                hits += 1;
                rows.push((first_cached + c as u64) as u32);
            } else {
                rows.push(FETCHED);
                fetched_pos.push(i as u32);
                missing_ids.push(id);
            }
        }
        self.cache.hits.fetch_add(hits, Ordering::Relaxed);
        self.cache
            .lookups
            .fetch_add(hits + missing_ids.len() as u64, Ordering::Relaxed);
        let fetched = self.exchange_rows(&missing_ids, self.feature_dim(), &self.part.features)?;
        Ok(FeatureLocations {
            rows,
            fetched_pos,
            fetched,
        })
    }

    /// Distinct remote neighbours of this rank's nodes, ascending (the halo that layer-wise
    /// inference exchanges embeddings for).
    pub fn halo(&self) -> Vec<u64> {
        let mut ids = self.remote_references();
        ids.dedup();
        ids
    }

    /// Every reference of this rank's adjacency to a node owned elsewhere, sorted (a node appears
    /// once per edge that names it).
    fn remote_references(&self) -> Vec<u64> {
        let mut refs: Vec<u64> = self
            .part
            .indices
            .par_iter()
            .map(|&v| v as u64)
            .filter(|&v| !self.part.owns(v))
            .collect();
        refs.par_sort_unstable();
        refs
    }

    fn fill_cache(&mut self, cache_rows: usize) -> Result<()> {
        // Reference counts of remote neighbours; the most referenced are cached (ties: lower id).
        let refs = self.remote_references();
        let mut counted: Vec<(u64, u64)> = Vec::new();
        for id in refs {
            match counted.last_mut() {
                Some((last, c)) if *last == id => *c += 1,
                _ => counted.push((id, 1)),
            }
        }
        counted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counted.truncate(cache_rows);
        let mut ids: Vec<u64> = counted.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        let f = self.feature_dim();
        let rows = self.exchange_rows(&ids, f, &self.part.features)?;
        self.cache.index = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        self.cache.rows = rows;
        Ok(())
    }
}

impl DistGraph<'_> {
    /// Samples `nodes` anywhere in the graph: owned ones (asked here or by other ranks) with
    /// `local`, the others by their owners in one exchange. Every owner uses the same per-node rule
    /// and stream, so the result depends neither on who asked nor on which sampler an owner runs.
    pub fn sample_routed(
        &self,
        local: &dyn NeighborSource,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()> {
        let (counts, nbrs) = self.ask_owners_batch(nodes, |req: &[u64]| {
            let draws: Option<Vec<(i32, Stream)>> = {
                let mut first = self
                    .first_draws
                    .lock()
                    .map_err(|_| Error::Other("sampler state poisoned by a panic".into()))?;
                first.as_mut().map(|memo| {
                    req.iter()
                        .map(|&id| *memo.entry(id).or_insert((fanout, stream)))
                        .collect()
                })
            };
            match draws {
                Some(d) if d.iter().any(|&x| x != (fanout, stream)) => {
                    sample_with_draws(local, req, &d)
                }
                _ => {
                    let (mut counts, mut nbrs) = (Vec::new(), Vec::new());
                    local.sample_neighbors(req, fanout, stream, &mut counts, &mut nbrs)?;
                    Ok((counts, nbrs))
                }
            }
        })?;
        *out_counts = counts;
        *out_nbrs = nbrs;
        Ok(())
    }

    /// Starts (`Some`) or ends (`None`) a batch: under `Subgraph` on several ranks, owned nodes
    /// remember their first draw until the batch ends. On one rank every node is asked once per
    /// batch anyway.
    fn set_rule(&self, rule: Option<SamplingRule>) {
        let state =
            (rule == Some(SamplingRule::Subgraph) && self.comm.size() > 1).then(NodeMap::default);
        if let Ok(mut first) = self.first_draws.lock() {
            *first = state;
        }
    }
}

/// Samples each of `nodes` with its own draw (fan-out and stream), grouping the nodes that share
/// one, and returns counts and neighbours in the order of `nodes`.
fn sample_with_draws(
    local: &dyn NeighborSource,
    nodes: &[u64],
    draws: &[(i32, Stream)],
) -> Result<(Vec<u32>, Vec<u64>)> {
    let mut distinct: Vec<(i32, Stream)> = Vec::new();
    for d in draws {
        if !distinct.contains(d) {
            distinct.push(*d);
        }
    }
    // Per group: its nodes' results, and where each node sits in them.
    let mut group_of = vec![(0usize, 0usize); nodes.len()];
    let mut results = Vec::with_capacity(distinct.len());
    for (g, &(fanout, stream)) in distinct.iter().enumerate() {
        let members: Vec<u64> = nodes
            .iter()
            .zip(draws)
            .enumerate()
            .filter(|(_, (_, d))| **d == (fanout, stream))
            .map(|(i, (&n, _))| {
                group_of[i] = (g, 0);
                n
            })
            .collect();
        let (mut counts, mut nbrs) = (Vec::new(), Vec::new());
        local.sample_neighbors(&members, fanout, stream, &mut counts, &mut nbrs)?;
        let mut starts = Vec::with_capacity(counts.len());
        let mut acc = 0usize;
        for &c in &counts {
            starts.push(acc);
            acc += c as usize;
        }
        results.push((counts, nbrs, starts));
    }
    let mut next = vec![0usize; distinct.len()];
    for slot in group_of.iter_mut() {
        slot.1 = next[slot.0];
        next[slot.0] += 1;
    }
    let mut counts = Vec::with_capacity(nodes.len());
    let mut nbrs = Vec::new();
    for &(g, k) in &group_of {
        let (c, n, starts) = &results[g];
        counts.push(c[k]);
        nbrs.extend_from_slice(&n[starts[k]..starts[k] + c[k] as usize]);
    }
    Ok((counts, nbrs))
}

/// The distributed graph with owned nodes sampled by a given local sampler (the backend's, e.g.
/// on a GPU) instead of `LocalCsr`.
pub struct RoutedSampler<'g, 'l> {
    pub graph: &'g DistGraph<'g>,
    pub local: &'l dyn NeighborSource,
}

impl NeighborSource for RoutedSampler<'_, '_> {
    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()> {
        self.graph
            .sample_routed(self.local, nodes, fanout, stream, out_counts, out_nbrs)
    }

    fn relabel(&self, frontier: &[u64], nbrs: &[u64]) -> Result<Option<(Vec<u64>, Vec<u32>)>> {
        self.local.relabel(frontier, nbrs)
    }

    fn set_batch_rule(&self, rule: Option<SamplingRule>) {
        self.graph.set_rule(rule);
    }
}

impl NeighborSource for DistGraph<'_> {
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
        let local = LocalCsr::new(self.part);
        self.sample_routed(&local, nodes, fanout, stream, out_counts, out_nbrs)
    }

    fn set_batch_rule(&self, rule: Option<SamplingRule>) {
        self.set_rule(rule);
    }
}
