//! `shardsage generate`: a synthetic citation graph that behaves like a real one, so every step of
//! the pipeline can run with no outside data.
//!
//! Papers are spread over `years` time slices with growing volume; each paper cites only papers of
//! earlier slices. Out-degrees are heavy-tailed (Pareto with the requested mean); targets are chosen
//! by preferential attachment (copy the target of a random earlier citation, else a uniform older
//! paper), mostly inside the paper's topic community. Features are the community centroid plus
//! noise, the label is the community, the time is the year.
//!
//! Every choice is a counter-based hash `hash(seed, 0, 0, Purpose::Generate + k, node, j)` of state
//! fixed before it: a slice's papers only look at the citations of earlier slices, so the papers of
//! one slice are drawn in parallel and the output does not depend on the thread count.
//!
//! Output: raw files that `ingest` reads (`--out DIR`), or a dataset file (`--dataset FILE.h5`)
//! through `build::build_dataset`. This module does not split, relabel or write HDF5 itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::build::{build_dataset, BuildOptions, HeldOutArgs, RawGraph};
use crate::graph::store;
use crate::sample::rng::{below, normal, unit_f32, IdStream, Purpose, Stream};

/// Year of the first time slice (the value stored in `time`).
pub const FIRST_YEAR: i64 = 1990;
/// Growth of the yearly paper volume (the last of 30 slices holds ~10x the first).
const YEARLY_GROWTH: f64 = 0.08;
/// Pareto tail index of the out-degree: a finite mean, an infinite-variance-like heavy tail.
const OUT_DEGREE_ALPHA: f64 = 2.5;
/// Upper bound of one paper's reference count (long review articles).
const MAX_OUT_DEGREE: u64 = 3000;
/// Draws per reference before a duplicate target is given up.
const MAX_ATTEMPTS: u64 = 8;
/// Standard deviation of a community centroid's coordinates; the noise has unit variance, so the
/// community is learnable from the features but not trivially separable.
const CENTROID_SCALE: f32 = 0.4;
/// Papers drawn together by one parallel task.
const CHUNK_NODES: usize = 2048;

/// Sub-purposes of `Purpose::Generate` (added to it), so different choices never share hashes.
mod key {
    pub const COMMUNITY: u64 = 0;
    pub const DEGREE: u64 = 1;
    pub const TARGET: u64 = 2;
    pub const CENTROID: u64 = 3;
    pub const NOISE: u64 = 4;
    pub const ORDER: u64 = 5;
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub nodes: usize,
    /// Mean citations per paper (edges / nodes).
    pub avg_degree: f64,
    pub communities: usize,
    pub feature_dim: usize,
    pub years: usize,
    pub seed: u64,
    pub name: String,
    /// Probability that a reference copies the target of an earlier citation (preferential
    /// attachment); in-degrees then follow a power law of exponent about `1 + 1/p`.
    pub copy_probability: f64,
    /// Probability that a reference stays in the citing paper's community.
    pub intra_community: f64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            nodes: 100_000,
            avg_degree: 10.4,
            communities: 40,
            feature_dim: 128,
            years: 30,
            seed: 0,
            name: "synthetic-citation".into(),
            copy_probability: 0.6,
            intra_community: 0.9,
        }
    }
}

impl GenerateOptions {
    fn check(&self) -> Result<()> {
        if self.nodes < 2 || self.nodes > u32::MAX as usize {
            return Err(Error::config(
                "nodes",
                format!("{} is outside 2..=2^32-1", self.nodes),
            ));
        }
        if !(self.avg_degree.is_finite() && self.avg_degree >= 0.0) {
            return Err(Error::config(
                "avg-degree",
                format!("{} is not a non-negative number", self.avg_degree),
            ));
        }
        if self.communities == 0 || self.communities > u32::MAX as usize {
            return Err(Error::config("communities", "must be at least 1"));
        }
        if self.feature_dim == 0 {
            return Err(Error::config("feature-dim", "must be at least 1"));
        }
        if self.years < 2 {
            return Err(Error::config(
                "years",
                "must be at least 2 (papers cite only papers of earlier years)",
            ));
        }
        for (field, p) in [
            ("copy-probability", self.copy_probability),
            ("intra-community", self.intra_community),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::config(field, format!("{p} is not in [0, 1]")));
            }
        }
        Ok(())
    }
}

