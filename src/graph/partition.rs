//! `shardsage partition`: splits a dataset file into `P` part files with contiguous node-id ranges,
//! plus `manifest.json`.
//!
//! Three steps: assign every node to a part (`assign_parts`: hash order, input or time order, or
//! streaming Linear Deterministic Greedy), relabel nodes so that part `p` owns
//! `[offset[p], offset[p+1])` keeping their relative input order (`Relabel`), and remap every array
//! into one `GraphPart` per part (`build_part`), written one at a time so that memory stays close
//! to the dataset's own size. Every edge is stored once, at the part owning its source.
//!
//! Every method balances training edges per part (each part trains the same number of steps): the
//! ordered node stream is cut at training-edge quantiles, and LDG fills parts up to a
//! training-edge capacity. The new part set replaces an old one only once every new file is
//! written (staging directory, then renames).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::manifest::{
    file_digest, part_file_name, Balance, FileEntry, Manifest, PartStats, MANIFEST_NAME,
};
use crate::graph::store::GraphPart;
use crate::sample::rng::{Purpose, Stream};

/// How nodes are assigned to parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Seeded hash order, cut at training-edge quantiles.
    Random,
    /// Input (or `--by time`) order, cut at training-edge quantiles.
    Range,
    /// Streaming Linear Deterministic Greedy: each node joins the part holding most of its
    /// already-assigned neighbours, weighted by the part's remaining training-edge capacity.
    Ldg,
}

/// The node order `range` cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RangeOrder {
    /// The order of the node ids in the dataset (the input's order after relabelling).
    Input,
    /// Ascending node time (year), ties by id.
    Time,
}

/// What `partition` is asked to do.
#[derive(Clone, Debug)]
pub struct PartitionOptions {
    pub parts: usize,
    pub method: Method,
    pub by: RangeOrder,
    pub seed: u64,
}

impl PartitionOptions {
    /// The name stored in the part files and the manifest.
    pub fn method_name(&self) -> &'static str {
        match (self.method, self.by) {
            (Method::Random, _) => "random",
            (Method::Range, RangeOrder::Input) => "range",
            (Method::Range, RangeOrder::Time) => "range-time",
            (Method::Ldg, _) => "ldg",
        }
    }
}

/// LDG fills a part up to this multiple of the mean training edges per part.
const LDG_EDGE_SLACK: f64 = 1.02;
/// ... and up to this multiple of the mean node count (nodes without training edges cost no
/// training-edge capacity; this keeps them from piling into one part).
const LDG_NODE_SLACK: f64 = 1.10;
/// Relative distance from the mean training edges per part that triggers a repair after LDG, and
/// the distance the repair aims for.
const REBALANCE_TRIGGER: f64 = 0.035;
const REBALANCE_TARGET: f64 = 0.02;
/// Passes of restreaming LDG (the first is plain streaming LDG).
const LDG_PASSES: usize = 4;
const UNASSIGNED: u32 = u32::MAX;

/// Training edges whose source is each node (the weight every method balances).
pub fn train_out_degree(g: &GraphPart) -> Vec<u64> {
    let first = g.first_node();
    let mut w = vec![0u64; g.num_local_nodes()];
    for e in &g.train_edges {
        w[(e[0] - first) as usize] += 1;
    }
    w
}

/// The part of every node of a one-part dataset.
pub fn assign_parts(g: &GraphPart, opts: &PartitionOptions) -> Result<Vec<u32>> {
    let n = g.num_local_nodes();
    let p = opts.parts;
    if p == 0 {
        return Err(Error::config("parts", "must be at least 1"));
    }
    if p > n {
        return Err(Error::config(
            "parts",
            format!("{p} parts for a graph of {n} nodes: every part needs at least one node"),
        ));
    }
    if p > u32::MAX as usize - 1 {
        return Err(Error::config("parts", format!("{p} is too many")));
    }
    let mut weight = train_out_degree(g);
    if weight.iter().all(|&w| w == 0) {
        // No training edges at all: balance nodes instead.
        weight.iter_mut().for_each(|w| *w = 1);
    }
    match opts.method {
        Method::Random => {
            let s = Stream::new(opts.seed, 0, 0, Purpose::Partition as u64);
            let mut keyed: Vec<(u64, u32)> = (0..n as u32)
                .into_par_iter()
                .map(|v| (s.at(v as u64, 0), v))
                .collect();
            keyed.par_sort_unstable();
            let order: Vec<u32> = keyed.into_iter().map(|(_, v)| v).collect();
            Ok(cut_at_quantiles(&order, &weight, p))
        }
        Method::Range => {
            let mut order: Vec<u32> = (0..n as u32).collect();
            if opts.by == RangeOrder::Time {
                let time = g.time.as_ref().ok_or_else(|| {
                    Error::config("by", "the dataset has no node times (/node/time)")
                })?;
                order.par_sort_by_key(|&v| time[v as usize]); // stable: input order within a time
            }
            Ok(cut_at_quantiles(&order, &weight, p))
        }
        Method::Ldg => Ok(linear_deterministic_greedy(g, &weight, p)),
    }
}

