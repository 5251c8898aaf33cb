//! Skip-gram with negative sampling (SGNS) over random walks: the second stage of DeepWalk and
//! node2vec embeddings.
//!
//! Both tables (input and output vectors, `dim` columns) are partitioned by node owner, so a
//! rank holds 1/W of them, and training is plain sequential SGD, as in word2vec, made parallel
//! without races by a conflict-free block schedule (GraphVite's): every update touches one input
//! row and one output row, so updates whose input rows lie in different blocks and whose output
//! rows lie in different blocks can run at the same time.
//!
//! An episode: every rank takes its next `episode_positions` walk positions (its walks are those
//! starting at its nodes) and forms their products: for each (centre, context) pair of word2vec's
//! reduced window (`1 + below(window)` on each side, per position) the positive product and
//! `negatives` negative ones, drawn from degree^0.75 (an alias table, the same on every rank).
//! Each product goes to the owner of its centre's input row. There, a rank's nodes fall into
//! `blocks` input blocks and every rank's nodes into `blocks` output blocks; the output table
//! travels round the ring of ranks (W shifts per episode), and while a rank holds rank q's output
//! rows it runs `blocks` sub-rounds, in sub-round s pairing input block a with q's output block
//! (a + s) mod blocks, the pairs in parallel and each bucket's products in their order. The
//! learning rate falls linearly to 1e-4 of its start over the run. Every draw is counter-based
//! and the schedule depends on the world size and `blocks` only: a run is the same for a fixed
//! seed and world size, whatever the thread count.

use rayon::prelude::*;

use crate::distributed::graph::DistGraph;
use crate::error::{Error, Result};
use crate::sample::rng::{below, fold, hash, unit_f32, Purpose};
use crate::util::dot;
use crate::walk::{RoundSink, WalkConfig, WalkRound, NO_NODE};

/// How the embeddings are trained.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgnsConfig {
    pub dim: usize,
    /// Context nodes on each side of a position (at most; word2vec's reduced window).
    pub window: usize,
    pub negatives: usize,
    /// The starting learning rate.
    pub lr: f64,
    /// Passes over the walks.
    pub epochs: usize,
    /// Walk positions per rank and episode; 0: [`auto_episode_positions`]. More: the output
    /// table travels round the ranks less often, an episode's pairs take more memory (about
    /// 300 bytes per position at the defaults), and SGD sees its updates in a coarser order
    /// (each bucket's at once), which costs quality past a few positions per node.
    pub episode_positions: usize,
    /// Blocks of a rank's input and output rows: the parallelism of a rank (at most this many
    /// threads update at once).
    pub blocks: usize,
    /// word2vec's sub-sampling of frequent nodes: a node that makes up more than this share of
    /// the walks' positions is kept with probability (sqrt(f / t) + 1) t / f (0: keep all).
    pub sample: f64,
    pub seed: u64,
}

impl SgnsConfig {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("dim", self.dim),
            ("window", self.window),
            ("epochs", self.epochs),
            ("blocks", self.blocks),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if !(self.sample.is_finite() && self.sample >= 0.0) {
            return Err(Error::config(
                "sample",
                format!("must be 0 or more, not {}", self.sample),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(
                "lr",
                format!("must be positive, not {}", self.lr),
            ));
        }
        Ok(())
    }
}

/// Draws nodes with probability proportional to count^0.75 (Walker's alias method; word2vec's
/// unigram^0.75 with a node's occurrences in the walks as its count).
pub struct NegativeTable {
    prob: Vec<f32>,
    alias: Vec<u32>,
}

impl NegativeTable {
    /// From every node's count (a node of count 0 is never drawn).
    pub fn new(counts: &[u32]) -> Result<Self> {
        let n = counts.len();
        let w: Vec<f64> = counts.iter().map(|&d| (d as f64).powf(0.75)).collect();
        let total: f64 = w.iter().sum();
        if total <= 0.0 {
            return Err(Error::Other(
                "no node has a count: nothing to sample".into(),
            ));
        }
        let mut scaled: Vec<f64> = w.iter().map(|x| x * n as f64 / total).collect();
        let mut prob = vec![1f32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s] as f32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Ok(NegativeTable { prob, alias })
    }

    /// The node drawn by random word `h`.
    pub fn draw(&self, h: u64) -> u32 {
        let i = below(h, self.prob.len() as u64) as usize;
        if unit_f32(h.rotate_left(32) ^ 0x5DEE_CE66_D1CE_4E5B) < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }
}

/// The negatives' tables of every output block (rows within the block), from every node's
/// count: a pair's negatives come from its context's block, so that a pair touches one output
/// block (GraphVite's rule). A rank's blocks are random sets of its nodes, so at W = 1 the
/// mixture over blocks is close to the whole graph's count^0.75; at W > 1 negatives come from
/// the context's owner, i.e. from its part, which a community-keeping partition (LDG) makes a
/// harder, more local negative (see bench/RESULTS.md for what that does to quality).
pub struct BlockNegatives {
    /// Per (rank q, block b) at `q * blocks + b`; `None` for a block no walk visits.
    tables: Vec<Option<NegativeTable>>,
    blocks: usize,
}

impl BlockNegatives {
    fn new(layout: &Layout, counts: &[u32]) -> Self {
        let ranks = layout.offset.len() - 1;
        let tables = (0..ranks * layout.blocks)
            .into_par_iter()
            .map(|k| {
                let (q, b) = (k / layout.blocks, k % layout.blocks);
                let rows = (layout.block_start(q, b + 1) - layout.block_start(q, b)) as usize;
                let mut c = vec![0u32; rows];
                for id in layout.offset[q]..layout.offset[q + 1] {
                    let (blk, row) = layout.place[id as usize];
                    if blk as usize == b {
                        c[row as usize] = counts[id as usize];
                    }
                }
                NegativeTable::new(&c).ok()
            })
            .collect();
        BlockNegatives {
            tables,
            blocks: layout.blocks,
        }
    }

