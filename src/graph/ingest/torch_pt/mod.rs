//! PyTorch `.pt` files as `torch.save` has written them since torch 1.6, read without Python or
//! torch: a zip archive holding `<name>/data.pkl` (a pickle of the saved object) and
//! `<name>/data/<key>` (the raw bytes of each tensor storage), plus `<name>/byteorder`.
//!
//! Supported: objects built from dicts (plain or `collections.OrderedDict`), lists, tuples,
//! strings, numbers, booleans, `None` and dense tensors of integer, float or bool dtype that are
//! contiguous (row-major). That is what OGB's split files hold (`split/time/train.pt`: a dict of
//! `source_node` / `target_node` tensors; `valid.pt` / `test.pt` add `target_node_neg`).
//!
//! Not supported, each refused with an error that names the file: the legacy format of torch
//! before 1.6 (a bare pickle stream, or `torch.save(..., _use_new_zipfile_serialization=False)`),
//! numpy arrays or any other Python class inside the pickle, half / bfloat16 / complex /
//! quantized / sparse tensors, and non-contiguous views. Pickles are only interpreted, never
//! executed: a class the reader does not know is an error, not a call.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

mod pickle;

use pickle::{Obj, Unpickler};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    F64,
    F32,
}

impl DType {
    /// From the storage class of the pickle (`torch.LongStorage` and so on).
    fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::I64 | DType::F64 => 8,
            DType::I32 | DType::F32 => 4,
            DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F64 | DType::F32)
    }
}

/// A dense, contiguous tensor read from the archive (little-endian bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    data: Vec<u8>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as i64, for integer and bool tensors.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let d = &self.data;
        Some(match self.dtype {
            DType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
                .collect(),
            DType::I16 => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::I8 => d.iter().map(|&b| b as i8 as i64).collect(),
            DType::U8 | DType::Bool => d.iter().map(|&b| b as i64).collect(),
            DType::F64 | DType::F32 => return None,
        })
    }

    /// The values as f32, for float tensors.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let d = &self.data;
        Some(match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect(),
            DType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            _ => return None,
        })
    }
}

/// The saved object.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Keys and values in insertion order.
    Dict(Vec<(Value, Value)>),
    Tensor(Tensor),
}

