//! Readable summaries of graph data for `shardsage inspect`: a dataset or part file (counts, CSR degree
//! statistics, feature shape, splits, negatives, classes, fingerprint), of a directory of parts
//! (manifest, per-part table, edge cut, balance, checksum of every file), with a suggested launch
//! layout (memory per rank for W = 1, 2, 4, 8).
//!
//! Graph files are summarised from their attributes, dataset shapes and `/csr/indptr` alone, so
//! inspecting a large dataset is quick. The command itself (which also summarises checkpoints)
//! is `crate::inspect`.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::loader::{read_manifest, verify_checksums};
use crate::graph::store::GraphPart;

/// The sizes that decide how much memory a rank needs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GraphSize {
    pub nodes: u64,
    pub feature_dim: u64,
    pub csr_edges: u64,
    pub train_edges: u64,
    pub heldout_edges: u64,
    pub num_neg: u64,
}

impl GraphSize {
    /// Bytes of features, CSR, edges and negatives held by one of `world` ranks (even shares).
    pub fn bytes_per_rank(&self, world: u64) -> u64 {
        let total = self.nodes * self.feature_dim * 4
            + (self.nodes + world) * 8
            + self.csr_edges * 4
            + self.nodes * 8 * 3 // orig_id, time, label
            + self.train_edges * 16
            + self.heldout_edges * (16 + self.num_neg * 8);
        total.div_ceil(world.max(1))
    }
}

/// min / mean / median / p99 / max of a list of degrees.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DegreeStats {
    pub min: u64,
    pub mean: f64,
    pub median: u64,
    pub p99: u64,
    pub max: u64,
}