    fn table(&self, q: usize, b: usize) -> Option<&NegativeTable> {
        self.tables[q * self.blocks + b].as_ref()
    }

    fn flat(&self) -> FlatNegatives {
        let mut flat = FlatNegatives {
            prob: Vec::new(),
            alias: Vec::new(),
            offset: vec![0],
        };
        for t in &self.tables {
            if let Some(t) = t {
                flat.prob.extend_from_slice(&t.prob);
                flat.alias.extend_from_slice(&t.alias);
            }
            flat.offset.push(flat.prob.len() as u64);
        }
        flat
    }
}

/// A rank's share of the two tables: rows of the nodes it owns.
pub struct Embeddings {
    pub dim: usize,
    pub input: Vec<f32>,
    pub output: Vec<f32>,
}

impl Embeddings {
    /// word2vec's start: input rows uniform in [-0.5/dim, 0.5/dim), output rows zero.
    pub fn init(g: &DistGraph<'_>, dim: usize, seed: u64) -> Self {
        let first = g.part.first_node();
        let n = g.part.num_local_nodes();
        let mut input = vec![0f32; n * dim];
        input.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
            let id = first + i as u64;
            for (k, x) in row.iter_mut().enumerate() {
                let u = unit_f32(hash(seed, 0, 0, Purpose::Init as u64 + 64, id, k as u64));
                *x = (u - 0.5) / dim as f32;
            }
        });
        Embeddings {
            dim,
            input,
            output: vec![0f32; n * dim],
        }
    }
}

/// The SGNS loss of one product, `-ln s(x)` for a positive (`label` 1) and `-ln s(-x)` for a
/// negative, and its factor `label - s(x)` (= -d loss / dx), from the dot product `x`.
pub fn product_loss(x: f32, label: f32) -> (f64, f32) {
    let e = (-x.clamp(-30.0, 30.0)).exp();
    let s = 1.0 / (1.0 + e);
    debug_assert_eq!(s, sigmoid(x));
    // ln(1 + e^-x) for a positive, ln(1 + e^x) = x + ln(1 + e^-x) for a negative.
    let softplus = (e as f64).ln_1p();
    let loss = if label > 0.5 {
        softplus
    } else {
        x.clamp(-30.0, 30.0) as f64 + softplus
    };
    (loss, label - s)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-30.0, 30.0)).exp())
}

/// Where every rank's rows are, and their blocks.
struct Layout {
    /// `W + 1` offsets: rank q owns ids `[offset[q], offset[q + 1])`.
    offset: Vec<u64>,
    blocks: usize,
    /// Every node's slot among its owner's rows during training: a pseudo-random order, so that
    /// a block of consecutive slots is a random set of nodes and not a range of ids (ids are
    /// often ordered by time or community, which would give buckets of one kind of product).
    slot: Vec<u32>,
    /// Every node's block and row within its block (from its slot): two lookups per product.
    place: Vec<(u32, u32)>,
}

impl Layout {
    fn new(offset: Vec<u64>, blocks: usize, seed: u64) -> Self {
        let mut slot = vec![0u32; *offset.last().unwrap_or(&0) as usize];
        for q in 0..offset.len().saturating_sub(1) {
            let mut ids: Vec<u64> = (offset[q]..offset[q + 1]).collect();
            ids.par_sort_by_key(|&id| (hash(seed, 0, 0, Purpose::Walk as u64 + 3, id, 0), id));
            for (k, &id) in ids.iter().enumerate() {
                slot[id as usize] = k as u32;
            }
        }
        let mut layout = Layout {
            offset,
            blocks,
            slot,
            place: Vec::new(),
        };
        let owners = layout.offset.len().saturating_sub(1);
        let place: Vec<(u32, u32)> = (0..owners)
            .flat_map(|q| {
                let l = &layout;
                (l.offset[q]..l.offset[q + 1]).map(move |id| {
                    let x = l.slot[id as usize] as u64;
                    let b = l.block_of(q, x);
                    (b as u32, (x - l.block_start(q, b)) as u32)
                })
            })
            .collect();
        layout.place = place;
        layout
    }

    /// Rank `me`'s table (rows by local id) reordered by slot, or back with `to_slots` false.
    fn reorder(&self, me: usize, dim: usize, table: &mut Vec<f32>, to_slots: bool) {
        let first = self.offset[me] as usize;
        let n = self.count(me) as usize;
        let mut out = vec![0f32; n * dim];
        let slot = &self.slot[first..first + n];
        if to_slots {
            let shared = crate::util::SharedRows::new(&mut out, dim);
            table.par_chunks(dim).enumerate().for_each(|(i, row)| {
                // SAFETY: slots are a permutation: every target row is written once.
                unsafe { shared.row_mut(slot[i] as usize) }.copy_from_slice(row);
            });
        } else {
            out.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
                let s = slot[i] as usize;
                row.copy_from_slice(&table[s * dim..(s + 1) * dim]);
            });
        }
        *table = out;
    }

    fn count(&self, q: usize) -> u64 {
        self.offset[q + 1] - self.offset[q]
    }
    /// First local row of block `b` of rank `q` (`b == blocks` gives the end).
    fn block_start(&self, q: usize, b: usize) -> u64 {
        self.count(q) * b as u64 / self.blocks as u64
    }
    /// The block of local row `x` of rank `q`.
    fn block_of(&self, q: usize, x: u64) -> usize {
        let mut b = (x * self.blocks as u64 / self.count(q).max(1)) as usize;
        while b + 1 < self.blocks && self.block_start(q, b + 1) <= x {
            b += 1;
        }
        while b > 0 && self.block_start(q, b) > x {
            b -= 1;
        }
        b
    }
    fn owner(&self, id: u64) -> usize {
        self.offset.partition_point(|&o| o <= id) - 1
    }
    /// A table of rank `q`'s rows split into its blocks.
    fn split<'t>(&self, q: usize, dim: usize, mut table: &'t mut [f32]) -> Vec<&'t mut [f32]> {
        let mut out = Vec::with_capacity(self.blocks);
        for b in 0..self.blocks {
            let rows = (self.block_start(q, b + 1) - self.block_start(q, b)) as usize;
            let (head, rest) = std::mem::take(&mut table).split_at_mut(rows * dim);
            out.push(head);
            table = rest;
        }
        out
    }
}

