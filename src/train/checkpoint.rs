//! Checkpoints: atomic, verifiable, resumable snapshots of training.
//!
//! A checkpoint holds everything needed to continue a run bit-identically: the flat parameter
//! buffer, Adam's moments and step, the position of the counter-based randomness (epoch and
//! step), the global step, the config, the dataset fingerprint, the parameter layout, the best
//! validation metric so far and the world size that wrote it.
//!
//! File format (`.ssck`), all integers little-endian:
//!
//! ```text
//! magic   8 bytes  "SSCKPT\r\n"
//! version u32      1
//! hlen    u64      length of the JSON header
//! header  hlen     UTF-8 JSON (see `Header`): scalars, config, layout, num_params
//! hcrc    u32      crc32c of every byte before it (tells a damaged header from a short file)
//! params  4*n      f32
//! adam_m  4*n      f32   (absent when the header says `"moments": false`: plain SGD state,
//! adam_v  4*n      f32    e.g. node2vec's tables)
//! sha256  32       over every byte before it
//! ```
//!
//! Files are written through [`crate::graph::store::atomic_write`] (temp file, fsync, rename),
//! so a crash mid-write never leaves a half checkpoint under the final name. Reading checks the
//! checksum before trusting any field and tells truncation, corruption and "not a checkpoint"
//! apart. [`CheckpointDir`] keeps `ckpt-<global_step>.ssck` files (the last N) and `best.ssck`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::graph::store::atomic_write;
use crate::{Error, Result};

/// First bytes of every checkpoint file.
pub const MAGIC: &[u8; 8] = b"SSCKPT\r\n";
/// Format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the best checkpoint inside a [`CheckpointDir`].
pub const BEST_NAME: &str = "best.ssck";

const PREFIX_LEN: usize = 8 + 4 + 8;
const HEADER_CRC_LEN: usize = 4;
const DIGEST_LEN: usize = 32;

/// One named parameter tensor: a view `[offset, offset + prod(shape))` of the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl ParamEntry {
    /// Number of values in the tensor.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a run needs to resume. `epoch` and `step` name the next step to run (the
/// counter-based randomness is a function of (seed, epoch, step)), `global_step` counts the
/// optimizer steps taken so far over the whole run.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The flat parameter buffer.
    pub params: Vec<f32>,
    /// Adam's first moment, same length as `params`.
    pub adam_m: Vec<f32>,
    /// Adam's second moment, same length as `params`.
    pub adam_v: Vec<f32>,
    /// Adam's step counter t (for bias correction).
    pub adam_t: u64,
    /// Epoch of the next step to run.
    pub epoch: u64,
    /// Step within `epoch` of the next step to run.
    pub step: u64,
    /// Optimizer steps taken so far.
    pub global_step: u64,
    /// The training configuration, as the training loop serialised it.
    pub config: serde_json::Value,
    /// Fingerprint of the dataset trained on (e.g. a hash of its manifest).
    pub dataset_fingerprint: String,
    /// Names, offsets and shapes of the tensors in `params`.
    pub layout: Vec<ParamEntry>,
    /// Best validation metric seen so far (higher is better), if any evaluation ran.
    pub best_metric: Option<f64>,
    /// Number of MPI ranks of the run that wrote the checkpoint.
    pub world_size: usize,
}

/// The JSON header as stored. `best_metric_bits` carries the exact value (JSON float parsing
/// may round); `best_metric` is there for people reading the header.
#[derive(Serialize, Deserialize)]
struct Header {
    num_params: usize,
    adam_t: u64,
    epoch: u64,
    step: u64,
    global_step: u64,
    config: serde_json::Value,
    dataset_fingerprint: String,
    layout: Vec<ParamEntry>,
    best_metric: Option<f64>,
    best_metric_bits: Option<u64>,
    world_size: usize,
    /// Whether Adam's moments follow the parameters (files before this field always had them).
    #[serde(default = "has_moments")]
    moments: bool,
}

fn has_moments() -> bool {
    true
}

impl Checkpoint {
    /// The shape of the model these parameters belong to, from the training settings stored in
    /// the checkpoint and the dataset's feature width and class count (which the checkpoint's
    /// dataset fingerprint ties it to).
    pub fn model_config(
        &self,
        path: &Path,
        in_dim: usize,
        num_classes: usize,
    ) -> Result<crate::nn::model::ModelConfig> {
        let cfg: crate::train::config::TrainConfig =
            serde_json::from_value(self.config["train_config"].clone()).map_err(|e| {
                Error::invalid(path, format!("config stored in the checkpoint: {e}"))
            })?;
        Ok(crate::train::config::model_config(
            &cfg,
            in_dim,
            num_classes,
        ))
    }

