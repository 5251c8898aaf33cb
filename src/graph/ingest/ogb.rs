//! OGB's raw directory layout (as in `ogbl-citation2/raw/`): `edge.csv.gz` (one `source,target`
//! pair per line, no header), `node-feat.csv.gz` (F floats per line), `node_year.csv.gz` and
//! `node-label.csv.gz` (one integer per line), `num-node-list.csv.gz` (the node count).
//!
//! OGB's own link split (`split/<name>/{train,valid,test}.pt`, e.g. `split/time/` of
//! ogbl-citation2) is used exactly when it is there: `train.pt` holds the training edges
//! (`source_node`, `target_node`), `valid.pt` / `test.pt` the held-out edges and their fixed
//! negatives (`target_node_neg`, one row per edge). They are `torch.save` archives, read by
//! `torch_pt` without Python. Without them, `build` splits by the same rule as OGB (one
//! validation and one test reference per source paper of the latest year when years exist).
//! A node dataset's split (`split/<name>/{train,valid,test}.csv.gz`, node indices, as in
//! ogbn-arxiv) is used as given too.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::graph::build::{GivenSplit, RawGraph};

use super::text::{self, TableFormat};
use super::torch_pt;
use super::{read_edge_lists, IdMap, IngestArgs, RawPairs};

