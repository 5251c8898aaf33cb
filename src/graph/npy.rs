//! A small reader (and writer) for NumPy `.npy` files: format versions 1.0, 2.0 and 3.0,
//! little-endian `<f4 <f8 <i4 <i8 <u4 <u8`, `|u1 |b1`, C order.
//!
//! Enough for node features, labels, times, split indices and masks, and given edge splits. Every
//! error names the file; Fortran order, big-endian and other dtypes are refused rather than guessed.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The element type of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    U32,
    U64,
    U8,
    Bool,
}

impl DType {
    fn parse(descr: &str) -> Option<DType> {
        Some(match descr {
            "<f4" => DType::F32,
            "<f8" => DType::F64,
            "<i4" => DType::I32,
            "<i8" => DType::I64,
            "<u4" => DType::U32,
            "<u8" => DType::U64,
            "|u1" | "<u1" => DType::U8,
            "|b1" => DType::Bool,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::U8 | DType::Bool => 1,
        }
    }
    fn descr(self) -> &'static str {
        match self {
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::I32 => "<i4",
            DType::I64 => "<i8",
            DType::U32 => "<u4",
            DType::U64 => "<u8",
            DType::U8 => "|u1",
            DType::Bool => "|b1",
        }
    }
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::F64)
    }
}

/// The values of an array, in their stored type.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// A C-ordered array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: NpyData,
}

/// The parsed header dictionary.
struct Header {
    dtype: DType,
    shape: Vec<usize>,
}

/// Finds the Python literal after `'key':` in the header dictionary.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat_single = format!("'{key}'");
    let pat_double = format!("\"{key}\"");
    let at = header
        .find(&pat_single)
        .or_else(|| header.find(&pat_double))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    Some(rest)
}

fn parse_header(path: &Path, text: &str) -> Result<Header> {
    let bad = |msg: String| {
        Err(Error::invalid(
            path,
            format!("npy header: {msg} (header: {})", text.trim()),
        ))
    };
    let Some(descr) = dict_value(text, "descr") else {
        return bad("no 'descr' entry".into());
    };
    let quote = descr.chars().next().unwrap_or(' ');
    if quote != '\'' && quote != '"' {
        return bad(
            "'descr' is not a simple type string (structured dtypes are not supported)".into(),
        );
    }
    let Some(end) = descr[1..].find(quote) else {
        return bad("unterminated 'descr'".into());
    };
    let descr = &descr[1..1 + end];
    let Some(dtype) = DType::parse(descr) else {
        return bad(format!(
            "dtype {descr:?} is not supported (use little-endian <f4 <f8 <i4 <i8 <u4 <u8, |u1 or |b1)"
        ));
    };
    let Some(fortran) = dict_value(text, "fortran_order") else {
        return bad("no 'fortran_order' entry".into());
    };
    if fortran.starts_with("True") {
        return bad("Fortran-ordered arrays are not supported; save a C-ordered array (np.ascontiguousarray)".into());
    }
    if !fortran.starts_with("False") {
        return bad("'fortran_order' is neither True nor False".into());
    }
    let Some(shape) = dict_value(text, "shape") else {
        return bad("no 'shape' entry".into());
    };
    let Some(shape) = shape.strip_prefix('(').and_then(|s| s.split(')').next()) else {
        return bad("'shape' is not a tuple".into());
    };
    let mut dims = Vec::new();
    for part in shape.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.trim_end_matches('L').parse::<usize>() {
            Ok(d) => dims.push(d),
            Err(_) => {
                return bad(format!(
                    "shape entry {part:?} is not a non-negative integer"
                ))
            }
        }
    }
    Ok(Header { dtype, shape: dims })
}

/// Reads `n` little-endian values of `size` bytes each and decodes them with `decode`.
fn read_values<T>(
    r: &mut impl Read,
    path: &Path,
    n: usize,
    size: usize,
    decode: impl Fn(&[u8]) -> T,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    // Read in blocks so a huge array never needs a second full-size byte buffer.
    let mut block = vec![0u8; (1 << 20) / size * size];
    let mut left = n;
    while left > 0 {
        let take = left.min(block.len() / size);
        let bytes = &mut block[..take * size];
        r.read_exact(bytes).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::invalid(
                    path,
                    format!(
                        "npy data is truncated: the header promises {n} values, the file ends after {}",
                        n - left
                    ),
                )
            } else {
                Error::io(path, e)
            }
        })?;
        out.extend(bytes.chunks_exact(size).map(&decode));
        left -= take;
    }
    Ok(out)
}