    /// Checks the internal consistency: moment lengths, and every layout entry inside the buffer.
    pub fn validate(&self) -> Result<()> {
        let n = self.params.len();
        let no_moments = self.adam_m.is_empty() && self.adam_v.is_empty();
        if !no_moments && (self.adam_m.len() != n || self.adam_v.len() != n) {
            return Err(Error::Other(format!(
                "checkpoint: {} parameters but Adam moments of {} and {} values",
                n,
                self.adam_m.len(),
                self.adam_v.len()
            )));
        }
        for e in &self.layout {
            if e.offset.checked_add(e.len()).is_none_or(|end| end > n) {
                return Err(Error::Other(format!(
                    "checkpoint: tensor '{}' {:?} at offset {} lies outside the {} parameters",
                    e.name, e.shape, e.offset, n
                )));
            }
        }
        Ok(())
    }

    /// Writes the checkpoint to `path` atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()
            .map_err(|e| Error::invalid(path, e.to_string()))?;
        let header = Header {
            num_params: self.params.len(),
            adam_t: self.adam_t,
            epoch: self.epoch,
            step: self.step,
            global_step: self.global_step,
            config: self.config.clone(),
            dataset_fingerprint: self.dataset_fingerprint.clone(),
            layout: self.layout.clone(),
            best_metric: self.best_metric.filter(|v| v.is_finite()),
            best_metric_bits: self.best_metric.map(f64::to_bits),
            world_size: self.world_size,
            moments: !(self.adam_m.is_empty() && self.adam_v.is_empty()),
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| Error::invalid(path, format!("serialising header: {e}")))?;
        // magic | version | header length | header: covered by the header's crc32c.
        let mut prefix = Vec::with_capacity(PREFIX_LEN + header.len());
        prefix.extend_from_slice(MAGIC);
        prefix.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        prefix.extend_from_slice(&(header.len() as u64).to_le_bytes());
        prefix.extend_from_slice(&header);
        atomic_write(path, |tmp| {
            let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
            let mut out = HashingWriter {
                inner: std::io::BufWriter::with_capacity(1 << 20, file),
                hasher: Sha256::new(),
            };
            let io = |e| Error::io(tmp, e);
            out.write_all(&prefix).map_err(io)?;
            out.write_all(&crc32c::crc32c(&prefix).to_le_bytes())
                .map_err(io)?;
            for array in [&self.params, &self.adam_m, &self.adam_v] {
                write_f32s(&mut out, array).map_err(io)?;
            }
            let digest = out.hasher.finalize();
            out.inner.write_all(&digest).map_err(io)?;
            out.inner
                .into_inner()
                .map_err(|e| Error::io(tmp, e.into_error()))?;
            Ok(())
        })
    }

    /// Reads and verifies a checkpoint. Errors say whether the file is not a checkpoint, is
    /// truncated, or is corrupt (checksum mismatch).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        parse(path, &bytes)
    }

    /// Errors unless this checkpoint was written for the same dataset and the same model shape;
    /// the message says which differs (and for the shape, the first tensor that differs).
    pub fn check_compatible(&self, dataset_fingerprint: &str, layout: &[ParamEntry]) -> Result<()> {
        if self.dataset_fingerprint != dataset_fingerprint {
            return Err(Error::Other(format!(
                "checkpoint from another dataset: it was written for dataset fingerprint {}, \
                 this dataset has {}",
                self.dataset_fingerprint, dataset_fingerprint
            )));
        }
        let differs = |what: String| {
            Err(Error::Other(format!(
                "checkpoint from another model shape: {what}"
            )))
        };
        for (i, (a, b)) in self.layout.iter().zip(layout).enumerate() {
            if a != b {
                return differs(format!(
                    "tensor {i} is '{}' {:?} at offset {} in the checkpoint, \
                     '{}' {:?} at offset {} in the model",
                    a.name, a.shape, a.offset, b.name, b.shape, b.offset
                ));
            }
        }
        if self.layout.len() != layout.len() {
            return differs(format!(
                "the checkpoint has {} tensors, the model {}",
                self.layout.len(),
                layout.len()
            ));
        }
        let model_len = layout.iter().map(|e| e.offset + e.len()).max().unwrap_or(0);
        if self.params.len() < model_len {
            return differs(format!(
                "the checkpoint holds {} parameters, the model needs {}",
                self.params.len(),
                model_len
            ));
        }
        Ok(())
    }
}

/// A writer that hashes everything written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_f32s(out: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    if cfg!(target_endian = "little") {
        // SAFETY: f32 has no padding and every byte pattern is a valid u8; the slice covers
        // exactly the vector's initialised memory. On little-endian targets these are the LE bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        return out.write_all(bytes);
    }
    let mut buf = Vec::with_capacity(1 << 16);
    for chunk in values.chunks(1 << 14) {
        buf.clear();
        for v in chunk {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&buf)?;
    }
    Ok(())
}

