//! Text tables as graph data ships them: edge lists (TSV, CSV or whitespace-separated, with an
//! optional header and `#` / `%` comment lines, plain or `.gz`) and numeric tables (OGB's CSVs).
//!
//! Lines are read into one reused buffer and split into field ranges, so reading tens of millions
//! of lines keeps no per-line allocation; every parse error names the file and line.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The column separator of a text table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Delimiter {
    Tab,
    Comma,
    /// Runs of spaces or tabs.
    Space,
}

impl Delimiter {
    /// Guesses the separator from the first data line: a tab, else a comma, else whitespace.
    fn detect(line: &[u8]) -> Delimiter {
        if line.contains(&b'\t') {
            Delimiter::Tab
        } else if line.contains(&b',') {
            Delimiter::Comma
        } else {
            Delimiter::Space
        }
    }
}

/// How to read a table's first lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableFormat {
    /// `None`: detected from the first data line.
    pub delimiter: Option<Delimiter>,
    /// `Some(true)`: the first data line is a header; `Some(false)`: it never is; `None`: it is
    /// when one of its fields is not a number.
    pub header: Option<bool>,
}

/// Counts the bytes read from the file (before decompression), for a progress bar.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Whether a path names a gzip-compressed file (by extension).
pub fn is_gz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// One line of a table split into fields.
pub struct Record<'a> {
    pub line: u64,
    text: &'a [u8],
    fields: &'a [(usize, usize)],
}

impl<'a> Record<'a> {
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
    pub fn field(&self, i: usize) -> &'a [u8] {
        let (a, b) = self.fields[i];
        &self.text[a..b]
    }
}

/// A table reader over a plain or gzip-compressed file.
pub struct Table {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    bytes_read: Arc<AtomicU64>,
    format: TableFormat,
    delimiter: Option<Delimiter>,
    started: bool,
    line: u64,
    buf: Vec<u8>,
    fields: Vec<(usize, usize)>,
}

impl Table {
    pub fn open(path: &Path, format: TableFormat) -> Result<Table> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let bytes_read = Arc::new(AtomicU64::new(0));
        let counted = CountingReader {
            inner: file,
            count: bytes_read.clone(),
        };
        let reader: Box<dyn BufRead> = if is_gz(path) {
            Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, counted)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 20, counted))
        };
        Ok(Table {
            path: path.to_path_buf(),
            reader,
            bytes_read,
            format,
            delimiter: format.delimiter,
            started: false,
            line: 0,
            buf: Vec::with_capacity(256),
            fields: Vec::with_capacity(8),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes read from the file so far (compressed bytes for `.gz`).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Reads one raw line into `buf` (without the line ending); false at the end of the file.
    fn read_line(&mut self) -> Result<bool> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf).map_err(|e| {
            Error::invalid(
                &self.path,
                format!(
                    "read failed after line {} (corrupt or truncated?): {e}",
                    self.line
                ),
            )
        })?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(true)
    }

    fn split(&mut self, delimiter: Delimiter) {
        self.fields.clear();
        let text = &self.buf;
        let trim = |mut a: usize, mut b: usize| {
            while a < b && text[a].is_ascii_whitespace() {
                a += 1;
            }
            while b > a && text[b - 1].is_ascii_whitespace() {
                b -= 1;
            }
            (a, b)
        };
        match delimiter {
            Delimiter::Space => {
                let mut i = 0;
                while i < text.len() {
                    while i < text.len() && text[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    let start = i;
                    while i < text.len() && !text[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    if i > start {
                        self.fields.push((start, i));
                    }
                }
            }
            Delimiter::Tab | Delimiter::Comma => {
                let sep = if delimiter == Delimiter::Tab {
                    b'\t'
                } else {
                    b','
                };
                let mut start = 0;
                for (i, &c) in text.iter().enumerate() {
                    if c == sep {
                        self.fields.push(trim(start, i));
                        start = i + 1;
                    }
                }
                self.fields.push(trim(start, text.len()));
            }
        }
    }

    /// The next data line (comments, blank lines and a header skipped), or `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            let first = self.buf.iter().position(|c| !c.is_ascii_whitespace());
            let Some(first) = first else { continue };
            if matches!(self.buf[first], b'#' | b'%') {
                continue;
            }
            let delimiter = *self
                .delimiter
                .get_or_insert_with(|| Delimiter::detect(&self.buf));
            self.split(delimiter);
            if !self.started {
                self.started = true;
                let is_header = match self.format.header {
                    Some(h) => h,
                    None => self.fields.iter().any(|&(a, b)| {
                        std::str::from_utf8(&self.buf[a..b])
                            .map_or(true, |s| s.parse::<f64>().is_err())
                    }),
                };
                if is_header {
                    continue;
                }
            }
            return Ok(Some(Record {
                line: self.line,
                text: &self.buf,
                fields: &self.fields,
            }));
        }
    }
}

