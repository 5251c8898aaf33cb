//! Turning a raw graph (ids relabelled to `0..N`, edges, optional features / times / labels /
//! given splits) into a dataset file's contents: dropping self-loops and duplicates, splitting,
//! fixing evaluation negatives, building the message-passing CSR.
//!
//! Both `ingest` (from files) and `generate --out` (from memory) end here, so a generated graph
//! and an ingested one go through exactly the same checks and splits.

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::Result;
mod checks;

use crate::graph::csr::build_csr;
pub use crate::graph::features::SyntheticFeatures;
use crate::graph::features::{degree_features, random_features};
use crate::graph::split::{self, EdgeRole, HeldOut};
use crate::graph::store::{GraphMeta, GraphPart, FORMAT_VERSION};
use checks::{
    check_features, check_given_split, check_options, field_error, key, node_count,
    remove_heldout_from_train,
};

/// A graph in memory, nodes already relabelled to `0..num_nodes` in input order.
///
/// The node count is `orig_id.len()`; when `orig_id` is empty it is taken from the first of
/// features, time, labels or the largest edge endpoint, and the original ids are `0..num_nodes`.
#[derive(Clone, Debug, Default)]
pub struct RawGraph {
    pub name: String,
    /// Original id of each node (`orig_id[i]` for node `i`).
    pub orig_id: Vec<u64>,
    /// Directed edges `(source, target)` in relabelled ids; may contain self-loops and
    /// duplicates, which are dropped and counted.
    pub edges: Vec<[u32; 2]>,
    /// Row-major `[num_nodes, feature_dim]`, or `None` to synthesise features (see
    /// `BuildOptions::synthetic_features`).
    pub features: Option<Vec<f32>>,
    pub feature_dim: usize,
    pub time: Option<Vec<i64>>,
    pub label: Option<Vec<i64>>,
    /// A split given with the data, used exactly as given.
    pub given_split: Option<GivenSplit>,
    /// Node-classification masks given with the data (relabelled ids).
    pub given_node_split: Option<[Vec<u64>; 3]>,
    /// Whether the edges have a direction (citations do).
    pub directed: bool,
}

/// Held-out positives and their negative targets, as benchmark datasets ship them.
#[derive(Clone, Debug, Default)]
pub struct GivenSplit {
    pub valid: Vec<[u32; 2]>,
    pub test: Vec<[u32; 2]>,
    /// Row-major `[valid.len(), num_neg]`.
    pub valid_neg: Vec<u32>,
    pub test_neg: Vec<u32>,
    pub num_neg: usize,
}

/// How to split and shape the dataset.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub seed: u64,
    /// Fixed negative targets per held-out edge (capped for small graphs).
    pub num_neg: usize,
    /// Message passing over both directions of every training edge.
    pub undirected: bool,
    /// Features to synthesise when the raw graph has none, and their width.
    pub synthetic_features: SyntheticFeatures,
    pub synthetic_dim: usize,
    /// Share of each eligible source's edges held out for validation and for test in a random
    /// split (the temporal split holds out one edge each per source of the latest time slice).
    pub valid_fraction: f64,
    pub test_fraction: f64,
    /// Node-classification split fractions when labels exist and no masks are given.
    pub node_split: [f64; 3],
    /// Divide each given feature row by the sum of its absolute values (rows of zeros stay), as
    /// Planetoid's loaders (PyG's `NormalizeFeatures`) do for bag-of-words features.
    pub row_normalize: bool,
}

/// The dataset flags `generate --out` and `ingest` share: one definition, defaults from
/// [`BuildOptions::default`].
#[derive(clap::Args, Debug, Clone)]
pub struct HeldOutArgs {
    /// Seed of every random choice (split, negatives, and what the command synthesises).
    #[arg(long, default_value_t = BuildOptions::default().seed)]
    pub seed: u64,
    /// Fixed negative targets per held-out edge (capped at half the node count).
    #[arg(long, default_value_t = BuildOptions::default().num_neg)]
    pub num_neg: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            seed: 0,
            num_neg: 1000,
            undirected: true,
            synthetic_features: SyntheticFeatures::Random,
            synthetic_dim: 128,
            valid_fraction: 0.05,
            test_fraction: 0.05,
            node_split: [0.6, 0.2, 0.2],
            row_normalize: false,
        }
    }
}

