//! The HDF5 layout of a graph file, read and written in one place.
//!
//! A dataset file (`dataset.h5`, written by `ingest` / `generate`) and a part file
//! (`parts/part-00000.h5`, written by `partition`) share one schema: a dataset is a graph of one
//! part that owns every node. So the trainer, `inspect` and the partitioner read both with the same
//! code. See docs/ARCHITECTURE.md for the table of paths and attributes.
//!
//! Writes are atomic (temporary name in the same directory, fsync, rename): a failed or
//! interrupted write never leaves a half-written file under the final name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the on-disk layout; readers refuse other versions.
pub const FORMAT_VERSION: u32 = 1;
/// Value of the `format` root attribute that marks a file as ours.
pub const FORMAT_NAME: &str = "shardsage-graph";
/// Rows per HDF5 chunk of node and edge arrays.
const CHUNK_ROWS: usize = 16_384;

/// The root attributes of a graph file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphMeta {
    pub format_version: u32,
    pub dataset_name: String,
    /// Identity of the dataset's content (hex); every part of a dataset carries the same one, so
    /// parts from different datasets are never mixed.
    pub fingerprint: String,
    pub num_parts: u32,
    pub part_id: u32,
    /// Global node count.
    pub num_nodes: u64,
    /// Global count of distinct input edges (training + held-out), self-loops and duplicates
    /// dropped.
    pub num_edges: u64,
    pub feature_dim: u32,
    /// `num_parts + 1` offsets: part `p` owns global ids `[node_offset[p], node_offset[p+1])`.
    pub node_offset: Vec<u64>,
    /// Whether the input edges have a direction (citations do).
    pub directed: bool,
    /// Whether the message-passing CSR holds both directions of every training edge.
    pub undirected_message_passing: bool,
    /// How the edges were split: `temporal`, `random`, `given`.
    pub split: String,
    /// Number of node classes, 0 when the graph has no labels.
    pub num_classes: u32,
    /// How nodes were assigned to parts (`none` for a dataset file).
    pub partition_method: String,
}

impl GraphMeta {
    /// Number of nodes this file owns.
    pub fn num_local_nodes(&self) -> u64 {
        self.node_offset[self.part_id as usize + 1] - self.node_offset[self.part_id as usize]
    }
    /// First global id this file owns.
    pub fn first_node(&self) -> u64 {
        self.node_offset[self.part_id as usize]
    }
}

/// Turns off HDF5's advisory file locks before the first HDF5 call. HDF5 keeps an `flock` on
/// every open file and its descriptors survive `exec`, so a child process (a rank, a test's
/// subprocess) can inherit a lock and make the parent's next open fail with "unable to lock
/// file". Every file here is written under a temporary name and renamed, so the locks protect
/// nothing we rely on.
pub fn init_hdf5() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
            // Called before any other thread touches the environment (first HDF5 use).
            std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
        }
    });
}

/// Which part owns global node `id`: a binary search over the offsets.
pub fn owner_of(node_offset: &[u64], id: u64) -> usize {
    node_offset.partition_point(|&o| o <= id) - 1
}

/// Which of a part's arrays to read; the others stay empty (the CSR, ids, times, labels, held-out
/// edges and node splits are always read). Random walks and skip-gram need neither the features
/// nor the training edges, and the evaluation's fixed negatives only after training: on a graph of
/// ogbl-citation2's size those three are 5.9 of the 6.1 GB its one part takes in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartSelection {
    pub features: bool,
    pub train_edges: bool,
    pub negatives: bool,
}

impl PartSelection {
    pub const ALL: PartSelection = PartSelection {
        features: true,
        train_edges: true,
        negatives: true,
    };
    /// What walks and skip-gram read.
    pub const WALKS: PartSelection = PartSelection {
        features: false,
        train_edges: false,
        negatives: false,
    };
}

/// Reads a whole dataset into memory that large arrays get on 2 MiB pages: the sampler and
/// the feature gather read rows of the CSR and the feature table at random, and with 4 KiB
/// pages nearly every such read also missed the TLB (ogbl-citation2-sized graph, 1 thread:
/// 56-57 -> 45-49 ms of neighbour sampling per batch of 512 positives, AMD EPYC).
fn read_on_huge_pages<T: hdf5::H5Type + Copy + Default>(d: &hdf5::Dataset) -> hdf5::Result<Vec<T>> {
    let len = d.size();
    let mut v = Vec::with_capacity(len);
    crate::util::advise_huge_pages(&v);
    v.resize(len, T::default());
    d.read_into_raw(&mut v)?;
    Ok(v)
}