/// Why a field is not a node id.
fn id_error(field: &[u8]) -> String {
    let shown = String::from_utf8_lossy(field);
    if field.is_empty() {
        "empty field where a node id was expected".to_string()
    } else if field[0] == b'-' && field.len() > 1 && field[1..].iter().all(u8::is_ascii_digit) {
        format!("negative node id {shown} (ids must be non-negative integers)")
    } else if field.iter().all(u8::is_ascii_digit) {
        format!("node id {shown} is too large (at most {})", u64::MAX)
    } else {
        format!("{shown:?} is not a non-negative integer node id")
    }
}

/// Parses a non-negative decimal integer (an optional leading `+` allowed).
#[inline]
pub fn parse_id(field: &[u8]) -> std::result::Result<u64, String> {
    let digits = field.strip_prefix(b"+").unwrap_or(field);
    if digits.is_empty() {
        return Err(id_error(field));
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(id_error(field));
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(d as u64))
            .ok_or_else(|| id_error(field))?;
    }
    Ok(v)
}

/// Parses a signed decimal integer (times, labels).
pub fn parse_i64(field: &[u8]) -> std::result::Result<i64, String> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .or_else(|| {
            // OGB writes some integer columns as floats ("2019.0").
            let f = std::str::from_utf8(field).ok()?.parse::<f64>().ok()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        })
        .ok_or_else(|| format!("{:?} is not an integer", String::from_utf8_lossy(field)))
}

/// Parses a finite float.
pub fn parse_f32(field: &[u8]) -> std::result::Result<f32, String> {
    let v = std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse::<f32>().ok())
        .ok_or_else(|| format!("{:?} is not a number", String::from_utf8_lossy(field)))?;
    if !v.is_finite() {
        return Err(format!("{v} is not finite (values must be finite)"));
    }
    Ok(v)
}

/// Reads every record, checking it has exactly `fields` fields (or, with `None`, as many as the
/// first record), and hands it to `each`.
pub fn for_each_record(
    path: &Path,
    format: TableFormat,
    fields: Option<usize>,
    what: &str,
    mut each: impl FnMut(&Record<'_>) -> Result<()>,
) -> Result<()> {
    let mut table = Table::open(path, format)?;
    let mut expected = fields;
    while let Some(rec) = table.next_record()? {
        let want = *expected.get_or_insert(rec.len());
        if rec.len() != want {
            return Err(Error::parse(
                path,
                rec.line,
                format!("expected {want} fields ({what}), found {}", rec.len()),
            ));
        }
        each(&rec)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_explain_failures() {
        assert_eq!(parse_id(b"12345"), Ok(12345));
        assert!(parse_id(b"-3").unwrap_err().contains("negative node id -3"));
        assert!(parse_id(b"1.5")
            .unwrap_err()
            .contains("not a non-negative integer"));
        assert!(parse_id(b"99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(parse_i64(b"2019.0"), Ok(2019));
    }

    #[test]
    fn tables_skip_comments_headers_and_detect_separators() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.csv");
        std::fs::write(&p, "# c\nsrc,dst\n% x\n1, 2\r\n\n3,4\n").unwrap();
        let mut got = Vec::new();
        for_each_record(&p, TableFormat::default(), Some(2), "edge", |r| {
            got.push((
                r.line,
                parse_id(r.field(0)).unwrap(),
                parse_id(r.field(1)).unwrap(),
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![(4, 1, 2), (6, 3, 4)]);
        std::fs::write(&p, "1 2\n3  4 5\n").unwrap();
        let err = for_each_record(
            &p,
            TableFormat::default(),
            Some(2),
            "source, target",
            |_| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("e.csv:2:") && err.contains("found 3"), "{err}");
    }
}
