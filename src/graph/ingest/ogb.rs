//! OGB's raw directory layout (as in `ogbl-citation2/raw/`): `edge.csv.gz` (one `source,target`
//! pair per line, no header), `node-feat.csv.gz` (F floats per line), `node_year.csv.gz` and
//! `node-label.csv.gz` (one integer per line), `num-node-list.csv.gz` (the node count).
//!
//! OGB's own split files (`split/time/*.pt`) are PyTorch pickles and are not read: the temporal
//! split of `build` follows the same rule (one validation and one test reference per source paper
//! of the latest year).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::graph::build::RawGraph;

use super::text::{self, TableFormat};
use super::{read_edge_lists, IdMap, IngestArgs, RawPairs};

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
    for split_dir in [
        dir.join("split"),
        raw.join("split"),
        raw.join("..").join("split"),
    ] {
        if split_dir.is_dir() {
            log::warn!(
                "{}: OGB split files are PyTorch pickles and are not read; splitting by the same rule (temporal when years exist)",
                split_dir.display()
            );
            break;
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
    let edge_file = raw.join("edge.csv.gz");
    let format = TableFormat {
        delimiter: format.delimiter.or(Some(text::Delimiter::Comma)),
        header: format.header.or(Some(false)),
    };
    let mut pairs = RawPairs::Narrow(Vec::new());
    let (ids, edges, lines) = match num_nodes {
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
        given_split: None,
        given_node_split: None,
        directed: !args.undirected,
    };
    Ok((graph, ids, lines))
}