/// One graph file in memory: the nodes of one part (or of the whole dataset) with their
/// adjacency, features and the edges whose source they own.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphPart {
    pub meta: GraphMeta,
    /// CSR over the owned nodes (local row `i` is global node `first_node + i`), built from the
    /// training edges only; `indices` are global ids.
    pub indptr: Vec<u64>,
    pub indices: Vec<u32>,
    /// Row-major `[n_local, feature_dim]`.
    pub features: Vec<f32>,
    /// Id of each owned node in the raw input.
    pub orig_id: Vec<u64>,
    /// Publication time (year or day) of each owned node, where known.
    pub time: Option<Vec<i64>>,
    /// Class of each owned node, where known.
    pub label: Option<Vec<i64>>,
    /// Positive training edges `(source, target)` in global ids, sources owned here.
    pub train_edges: Vec<[u64; 2]>,
    pub valid_edges: Vec<[u64; 2]>,
    pub test_edges: Vec<[u64; 2]>,
    /// Row-major `[valid_edges.len(), num_neg]` fixed negative targets.
    pub valid_neg: Vec<u64>,
    pub test_neg: Vec<u64>,
    /// Negatives per held-out edge (K).
    pub num_neg: usize,
    /// Node-classification splits (global ids of owned nodes); empty when absent.
    pub train_idx: Vec<u64>,
    pub valid_idx: Vec<u64>,
    pub test_idx: Vec<u64>,
}

impl GraphPart {
    pub fn num_local_nodes(&self) -> usize {
        self.orig_id.len()
    }
    pub fn first_node(&self) -> u64 {
        self.meta.first_node()
    }
    /// Whether this part owns global node `id`.
    pub fn owns(&self, id: u64) -> bool {
        let first = self.first_node();
        id >= first && id < first + self.num_local_nodes() as u64
    }
    /// Message-passing neighbours (global ids) of owned node `id`.
    pub fn neighbors(&self, id: u64) -> &[u32] {
        let i = (id - self.first_node()) as usize;
        &self.indices[self.indptr[i] as usize..self.indptr[i + 1] as usize]
    }
    /// Feature row of owned node `id`.
    pub fn feature_row(&self, id: u64) -> &[f32] {
        let f = self.meta.feature_dim as usize;
        let i = (id - self.first_node()) as usize;
        &self.features[i * f..(i + 1) * f]
    }