/// A pair as its centre's owner files it, four words (MPI carries plain words): the bucket
/// `(input block a, output rank q, output block b)` flattened, the centre's row within block a,
/// the context's row within q's block b, and the pair's random word (its negatives' draws).
const PAIR_WORDS: usize = 4;

/// The (centre, context) pairs of some walks (`walks`: indices into a round's `[walks, length]`
/// matrix), one list per destination rank (the owner of the centre), in walk and position order.
fn pairs_of(
    round: &WalkRound,
    walks: &[u32],
    cfg: &SgnsConfig,
    epoch: usize,
    layout: &Layout,
    keep: &[f32],
) -> Vec<Vec<u32>> {
    let len = round.length;
    let ranks = layout.offset.len() - 1;
    let blocks = layout.blocks as u32;
    const CHUNK: usize = 64;
    let chunks: Vec<Vec<Vec<u32>>> = walks
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut out = vec![Vec::new(); ranks];
            let mut kept: Vec<(usize, u32)> = Vec::with_capacity(len);
            for &w in chunk {
                let w = w as usize;
                let (r, e) = (round.round as u64, epoch as u64);
                // The walk without the positions word2vec's sub-sampling drops (frequent nodes
                // are dropped more often); windows span the positions kept. A position's key
                // (its walk's start node and its index) makes every draw the same whatever the
                // episodes and the world size.
                kept.clear();
                for (i, &c) in round.nodes[w * len..(w + 1) * len].iter().enumerate() {
                    if c == NO_NODE {
                        continue;
                    }
                    let pos = fold(round.first_node + w as u64, i as u64);
                    let k = keep[c as usize];
                    if k >= 1.0
                        || unit_f32(hash(cfg.seed, e, r, Purpose::Walk as u64 + 6, pos, 0)) < k
                    {
                        kept.push((i, c));
                    }
                }
                for (x, &(i, c)) in kept.iter().enumerate() {
                    let dest = &mut out[layout.owner(c as u64)];
                    let (a, row) = layout.place[c as usize];
                    let pos = fold(round.first_node + w as u64, i as u64);
                    let b = 1 + below(
                        hash(cfg.seed, e, r, Purpose::Walk as u64 + 1, pos, 0),
                        cfg.window as u64,
                    ) as usize;
                    let lo = x.saturating_sub(b);
                    let hi = (x + b).min(kept.len() - 1);
                    for (y, &(j, o)) in kept.iter().enumerate().take(hi + 1).skip(lo) {
                        if y == x {
                            continue;
                        }
                        let q = layout.owner(o as u64) as u32;
                        let (ob, orow) = layout.place[o as usize];
                        let word = hash(cfg.seed, e, r, Purpose::Walk as u64 + 2, pos, j as u64);
                        dest.extend_from_slice(&[
                            (a * ranks as u32 + q) * blocks + ob,
                            row,
                            orow,
                            word as u32,
                        ]);
                    }
                }
            }
            out
        })
        .collect();
    let mut out: Vec<Vec<u32>> = (0..ranks)
        .map(|d| Vec::with_capacity(chunks.iter().map(|c| c[d].len()).sum()))
        .collect();
    for chunk in chunks {
        for (d, v) in chunk.into_iter().enumerate() {
            out[d].extend(v);
        }
    }
    out
}

/// An episode's pairs at their centre's owner, grouped by bucket and in arrival order within
/// each (by source rank, then as sent).
struct Buckets {
    start: Vec<u64>,
    input_row: Vec<u32>,
    output_row: Vec<u32>,
    word: Vec<u32>,
}

impl Buckets {
    /// A stable counting sort of the received pairs by bucket, in parallel over chunks.
    fn new(buckets: usize, received: &[Vec<u32>]) -> Self {
        let all: Vec<&[u32]> = received
            .iter()
            .flat_map(|v| v.chunks(PAIR_WORDS << 16))
            .collect();
        let counts: Vec<Vec<usize>> = all
            .par_iter()
            .map(|chunk| {
                let mut c = vec![0usize; buckets];
                for p in chunk.chunks_exact(PAIR_WORDS) {
                    c[p[0] as usize] += 1;
                }
                c
            })
            .collect();
        // Each chunk's first place per bucket: the bucket's start plus earlier chunks' counts.
        let mut start = vec![0u64; buckets + 1];
        let mut at: Vec<Vec<usize>> = vec![vec![0usize; buckets]; all.len()];
        let mut next = 0usize;
        for k in 0..buckets {
            start[k] = next as u64;
            for (c, counts) in counts.iter().enumerate() {
                at[c][k] = next;
                next += counts[k];
            }
        }
        start[buckets] = next as u64;
        let mut input_row = vec![0u32; next];
        let mut output_row = vec![0u32; next];
        let mut word = vec![0u32; next];
        {
            let ins = SharedSlice::new(&mut input_row);
            let outs = SharedSlice::new(&mut output_row);
            let words = SharedSlice::new(&mut word);
            all.par_iter().zip(at).for_each(|(chunk, mut at)| {
                for p in chunk.chunks_exact(PAIR_WORDS) {
                    let k = p[0] as usize;
                    // SAFETY: every chunk writes its own places (disjoint by construction).
                    unsafe {
                        ins.write(at[k], p[1]);
                        outs.write(at[k], p[2]);
                        words.write(at[k], p[3]);
                    }
                    at[k] += 1;
                }
            });
        }
        Buckets {
            start,
            input_row,
            output_row,
            word,
        }
    }
}

