//! `manifest.json`, written next to the part files by `partition`: which dataset the parts come
//! from, how nodes were assigned, per-part statistics, the producing command, and the size and
//! SHA-256 of every part file.
//!
//! The loader trusts the manifest for the part count and offsets and checks every part against
//! it; `inspect` re-computes the checksums.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::graph::store;

/// File name of the manifest inside a part directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// File name of part `p`.
pub fn part_file_name(p: usize) -> String {
    format!("part-{p:05}.h5")
}

/// Counts of one part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartStats {
    pub part_id: u32,
    pub file: String,
    pub nodes: u64,
    /// Entries of the message-passing CSR (rows owned here).
    pub csr_edges: u64,
    pub train_edges: u64,
    pub valid_edges: u64,
    pub test_edges: u64,
    /// CSR entries whose neighbour is owned by another part.
    pub cut_edges: u64,
}

/// max / mean over parts of each count (1.0 is perfect balance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub nodes: f64,
    pub csr_edges: f64,
    pub train_edges: f64,
}

/// One file of the part set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The contents of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub dataset_name: String,
    pub fingerprint: String,
    pub num_parts: u32,
    pub num_nodes: u64,
    pub num_edges: u64,
    pub feature_dim: u32,
    pub node_offset: Vec<u64>,
    pub method: String,
    pub seed: u64,
    /// Share of message-passing CSR entries whose endpoints are in different parts.
    pub edge_cut: f64,
    pub balance: Balance,
    pub parts: Vec<PartStats>,
    /// The command line that produced the parts.
    pub command: Vec<String>,
    /// Wall time of the partitioning run (read, assign, write, checksum) and its peak RSS;
    /// informational, so manifests written without them still load.
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::parse(&path, e.line() as u64, e.to_string()))?;
        if m.num_parts == 0
            || m.node_offset.len() != m.num_parts as usize + 1
            || m.parts.len() != m.num_parts as usize
        {
            return Err(Error::invalid(
                &path,
                format!(
                    "num_parts {} does not match {} offsets and {} part entries",
                    m.num_parts,
                    m.node_offset.len(),
                    m.parts.len()
                ),
            ));
        }
        if m.format_version != store::FORMAT_VERSION {
            return Err(Error::invalid(
                &path,
                format!(
                    "format_version {} is not supported (this build reads {})",
                    m.format_version,
                    store::FORMAT_VERSION
                ),
            ));
        }
        Ok(m)
    }

    /// Writes `path` atomically as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Other(format!("serialising the manifest: {e}")))?;
        store::atomic_write(path, |tmp| {
            std::fs::write(tmp, text.as_bytes()).map_err(|e| Error::io(tmp, e))
        })
    }
}

/// Size and hex SHA-256 of a file, read in 1 MiB blocks.
pub fn file_digest(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let got = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        bytes += got as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes, hex))
}