/// What building dropped or decided, for the summary printed by ingest / generate.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BuildReport {
    pub self_loops_dropped: u64,
    pub duplicates_dropped: u64,
    pub num_train_edges: u64,
    pub num_valid_edges: u64,
    pub num_test_edges: u64,
    pub num_neg: usize,
    pub split: String,
    pub num_nodes: u64,
    /// Distinct input edges after cleaning (`meta.num_edges`).
    pub num_edges: u64,
    /// Given held-out edges that were also in the input edges, removed from training.
    pub heldout_removed_from_train: u64,
    /// Training edges whose reverse is held out, removed so that undirected message passing never
    /// shows a held-out pair.
    pub reverse_of_heldout_dropped: u64,
    pub feature_dim: usize,
    /// `Some("random")` / `Some("degree")` when the features were synthesised.
    pub synthetic_features: Option<String>,
    pub num_classes: u32,
    /// Node-classification split sizes (train, valid, test); zeros when there are no labels.
    pub node_split_sizes: [u64; 3],
}

/// Logs how long each phase of a build took (at debug level).
struct PhaseClock {
    last: std::time::Instant,
}

impl PhaseClock {
    fn new() -> Self {
        PhaseClock {
            last: std::time::Instant::now(),
        }
    }
    fn lap(&mut self, what: &str) {
        let now = std::time::Instant::now();
        log::debug!("build: {what} in {:.2} s", (now - self.last).as_secs_f64());
        self.last = now;
    }
}

