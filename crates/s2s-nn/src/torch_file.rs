//! PyTorch's `.pt` files of a `state_dict`, read and written without Python or libtorch.
//!
//! `torch.save(model.state_dict(), "model.pt")` writes a zip archive (entries stored, not
//! compressed) holding `ARCHIVE/data.pkl`, a pickle of the `OrderedDict` whose tensors point
//! at storages by key, and one entry `ARCHIVE/data/KEY` of raw little-endian values per
//! storage ([PyTorch's serialization notes]). [`read_state_dict`] runs the pickle opcodes
//! on data only: it rebuilds dictionaries, tuples, strings, numbers and tensors
//! (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`), and never calls anything else,
//! so reading an untrusted file is as safe as `torch.load(weights_only=True)`; anything
//! other than a dictionary of `float32` tensors is an error that says what the file holds.
//! [`write_state_dict`] writes what `torch.save` writes for such a dictionary, which
//! `torch.load(weights_only=True)` reads.
//!
//! Legacy files (PyTorch before 1.6, `_use_new_zipfile_serialization=False`) and compressed
//! archives are refused with an error saying how to re-save them.
//!
//! [PyTorch's serialization notes]: https://pytorch.org/docs/stable/notes/serialization.html

use crate::weights::{NamedTensor, WeightsError};
use std::collections::{BTreeMap, HashMap};

fn format_error(message: impl Into<String>) -> WeightsError {
    WeightsError::Format(message.into())
}