    /// Checks that every array has the shape the attributes promise; `path` names the source.
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.validate_selected(path, PartSelection::ALL)
    }

    /// [`GraphPart::validate`] for a part read with `sel` (arrays it skipped are not checked).
    pub fn validate_selected(&self, path: &Path, sel: PartSelection) -> Result<()> {
        let m = &self.meta;
        let bad = |msg: String| Err(Error::invalid(path, msg));
        if m.format_version != FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not the supported version {FORMAT_VERSION}",
                m.format_version
            ));
        }
        if m.node_offset.len() != m.num_parts as usize + 1 || m.part_id >= m.num_parts {
            return bad(format!(
                "node_offset has {} entries for num_parts {} (part_id {})",
                m.node_offset.len(),
                m.num_parts,
                m.part_id
            ));
        }
        if m.node_offset.windows(2).any(|w| w[0] > w[1])
            || m.node_offset.first() != Some(&0)
            || m.node_offset.last() != Some(&m.num_nodes)
        {
            return bad("node_offset is not a non-decreasing 0..num_nodes sequence".into());
        }
        let n = m.num_local_nodes() as usize;
        let f = m.feature_dim as usize;
        if self.orig_id.len() != n {
            return bad(format!(
                "/node/orig_id has {} rows, expected {n}",
                self.orig_id.len()
            ));
        }
        if self.indptr.len() != n + 1 || self.indptr[0] != 0 {
            return bad(format!(
                "/csr/indptr has {} entries, expected {}",
                self.indptr.len(),
                n + 1
            ));
        }
        if self.indptr.windows(2).any(|w| w[0] > w[1])
            || *self.indptr.last().unwrap_or(&0) != self.indices.len() as u64
        {
            return bad("/csr/indptr is not a valid prefix sum of /csr/indices".into());
        }
        if let Some(&bad_id) = self.indices.iter().find(|&&v| v as u64 >= m.num_nodes) {
            return bad(format!(
                "/csr/indices holds node {bad_id} >= num_nodes {}",
                m.num_nodes
            ));
        }
        if sel.features && self.features.len() != n * f {
            return bad(format!(
                "/node/features holds {} values, expected {n} x {f}",
                self.features.len()
            ));
        }
        for (name, v) in [("time", &self.time), ("label", &self.label)] {
            if let Some(v) = v {
                if v.len() != n {
                    return bad(format!("/node/{name} has {} rows, expected {n}", v.len()));
                }
            }
        }
        let first = m.first_node();
        let end = first + n as u64;
        for (name, edges) in [
            ("train", &self.train_edges),
            ("valid", &self.valid_edges),
            ("test", &self.test_edges),
        ] {
            for e in edges.iter() {
                if e[0] < first || e[0] >= end || e[1] >= m.num_nodes {
                    return bad(format!(
                        "/edges/{name} holds edge ({}, {}) outside this part's sources [{first}, {end}) or the graph",
                        e[0], e[1]
                    ));
                }
            }
        }
        for (name, negs, pos) in [
            ("valid_neg", &self.valid_neg, &self.valid_edges),
            ("test_neg", &self.test_neg, &self.test_edges),
        ]
        .into_iter()
        .filter(|_| sel.negatives)
        {
            if negs.len() != pos.len() * self.num_neg {
                return bad(format!(
                    "/edges/{name} holds {} values, expected {} x {}",
                    negs.len(),
                    pos.len(),
                    self.num_neg
                ));
            }
            if let Some(&v) = negs.iter().find(|&&v| v >= m.num_nodes) {
                return bad(format!("/edges/{name} holds node {v} >= num_nodes"));
            }
        }
        for (name, idx) in [
            ("train_idx", &self.train_idx),
            ("valid_idx", &self.valid_idx),
            ("test_idx", &self.test_idx),
        ] {
            if let Some(&v) = idx.iter().find(|&&v| v < first || v >= end) {
                return bad(format!(
                    "/node/{name} holds node {v} not owned by this part"
                ));
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temporary name, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        self.validate(path)?;
        atomic_write(path, |tmp| self.write_hdf5(tmp))
    }

    fn write_hdf5(&self, path: &Path) -> Result<()> {
        init_hdf5();
        let h = |e: hdf5::Error| Error::hdf5(path, e);
        let file = hdf5::File::create(path).map_err(h)?;
        let m = &self.meta;
        put_str_attr(&file, "format", FORMAT_NAME).map_err(h)?;
        put_attr(&file, "format_version", m.format_version).map_err(h)?;
        put_str_attr(&file, "dataset_name", &m.dataset_name).map_err(h)?;
        put_str_attr(&file, "fingerprint", &m.fingerprint).map_err(h)?;
        put_attr(&file, "num_parts", m.num_parts).map_err(h)?;
        put_attr(&file, "part_id", m.part_id).map_err(h)?;
        put_attr(&file, "num_nodes", m.num_nodes).map_err(h)?;
        put_attr(&file, "num_edges", m.num_edges).map_err(h)?;
        put_attr(&file, "feature_dim", m.feature_dim).map_err(h)?;
        file.new_attr_builder()
            .with_data(&m.node_offset)
            .create("node_offset")
            .map_err(h)?;
        put_attr(&file, "directed", m.directed as u8).map_err(h)?;
        put_attr(
            &file,
            "undirected_message_passing",
            m.undirected_message_passing as u8,
        )
        .map_err(h)?;
        put_str_attr(&file, "split", &m.split).map_err(h)?;
        put_attr(&file, "num_classes", m.num_classes).map_err(h)?;
        put_str_attr(&file, "partition_method", &m.partition_method).map_err(h)?;

        let group = |name: &str| {
            file.create_group_builder()
                .obj_track_times(false)
                .create(name)
                .map_err(h)
        };
        let csr = group("csr")?;
        let node = group("node")?;
        let edges = group("edges")?;
        put_1d(&csr, "indptr", &self.indptr).map_err(h)?;
        put_1d(&csr, "indices", &self.indices).map_err(h)?;
        put_2d(&node, "features", &self.features, m.feature_dim as usize).map_err(h)?;
        put_1d(&node, "orig_id", &self.orig_id).map_err(h)?;
        if let Some(t) = &self.time {
            put_1d(&node, "time", t).map_err(h)?;
        }
        if let Some(l) = &self.label {
            put_1d(&node, "label", l).map_err(h)?;
        }
        for (name, idx) in [
            ("train_idx", &self.train_idx),
            ("valid_idx", &self.valid_idx),
            ("test_idx", &self.test_idx),
        ] {
            if !idx.is_empty() {
                put_1d(&node, name, idx).map_err(h)?;
            }
        }
        for (name, e) in [
            ("train", &self.train_edges),
            ("valid", &self.valid_edges),
            ("test", &self.test_edges),
        ] {
            put_2d(&edges, name, e.as_flattened(), 2).map_err(h)?;
        }
        put_2d(&edges, "valid_neg", &self.valid_neg, self.num_neg).map_err(h)?;
        put_2d(&edges, "test_neg", &self.test_neg, self.num_neg).map_err(h)?;
        file.flush().map_err(h)?;
        Ok(())
    }

    /// Reads only the root attributes.
    pub fn read_meta(path: &Path) -> Result<GraphMeta> {
        let file = open_ours(path)?;
        read_meta_of(&file, path)
    }

    /// Reads and validates a whole graph file.
    pub fn read(path: &Path) -> Result<GraphPart> {
        Self::read_selected(path, PartSelection::ALL)
    }

    /// Reads the arrays `sel` names (the others stay empty) and checks what it read.
    pub fn read_selected(path: &Path, sel: PartSelection) -> Result<GraphPart> {
        let file = open_ours(path)?;
        let meta = read_meta_of(&file, path)?;
        let h = |what: &str, e: hdf5::Error| Error::hdf5(path, format!("{what}: {e}"));
        let ds = |name: &str| file.dataset(name).map_err(|e| h(name, e));
        let opt = |name: &str| {
            if file.link_exists(name) {
                Some(file.dataset(name).map_err(|e| h(name, e)))
            } else {
                None
            }
        };
        let indptr: Vec<u64> =
            read_on_huge_pages(&ds("csr/indptr")?).map_err(|e| h("csr/indptr", e))?;
        let indices: Vec<u32> =
            read_on_huge_pages(&ds("csr/indices")?).map_err(|e| h("csr/indices", e))?;
        let features: Vec<f32> = if sel.features {
            read_on_huge_pages(&ds("node/features")?).map_err(|e| h("node/features", e))?
        } else {
            Vec::new()
        };
        let orig_id: Vec<u64> = ds("node/orig_id")?
            .read_raw()
            .map_err(|e| h("node/orig_id", e))?;
        let time = match opt("node/time") {
            Some(d) => Some(d?.read_raw::<i64>().map_err(|e| h("node/time", e))?),
            None => None,
        };
        let label = match opt("node/label") {
            Some(d) => Some(d?.read_raw::<i64>().map_err(|e| h("node/label", e))?),
            None => None,
        };
        let idx = |name: &str| -> Result<Vec<u64>> {
            match opt(name) {
                Some(d) => d?.read_raw::<u64>().map_err(|e| h(name, e)),
                None => Ok(Vec::new()),
            }
        };
        let edges = |name: &str| -> Result<Vec<[u64; 2]>> {
            let d = ds(name)?;
            let shape = d.shape();
            if shape.len() != 2 || shape[1] != 2 {
                return Err(Error::hdf5(
                    path,
                    format!("{name}: shape {shape:?} is not [m, 2]"),
                ));
            }
            let flat: Vec<u64> = d.read_raw().map_err(|e| h(name, e))?;
            Ok(flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
        };
        let negs = |name: &str| -> Result<(Vec<u64>, usize)> {
            let d = ds(name)?;
            let shape = d.shape();
            if shape.len() != 2 {
                return Err(Error::hdf5(
                    path,
                    format!("{name}: shape {shape:?} is not [m, K]"),
                ));
            }
            if !sel.negatives {
                return Ok((Vec::new(), shape[1]));
            }
            Ok((d.read_raw().map_err(|e| h(name, e))?, shape[1]))
        };
        let (valid_neg, k_valid) = negs("edges/valid_neg")?;
        let (test_neg, k_test) = negs("edges/test_neg")?;
        let num_neg = k_valid.max(k_test);
        let part = GraphPart {
            meta,
            indptr,
            indices,
            features,
            orig_id,
            time,
            label,
            train_edges: if sel.train_edges {
                edges("edges/train")?
            } else {
                Vec::new()
            },
            valid_edges: edges("edges/valid")?,
            test_edges: edges("edges/test")?,
            valid_neg,
            test_neg,
            num_neg,
            train_idx: idx("node/train_idx")?,
            valid_idx: idx("node/valid_idx")?,
            test_idx: idx("node/test_idx")?,
        };
        part.validate_selected(path, sel)?;
        Ok(part)
    }
}

/// Opens an HDF5 file and checks that it is a shardsage graph file, with errors that say what the
/// file is instead (missing, truncated, foreign).
fn open_ours(path: &Path) -> Result<hdf5::File> {
    init_hdf5();
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let file = hdf5::File::open(path).map_err(|e| {
        Error::hdf5(
            path,
            format!("cannot open (truncated, corrupt or not an HDF5 file): {e}"),
        )
    })?;
    let format: Option<String> = get_str_attr(&file, "format");
    if format.as_deref() != Some(FORMAT_NAME) {
        return Err(Error::hdf5(
            path,
            format!("not a shardsage graph file (root attribute 'format' is {format:?}, expected {FORMAT_NAME:?})"),
        ));
    }
    Ok(file)
}

fn read_meta_of(file: &hdf5::File, path: &Path) -> Result<GraphMeta> {
    let missing = |name: &str| {
        Error::hdf5(
            path,
            format!("missing or malformed root attribute '{name}'"),
        )
    };
    let u32a = |name: &str| get_attr::<u32>(file, name).ok_or_else(|| missing(name));
    let u64a = |name: &str| get_attr::<u64>(file, name).ok_or_else(|| missing(name));
    let stra = |name: &str| get_str_attr(file, name).ok_or_else(|| missing(name));
    let boola = |name: &str| {
        get_attr::<u8>(file, name)
            .map(|v| v != 0)
            .ok_or_else(|| missing(name))
    };
    let format_version = u32a("format_version")?;
    if format_version != FORMAT_VERSION {
        return Err(Error::hdf5(
            path,
            format!("format_version {format_version} is not supported (this build reads {FORMAT_VERSION})"),
        ));
    }
    let node_offset: Vec<u64> = file
        .attr("node_offset")
        .and_then(|a| a.read_raw())
        .map_err(|_| missing("node_offset"))?;
    Ok(GraphMeta {
        format_version,
        dataset_name: stra("dataset_name")?,
        fingerprint: stra("fingerprint")?,
        num_parts: u32a("num_parts")?,
        part_id: u32a("part_id")?,
        num_nodes: u64a("num_nodes")?,
        num_edges: u64a("num_edges")?,
        feature_dim: u32a("feature_dim")?,
        node_offset,
        directed: boola("directed")?,
        undirected_message_passing: boola("undirected_message_passing")?,
        split: stra("split")?,
        num_classes: u32a("num_classes")?,
        partition_method: stra("partition_method")?,
    })
}

fn put_attr<T: hdf5::H5Type>(loc: &hdf5::Location, name: &str, v: T) -> hdf5::Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&v)
}

