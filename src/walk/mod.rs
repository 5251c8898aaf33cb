//! Random walks over the partitioned graph: DeepWalk (p = q = 1) and node2vec's second-order
//! walks (return parameter p, in-out parameter q), the first stage of the random-walk embeddings.
//!
//! A walker lives on the rank that owns its current node and moves to the owner of the next one
//! after every step: one exchange per step, in lock-step over ranks, as the sampler's. Node2vec's
//! bias needs "is the candidate x a neighbour of the previous node", and that node may be owned
//! elsewhere. Candidates are drawn by rejection sampling against the bound max(1/p, 1, 1/q) (the
//! scheme of the distributed walk engine KnightKing): a uniform neighbour x of the current node
//! and a uniform u in [0, bound) per trial. Most trials are decided by u alone (x = prev: accept
//! iff u < 1/p; otherwise u below min(1, 1/q) accepts and u at or above max(1, 1/q) rejects
//! whatever x is), so only the rest ask; a walker asks about up to `ASKS_PER_ROUND` trials in one
//! batched round to the previous node's owner (answered locally when it is this rank), and its
//! step is the first accepted trial in trial order. Every draw is `hash(seed, walk, step, trial)`,
//! so the walks are the same at any world size however the rounds fall. The first step of a walk
//! is uniform (node2vec has no previous node there). A walk ends early at a node without
//! neighbours; walks follow the message-passing CSR (both directions for undirected graphs).
//!
//! On one rank (the part holds every node) a round's walks take all their steps in one pass,
//! without the per-step exchange and bookkeeping: `TrialScanner::whole_walks`.
//!
//! Walks are generated one round (`walks_per_node` rounds, one walk per node each) at a time, so
//! memory holds one round; `write_walks` stores them as a matrix in HDF5.

use rayon::prelude::*;

use crate::distributed::graph::DistGraph;
use crate::error::{Error, Result};
use crate::graph::store::{owner_of, GraphPart};
use crate::sample::rng::{below, unit_f32, IdStream, Purpose, Stream};

pub mod cli;
pub mod resume;
pub mod sgns;

/// Undecided trials a walker asks the previous node's owner about in one round.
pub const ASKS_PER_ROUND: usize = 4;

/// Walkers one thread advances together when whole walks stay on one part: their reads of the
/// adjacency are independent, so the core overlaps their cache misses.
const WALKERS_IN_FLIGHT: usize = 16;

/// A node id that no walk visits (padding after a walk that ended early, and "no previous node").
pub const NO_NODE: u32 = u32::MAX;

/// How walks are drawn.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WalkConfig {
    /// Nodes per walk, the start included.
    pub length: usize,
    /// Walks started from every node.
    pub walks_per_node: usize,
    /// Return parameter: a step back to the previous node has weight 1/p.
    pub p: f64,
    /// In-out parameter: a step to a node that is not a neighbour of the previous one has weight
    /// 1/q (a common neighbour has weight 1).
    pub q: f64,
    pub seed: u64,
}

impl WalkConfig {
    pub fn validate(&self) -> Result<()> {
        if self.length == 0 {
            return Err(Error::config("length", "a walk has at least 1 node"));
        }
        if self.walks_per_node == 0 {
            return Err(Error::config("walks_per_node", "must be at least 1"));
        }
        for (field, v) in [("p", self.p), ("q", self.q)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::config(
                    field,
                    format!("must be a positive number, not {v}"),
                ));
            }
        }
        Ok(())
    }

    /// DeepWalk: every step uniform, no rejection.
    pub fn first_order(&self) -> bool {
        self.p == 1.0 && self.q == 1.0
    }

    /// The rejection bound max(1/p, 1, 1/q).
    pub fn bound(&self) -> f64 {
        (1.0 / self.p).max(1.0).max(1.0 / self.q)
    }
}

/// One round of walks whose start nodes this rank owns, in start-node order: row `i` is the walk
/// from `first_node + i`, `length` nodes, padded with `NO_NODE` after a walk that ended early.
pub struct WalkRound {
    pub round: usize,
    pub first_node: u64,
    pub length: usize,
    pub nodes: Vec<u32>,
}