/// Cuts the node stream `order` into `parts` consecutive runs of about equal total weight: a node
/// joins the part whose quantile range holds the midpoint of its weight, so each boundary is off
/// by at most half a node's weight. Every part gets at least one node (`parts <= order.len()`).
fn cut_at_quantiles(order: &[u32], weight: &[u64], parts: usize) -> Vec<u32> {
    let total: u64 = order.iter().map(|&v| weight[v as usize]).sum();
    let n = order.len();
    let mut assign = vec![0u32; weight.len()];
    let mut part = 0usize;
    let mut cum = 0u64;
    for (i, &v) in order.iter().enumerate() {
        let w = weight[v as usize];
        // The part whose range [p, p+1) * total / parts holds this node's midpoint cum + w/2.
        let quantile = if total == 0 {
            0
        } else {
            (((2 * cum + w) as u128 * parts as u128) / (2 * total as u128)) as usize
        };
        // One part at a time (no empty part), and enough nodes left for the remaining parts.
        part = quantile
            .min(if i == 0 { 0 } else { part + 1 })
            .min(parts - 1)
            .max(part)
            .max((parts + i).saturating_sub(n));
        assign[v as usize] = part as u32;
        cum += w;
    }
    assign
}

/// Streaming LDG in input order over the message-passing CSR, with a training-edge capacity per
/// part (and a looser node capacity); a node that fits nowhere joins the least-loaded part.
/// The stream is replayed `LDG_PASSES` times (restreaming LDG): later passes see every
/// neighbour's part from the pass before, which lowers the cut at the same balance.
fn linear_deterministic_greedy(g: &GraphPart, weight: &[u64], parts: usize) -> Vec<u32> {
    let n = g.num_local_nodes();
    let total: u64 = weight.iter().sum();
    let caps = Capacity {
        edges: (total as f64 / parts as f64 * LDG_EDGE_SLACK).max(1.0),
        nodes: (n as f64 / parts as f64 * LDG_NODE_SLACK).max(1.0),
    };
    let mut assign = vec![UNASSIGNED; n];
    let mut node_load = Vec::new();
    for pass in 0..LDG_PASSES {
        node_load = ldg_pass(g, weight, parts, &caps, &mut assign);
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "ldg pass {pass}: edge cut {:.4}",
                edge_cut(g, &assign, parts).0
            );
        }
    }
    rebalance_training_edges(g, weight, parts, &mut assign);
    for p in node_load.iter_mut() {
        *p = 0;
    }
    for &p in &assign {
        node_load[p as usize] += 1;
    }
    // A part left empty (tiny graphs): move it one node from the fullest part.
    for p in 0..parts {
        if node_load[p] == 0 {
            if let Some(donor) = (0..parts).max_by_key(|&q| node_load[q]) {
                if let Some(v) = (0..n).rev().find(|&v| assign[v] == donor as u32) {
                    assign[v] = p as u32;
                    node_load[donor] -= 1;
                    node_load[p] += 1;
                }
            }
        }
    }
    assign
}

