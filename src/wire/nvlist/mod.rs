//! FreeBSD's packed nvlist (libnv's `nvlist_pack`/`nvlist_send` format),
//! the first record bhyve sends its slirp helper.
//!
//! A packed nvlist is a 19-byte header (magic `0x6c`, version 0, flags,
//! descriptor count, size of what follows) and then pairs, each a 19-byte
//! header (type, name size, data size, item count), the NUL-terminated name
//! and the data. Multi-byte integers are in the sender's byte order, given
//! by the header's `NV_FLAG_BIG_ENDIAN` bit. A nested nvlist follows its
//! pair's header directly (its own header, its pairs, then an `NVLIST_UP`
//! marker pair); each element of an nvlist array ends with an
//! `NVLIST_ARRAY_NEXT` marker.
//!
//! By idea: `read.rs` decodes ([`NvList::unpack`]), `write.rs` encodes
//! ([`NvList::pack`]), `helper.rs` is bhyve's typed view ([`HelperConfig`]).
//!
//! [`NvList::unpack`] checks every length against the bytes that remain
//! before it allocates, caps nesting at [`MAX_DEPTH`], refuses descriptors
//! (they travel as `SCM_RIGHTS` beside the record, and the helper takes
//! none) and never panics. [`NvList::pack`] writes the same format (for
//! tests that play bhyve). [`HelperConfig`] is the typed view of bhyve's
//! configuration: `hostfwd`, `open`, `vmname`.

use std::fmt;

mod error;
mod helper;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use error::{NvError, PackError};
pub use helper::{ack_record, bhyve_bool, parse_ack, ConfigError, HelperConfig, ACK_KEY};

/// Bytes in an nvlist header.
pub const HEADER_SIZE: usize = 19;
/// Bytes in an nvpair header.
pub const PAIR_HEADER_SIZE: usize = 19;
/// `NVLIST_HEADER_MAGIC`.
pub const MAGIC: u8 = 0x6c;
/// `NVLIST_HEADER_VERSION`.
pub const VERSION: u8 = 0;
/// `NV_FLAG_IGNORE_CASE`: names are looked up case-insensitively.
pub const FLAG_IGNORE_CASE: u8 = 0x01;
/// `NV_FLAG_NO_UNIQUE`: a name may occur more than once.
pub const FLAG_NO_UNIQUE: u8 = 0x02;
/// `NV_FLAG_BIG_ENDIAN`: the sender's integers are big-endian.
pub const FLAG_BIG_ENDIAN: u8 = 0x80;
/// The flags a list may carry (`NV_FLAG_PUBLIC_MASK`).
pub const PUBLIC_FLAGS: u8 = FLAG_IGNORE_CASE | FLAG_NO_UNIQUE;
/// `NV_NAME_MAX`: the largest name size, NUL included.
pub const NAME_MAX: usize = 2048;
/// The deepest nesting of nvlists (and nvlist arrays) accepted.
pub const MAX_DEPTH: usize = 32;

/// The smallest encoding of one nvlist array element: a header and the
/// `NVLIST_ARRAY_NEXT` marker (a pair header and an empty name).
const MIN_ARRAY_ELEMENT: usize = HEADER_SIZE + PAIR_HEADER_SIZE + 1;

/// libnv's type numbers (`NV_TYPE_*`).
mod ty {
    pub const NULL: u8 = 1;
    pub const BOOL: u8 = 2;
    pub const NUMBER: u8 = 3;
    pub const STRING: u8 = 4;
    pub const NVLIST: u8 = 5;
    pub const DESCRIPTOR: u8 = 6;
    pub const BINARY: u8 = 7;
    pub const BOOL_ARRAY: u8 = 8;
    pub const NUMBER_ARRAY: u8 = 9;
    pub const STRING_ARRAY: u8 = 10;
    pub const NVLIST_ARRAY: u8 = 11;
    pub const DESCRIPTOR_ARRAY: u8 = 12;
    pub const NVLIST_ARRAY_NEXT: u8 = 254;
    pub const NVLIST_UP: u8 = 255;
}

/// The name libnv gives a type number, for error messages.
fn type_name(t: u8) -> &'static str {
    match t {
        ty::NULL => "NULL",
        ty::BOOL => "BOOL",
        ty::NUMBER => "NUMBER",
        ty::STRING => "STRING",
        ty::NVLIST => "NVLIST",
        ty::DESCRIPTOR => "DESCRIPTOR",
        ty::BINARY => "BINARY",
        ty::BOOL_ARRAY => "BOOL ARRAY",
        ty::NUMBER_ARRAY => "NUMBER ARRAY",
        ty::STRING_ARRAY => "STRING ARRAY",
        ty::NVLIST_ARRAY => "NVLIST ARRAY",
        ty::DESCRIPTOR_ARRAY => "DESCRIPTOR ARRAY",
        ty::NVLIST_ARRAY_NEXT => "NVLIST_ARRAY_NEXT",
        ty::NVLIST_UP => "NVLIST_UP",
        _ => "unknown",
    }
}