/// Takes one round of a rank's walks.
pub type RoundSink<'s> = dyn FnMut(&WalkRound) -> Result<()> + 's;

/// A walker: its walk (round * N + start), where it is, where it was, and its step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Walker {
    pub walk: u64,
    pub cur: u32,
    pub prev: u32,
    pub step: u32,
}

/// Where a walker's step stands between rounds of questions (see [`TrialScanner`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrialScan {
    /// The step once decided: `Some(Some(x))` moves to x, `Some(None)` ends the walk.
    pub decided: Option<Option<u32>>,
    /// The next trial to draw.
    pub next_trial: u64,
    /// Trials whose verdict needs "is x a neighbour of the previous node" from its owner:
    /// (x, u), the first `asked_len` slots, in trial order.
    pub asked: [(u32, f64); ASKS_PER_ROUND],
    pub asked_len: usize,
    /// A trial accepted without asking, after the asked ones.
    pub local_accept: Option<u32>,
}

/// The hot loop of a walk step: scans the trials of every undecided walker (`scans[i].decided`
/// is None) from its `next_trial` on, until an accept or `ASKS_PER_ROUND` trials that need a
/// question; a walker with no question left is decided. `HostTrials` runs it on the CPU, the
/// backend seam's `GraphOps::part_walker` hands out a device one (CUDA: `kernels/walk.cu`); both
/// give identical scans.
pub trait TrialScanner: Sync {
    fn scan(&self, cfg: &WalkConfig, walkers: &[Walker], scans: &mut [TrialScan]) -> Result<()>;

    /// Takes every step of one round's walks in place when the scanner's part holds all
    /// `num_nodes` nodes (one rank: no walker ever leaves it), with the draws and rule of the
    /// step-by-step scan, so the walks are the same. `nodes` is the round's matrix with each
    /// row's start node set and `NO_NODE` after it. Returns false (nothing done) where the
    /// scanner cannot: the walks then go step by step through [`TrialScanner::scan`].
    fn whole_walks(
        &self,
        _cfg: &WalkConfig,
        _round: usize,
        _num_nodes: u64,
        _nodes: &mut [u32],
    ) -> Result<bool> {
        Ok(false)
    }
}

/// The trial scan on the CPU (rayon) over a part's own adjacency: the CSR of the nodes
/// `first_node ..` (global neighbour ids, sorted per node).
pub struct HostTrials<'a> {
    pub first_node: u64,
    pub indptr: &'a [u64],
    pub indices: &'a [u32],
}

impl<'a> HostTrials<'a> {
    pub fn of(part: &'a GraphPart) -> Self {
        HostTrials {
            first_node: part.first_node(),
            indptr: &part.indptr,
            indices: &part.indices,
        }
    }
    fn owns(&self, id: u64) -> bool {
        id >= self.first_node && id - self.first_node < (self.indptr.len() - 1) as u64
    }
    fn neighbors(&self, id: u64) -> &'a [u32] {
        let i = (id - self.first_node) as usize;
        &self.indices[self.indptr[i] as usize..self.indptr[i + 1] as usize]
    }
}

/// The contract of every [`TrialScanner`]: one scan state per walker, and every walker at a
/// node of the part's nodes `first_node .. first_node + num_local`.
pub fn check_scan(
    walkers: &[Walker],
    scans: &[TrialScan],
    first_node: u64,
    num_local: u64,
) -> Result<()> {
    if walkers.len() != scans.len() {
        return Err(Error::Other(format!(
            "trial scan: {} walkers but {} scan states",
            walkers.len(),
            scans.len()
        )));
    }
    let outside =
        |w: &&Walker| (w.cur as u64) < first_node || w.cur as u64 - first_node >= num_local;
    if let Some(w) = walkers.iter().find(outside) {
        return Err(Error::Other(format!(
            "trial scan: walker at node {} outside the part's nodes [{first_node}, {})",
            w.cur,
            first_node + num_local
        )));
    }
    Ok(())
}

