//! Node ids of an input: how raw ids become node ids `0..N` (`IdMap`: row indices into node
//! arrays, or relabelled by sorted unique id), the edge buffer that is relabelled in place
//! (`RawPairs`), and the id tables read before the node ids are known (given held-out edges and
//! negatives, node split files), kept with their file and line for error messages.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::build::GivenSplit;
use crate::graph::npy::{self, NpyData};

use super::text::{self, TableFormat};
use super::{is_npy, IngestArgs};

/// How edge-list ids become node ids.
pub enum IdMap {
    /// Ids are row indices into node arrays of this many rows; `source` names those arrays.
    Index { num_nodes: u64, source: String },
    /// Ids are raw ids, node `i` is the `i`-th smallest (sorted unique raw ids).
    Relabel(Vec<u64>),
}

impl IdMap {
    /// The node id of raw id `raw`, or why there is none.
    pub fn map(&self, raw: u64) -> std::result::Result<u32, String> {
        match self {
            IdMap::Index { num_nodes, source } => {
                if raw < *num_nodes {
                    Ok(raw as u32)
                } else {
                    Err(format!(
                        "node id {raw} is out of range: the node arrays ({source}) have {num_nodes} rows"
                    ))
                }
            }
            IdMap::Relabel(ids) => ids
                .binary_search(&raw)
                .map(|i| i as u32)
                .map_err(|_| format!("node id {raw} does not appear in the edge lists")),
        }
    }
}

/// Edge pairs as read: ids fit u32 (the usual case, half the memory) until one does not.
pub enum RawPairs {
    Narrow(Vec<[u32; 2]>),
    Wide(Vec<[u64; 2]>),
}

