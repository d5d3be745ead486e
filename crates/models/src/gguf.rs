//! GGUF v3 files: the header, metadata key/values, tensor infos and the tensor data section.
//!
//! The layout (all little-endian):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count times:     key string | value type u32 | value
//! tensor_count times: name string | n_dims u32 | ne u64 * n_dims | ggml type u32 | offset u64
//! padding to `general.alignment` (default 32) | tensor data
//! ```
//!
//! A string is a u64 byte length then UTF-8 bytes; an array is an element type u32, a u64 count
//! and the elements. `ne` lists dimensions innermost first; [`TensorInfo::shape`] is the
//! row-major shape (`ne` reversed). Tensor offsets are relative to the data section.
//!
//! The whole file is read into memory and every header value is distrusted: counts and lengths
//! are checked against the bytes that remain before anything is allocated, array nesting is
//! bounded, dimension products are checked for overflow, and each tensor's byte size (from its
//! type's block size) must lie inside the file without overlapping another tensor. A malformed
//! file gives a [`GgufError`] naming the file and the key or tensor, never a panic.

use kiln_ir::{DType, StorageLayout};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use thiserror::Error;

/// The only GGUF version read.
pub const GGUF_VERSION: u32 = 3;
/// The data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a tensor may have (ggml's limit).
pub const MAX_DIMS: usize = 4;
/// The deepest nesting of arrays inside arrays accepted in metadata.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// A GGUF error: the file and what is wrong with it.
#[derive(Debug, Error)]
#[error("{path}: {kind}")]
pub struct GgufError {
    /// The file (or the name given to [`Gguf::from_bytes`]).
    pub path: String,
    pub kind: GgufErrorKind,
}

/// What is wrong with a GGUF file, or with a request made of it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GgufErrorKind {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("not a GGUF file (magic {found:02x?}, want \"GGUF\")")]
    BadMagic { found: Vec<u8> },
    #[error("GGUF version {version} is not supported (only version 3)")]
    UnsupportedVersion { version: u32 },
    #[error("big-endian GGUF is not supported")]
    BigEndian,
    #[error("unexpected end of file reading {context} at byte {offset} (needs {needed} bytes, {remaining} remain)")]
    Truncated {
        context: String,
        offset: u64,
        needed: u64,
        remaining: u64,
    },
    #[error("{context}: count {count} needs at least {min_bytes} bytes at byte {offset}, but only {remaining} remain")]
    CountTooLarge {
        context: String,
        offset: u64,
        count: u64,
        min_bytes: u128,
        remaining: u64,
    },
    #[error("{context} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { context: String, offset: u64 },
    #[error("{context} at byte {offset} is {value}, not a bool (0 or 1)")]
    InvalidBool {
        context: String,
        offset: u64,
        value: u8,
    },
    #[error("metadata `{key}` has unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata `{key}` nests arrays deeper than {MAX_ARRAY_DEPTH} levels")]
    NestingTooDeep { key: String },
    #[error("metadata key `{key}` appears twice")]
    DuplicateKey { key: String },
    #[error("general.alignment {0} is not a power of two")]
    BadAlignment(i128),
    #[error("tensor `{tensor}` has {n_dims} dimensions, more than {MAX_DIMS}")]
    TooManyDims { tensor: String, n_dims: u32 },
    #[error("tensor `{tensor}` dimensions {ne:?} overflow")]
    DimsOverflow { tensor: String, ne: Vec<u64> },
    #[error("tensor `{tensor}` has ggml type {type_id} ({type_name}), which kiln does not read (only f32, f16, q4_0, q4_1, q8_0)")]
    UnsupportedTensorType {
        tensor: String,
        type_id: u32,
        type_name: &'static str,
    },
    #[error("tensor `{tensor}` rows of {row} elements are not whole {dtype} blocks")]
    NotWholeBlocks {
        tensor: String,
        dtype: DType,
        row: u64,
    },
    #[error("tensor `{tensor}` offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor `{tensor}` data (bytes {start}..{end} of the file) lies outside the file of {file_len} bytes")]
    OutOfBounds {
        tensor: String,
        start: u128,
        end: u128,
        file_len: u64,
    },
    #[error("tensors `{first}` and `{second}` overlap in the data section")]
    Overlap { first: String, second: String },
    #[error("tensor `{tensor}` appears twice")]
    DuplicateTensor { tensor: String },
    #[error("no metadata `{key}`")]
    MissingKey { key: String },
    #[error("metadata `{key}` is {found}, want {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("no tensor `{name}`")]
    MissingTensor { name: String },
}