impl TrialScanner for HostTrials<'_> {
    fn scan(&self, cfg: &WalkConfig, walkers: &[Walker], scans: &mut [TrialScan]) -> Result<()> {
        let local = (self.indptr.len() - 1) as u64;
        check_scan(walkers, scans, self.first_node, local)?;
        scans
            .par_iter_mut()
            .zip(walkers.par_iter())
            .for_each(|(s, w)| {
                if s.decided.is_none() {
                    scan_walker(cfg, self, w, step_draws(cfg, w.step).for_id(w.walk), s);
                }
            });
        Ok(())
    }

    fn whole_walks(
        &self,
        cfg: &WalkConfig,
        round: usize,
        num_nodes: u64,
        nodes: &mut [u32],
    ) -> Result<bool> {
        let local = (self.indptr.len() - 1) as u64;
        if self.first_node != 0 || local != num_nodes {
            return Ok(false);
        }
        let len = cfg.length;
        if nodes.len() != local as usize * len {
            return Err(Error::Other(format!(
                "whole walks: a round of {local} walks of length {len} needs {} slots, not {}",
                local as usize * len,
                nodes.len()
            )));
        }
        let base = round as u64 * num_nodes;
        nodes
            .par_chunks_mut(len * WALKERS_IN_FLIGHT)
            .enumerate()
            .try_for_each(|(c, rows)| {
                let first_row = (c * WALKERS_IN_FLIGHT) as u64;
                let mut walkers = [Walker {
                    walk: 0,
                    cur: NO_NODE,
                    prev: NO_NODE,
                    step: 0,
                }; WALKERS_IN_FLIGHT];
                let count = rows.len() / len;
                for (j, w) in walkers[..count].iter_mut().enumerate() {
                    let start = first_row + j as u64;
                    w.walk = base + start;
                    w.cur = start as u32;
                }
                let mut walking = [true; WALKERS_IN_FLIGHT];
                for step in 1..len {
                    let draws = step_draws(cfg, step as u32 - 1);
                    for (j, w) in walkers[..count].iter_mut().enumerate() {
                        if !walking[j] {
                            continue;
                        }
                        let mut s = TrialScan::default();
                        scan_walker(cfg, self, w, draws.for_id(w.walk), &mut s);
                        match s.decided {
                            Some(Some(x)) => {
                                rows[j * len + step] = x;
                                *w = Walker {
                                    walk: w.walk,
                                    cur: x,
                                    prev: w.cur,
                                    step: w.step + 1,
                                };
                            }
                            Some(None) => walking[j] = false,
                            // The part holds the previous node, so no trial needs a question.
                            None => {
                                return Err(Error::Other(format!(
                                    "whole walks: walk {} left undecided at step {step}",
                                    w.walk
                                )))
                            }
                        }
                    }
                }
                Ok(())
            })?;
        Ok(true)
    }
}

/// One undecided walker's scan (the rule `kernels/walk.cu` follows bit for bit); `draws` is
/// the walker's stream of this step, `step_draws(cfg, w.step).for_id(w.walk)`.
#[inline(always)]
fn scan_walker(
    cfg: &WalkConfig,
    part: &HostTrials<'_>,
    w: &Walker,
    draws: IdStream,
    s: &mut TrialScan,
) {
    s.asked_len = 0;
    s.local_accept = None;
    let nbrs = part.neighbors(w.cur as u64);
    if nbrs.is_empty() {
        s.decided = Some(None);
        return;
    }
    if w.prev == NO_NODE || cfg.first_order() {
        // A uniform step: trial 0's candidate, whose u is never needed.
        s.decided = Some(Some(nbrs[candidate(draws, 0, nbrs.len())]));
        return;
    }
    let prev_nbrs = part
        .owns(w.prev as u64)
        .then(|| part.neighbors(w.prev as u64));
    while s.asked_len < ASKS_PER_ROUND {
        let k = s.next_trial;
        s.next_trial += 1;
        let x = nbrs[candidate(draws, k, nbrs.len())];
        let u = uniform(cfg, draws, k);
        let verdict = match judge(cfg, w.prev, x, u) {
            Verdict::AcceptIfNeighbour => match prev_nbrs {
                Some(pn) => {
                    if accepts(cfg, u, pn.binary_search(&x).is_ok()) {
                        Verdict::Accept
                    } else {
                        Verdict::Reject
                    }
                }
                None => Verdict::AcceptIfNeighbour,
            },
            v => v,
        };
        match verdict {
            Verdict::Accept => {
                s.local_accept = Some(x);
                break;
            }
            Verdict::Reject => {}
            Verdict::AcceptIfNeighbour => {
                s.asked[s.asked_len] = (x, u);
                s.asked_len += 1;
            }
        }
    }
    if s.asked_len == 0 {
        // Decided here (the loop ends only at an accept when nothing was asked).
        s.decided = Some(s.local_accept.take());
    }
}