fn put_str_attr(loc: &hdf5::Location, name: &str, v: &str) -> hdf5::Result<()> {
    let s: hdf5::types::VarLenUnicode = v
        .parse()
        .map_err(|e| hdf5::Error::from(format!("attribute {name}: {e}")))?;
    loc.new_attr::<hdf5::types::VarLenUnicode>()
        .create(name)?
        .write_scalar(&s)
}

fn get_attr<T: hdf5::H5Type>(loc: &hdf5::Location, name: &str) -> Option<T> {
    loc.attr(name).ok()?.read_scalar::<T>().ok()
}

fn get_str_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    let a = loc.attr(name).ok()?;
    a.read_scalar::<hdf5::types::VarLenUnicode>()
        .ok()
        .map(|s| s.as_str().to_string())
}

/// A chunked, deflate-compressed 1-D dataset.
fn put_1d<T: hdf5::H5Type>(g: &hdf5::Group, name: &str, data: &[T]) -> hdf5::Result<()> {
    let mut b = g.new_dataset_builder();
    if !data.is_empty() {
        b = b.chunk(CHUNK_ROWS.min(data.len())).deflate(1);
    }
    b.with_data(data).create(name)?;
    Ok(())
}

/// A chunked, deflate-compressed row-major 2-D dataset of `cols` columns.
fn put_2d<T: hdf5::H5Type>(
    g: &hdf5::Group,
    name: &str,
    data: &[T],
    cols: usize,
) -> hdf5::Result<()> {
    let rows = data.len().checked_div(cols).unwrap_or(0);
    let view = ndarray::ArrayView2::from_shape((rows, cols), data)
        .map_err(|e| hdf5::Error::from(format!("{name}: {e}")))?;
    let mut b = g.new_dataset_builder();
    if rows > 0 && cols > 0 {
        let chunk_rows = (CHUNK_ROWS * 8 / cols.max(8)).clamp(1, rows);
        b = b.chunk((chunk_rows, cols)).deflate(1);
    }
    b.with_data(&view).create(name)?;
    Ok(())
}

/// Writes `path` through `write(tmp)` to a temporary sibling, fsyncs it and renames it into
/// place; on any error the temporary file is removed and `path` is untouched.
pub fn atomic_write(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = write(&tmp).and_then(|()| {
        let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    });
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Write {
            path: path.to_path_buf(),
            cause: Box::new(e),
        }
    })
}

/// `dir/.name.tmp-<pid>`: hidden, in the same directory (so the rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