/// The `split/<name>/` directory of an OGB dataset holding `marker` (`valid.pt` for link
/// datasets, `valid.csv.gz` for node datasets): `time` when there are several (the name of
/// ogbl-citation2's and ogbn-arxiv's), else the only one.
fn split_dir(dir: &Path, raw: &Path, marker: &str) -> Result<Option<PathBuf>> {
    for split_root in [
        dir.join("split"),
        raw.join("split"),
        raw.join("..").join("split"),
    ] {
        if !split_root.is_dir() {
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&split_root)
            .map_err(|e| Error::io(&split_root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(marker).is_file())
            .collect();
        found.sort();
        if let Some(time) = found.iter().find(|p| p.ends_with("time")) {
            return Ok(Some(time.clone()));
        }
        if found.len() > 1 {
            log::warn!(
                "{}: several splits ({}); using the first",
                split_root.display(),
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !found.is_empty() {
            return Ok(found.into_iter().next());
        }
    }
    Ok(None)
}

/// One `.pt` split file's edges (`source_node`, `target_node`) and, for held-out files, the
/// negatives (`target_node_neg`, `[m, K]`), as node ids below `num_nodes`.
struct SplitFile {
    edges: Vec<[u32; 2]>,
    neg: Vec<u32>,
    num_neg: usize,
}

fn read_split_file(path: &Path, num_nodes: u64, held_out: bool) -> Result<SplitFile> {
    let v = torch_pt::load(path)?;
    let ids = |key: &str| -> Result<(Vec<usize>, Vec<u32>)> {
        let t = torch_pt::tensor(path, &v, key)?;
        let vals = t.to_i64().ok_or_else(|| {
            Error::invalid(
                path,
                format!("'{key}' holds {:?} values, not node ids", t.dtype),
            )
        })?;
        let mut out = Vec::with_capacity(vals.len());
        for (i, &x) in vals.iter().enumerate() {
            if x < 0 || x as u64 >= num_nodes {
                return Err(Error::invalid(
                    path,
                    format!("'{key}' entry {i} is node {x}, outside 0..{num_nodes}"),
                ));
            }
            out.push(x as u32);
        }
        Ok((t.shape.clone(), out))
    };
    let (s_shape, src) = ids("source_node")?;
    let (t_shape, dst) = ids("target_node")?;
    if s_shape.len() != 1 || s_shape != t_shape {
        return Err(Error::invalid(
            path,
            format!("'source_node' {s_shape:?} and 'target_node' {t_shape:?} are not two equal 1-d tensors"),
        ));
    }
    let edges = src.iter().zip(&dst).map(|(&a, &b)| [a, b]).collect();
    let (neg, num_neg) = if held_out {
        let (n_shape, neg) = ids("target_node_neg")?;
        if n_shape.len() != 2 || n_shape[0] != src.len() {
            return Err(Error::invalid(
                path,
                format!(
                    "'target_node_neg' is {n_shape:?}; one row of negatives per held-out edge \
                     ([{}, K]) is expected",
                    src.len()
                ),
            ));
        }
        (neg, n_shape[1])
    } else {
        (Vec::new(), 0)
    };
    Ok(SplitFile {
        edges,
        neg,
        num_neg,
    })
}

/// OGB's link split from `split_dir`: the training edges of `train.pt` (when present) and the
/// held-out edges with their negatives.
fn read_link_split(
    split_dir: &Path,
    num_nodes: u64,
) -> Result<(Option<Vec<[u32; 2]>>, GivenSplit)> {
    let file = |name: &str| {
        let p = split_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::invalid(
                split_dir,
                format!("OGB split directory without {name}"),
            ))
        }
    };
    let valid_path = file("valid.pt")?;
    let test_path = file("test.pt")?;
    let valid = read_split_file(&valid_path, num_nodes, true)?;
    let test = read_split_file(&test_path, num_nodes, true)?;
    if valid.num_neg != test.num_neg && !valid.edges.is_empty() && !test.edges.is_empty() {
        return Err(Error::invalid(
            &test_path,
            format!(
                "{} negatives per edge, but {} has {}",
                test.num_neg,
                valid_path.display(),
                valid.num_neg
            ),
        ));
    }
    let train_path = split_dir.join("train.pt");
    let train = if train_path.is_file() {
        Some(read_split_file(&train_path, num_nodes, false)?.edges)
    } else {
        None
    };
    Ok((
        train,
        GivenSplit {
            num_neg: valid.num_neg.max(test.num_neg),
            valid: valid.edges,
            test: test.edges,
            valid_neg: valid.neg,
            test_neg: test.neg,
        },
    ))
}

/// The directory holding `edge.csv.gz`: `dir/raw` or `dir` itself.
fn raw_dir(dir: &Path) -> Result<PathBuf> {
    for candidate in [dir.join("raw"), dir.to_path_buf()] {
        if candidate.join("edge.csv.gz").is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::invalid(
        dir,
        "not an OGB raw directory: no edge.csv.gz in it or in its raw/ subdirectory",
    ))
}

/// One integer per line (years, labels, the node count).
fn read_int_column(path: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    text::for_each_record(
        path,
        TableFormat {
            delimiter: Some(text::Delimiter::Comma),
            header: Some(false),
        },
        Some(1),
        "one integer",
        |rec| {
            out.push(text::parse_i64(rec.field(0)).map_err(|m| Error::parse(path, rec.line, m))?);
            Ok(())
        },
    )?;
    Ok(out)
}

/// F floats per line; returns `(F, row-major values)`.
fn read_float_rows(path: &Path) -> Result<(usize, Vec<f32>)> {
    let mut out = Vec::new();
    let mut width = 0;
    text::for_each_record(
        path,
        TableFormat {
            delimiter: Some(text::Delimiter::Comma),
            header: Some(false),
        },
        None,
        "one float per feature column",
        |rec| {
            width = rec.len();
            for i in 0..rec.len() {
                let v = text::parse_f32(rec.field(i))
                    .map_err(|m| Error::parse(path, rec.line, format!("column {i}: {m}")))?;
                out.push(v);
            }
            Ok(())
        },
    )?;
    Ok((width, out))
}

/// Reads an OGB raw directory; node ids in `edge.csv.gz` are row indices of the node files.
///
/// `extra` holds ids from given split files, which become nodes too when the directory gives no
/// node count.
pub fn read(
    dir: &Path,
    args: &IngestArgs,
    format: TableFormat,
    extra: &[u64],
) -> Result<(RawGraph, IdMap, u64)> {
    let raw = raw_dir(dir)?;
    let file = |name: &str| {
        let p = raw.join(name);
        p.is_file().then_some(p)
    };
    let link_split = split_dir(dir, &raw, "valid.pt")?;
    let node_split = split_dir(dir, &raw, "valid.csv.gz")?;
    if link_split.is_none() && node_split.is_none() {
        if let Some(root) = [dir.join("split"), raw.join("..").join("split")]
            .into_iter()
            .find(|p| p.is_dir())
        {
            log::warn!(
                "{}: no split/<name>/ with valid.pt (links) or valid.csv.gz (nodes); splitting \
                 by OGB's rule instead",
                root.display()
            );
        }
    }
    let mut num_nodes: Option<(u64, PathBuf)> = None;
    let mut check_rows = |path: &Path, rows: u64| -> Result<()> {
        match &num_nodes {
            None => num_nodes = Some((rows, path.to_path_buf())),
            Some((n, first)) if *n != rows => {
                return Err(Error::invalid(
                    path,
                    format!("has {rows} rows, but {} says {n} nodes", first.display()),
                ))
            }
            Some(_) => {}
        }
        Ok(())
    };
    if let Some(p) = file("num-node-list.csv.gz") {
        let v = read_int_column(&p)?;
        let n = v.first().copied().unwrap_or(-1);
        if v.len() != 1 || n < 0 {
            return Err(Error::invalid(
                &p,
                "expected one non-negative node count (a single graph)",
            ));
        }
        check_rows(&p, n as u64)?;
    }
    let mut features = None;
    let mut feature_dim = 0;
    if let Some(p) = file("node-feat.csv.gz") {
        let (f, values) = read_float_rows(&p)?;
        check_rows(&p, values.len().checked_div(f).unwrap_or(0) as u64)?;
        feature_dim = f;
        features = Some(values);
    }
    let mut time = None;
    if let Some(p) = file("node_year.csv.gz") {
        let v = read_int_column(&p)?;
        check_rows(&p, v.len() as u64)?;
        time = Some(v);
    }
    let mut label = None;
    if let Some(p) = file("node-label.csv.gz") {
        let v = read_int_column(&p)?;
        check_rows(&p, v.len() as u64)?;
        if let Some(i) = v.iter().position(|&c| c < 0) {
            return Err(Error::parse(
                &p,
                i as u64 + 1,
                format!("label {} is negative; labels must be classes 0..C-1", v[i]),
            ));
        }
        label = Some(v);
    }
    // OGB's own split: its training edges replace edge.csv.gz (the same edges in OGB's
    // datasets), its held-out edges and negatives are used as given.
    let mut given_split = None;
    let mut split_train = None;
    if let Some(split_dir) = &link_split {
        let Some((n, _)) = &num_nodes else {
            return Err(Error::invalid(
                split_dir,
                "an OGB split needs the node count (raw/num-node-list.csv.gz or node arrays)",
            ));
        };
        let (train, given) = read_link_split(split_dir, *n)?;
        log::info!(
            "{}: OGB's split: {} training edges{}, {} validation and {} test edges with {} \
             negatives each",
            split_dir.display(),
            train.as_ref().map_or(0, |t| t.len()),
            if train.is_some() {
                " (train.pt)"
            } else {
                " (edge.csv.gz)"
            },
            given.valid.len(),
            given.test.len(),
            given.num_neg
        );
        split_train = train;
        given_split = Some(given);
    }
    // OGB's node split (ogbn-*): node indices, one per line.
    let mut given_node_split = None;
    if let Some(d) = &node_split {
        let n = num_nodes.as_ref().map_or(0, |(n, _)| *n);
        let mut sets: [Vec<u64>; 3] = Default::default();
        for (set, name) in sets
            .iter_mut()
            .zip(["train.csv.gz", "valid.csv.gz", "test.csv.gz"])
        {
            let p = d.join(name);
            for (i, &v) in read_int_column(&p)?.iter().enumerate() {
                if v < 0 || v as u64 >= n {
                    return Err(Error::parse(
                        &p,
                        i as u64 + 1,
                        format!("node {v} is outside 0..{n}"),
                    ));
                }
                set.push(v as u64);
            }
        }
        log::info!(
            "{}: OGB's node split: {} train, {} valid, {} test nodes",
            d.display(),
            sets[0].len(),
            sets[1].len(),
            sets[2].len()
        );
        given_node_split = Some(sets);
    }
    let edge_file = raw.join("edge.csv.gz");
    let format = TableFormat {
        delimiter: format.delimiter.or(Some(text::Delimiter::Comma)),
        header: format.header.or(Some(false)),
    };
    let mut pairs = RawPairs::Narrow(Vec::new());
    let (ids, edges, lines) = match num_nodes {
        Some((n, source)) if split_train.is_some() => (
            IdMap::Index {
                num_nodes: n,
                source: source.display().to_string(),
            },
            split_train.take().unwrap_or_default(),
            0,
        ),
        Some((n, source)) => {
            if n > u32::MAX as u64 {
                return Err(Error::invalid(
                    &source,
                    format!("{n} nodes: at most {} are supported", u32::MAX),
                ));
            }
            let source = source.display().to_string();
            let lines = read_edge_lists(
                std::slice::from_ref(&edge_file),
                format,
                Some((n, &source)),
                &mut pairs,
            )?;
            let RawPairs::Narrow(edges) = pairs else {
                return Err(Error::Other(
                    "internal: ids below the node count did not fit u32".into(),
                ));
            };
            (
                IdMap::Index {
                    num_nodes: n,
                    source,
                },
                edges,
                lines,
            )
        }
        None => {
            let lines =
                read_edge_lists(std::slice::from_ref(&edge_file), format, None, &mut pairs)?;
            let (uniq, edges) = pairs.relabel(extra)?;
            (IdMap::Relabel(uniq), edges, lines)
        }
    };
    let orig_id = match &ids {
        IdMap::Index { num_nodes, .. } => (0..*num_nodes).collect(),
        IdMap::Relabel(u) => u.clone(),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        let named = if dir.file_name().is_some_and(|n| n == "raw") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        named
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ogb".into())
    });
    let graph = RawGraph {
        name,
        orig_id,
        edges,
        features,
        feature_dim,
        time,
        label,
        given_split,
        given_node_split,
        directed: !args.undirected,
    };
    Ok((graph, ids, lines))
}