impl Value {
    /// The entry of a dict with a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string keys of a dict (for error messages).
    pub fn keys(&self) -> Vec<String> {
        match self {
            Value::Dict(items) => items
                .iter()
                .map(|(k, _)| match k {
                    Value::Str(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// Reads a `torch.save` archive.
pub fn load(path: &Path) -> Result<Value> {
    let bad = |msg: String| Error::invalid(path, msg);
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 4];
    let got = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if got < 4 || &magic != b"PK\x03\x04" {
        if got >= 1 && magic[0] == 0x80 {
            return Err(bad(
                "a PyTorch file in the legacy format of torch < 1.6 (a bare pickle), which is not \
                 supported: re-save it with torch.save() of torch >= 1.6 (the zip format, the \
                 default) or export the arrays as .npy"
                    .into(),
            ));
        }
        return Err(bad(
            "not a PyTorch .pt file: torch.save writes a zip archive, and this file does not \
             start with one"
                .into(),
        ));
    }
    drop(file);
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        bad(format!(
            "truncated or damaged .pt archive (its zip directory cannot be read: {e})"
        ))
    })?;
    let pickle_name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| bad("a zip archive without data.pkl: not written by torch.save".into()))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let read_entry = |zip: &mut zip::ZipArchive<File>, name: &str| -> Result<Vec<u8>> {
        let mut entry = zip
            .by_name(name)
            .map_err(|e| bad(format!("entry {name}: {e}")))?;
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut buf)
            .map_err(|e| bad(format!("entry {name} cannot be read (truncated?): {e}")))?;
        Ok(buf)
    };
    let big_endian = match zip.index_for_name(&format!("{prefix}byteorder")) {
        Some(_) => {
            let b = read_entry(&mut zip, &format!("{prefix}byteorder"))?;
            match String::from_utf8_lossy(&b).trim() {
                "little" => false,
                "big" => true,
                other => return Err(bad(format!("unknown byte order '{other}'"))),
            }
        }
        None => false,
    };
    let pickle = read_entry(&mut zip, &pickle_name)?;
    let obj = Unpickler::new(&pickle)
        .run()
        .map_err(|m| bad(format!("{pickle_name}: {m}")))?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    to_value(obj, &mut |key: &str| -> Result<Vec<u8>> {
        if let Some(b) = storages.get(key) {
            return Ok(b.clone());
        }
        let b = read_entry(&mut zip, &format!("{prefix}data/{key}"))?;
        storages.insert(key.to_string(), b.clone());
        Ok(b)
    })
    .and_then(|v| if big_endian { swap_bytes(v) } else { Ok(v) })
    .map_err(|e| match e {
        Error::Other(m) => bad(m),
        e => e,
    })
}

/// Turns every tensor of a big-endian archive little-endian.
fn swap_bytes(v: Value) -> Result<Value> {
    Ok(match v {
        Value::Tensor(mut t) => {
            let s = t.dtype.size();
            for c in t.data.chunks_exact_mut(s) {
                c.reverse();
            }
            Value::Tensor(t)
        }
        Value::Tuple(xs) => Value::Tuple(xs.into_iter().map(swap_bytes).collect::<Result<_>>()?),
        Value::List(xs) => Value::List(xs.into_iter().map(swap_bytes).collect::<Result<_>>()?),
        Value::Dict(xs) => Value::Dict(
            xs.into_iter()
                .map(|(k, v)| Ok((k, swap_bytes(v)?)))
                .collect::<Result<_>>()?,
        ),
        other => other,
    })
}

/// The public value of an interpreted object; storages are read through `storage`.
fn to_value(obj: Obj, storage: &mut dyn FnMut(&str) -> Result<Vec<u8>>) -> Result<Value> {
    let other = |m: String| Error::Other(m);
    Ok(match obj {
        Obj::None => Value::None,
        Obj::Bool(b) => Value::Bool(b),
        Obj::Int(v) => Value::Int(v),
        Obj::Float(v) => Value::Float(v),
        Obj::Str(s) => Value::Str(s),
        Obj::Bytes(b) => Value::Bytes(b),
        Obj::Tuple(xs) => Value::Tuple(
            xs.into_iter()
                .map(|x| to_value(x, storage))
                .collect::<Result<_>>()?,
        ),
        Obj::List(xs) => Value::List(
            xs.into_iter()
                .map(|x| to_value(x, storage))
                .collect::<Result<_>>()?,
        ),
        Obj::Dict(xs) => Value::Dict(
            xs.into_iter()
                .map(|(k, v)| Ok((to_value(k, storage)?, to_value(v, storage)?)))
                .collect::<Result<_>>()?,
        ),
        Obj::Tensor(st, offset, shape, stride) => {
            let Obj::Storage(dtype, key, numel) = *st else {
                return Err(other("tensor without a storage".into()));
            };
            // Row-major strides (dimensions of size 1 may carry any stride).
            let mut expect = 1usize;
            for (&n, &s) in shape.iter().zip(&stride).rev() {
                if n != 1 && s != expect {
                    return Err(other(format!(
                        "a non-contiguous tensor (size {shape:?}, stride {stride:?}) is not \
                         supported; save t.contiguous()"
                    )));
                }
                expect *= n;
            }
            let count: usize = shape.iter().product();
            if offset + count > numel {
                return Err(other(format!(
                    "tensor of size {shape:?} at offset {offset} overruns its storage of {numel} \
                     elements"
                )));
            }
            let bytes = storage(&key)?;
            let es = dtype.size();
            if bytes.len() < numel * es {
                return Err(other(format!(
                    "storage {key} holds {} bytes, {} expected (truncated?)",
                    bytes.len(),
                    numel * es
                )));
            }
            Value::Tensor(Tensor {
                dtype,
                shape,
                data: bytes[offset * es..(offset + count) * es].to_vec(),
            })
        }
        Obj::Global(m, n) => {
            return Err(other(format!(
                "the Python object {m}.{n} is not supported (dicts, lists, tuples, numbers, \
                 strings and tensors are)"
            )))
        }
        Obj::Storage(..) => {
            return Err(other(
                "a bare storage outside a tensor is not supported".into(),
            ))
        }
        Obj::Mark => return Err(other("malformed pickle: a MARK left on the stack".into())),
    })
}

/// The tensor at `key` of a dict, with a clear error naming the file and the key.
pub fn tensor<'v>(path: &Path, v: &'v Value, key: &str) -> Result<&'v Tensor> {
    match v.get(key) {
        Some(Value::Tensor(t)) => Ok(t),
        Some(other) => Err(Error::invalid(
            path,
            format!("'{key}' is a {}, not a tensor", other.kind()),
        )),
        None => Err(Error::invalid(
            path,
            format!(
                "no '{key}' in the saved {} (it has: {})",
                v.kind(),
                v.keys().join(", ")
            ),
        )),
    }
}