/// The value types of GGUF metadata, with their ids in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes in the file.
    fn min_bytes(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            // A u64 length.
            String => 8,
            // An element type u32 and a u64 count.
            Array => 12,
        }
    }

    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array, stored compactly by element type (so memory stays proportional to the
/// file's size).
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value, widened; `None` for floats, bools, strings and arrays.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// What the value is, for error messages: its type, and the value itself when short.
    fn describe(&self) -> String {
        match self {
            Value::String(s) if s.len() <= 40 => format!("string {s:?}"),
            Value::String(s) => format!("a string of {} bytes", s.len()),
            Value::Array(a) => format!("an array of {} {}", a.len(), a.element_type().name()),
            Value::Bool(b) => format!("bool {b}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::F64(v) => format!("f64 {v}"),
            v => format!(
                "{} {}",
                v.value_type().name(),
                v.as_i128().unwrap_or_default()
            ),
        }
    }
}

/// A tensor's entry in the header, checked against the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// The ggml type id in the file.
    pub ggml_type: u32,
    /// Dimensions as stored, innermost first.
    pub ne: Vec<u64>,
    /// The row-major shape: `ne` reversed.
    pub shape: Vec<usize>,
    /// The offset of the data from the start of the data section.
    pub offset: u64,
    /// The data's size in bytes.
    pub size: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A tensor and its bytes, borrowed from the [`Gguf`].
#[derive(Clone, Copy)]
pub struct TensorRef<'a> {
    pub info: &'a TensorInfo,
    data: &'a [u8],
}

impl fmt::Debug for TensorRef<'_> {
    // The info only: the data can be tens of megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorRef")
            .field("info", self.info)
            .finish_non_exhaustive()
    }
}

impl<'a> TensorRef<'a> {
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    pub fn dtype(&self) -> DType {
        self.info.dtype
    }

    /// The row-major shape.
    pub fn shape(&self) -> &'a [usize] {
        &self.info.shape
    }

    /// The raw data, exactly [`TensorInfo::size`] bytes in the type's storage layout.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }
}