/// Byte order of a packed nvlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endian {
    /// Little-endian (amd64, arm64: every bhyve host in practice).
    #[default]
    Little,
    /// Big-endian (`NV_FLAG_BIG_ENDIAN`, e.g. powerpc64).
    Big,
}

/// One value of an nvlist pair. Descriptors are not represented: they are
/// refused on decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `NV_TYPE_NULL`.
    Null,
    /// `NV_TYPE_BOOL`.
    Bool(bool),
    /// `NV_TYPE_NUMBER`.
    Number(u64),
    /// `NV_TYPE_STRING` (UTF-8, no NUL inside).
    String(String),
    /// `NV_TYPE_NVLIST`.
    NvList(NvList),
    /// `NV_TYPE_BINARY` (never empty).
    Binary(Vec<u8>),
    /// `NV_TYPE_BOOL_ARRAY` (never empty).
    BoolArray(Vec<bool>),
    /// `NV_TYPE_NUMBER_ARRAY` (never empty).
    NumberArray(Vec<u64>),
    /// `NV_TYPE_STRING_ARRAY` (never empty).
    StringArray(Vec<String>),
    /// `NV_TYPE_NVLIST_ARRAY` (never empty).
    NvListArray(Vec<NvList>),
}

impl Value {
    /// libnv's name for the value's type.
    pub fn type_name(&self) -> &'static str {
        type_name(self.type_number())
    }

    fn type_number(&self) -> u8 {
        match self {
            Value::Null => ty::NULL,
            Value::Bool(_) => ty::BOOL,
            Value::Number(_) => ty::NUMBER,
            Value::String(_) => ty::STRING,
            Value::NvList(_) => ty::NVLIST,
            Value::Binary(_) => ty::BINARY,
            Value::BoolArray(_) => ty::BOOL_ARRAY,
            Value::NumberArray(_) => ty::NUMBER_ARRAY,
            Value::StringArray(_) => ty::STRING_ARRAY,
            Value::NvListArray(_) => ty::NVLIST_ARRAY,
        }
    }
}

/// A short rendering for error messages: strings quoted and cut at 64
/// characters, other types by name (and value, when it is one number).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) if s.chars().count() > 64 => {
                let cut: String = s.chars().take(64).collect();
                write!(f, "{cut:?}...")
            }
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "BOOL {b}"),
            Value::Number(n) => write!(f, "NUMBER {n}"),
            Value::Null => f.write_str("NULL"),
            Value::Binary(b) => write!(f, "BINARY of {} bytes", b.len()),
            other => f.write_str(other.type_name()),
        }
    }
}

/// An nvlist: public flags and its pairs in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvList {
    flags: u8,
    pairs: Vec<(String, Value)>,
}

impl NvList {
    /// An empty list with no flags (what `nvlist_create(0)` makes, and
    /// what bhyve sends).
    pub fn new() -> NvList {
        NvList::default()
    }

    /// An empty list with `flags` ([`FLAG_IGNORE_CASE`],
    /// [`FLAG_NO_UNIQUE`]; other bits are dropped).
    pub fn with_flags(flags: u8) -> NvList {
        NvList {
            flags: flags & PUBLIC_FLAGS,
            pairs: Vec::new(),
        }
    }

    /// The list's public flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Appends a pair (no uniqueness check here: [`pack`](NvList::pack)
    /// refuses duplicates unless [`FLAG_NO_UNIQUE`] is set).
    pub fn push(&mut self, name: impl Into<String>, value: Value) -> &mut NvList {
        self.pairs.push((name.into(), value));
        self
    }

    /// Appends a pair, builder style.
    pub fn with(mut self, name: impl Into<String>, value: Value) -> NvList {
        self.push(name, value);
        self
    }

    /// The first value named `name` (case-insensitively if the list has
    /// [`FLAG_IGNORE_CASE`]).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.pairs
            .iter()
            .find(|(n, _)| self.same_name(n, name))
            .map(|(_, v)| v)
    }

    /// The pairs in wire order.
    pub fn pairs(&self) -> &[(String, Value)] {
        &self.pairs
    }

    /// The pairs in wire order, by value.
    pub fn into_pairs(self) -> Vec<(String, Value)> {
        self.pairs
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the list has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn same_name(&self, a: &str, b: &str) -> bool {
        if self.flags & FLAG_IGNORE_CASE != 0 {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    fn name_key(flags: u8, name: &str) -> String {
        if flags & FLAG_IGNORE_CASE != 0 {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        }
    }
}