/// A slice that several threads write at once, each index by at most one thread.
struct SharedSlice<T> {
    ptr: *mut T,
    len: usize,
}
// SAFETY: writes go through `write`, whose callers promise disjoint indices.
unsafe impl<T: Send> Send for SharedSlice<T> {}
unsafe impl<T: Send> Sync for SharedSlice<T> {}
impl<T> SharedSlice<T> {
    fn new(v: &mut [T]) -> Self {
        SharedSlice {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }
    /// # Safety
    /// No other thread may write or read index `i` at the same time.
    unsafe fn write(&self, i: usize, x: T) {
        assert!(i < self.len);
        // SAFETY: in bounds; exclusive by the caller's promise.
        unsafe { self.ptr.add(i).write(x) }
    }
}

/// Asks the cache for a row ahead of its use (pairs visit rows in no order the hardware can
/// guess; a row of 128 floats is eight cache lines). A hint: the address is not read.
#[inline(always)]
fn prefetch_row(row: *const f32, dim: usize) {
    #[cfg(target_arch = "x86_64")]
    for k in (0..dim).step_by(16) {
        // SAFETY: prefetching never faults and reads nothing into the program.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                row.wrapping_add(k) as *const i8,
                std::arch::x86_64::_MM_HINT_T0,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, dim);
}

/// Pairs between drawing a pair's negatives (and prefetching its rows) and training it.
const AHEAD: usize = 4;
/// One pair in this many has its loss computed (the loss is only reported).
const LOSS_EVERY: usize = 16;
/// The most negatives a pair may have.
pub const MAX_NEGATIVES: usize = 64;

/// One bucket's pairs, run in order by [`run_bucket`].
struct BucketWork<'b> {
    dim: usize,
    negatives: usize,
    seed: u64,
    /// The negatives' table of the bucket's output block (rows within the block).
    table: Option<&'b NegativeTable>,
    input_row: &'b [u32],
    output_row: &'b [u32],
    word: &'b [u32],
    /// The bucket's first pair's index in the episode (which pairs report their loss).
    first: usize,
    /// The learning rate at the bucket's first pair and after its last.
    lr: (f32, f32),
}

/// Runs one bucket's pairs in order, as word2vec trains a pair: the context against the centre's
/// input vector, then each negative, the output rows updated at once and the input row after the
/// last, by the sum of its gradients. Returns an estimate of the summed loss (from every
/// [`LOSS_EVERY`]-th pair of the episode). With AVX2 where the CPU has it: the same operations
/// in the same order as the baseline code (eight partial sums, no fused multiply-add), only
/// wider, so results are identical on every x86-64 machine.
fn run_bucket(input: &mut [f32], output: &mut [f32], work: &BucketWork<'_>) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { run_bucket_avx2(input, output, work) };
    }
    run_bucket_body(input, output, work)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_bucket_avx2(input: &mut [f32], output: &mut [f32], work: &BucketWork<'_>) -> f64 {
    run_bucket_body(input, output, work)
}

/// Output rows of a pair: the context first, then its negatives (a negative that is the
/// context itself is skipped, as word2vec does); returns how many.
#[inline(always)]
fn targets_of(work: &BucketWork<'_>, e: usize, out: &mut [u32; MAX_NEGATIVES + 1]) -> usize {
    out[0] = work.output_row[e];
    let mut n = 1;
    if let Some(table) = work.table {
        for k in 0..work.negatives {
            let h = hash(
                work.seed,
                work.word[e] as u64,
                k as u64,
                Purpose::Walk as u64 + 5,
                0,
                0,
            );
            let t = table.draw(h);
            if t != out[0] {
                out[n] = t;
                n += 1;
            }
        }
    }
    n
}

#[inline(always)]
fn run_bucket_body(input: &mut [f32], output: &mut [f32], work: &BucketWork<'_>) -> f64 {
    let (dim, n) = (work.dim, work.input_row.len());
    let mut loss = 0f64;
    let mut ring = [[0u32; MAX_NEGATIVES + 1]; AHEAD + 1];
    let mut ring_len = [0usize; AHEAD + 1];
    let mut neu = vec![0f32; dim];
    let (in_base, out_base) = (input.as_ptr(), output.as_ptr());
    let mut ahead = |e: usize| {
        let slot = e % (AHEAD + 1);
        ring_len[slot] = targets_of(work, e, &mut ring[slot]);
        prefetch_row(in_base.wrapping_add(work.input_row[e] as usize * dim), dim);
        for &t in &ring[slot][..ring_len[slot]] {
            prefetch_row(out_base.wrapping_add(t as usize * dim), dim);
        }
        (ring[slot], ring_len[slot])
    };
    let mut pending = std::collections::VecDeque::with_capacity(AHEAD + 1);
    for e in 0..n.min(AHEAD) {
        pending.push_back(ahead(e));
    }
    for e in 0..n {
        if e + AHEAD < n {
            pending.push_back(ahead(e + AHEAD));
        }
        let (targets, count) = pending.pop_front().expect("drawn ahead");
        let rate = work.lr.0 + (work.lr.1 - work.lr.0) * (e as f32 / n as f32);
        let with_loss = (work.first + e).is_multiple_of(LOSS_EVERY);
        let i = work.input_row[e] as usize * dim;
        let l = train_pair(
            &mut input[i..i + dim],
            output,
            &targets[..count],
            rate,
            with_loss,
            &mut neu,
        );
        loss += l * LOSS_EVERY as f64;
    }
    loss
}

