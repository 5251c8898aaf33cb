//! `shardsage ingest`: reads a real graph from files (edge lists, OGB's raw CSV directory, `.npy`
//! node arrays, given splits), turns it into a `RawGraph`, builds it with `build::build_dataset`
//! and writes the result as one `dataset.h5`.
//!
//! Node ids in an edge list are arbitrary non-negative integers, relabelled to `0..N` by sorted
//! unique id, unless node arrays (features, labels, times) are given: then ids are row indices into
//! them and nodes without edges still exist. Every bad input fails with the file and line (or
//! field) that caused it, before anything is written; the output is written atomically.

pub mod ids;
pub mod ogb;
pub mod text;
pub mod torch_pt;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

use crate::error::{Error, Result};
use crate::graph::build::{
    self, BuildOptions, BuildReport, HeldOutArgs, RawGraph, SyntheticFeatures,
};
use crate::graph::npy;
use crate::graph::store::GraphPart;
use ids::{GivenTables, NodeIdx};
pub use ids::{IdMap, RawPairs};
use text::{Delimiter, TableFormat};

/// Command-line arguments of `shardsage ingest`.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Edge list file(s): one `source target` pair per line, tab, comma or whitespace separated
    /// (detected per file), `#` / `%` comment lines, an optional header line, `.gz` by extension.
    #[arg(long = "edges", value_name = "FILE", required_unless_present = "ogb")]
    pub edges: Vec<PathBuf>,
    /// An OGB raw directory (`edge.csv.gz`, `node-feat.csv.gz`, `node_year.csv.gz`,
    /// `node-label.csv.gz`; the directory itself or its parent holding `raw/`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["edges", "features", "labels", "times"])]
    pub ogb: Option<PathBuf>,
    /// Column separator of the edge lists (default: detected per file).
    #[arg(long, value_enum)]
    pub delimiter: Option<Delimiter>,
    /// The first non-comment line of each edge list is a header (default: detected, a first line
    /// with a non-numeric field is one).
    #[arg(long)]
    pub header: bool,
    /// Node features, `.npy` f32 or f64 `[N, F]`; edge-list ids are then row indices.
    #[arg(long, value_name = "FILE")]
    pub features: Option<PathBuf>,
    /// Node classes, `.npy` integers `[N]` with values `0..C-1`.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Node times (e.g. publication year), `.npy` integers `[N]`; enables the temporal split.
    #[arg(long, value_name = "FILE")]
    pub times: Option<PathBuf>,
    /// Node-classification training nodes: `.npy` index array or boolean mask of length N.
    #[arg(long, value_name = "FILE", requires_all = ["valid_idx", "test_idx"])]
    pub train_idx: Option<PathBuf>,
    /// Node-classification validation nodes (index array or boolean mask).
    #[arg(long, value_name = "FILE", requires_all = ["train_idx", "test_idx"])]
    pub valid_idx: Option<PathBuf>,
    /// Node-classification test nodes (index array or boolean mask).
    #[arg(long, value_name = "FILE", requires_all = ["train_idx", "valid_idx"])]
    pub test_idx: Option<PathBuf>,
    /// Given held-out validation edges (text pairs or `.npy` `[m, 2]`); needs all of
    /// --valid-edges --test-edges --valid-neg --test-neg.
    #[arg(long, value_name = "FILE")]
    pub valid_edges: Option<PathBuf>,
    /// Given held-out test edges (text pairs or `.npy` `[m, 2]`).
    #[arg(long, value_name = "FILE")]
    pub test_edges: Option<PathBuf>,
    /// Given negative targets, one row of K ids per held-out edge (text or `.npy` `[m, K]`).
    #[arg(long, value_name = "FILE")]
    pub valid_neg: Option<PathBuf>,
    /// Given negative targets of the test edges (text or `.npy` `[m, K]`).
    #[arg(long, value_name = "FILE")]
    pub test_neg: Option<PathBuf>,
    /// Dataset name (default: from the input's file or directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Seed and negatives (the seed also drives synthetic features).
    #[command(flatten)]
    pub held_out: HeldOutArgs,
    /// Message passing along edge direction only (default: both directions, as OGB does).
    #[arg(long)]
    pub directed_message_passing: bool,
    /// The input edges have no direction: `(u, v)` and `(v, u)` are one edge.
    #[arg(long)]
    pub undirected: bool,
    /// Features to synthesise for graphs that ship none.
    #[arg(long, value_enum, default_value_t = BuildOptions::default().synthetic_features)]
    pub synthetic_features: SyntheticFeatures,
    /// Width of synthesised features.
    #[arg(long, default_value_t = BuildOptions::default().synthetic_dim)]
    pub feature_dim: usize,
    /// Share of each source's edges held out for validation (random split).
    #[arg(long, default_value_t = BuildOptions::default().valid_fraction)]
    pub valid_fraction: f64,
    /// Share of each source's edges held out for test (random split).
    #[arg(long, default_value_t = BuildOptions::default().test_fraction)]
    pub test_fraction: f64,
    /// Node-classification split fractions train,valid,test (when labels exist, no masks given).
    #[arg(long, value_delimiter = ',', default_value = "0.6,0.2,0.2")]
    pub node_split: Vec<f64>,
    /// Divide each given feature row by the sum of its absolute values, as Planetoid's loaders
    /// (PyG's NormalizeFeatures) do for bag-of-words features such as Cora's.
    #[arg(long)]
    pub row_normalize_features: bool,
    /// Output dataset file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Parser)]