/// What one trial's draws say before anyone is asked.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Verdict {
    Accept,
    Reject,
    /// Accepted iff x is a neighbour of the previous node.
    AcceptIfNeighbour,
}

/// The verdict of a trial that drew candidate `x` and uniform `u` in [0, bound).
fn judge(cfg: &WalkConfig, prev: u32, x: u32, u: f64) -> Verdict {
    if x == prev {
        return if u < 1.0 / cfg.p {
            Verdict::Accept
        } else {
            Verdict::Reject
        };
    }
    let (lo, hi) = (1.0f64.min(1.0 / cfg.q), 1.0f64.max(1.0 / cfg.q));
    if u < lo {
        Verdict::Accept
    } else if u >= hi {
        Verdict::Reject
    } else {
        // Between the two weights: q < 1 accepts u in [1, 1/q) only for a non-neighbour
        // (weight 1/q), q > 1 accepts u in [1/q, 1) only for a common neighbour (weight 1).
        Verdict::AcceptIfNeighbour
    }
}

/// Whether an asked trial accepts, given whether x neighbours the previous node.
fn accepts(cfg: &WalkConfig, u: f64, neighbour: bool) -> bool {
    u < if neighbour { 1.0 } else { 1.0 / cfg.q }
}

/// The draws of the walkers' step `step`: `hash(seed, 0, step, Purpose::Walk, walk, ·)` once
/// extended with a walker's walk.
#[inline(always)]
fn step_draws(cfg: &WalkConfig, step: u32) -> Stream {
    Stream::new(cfg.seed, 0, step as u64, Purpose::Walk as u64)
}

/// Trial `k`'s candidate: an index among `deg` neighbours (draw `2k`).
#[inline(always)]
fn candidate(draws: IdStream, k: u64, deg: usize) -> usize {
    below(draws.at(2 * k), deg as u64) as usize
}

/// Trial `k`'s uniform in [0, bound) (draw `2k + 1`).
#[inline(always)]
fn uniform(cfg: &WalkConfig, draws: IdStream, k: u64) -> f64 {
    unit_f32(draws.at(2 * k + 1)) as f64 * cfg.bound()
}

/// Generates every round of walks; `sink` gets each round's walks of this rank's start nodes.
/// A collective.
pub fn random_walks(g: &DistGraph<'_>, cfg: &WalkConfig, sink: &mut RoundSink<'_>) -> Result<()> {
    random_walks_from(g, cfg, &HostTrials::of(g.part), 0, sink)
}