/// `start[y]..start[y+1]` are the papers of slice `y` in time order: volumes grow by
/// `YEARLY_GROWTH` a year and add up to `nodes`.
pub fn year_starts(nodes: usize, years: usize) -> Vec<usize> {
    let weights: Vec<f64> = (0..years)
        .map(|y| (YEARLY_GROWTH * y as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut starts = Vec::with_capacity(years + 1);
    let mut cum = 0.0;
    starts.push(0);
    for w in &weights {
        cum += w;
        starts.push(((nodes as f64 * cum / total).round() as usize).min(nodes));
    }
    starts[years] = nodes;
    starts
}

/// Generates the graph: node `i` of the result is the `i`-th paper in a seeded shuffle (so input
/// order is not time order), with `orig_id = i`, time, label = community and features.
pub fn generate(opts: &GenerateOptions) -> Result<RawGraph> {
    opts.check()?;
    let started = Instant::now();
    let n = opts.nodes;
    let c_count = opts.communities as u64;
    let seed = opts.seed;
    let purpose = |k: u64| Purpose::Generate as u64 + k;
    let starts = year_starts(n, opts.years);

    // Community of each paper (time-ordered ids), and each community's papers in time order.
    let community_stream = Stream::new(seed, 0, 0, purpose(key::COMMUNITY));
    let community: Vec<u32> = (0..n as u64)
        .into_par_iter()
        .map(|i| below(community_stream.at(i, 0), c_count) as u32)
        .collect();
    let mut community_nodes: Vec<Vec<u32>> = vec![Vec::new(); opts.communities];
    for (i, &c) in community.iter().enumerate() {
        community_nodes[c as usize].push(i as u32);
    }
    // Targets of the citations made so far, grouped by the target's community: drawing a uniform
    // element is drawing a paper with probability proportional to its in-degree.
    let mut community_cited: Vec<Vec<u32>> = vec![Vec::new(); opts.communities];

    // Papers of the first slice cite nothing, so the others carry the whole requested mean.
    let citing = (n - starts[1]) as f64;
    let mean_out = if citing > 0.0 {
        opts.avg_degree * n as f64 / citing
    } else {
        0.0
    };
    let x_min = mean_out * (OUT_DEGREE_ALPHA - 1.0) / OUT_DEGREE_ALPHA;
    let degree_stream = Stream::new(seed, 0, 0, purpose(key::DEGREE));
    let target_stream = Stream::new(seed, 0, 0, purpose(key::TARGET));

    let mut edges: Vec<[u32; 2]> =
        Vec::with_capacity((opts.avg_degree * n as f64 * 1.02) as usize + 16);
    for y in 1..opts.years {
        let (lo, hi) = (starts[y], starts[y + 1]);
        if lo == hi {
            continue;
        }
        // Everything a paper of slice y may look at is fixed: papers < lo and their citations.
        let older = lo as u64;
        let visible: Vec<&[u32]> = community_nodes
            .iter()
            .map(|nodes| &nodes[..nodes.partition_point(|&v| (v as usize) < lo)])
            .collect();
        let ctx = DrawContext {
            older,
            communities: c_count,
            visible: &visible,
            cited: &community_cited,
            copy_probability: opts.copy_probability as f32,
            intra_community: opts.intra_community as f32,
        };
        let chunks: Vec<Vec<[u32; 2]>> = (lo..hi)
            .into_par_iter()
            .step_by(CHUNK_NODES)
            .map(|chunk_lo| {
                let mut out = Vec::new();
                let mut refs = Vec::new();
                let chunk_hi = (chunk_lo + CHUNK_NODES).min(hi);
                for (offset, &own) in community[chunk_lo..chunk_hi].iter().enumerate() {
                    let i = chunk_lo + offset;
                    let d = out_degree(degree_stream.for_id(i as u64), x_min).min(older);
                    ctx.draw_references(target_stream.for_id(i as u64), own, d, &mut refs);
                    out.extend(refs.iter().map(|&t| [i as u32, t]));
                }
                out
            })
            .collect();
        let year_start = edges.len();
        for chunk in chunks {
            edges.extend_from_slice(&chunk);
        }
        for e in &edges[year_start..] {
            community_cited[community[e[1] as usize] as usize].push(e[1]);
        }
    }
    drop(community_cited);
    drop(community_nodes);
    log::info!(
        "generate: {} papers, {} citations over {} years drawn in {:.1}s",
        n,
        edges.len(),
        opts.years,
        started.elapsed().as_secs_f64()
    );

    // Input order: a seeded shuffle of the time order, so that id order carries no time signal.
    let order_stream = Stream::new(seed, 0, 0, purpose(key::ORDER));
    let mut by_key: Vec<(u64, u32)> = (0..n as u32)
        .into_par_iter()
        .map(|i| (order_stream.at(i as u64, 0), i))
        .collect();
    by_key.par_sort_unstable();
    let time_order_of: Vec<u32> = by_key.into_iter().map(|(_, i)| i).collect();
    let mut output_id = vec![0u32; n];
    for (o, &i) in time_order_of.iter().enumerate() {
        output_id[i as usize] = o as u32;
    }
    edges
        .par_iter_mut()
        .for_each(|e| *e = [output_id[e[0] as usize], output_id[e[1] as usize]]);
    drop(output_id);

    let year_of = |i: usize| starts.partition_point(|&s| s <= i) - 1;
    let time: Vec<i64> = time_order_of
        .par_iter()
        .map(|&i| FIRST_YEAR + year_of(i as usize) as i64)
        .collect();
    let label: Vec<i64> = time_order_of
        .par_iter()
        .map(|&i| community[i as usize] as i64)
        .collect();
    let features = community_features(opts, &community, &time_order_of);

    Ok(RawGraph {
        name: opts.name.clone(),
        orig_id: (0..n as u64).collect(),
        edges,
        features: Some(features),
        feature_dim: opts.feature_dim,
        time: Some(time),
        label: Some(label),
        given_split: None,
        given_node_split: None,
        directed: true,
    })
}

/// Row-major `[n, F]` features in output order: the community centroid plus unit noise.
fn community_features(
    opts: &GenerateOptions,
    community: &[u32],
    time_order_of: &[u32],
) -> Vec<f32> {
    let f = opts.feature_dim;
    let centroid_stream = Stream::new(opts.seed, 0, 0, Purpose::Generate as u64 + key::CENTROID);
    let centroids: Vec<f32> = (0..opts.communities * f)
        .map(|k| {
            let s = centroid_stream.for_id(k as u64);
            CENTROID_SCALE * normal(s.at(0), s.at(1))
        })
        .collect();
    let noise_stream = Stream::new(opts.seed, 0, 0, Purpose::Generate as u64 + key::NOISE);
    let mut features = vec![0f32; time_order_of.len() * f];
    features
        .par_chunks_mut(f)
        .zip(time_order_of.par_iter())
        .for_each(|(row, &i)| {
            let c = community[i as usize] as usize;
            let s = noise_stream.for_id(i as u64);
            for (j, x) in row.iter_mut().enumerate() {
                let j64 = j as u64;
                *x = centroids[c * f + j] + normal(s.at(2 * j64), s.at(2 * j64 + 1));
            }
        });
    features
}

/// A Pareto(alpha, x_min) draw with stochastic rounding, so the mean is `x_min * a / (a - 1)`.
fn out_degree(s: IdStream, x_min: f64) -> u64 {
    if x_min <= 0.0 {
        return 0;
    }
    let u = ((s.at(0) >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // (0, 1]
    let x = x_min * u.powf(-1.0 / OUT_DEGREE_ALPHA);
    let frac = (s.at(1) >> 11) as f64 / (1u64 << 53) as f64;
    ((x + frac).floor() as u64).min(MAX_OUT_DEGREE)
}

/// The state a paper's references are drawn from: only papers of earlier slices.
struct DrawContext<'a> {
    older: u64,
    communities: u64,
    /// Per community, its papers older than the current slice.
    visible: &'a [&'a [u32]],
    /// Per community, the targets of the citations made by earlier slices.
    cited: &'a [Vec<u32>],
    copy_probability: f32,
    intra_community: f32,
}

impl DrawContext<'_> {
    /// Draws `d` distinct older targets for a paper of community `own` into `out`.
    fn draw_references(&self, s: IdStream, own: u32, d: u64, out: &mut Vec<u32>) {
        out.clear();
        for j in 0..d {
            for attempt in 0..MAX_ATTEMPTS {
                let k = 4 * (j * MAX_ATTEMPTS + attempt);
                let c = if unit_f32(s.at(k)) < self.intra_community {
                    own as usize
                } else {
                    below(s.at(k + 1), self.communities) as usize
                };
                let copy = unit_f32(s.at(k + 2)) < self.copy_probability;
                let pick = s.at(k + 3);
                let target = if copy && !self.cited[c].is_empty() {
                    self.cited[c][below(pick, self.cited[c].len() as u64) as usize]
                } else if !self.visible[c].is_empty() {
                    self.visible[c][below(pick, self.visible[c].len() as u64) as usize]
                } else {
                    below(pick, self.older) as u32
                };
                if !out.contains(&target) {
                    out.push(target);
                    break;
                }
            }
        }
    }
}

/// Writes the raw forms `ingest` reads: `edges.tsv.gz` (header `source\ttarget`), `features.npy`
/// (f32 `[N, F]`), `times.npy` and `labels.npy` (i64 `[N]`). Each file is written atomically.
pub fn write_raw(dir: &Path, g: &RawGraph) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let n = g.orig_id.len();
    let mut written = Vec::new();
    let edges_path = dir.join("edges.tsv.gz");
    store::atomic_write(&edges_path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut w = std::io::BufWriter::with_capacity(1 << 20, gz);
        let io = |e| Error::io(tmp, e);
        w.write_all(b"source\ttarget\n").map_err(io)?;
        let mut line = Vec::with_capacity(32);
        for e in &g.edges {
            line.clear();
            push_decimal(&mut line, g.orig_id[e[0] as usize]);
            line.push(b'\t');
            push_decimal(&mut line, g.orig_id[e[1] as usize]);
            line.push(b'\n');
            w.write_all(&line).map_err(io)?;
        }
        let gz = w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
        gz.finish().map_err(io)?;
        Ok(())
    })?;
    written.push(edges_path);
    if let Some(features) = &g.features {
        let p = dir.join("features.npy");
        write_npy(&p, "<f4", &[n, g.feature_dim], features)?;
        written.push(p);
    }
    if let Some(time) = &g.time {
        let p = dir.join("times.npy");
        write_npy(&p, "<i8", &[n], time)?;
        written.push(p);
    }
    if let Some(label) = &g.label {
        let p = dir.join("labels.npy");
        write_npy(&p, "<i8", &[n], label)?;
        written.push(p);
    }
    Ok(written)
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Little-endian plain numbers for `.npy` payloads.
trait NpyScalar: Copy {
    fn put_le(self, out: &mut Vec<u8>);
}
impl NpyScalar for f32 {
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
impl NpyScalar for i64 {
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Writes a C-order `.npy` version 1.0 file (magic, header dict padded to 64 bytes, raw data).
fn write_npy<T: NpyScalar>(path: &Path, descr: &str, shape: &[usize], data: &[T]) -> Result<()> {
    let shape_str = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_str}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len())
        .map_err(|_| Error::invalid(path, "npy header longer than 65535 bytes"))?;
    store::atomic_write(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let io = |e| Error::io(tmp, e);
        w.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
        w.write_all(&header_len.to_le_bytes()).map_err(io)?;
        w.write_all(header.as_bytes()).map_err(io)?;
        let mut buf = Vec::with_capacity(1 << 20);
        for chunk in data.chunks(1 << 16) {
            buf.clear();
            for &v in chunk {
                v.put_le(&mut buf);
            }
            w.write_all(&buf).map_err(io)?;
        }
        w.flush().map_err(io)?;
        Ok(())
    })
}