/// A parsed GGUF file, held in memory.
pub struct Gguf {
    path: String,
    version: u32,
    alignment: u64,
    data_start: usize,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    bytes: Vec<u8>,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Gguf {
    /// Reads and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| GgufError {
            path: name.clone(),
            kind: GgufErrorKind::Read(e.to_string()),
        })?;
        Gguf::from_bytes(name, bytes)
    }

    /// Parses a GGUF file held in `bytes`; `name` names it in errors.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Gguf, GgufError> {
        let path = name.into();
        match parse(&bytes) {
            Ok(p) => Ok(Gguf {
                path,
                version: p.version,
                alignment: p.alignment,
                data_start: p.data_start,
                index: p
                    .metadata
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.clone(), i))
                    .collect(),
                metadata: p.metadata,
                tensor_index: p
                    .tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.clone(), i))
                    .collect(),
                tensors: p.tensors,
                bytes,
            }),
            Err(kind) => Err(GgufError { path, kind }),
        }
    }

    /// The file's path (or the name given to [`Gguf::from_bytes`]).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data section's alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts in the file.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// The whole file.
    pub fn file_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every metadata key/value, in file order.
    pub fn metadata_entries(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn err(&self, kind: GgufErrorKind) -> GgufError {
        GgufError {
            path: self.path.clone(),
            kind,
        }
    }

    /// The value of `key` converted by `T`, or a typed error naming the key.
    pub fn get<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T, GgufError> {
        self.get_opt(key)?.ok_or_else(|| {
            self.err(GgufErrorKind::MissingKey {
                key: key.to_string(),
            })
        })
    }

    /// Like [`Gguf::get`], but `None` when the key is absent (a value of the wrong type is
    /// still an error).
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>, GgufError> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        T::from_value(v).map(Some).ok_or_else(|| {
            self.err(GgufErrorKind::WrongType {
                key: key.to_string(),
                expected: T::EXPECTED,
                found: v.describe(),
            })
        })
    }

    /// An integer value that fits a u32 (any integer type is accepted).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get(key)
    }

    /// An integer value that fits a u64 (any integer type is accepted).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)
    }

    /// An integer value that fits an i32 (any integer type is accepted).
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.get(key)
    }

    /// An integer value that fits a usize (any integer type is accepted).
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        self.get(key)
    }

    /// An f32 value (an f64 is narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get(key)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.get(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)
    }

    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        self.get(key)
    }

    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        self.get(key)
    }

    pub fn get_i32_array(&self, key: &str) -> Result<&[i32], GgufError> {
        self.get(key)
    }

    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        self.get(key)
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name` with its bytes.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>, GgufError> {
        let &i = self.tensor_index.get(name).ok_or_else(|| {
            self.err(GgufErrorKind::MissingTensor {
                name: name.to_string(),
            })
        })?;
        let info = &self.tensors[i];
        // The range was checked against the file at parse time.
        let start = self.data_start + info.offset as usize;
        Ok(TensorRef {
            info,
            data: &self.bytes[start..start + info.size],
        })
    }
}

/// A conversion of a metadata value for [`Gguf::get`]; `None` means the wrong type (or an
/// integer out of range).
pub trait FromValue<'a>: Sized {
    /// What the conversion wants, for error messages.
    const EXPECTED: &'static str;
    fn from_value(value: &'a Value) -> Option<Self>;
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue<'_> for $t {
            const EXPECTED: &'static str = concat!("an integer that fits ", stringify!($t));
            fn from_value(value: &Value) -> Option<$t> {
                value.as_i128().and_then(|v| <$t>::try_from(v).ok())
            }
        }
    )*};
}
int_from_value!(u8, i8, u16, i16, u32, i32, u64, i64, usize);

impl FromValue<'_> for f32 {
    const EXPECTED: &'static str = "f32";
    fn from_value(value: &Value) -> Option<f32> {
        match *value {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }
}

impl FromValue<'_> for f64 {
    const EXPECTED: &'static str = "f64";
    fn from_value(value: &Value) -> Option<f64> {
        match *value {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl FromValue<'_> for bool {
    const EXPECTED: &'static str = "bool";
    fn from_value(value: &Value) -> Option<bool> {
        match *value {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "string";
    fn from_value(value: &'a Value) -> Option<&'a str> {
        match value {
            Value::String(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromValue<'a> for &'a Value {
    const EXPECTED: &'static str = "any value";
    fn from_value(value: &'a Value) -> Option<&'a Value> {
        Some(value)
    }
}

impl<'a> FromValue<'a> for &'a Array {
    const EXPECTED: &'static str = "array";
    fn from_value(value: &'a Value) -> Option<&'a Array> {
        match value {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

macro_rules! slice_from_value {
    ($($variant:ident: $t:ty),*) => {$(
        impl<'a> FromValue<'a> for &'a [$t] {
            const EXPECTED: &'static str = concat!("an array of ", stringify!($t));
            fn from_value(value: &'a Value) -> Option<&'a [$t]> {
                match value {
                    Value::Array(Array::$variant(v)) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}
slice_from_value!(
    U8: u8, I8: i8, U16: u16, I16: i16, U32: u32, I32: i32, F32: f32, Bool: bool,
    String: String, U64: u64, I64: i64, F64: f64
);

/// The name of a ggml tensor type id, for error messages.
pub fn ggml_type_name(id: u32) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        _ => "unknown",
    }
}

/// The kiln dtype of a ggml tensor type id, for the types kiln reads.
pub fn dtype_of_ggml_type(id: u32) -> Option<DType> {
    Some(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        8 => DType::Q8_0,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Parsing.

struct Parsed {
    version: u32,
    alignment: u64,
    data_start: usize,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

/// What is being read, for error messages; turned into text only when an error is made.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    Header(&'static str),
    Key(u64),
    ValueType(&'a str),
    Value(&'a str),
    TensorName(u64),
    Tensor(&'a str, &'static str),
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Header(what) => write!(f, "the header's {what}"),
            Ctx::Key(i) => write!(f, "the key of metadata entry {i}"),
            Ctx::ValueType(key) => write!(f, "the value type of metadata `{key}`"),
            Ctx::Value(key) => write!(f, "the value of metadata `{key}`"),
            Ctx::TensorName(i) => write!(f, "the name of tensor info {i}"),
            Ctx::Tensor(name, what) => write!(f, "the {what} of tensor `{name}`"),
        }
    }
}

struct Cursor<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> Cursor<'b> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, ctx: Ctx<'_>) -> Result<&'b [u8], GgufErrorKind> {
        let remaining = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= remaining => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(GgufErrorKind::Truncated {
                context: ctx.to_string(),
                offset: self.pos as u64,
                needed: n,
                remaining: remaining as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, ctx: Ctx<'_>) -> Result<[u8; N], GgufErrorKind> {
        let s = self.take(N as u64, ctx)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, ctx: Ctx<'_>) -> Result<u8, GgufErrorKind> {
        Ok(self.array::<1>(ctx)?[0])
    }

    fn u32(&mut self, ctx: Ctx<'_>) -> Result<u32, GgufErrorKind> {
        Ok(u32::from_le_bytes(self.array(ctx)?))
    }

    fn u64(&mut self, ctx: Ctx<'_>) -> Result<u64, GgufErrorKind> {
        Ok(u64::from_le_bytes(self.array(ctx)?))
    }

    fn bool(&mut self, ctx: Ctx<'_>) -> Result<bool, GgufErrorKind> {
        let offset = self.pos as u64;
        match self.u8(ctx)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufErrorKind::InvalidBool {
                context: ctx.to_string(),
                offset,
                value,
            }),
        }
    }

    fn string(&mut self, ctx: Ctx<'_>) -> Result<String, GgufErrorKind> {
        let len = self.u64(ctx)?;
        let offset = self.pos as u64;
        let bytes = self.take(len, ctx)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| GgufErrorKind::InvalidUtf8 {
                context: ctx.to_string(),
                offset,
            })
    }

    /// Checks that `count` items of at least `min_bytes` each can fit in what remains, so the
    /// count may size an allocation.
    fn check_count(
        &self,
        count: u64,
        min_bytes: u64,
        ctx: Ctx<'_>,
    ) -> Result<usize, GgufErrorKind> {
        let need = u128::from(count) * u128::from(min_bytes);
        if need > self.remaining() as u128 {
            return Err(GgufErrorKind::CountTooLarge {
                context: ctx.to_string(),
                offset: self.pos as u64,
                count,
                min_bytes: need,
                remaining: self.remaining() as u64,
            });
        }
        // `need` fits in the buffer's length, so `count` fits a usize.
        Ok(count as usize)
    }

    /// `count` fixed-size little-endian values.
    fn fixed<const N: usize, T>(
        &mut self,
        count: u64,
        ctx: Ctx<'_>,
        conv: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, GgufErrorKind> {
        let n = self.check_count(count, N as u64, ctx)?;
        let bytes = self.take((n * N) as u64, ctx)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                conv(a)
            })
            .collect())
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufErrorKind> {
        let ctx = Ctx::Value(key);
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8(ctx)?),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(ctx)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(ctx)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(ctx)?)),
            ValueType::U32 => Value::U32(self.u32(ctx)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(ctx)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(ctx)?)),
            ValueType::Bool => Value::Bool(self.bool(ctx)?),
            ValueType::String => Value::String(self.string(ctx)?),
            ValueType::Array => Value::Array(self.array_value(key, 1)?),
            ValueType::U64 => Value::U64(self.u64(ctx)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(ctx)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(ctx)?)),
        })
    }

    /// An array's element type, count and elements; `depth` is 1 for a top-level array.
    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufErrorKind> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufErrorKind::NestingTooDeep {
                key: key.to_string(),
            });
        }
        let ctx = Ctx::Value(key);
        let type_id = self.u32(ctx)?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufErrorKind::UnknownValueType {
            key: key.to_string(),
            type_id,
        })?;
        let count = self.u64(ctx)?;
        Ok(match ty {
            ValueType::U8 => Array::U8(self.fixed(count, ctx, u8::from_le_bytes)?),
            ValueType::I8 => Array::I8(self.fixed(count, ctx, i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(self.fixed(count, ctx, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.fixed(count, ctx, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.fixed(count, ctx, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.fixed(count, ctx, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.fixed(count, ctx, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(self.fixed(count, ctx, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.fixed(count, ctx, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.fixed(count, ctx, f64::from_le_bytes)?),
            ValueType::Bool => {
                let n = self.check_count(count, 1, ctx)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(ctx)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let n = self.check_count(count, ty.min_bytes(), ctx)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(ctx)?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let n = self.check_count(count, ty.min_bytes(), ctx)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

/// The smallest metadata entry: an empty key, a value type and a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// The smallest tensor info: an empty name, n_dims, a type and an offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

fn parse(buf: &[u8]) -> Result<Parsed, GgufErrorKind> {
    let mut c = Cursor { buf, pos: 0 };
    if buf.len() < 4 || &buf[..4] != b"GGUF" {
        return Err(GgufErrorKind::BadMagic {
            found: buf[..buf.len().min(4)].to_vec(),
        });
    }
    c.pos = 4;
    let version = c.u32(Ctx::Header("version"))?;
    if version != GGUF_VERSION {
        if version.swap_bytes() == GGUF_VERSION || version.swap_bytes() == 2 {
            return Err(GgufErrorKind::BigEndian);
        }
        return Err(GgufErrorKind::UnsupportedVersion { version });
    }
    let tensor_count = c.u64(Ctx::Header("tensor count"))?;
    let kv_count = c.u64(Ctx::Header("metadata count"))?;

    let n_kv = c.check_count(kv_count, MIN_KV_BYTES, Ctx::Header("metadata count"))?;
    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv);
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(n_kv);
    for i in 0..kv_count {
        let key = c.string(Ctx::Key(i))?;
        let type_id = c.u32(Ctx::ValueType(&key))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufErrorKind::UnknownValueType {
            key: key.clone(),
            type_id,
        })?;
        let value = c.value(ty, &key)?;
        if seen.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufErrorKind::DuplicateKey { key });
        }
        metadata.push((key, value));
    }

    let alignment = match seen.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_i128() {
            Some(a) if a > 0 && (a as u128).is_power_of_two() => a as u64,
            Some(a) => return Err(GgufErrorKind::BadAlignment(a)),
            None => {
                return Err(GgufErrorKind::WrongType {
                    key: "general.alignment".into(),
                    expected: "u32",
                    found: v.describe(),
                })
            }
        },
    };

    let n_tensors = c.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        Ctx::Header("tensor count"),
    )?;
    let mut raw = Vec::with_capacity(n_tensors);
    for i in 0..tensor_count {
        let name = c.string(Ctx::TensorName(i))?;
        let n_dims = c.u32(Ctx::Tensor(&name, "dimension count"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufErrorKind::TooManyDims {
                tensor: name,
                n_dims,
            });
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64(Ctx::Tensor(&name, "dimensions"))?);
        }
        let type_id = c.u32(Ctx::Tensor(&name, "type"))?;
        let offset = c.u64(Ctx::Tensor(&name, "offset"))?;
        raw.push((name, ne, type_id, offset));
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    let mut tensors = Vec::with_capacity(raw.len());
    let mut names: HashMap<&str, ()> = HashMap::with_capacity(raw.len());
    for (name, ne, type_id, offset) in &raw {
        if names.insert(name, ()).is_some() {
            return Err(GgufErrorKind::DuplicateTensor {
                tensor: name.clone(),
            });
        }
        tensors.push(tensor_info(
            name, ne, *type_id, *offset, alignment, data_start, file_len,
        )?);
    }

    // No two tensors may share bytes.
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].size > 0)
        .collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.size as u64 > b.offset {
            return Err(GgufErrorKind::Overlap {
                first: a.name.clone(),
                second: b.name.clone(),
            });
        }
    }

    Ok(Parsed {
        version,
        alignment,
        // Every tensor lies inside the file, so when there is one, `data_start` fits a usize.
        data_start: usize::try_from(data_start.min(file_len)).unwrap_or(buf.len()),
        metadata,
        tensors,
    })
}

fn tensor_info(
    name: &str,
    ne: &[u64],
    type_id: u32,
    offset: u64,
    alignment: u64,
    data_start: u64,
    file_len: u64,
) -> Result<TensorInfo, GgufErrorKind> {
    let dtype =
        dtype_of_ggml_type(type_id).ok_or_else(|| GgufErrorKind::UnsupportedTensorType {
            tensor: name.to_string(),
            type_id,
            type_name: ggml_type_name(type_id),
        })?;
    let overflow = || GgufErrorKind::DimsOverflow {
        tensor: name.to_string(),
        ne: ne.to_vec(),
    };
    let mut numel: usize = 1;
    let mut shape = Vec::with_capacity(ne.len());
    for &d in ne.iter().rev() {
        // ggml stores dimensions as i64.
        let d = usize::try_from(d)
            .ok()
            .filter(|_| d <= i64::MAX as u64)
            .ok_or_else(overflow)?;
        numel = numel.checked_mul(d).ok_or_else(overflow)?;
        shape.push(d);
    }
    // The row length: the innermost dimension (1 for a scalar).
    let row = shape.last().copied().unwrap_or(1);
    let size = match dtype.layout() {
        StorageLayout::Scalar { bytes } => numel.checked_mul(bytes),
        StorageLayout::Block {
            block_elems,
            block_bytes,
        } => {
            if !row.is_multiple_of(block_elems) {
                return Err(GgufErrorKind::NotWholeBlocks {
                    tensor: name.to_string(),
                    dtype,
                    row: row as u64,
                });
            }
            (numel / block_elems).checked_mul(block_bytes)
        }
    }
    .ok_or_else(overflow)?;
    if !offset.is_multiple_of(alignment) {
        return Err(GgufErrorKind::MisalignedOffset {
            tensor: name.to_string(),
            offset,
            alignment,
        });
    }
    let start = u128::from(data_start) + u128::from(offset);
    let end = start + size as u128;
    if end > u128::from(file_len) {
        return Err(GgufErrorKind::OutOfBounds {
            tensor: name.to_string(),
            start,
            end,
            file_len,
        });
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        ggml_type: type_id,
        ne: ne.to_vec(),
        shape,
        offset,
        size,
    })
}