pub fn degree_stats(mut degrees: Vec<u64>) -> DegreeStats {
    if degrees.is_empty() {
        return DegreeStats::default();
    }
    degrees.sort_unstable();
    let n = degrees.len();
    let at = |q: f64| degrees[((q * (n - 1) as f64).round() as usize).min(n - 1)];
    DegreeStats {
        min: degrees[0],
        mean: degrees.iter().sum::<u64>() as f64 / n as f64,
        median: at(0.5),
        p99: at(0.99),
        max: degrees[n - 1],
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn launch_layout(out: &mut String, size: &GraphSize, num_parts: Option<u64>) {
    let _ = writeln!(
        out,
        "suggested launch layout (features + CSR + edges per rank):"
    );
    for w in [1u64, 2, 4, 8] {
        let note = match num_parts {
            Some(p) if !p.is_multiple_of(w) => {
                format!("  (needs parts divisible by {w}: repartition)")
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  W = {w}: ~{} per rank{note}",
            mib(size.bytes_per_rank(w))
        );
    }
}

/// Shape of a dataset in an open HDF5 file (`[]` when absent).
fn shape_of(file: &hdf5::File, name: &str) -> Vec<usize> {
    if !file.link_exists(name) {
        return Vec::new();
    }
    file.dataset(name).map(|d| d.shape()).unwrap_or_default()
}

/// Summary of one dataset or part file.
pub fn summarize_graph_file(path: &Path) -> Result<String> {
    let meta = GraphPart::read_meta(path)?;
    let file = hdf5::File::open(path).map_err(|e| Error::hdf5(path, e))?;
    let indptr: Vec<u64> = file
        .dataset("csr/indptr")
        .and_then(|d| d.read_raw())
        .map_err(|e| Error::hdf5(path, format!("csr/indptr: {e}")))?;
    let rows0 = |name: &str| shape_of(&file, name).first().copied().unwrap_or(0) as u64;
    let features = shape_of(&file, "node/features");
    let valid_neg = shape_of(&file, "edges/valid_neg");
    let test_neg = shape_of(&file, "edges/test_neg");
    let num_neg = valid_neg.get(1).or(test_neg.get(1)).copied().unwrap_or(0) as u64;
    let degrees: Vec<u64> = indptr.windows(2).map(|w| w[1] - w[0]).collect();
    let deg = degree_stats(degrees);
    let n_local = indptr.len().saturating_sub(1) as u64;
    let csr_edges = indptr.last().copied().unwrap_or(0);
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);

    let mut out = String::new();
    let kind = if meta.num_parts == 1 {
        "dataset".to_string()
    } else {
        format!("part {} of {}", meta.part_id, meta.num_parts)
    };
    let _ = writeln!(out, "{} ({kind}, {})", path.display(), mib(bytes));
    let _ = writeln!(
        out,
        "  dataset      {}  fingerprint {}  format_version {}",
        meta.dataset_name, meta.fingerprint, meta.format_version
    );
    let _ = writeln!(
        out,
        "  graph        {} nodes, {} edges, directed {}, undirected message passing {}, split {}, {} classes",
        meta.num_nodes,
        meta.num_edges,
        meta.directed,
        meta.undirected_message_passing,
        meta.split,
        meta.num_classes
    );
    let _ = writeln!(
        out,
        "  owned nodes  {} ([{}, {})), partition method {}",
        n_local,
        meta.first_node(),
        meta.first_node() + n_local,
        meta.partition_method
    );
    let _ = writeln!(out, "  features     {features:?} f32");
    let _ = writeln!(
        out,
        "  CSR          {csr_edges} entries; degree min {} mean {:.2} median {} p99 {} max {}",
        deg.min, deg.mean, deg.median, deg.p99, deg.max
    );
    let _ = writeln!(
        out,
        "  edges        train {}  valid {}  test {}  negatives per held-out edge K = {num_neg}",
        rows0("edges/train"),
        rows0("edges/valid"),
        rows0("edges/test")
    );
    let node_split = [
        rows0("node/train_idx"),
        rows0("node/valid_idx"),
        rows0("node/test_idx"),
    ];
    if node_split.iter().any(|&c| c > 0) {
        let _ = writeln!(
            out,
            "  node splits  train {}  valid {}  test {}",
            node_split[0], node_split[1], node_split[2]
        );
    }
    if file.link_exists("node/time") {
        if let Ok(t) = file.dataset("node/time").and_then(|d| d.read_raw::<i64>()) {
            if let (Some(lo), Some(hi)) = (t.iter().min(), t.iter().max()) {
                let _ = writeln!(out, "  time         {lo} .. {hi}");
            }
        }
    }
    if meta.num_parts == 1 {
        let size = GraphSize {
            nodes: meta.num_nodes,
            feature_dim: meta.feature_dim as u64,
            csr_edges,
            train_edges: rows0("edges/train"),
            heldout_edges: rows0("edges/valid") + rows0("edges/test"),
            num_neg,
        };
        launch_layout(&mut out, &size, None);
    }
    Ok(out)
}

/// Summary of a directory of parts: manifest, per-part table, edge cut, balance, checksums.
pub fn summarize_part_dir(dir: &Path) -> Result<String> {
    let m = read_manifest(dir)?;
    let checks = verify_checksums(dir)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} parts of {} (fingerprint {}, format_version {})",
        dir.display(),
        m.num_parts,
        m.dataset_name,
        m.fingerprint,
        m.format_version
    );
    let _ = writeln!(
        out,
        "  {} nodes, {} edges, {} features; method {} (seed {})",
        m.num_nodes, m.num_edges, m.feature_dim, m.method, m.seed
    );
    let _ = writeln!(
        out,
        "  edge cut {:.4}; balance max/mean: nodes {:.3}, CSR edges {:.3}, training edges {:.3}",
        m.edge_cut, m.balance.nodes, m.balance.csr_edges, m.balance.train_edges
    );
    let _ = writeln!(
        out,
        "  command: {}  ({:.1}s, peak RSS {})",
        m.command.join(" "),
        m.seconds,
        mib(m.peak_rss_bytes)
    );
    let _ = writeln!(
        out,
        "  {:>5} {:>16} {:>12} {:>12} {:>10} {:>8} {:>8} {:>7} {:>10}  file",
        "part", "nodes from", "nodes", "csr_edges", "train", "valid", "test", "cut", "checksum"
    );
    for s in &m.parts {
        let check = checks
            .iter()
            .find(|(name, _)| *name == s.file)
            .map(|(_, ok)| if *ok { "ok" } else { "MISMATCH" })
            .unwrap_or("unlisted");
        let cut = if s.csr_edges > 0 {
            s.cut_edges as f64 / s.csr_edges as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  {:>5} {:>16} {:>12} {:>12} {:>10} {:>8} {:>8} {:>7.3} {:>10}  {}",
            s.part_id,
            m.node_offset[s.part_id as usize],
            s.nodes,
            s.csr_edges,
            s.train_edges,
            s.valid_edges,
            s.test_edges,
            cut,
            check,
            s.file
        );
    }
    let bad: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n.as_str())
        .collect();
    if bad.is_empty() {
        let _ = writeln!(out, "  checksums: all {} files match", checks.len());
    } else {
        let _ = writeln!(
            out,
            "  checksums: {} MISMATCH or missing: {}",
            bad.len(),
            bad.join(", ")
        );
    }
    let num_neg = m
        .parts
        .first()
        .map(|s| dir.join(&s.file))
        .and_then(|p| hdf5::File::open(p).ok())
        .map(|f| shape_of(&f, "edges/valid_neg").get(1).copied().unwrap_or(0) as u64)
        .unwrap_or(0);
    let size = GraphSize {
        nodes: m.num_nodes,
        feature_dim: m.feature_dim as u64,
        csr_edges: m.parts.iter().map(|s| s.csr_edges).sum(),
        train_edges: m.parts.iter().map(|s| s.train_edges).sum(),
        heldout_edges: m.parts.iter().map(|s| s.valid_edges + s.test_edges).sum(),
        num_neg,
    };
    launch_layout(&mut out, &size, Some(m.num_parts as u64));
    Ok(out)
}