/// [`random_walks`] with the trial scan of `scanner` (the CPU's `HostTrials` or a backend's),
/// from round `first_round` on (each round's walks depend on the round's number only, so a
/// resumed run sees the same walks).
pub fn random_walks_from(
    g: &DistGraph<'_>,
    cfg: &WalkConfig,
    scanner: &dyn TrialScanner,
    first_round: usize,
    sink: &mut RoundSink<'_>,
) -> Result<()> {
    cfg.validate()?;
    let part = g.part;
    let n = part.meta.num_nodes;
    if n > NO_NODE as u64 {
        return Err(Error::config(
            "num_nodes",
            format!("walks store node ids as u32; {n} nodes do not fit"),
        ));
    }
    let first = part.first_node();
    let local = part.num_local_nodes();
    for round in first_round..cfg.walks_per_node {
        // The round's walks of this rank's start nodes, filled as steps are decided here;
        // steps of walks started elsewhere wait in `away` (per home rank: the walk, then
        // step << 32 | node) until the round's end.
        let len = cfg.length;
        let mut nodes = vec![NO_NODE; local * len];
        for i in 0..local {
            nodes[i * len] = (first + i as u64) as u32;
        }
        // One rank holds the whole graph: no walker moves between ranks, so no step needs a
        // round of exchanges.
        if g.comm.size() == 1 && scanner.whole_walks(cfg, round, n, &mut nodes)? {
            sink(&WalkRound {
                round,
                first_node: first,
                length: len,
                nodes,
            })?;
            continue;
        }
        let mut walkers: Vec<Walker> = (0..local as u64)
            .map(|i| Walker {
                walk: round as u64 * n + first + i,
                cur: (first + i) as u32,
                prev: NO_NODE,
                step: 0,
            })
            .collect();
        let mut away: Vec<Vec<u64>> = vec![Vec::new(); g.comm.size()];
        let me = g.rank();
        for _ in 1..cfg.length {
            let steps = decide_steps(g, cfg, scanner, &walkers)?;
            let mut out: Vec<Vec<u64>> = vec![Vec::new(); g.comm.size()];
            for (w, next) in walkers.iter().zip(steps) {
                let Some(x) = next else { continue };
                let step = w.step + 1;
                let start = w.walk % n;
                let home = if part.owns(start) {
                    me
                } else {
                    owner_of(&part.meta.node_offset, start)
                };
                if home == me {
                    nodes[(start - first) as usize * len + step as usize] = x;
                } else {
                    away[home].extend_from_slice(&[w.walk, (step as u64) << 32 | x as u64]);
                }
                let owner = owner_of(&part.meta.node_offset, x as u64);
                out[owner].extend_from_slice(&[w.walk, x as u64, w.cur as u64, step as u64]);
            }
            let arrived = g.comm.all_to_all_v(&out)?;
            drop(out);
            walkers = arrived
                .iter()
                .flat_map(|v| v.chunks_exact(4))
                .map(|c| Walker {
                    walk: c[0],
                    cur: c[1] as u32,
                    prev: c[2] as u32,
                    step: c[3] as u32,
                })
                .collect();
        }
        let round = assemble_round(g, cfg, round, nodes, away)?;
        sink(&round)?;
    }
    Ok(())
}

/// The next node of every walker (None at a node without neighbours). A collective: rounds of
/// questions to the previous nodes' owners until every walker's step is decided on every rank.
fn decide_steps(
    g: &DistGraph<'_>,
    cfg: &WalkConfig,
    scanner: &dyn TrialScanner,
    walkers: &[Walker],
) -> Result<Vec<Option<u32>>> {
    let part = g.part;
    let mut scans = vec![TrialScan::default(); walkers.len()];
    loop {
        scanner.scan(cfg, walkers, &mut scans)?;
        let mut asking = [scans.iter().filter(|s| s.decided.is_none()).count() as u64];
        g.comm.all_reduce_sum_u64(&mut asking);
        if asking[0] == 0 {
            break;
        }
        // One round of questions: (previous node, candidate) pairs to the previous node's owner.
        let size = g.comm.size();
        let mut questions: Vec<Vec<u64>> = vec![Vec::new(); size];
        let mut order: Vec<(usize, usize)> = Vec::new(); // (walker, owner) per question
        for (i, (s, w)) in scans.iter().zip(walkers).enumerate() {
            if s.decided.is_some() {
                continue;
            }
            let owner = owner_of(&part.meta.node_offset, w.prev as u64);
            for &(x, _) in &s.asked[..s.asked_len] {
                questions[owner].extend_from_slice(&[w.prev as u64, x as u64]);
                order.push((i, owner));
            }
        }
        let received = g.comm.all_to_all_v(&questions)?;
        let replies: Vec<Vec<u8>> = received
            .iter()
            .map(|q| {
                q.chunks_exact(2)
                    .map(|c| part.neighbors(c[0]).binary_search(&(c[1] as u32)).is_ok() as u8)
                    .collect()
            })
            .collect();
        let answers = g.comm.all_to_all_v(&replies)?;
        let mut cursor = vec![0usize; size];
        let mut neighbour = vec![Vec::new(); walkers.len()];
        for &(i, owner) in &order {
            let a = *answers[owner]
                .get(cursor[owner])
                .ok_or_else(|| Error::Rank {
                    rank: g.rank(),
                    msg: format!("rank {owner} answered fewer walk questions than asked"),
                })?;
            cursor[owner] += 1;
            neighbour[i].push(a != 0);
        }
        for (s, nbs) in scans.iter_mut().zip(&neighbour) {
            if s.decided.is_some() {
                continue;
            }
            let first_asked = s.asked[..s.asked_len]
                .iter()
                .zip(nbs)
                .find(|((_, u), &nb)| accepts(cfg, *u, nb))
                .map(|((x, _), _)| *x);
            if let Some(x) = first_asked.or(s.local_accept) {
                s.decided = Some(Some(x));
            }
        }
    }
    Ok(scans.into_iter().map(|s| s.decided.flatten()).collect())
}