/// `shardsage generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Number of papers.
    #[arg(long, default_value_t = GenerateOptions::default().nodes)]
    pub nodes: usize,
    /// Mean citations per paper (ogbl-citation2 has 10.4).
    #[arg(long, default_value_t = GenerateOptions::default().avg_degree)]
    pub avg_degree: f64,
    /// Topic communities (also the node classes).
    #[arg(long, default_value_t = GenerateOptions::default().communities)]
    pub communities: usize,
    /// Width of the node features (community centroid plus noise).
    #[arg(long, default_value_t = GenerateOptions::default().feature_dim)]
    pub feature_dim: usize,
    /// Time slices (years); each paper cites only papers of earlier years.
    #[arg(long, default_value_t = GenerateOptions::default().years)]
    pub years: usize,
    /// Dataset name stored in the files.
    #[arg(long, default_value_t = GenerateOptions::default().name)]
    pub name: String,
    /// Write a dataset file (split, negatives, CSR), ready for `partition`.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "out_dir",
        conflicts_with = "out_dir"
    )]
    pub out: Option<PathBuf>,
    /// Write the raw files instead (edges.tsv.gz, features.npy, times.npy, labels.npy), as
    /// `ingest` reads them, into this directory.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Seed and negatives (the seed also drives the generated graph and its features).
    #[command(flatten)]
    pub held_out: HeldOutArgs,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let opts = GenerateOptions {
        nodes: args.nodes,
        avg_degree: args.avg_degree,
        communities: args.communities,
        feature_dim: args.feature_dim,
        years: args.years,
        seed: args.held_out.seed,
        name: args.name.clone(),
        ..GenerateOptions::default()
    };
    let graph = generate(&opts)?;
    let (nodes, edges) = (graph.orig_id.len(), graph.edges.len());
    if let Some(dir) = &args.out_dir {
        for p in write_raw(dir, &graph)? {
            println!("wrote {}", p.display());
        }
    } else if let Some(path) = &args.out {
        let build = BuildOptions {
            seed: args.held_out.seed,
            num_neg: args.held_out.num_neg,
            ..BuildOptions::default()
        };
        let t_build = Instant::now();
        let (part, report) = build_dataset(graph, &build)?;
        let t_write = Instant::now();
        part.write(path)?;
        log::info!(
            "generate: build_dataset {:.1}s, write {:.1}s",
            (t_write - t_build).as_secs_f64(),
            t_write.elapsed().as_secs_f64()
        );
        println!(
            "wrote {}: {} train / {} valid / {} test edges, {} negatives each, split {}",
            path.display(),
            report.num_train_edges,
            report.num_valid_edges,
            report.num_test_edges,
            report.num_neg,
            report.split
        );
    }
    println!(
        "generated {nodes} nodes, {edges} edges in {:.1}s, peak RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        crate::util::peak_rss_bytes() as f64 / (1 << 20) as f64
    );
    Ok(())
}
