//! TensorBoard event files (`RUN_DIR/tb/events.out.tfevents.<unix_ts>.<hostname>`) with scalar
//! summaries, written without TensorFlow: TFRecord framing and a hand-encoded protobuf `Event`.
//!
//! TFRecord: `u64 length (LE) | u32 masked crc32c(length bytes) | data | u32 masked crc32c(data)`,
//! mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. The first record is an `Event` with
//! `file_version = "brain.Event:2"`; every later one carries `wall_time` (field 1, double),
//! `step` (field 2, int64) and `summary` (field 5) holding `Summary.Value`s (field 1) with `tag`
//! (field 1, string) and `simple_value` (field 2, float).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// Subdirectory of the run directory that holds the event files.
pub const TB_DIR: &str = "tb";

/// How long buffered events may wait before they are flushed to the file.
const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// crc32c of `data`, masked as TFRecord does.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    // (crc >> 15) | (crc << 17) is a rotation by 15.
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames `data` as one TFRecord.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The protobuf bytes of an `Event` with `wall_time` and `file_version`.
pub fn encode_file_version_event(wall_time: f64) -> Vec<u8> {
    let mut ev = Vec::new();
    put_key(&mut ev, 1, 1);
    ev.extend_from_slice(&wall_time.to_le_bytes());
    put_bytes(&mut ev, 3, b"brain.Event:2");
    ev
}

/// The protobuf bytes of an `Event` with `wall_time`, `step` and a summary of scalar values.
pub fn encode_scalars_event(wall_time: f64, step: i64, scalars: &[(&str, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, value) in scalars {
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_key(&mut v, 2, 5);
        v.extend_from_slice(&value.to_le_bytes());
        put_bytes(&mut summary, 1, &v);
    }
    let mut ev = Vec::new();
    put_key(&mut ev, 1, 1);
    ev.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut ev, 2, 0);
    // int64 varint: negative values are their 64-bit two's complement.
    put_varint(&mut ev, step as u64);
    put_bytes(&mut ev, 5, &summary);
    ev
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    // Keep the file name plain.
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Writes scalars to a TensorBoard event file; buffered, flushed every couple of seconds, on
/// [`TbWriter::flush`] and on drop. Only one process (rank 0) should write a run's events.
pub struct TbWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    last_flush: Instant,
}

impl TbWriter {
    /// Creates `run_dir/tb/events.out.tfevents.<unix_ts>.<hostname>` (with a `.<n>` suffix if
    /// that name is taken) and writes the file-version record.
    pub fn create(run_dir: &Path) -> Result<Self> {
        let dir = run_dir.join(TB_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let wall = now_seconds();
        let base = format!("events.out.tfevents.{}.{}", wall as u64, hostname());
        let mut n = 0u32;
        let (path, file) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut writer = TbWriter {
            path,
            out: std::io::BufWriter::new(file),
            last_flush: Instant::now(),
        };
        writer.write_record(&encode_file_version_event(wall))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one scalar `value` for `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        self.scalars(step, &[(tag, value)])
    }

    /// Records several scalars at the same `step` in one event.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f32)]) -> Result<()> {
        self.write_record(&encode_scalars_event(now_seconds(), step, values))?;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    /// Pushes buffered events to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn write_record(&mut self, event: &[u8]) -> Result<()> {
        self.out
            .write_all(&tfrecord(event))
            .map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for TbWriter {
    fn drop(&mut self) {
        if let Err(e) = self.out.flush() {
            log::warn!("{}: flushing TensorBoard events: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // the mask spelled as TFRecord's documentation does
    fn varints_and_crc_mask() {
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        // crc32c("123456789") = 0xe3069283 (the standard check value)
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let c = 0xe306_9283u32;
        assert_eq!(
            masked_crc32c(b"123456789"),
            ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
        );
    }
}