/// One SGD step on one pair's loss (the first target a positive, the rest negatives):
/// each output row moves by its gradient at once, the input row `v` by the sum of its gradients
/// after the last (`neu`: scratch of `v`'s width). Returns the pair's loss when `with_loss`.
#[inline(always)]
fn train_pair(
    v: &mut [f32],
    output: &mut [f32],
    targets: &[u32],
    rate: f32,
    with_loss: bool,
    neu: &mut [f32],
) -> f64 {
    let dim = v.len();
    let mut loss = 0f64;
    neu.iter_mut().for_each(|x| *x = 0.0);
    // Each target's product reads its row before that row's own update, and v does not change
    // until the end, so with distinct rows every product can be taken first: independent
    // reductions the core overlaps instead of one latency chain per target. The results are
    // the sequential loop's bit for bit; a row drawn twice takes the sequential order.
    let mut products = [0f32; MAX_NEGATIVES + 1];
    let distinct = targets
        .iter()
        .enumerate()
        .all(|(d, t)| !targets[..d].contains(t));
    if distinct {
        for (x, &t) in products.iter_mut().zip(targets) {
            let o = t as usize * dim;
            *x = dot(v, &output[o..o + dim]);
        }
    }
    for (d, &t) in targets.iter().enumerate() {
        let label = if d == 0 { 1.0 } else { 0.0 };
        let o = t as usize * dim;
        let u = &mut output[o..o + dim];
        let x = if distinct { products[d] } else { dot(v, u) };
        let factor = if with_loss {
            let (l, f) = product_loss(x, label);
            loss += l;
            f
        } else {
            label - sigmoid(x)
        };
        let g = rate * factor;
        for ((acc, b), a) in neu.iter_mut().zip(u.iter_mut()).zip(v.iter()) {
            *acc += g * *b;
            *b += g * a;
        }
    }
    for (a, b) in v.iter_mut().zip(neu.iter()) {
        *a += b;
    }
    loss
}

/// Every output block's negatives table, flattened for a device: table `k = q * blocks + b`
/// is `prob[offset[k]..offset[k + 1]]` and `alias[..]` (empty where no walk visits the block).
pub struct FlatNegatives {
    pub prob: Vec<f32>,
    pub alias: Vec<u32>,
    pub offset: Vec<u64>,
}

/// What a device sees of an episode at one position of the ring: this rank's buckets against
/// the output rows of rank `q`, which are on the device now.
pub struct RingStep<'e> {
    pub dim: usize,
    pub blocks: usize,
    pub ranks: usize,
    pub q: usize,
    pub negatives: usize,
    pub seed: u64,
    /// The learning rate at the episode's first pair of each bucket and after its last.
    pub lr: (f32, f32),
    /// First row of each of this rank's input blocks and of rank q's output blocks (blocks + 1).
    pub in_start: &'e [u64],
    pub out_start: &'e [u64],
    /// Bucket `k = (a * ranks + q) * blocks + b` holds pairs `bucket_start[k]..bucket_start[k + 1]`.
    pub bucket_start: &'e [u64],
    pub input_row: &'e [u32],
    pub output_row: &'e [u32],
    pub word: &'e [u32],
    /// The episode's first ring position: the buckets are new.
    pub new_buckets: bool,
}

/// Skip-gram on a device (`GraphOps::sgns_device`; CUDA: `kernels/sgns.cu`): both tables stay
/// on it between episodes; it runs an episode's `blocks` sub-rounds at each ring position with
/// the operations of `run_bucket` in the same order (the device's `exp` may round differently,
/// so results agree with the CPU's to rounding), and hands the output rows out and back for
/// the ring's shifts and both tables out for reports, checkpoints and the end.
pub trait SgnsDevice {
    /// Before the first episode: the tables (rows in training order) and the negatives.
    fn start(&mut self, emb: &Embeddings, negatives: &FlatNegatives) -> Result<()>;
    /// The `blocks` sub-rounds of one ring position; returns their summed loss estimate, added
    /// sub-round by sub-round and block by block as on the CPU.
    fn ring_step(&mut self, step: &RingStep<'_>) -> Result<f64>;
    /// The output rows to `emb.output` (before a shift) and back (after it).
    fn output_to_host(&mut self, emb: &mut Embeddings) -> Result<()>;
    fn output_from_host(&mut self, emb: &Embeddings) -> Result<()>;
    /// Both tables to `emb`.
    fn tables_to_host(&mut self, emb: &mut Embeddings) -> Result<()>;
}

/// One episode at this rank: its products' buckets against every rank's output rows, which
/// travel round the ring and are home again at the end, on the host or on `device`. A
/// collective. Returns the summed loss.
#[allow(clippy::too_many_arguments)]
fn run_episode(
    g: &DistGraph<'_>,
    cfg: &SgnsConfig,
    layout: &Layout,
    negatives: &BlockNegatives,
    emb: &mut Embeddings,
    buckets: &Buckets,
    lr: (f32, f32),
    mut device: Option<&mut (dyn SgnsDevice + '_)>,
) -> Result<f64> {
    let (me, ranks, blocks, dim) = (g.rank(), g.comm.size(), layout.blocks, emb.dim);
    let mut loss = 0f64;
    let starts =
        |q: usize| -> Vec<u64> { (0..=blocks).map(|b| layout.block_start(q, b)).collect() };
    let in_start = starts(me);
    for r in 0..ranks {
        // Rank (me + r) mod W's output rows are here in this round.
        let q = (me + r) % ranks;
        if let Some(d) = device.as_deref_mut() {
            let out_start = starts(q);
            loss += d.ring_step(&RingStep {
                dim,
                blocks,
                ranks,
                q,
                negatives: cfg.negatives,
                seed: cfg.seed,
                lr,
                in_start: &in_start,
                out_start: &out_start,
                bucket_start: &buckets.start,
                input_row: &buckets.input_row,
                output_row: &buckets.output_row,
                word: &buckets.word,
                new_buckets: r == 0,
            })?;
        } else {
            for s in 0..blocks {
                let mut outs: Vec<Option<&mut [f32]>> = layout
                    .split(q, dim, &mut emb.output)
                    .into_iter()
                    .map(Some)
                    .collect();
                let tasks: Vec<(usize, &mut [f32], &mut [f32])> = layout
                    .split(me, dim, &mut emb.input)
                    .into_iter()
                    .enumerate()
                    .map(|(a, inp)| {
                        let b = (a + s) % blocks;
                        (
                            a,
                            inp,
                            outs[b]
                                .take()
                                .expect("each output block once per sub-round"),
                        )
                    })
                    .collect();
                let losses: Vec<f64> = tasks
                    .into_par_iter()
                    .map(|(a, inp, out)| {
                        let k = (a * ranks + q) * blocks + (a + s) % blocks;
                        let range = buckets.start[k] as usize..buckets.start[k + 1] as usize;
                        let work = BucketWork {
                            dim,
                            negatives: cfg.negatives,
                            seed: cfg.seed,
                            table: negatives.table(q, (a + s) % blocks),
                            input_row: &buckets.input_row[range.clone()],
                            output_row: &buckets.output_row[range.clone()],
                            word: &buckets.word[range.clone()],
                            first: range.start,
                            lr,
                        };
                        run_bucket(inp, out, &work)
                    })
                    .collect();
                loss += losses.iter().sum::<f64>();
            }
        }
        if ranks > 1 {
            if let Some(d) = device.as_deref_mut() {
                d.output_to_host(emb)?;
            }
            // Pass the rows on to the previous rank; the next rank's arrive.
            let mut send = vec![Vec::new(); ranks];
            send[(me + ranks - 1) % ranks] = std::mem::take(&mut emb.output);
            let mut got = g.comm.all_to_all_v(&send)?;
            emb.output = std::mem::take(&mut got[(me + 1) % ranks]);
            if let Some(d) = device.as_deref_mut() {
                d.output_from_host(emb)?;
            }
        }
    }
    Ok(loss)
}

/// The default episode: two positions per node of the graph over all ranks (cit-HepTh's
/// MRR fell from 0.650 to 0.609 when episodes grew from 2.4 to 19 positions per node), at least
/// 4096 and at most 2^21 positions per rank (about 0.6 GB of pairs in flight).
pub fn auto_episode_positions(num_nodes: u64, ranks: usize) -> usize {
    ((2 * num_nodes) as usize / ranks.max(1)).clamp(4096, 1 << 21)
}

/// Where a run is: the next (epoch, round) to train, and the episode of that round to start
/// at (0 unless the run was stopped inside a round).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SgnsPosition {
    pub epoch: usize,
    pub round: usize,
    pub episode: usize,
}

/// What [`train`] reports after each round, and inside a round when a stop is requested
/// (`complete` false: `pairs` and `loss` cover the round's episodes so far).
pub struct RoundReport<'a> {
    pub complete: bool,
    pub epoch: usize,
    pub round: usize,
    /// Pairs trained in the round (all ranks) and their mean loss (an estimate).
    pub pairs: u64,
    pub loss: f64,
    /// Wall time of the round (walks and training).
    pub seconds: f64,
    /// The learning rate at the round's end.
    pub lr: f64,
    /// Where a run resumed from this point starts.
    pub next: SgnsPosition,
    /// This rank's tables as [`Embeddings`] holds them (rows by local id): a copy, on request.
    pub tables: &'a dyn Fn() -> (Vec<f32>, Vec<f32>),
}