#[command(name = "shardsage ingest")]
struct IngestCli {
    #[command(flatten)]
    args: IngestArgs,
}

impl IngestArgs {
    /// Parses ingest flags (without the program and subcommand names), as the CLI would.
    pub fn from_flags<I, S>(flags: I) -> Result<IngestArgs>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("ingest"))
            .chain(flags.into_iter().map(Into::into));
        IngestCli::try_parse_from(argv)
            .map(|c| c.args)
            .map_err(|e| Error::config("ingest", e.to_string()))
    }

    fn build_options(&self) -> Result<BuildOptions> {
        let node_split: [f64; 3] = self.node_split.as_slice().try_into().map_err(|_| {
            Error::config(
                "--node-split",
                format!(
                    "needs three fractions train,valid,test; got {:?}",
                    self.node_split
                ),
            )
        })?;
        Ok(BuildOptions {
            seed: self.held_out.seed,
            num_neg: self.held_out.num_neg,
            undirected: !self.directed_message_passing,
            synthetic_features: self.synthetic_features,
            synthetic_dim: self.feature_dim,
            valid_fraction: self.valid_fraction,
            test_fraction: self.test_fraction,
            node_split,
            row_normalize: self.row_normalize_features,
        })
    }
}

/// What reading the input found, for the summary.
#[derive(Clone, Debug, Default)]
pub struct ReadStats {
    /// Edge lines read from all edge files.
    pub edge_lines: u64,
    pub read_seconds: f64,
}