impl RawPairs {
    #[inline]
    pub fn push(&mut self, s: u64, t: u64) {
        match self {
            RawPairs::Narrow(v) if s <= u32::MAX as u64 && t <= u32::MAX as u64 => {
                v.push([s as u32, t as u32])
            }
            RawPairs::Narrow(v) => {
                let mut wide: Vec<[u64; 2]> =
                    v.iter().map(|e| [e[0] as u64, e[1] as u64]).collect();
                wide.push([s, t]);
                *self = RawPairs::Wide(wide);
            }
            RawPairs::Wide(v) => v.push([s, t]),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            RawPairs::Narrow(v) => v.len(),
            RawPairs::Wide(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Relabels raw ids to `0..N` by sorted unique id; returns the unique ids (node `i` had raw id
    /// `ids[i]`) and the relabelled edges, reusing the edge buffer where the ids fit u32.
    /// `extra` ids (from given splits) become nodes too.
    pub fn relabel(self, extra: &[u64]) -> Result<(Vec<u64>, Vec<[u32; 2]>)> {
        let pairs = match self {
            RawPairs::Narrow(v) if extra.iter().any(|&x| x > u32::MAX as u64) => {
                RawPairs::Wide(v.iter().map(|e| [e[0] as u64, e[1] as u64]).collect())
            }
            other => other,
        };
        match pairs {
            RawPairs::Narrow(mut v) => {
                let mut ids: Vec<u32> = v.par_iter().flat_map_iter(|e| *e).collect();
                ids.extend(extra.iter().map(|&x| x as u32));
                ids.par_sort_unstable();
                ids.dedup();
                v.par_iter_mut().for_each(|e| {
                    for x in e.iter_mut() {
                        // Every id is present: it came from these edges.
                        *x = ids.binary_search(x).unwrap_or(0) as u32;
                    }
                });
                Ok((ids.into_iter().map(u64::from).collect(), v))
            }
            RawPairs::Wide(v) => {
                let mut ids: Vec<u64> = v.par_iter().flat_map_iter(|e| *e).collect();
                ids.extend_from_slice(extra);
                ids.par_sort_unstable();
                ids.dedup();
                if ids.len() > u32::MAX as usize {
                    return Err(Error::Other(format!(
                        "{} distinct node ids: at most {} nodes are supported",
                        ids.len(),
                        u32::MAX
                    )));
                }
                let edges = v
                    .par_iter()
                    .map(|e| {
                        [
                            ids.binary_search(&e[0]).unwrap_or(0) as u32,
                            ids.binary_search(&e[1]).unwrap_or(0) as u32,
                        ]
                    })
                    .collect();
                Ok((ids, edges))
            }
        }
    }
}

/// Raw node ids read from a text or `.npy` table (given held-out edges and negatives), kept with
/// the line each row came from so that a bad id can be reported where it is.
pub(super) struct IdTable {
    path: PathBuf,
    width: usize,
    ids: Vec<u64>,
    /// Line of each row in a text file; `None` for `.npy`.
    lines: Option<Vec<u64>>,
}

impl IdTable {
    /// Reads a table whose rows are `cols` wide (or as wide as the first row).
    fn read(path: &Path, cols: Option<usize>, what: &str) -> Result<IdTable> {
        if is_npy(path) {
            let a = npy::read_npy(path)?;
            if a.shape.len() != 2 || cols.is_some_and(|c| a.shape[1] != c) {
                return Err(Error::invalid(
                    path,
                    format!(
                        "shape {:?} is not [m, {}] ({what})",
                        a.shape,
                        cols.map_or("K".to_string(), |c| c.to_string())
                    ),
                ));
            }
            let width = a.shape[1];
            return Ok(IdTable {
                path: path.to_path_buf(),
                width,
                ids: a.into_ids(path)?,
                lines: None,
            });
        }
        let mut width = cols;
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        text::for_each_record(path, TableFormat::default(), cols, what, |rec| {
            width.get_or_insert(rec.len());
            for i in 0..rec.len() {
                ids.push(
                    text::parse_id(rec.field(i)).map_err(|m| Error::parse(path, rec.line, m))?,
                );
            }
            lines.push(rec.line);
            Ok(())
        })?;
        Ok(IdTable {
            path: path.to_path_buf(),
            width: width.unwrap_or(0),
            ids,
            lines: Some(lines),
        })
    }

    fn rows(&self) -> usize {
        self.ids.len().checked_div(self.width).unwrap_or(0)
    }

    /// The ids as node ids; an unknown id is an error naming the line (or row and column).
    fn map(&self, map: &IdMap) -> Result<Vec<u32>> {
        let w = self.width.max(1);
        self.ids
            .iter()
            .enumerate()
            .map(|(i, &raw)| {
                map.map(raw).map_err(|m| match &self.lines {
                    Some(lines) => Error::parse(&self.path, lines[i / w], m),
                    None => {
                        Error::invalid(&self.path, format!("row {} column {}: {m}", i / w, i % w))
                    }
                })
            })
            .collect()
    }
}

/// The four files of a given split, read before the node ids are known.
pub(super) struct GivenTables {
    valid: IdTable,
    test: IdTable,
    valid_neg: IdTable,
    test_neg: IdTable,
}

impl GivenTables {
    pub(super) fn read(args: &IngestArgs) -> Result<Option<GivenTables>> {
        let given = [
            &args.valid_edges,
            &args.test_edges,
            &args.valid_neg,
            &args.test_neg,
        ];
        match given {
            [None, None, None, None] => Ok(None),
            [Some(ve), Some(te), Some(vn), Some(tn)] => {
                let tables = GivenTables {
                    valid: IdTable::read(ve, Some(2), "source, target")?,
                    test: IdTable::read(te, Some(2), "source, target")?,
                    valid_neg: IdTable::read(
                        vn,
                        None,
                        "one row of negative targets per held-out edge",
                    )?,
                    test_neg: IdTable::read(
                        tn,
                        None,
                        "one row of negative targets per held-out edge",
                    )?,
                };
                for (negs, edges) in [
                    (&tables.valid_neg, &tables.valid),
                    (&tables.test_neg, &tables.test),
                ] {
                    if negs.rows() != edges.rows() {
                        return Err(Error::invalid(
                            &negs.path,
                            format!(
                                "{} rows of negatives for {} held-out edges",
                                negs.rows(),
                                edges.rows()
                            ),
                        ));
                    }
                }
                let (kv, kt) = (tables.valid_neg.width, tables.test_neg.width);
                if tables.valid.rows() > 0 && tables.test.rows() > 0 && kv != kt {
                    return Err(Error::invalid(
                        &tables.test_neg.path,
                        format!(
                            "{kt} negatives per edge, but {} has {kv}",
                            tables.valid_neg.path.display()
                        ),
                    ));
                }
                Ok(Some(tables))
            }
            _ => Err(Error::config(
                "--valid-edges/--test-edges/--valid-neg/--test-neg",
                "a given split needs all four files, or none",
            )),
        }
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        [&self.valid, &self.test, &self.valid_neg, &self.test_neg]
            .into_iter()
            .flat_map(|t| t.ids.iter().copied())
    }

    pub(super) fn map(&self, map: &IdMap) -> Result<GivenSplit> {
        let pairs = |t: &IdTable| -> Result<Vec<[u32; 2]>> {
            Ok(t.map(map)?.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
        };
        let k = if self.valid.rows() > 0 {
            self.valid_neg.width
        } else {
            self.test_neg.width
        };
        Ok(GivenSplit {
            valid: pairs(&self.valid)?,
            test: pairs(&self.test)?,
            valid_neg: self.valid_neg.map(map)?,
            test_neg: self.test_neg.map(map)?,
            num_neg: k,
        })
    }
}

/// A node split file as read: raw ids, or a boolean mask over the node arrays' rows.
pub(super) enum NodeIdx {
    Ids(PathBuf, Vec<u64>),
    Mask(PathBuf, Vec<bool>),
}

impl NodeIdx {
    pub(super) fn read(path: &Path) -> Result<NodeIdx> {
        let a = npy::read_npy(path)?;
        if let NpyData::Bool(mask) = a.data {
            return Ok(NodeIdx::Mask(path.to_path_buf(), mask));
        }
        if a.shape.len() != 1 {
            return Err(Error::invalid(
                path,
                format!("node indices must be 1-D, shape is {:?}", a.shape),
            ));
        }
        Ok(NodeIdx::Ids(path.to_path_buf(), a.into_ids(path)?))
    }

    pub(super) fn ids(&self) -> &[u64] {
        match self {
            NodeIdx::Ids(_, v) => v,
            NodeIdx::Mask(..) => &[],
        }
    }

    pub(super) fn map(&self, ids: &IdMap) -> Result<Vec<u64>> {
        match self {
            NodeIdx::Mask(path, mask) => {
                let IdMap::Index { num_nodes, source } = ids else {
                    return Err(Error::invalid(
                        path,
                        "a boolean mask needs node arrays (--features, --labels or --times) to say which row is which node",
                    ));
                };
                if mask.len() as u64 != *num_nodes {
                    return Err(Error::invalid(
                        path,
                        format!("boolean mask has {} entries, but the node arrays ({source}) have {num_nodes} rows", mask.len()),
                    ));
                }
                Ok(mask
                    .iter()
                    .enumerate()
                    .filter(|(_, &m)| m)
                    .map(|(i, _)| i as u64)
                    .collect())
            }
            NodeIdx::Ids(path, raw) => raw
                .iter()
                .enumerate()
                .map(|(i, &r)| {
                    ids.map(r)
                        .map(u64::from)
                        .map_err(|m| Error::invalid(path, format!("entry {i}: {m}")))
                })
                .collect(),
        }
    }
}