/// Sends the steps decided here of walks started elsewhere to their home ranks and completes
/// this rank's walks of the round with the steps that arrive.
fn assemble_round(
    g: &DistGraph<'_>,
    cfg: &WalkConfig,
    round: usize,
    mut nodes: Vec<u32>,
    away: Vec<Vec<u64>>,
) -> Result<WalkRound> {
    let part = g.part;
    let n = part.meta.num_nodes;
    let first = part.first_node();
    let len = cfg.length;
    let home = g.comm.all_to_all_v(&away)?;
    drop(away);
    for r in home.iter().flat_map(|v| v.chunks_exact(2)) {
        let (walk, step, node) = (r[0], (r[1] >> 32) as usize, r[1] as u32);
        let start = walk % n;
        if walk / n != round as u64 || !part.owns(start) || step >= len {
            return Err(Error::Rank {
                rank: g.rank(),
                msg: format!("walk record ({walk}, {step}) does not belong to this rank's round"),
            });
        }
        nodes[(start - first) as usize * len + step] = node;
    }
    Ok(WalkRound {
        round,
        first_node: first,
        length: len,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(p: f64, q: f64) -> WalkConfig {
        WalkConfig {
            length: 5,
            walks_per_node: 1,
            p,
            q,
            seed: 1,
        }
    }

    #[test]
    fn verdicts_follow_the_node2vec_weights() {
        // p = 4, q = 0.5: weights back 0.25, common neighbour 1, other 2; bound 2.
        let c = cfg(4.0, 0.5);
        assert_eq!(judge(&c, 7, 7, 0.2), Verdict::Accept);
        assert_eq!(judge(&c, 7, 7, 0.3), Verdict::Reject);
        assert_eq!(judge(&c, 7, 3, 0.9), Verdict::Accept);
        assert_eq!(judge(&c, 7, 3, 1.5), Verdict::AcceptIfNeighbour);
        assert!(accepts(&c, 1.5, false) && !accepts(&c, 1.5, true));
        // p = 0.5, q = 2: back 2, common 1, other 0.5; bound 2.
        let c = cfg(0.5, 2.0);
        assert_eq!(judge(&c, 7, 7, 1.9), Verdict::Accept);
        assert_eq!(judge(&c, 7, 3, 0.4), Verdict::Accept);
        assert_eq!(judge(&c, 7, 3, 0.7), Verdict::AcceptIfNeighbour);
        assert_eq!(judge(&c, 7, 3, 1.2), Verdict::Reject);
        assert!(accepts(&c, 0.7, true) && !accepts(&c, 0.7, false));
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (c, field) in [
            (
                WalkConfig {
                    length: 0,
                    ..cfg(1.0, 1.0)
                },
                "length",
            ),
            (
                WalkConfig {
                    walks_per_node: 0,
                    ..cfg(1.0, 1.0)
                },
                "walks_per_node",
            ),
            (cfg(0.0, 1.0), "p"),
            (cfg(1.0, -2.0), "q"),
            (cfg(f64::NAN, 1.0), "p"),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