/// Reads a whole `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| {
        Error::invalid(
            path,
            "not a .npy file: shorter than the 8-byte magic and version",
        )
    })?;
    if &magic[..6] != MAGIC {
        return Err(Error::invalid(
            path,
            "not a .npy file: missing the \\x93NUMPY magic",
        ));
    }
    let (major, minor) = (magic[6], magic[7]);
    let header_len = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)
                .map_err(|_| Error::invalid(path, "npy header length is truncated"))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|_| Error::invalid(path, "npy header length is truncated"))?;
            u32::from_le_bytes(b) as usize
        }
        _ => {
            return Err(Error::invalid(
                path,
                format!("npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)"),
            ))
        }
    };
    let prefix = if major == 1 { 10 } else { 12 };
    if (prefix + header_len) as u64 > file_len {
        return Err(Error::invalid(
            path,
            format!(
                "npy header is truncated: {header_len} bytes promised, file is {file_len} bytes"
            ),
        ));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let text = std::str::from_utf8(&header)
        .map_err(|_| Error::invalid(path, "npy header is not valid text"))?;
    let Header { dtype, shape } = parse_header(path, text)?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::invalid(path, format!("npy shape {shape:?} is too large")))?;
    let data_len = (count as u64).saturating_mul(dtype.size() as u64);
    let data_start = (prefix + header_len) as u64;
    if data_start + data_len != file_len {
        let what = if data_start + data_len > file_len {
            "truncated"
        } else {
            "longer than its header says"
        };
        return Err(Error::invalid(
            path,
            format!(
                "npy data is {what}: shape {shape:?} of {} needs {data_len} bytes after the header, the file has {}",
                dtype.descr(),
                file_len.saturating_sub(data_start)
            ),
        ));
    }
    let s = dtype.size();
    let data = match dtype {
        DType::F32 => NpyData::F32(read_values(&mut r, path, count, s, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })?),
        DType::F64 => NpyData::F64(read_values(&mut r, path, count, s, |b| {
            f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        })?),
        DType::I32 => NpyData::I32(read_values(&mut r, path, count, s, |b| {
            i32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })?),
        DType::I64 => NpyData::I64(read_values(&mut r, path, count, s, |b| {
            i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        })?),
        DType::U32 => NpyData::U32(read_values(&mut r, path, count, s, |b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })?),
        DType::U64 => NpyData::U64(read_values(&mut r, path, count, s, |b| {
            u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        })?),
        DType::U8 => NpyData::U8(read_values(&mut r, path, count, s, |b| b[0])?),
        DType::Bool => NpyData::Bool(read_values(&mut r, path, count, s, |b| b[0] != 0)?),
    };
    Ok(NpyArray { shape, dtype, data })
}

impl NpyArray {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Rows (first dimension; 1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
    /// Values per row (product of the other dimensions).
    pub fn cols(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Values as f32 (floats converted; integers refused), checked finite: a NaN or infinity is
    /// an error naming the file, row and column.
    pub fn into_f32(self, path: &Path) -> Result<Vec<f32>> {
        let cols = self.cols().max(1);
        let values = match self.data {
            NpyData::F32(v) => v,
            NpyData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            _ => {
                return Err(Error::invalid(
                    path,
                    format!(
                        "dtype {} is not a float type (<f4 or <f8 expected)",
                        self.dtype.descr()
                    ),
                ))
            }
        };
        if let Some(p) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                path,
                format!(
                    "row {} column {} is {} (values must be finite)",
                    p / cols,
                    p % cols,
                    values[p]
                ),
            ));
        }
        Ok(values)
    }

    /// Integer values as i64 (booleans and floats refused).
    pub fn into_i64(self, path: &Path) -> Result<Vec<i64>> {
        let bad_u64 = |i: usize, v: u64| {
            Error::invalid(
                path,
                format!("entry {i} = {v} does not fit a signed 64-bit integer"),
            )
        };
        Ok(match self.data {
            NpyData::I64(v) => v,
            NpyData::I32(v) => v.into_iter().map(i64::from).collect(),
            NpyData::U32(v) => v.into_iter().map(i64::from).collect(),
            NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
            NpyData::U64(v) => {
                let mut out = Vec::with_capacity(v.len());
                for (i, x) in v.into_iter().enumerate() {
                    out.push(i64::try_from(x).map_err(|_| bad_u64(i, x))?);
                }
                out
            }
            _ => {
                return Err(Error::invalid(
                    path,
                    format!("dtype {} is not an integer type", self.dtype.descr()),
                ))
            }
        })
    }

    /// Node ids (non-negative integers) as u64; a negative entry is an error naming its index.
    pub fn into_ids(self, path: &Path) -> Result<Vec<u64>> {
        if let NpyData::U64(v) = self.data {
            return Ok(v);
        }
        let v = self.into_i64(path)?;
        if let Some(i) = v.iter().position(|&x| x < 0) {
            return Err(Error::invalid(
                path,
                format!("entry {i} is the negative id {}", v[i]),
            ));
        }
        Ok(v.into_iter().map(|x| x as u64).collect())
    }
}