fn read_f32s(bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / 4;
    if cfg!(target_endian = "little") {
        let mut values = vec![0f32; n];
        // SAFETY: the destination holds exactly 4n bytes and does not overlap the source.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), values.as_mut_ptr().cast::<u8>(), 4 * n);
        }
        return values;
    }
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
    let bad = |msg: String| Err(Error::invalid(path, msg));
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return bad("not a shardsage checkpoint (wrong magic bytes)".into());
    }
    if bytes.len() < PREFIX_LEN {
        return bad(format!(
            "truncated checkpoint: {} bytes, shorter than any checkpoint",
            bytes.len()
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return bad(format!(
            "checkpoint format version {version}, this build reads version {FORMAT_VERSION} \
             (or the file is corrupt)"
        ));
    }
    let mut hlen_bytes = [0u8; 8];
    hlen_bytes.copy_from_slice(&bytes[12..20]);
    let header_len = u64::from_le_bytes(hlen_bytes);
    // The header has its own crc32c, so a damaged header is told apart from a short file even
    // though the sha256 at the end covers everything.
    let header_end = match usize::try_from(header_len)
        .ok()
        .and_then(|h| PREFIX_LEN.checked_add(h))
        .filter(|&end| end.saturating_add(HEADER_CRC_LEN) <= bytes.len())
    {
        Some(end) => end,
        None => {
            return bad(format!(
                "truncated checkpoint (or corrupt header length): {} bytes, the header alone \
                 needs {}",
                bytes.len(),
                (PREFIX_LEN as u64)
                    .saturating_add(header_len)
                    .saturating_add(HEADER_CRC_LEN as u64)
            ))
        }
    };
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[header_end..header_end + HEADER_CRC_LEN]);
    if crc32c::crc32c(&bytes[..header_end]) != u32::from_le_bytes(crc_bytes) {
        return bad("corrupt checkpoint: header checksum (crc32c) mismatch".into());
    }
    let header: Header = match serde_json::from_slice(&bytes[PREFIX_LEN..header_end]) {
        Ok(h) => h,
        Err(e) => return bad(format!("corrupt checkpoint: header is not valid: {e}")),
    };
    let data_start = header_end + HEADER_CRC_LEN;
    let arrays = if header.moments { 3 } else { 1 };
    let expected = header
        .num_params
        .checked_mul(4 * arrays)
        .and_then(|a| a.checked_add(data_start + DIGEST_LEN));
    let Some(expected) = expected else {
        return bad(format!(
            "corrupt checkpoint: header claims {} parameters",
            header.num_params
        ));
    };
    if bytes.len() < expected {
        return bad(format!(
            "truncated checkpoint: {} bytes, the header says {}",
            bytes.len(),
            expected
        ));
    }
    if bytes.len() > expected {
        return bad(format!(
            "corrupt checkpoint: {} trailing bytes after the {} the header says",
            bytes.len() - expected,
            expected
        ));
    }
    let body_end = bytes.len() - DIGEST_LEN;
    if Sha256::digest(&bytes[..body_end]).as_slice() != &bytes[body_end..] {
        return bad("corrupt checkpoint: sha256 checksum mismatch".into());
    }
    let n = header.num_params;
    let data = &bytes[data_start..body_end];
    let ckpt = Checkpoint {
        params: read_f32s(&data[..4 * n]),
        adam_m: if header.moments {
            read_f32s(&data[4 * n..8 * n])
        } else {
            Vec::new()
        },
        adam_v: if header.moments {
            read_f32s(&data[8 * n..12 * n])
        } else {
            Vec::new()
        },
        adam_t: header.adam_t,
        epoch: header.epoch,
        step: header.step,
        global_step: header.global_step,
        config: header.config,
        dataset_fingerprint: header.dataset_fingerprint,
        layout: header.layout,
        best_metric: header
            .best_metric_bits
            .map(f64::from_bits)
            .or(header.best_metric),
        world_size: header.world_size,
    };
    ckpt.validate()
        .map_err(|e| Error::invalid(path, e.to_string()))?;
    Ok(ckpt)
}

/// Whether `path` starts with the checkpoint magic bytes (for `inspect` to pick a reader); says
/// nothing about whether the file is intact (use [`Checkpoint::load`] or [`summary`]).
pub fn is_checkpoint(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == MAGIC
}