/// Builds the one-part dataset (`num_parts = 1`) from a raw graph.
///
/// Steps: check the node arrays against the node count; drop self-loops and duplicate edges (for an
/// undirected input, `(u, v)` and `(v, u)` are the same edge, stored as `(min, max)`); split the
/// edges (given, temporal when times exist, else random per source); remove held-out pairs from
/// training; fix the evaluation negatives; split nodes when labels exist; synthesise features when
/// none are given; build the message-passing CSR from training edges; fingerprint the result.
/// Deterministic: the same input and options give identical output at any thread count.
pub fn build_dataset(raw: RawGraph, opts: &BuildOptions) -> Result<(GraphPart, BuildReport)> {
    let mut clock = PhaseClock::new();
    let n = node_count(&raw);
    let RawGraph {
        name,
        orig_id,
        mut edges,
        features,
        feature_dim,
        time,
        label,
        given_split,
        given_node_split,
        directed,
    } = raw;
    let name = name.as_str();
    check_options(name, opts, features.is_none())?;
    if n == 0 {
        return Err(field_error(name, "orig_id", "the graph has no nodes"));
    }
    if n > u32::MAX as u64 {
        return Err(field_error(
            name,
            "orig_id",
            format!(
                "{n} nodes do not fit the u32 neighbour ids of the CSR (at most {})",
                u32::MAX
            ),
        ));
    }
    let orig_id = if orig_id.is_empty() {
        (0..n).collect()
    } else {
        orig_id
    };

    // Node arrays.
    if let Some(f) = &features {
        check_features(name, f, feature_dim, n)?;
    }
    for (field, v) in [("time", &time), ("label", &label)] {
        if let Some(v) = v {
            if v.len() as u64 != n {
                return Err(field_error(
                    name,
                    field,
                    format!("{} values for {n} nodes", v.len()),
                ));
            }
        }
    }
    let mut num_classes = 0u32;
    if let Some(l) = &label {
        if let Some(i) = l.par_iter().position_first(|&c| c < 0) {
            return Err(field_error(
                name,
                "label",
                format!("node {i} has label {}; labels must be classes 0..C-1", l[i]),
            ));
        }
        let max = l.par_iter().copied().max().unwrap_or(0);
        num_classes = u32::try_from(max + 1)
            .map_err(|_| field_error(name, "label", format!("largest label {max} is too large")))?;
    }
    if let Some(i) = edges
        .par_iter()
        .position_first(|e| e[0] as u64 >= n || e[1] as u64 >= n)
    {
        return Err(field_error(
            name,
            "edges",
            format!(
                "edge #{i} ({}, {}) names a node >= the node count {n}",
                edges[i][0], edges[i][1]
            ),
        ));
    }

    // Cleaning: self-loops, then sort and drop duplicates.
    if !directed {
        edges.par_iter_mut().for_each(|e| {
            if e[0] > e[1] {
                e.swap(0, 1);
            }
        });
    }
    let input_edges = edges.len();
    edges.retain(|e| e[0] != e[1]);
    let self_loops_dropped = (input_edges - edges.len()) as u64;
    edges.par_sort_unstable_by_key(|&e| key(e));
    let before_dedup = edges.len();
    edges.dedup();
    edges.shrink_to_fit();
    let duplicates_dropped = (before_dedup - edges.len()) as u64;
    if edges.is_empty() {
        return Err(field_error(
            name,
            "edges",
            format!(
                "no edges left after dropping {self_loops_dropped} self-loops and {duplicates_dropped} duplicates (of {input_edges} input edges)"
            ),
        ));
    }
    let distinct_edges = edges.len() as u64;

    clock.lap("checked node arrays and cleaned edges");
    // Edge split.
    let (split_name, mut train, valid, test, mut valid_neg, mut test_neg, num_neg) =
        match given_split {
            Some(g) => {
                check_given_split(name, &g, n)?;
                let valid_neg = g.valid_neg.iter().map(|&v| v as u64).collect();
                let test_neg = g.test_neg.iter().map(|&v| v as u64).collect();
                (
                    "given", edges, g.valid, g.test, valid_neg, test_neg, g.num_neg,
                )
            }
            None => {
                let roles = match &time {
                    Some(t) => split::temporal_roles(&edges, t, opts.seed),
                    None => split::random_roles(
                        &edges,
                        opts.seed,
                        opts.valid_fraction,
                        opts.test_fraction,
                    ),
                };
                let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
                let held = roles.iter().filter(|&&r| r != EdgeRole::Train).count();
                train.reserve_exact(edges.len() - held);
                for (e, r) in edges.into_iter().zip(roles) {
                    match r {
                        EdgeRole::Train => train.push(e),
                        EdgeRole::Valid => valid.push(e),
                        EdgeRole::Test => test.push(e),
                    }
                }
                let k = split::negatives_per_edge(opts.num_neg, n);
                let split_name = if time.is_some() { "temporal" } else { "random" };
                (split_name, train, valid, test, Vec::new(), Vec::new(), k)
            }
        };
    if split_name != "given" {
        valid_neg = split::fixed_negatives(&valid, n, num_neg, opts.seed, HeldOut::Valid);
        test_neg = split::fixed_negatives(&test, n, num_neg, opts.seed, HeldOut::Test);
    }
    let (heldout_removed_from_train, reverse_of_heldout_dropped) =
        remove_heldout_from_train(&mut train, &valid, &test, directed, opts.undirected);
    let num_edges = if split_name == "given" {
        (train.len() + valid.len() + test.len()) as u64 + reverse_of_heldout_dropped
    } else {
        distinct_edges
    };

    clock.lap("split edges and drew negatives");
    // Node-classification split.
    let [train_idx, valid_idx, test_idx] = match (given_node_split, &label) {
        (Some(g), _) => {
            for (field, idx) in ["train_idx", "valid_idx", "test_idx"].iter().zip(&g) {
                if let Some(&v) = idx.iter().find(|&&v| v >= n) {
                    return Err(field_error(
                        name,
                        field,
                        format!("node {v} is out of range (the graph has {n} nodes)"),
                    ));
                }
            }
            g
        }
        (None, Some(_)) => split::node_split(n, opts.node_split, opts.seed),
        (None, None) => [Vec::new(), Vec::new(), Vec::new()],
    };

    // Features.
    let (features, feature_dim, synthetic) = match features {
        Some(mut f) => {
            if opts.row_normalize && feature_dim > 0 {
                f.par_chunks_mut(feature_dim).for_each(|row| {
                    let s: f64 = row.iter().map(|&x| x.abs() as f64).sum();
                    if s > 0.0 {
                        row.iter_mut().for_each(|x| *x = (*x as f64 / s) as f32);
                    }
                });
            }
            (f, feature_dim, None)
        }
        None => {
            let dim = opts.synthetic_dim;
            let f = match opts.synthetic_features {
                SyntheticFeatures::Random => random_features(n as usize, dim, opts.seed),
                SyntheticFeatures::Degree => {
                    degree_features(n as usize, dim, &train, directed, opts.seed)
                }
            };
            let kind = match opts.synthetic_features {
                SyntheticFeatures::Random => "random",
                SyntheticFeatures::Degree => "degree",
            };
            (f, dim, Some(kind.to_string()))
        }
    };

    clock.lap("node split and features");
    let (indptr, indices) = build_csr(n as usize, &train, opts.undirected);
    clock.lap("message-passing CSR");
    let widen = |v: Vec<[u32; 2]>| -> Vec<[u64; 2]> {
        v.into_par_iter()
            .map(|e| [e[0] as u64, e[1] as u64])
            .collect()
    };
    let train_edges = widen(train);
    let valid_edges = widen(valid);
    let test_edges = widen(test);

    let mut meta = GraphMeta {
        format_version: FORMAT_VERSION,
        dataset_name: name.to_string(),
        fingerprint: String::new(),
        num_parts: 1,
        part_id: 0,
        num_nodes: n,
        num_edges,
        feature_dim: u32::try_from(feature_dim)
            .map_err(|_| field_error(name, "feature_dim", format!("{feature_dim} is too wide")))?,
        node_offset: vec![0, n],
        directed,
        undirected_message_passing: opts.undirected,
        split: split_name.to_string(),
        num_classes,
        partition_method: "none".to_string(),
    };
    let report = BuildReport {
        self_loops_dropped,
        duplicates_dropped,
        num_train_edges: train_edges.len() as u64,
        num_valid_edges: valid_edges.len() as u64,
        num_test_edges: test_edges.len() as u64,
        num_neg,
        split: split_name.to_string(),
        num_nodes: n,
        num_edges,
        heldout_removed_from_train,
        reverse_of_heldout_dropped,
        feature_dim,
        synthetic_features: synthetic,
        num_classes,
        node_split_sizes: [
            train_idx.len() as u64,
            valid_idx.len() as u64,
            test_idx.len() as u64,
        ],
    };
    let mut part = GraphPart {
        meta: meta.clone(),
        indptr,
        indices,
        features,
        orig_id,
        time,
        label,
        train_edges,
        valid_edges,
        test_edges,
        valid_neg,
        test_neg,
        num_neg,
        train_idx,
        valid_idx,
        test_idx,
    };
    meta.fingerprint = fingerprint(&part);
    clock.lap("fingerprint");
    part.meta = meta;
    Ok((part, report))
}