/// Element types `write_npy` can store.
pub trait NpyElement: Copy {
    const DTYPE: DType;
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! npy_element {
    ($t:ty, $d:expr) => {
        impl NpyElement for $t {
            const DTYPE: DType = $d;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
npy_element!(f32, DType::F32);
npy_element!(f64, DType::F64);
npy_element!(i32, DType::I32);
npy_element!(i64, DType::I64);
npy_element!(u32, DType::U32);
npy_element!(u64, DType::U64);
npy_element!(u8, DType::U8);

impl NpyElement for bool {
    const DTYPE: DType = DType::Bool;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
}

/// Writes a C-ordered `.npy` file (format 1.0) of `shape` from row-major `data`.
pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(Error::invalid(
            path,
            format!(
                "write_npy: shape {shape:?} holds {count} values, {} given",
                data.len()
            ),
        ));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        T::DTYPE.descr()
    );
    // Pad so that the data starts on a 64-byte boundary, newline-terminated.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * T::DTYPE.size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in data {
        v.put(&mut out);
    }
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&out).map_err(|e| Error::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_dtype_and_refuses_fortran_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let a = read_npy(&p).unwrap();
        assert_eq!((a.shape.clone(), a.rows(), a.cols()), (vec![2, 3], 2, 3));
        assert_eq!(a.into_f32(&p).unwrap()[4], 5.0);
        write_npy(&p, &[3], &[true, false, true]).unwrap();
        assert_eq!(
            read_npy(&p).unwrap().data,
            NpyData::Bool(vec![true, false, true])
        );
        write_npy(&p, &[2], &[-1i64, 4]).unwrap();
        let err = read_npy(&p).unwrap().into_ids(&p).unwrap_err().to_string();
        assert!(err.contains("negative id -1"), "{err}");

        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let err = read_npy(&p).unwrap_err().to_string();
        assert!(err.contains("a.npy") && err.contains("truncated"), "{err}");
        let replace = |from: &[u8], to: &[u8]| {
            let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
            let mut b = bytes.clone();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        std::fs::write(
            &p,
            replace(b"'fortran_order': False", b"'fortran_order': True "),
        )
        .unwrap();
        let err = read_npy(&p).unwrap_err().to_string();
        assert!(err.contains("Fortran"), "{err}");
        std::fs::write(&p, replace(b"<i8", b">i8")).unwrap();
        assert!(read_npy(&p)
            .unwrap_err()
            .to_string()
            .contains("not supported"));

        // Versions 2.0 and 3.0 carry a 4-byte header length.
        for major in [2u8, 3] {
            let header = "{'descr': '<u4', 'fortran_order': False, 'shape': (2, 1), }\n";
            let mut b = b"\x93NUMPY".to_vec();
            b.extend_from_slice(&[major, 0]);
            b.extend_from_slice(&(header.len() as u32).to_le_bytes());
            b.extend_from_slice(header.as_bytes());
            b.extend_from_slice(&7u32.to_le_bytes());
            b.extend_from_slice(&9u32.to_le_bytes());
            std::fs::write(&p, &b).unwrap();
            let a = read_npy(&p).unwrap();
            assert_eq!(
                (a.shape.clone(), a.data),
                (vec![2, 1], NpyData::U32(vec![7, 9]))
            );
        }
        std::fs::write(&p, b"\x93NUMPY\x04\x00\x00\x00").unwrap();
        assert!(read_npy(&p)
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }
}
