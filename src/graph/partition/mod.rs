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

use crate::error::{Error, Result};
use crate::graph::manifest::{
    file_digest, part_file_name, Balance, FileEntry, Manifest, PartStats, MANIFEST_NAME,
};
use crate::graph::store::GraphPart;

mod assign;
mod parts;

#[cfg(test)]
use assign::cut_at_quantiles;
pub use assign::{assign_parts, edge_cut, train_out_degree};
pub use parts::Relabel;
use parts::{build_part, Grouped};

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