/// Checks up front that `out` can be written: its directory exists, is a directory and accepts a
/// new file, and `out` itself is not a directory.
pub fn check_output(out: &Path) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if out.file_name().is_none() || out.is_dir() {
        return Err(Error::invalid(
            out,
            "--out must name a file, not a directory",
        ));
    }
    if !dir.is_dir() {
        return Err(Error::invalid(
            dir,
            "the output directory does not exist (create it first)",
        ));
    }
    let probe = dir.join(format!(".shardsage-ingest-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| Error::invalid(dir, format!("the output directory is not writable: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Reads edge-list files into `pairs`. With `bound`, every id must be below it (the error names
/// the file, line and `bound`'s source). Returns the number of edge lines read.
pub fn read_edge_lists(
    files: &[PathBuf],
    format: TableFormat,
    bound: Option<(u64, &str)>,
    pairs: &mut RawPairs,
) -> Result<u64> {
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = crate::util::progress_bar(total, "edges");
    let mut lines = 0u64;
    let mut done_bytes = 0u64;
    for path in files {
        let mut table = text::Table::open(path, format)?;
        let lines_before = lines;
        while let Some(rec) = table.next_record()? {
            if rec.len() != 2 {
                return Err(Error::parse(
                    path,
                    rec.line,
                    format!("expected 2 fields (source, target), found {}", rec.len()),
                ));
            }
            let s = text::parse_id(rec.field(0)).map_err(|m| Error::parse(path, rec.line, m))?;
            let t = text::parse_id(rec.field(1)).map_err(|m| Error::parse(path, rec.line, m))?;
            if let Some((n, source)) = bound {
                for id in [s, t] {
                    if id >= n {
                        return Err(Error::parse(
                            path,
                            rec.line,
                            format!("node id {id} is out of range: the node arrays ({source}) have {n} rows"),
                        ));
                    }
                }
            }
            pairs.push(s, t);
            lines += 1;
            if lines.is_multiple_of(1 << 16) {
                bar.set_position(done_bytes + table.bytes_read());
            }
        }
        if lines == lines_before {
            return Err(Error::invalid(
                path,
                "no edges in this file (only comments, a header or blank lines): the graph is empty",
            ));
        }
        done_bytes += table.bytes_read();
        bar.set_position(done_bytes);
    }
    bar.finish_and_clear();
    Ok(lines)
}

pub(crate) fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Node arrays read from `.npy` files; the node count is their shared row count.
#[derive(Default)]
struct NodeArrays {
    num_nodes: Option<(u64, PathBuf)>,
    features: Option<Vec<f32>>,
    feature_dim: usize,
    time: Option<Vec<i64>>,
    label: Option<Vec<i64>>,
}

impl NodeArrays {
    /// Records `rows` for `path`, checking it against the arrays read before.
    fn rows(&mut self, path: &Path, rows: u64) -> Result<()> {
        match &self.num_nodes {
            None => {
                self.num_nodes = Some((rows, path.to_path_buf()));
                Ok(())
            }
            Some((n, first)) if *n != rows => Err(Error::invalid(
                path,
                format!(
                    "has {rows} rows, but {} has {n} (node arrays need one row per node)",
                    first.display()
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn read(args: &IngestArgs) -> Result<NodeArrays> {
        let mut arrays = NodeArrays::default();
        if let Some(path) = &args.features {
            let a = npy::read_npy(path)?;
            if a.shape.len() != 2 {
                return Err(Error::invalid(
                    path,
                    format!("features must be 2-D [N, F], shape is {:?}", a.shape),
                ));
            }
            arrays.rows(path, a.shape[0] as u64)?;
            arrays.feature_dim = a.shape[1];
            arrays.features = Some(a.into_f32(path)?);
        }
        for (path, slot) in [(&args.labels, 0), (&args.times, 1)] {
            let Some(path) = path else { continue };
            let a = npy::read_npy(path)?;
            if a.shape.len() != 1 && !(a.shape.len() == 2 && a.shape[1] == 1) {
                return Err(Error::invalid(
                    path,
                    format!("must be 1-D [N], shape is {:?}", a.shape),
                ));
            }
            arrays.rows(path, a.shape[0] as u64)?;
            let v = a.into_i64(path)?;
            if slot == 0 {
                if let Some(i) = v.iter().position(|&c| c < 0) {
                    return Err(Error::invalid(
                        path,
                        format!(
                            "entry {i} is the label {}; labels must be classes 0..C-1",
                            v[i]
                        ),
                    ));
                }
                arrays.label = Some(v);
            } else {
                arrays.time = Some(v);
            }
        }
        Ok(arrays)
    }
}

/// Default dataset name: the edge file's stem, or its directory's name for generic stems
/// (`cora/edges.tsv` is `cora`).
fn default_name(path: &Path) -> String {
    let mut stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    while let Some((s, _)) = stem.rsplit_once('.') {
        stem = s.to_string();
    }
    let generic = stem.is_empty() || stem.starts_with("edge") || stem == "raw";
    if generic {
        if let Some(dir) = path.parent().and_then(|p| p.file_name()) {
            return dir.to_string_lossy().into_owned();
        }
    }
    stem
}

/// Reads the input named by `args` into a raw graph.
pub fn read_input(args: &IngestArgs) -> Result<(RawGraph, ReadStats)> {
    let started = Instant::now();
    let given = GivenTables::read(args)?;
    let node_idx = match (&args.train_idx, &args.valid_idx, &args.test_idx) {
        (Some(a), Some(b), Some(c)) => {
            Some([NodeIdx::read(a)?, NodeIdx::read(b)?, NodeIdx::read(c)?])
        }
        _ => None,
    };
    // Ids that name nodes without being in an edge list (a node whose every edge is held out, a
    // negative target): relabelling must know them too.
    let mut extra: Vec<u64> = given.iter().flat_map(|g| g.ids()).collect();
    extra.extend(
        node_idx
            .iter()
            .flatten()
            .flat_map(|x| x.ids().iter().copied()),
    );
    let format = TableFormat {
        delimiter: args.delimiter,
        header: args.header.then_some(true),
    };
    let (mut raw, ids, edge_lines) = if let Some(dir) = &args.ogb {
        ogb::read(dir, args, format, &extra)?
    } else {
        if args.edges.is_empty() {
            return Err(Error::config(
                "--edges",
                "give at least one edge list (or --ogb DIR)",
            ));
        }
        let arrays = NodeArrays::read(args)?;
        let mut pairs = RawPairs::Narrow(Vec::new());
        let (ids, lines, edges) = match &arrays.num_nodes {
            Some((n, source)) => {
                if *n > u32::MAX as u64 {
                    return Err(Error::invalid(
                        source,
                        format!("{n} rows: at most {} nodes are supported", u32::MAX),
                    ));
                }
                let source = source.display().to_string();
                let lines = read_edge_lists(&args.edges, format, Some((*n, &source)), &mut pairs)?;
                let RawPairs::Narrow(edges) = pairs else {
                    return Err(Error::Other(
                        "internal: ids below the node count did not fit u32".into(),
                    ));
                };
                (
                    IdMap::Index {
                        num_nodes: *n,
                        source,
                    },
                    lines,
                    edges,
                )
            }
            None => {
                let lines = read_edge_lists(&args.edges, format, None, &mut pairs)?;
                let (uniq, edges) = pairs.relabel(&extra)?;
                (IdMap::Relabel(uniq), lines, edges)
            }
        };
        let orig_id = match &ids {
            IdMap::Index { num_nodes, .. } => (0..*num_nodes).collect(),
            IdMap::Relabel(u) => u.clone(),
        };
        let raw = RawGraph {
            name: args
                .name
                .clone()
                .unwrap_or_else(|| default_name(&args.edges[0])),
            orig_id,
            edges,
            features: arrays.features,
            feature_dim: arrays.feature_dim,
            time: arrays.time,
            label: arrays.label,
            given_split: None,
            given_node_split: None,
            directed: !args.undirected,
        };
        (raw, ids, lines)
    };
    drop(extra);
    if let Some(g) = &given {
        if raw.given_split.is_some() {
            log::info!("the split given by --valid-edges etc. replaces the OGB directory's own");
        }
        raw.given_split = Some(g.map(&ids)?);
    }
    if let Some([a, b, c]) = &node_idx {
        raw.given_node_split = Some([a.map(&ids)?, b.map(&ids)?, c.map(&ids)?]);
    }
    let stats = ReadStats {
        edge_lines,
        read_seconds: started.elapsed().as_secs_f64(),
    };
    Ok((raw, stats))
}

/// Reads the input and builds the dataset in memory (no file written).
pub fn ingest(args: &IngestArgs) -> Result<(GraphPart, BuildReport, ReadStats)> {
    let opts = args.build_options()?;
    let (raw, stats) = read_input(args)?;
    let (part, report) = build::build_dataset(raw, &opts)?;
    Ok((part, report, stats))
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `shardsage ingest`: read, build, write atomically, print a summary.
pub fn run(args: &IngestArgs) -> Result<()> {
    let started = Instant::now();
    check_output(&args.out)?;
    let (part, report, stats) = ingest(args)?;
    let build_seconds = started.elapsed().as_secs_f64() - stats.read_seconds;
    log::info!("writing {}", args.out.display());
    part.write(&args.out)?;
    let m = &part.meta;
    println!(
        "dataset        {} -> {}",
        m.dataset_name,
        args.out.display()
    );
    println!(
        "nodes          {}   edges {} (from {} lines; dropped {} self-loops, {} duplicates)",
        m.num_nodes,
        m.num_edges,
        stats.edge_lines,
        report.self_loops_dropped,
        report.duplicates_dropped
    );
    println!(
        "split          {}: train {}  valid {}  test {}  negatives per held-out edge {}",
        m.split,
        report.num_train_edges,
        report.num_valid_edges,
        report.num_test_edges,
        report.num_neg
    );
    if report.heldout_removed_from_train + report.reverse_of_heldout_dropped > 0 {
        println!(
            "               removed from training: {} given held-out edges, {} reverses of held-out edges",
            report.heldout_removed_from_train, report.reverse_of_heldout_dropped
        );
    }
    println!(
        "features       [{}, {}]{}",
        m.num_nodes,
        m.feature_dim,
        report
            .synthetic_features
            .as_ref()
            .map(|s| format!(" (synthetic: {s})"))
            .unwrap_or_default()
    );
    if m.num_classes > 0 || report.node_split_sizes.iter().any(|&s| s > 0) {
        let [a, b, c] = report.node_split_sizes;
        println!(
            "node split     {} classes: train {a}  valid {b}  test {c}",
            m.num_classes
        );
    }
    println!(
        "message pass   {} ({} CSR entries)",
        if m.undirected_message_passing {
            "undirected"
        } else {
            "directed"
        },
        part.indices.len()
    );
    println!(
        "time           read {:.2} s, build {:.2} s, total {:.2} s; peak RSS {:.2} GiB",
        stats.read_seconds,
        build_seconds,
        started.elapsed().as_secs_f64(),
        gib(crate::util::peak_rss_bytes())
    );
    println!("fingerprint    {}", m.fingerprint);
    Ok(())
}