/// LDG keeps training edges within its capacity, but fallbacks can still leave a part light or
/// heavy. While the heaviest or lightest part is more than `REBALANCE_TRIGGER` off the mean, move
/// the nodes of the heaviest part that have the most neighbours in the lightest one (and the
/// fewest at home) there, until both are within `REBALANCE_TARGET`.
fn rebalance_training_edges(g: &GraphPart, weight: &[u64], parts: usize, assign: &mut [u32]) {
    let total: u64 = weight.iter().sum();
    if parts < 2 || total == 0 {
        return;
    }
    let mean = total as f64 / parts as f64;
    let mut load = vec![0u64; parts];
    for (v, &p) in assign.iter().enumerate() {
        load[p as usize] += weight[v];
    }
    for _round in 0..parts * parts {
        let heavy = (0..parts)
            .max_by_key(|&p| (load[p], std::cmp::Reverse(p)))
            .unwrap_or(0);
        let light = (0..parts).min_by_key(|&p| (load[p], p)).unwrap_or(0);
        let off = |l: u64| (l as f64 - mean).abs() / mean;
        if off(load[heavy]) <= REBALANCE_TRIGGER && off(load[light]) <= REBALANCE_TRIGGER {
            return;
        }
        let mut candidates: Vec<(i64, usize)> = (0..assign.len())
            .filter(|&v| assign[v] as usize == heavy && weight[v] > 0)
            .map(|v| {
                let row = &g.indices[g.indptr[v] as usize..g.indptr[v + 1] as usize];
                let gain: i64 = row
                    .iter()
                    .map(|&u| match assign[u as usize] as usize {
                        p if p == light => 1,
                        p if p == heavy => -1,
                        _ => 0,
                    })
                    .sum();
                (-gain, v)
            })
            .collect();
        candidates.sort_unstable();
        let mut moved = false;
        for (_, v) in candidates {
            let w = weight[v];
            let settled = (load[heavy] as f64) <= mean * (1.0 + REBALANCE_TARGET)
                && (load[light] as f64) >= mean * (1.0 - REBALANCE_TARGET);
            if settled {
                break;
            }
            if load[heavy] >= load[light] + 2 * w {
                assign[v] = light as u32;
                load[heavy] -= w;
                load[light] += w;
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

struct Capacity {
    edges: f64,
    nodes: f64,
}

/// One LDG pass over all nodes in input order; `assign` holds the previous pass's parts (or
/// `UNASSIGNED`) and is overwritten node by node. Returns the node count per part.
fn ldg_pass(
    g: &GraphPart,
    weight: &[u64],
    parts: usize,
    cap: &Capacity,
    assign: &mut [u32],
) -> Vec<u64> {
    let mut edge_load = vec![0u64; parts];
    let mut node_load = vec![0u64; parts];
    let mut shared = vec![0u32; parts];
    let mut touched: Vec<u32> = Vec::new();
    let fill = |p: usize, edge_load: &[u64], node_load: &[u64]| {
        edge_load[p] as f64 / cap.edges + node_load[p] as f64 / cap.nodes
    };
    for v in 0..assign.len() {
        let w = weight[v];
        for &u in &g.indices[g.indptr[v] as usize..g.indptr[v + 1] as usize] {
            let pu = assign[u as usize];
            if pu != UNASSIGNED {
                if shared[pu as usize] == 0 {
                    touched.push(pu);
                }
                shared[pu as usize] += 1;
            }
        }
        let mut best: Option<(usize, f64)> = None;
        for p in 0..parts {
            if (edge_load[p] + w) as f64 > cap.edges || (node_load[p] + 1) as f64 > cap.nodes {
                continue;
            }
            let score = shared[p] as f64 * (1.0 - edge_load[p] as f64 / cap.edges);
            let better = match best {
                None => true,
                Some((b, bs)) => {
                    score > bs
                        || (score == bs
                            && fill(p, &edge_load, &node_load) < fill(b, &edge_load, &node_load))
                }
            };
            if better {
                best = Some((p, score));
            }
        }
        let chosen = match best {
            Some((p, _)) => p,
            None => (0..parts)
                .min_by(|&a, &b| (edge_load[a], node_load[a]).cmp(&(edge_load[b], node_load[b])))
                .unwrap_or(0),
        };
        assign[v] = chosen as u32;
        edge_load[chosen] += w;
        node_load[chosen] += 1;
        for &p in &touched {
            shared[p as usize] = 0;
        }
        touched.clear();
    }
    node_load
}

/// Share of message-passing CSR entries whose endpoints are in different parts, and the count of
/// such entries per part (by the row's part).
pub fn edge_cut(g: &GraphPart, assign: &[u32], parts: usize) -> (f64, Vec<u64>) {
    let per_row: Vec<u64> = (0..g.num_local_nodes())
        .into_par_iter()
        .map(|v| {
            let pv = assign[v];
            g.indices[g.indptr[v] as usize..g.indptr[v + 1] as usize]
                .iter()
                .filter(|&&u| assign[u as usize] != pv)
                .count() as u64
        })
        .collect();
    let mut per_part = vec![0u64; parts];
    for (v, c) in per_row.iter().enumerate() {
        per_part[assign[v] as usize] += c;
    }
    let total = g.indices.len() as f64;
    let cut = per_part.iter().sum::<u64>() as f64;
    (if total > 0.0 { cut / total } else { 0.0 }, per_part)
}

/// The relabelling: part `p` owns new ids `offset[p]..offset[p+1]`, in input order within a part.
pub struct Relabel {
    pub offset: Vec<u64>,
    /// New id of each old id.
    pub new_id: Vec<u32>,
    /// Old id of each new id.
    pub old_id: Vec<u32>,
}

impl Relabel {
    pub fn new(assign: &[u32], parts: usize) -> Relabel {
        let mut offset = vec![0u64; parts + 1];
        for &p in assign {
            offset[p as usize + 1] += 1;
        }
        for p in 0..parts {
            offset[p + 1] += offset[p];
        }
        let mut next: Vec<u64> = offset[..parts].to_vec();
        let mut new_id = vec![0u32; assign.len()];
        let mut old_id = vec![0u32; assign.len()];
        for (v, &p) in assign.iter().enumerate() {
            let id = next[p as usize];
            next[p as usize] += 1;
            new_id[v] = id as u32;
            old_id[id as usize] = v as u32;
        }
        Relabel {
            offset,
            new_id,
            old_id,
        }
    }
}

/// Positions of the items of each part, grouped by part in input order (a counting sort).
struct Grouped {
    start: Vec<usize>,
    index: Vec<usize>,
}

impl Grouped {
    fn new(parts: usize, items: usize, part_of: impl Fn(usize) -> usize) -> Grouped {
        let mut start = vec![0usize; parts + 1];
        for i in 0..items {
            start[part_of(i) + 1] += 1;
        }
        for p in 0..parts {
            start[p + 1] += start[p];
        }
        let mut next = start[..parts].to_vec();
        let mut index = vec![0usize; items];
        for i in 0..items {
            let p = part_of(i);
            index[next[p]] = i;
            next[p] += 1;
        }
        Grouped { start, index }
    }
    fn of(&self, p: usize) -> &[usize] {
        &self.index[self.start[p]..self.start[p + 1]]
    }
}

/// Builds one part from the dataset: rows, features, node data, edges with owned sources and
/// their negatives, node splits — all in new ids.
fn build_part(
    g: &GraphPart,
    relabel: &Relabel,
    p: usize,
    edges: &[Grouped; 3],
    method: &str,
) -> GraphPart {
    let parts = relabel.offset.len() - 1;
    let lo = relabel.offset[p] as usize;
    let hi = relabel.offset[p + 1] as usize;
    let members = &relabel.old_id[lo..hi];
    let f = g.meta.feature_dim as usize;
    let new_id = &relabel.new_id;
    let map = |v: u64| new_id[v as usize] as u64;

    let mut indptr = Vec::with_capacity(members.len() + 1);
    indptr.push(0u64);
    for &v in members {
        let v = v as usize;
        let len = g.indptr[v + 1] - g.indptr[v];
        indptr.push(indptr.last().copied().unwrap_or(0) + len);
    }
    let mut indices = vec![0u32; *indptr.last().unwrap_or(&0) as usize];
    {
        // Each row remapped and sorted, in parallel over rows.
        let mut rows: Vec<&mut [u32]> = Vec::with_capacity(members.len());
        let mut rest = indices.as_mut_slice();
        for w in indptr.windows(2) {
            let (row, tail) = rest.split_at_mut((w[1] - w[0]) as usize);
            rows.push(row);
            rest = tail;
        }
        rows.into_par_iter()
            .zip(members.par_iter())
            .for_each(|(row, &v)| {
                let v = v as usize;
                let src = &g.indices[g.indptr[v] as usize..g.indptr[v + 1] as usize];
                for (d, &u) in row.iter_mut().zip(src) {
                    *d = new_id[u as usize];
                }
                row.sort_unstable();
            });
    }
    let mut features = vec![0f32; members.len() * f];
    if f > 0 {
        features
            .par_chunks_mut(f)
            .zip(members.par_iter())
            .for_each(|(row, &v)| row.copy_from_slice(&g.features[v as usize * f..][..f]));
    }
    let gather = |a: &[i64]| members.iter().map(|&v| a[v as usize]).collect::<Vec<_>>();
    let orig_id = members.iter().map(|&v| g.orig_id[v as usize]).collect();

    let take_edges = |all: &[[u64; 2]], idx: &[usize]| -> Vec<[u64; 2]> {
        idx.iter()
            .map(|&i| [map(all[i][0]), map(all[i][1])])
            .collect()
    };
    let k = g.num_neg;
    let take_negs = |all: &[u64], idx: &[usize]| -> Vec<u64> {
        let mut out = Vec::with_capacity(idx.len() * k);
        for &i in idx {
            out.extend(all[i * k..(i + 1) * k].iter().map(|&v| map(v)));
        }
        out
    };
    let owned = |idx: &[u64]| -> Vec<u64> {
        idx.iter()
            .map(|&v| map(v))
            .filter(|&v| v >= lo as u64 && v < hi as u64)
            .collect()
    };

    let mut meta = g.meta.clone();
    meta.num_parts = parts as u32;
    meta.part_id = p as u32;
    meta.node_offset = relabel.offset.clone();
    meta.partition_method = method.to_string();
    GraphPart {
        meta,
        indptr,
        indices,
        features,
        orig_id,
        time: g.time.as_deref().map(gather),
        label: g.label.as_deref().map(gather),
        train_edges: take_edges(&g.train_edges, edges[0].of(p)),
        valid_edges: take_edges(&g.valid_edges, edges[1].of(p)),
        test_edges: take_edges(&g.test_edges, edges[2].of(p)),
        valid_neg: take_negs(&g.valid_neg, edges[1].of(p)),
        test_neg: take_negs(&g.test_neg, edges[2].of(p)),
        num_neg: k,
        train_idx: owned(&g.train_idx),
        valid_idx: owned(&g.valid_idx),
        test_idx: owned(&g.test_idx),
    }
}

/// max / mean of a list of counts (1.0 when all are zero).
pub fn max_over_mean(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 || counts.is_empty() {
        return 1.0;
    }
    let mean = total as f64 / counts.len() as f64;
    *counts.iter().max().unwrap_or(&0) as f64 / mean
}

/// Partitions the dataset file `dataset` into `out` and returns the manifest written there.
/// `command` is recorded in the manifest.
pub fn partition_dataset(
    dataset: &Path,
    out: &Path,
    opts: &PartitionOptions,
    command: Vec<String>,
) -> Result<Manifest> {
    if opts.parts == 0 {
        return Err(Error::config("parts", "must be at least 1"));
    }
    let t0 = Instant::now();
    let g = GraphPart::read(dataset)?;
    if g.meta.num_parts != 1 {
        return Err(Error::invalid(
            dataset,
            format!(
                "is part {} of {}; partition reads a dataset file (one part)",
                g.meta.part_id, g.meta.num_parts
            ),
        ));
    }
    log::info!(
        "partition: read {} ({} nodes, {} CSR entries) in {:.1}s",
        dataset.display(),
        g.num_local_nodes(),
        g.indices.len(),
        t0.elapsed().as_secs_f64()
    );
    let parts = opts.parts;
    let t1 = Instant::now();
    let assign = assign_parts(&g, opts)?;
    let (cut, cut_per_part) = edge_cut(&g, &assign, parts);
    log::info!(
        "partition: {} assignment in {:.1}s, edge cut {:.4}",
        opts.method_name(),
        t1.elapsed().as_secs_f64(),
        cut
    );
    let relabel = Relabel::new(&assign, parts);
    let owner = |v: u64| assign[v as usize] as usize;
    let edges = [
        Grouped::new(parts, g.train_edges.len(), |i| owner(g.train_edges[i][0])),
        Grouped::new(parts, g.valid_edges.len(), |i| owner(g.valid_edges[i][0])),
        Grouped::new(parts, g.test_edges.len(), |i| owner(g.test_edges[i][0])),
    ];
    drop(assign);

    let staging = StagedDir::create(out)?;
    let mut stats = Vec::with_capacity(parts);
    let (mut build_s, mut write_s) = (0.0, 0.0);
    for (p, &cut_edges) in cut_per_part.iter().enumerate() {
        let t = Instant::now();
        let part = build_part(&g, &relabel, p, &edges, opts.method_name());
        let name = part_file_name(p);
        build_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        part.write(&staging.path.join(&name))?;
        write_s += t.elapsed().as_secs_f64();
        stats.push(PartStats {
            part_id: p as u32,
            file: name,
            nodes: part.num_local_nodes() as u64,
            csr_edges: part.indices.len() as u64,
            train_edges: part.train_edges.len() as u64,
            valid_edges: part.valid_edges.len() as u64,
            test_edges: part.test_edges.len() as u64,
            cut_edges,
        });
    }
    let t = Instant::now();
    let mut files = Vec::with_capacity(parts);
    for s in &stats {
        let (bytes, sha256) = file_digest(&staging.path.join(&s.file))?;
        files.push(FileEntry {
            name: s.file.clone(),
            bytes,
            sha256,
        });
    }
    log::info!(
        "partition: parts built in {build_s:.1}s, written in {write_s:.1}s, checksummed in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let col = |f: fn(&PartStats) -> u64| stats.iter().map(f).collect::<Vec<_>>();
    let manifest = Manifest {
        format_version: g.meta.format_version,
        dataset_name: g.meta.dataset_name.clone(),
        fingerprint: g.meta.fingerprint.clone(),
        num_parts: parts as u32,
        num_nodes: g.meta.num_nodes,
        num_edges: g.meta.num_edges,
        feature_dim: g.meta.feature_dim,
        node_offset: relabel.offset.clone(),
        method: opts.method_name().to_string(),
        seed: opts.seed,
        edge_cut: cut,
        balance: Balance {
            nodes: max_over_mean(&col(|s| s.nodes)),
            csr_edges: max_over_mean(&col(|s| s.csr_edges)),
            train_edges: max_over_mean(&col(|s| s.train_edges)),
        },
        parts: stats,
        command,
        seconds: t0.elapsed().as_secs_f64(),
        peak_rss_bytes: crate::util::peak_rss_bytes(),
        files,
    };
    if manifest.balance.train_edges > 1.05 {
        log::warn!(
            "training edges per part are {:.1}% above the mean in the fullest part: single nodes \
             carry too many edges for {parts} parts of this graph",
            (manifest.balance.train_edges - 1.0) * 100.0
        );
    }
    manifest.write(&staging.path.join(MANIFEST_NAME))?;
    staging.commit(parts)?;
    Ok(manifest)
}

/// A hidden staging directory inside the output directory; removed (with the output directory,
/// when this run created it) unless committed.
struct StagedDir {
    out: PathBuf,
    path: PathBuf,
    created_out: bool,
    committed: bool,
}

impl StagedDir {
    fn create(out: &Path) -> Result<StagedDir> {
        let created_out = !out.exists();
        if out.exists() && !out.is_dir() {
            return Err(Error::invalid(
                out,
                "output path exists and is not a directory",
            ));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let path = out.join(format!(".partition-staging-{}", std::process::id()));
        let staged = StagedDir {
            out: out.to_path_buf(),
            path: path.clone(),
            created_out,
            committed: false,
        };
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(staged)
    }

    /// Moves the new parts and manifest into place: the old manifest goes first (so a set caught
    /// half-replaced is never described by a manifest), stale parts of a larger set are removed,
    /// the new manifest comes last.
    fn commit(mut self, parts: usize) -> Result<()> {
        let manifest = self.out.join(MANIFEST_NAME);
        if manifest.exists() {
            std::fs::remove_file(&manifest).map_err(|e| Error::io(&manifest, e))?;
        }
        for p in 0..parts {
            let name = part_file_name(p);
            let from = self.path.join(&name);
            let to = self.out.join(&name);
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        let entries = std::fs::read_dir(&self.out).map_err(|e| Error::io(&self.out, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(idx) = parse_part_name(&name) {
                if idx >= parts {
                    let stale = entry.path();
                    std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
                }
            }
        }
        std::fs::rename(self.path.join(MANIFEST_NAME), &manifest)
            .map_err(|e| Error::io(&manifest, e))?;
        self.committed = true;
        let _ = std::fs::remove_dir_all(&self.path);
        if let Ok(d) = std::fs::File::open(&self.out) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
            if self.created_out {
                let _ = std::fs::remove_dir(&self.out);
            }
        }
    }
}

/// `part-00012.h5` -> 12.
fn parse_part_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("part-")?.strip_suffix(".h5")?;
    if digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// `shardsage partition`.
#[derive(clap::Args, Debug)]
pub struct PartitionArgs {
    /// The dataset file (from `ingest` or `generate`).
    #[arg(long, value_name = "FILE")]
    pub dataset: PathBuf,
    /// Number of parts P (train with a world size W that divides P).
    #[arg(long)]
    pub parts: usize,
    /// How nodes are assigned to parts.
    #[arg(long, value_enum, default_value_t = Method::Ldg)]
    pub method: Method,
    /// Node order for `--method range`.
    #[arg(long, value_enum, default_value_t = RangeOrder::Input)]
    pub by: RangeOrder,
    /// Seed of the `random` hash order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory of the parts and manifest.json (created if missing; an existing part
    /// set is replaced).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

pub fn run(args: &PartitionArgs) -> Result<()> {
    let started = Instant::now();
    let opts = PartitionOptions {
        parts: args.parts,
        method: args.method,
        by: args.by,
        seed: args.seed,
    };
    let m = partition_dataset(
        &args.dataset,
        &args.out_dir,
        &opts,
        std::env::args().collect(),
    )?;
    println!(
        "{:>6} {:>12} {:>14} {:>12} {:>10} {:>10} {:>8}",
        "part", "nodes", "csr_edges", "train", "valid", "test", "cut"
    );
    for s in &m.parts {
        println!(
            "{:>6} {:>12} {:>14} {:>12} {:>10} {:>10} {:>7.3}",
            s.part_id,
            s.nodes,
            s.csr_edges,
            s.train_edges,
            s.valid_edges,
            s.test_edges,
            if s.csr_edges > 0 {
                s.cut_edges as f64 / s.csr_edges as f64
            } else {
                0.0
            }
        );
    }
    println!(
        "method {} parts {} edge_cut {:.4} balance(max/mean) nodes {:.3} csr_edges {:.3} train_edges {:.3} seconds {:.1} peak_rss_mib {:.0}",
        m.method,
        m.num_parts,
        m.edge_cut,
        m.balance.nodes,
        m.balance.csr_edges,
        m.balance.train_edges,
        started.elapsed().as_secs_f64(),
        m.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "wrote {} parts and {} to {}",
        m.num_parts,
        MANIFEST_NAME,
        args.out_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_cut_balances_weight_and_leaves_no_part_empty() {
        let order: Vec<u32> = (0..1000).collect();
        let weight: Vec<u64> = (0..1000u64).map(|v| 1 + v % 7).collect();
        let assign = cut_at_quantiles(&order, &weight, 4);
        let mut load = [0u64; 4];
        for (v, &p) in assign.iter().enumerate() {
            load[p as usize] += weight[v];
        }
        let mean = load.iter().sum::<u64>() as f64 / 4.0;
        assert!(
            load.iter().all(|&l| (l as f64 - mean).abs() <= 7.0),
            "{load:?}"
        );
        assert!(
            assign.windows(2).all(|w| w[0] <= w[1]),
            "runs must be consecutive"
        );

        // One node carrying nearly all the weight, and zero-weight nodes: still P non-empty runs.
        let weight = [1000, 0, 0, 0, 1];
        let assign = cut_at_quantiles(&[0, 1, 2, 3, 4], &weight, 4);
        let mut seen = [false; 4];
        for &p in &assign {
            seen[p as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "{assign:?}");
        assert_eq!(assign[0], 0);
    }

    #[test]
    fn relabel_keeps_input_order_within_each_part() {
        let assign = [1, 0, 1, 2, 0];
        let r = Relabel::new(&assign, 3);
        assert_eq!(r.offset, vec![0, 2, 4, 5]);
        assert_eq!(r.old_id, vec![1, 4, 0, 2, 3]);
        for (new, &old) in r.old_id.iter().enumerate() {
            assert_eq!(r.new_id[old as usize] as usize, new);
        }
    }
}