/// Trains `emb` from `start` on, on the rounds of walks that `walks(first_round, sink)`
/// generates (each rank's own walks, rounds from `first_round` on), once per epoch;
/// `after_round` after each round (an error from it ends the run: a requested stop, say). A
/// run resumed from a round's tables and its `next` position ends as the uninterrupted run
/// does. On `device` (`GraphOps::sgns_device`) the tables stay there between rounds; `None`
/// trains on the host. `stop_requested` is asked after every episode (a round at ogbl-citation2's
/// size is many minutes): when it is true on any rank, `after_round` gets a report of the round
/// so far whose `next` resumes at the following episode. A collective.
#[allow(clippy::too_many_arguments)]
pub fn train(
    g: &DistGraph<'_>,
    cfg: &SgnsConfig,
    walk: &WalkConfig,
    emb: &mut Embeddings,
    start: SgnsPosition,
    walks: &mut dyn FnMut(usize, &mut RoundSink<'_>) -> Result<()>,
    after_round: &mut dyn FnMut(&RoundReport<'_>) -> Result<()>,
    stop_requested: &dyn Fn() -> bool,
    mut device: Option<&mut (dyn SgnsDevice + '_)>,
) -> Result<()> {
    cfg.validate()?;
    let layout = Layout::new(g.part.meta.node_offset.clone(), cfg.blocks, cfg.seed);
    let num_buckets = cfg.blocks * g.comm.size() * cfg.blocks;
    if layout.offset.len() != g.comm.size() + 1 {
        return Err(Error::Other(format!(
            "skip-gram training needs one part per rank: {} parts for {} ranks",
            layout.offset.len() - 1,
            g.comm.size()
        )));
    }
    if g.part.meta.num_nodes >= NO_NODE as u64 {
        return Err(Error::Other(format!(
            "skip-gram training takes fewer than 2^32 - 1 nodes, not {}",
            g.part.meta.num_nodes
        )));
    }
    if cfg.negatives > MAX_NEGATIVES {
        return Err(Error::config(
            "negatives",
            format!("at most {MAX_NEGATIVES}, not {}", cfg.negatives),
        ));
    }
    // Every node's occurrences in the walks (a first pass over them; walks are cheap beside
    // the training), for the negatives' table, as word2vec counts words.
    let mut counts = vec![0u64; g.part.meta.num_nodes as usize];
    walks(0, &mut |round| {
        for &v in &round.nodes {
            if v != NO_NODE {
                counts[v as usize] += 1;
            }
        }
        Ok(())
    })?;
    g.comm.all_reduce_sum_u64(&mut counts);
    // Each node's chance to stay in a walk under sub-sampling (gensim's formula).
    let threshold = cfg.sample * counts.iter().sum::<u64>() as f64;
    let keep: Vec<f32> = counts
        .par_iter()
        .map(|&c| {
            if cfg.sample == 0.0 || c == 0 {
                1.0
            } else {
                let f = c as f64;
                (((f / threshold).sqrt() + 1.0) * threshold / f).min(1.0) as f32
            }
        })
        .collect();
    let counts: Vec<u32> = counts
        .iter()
        .map(|&c| c.min(u32::MAX as u64) as u32)
        .collect();
    let negatives = BlockNegatives::new(&layout, &counts);
    let (walks_per_node, length) = (walk.walks_per_node, walk.length);
    // Episodes of whole walks; per round, the most any rank needs (the others take part with
    // empty ones).
    let episode_positions = match cfg.episode_positions {
        0 => auto_episode_positions(g.part.meta.num_nodes, g.comm.size()),
        p => p,
    };
    let walks_per_episode = (episode_positions / length).max(1);
    let mut per_round = [g.part.num_local_nodes().div_ceil(walks_per_episode) as u64];
    g.comm.all_reduce_max_u64(&mut per_round);
    let per_round = per_round[0] as usize;
    let total = (cfg.epochs * walks_per_node * per_round).max(1);
    let rate =
        |done: usize| (cfg.lr * (1.0 - done as f64 / total as f64)).max(cfg.lr * 1e-4) as f32;
    if start.epoch > cfg.epochs
        || start.round >= walks_per_node.max(1)
        || start.episode >= per_round
    {
        return Err(Error::Other(format!(
            "cannot resume at epoch {} round {} episode {}: the run has {} epochs of \
             {walks_per_node} rounds of {per_round} episodes",
            start.epoch + 1,
            start.round + 1,
            start.episode + 1,
            cfg.epochs
        )));
    }
    let mut done = (start.epoch * walks_per_node + start.round) * per_round + start.episode;
    layout.reorder(g.rank(), emb.dim, &mut emb.input, true);
    layout.reorder(g.rank(), emb.dim, &mut emb.output, true);
    if let Some(d) = device.as_deref_mut() {
        d.start(emb, &negatives.flat())?;
    }
    for epoch in start.epoch..cfg.epochs {
        let first_round = if epoch == start.epoch { start.round } else { 0 };
        let mut round_started = std::time::Instant::now();
        walks(first_round, &mut |round| {
            // The round's walks in a pseudo-random order: walks of neighbouring start ids
            // often cover the same region of the graph, and SGD wants them apart.
            let count = round.nodes.len() / length.max(1);
            let mut order: Vec<u32> = (0..count as u32).collect();
            let (e, r) = (epoch as u64, round.round as u64);
            order.par_sort_by_key(|&w| {
                let start = round.first_node + w as u64;
                (hash(cfg.seed, e, r, Purpose::Walk as u64 + 4, start, 0), w)
            });
            let (mut loss, mut pairs) = (0f64, 0u64);
            let resumed_here = epoch == start.epoch && round.round == start.round;
            let first_episode = if resumed_here { start.episode } else { 0 };
            let me = g.rank();
            // A report of the round up to episode `next_episode` (the whole round when it is
            // per_round), with the tables on the host.
            let mut report = |emb: &mut Embeddings,
                              device: Option<&mut (dyn SgnsDevice + '_)>,
                              loss: f64,
                              pairs: u64,
                              next_episode: usize,
                              done: usize|
             -> Result<()> {
                let mut sums = [loss, pairs as f64];
                g.comm.all_reduce_sum_f64(&mut sums);
                let next = if next_episode < per_round {
                    SgnsPosition {
                        epoch,
                        round: round.round,
                        episode: next_episode,
                    }
                } else if round.round + 1 < walks_per_node {
                    SgnsPosition {
                        epoch,
                        round: round.round + 1,
                        episode: 0,
                    }
                } else {
                    SgnsPosition {
                        epoch: epoch + 1,
                        round: 0,
                        episode: 0,
                    }
                };
                if let Some(d) = device {
                    d.tables_to_host(emb)?;
                }
                let (input, output) = (&emb.input, &emb.output);
                let tables = || {
                    let (mut a, mut b) = (input.clone(), output.clone());
                    layout.reorder(me, emb.dim, &mut a, false);
                    layout.reorder(me, emb.dim, &mut b, false);
                    (a, b)
                };
                let reported = after_round(&RoundReport {
                    complete: next_episode == per_round,
                    epoch,
                    round: round.round,
                    pairs: sums[1] as u64,
                    loss: sums[0] / sums[1].max(1.0),
                    seconds: round_started.elapsed().as_secs_f64(),
                    lr: rate(done) as f64,
                    next,
                    tables: &tables,
                });
                round_started = std::time::Instant::now();
                reported
            };
            for b in first_episode..per_round {
                let lo = (b * walks_per_episode).min(count);
                let hi = ((b + 1) * walks_per_episode).min(count);
                let send = pairs_of(round, &order[lo..hi], cfg, epoch, &layout, &keep);
                let received = if send.len() == 1 {
                    send
                } else {
                    g.comm.all_to_all_v(&send)?
                };
                let buckets = Buckets::new(num_buckets, &received);
                drop(received);
                pairs += buckets.input_row.len() as u64;
                let lr = (rate(done), rate(done + 1));
                loss += run_episode(
                    g,
                    cfg,
                    &layout,
                    &negatives,
                    emb,
                    &buckets,
                    lr,
                    device.as_deref_mut(),
                )?;
                done += 1;
                if b + 1 < per_round {
                    // Agreed after every episode, so that a stop waits one episode at most.
                    let mut asked = [stop_requested() as u64];
                    g.comm.all_reduce_max_u64(&mut asked);
                    if asked[0] > 0 {
                        report(emb, device.as_deref_mut(), loss, pairs, b + 1, done)?;
                    }
                }
            }
            report(emb, device.as_deref_mut(), loss, pairs, per_round, done)
        })?;
    }
    // (The device's tables were copied out after the last round.)
    layout.reorder(g.rank(), emb.dim, &mut emb.input, false);
    layout.reorder(g.rank(), emb.dim, &mut emb.output, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_avx2_build_trains_a_bucket_to_the_portable_bits() {
        // Widths with and without a tail past eight lanes; rows drawn twice in a pair (the
        // sequential order) and distinct ones (the products taken first).
        for dim in [13usize, 64, 128] {
            let rows = 50;
            let counts: Vec<u32> = (0..rows as u32).map(|i| 1 + i % 7).collect();
            let table = NegativeTable::new(&counts).unwrap();
            let pairs = 400;
            let input_row: Vec<u32> = (0..pairs).map(|e| (e * 17 % rows) as u32).collect();
            let output_row: Vec<u32> = (0..pairs).map(|e| (e * 29 % rows) as u32).collect();
            let word: Vec<u32> = (0..pairs as u32).collect();
            let work = BucketWork {
                dim,
                negatives: 5,
                seed: 9,
                table: Some(&table),
                input_row: &input_row,
                output_row: &output_row,
                word: &word,
                first: 0,
                lr: (0.025, 0.02),
            };
            let start = |salt: usize| -> Vec<f32> {
                (0..rows * dim)
                    .map(|i| (((i * 7919 + salt) % 1009) as f32 / 1009.0 - 0.5) / dim as f32)
                    .collect()
            };
            let run = |f: &dyn Fn(&mut [f32], &mut [f32]) -> f64| {
                let (mut input, mut output) = (start(1), start(2));
                let loss = f(&mut input, &mut output);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (loss.to_bits(), bits(&input), bits(&output))
            };
            let portable = run(&|i, o| run_bucket_body(i, o, &work));
            assert_ne!(
                portable.1,
                start(1).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                let avx2 = run(&|i, o| unsafe { run_bucket_avx2(i, o, &work) });
                assert!(avx2 == portable, "AVX2, dim {dim}");
            }
        }
    }

    #[test]
    fn a_pair_step_is_minus_lr_times_the_pair_loss_gradient() {
        let dim = 11;
        let v: Vec<f32> = (0..dim).map(|i| 0.3 * (i as f32 - 5.5)).collect();
        // Four output rows; the pair's targets are rows 2 (the context), 0 and 3 (negatives).
        let table: Vec<f32> = (0..4 * dim)
            .map(|i| 0.2 * ((i * 7) % 5) as f32 - 0.4 + 0.01 * i as f32)
            .collect();
        let targets = [2u32, 0, 3];
        let loss = |v: &[f32], table: &[f32]| -> f64 {
            targets
                .iter()
                .enumerate()
                .map(|(d, &t)| {
                    let u = &table[t as usize * dim..(t as usize + 1) * dim];
                    product_loss(dot(v, u), if d == 0 { 1.0 } else { 0.0 }).0
                })
                .sum()
        };
        let (eps, lr) = (1e-3f32, 0.05f32);
        let (mut v2, mut t2) = (v.clone(), table.clone());
        let mut neu = vec![0f32; dim];
        let l = train_pair(&mut v2, &mut t2, &targets, lr, true, &mut neu);
        assert!((l - loss(&v, &table)).abs() < 1e-9);
        type Nudge<'a> = &'a dyn Fn(&mut Vec<f32>, &mut Vec<f32>, f32);
        let numeric = |at: Nudge<'_>| {
            let (mut a, mut ta, mut b, mut tb) =
                (v.clone(), table.clone(), v.clone(), table.clone());
            at(&mut a, &mut ta, eps);
            at(&mut b, &mut tb, -eps);
            (loss(&a, &ta) - loss(&b, &tb)) / (2.0 * eps as f64)
        };
        for i in 0..dim {
            let dv = numeric(&|v, _, h| v[i] += h);
            let step = (v2[i] - v[i]) as f64;
            assert!(
                (step + lr as f64 * dv).abs() < 2e-4,
                "v[{i}]: {step} vs {dv}"
            );
        }
        for r in 0..4 {
            for i in 0..dim {
                let k = r * dim + i;
                let du = numeric(&|_, t, h| t[k] += h);
                let step = (t2[k] - table[k]) as f64;
                assert!(
                    (step + lr as f64 * du).abs() < 2e-4,
                    "row {r}[{i}]: {step} vs {du}"
                );
            }
        }
        // Row 1 is no target: untouched.
        assert_eq!(t2[dim..2 * dim], table[dim..2 * dim]);
    }

    #[test]
    fn blocks_cover_every_row_once() {
        let layout = Layout::new(vec![0, 7, 7, 30], 4, 9);
        let mut slots: Vec<u32> = layout.slot[7..30].to_vec();
        slots.sort();
        assert_eq!(slots, (0..23).collect::<Vec<u32>>());
        let mut table: Vec<f32> = (0..23 * 2).map(|x| x as f32).collect();
        let before = table.clone();
        layout.reorder(2, 2, &mut table, true);
        assert_ne!(table, before);
        layout.reorder(2, 2, &mut table, false);
        assert_eq!(table, before);
        for q in 0..3 {
            let mut seen = vec![0; layout.count(q) as usize];
            for x in 0..layout.count(q) {
                let b = layout.block_of(q, x);
                assert!(layout.block_start(q, b) <= x && x < layout.block_start(q, b + 1));
                seen[x as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n == 1));
            let mut table = vec![0f32; layout.count(q) as usize * 3];
            let parts = layout.split(q, 3, &mut table);
            assert_eq!(
                parts.iter().map(|p| p.len()).sum::<usize>(),
                layout.count(q) as usize * 3
            );
        }
        assert_eq!(layout.owner(0), 0);
        assert_eq!(layout.owner(6), 0);
        assert_eq!(layout.owner(7), 2);
        assert_eq!(layout.owner(29), 2);
    }

    #[test]
    fn negatives_follow_degree_to_the_three_quarters() {
        let degrees = [1u32, 16, 0, 81];
        let t = NegativeTable::new(&degrees).unwrap();
        let mut counts = [0u64; 4];
        let draws = 200_000u64;
        for k in 0..draws {
            counts[t.draw(hash(5, 0, 0, 1, k, 0)) as usize] += 1;
        }
        let w = [1.0, 8.0, 0.0, 27.0];
        let total: f64 = w.iter().sum();
        for i in 0..4 {
            let want = w[i] / total;
            let got = counts[i] as f64 / draws as f64;
            assert!((got - want).abs() < 0.01, "node {i}: {got} vs {want}");
        }
        assert!(NegativeTable::new(&[0, 0]).is_err());
    }
}
