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

/// What the pickle machine holds: plain values, plus the torch pieces a tensor is built from.
#[derive(Clone, Debug)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Obj>),
    List(Vec<Obj>),
    Dict(Vec<(Obj, Obj)>),
    /// A class or function named by the pickle (`module.name`); never called, only matched.
    Global(String, String),
    /// A storage record: element type, archive key, element count.
    Storage(DType, String, usize),
    /// A tensor view of a storage: (storage, offset, shape, stride).
    Tensor(Box<Obj>, usize, Vec<usize>, Vec<usize>),
    Mark,
}

/// A pickle interpreter for the opcodes `torch.save` emits (protocol 2, and the framing opcodes of
/// protocol 4 for good measure).
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Obj>,
    memo: HashMap<u32, Obj>,
}

type PResult<T> = std::result::Result<T, String>;

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("pickle ends early at byte {} (truncated?)", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> PResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> PResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> PResult<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| "pickle ends inside a GLOBAL name (truncated?)".to_string())?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn pop(&mut self) -> PResult<Obj> {
        self.stack
            .pop()
            .ok_or_else(|| format!("malformed pickle: empty stack at byte {}", self.pos))
    }
    fn top(&mut self) -> PResult<&mut Obj> {
        let pos = self.pos;
        self.stack
            .last_mut()
            .ok_or_else(|| format!("malformed pickle: empty stack at byte {pos}"))
    }
    /// Everything above the topmost mark (which is removed).
    fn pop_mark(&mut self) -> PResult<Vec<Obj>> {
        let m = self
            .stack
            .iter()
            .rposition(|o| matches!(o, Obj::Mark))
            .ok_or_else(|| format!("malformed pickle: no MARK at byte {}", self.pos))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }
    fn memo_get(&self, k: u32) -> PResult<Obj> {
        self.memo
            .get(&k)
            .cloned()
            .ok_or_else(|| format!("malformed pickle: memo entry {k} is not set"))
    }
    fn memo_put(&mut self, k: u32) -> PResult<()> {
        let top = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| "malformed pickle: PUT on an empty stack".to_string())?;
        self.memo.insert(k, top);
        Ok(())
    }
    fn set_items(&mut self, items: Vec<Obj>) -> PResult<()> {
        if !items.len().is_multiple_of(2) {
            return Err("malformed pickle: SETITEMS with an odd number of items".into());
        }
        let Obj::Dict(d) = self.top()? else {
            return Err("SETITEM(S) on something that is not a dict".into());
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    /// A class or function reference; numpy's are refused at once (their reconstruction goes
    /// through helpers whose names would hide what the file holds).
    fn push_global(&mut self, module: String, name: String) -> PResult<()> {
        if module == "numpy" || module.starts_with("numpy.") {
            return Err(format!(
                "a numpy array ({module}.{name}) inside the pickle is not supported; save torch \
                 tensors (torch.from_numpy) or .npy files instead"
            ));
        }
        self.stack.push(Obj::Global(module, name));
        Ok(())
    }

    fn run(mut self) -> PResult<Obj> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} is not supported"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Obj::Mark),
                b'N' => self.stack.push(Obj::None),
                0x88 => self.stack.push(Obj::Bool(true)),
                0x89 => self.stack.push(Obj::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Obj::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Obj::Int(v as i64));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Obj::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(format!("an integer of {n} bytes does not fit 64 bits"));
                    }
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Obj::Int(v));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().map_err(|_| "short float")?);
                    self.stack.push(Obj::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Obj::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Obj::Str(s));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Obj::Bytes(b));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Obj::Bytes(b));
                }
                b'}' => self.stack.push(Obj::Dict(Vec::new())),
                b']' => self.stack.push(Obj::List(Vec::new())),
                b')' => self.stack.push(Obj::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Obj::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("malformed pickle: TUPLE of a short stack".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Obj::Tuple(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    let Obj::List(l) = self.top()? else {
                        return Err("APPEND to something that is not a list".into());
                    };
                    l.push(v);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let Obj::List(l) = self.top()? else {
                        return Err("APPENDS to something that is not a list".into());
                    };
                    l.extend(items);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Obj::Str(m), Obj::Str(n)) => self.push_global(m, n)?,
                        _ => return Err("STACK_GLOBAL without two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_storage(pid)?;
                    self.stack.push(storage);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let obj = reduce(func, args)?;
                    self.stack.push(obj);
                }
                b'b' => {
                    // BUILD: the state of an OrderedDict or a tensor's Python attributes; only an
                    // empty state is accepted, since nothing here stores attributes.
                    let state = self.pop()?;
                    let empty = matches!(&state, Obj::None)
                        || matches!(&state, Obj::Dict(d) if d.is_empty())
                        || matches!(&state, Obj::Tuple(t) if t.is_empty());
                    if !empty {
                        return Err(
                            "an object with Python attributes (BUILD with a state) is not \
                             supported"
                                .into(),
                        );
                    }
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {} is not supported",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

/// `('storage', torch.<Type>Storage, key, location, numel)` from BINPERSID.
fn persistent_storage(pid: Obj) -> PResult<Obj> {
    let Obj::Tuple(items) = pid else {
        return Err("a persistent id that is not a tuple".into());
    };
    match items.as_slice() {
        [Obj::Str(kind), Obj::Global(module, class), Obj::Str(key), _location, Obj::Int(numel)]
            if kind == "storage" =>
        {
            let dtype = (module == "torch")
                .then(|| DType::from_storage_class(class))
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "tensors of {module}.{class} are not supported (integer, float32/64 and \
                         bool tensors are)"
                    )
                })?;
            Ok(Obj::Storage(dtype, key.clone(), (*numel).max(0) as usize))
        }
        _ => Err(format!(
            "a persistent id that is not a torch storage: {items:?}"
        )),
    }
}

fn usizes(o: &Obj, what: &str) -> PResult<Vec<usize>> {
    match o {
        Obj::Tuple(xs) => xs
            .iter()
            .map(|x| match x {
                Obj::Int(v) if *v >= 0 => Ok(*v as usize),
                _ => Err(format!("tensor {what} holds {x:?}")),
            })
            .collect(),
        _ => Err(format!("tensor {what} is not a tuple")),
    }
}

/// REDUCE: the few callables `torch.save` uses; anything else is refused, never run.
fn reduce(func: Obj, args: Obj) -> PResult<Obj> {
    let Obj::Global(module, name) = &func else {
        return Err(format!(
            "REDUCE of {func:?}, which is not a class or function"
        ));
    };
    let Obj::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Obj::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") if args.len() >= 4 => {
            let storage = args[0].clone();
            if !matches!(storage, Obj::Storage(..)) {
                return Err("_rebuild_tensor_v2 without a storage".into());
            }
            let offset = match args[1] {
                Obj::Int(v) if v >= 0 => v as usize,
                _ => return Err("_rebuild_tensor_v2: bad storage offset".into()),
            };
            let shape = usizes(&args[2], "size")?;
            let stride = usizes(&args[3], "stride")?;
            if shape.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Obj::Tensor(Box::new(storage), offset, shape, stride))
        }
        _ => Err(format!(
            "the Python object {module}.{name} is not supported (dicts, lists, tuples, numbers, \
             strings and tensors are)"
        )),
    }
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
