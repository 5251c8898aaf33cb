//! Which part each node goes to (`assign_parts`): the ordered node stream (seeded hash, input or
//! time order) cut at training-edge quantiles, or streaming Linear Deterministic Greedy that fills
//! parts up to a training-edge capacity, with a final rebalancing pass; and the edge cut of an
//! assignment. Nothing here reads or writes files.

use rayon::prelude::*;

use super::{Method, PartitionOptions, RangeOrder};
use crate::error::{Error, Result};
use crate::graph::store::GraphPart;
use crate::sample::rng::{Purpose, Stream};

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
pub(super) fn cut_at_quantiles(order: &[u32], weight: &[u64], parts: usize) -> Vec<u32> {
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
