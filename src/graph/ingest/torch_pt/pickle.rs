//! The pickle interpreter of `torch_pt`: the opcodes `torch.save` emits (protocol 2, and protocol
//! 4's framing), building plain values, storage records and tensor views. Classes are only
//! matched by name (tensor rebuild, OrderedDict); nothing named in a pickle is ever called.

use std::collections::HashMap;

use super::DType;

/// What the pickle machine holds: plain values, plus the torch pieces a tensor is built from.
#[derive(Clone, Debug)]
pub(super) enum Obj {
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
pub(super) struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Obj>,
    memo: HashMap<u32, Obj>,
}

type PResult<T> = std::result::Result<T, String>;

impl<'a> Unpickler<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
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

    pub(super) fn run(mut self) -> PResult<Obj> {
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