/// Feeds the length and the little-endian bytes of `words` to `h`, a block at a time.
fn hash_words(h: &mut Sha256, words: &[u64]) {
    h.update((words.len() as u64).to_le_bytes());
    let mut block = [0u8; 8 * 4096];
    for chunk in words.chunks(4096) {
        for (dst, w) in block.chunks_exact_mut(8).zip(chunk) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        h.update(&block[..8 * chunk.len()]);
    }
}

/// Hex SHA-256 over the dataset's identity: name, counts, the split, the edge arrays and the fixed
/// negatives (little-endian bytes, with lengths so that boundaries cannot shift).
pub fn fingerprint(part: &GraphPart) -> String {
    let m = &part.meta;
    let mut h = Sha256::new();
    h.update(b"shardsage-dataset-v1\0");
    h.update((m.dataset_name.len() as u64).to_le_bytes());
    h.update(m.dataset_name.as_bytes());
    for v in [
        m.num_nodes,
        m.num_edges,
        m.feature_dim as u64,
        part.num_neg as u64,
        m.directed as u64,
        m.undirected_message_passing as u64,
    ] {
        h.update(v.to_le_bytes());
    }
    h.update((m.split.len() as u64).to_le_bytes());
    h.update(m.split.as_bytes());
    for edges in [&part.train_edges, &part.valid_edges, &part.test_edges] {
        hash_words(&mut h, edges.as_flattened());
    }
    for negs in [&part.valid_neg, &part.test_neg] {
        hash_words(&mut h, negs);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(directed: bool) -> RawGraph {
        let mut edges = Vec::new();
        for s in 0..40u32 {
            for k in 1..6u32 {
                edges.push([s, (s + k * 7) % 50]);
            }
        }
        edges.push([3, 3]);
        edges.push(edges[0]);
        RawGraph {
            name: "small".into(),
            edges,
            directed,
            label: Some((0..50).map(|i| i % 3).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn builds_a_random_split_and_counts_what_it_dropped() {
        let opts = BuildOptions {
            synthetic_dim: 4,
            valid_fraction: 0.2,
            test_fraction: 0.2,
            ..Default::default()
        };
        let (part, report) = build_dataset(small(true), &opts).unwrap();
        assert_eq!(
            (report.self_loops_dropped, report.duplicates_dropped),
            (1, 1)
        );
        assert_eq!(part.meta.num_nodes, 50);
        assert_eq!(part.meta.num_edges, 200);
        assert_eq!(part.meta.num_classes, 3);
        assert_eq!(part.meta.split, "random");
        assert!(!part.valid_edges.is_empty() && !part.test_edges.is_empty());
        assert_eq!(part.num_neg, 25);
        part.validate(std::path::Path::new("mem")).unwrap();
        for (row, e) in part.valid_neg.chunks(part.num_neg).zip(&part.valid_edges) {
            assert!(row.iter().all(|&v| v != e[0] && v != e[1]));
        }
        let (again, _) = build_dataset(small(true), &opts).unwrap();
        assert_eq!(part, again);
        let (other, _) = build_dataset(
            small(true),
            &BuildOptions {
                seed: 1,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_ne!(part.meta.fingerprint, other.meta.fingerprint);
        let [a, b, c] = [&part.train_idx, &part.valid_idx, &part.test_idx];
        assert_eq!(a.len() + b.len() + c.len(), 50);
    }

    #[test]
    fn rejects_bad_node_arrays_naming_the_field() {
        let mut raw = small(true);
        raw.features = Some(vec![0.0; 49 * 2]);
        raw.feature_dim = 2;
        raw.orig_id = (0..50).collect();
        let err = build_dataset(raw.clone(), &BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`features`") && err.contains("50 nodes"),
            "{err}"
        );
        let mut f = vec![0.0; 100];
        f[2 * 7 + 1] = f32::NAN;
        raw.features = Some(f);
        let err = build_dataset(raw.clone(), &BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 7 column 1"), "{err}");
        raw.features = None;
        raw.edges = vec![[1, 1]];
        let err = build_dataset(raw, &BuildOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no edges left"), "{err}");
    }

    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let opts = BuildOptions {
            synthetic_features: SyntheticFeatures::Degree,
            synthetic_dim: 16,
            ..Default::default()
        };
        let mut raw = small(true);
        raw.time = Some((0..50).map(|i| 2000 + i % 4).collect());
        let in_pool = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| build_dataset(raw.clone(), &opts).unwrap().0)
        };
        let one = in_pool(1);
        assert_eq!(one.meta.split, "temporal");
        assert_eq!(one, in_pool(3));
    }

    #[test]
    fn degree_features_are_standardised_and_padded() {
        let raw = small(false);
        let opts = BuildOptions {
            synthetic_features: SyntheticFeatures::Degree,
            synthetic_dim: 12,
            ..Default::default()
        };
        let (part, _) = build_dataset(raw, &opts).unwrap();
        assert_eq!(part.features.len(), 50 * 12);
        let col0: f64 = part.features.chunks(12).map(|r| r[0] as f64).sum();
        assert!(col0.abs() < 1e-3, "{col0}");
    }
}