/// A human-readable summary of a checkpoint file (for `shardsage inspect`); verifies it first.
pub fn summary(path: &Path) -> Result<String> {
    let ckpt = Checkpoint::load(path)?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "checkpoint {} ({} bytes, sha256 verified)",
        path.display(),
        size
    );
    let _ = writeln!(
        s,
        "  epoch {} step {} (next to run), global step {}, Adam t {}",
        ckpt.epoch, ckpt.step, ckpt.global_step, ckpt.adam_t
    );
    let _ = writeln!(s, "  world size {}", ckpt.world_size);
    let _ = writeln!(s, "  dataset fingerprint {}", ckpt.dataset_fingerprint);
    match ckpt.best_metric {
        Some(v) => {
            let _ = writeln!(s, "  best validation metric {v}");
        }
        None => {
            let _ = writeln!(s, "  best validation metric: none yet");
        }
    }
    let _ = writeln!(
        s,
        "  {} parameters in {} tensors:",
        ckpt.params.len(),
        ckpt.layout.len()
    );
    for e in &ckpt.layout {
        let _ = writeln!(s, "    {:<32} {:?} @ {}", e.name, e.shape, e.offset);
    }
    let finite = ckpt.params.iter().filter(|v| v.is_finite()).count();
    if finite != ckpt.params.len() {
        let _ = writeln!(
            s,
            "  WARNING: {} non-finite parameters",
            ckpt.params.len() - finite
        );
    }
    let config = serde_json::to_string(&ckpt.config).unwrap_or_default();
    let _ = writeln!(s, "  config {config}");
    Ok(s)
}

/// A directory of checkpoints: `ckpt-<global_step>.ssck` (the last N kept) and `best.ssck`.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
}

impl CheckpointDir {
    /// Opens (creating if needed) a checkpoint directory.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(CheckpointDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the checkpoint of `global_step` goes: `DIR/ckpt-<global_step>.ssck` (zero-padded to
    /// 10 digits so that names sort by step).
    pub fn path_for(&self, global_step: u64) -> PathBuf {
        self.dir.join(format!("ckpt-{global_step:010}.ssck"))
    }

    /// `DIR/best.ssck`.
    pub fn best_path(&self) -> PathBuf {
        self.dir.join(BEST_NAME)
    }

    /// Writes `ckpt-<global_step>.ssck` atomically, then deletes the older `ckpt-*` files beyond
    /// the newest `keep_last` (at least 1) and temp files left by crashed writers. Never touches
    /// `best.ssck`. Returns the path written.
    pub fn save(&self, ckpt: &Checkpoint, keep_last: usize) -> Result<PathBuf> {
        if keep_last == 0 {
            return Err(Error::config(
                "keep_last",
                "must keep at least the checkpoint just written (>= 1)",
            ));
        }
        let path = self.path_for(ckpt.global_step);
        ckpt.save(&path)?;
        let all = self.list()?;
        for (_, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
            match std::fs::remove_file(old) {
                Ok(()) => log::debug!("removed old checkpoint {}", old.display()),
                Err(e) => log::warn!("could not remove old checkpoint {}: {e}", old.display()),
            }
        }
        self.remove_stale_temp_files();
        Ok(path)
    }

    /// Writes (or overwrites) `best.ssck` atomically.
    pub fn save_best(&self, ckpt: &Checkpoint) -> Result<PathBuf> {
        let path = self.best_path();
        ckpt.save(&path)?;
        Ok(path)
    }

    /// The `ckpt-<global_step>.ssck` files, oldest first (by the step in the name).
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(step) = name
                .strip_prefix("ckpt-")
                .and_then(|s| s.strip_suffix(".ssck"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                found.push((step, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest `ckpt-*` checkpoint that reads and verifies, with its path; corrupt or
    /// truncated ones are skipped with a warning naming the file. `None` if there is none.
    pub fn latest_good(&self) -> Result<Option<(PathBuf, Checkpoint)>> {
        for (_, path) in self.list()?.into_iter().rev() {
            match Checkpoint::load(&path) {
                Ok(ckpt) => return Ok(Some((path, ckpt))),
                Err(e) => log::warn!("skipping unusable checkpoint {}: {e}", path.display()),
            }
        }
        Ok(None)
    }

    /// Removes `.ckpt-*.ssck.tmp-<pid>` / `.best.ssck.tmp-<pid>` files of other processes (a
    /// writer killed between create and rename leaves one behind).
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let own = format!(".tmp-{}", std::process::id());
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_temp = name.starts_with('.') && name.contains(".ssck.tmp-");
            if is_temp && !name.ends_with(&own) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => log::info!("removed stale temp file {}", entry.path().display()),
                    Err(e) => log::warn!("could not remove {}: {e}", entry.path().display()),
                }
            }
        }
    }
}

/// The parameter layout as checkpoints record it (names, offsets, shapes).
pub fn checkpoint_layout(
    layout: &crate::nn::params::ParamLayout,
) -> Vec<crate::train::checkpoint::ParamEntry> {
    layout
        .entries
        .iter()
        .map(|e| crate::train::checkpoint::ParamEntry {
            name: e.name.clone(),
            offset: e.offset,
            shape: vec![e.rows, e.cols],
        })
        .collect()
}