/// The tensors of a `.pt` file holding a `state_dict` (a dictionary of `float32` tensors),
/// under their keys, in PyTorch's layout (row-major, whatever the saved strides were).
pub fn read_state_dict(bytes: &[u8]) -> Result<BTreeMap<String, NamedTensor>, WeightsError> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(format_error(if bytes.starts_with(&[0x80]) {
            "a legacy PyTorch file (saved before PyTorch 1.6 or with \
             _use_new_zipfile_serialization=False); load it in PyTorch and torch.save it again"
        } else {
            "not a PyTorch file (no zip archive)"
        }));
    }
    let entries = zip::read_entries(bytes)?;
    let pickle_name = entries
        .keys()
        .find(|name| name.ends_with("/data.pkl") && name.matches('/').count() == 1)
        .ok_or_else(|| format_error("a zip archive without data.pkl: not a torch.save file"))?;
    let archive = pickle_name.trim_end_matches("data.pkl").to_string();
    if let Some(order) = entries.get(&format!("{archive}byteorder")) {
        if *order != b"little" {
            return Err(format_error(format!(
                "byte order {:?}; s2s reads little-endian files",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let root = pickle::run(entries[pickle_name])?;
    let pickle::Value::Dict(items) = root else {
        return Err(format_error(format!(
            "holds {}, not a state_dict (a dictionary of tensors): save model.state_dict()",
            root.describe()
        )));
    };
    let mut tensors = BTreeMap::new();
    let keys: Vec<String> = items.iter().map(|(k, _)| k.describe()).collect();
    for (key, value) in items {
        let pickle::Value::Str(name) = key else {
            return Err(format_error(format!(
                "holds a dictionary with a key {}, not a state_dict",
                key.describe()
            )));
        };
        let pickle::Value::Tensor(tensor) = value else {
            return Err(format_error(format!(
                "holds a dictionary whose {name:?} is {}, not a state_dict of tensors \
                 (its keys: {}); save model.state_dict() alone",
                value.describe(),
                keys.join(", ")
            )));
        };
        let data = entries
            .get(&format!("{archive}data/{}", tensor.storage))
            .ok_or_else(|| {
                format_error(format!(
                    "tensor {name}: storage {} is missing from the archive",
                    tensor.storage
                ))
            })?;
        let values = tensor
            .gather(data)
            .map_err(|e| format_error(format!("tensor {name}: {e}")))?;
        tensors.insert(
            name,
            NamedTensor {
                shape: tensor.size,
                values,
            },
        );
    }
    Ok(tensors)
}

/// `tensors` as the file `torch.save` writes for a dictionary of them (in name order, one
/// storage each, `float32`, little-endian).
pub fn write_state_dict(tensors: &BTreeMap<String, NamedTensor>) -> Result<Vec<u8>, WeightsError> {
    let mut entries: Vec<(String, Vec<u8>)> =
        vec![("archive/data.pkl".into(), pickle::state_dict(tensors))];
    entries.push(("archive/byteorder".into(), b"little".to_vec()));
    for (i, t) in tensors.values().enumerate() {
        let bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        entries.push((format!("archive/data/{i}"), bytes));
    }
    entries.push(("archive/version".into(), b"3\n".to_vec()));
    zip::write_stored(&entries)
}

/// A tensor of a pickle: a view of a storage.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    /// The storage's key (its entry under `data/`).
    storage: String,
    /// The storage's element type (`FloatStorage`, ...).
    dtype: String,
    /// Offset into the storage, in elements.
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    /// The tensor's values in row-major order, read from its storage's bytes.
    fn gather(&self, data: &[u8]) -> Result<Vec<f32>, String> {
        if self.dtype != "FloatStorage" {
            return Err(format!(
                "is torch.{}; s2s reads float32 weights (convert with model.float())",
                self.dtype
            ));
        }
        let storage: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let count: usize = self.size.iter().product();
        let mut values = Vec::with_capacity(count);
        let mut index = vec![0usize; self.size.len()];
        for _ in 0..count {
            let at = self.offset
                + index
                    .iter()
                    .zip(&self.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            values.push(*storage.get(at).ok_or_else(|| {
                format!(
                    "reads element {at} of a storage of {} (a truncated archive?)",
                    storage.len()
                )
            })?);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.size[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(values)
    }
}

/// The pickle protocol, as far as `torch.save` of a `state_dict` uses it.
mod pickle {
    use super::{format_error, NamedTensor, TensorRef, WeightsError};
    use std::collections::BTreeMap;

    /// A value on the pickle machine's stack.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Value {
        None,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Bytes(Vec<u8>),
        Tuple(Vec<Value>),
        List(Vec<Value>),
        Dict(Vec<(Value, Value)>),
        /// A class or function named by `module.name`, not called.
        Global(String, String),
        /// A storage reference (`BINPERSID` of `('storage', type, key, location, size)`).
        Storage {
            dtype: String,
            key: String,
        },
        Tensor(TensorRef),
        /// The result of calling a global that s2s does not rebuild.
        Object(String),
        /// The marker of `MARK`.
        Mark,
    }

    impl Value {
        /// What the value is, for errors.
        pub(super) fn describe(&self) -> String {
            match self {
                Value::None => "None".into(),
                Value::Bool(b) => format!("the bool {b}"),
                Value::Int(i) => format!("the int {i}"),
                Value::Float(f) => format!("the float {f}"),
                Value::Str(s) => format!("{s:?}"),
                Value::Bytes(_) => "bytes".into(),
                Value::Tuple(_) => "a tuple".into(),
                Value::List(_) => "a list".into(),
                Value::Dict(_) => "a dictionary".into(),
                Value::Global(m, n) => format!("the class {m}.{n}"),
                Value::Storage { .. } => "a storage".into(),
                Value::Tensor(_) => "a tensor".into(),
                Value::Object(what) => format!("a {what} object"),
                Value::Mark => "a mark".into(),
            }
        }

        fn usize(&self) -> Result<usize, WeightsError> {
            match self {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                other => Err(format_error(format!(
                    "expected a size in the pickle, found {}",
                    other.describe()
                ))),
            }
        }

        fn sizes(&self) -> Result<Vec<usize>, WeightsError> {
            match self {
                Value::Tuple(items) => items.iter().map(Value::usize).collect(),
                other => Err(format_error(format!(
                    "expected a tuple of sizes in the pickle, found {}",
                    other.describe()
                ))),
            }
        }
    }

    /// A reader over the pickle's bytes.
    struct Input<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Input<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], WeightsError> {
            let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
            let end =
                end.ok_or_else(|| format_error("data.pkl ends in the middle of an opcode"))?;
            let out = &self.bytes[self.at..end];
            self.at = end;
            Ok(out)
        }
        fn u8(&mut self) -> Result<u8, WeightsError> {
            Ok(self.take(1)?[0])
        }
        fn u16(&mut self) -> Result<u16, WeightsError> {
            let b = self.take(2)?;
            Ok(u16::from_le_bytes([b[0], b[1]]))
        }
        fn u32(&mut self) -> Result<u32, WeightsError> {
            let b = self.take(4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        fn u64(&mut self) -> Result<u64, WeightsError> {
            let b = self.take(8)?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        }
        fn line(&mut self) -> Result<String, WeightsError> {
            let rest = &self.bytes[self.at..];
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| format_error("data.pkl ends in the middle of a GLOBAL"))?;
            self.at += end + 1;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        }
        fn string(&mut self, n: usize) -> Result<String, WeightsError> {
            let b = self.take(n)?;
            String::from_utf8(b.to_vec()).map_err(|_| format_error("a string that is not UTF-8"))
        }
    }

    /// The pickle machine: a stack, the positions of its marks, and the memo.
    #[derive(Default)]
    struct Machine {
        stack: Vec<Value>,
        memo: BTreeMap<u64, Value>,
    }

    impl Machine {
        fn pop(&mut self) -> Result<Value, WeightsError> {
            self.stack
                .pop()
                .ok_or_else(|| format_error("data.pkl pops an empty stack"))
        }
        fn top(&mut self) -> Result<&mut Value, WeightsError> {
            self.stack
                .last_mut()
                .ok_or_else(|| format_error("data.pkl reads an empty stack"))
        }
        /// The values above the last mark, which is removed.
        fn pop_mark(&mut self) -> Result<Vec<Value>, WeightsError> {
            let at = self
                .stack
                .iter()
                .rposition(|v| *v == Value::Mark)
                .ok_or_else(|| format_error("data.pkl has no MARK where it needs one"))?;
            let items = self.stack.split_off(at + 1);
            self.stack.pop();
            Ok(items)
        }
        fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, WeightsError> {
            if self.stack.len() < n {
                return Err(format_error("data.pkl pops an empty stack"));
            }
            Ok(self.stack.split_off(self.stack.len() - n))
        }
        fn set_items(&mut self, items: Vec<Value>) -> Result<(), WeightsError> {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            match self.top()? {
                Value::Dict(d) => {
                    d.extend(pairs);
                    Ok(())
                }
                other => Err(format_error(format!(
                    "data.pkl sets items of {}",
                    other.describe()
                ))),
            }
        }
        fn append(&mut self, items: Vec<Value>) -> Result<(), WeightsError> {
            match self.top()? {
                Value::List(l) => {
                    l.extend(items);
                    Ok(())
                }
                other => Err(format_error(format!(
                    "data.pkl appends to {}",
                    other.describe()
                ))),
            }
        }
    }

    /// Calls `callable` with `args`, for the callables of a `state_dict`; anything else
    /// becomes an opaque [`Value::Object`].
    fn reduce(callable: Value, args: Value) -> Result<Value, WeightsError> {
        let Value::Global(module, name) = callable else {
            return Err(format_error(format!(
                "data.pkl calls {}",
                callable.describe()
            )));
        };
        let Value::Tuple(args) = args else {
            return Err(format_error("data.pkl calls a function without a tuple"));
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
            ("torch._utils", "_rebuild_tensor_v2") if args.len() >= 4 => {
                let Value::Storage { dtype, key } = &args[0] else {
                    return Err(format_error(format!(
                        "a tensor of {}, not of a storage",
                        args[0].describe()
                    )));
                };
                let size = args[2].sizes()?;
                let stride = args[3].sizes()?;
                if size.len() != stride.len() {
                    return Err(format_error(
                        "a tensor whose size and stride differ in rank",
                    ));
                }
                Ok(Value::Tensor(TensorRef {
                    storage: key.clone(),
                    dtype: dtype.clone(),
                    offset: args[1].usize()?,
                    size,
                    stride,
                }))
            }
            ("torch._utils", "_rebuild_parameter") if !args.is_empty() => Ok(args[0].clone()),
            _ => Ok(Value::Object(format!("{module}.{name}"))),
        }
    }

    /// Runs the pickle `bytes` and returns the value it leaves.
    pub(super) fn run(bytes: &[u8]) -> Result<Value, WeightsError> {
        let mut input = Input { bytes, at: 0 };
        let mut m = Machine::default();
        loop {
            let at = input.at;
            let op = input.u8()?;
            match op {
                0x80 => {
                    input.u8()?; // PROTO
                }
                0x95 => {
                    input.u64()?; // FRAME
                }
                b'.' => return m.pop(),
                b'(' => m.stack.push(Value::Mark),
                b'N' => m.stack.push(Value::None),
                0x88 => m.stack.push(Value::Bool(true)),
                0x89 => m.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = input.u8()?;
                    m.stack.push(Value::Int(v.into()))
                }
                b'M' => {
                    let v = input.u16()?;
                    m.stack.push(Value::Int(v.into()))
                }
                b'J' => {
                    let v = input.u32()? as i32;
                    m.stack.push(Value::Int(v.into()))
                }
                0x8a => {
                    let n = input.u8()? as usize;
                    let b = input.take(n)?;
                    if n > 8 {
                        return Err(format_error("data.pkl holds an integer beyond 64 bits"));
                    }
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut full = [fill; 8];
                    full[..n].copy_from_slice(b);
                    m.stack.push(Value::Int(i64::from_le_bytes(full)))
                }
                b'G' => {
                    let b = input.take(8)?;
                    m.stack
                        .push(Value::Float(f64::from_be_bytes(b.try_into().expect("8"))))
                }
                b'X' => {
                    let n = input.u32()? as usize;
                    let s = input.string(n)?;
                    m.stack.push(Value::Str(s))
                }
                0x8c => {
                    let n = input.u8()? as usize;
                    let s = input.string(n)?;
                    m.stack.push(Value::Str(s))
                }
                0x8d => {
                    let n = input.u64()? as usize;
                    let s = input.string(n)?;
                    m.stack.push(Value::Str(s))
                }
                b'T' | b'B' => {
                    let n = input.u32()? as usize;
                    let b = input.take(n)?.to_vec();
                    m.stack.push(Value::Bytes(b))
                }
                b'U' | b'C' => {
                    let n = input.u8()? as usize;
                    let b = input.take(n)?.to_vec();
                    m.stack.push(Value::Bytes(b))
                }
                b')' => m.stack.push(Value::Tuple(Vec::new())),
                b']' => m.stack.push(Value::List(Vec::new())),
                b'}' => m.stack.push(Value::Dict(Vec::new())),
                b't' => {
                    let items = m.pop_mark()?;
                    m.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let items = m.pop_n((op - 0x84) as usize)?;
                    m.stack.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = m.pop_mark()?;
                    m.stack.push(Value::List(items))
                }
                b'd' => {
                    let items = m.pop_mark()?;
                    m.stack.push(Value::Dict(Vec::new()));
                    m.set_items(items)?
                }
                b's' => {
                    let items = m.pop_n(2)?;
                    m.set_items(items)?
                }
                b'u' => {
                    let items = m.pop_mark()?;
                    m.set_items(items)?
                }
                b'a' => {
                    let item = m.pop()?;
                    m.append(vec![item])?
                }
                b'e' => {
                    let items = m.pop_mark()?;
                    m.append(items)?
                }
                b'c' => {
                    let module = input.line()?;
                    let name = input.line()?;
                    m.stack.push(Value::Global(module, name))
                }
                0x93 => {
                    let name = m.pop()?;
                    let module = m.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            m.stack.push(Value::Global(module, name))
                        }
                        _ => return Err(format_error("STACK_GLOBAL of non-strings")),
                    }
                }
                b'q' => {
                    let k = input.u8()?;
                    let v = m.top()?.clone();
                    m.memo.insert(k.into(), v);
                }
                b'r' => {
                    let k = input.u32()?;
                    let v = m.top()?.clone();
                    m.memo.insert(k.into(), v);
                }
                0x94 => {
                    let v = m.top()?.clone();
                    let k = m.memo.len() as u64;
                    m.memo.insert(k, v);
                }
                b'h' | b'j' => {
                    let k: u64 = if op == b'h' {
                        input.u8()?.into()
                    } else {
                        input.u32()?.into()
                    };
                    let v = m.memo.get(&k).cloned().ok_or_else(|| {
                        format_error(format!("data.pkl reads memo {k}, which it never set"))
                    })?;
                    m.stack.push(v)
                }
                b'Q' => {
                    let pid = m.pop()?;
                    let storage = match pid {
                        Value::Tuple(items) if items.len() >= 3 => {
                            match (&items[0], &items[1], &items[2]) {
                                (Value::Str(kind), Value::Global(_, dtype), Value::Str(key))
                                    if kind == "storage" =>
                                {
                                    Some(Value::Storage {
                                        dtype: dtype.clone(),
                                        key: key.clone(),
                                    })
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    m.stack.push(storage.ok_or_else(|| {
                        format_error("data.pkl refers to something other than a storage")
                    })?)
                }
                b'R' => {
                    let args = m.pop()?;
                    let callable = m.pop()?;
                    m.stack.push(reduce(callable, args)?)
                }
                0x81 => {
                    m.pop()?;
                    let class = m.pop()?;
                    let what = match class {
                        Value::Global(module, name) => format!("{module}.{name}"),
                        other => other.describe(),
                    };
                    m.stack.push(Value::Object(what))
                }
                b'b' => {
                    // BUILD: an object's state (an OrderedDict's `_metadata`); kept aside.
                    m.pop()?;
                    m.top()?;
                }
                _ => {
                    return Err(format_error(format!(
                        "data.pkl has pickle opcode 0x{op:02x} at byte {at}, which a \
                         state_dict does not use"
                    )))
                }
            }
        }
    }

    /// Appends an integer opcode for `v`.
    fn int(out: &mut Vec<u8>, v: usize) {
        if v < 256 {
            out.extend([b'K', v as u8]);
        } else if v < 65536 {
            out.push(b'M');
            out.extend((v as u16).to_le_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            out.push(b'J');
            out.extend(v.to_le_bytes());
        } else {
            out.extend([0x8a, 8]);
            out.extend((v as u64).to_le_bytes());
        }
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn tuple(out: &mut Vec<u8>, values: &[usize]) {
        out.push(b'(');
        for &v in values {
            int(out, v);
        }
        out.push(b't');
    }

    /// The pickle (protocol 2) of an `OrderedDict` of `tensors`, tensor `i` in storage `i`.
    pub(super) fn state_dict(tensors: &BTreeMap<String, NamedTensor>) -> Vec<u8> {
        const ORDERED_DICT: &[u8] = b"ccollections\nOrderedDict\n)R";
        let mut out = vec![0x80, 2];
        out.extend(ORDERED_DICT);
        out.push(b'(');
        for (i, (name, t)) in tensors.iter().enumerate() {
            string(&mut out, name);
            out.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
            out.push(b'(');
            string(&mut out, "storage");
            out.extend(b"ctorch\nFloatStorage\n");
            string(&mut out, &i.to_string());
            string(&mut out, "cpu");
            int(&mut out, t.values.len());
            out.extend(b"tQ");
            int(&mut out, 0);
            tuple(&mut out, &t.shape);
            let mut stride = vec![1; t.shape.len()];
            for d in (0..t.shape.len().saturating_sub(1)).rev() {
                stride[d] = stride[d + 1] * t.shape[d + 1];
            }
            tuple(&mut out, &stride);
            out.push(0x89);
            out.extend(ORDERED_DICT);
            out.extend(b"tR");
        }
        out.extend(b"u.");
        out
    }
}

/// Zip archives of stored (uncompressed) entries, as `torch.save` writes them.
mod zip {
    use super::{format_error, HashMap, WeightsError};

    const LOCAL: u32 = 0x0403_4b50;
    const CENTRAL: u32 = 0x0201_4b50;
    const END: u32 = 0x0605_4b50;
    /// Data offsets are multiples of this, as `torch.save` aligns them (for `mmap`).
    const ALIGN: usize = 64;

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }
    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// Every entry of the archive `bytes` by name; each must be stored and pass its CRC.
    pub(super) fn read_entries(bytes: &[u8]) -> Result<HashMap<String, &[u8]>, WeightsError> {
        let truncated = || format_error("a truncated zip archive (no central directory)");
        let end = (0..bytes.len().saturating_sub(21))
            .rev()
            .take(65_557)
            .find(|&i| u32_at(bytes, i) == Some(END))
            .ok_or_else(truncated)?;
        let count = u16_at(bytes, end + 10).ok_or_else(truncated)? as usize;
        let mut at = u32_at(bytes, end + 16).ok_or_else(truncated)? as usize;
        if at == 0xffff_ffff_usize {
            return Err(format_error(
                "a zip64 archive (over 4 GiB), which s2s does not read",
            ));
        }
        let mut entries = HashMap::new();
        let bad = |what: &str| format_error(format!("a damaged zip archive ({what})"));
        for _ in 0..count {
            if u32_at(bytes, at) != Some(CENTRAL) {
                return Err(bad("central directory"));
            }
            let field = |off: usize| u16_at(bytes, at + off).ok_or_else(|| bad("entry"));
            let method = field(10)?;
            let crc = u32_at(bytes, at + 16).ok_or_else(|| bad("entry"))?;
            let size = u32_at(bytes, at + 20).ok_or_else(|| bad("entry"))? as usize;
            let (name_len, extra_len, comment_len) = (
                field(28)? as usize,
                field(30)? as usize,
                field(32)? as usize,
            );
            let local = u32_at(bytes, at + 42).ok_or_else(|| bad("entry"))? as usize;
            let name = bytes
                .get(at + 46..at + 46 + name_len)
                .ok_or_else(|| bad("entry name"))?;
            let name = String::from_utf8_lossy(name).into_owned();
            if method != 0 {
                return Err(format_error(format!(
                    "{name} is compressed (method {method}); torch.save stores entries \
                     uncompressed: save the file with torch.save"
                )));
            }
            if u32_at(bytes, local) != Some(LOCAL) {
                return Err(bad(&format!("local header of {name}")));
            }
            let lname = u16_at(bytes, local + 26).ok_or_else(|| bad("entry"))? as usize;
            let lextra = u16_at(bytes, local + 28).ok_or_else(|| bad("entry"))? as usize;
            let start = local + 30 + lname + lextra;
            let data = bytes.get(start..start + size).ok_or_else(|| {
                format_error(format!("a truncated zip archive ({name} is cut short)"))
            })?;
            if crc32(data) != crc {
                return Err(format_error(format!(
                    "{name} fails its CRC check (a damaged file)"
                )));
            }
            entries.insert(name, data);
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(entries)
    }

    /// An archive of `entries`, stored, with data aligned to [`ALIGN`] bytes.
    pub(super) fn write_stored(entries: &[(String, Vec<u8>)]) -> Result<Vec<u8>, WeightsError> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        let too_big = || format_error("weights over 4 GiB, which s2s cannot write as .pt");
        for (name, data) in entries {
            let offset = u32::try_from(out.len()).map_err(|_| too_big())?;
            let size = u32::try_from(data.len()).map_err(|_| too_big())?;
            let crc = crc32(data);
            // An extra field of padding (id 0x4246, as PyTorch's writer uses) so that the
            // data starts at a multiple of ALIGN.
            let header = out.len() + 30 + name.len();
            let pad = (ALIGN - (header + 4) % ALIGN) % ALIGN;
            let common = |v: &mut Vec<u8>| {
                v.extend(0u16.to_le_bytes()); // flags
                v.extend(0u16.to_le_bytes()); // method: stored
                v.extend(0u16.to_le_bytes()); // time
                v.extend(0x21u16.to_le_bytes()); // date: 1980-01-01
                v.extend(crc.to_le_bytes());
                v.extend(size.to_le_bytes());
                v.extend(size.to_le_bytes());
                v.extend((name.len() as u16).to_le_bytes());
            };
            out.extend(LOCAL.to_le_bytes());
            out.extend(20u16.to_le_bytes()); // version needed
            common(&mut out);
            out.extend(((pad + 4) as u16).to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(0x4246u16.to_le_bytes());
            out.extend((pad as u16).to_le_bytes());
            out.extend(std::iter::repeat_n(0u8, pad));
            out.extend(data);

            central.extend(CENTRAL.to_le_bytes());
            central.extend(20u16.to_le_bytes()); // version made by
            central.extend(20u16.to_le_bytes()); // version needed
            common(&mut central);
            central.extend([0u8; 12]); // extra, comment, disk, attributes
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let directory = u32::try_from(out.len()).map_err(|_| too_big())?;
        let count = entries.len() as u16;
        let central_len = central.len() as u32;
        out.extend(central);
        out.extend(END.to_le_bytes());
        out.extend([0u8; 4]); // disk numbers
        out.extend(count.to_le_bytes());
        out.extend(count.to_le_bytes());
        out.extend(central_len.to_le_bytes());
        out.extend(directory.to_le_bytes());
        out.extend(0u16.to_le_bytes()); // comment
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn crc32_of_the_check_string() {
            assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, NamedTensor> {
        BTreeMap::from([
            (
                "encoder.rnn.weight_ih_l0".to_string(),
                NamedTensor {
                    shape: vec![3, 2],
                    values: vec![1.0, -2.5, 3.25, 0.0, f32::MIN_POSITIVE, 1e30],
                },
            ),
            (
                "output.bias".to_string(),
                NamedTensor {
                    shape: vec![300],
                    values: (0..300).map(|i| i as f32 * 0.5).collect(),
                },
            ),
        ])
    }

    #[test]
    fn a_written_state_dict_reads_back() {
        let bytes = write_state_dict(&sample()).unwrap();
        assert_eq!(read_state_dict(&bytes).unwrap(), sample());
    }

    #[test]
    fn strided_views_are_gathered_row_major() {
        // A [2, 3] view with strides [1, 2] (a transposed [3, 2]) at offset 1.
        let t = TensorRef {
            storage: "0".into(),
            dtype: "FloatStorage".into(),
            offset: 1,
            size: vec![2, 3],
            stride: vec![1, 2],
        };
        let data: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
        assert_eq!(t.gather(&data).unwrap(), vec![1., 3., 5., 2., 4., 6.]);
        assert!(t.gather(&data[..16]).unwrap_err().contains("truncated"));
    }

    /// A `.pt` archive around the pickle `data`.
    fn archive(data: &[u8]) -> Vec<u8> {
        zip::write_stored(&[("archive/data.pkl".into(), data.to_vec())]).unwrap()
    }

    #[test]
    fn files_that_are_not_a_state_dict_say_what_they_hold() {
        let message = |pickle: &[u8]| read_state_dict(&archive(pickle)).unwrap_err().to_string();
        // torch.save([]): a list.
        assert!(message(b"\x80\x02]q\x00.").contains("holds a list, not a state_dict"));
        // torch.save({"model": {}, "step": 3}): a training checkpoint.
        let err = message(
            b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01}q\x02X\x04\x00\x00\x00stepK\x03u.",
        );
        assert!(
            err.contains("\"model\" is a dictionary") && err.contains("\"step\""),
            "{err}"
        );
        // torch.save(model): a pickled module.
        let err = message(b"\x80\x02c__main__\nNet\nq\x00)\x81q\x01}q\x02b.");
        assert!(err.contains("a __main__.Net object"), "{err}");
        // An opcode that no state_dict uses.
        assert!(message(b"\x80\x02I1\n.").contains("opcode 0x49"));
    }

    #[test]
    fn damaged_files_are_errors() {
        let bytes = write_state_dict(&sample()).unwrap();
        let message = |b: &[u8]| read_state_dict(b).unwrap_err().to_string();
        assert!(message(&bytes[..bytes.len() / 2]).contains("truncated"));
        assert!(message(b"\x80\x02}q\x00.").contains("legacy"));
        assert!(message(b"{\"not\": 1}").contains("not a PyTorch file"));
        let mut flipped = bytes.clone();
        let value = 149.5f32.to_le_bytes();
        let at = flipped.windows(4).position(|w| w == value).unwrap();
        flipped[at] ^= 1;
        assert!(message(&flipped).contains("CRC"));
    }
}
