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
//! [`NvList::unpack`] checks every length against the bytes that remain
//! before it allocates, caps nesting at [`MAX_DEPTH`], refuses descriptors
//! (they travel as `SCM_RIGHTS` beside the record, and the helper takes
//! none) and never panics. [`NvList::pack`] writes the same format (for
//! tests that play bhyve). [`HelperConfig`] is the typed view of bhyve's
//! configuration: `hostfwd`, `open`, `vmname`.

use std::collections::HashSet;
use std::fmt;

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

    /// Decodes a packed nvlist that fills `bytes` exactly (one
    /// SOCK_SEQPACKET record from bhyve).
    pub fn unpack(bytes: &[u8]) -> Result<NvList, NvError> {
        let mut r = Reader {
            buf: bytes,
            pos: 0,
            big: false,
        };
        let flags = r.header(true)?;
        let pairs = r.body(flags, 0, End::Input)?;
        Ok(NvList { flags, pairs })
    }

    /// Encodes the list as libnv's `nvlist_pack` would on a host of byte
    /// order `endian`.
    pub fn pack(&self, endian: Endian) -> Result<Vec<u8>, PackError> {
        let mut w = Writer {
            out: Vec::new(),
            big: endian == Endian::Big,
            headers: Vec::new(),
        };
        w.list(self, 0)?;
        let total = w.out.len();
        // Every header's size is what follows it in the whole buffer.
        for at in std::mem::take(&mut w.headers) {
            let size = (total - at - HEADER_SIZE) as u64;
            w.put_u64_at(at + 11, size);
        }
        Ok(w.out)
    }
}

/// A packed nvlist that cannot be decoded. Offsets are from the start of
/// the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvError {
    /// The input ends inside something.
    #[error("nvlist truncated at byte {offset}: {what} needs {need} bytes, {have} left")]
    Truncated {
        /// Where the cut-off item starts.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// Bytes it needs.
        need: u64,
        /// Bytes left.
        have: usize,
    },
    /// The header's magic is not `0x6c`.
    #[error("nvlist header at byte {offset}: bad magic 0x{magic:02x} (expected 0x6c)")]
    BadMagic {
        /// Where the header starts.
        offset: usize,
        /// The byte found.
        magic: u8,
    },
    /// The header's version is not 0.
    #[error("nvlist header at byte {offset}: unsupported version {version}")]
    BadVersion {
        /// Where the header starts.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// The header has flags libnv does not define.
    #[error("nvlist header at byte {offset}: unknown flags 0x{flags:02x}")]
    BadFlags {
        /// Where the header starts.
        offset: usize,
        /// The flags byte.
        flags: u8,
    },
    /// A nested header's byte order differs from the outer one.
    #[error("nvlist header at byte {offset}: byte order differs from the enclosing list's")]
    MixedEndian {
        /// Where the header starts.
        offset: usize,
    },
    /// The header announces descriptors; the helper takes none.
    #[error("nvlist header at byte {offset} announces {count} descriptors; descriptors are not accepted")]
    Descriptors {
        /// Where the header starts.
        offset: usize,
        /// The announced count.
        count: u64,
    },
    /// The header's size is not the number of bytes after it.
    #[error("nvlist header at byte {offset} announces {size} bytes after it, but {actual} follow")]
    SizeMismatch {
        /// Where the header starts.
        offset: usize,
        /// The announced size.
        size: u64,
        /// Bytes that follow.
        actual: usize,
    },
    /// A pair has a type libnv does not define.
    #[error("nvpair at byte {offset}: unknown type {ty}")]
    UnknownType {
        /// Where the pair starts.
        offset: usize,
        /// The type byte.
        ty: u8,
    },
    /// A pair's name size is 0 or above `NV_NAME_MAX`.
    #[error("nvpair at byte {offset}: name size {namesize} is not within 1..=2048")]
    BadNameSize {
        /// Where the pair starts.
        offset: usize,
        /// The name size.
        namesize: u16,
    },
    /// A pair's name does not end with its only NUL.
    #[error("nvpair at byte {offset}: the {namesize}-byte name is not NUL-terminated exactly at its end")]
    NameNotTerminated {
        /// Where the pair starts.
        offset: usize,
        /// The name size.
        namesize: u16,
    },
    /// A name or string is not UTF-8.
    #[error("nvpair at byte {offset}: {what} is not UTF-8")]
    InvalidUtf8 {
        /// Where the pair starts.
        offset: usize,
        /// `"name"` or `"value of <name>"`.
        what: String,
    },
    /// A pair's data size is beyond the input.
    #[error("nvpair {name:?} at byte {offset}: data size {datasize} is beyond the {remaining} bytes left")]
    DataBeyondInput {
        /// Where the pair starts.
        offset: usize,
        /// The pair's name.
        name: String,
        /// The announced data size.
        datasize: u64,
        /// Bytes left after the name.
        remaining: usize,
    },
    /// A pair's data size does not fit its type.
    #[error("nvpair {name:?} at byte {offset}: data size {datasize} is wrong for type {ty} (expected {expected})")]
    BadDataSize {
        /// Where the pair starts.
        offset: usize,
        /// The pair's name.
        name: String,
        /// libnv's name of the type.
        ty: &'static str,
        /// The announced data size.
        datasize: u64,
        /// What the type needs.
        expected: &'static str,
    },
    /// A pair's item count does not fit its type and data size.
    #[error("nvpair {name:?} at byte {offset}: {nitems} items do not fit type {ty} with data size {datasize}")]
    BadItemCount {
        /// Where the pair starts.
        offset: usize,
        /// The pair's name.
        name: String,
        /// libnv's name of the type.
        ty: &'static str,
        /// The announced item count.
        nitems: u64,
        /// The announced data size.
        datasize: u64,
    },
    /// A boolean byte is neither 0 nor 1.
    #[error("nvpair {name:?} at byte {offset}: boolean byte {value} is neither 0 nor 1")]
    BadBool {
        /// Where the pair starts.
        offset: usize,
        /// The pair's name.
        name: String,
        /// The byte found.
        value: u8,
    },
    /// A string value is not NUL-terminated exactly at its end.
    #[error(
        "nvpair {name:?} at byte {offset}: string data is not NUL-terminated exactly at its end"
    )]
    StringNotTerminated {
        /// Where the pair starts.
        offset: usize,
        /// The pair's name.
        name: String,
    },
    /// A descriptor pair; the helper takes none.
    #[error("nvpair {name:?} at byte {offset}: descriptors are not accepted")]
    Descriptor {
        /// Where the pair starts.
        offset: usize,
        /// The pair's name.
        name: String,
    },
    /// An `NVLIST_UP` or `NVLIST_ARRAY_NEXT` marker where none may be, or
    /// with data.
    #[error("nvpair at byte {offset}: unexpected {marker} marker")]
    UnexpectedMarker {
        /// Where the marker starts.
        offset: usize,
        /// The marker's name.
        marker: &'static str,
    },
    /// The input ends inside a nested nvlist or array element.
    #[error("nvlist truncated at byte {offset}: a nested list opened at byte {opened} has no {marker} marker")]
    Unterminated {
        /// The end of the input.
        offset: usize,
        /// Where the nested list's header starts.
        opened: usize,
        /// The marker that should close it.
        marker: &'static str,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("nvpair {name:?} at byte {offset}: nesting deeper than {max} levels")]
    TooDeep {
        /// Where the pair starts.
        offset: usize,
        /// The pair's name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// A name occurs twice in a list without `NV_FLAG_NO_UNIQUE`.
    #[error(
        "nvpair {name:?} at byte {offset}: duplicate name in a list without NV_FLAG_NO_UNIQUE"
    )]
    DuplicateName {
        /// Where the second pair starts.
        offset: usize,
        /// The name.
        name: String,
    },
}

/// A list that libnv could not have packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// A name contains a NUL.
    #[error("nvpair name {name:?} contains a NUL")]
    NulInName {
        /// The name.
        name: String,
    },
    /// A name is longer than `NV_NAME_MAX - 1` bytes.
    #[error("nvpair name of {len} bytes is longer than 2047")]
    NameTooLong {
        /// Its length.
        len: usize,
    },
    /// A string value contains a NUL.
    #[error("nvpair {name:?}: string value contains a NUL")]
    NulInString {
        /// The pair's name.
        name: String,
    },
    /// An empty binary value or array (libnv refuses both).
    #[error("nvpair {name:?}: empty {ty}")]
    Empty {
        /// The pair's name.
        name: String,
        /// libnv's name of the type.
        ty: &'static str,
    },
    /// A name occurs twice in a list without [`FLAG_NO_UNIQUE`].
    #[error("nvpair {name:?}: duplicate name in a list without NV_FLAG_NO_UNIQUE")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`] (the decoder would refuse it).
    #[error("nvpair {name:?}: nesting deeper than {max} levels")]
    TooDeep {
        /// The pair's name.
        name: String,
        /// The limit.
        max: usize,
    },
}

/// What ends a list body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The end of the input (the root list).
    Input,
    /// `NVLIST_UP` (a nested nvlist), opened at the given offset.
    Up(usize),
    /// `NVLIST_ARRAY_NEXT` (an nvlist array element), opened at the offset.
    ArrayNext(usize),
}

/// A pair's header, checked against the input.
struct PairHeader {
    offset: usize,
    ty: u8,
    name: String,
    datasize: u64,
    nitems: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes, or `Truncated` naming `offset` and `what`.
    fn take(&mut self, n: u64, offset: usize, what: &'static str) -> Result<&'a [u8], NvError> {
        let have = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= have => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(NvError::Truncated {
                offset,
                what,
                need: n,
                have,
            }),
        }
    }

    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }

    fn u64(&self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }

    /// Reads an nvlist header; returns the list's public flags. The root
    /// header sets the byte order; nested ones must agree with it.
    fn header(&mut self, root: bool) -> Result<u8, NvError> {
        let offset = self.pos;
        let h = self.take(HEADER_SIZE as u64, offset, "nvlist header")?;
        if h[0] != MAGIC {
            return Err(NvError::BadMagic {
                offset,
                magic: h[0],
            });
        }
        if h[1] != VERSION {
            return Err(NvError::BadVersion {
                offset,
                version: h[1],
            });
        }
        let flags = h[2];
        if flags & !(PUBLIC_FLAGS | FLAG_BIG_ENDIAN) != 0 {
            return Err(NvError::BadFlags { offset, flags });
        }
        let big = flags & FLAG_BIG_ENDIAN != 0;
        if root {
            self.big = big;
        } else if big != self.big {
            return Err(NvError::MixedEndian { offset });
        }
        let count = self.u64(&h[3..11]);
        if count != 0 {
            return Err(NvError::Descriptors { offset, count });
        }
        let size = self.u64(&h[11..19]);
        let actual = self.remaining();
        if size != actual as u64 {
            return Err(NvError::SizeMismatch {
                offset,
                size,
                actual,
            });
        }
        Ok(flags & PUBLIC_FLAGS)
    }

    fn pair_header(&mut self) -> Result<PairHeader, NvError> {
        let offset = self.pos;
        let h = self.take(PAIR_HEADER_SIZE as u64, offset, "nvpair header")?;
        let t = h[0];
        if !matches!(
            t,
            ty::NULL..=ty::DESCRIPTOR_ARRAY | ty::NVLIST_ARRAY_NEXT | ty::NVLIST_UP
        ) {
            return Err(NvError::UnknownType { offset, ty: t });
        }
        let namesize = self.u16(&h[1..3]);
        let datasize = self.u64(&h[3..11]);
        let nitems = self.u64(&h[11..19]);
        if namesize == 0 || usize::from(namesize) > NAME_MAX {
            return Err(NvError::BadNameSize { offset, namesize });
        }
        let raw = self.take(u64::from(namesize), offset, "nvpair name")?;
        let (last, body) = raw.split_last().unwrap_or((&1, &[]));
        if *last != 0 || body.contains(&0) {
            return Err(NvError::NameNotTerminated { offset, namesize });
        }
        let name = std::str::from_utf8(body)
            .map_err(|_| NvError::InvalidUtf8 {
                offset,
                what: "name".into(),
            })?
            .to_owned();
        let remaining = self.remaining();
        if datasize > remaining as u64 {
            return Err(NvError::DataBeyondInput {
                offset,
                name,
                datasize,
                remaining,
            });
        }
        Ok(PairHeader {
            offset,
            ty: t,
            name,
            datasize,
            nitems,
        })
    }

    /// Reads pairs until `end`; `flags` are the list's (for duplicates).
    fn body(&mut self, flags: u8, depth: usize, end: End) -> Result<Vec<(String, Value)>, NvError> {
        let mut pairs = Vec::new();
        let mut seen = HashSet::new();
        loop {
            if self.remaining() == 0 {
                return match end {
                    End::Input => Ok(pairs),
                    End::Up(opened) => Err(NvError::Unterminated {
                        offset: self.pos,
                        opened,
                        marker: "NVLIST_UP",
                    }),
                    End::ArrayNext(opened) => Err(NvError::Unterminated {
                        offset: self.pos,
                        opened,
                        marker: "NVLIST_ARRAY_NEXT",
                    }),
                };
            }
            let p = self.pair_header()?;
            if p.ty == ty::NVLIST_UP || p.ty == ty::NVLIST_ARRAY_NEXT {
                let expected = matches!(
                    (p.ty, end),
                    (ty::NVLIST_UP, End::Up(_)) | (ty::NVLIST_ARRAY_NEXT, End::ArrayNext(_))
                );
                if !expected || p.datasize != 0 || p.nitems != 0 {
                    return Err(NvError::UnexpectedMarker {
                        offset: p.offset,
                        marker: type_name(p.ty),
                    });
                }
                return Ok(pairs);
            }
            if flags & FLAG_NO_UNIQUE == 0 && !seen.insert(NvList::name_key(flags, &p.name)) {
                return Err(NvError::DuplicateName {
                    offset: p.offset,
                    name: p.name,
                });
            }
            let offset = p.offset;
            let value = self.value(&p, depth)?;
            debug_assert!(self.pos > offset);
            pairs.push((p.name, value));
        }
    }

    fn bad_size(p: &PairHeader, expected: &'static str) -> NvError {
        NvError::BadDataSize {
            offset: p.offset,
            name: p.name.clone(),
            ty: type_name(p.ty),
            datasize: p.datasize,
            expected,
        }
    }

    fn bad_items(p: &PairHeader) -> NvError {
        NvError::BadItemCount {
            offset: p.offset,
            name: p.name.clone(),
            ty: type_name(p.ty),
            nitems: p.nitems,
            datasize: p.datasize,
        }
    }

    fn bool_byte(p: &PairHeader, b: u8) -> Result<bool, NvError> {
        match b {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(NvError::BadBool {
                offset: p.offset,
                name: p.name.clone(),
                value,
            }),
        }
    }

    fn utf8(p: &PairHeader, b: &[u8]) -> Result<String, NvError> {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| NvError::InvalidUtf8 {
                offset: p.offset,
                what: format!("value of {:?}", p.name),
            })
    }

    fn value(&mut self, p: &PairHeader, depth: usize) -> Result<Value, NvError> {
        let scalar = !matches!(
            p.ty,
            ty::BOOL_ARRAY
                | ty::NUMBER_ARRAY
                | ty::STRING_ARRAY
                | ty::NVLIST_ARRAY
                | ty::DESCRIPTOR_ARRAY
        );
        if scalar && p.nitems != 0 {
            return Err(Self::bad_items(p));
        }
        let what = "nvpair data";
        match p.ty {
            ty::NULL => {
                if p.datasize != 0 {
                    return Err(Self::bad_size(p, "0"));
                }
                Ok(Value::Null)
            }
            ty::BOOL => {
                if p.datasize != 1 {
                    return Err(Self::bad_size(p, "1"));
                }
                let b = self.take(1, p.offset, what)?[0];
                Self::bool_byte(p, b).map(Value::Bool)
            }
            ty::NUMBER => {
                if p.datasize != 8 {
                    return Err(Self::bad_size(p, "8"));
                }
                let b = self.take(8, p.offset, what)?;
                Ok(Value::Number(self.u64(b)))
            }
            ty::STRING => {
                if p.datasize == 0 {
                    return Err(Self::bad_size(p, "at least 1"));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                let (last, body) = b.split_last().unwrap_or((&1, &[]));
                if *last != 0 || body.contains(&0) {
                    return Err(NvError::StringNotTerminated {
                        offset: p.offset,
                        name: p.name.clone(),
                    });
                }
                Self::utf8(p, body).map(Value::String)
            }
            ty::BINARY => {
                if p.datasize == 0 {
                    return Err(Self::bad_size(p, "at least 1"));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                Ok(Value::Binary(b.to_vec()))
            }
            ty::DESCRIPTOR | ty::DESCRIPTOR_ARRAY => Err(NvError::Descriptor {
                offset: p.offset,
                name: p.name.clone(),
            }),
            ty::NVLIST => {
                // libnv puts the nested list's packed size here; it only
                // has to be non-zero and within the input.
                if p.datasize == 0 {
                    return Err(Self::bad_size(p, "at least 1"));
                }
                self.check_depth(p, depth)?;
                let opened = self.pos;
                let flags = self.header(false)?;
                let pairs = self.body(flags, depth + 1, End::Up(opened))?;
                Ok(Value::NvList(NvList { flags, pairs }))
            }
            ty::BOOL_ARRAY => {
                if p.nitems == 0 || p.datasize != p.nitems {
                    return Err(Self::bad_items(p));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                b.iter()
                    .map(|&x| Self::bool_byte(p, x))
                    .collect::<Result<_, _>>()
                    .map(Value::BoolArray)
            }
            ty::NUMBER_ARRAY => {
                if p.nitems == 0 || p.nitems.checked_mul(8) != Some(p.datasize) {
                    return Err(Self::bad_items(p));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                Ok(Value::NumberArray(
                    b.chunks_exact(8).map(|c| self.u64(c)).collect(),
                ))
            }
            ty::STRING_ARRAY => {
                // Each string takes at least its NUL, so a count above the
                // data size is refused before anything is allocated.
                if p.nitems == 0 || p.nitems > p.datasize {
                    return Err(Self::bad_items(p));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                let Some((&0, body)) = b.split_last() else {
                    return Err(NvError::StringNotTerminated {
                        offset: p.offset,
                        name: p.name.clone(),
                    });
                };
                if body.split(|&c| c == 0).count() as u64 != p.nitems {
                    return Err(Self::bad_items(p));
                }
                body.split(|&c| c == 0)
                    .map(|s| Self::utf8(p, s))
                    .collect::<Result<_, _>>()
                    .map(Value::StringArray)
            }
            ty::NVLIST_ARRAY => {
                // Each element takes at least a header and a marker: check
                // the count against the input before allocating for it.
                let fits = usize::try_from(p.nitems)
                    .ok()
                    .and_then(|n| n.checked_mul(MIN_ARRAY_ELEMENT))
                    .is_some_and(|need| need <= self.remaining());
                if p.nitems == 0 || !fits {
                    return Err(Self::bad_items(p));
                }
                self.check_depth(p, depth)?;
                let n = p.nitems as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let opened = self.pos;
                    let flags = self.header(false)?;
                    let pairs = self.body(flags, depth + 1, End::ArrayNext(opened))?;
                    items.push(NvList { flags, pairs });
                }
                Ok(Value::NvListArray(items))
            }
            // pair_header admits no other type, and markers are handled by
            // body.
            t => Err(NvError::UnknownType {
                offset: p.offset,
                ty: t,
            }),
        }
    }

    fn check_depth(&self, p: &PairHeader, depth: usize) -> Result<(), NvError> {
        if depth + 1 > MAX_DEPTH {
            return Err(NvError::TooDeep {
                offset: p.offset,
                name: p.name.clone(),
                max: MAX_DEPTH,
            });
        }
        Ok(())
    }
}

struct Writer {
    out: Vec<u8>,
    big: bool,
    /// Offsets of every nvlist header, patched with their sizes at the end.
    headers: Vec<usize>,
}

impl Writer {
    fn u16(&mut self, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn u64(&mut self, v: u64) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn put_u64_at(&mut self, at: usize, v: u64) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out[at..at + 8].copy_from_slice(&b);
    }

    fn header(&mut self, flags: u8) {
        self.headers.push(self.out.len());
        let f = (flags & PUBLIC_FLAGS) | if self.big { FLAG_BIG_ENDIAN } else { 0 };
        self.out.extend_from_slice(&[MAGIC, VERSION, f]);
        self.u64(0); // descriptors
        self.u64(0); // size, patched by pack
    }

    /// A pair header and name; returns the offset of the data size field.
    fn pair_header(&mut self, t: u8, name: &str, datasize: u64, nitems: u64) -> usize {
        self.out.push(t);
        // Checked by `check_name`: at most NAME_MAX - 1 bytes.
        self.u16((name.len() + 1) as u16);
        let at = self.out.len();
        self.u64(datasize);
        self.u64(nitems);
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        at
    }

    fn marker(&mut self, t: u8) {
        self.pair_header(t, "", 0, 0);
    }

    fn check_name(name: &str) -> Result<(), PackError> {
        if name.as_bytes().contains(&0) {
            return Err(PackError::NulInName { name: name.into() });
        }
        if name.len() >= NAME_MAX {
            return Err(PackError::NameTooLong { len: name.len() });
        }
        Ok(())
    }

    fn check_str(name: &str, s: &str) -> Result<(), PackError> {
        if s.as_bytes().contains(&0) {
            return Err(PackError::NulInString { name: name.into() });
        }
        Ok(())
    }

    fn list(&mut self, list: &NvList, depth: usize) -> Result<(), PackError> {
        self.header(list.flags);
        let mut seen = HashSet::new();
        for (name, value) in &list.pairs {
            Self::check_name(name)?;
            if list.flags & FLAG_NO_UNIQUE == 0 && !seen.insert(NvList::name_key(list.flags, name))
            {
                return Err(PackError::DuplicateName { name: name.clone() });
            }
            self.pair(name, value, depth)?;
        }
        Ok(())
    }

    fn pair(&mut self, name: &str, value: &Value, depth: usize) -> Result<(), PackError> {
        let t = value.type_number();
        let empty = || PackError::Empty {
            name: name.into(),
            ty: type_name(t),
        };
        let too_deep = || PackError::TooDeep {
            name: name.into(),
            max: MAX_DEPTH,
        };
        match value {
            Value::Null => {
                self.pair_header(t, name, 0, 0);
            }
            Value::Bool(b) => {
                self.pair_header(t, name, 1, 0);
                self.out.push(u8::from(*b));
            }
            Value::Number(n) => {
                self.pair_header(t, name, 8, 0);
                self.u64(*n);
            }
            Value::String(s) => {
                Self::check_str(name, s)?;
                self.pair_header(t, name, s.len() as u64 + 1, 0);
                self.out.extend_from_slice(s.as_bytes());
                self.out.push(0);
            }
            Value::Binary(b) => {
                if b.is_empty() {
                    return Err(empty());
                }
                self.pair_header(t, name, b.len() as u64, 0);
                self.out.extend_from_slice(b);
            }
            Value::NvList(child) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep());
                }
                let at = self.pair_header(t, name, 0, 0);
                let start = self.out.len();
                self.list(child, depth + 1)?;
                // libnv's datasize for a nested list: its packed size,
                // without its closing marker.
                let size = (self.out.len() - start) as u64;
                self.put_u64_at(at, size);
                self.marker(ty::NVLIST_UP);
            }
            Value::BoolArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                self.pair_header(t, name, v.len() as u64, v.len() as u64);
                self.out.extend(v.iter().map(|&b| u8::from(b)));
            }
            Value::NumberArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                self.pair_header(t, name, 8 * v.len() as u64, v.len() as u64);
                for &n in v {
                    self.u64(n);
                }
            }
            Value::StringArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                for s in v {
                    Self::check_str(name, s)?;
                }
                let size: usize = v.iter().map(|s| s.len() + 1).sum();
                self.pair_header(t, name, size as u64, v.len() as u64);
                for s in v {
                    self.out.extend_from_slice(s.as_bytes());
                    self.out.push(0);
                }
            }
            Value::NvListArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep());
                }
                self.pair_header(t, name, 0, v.len() as u64);
                for item in v {
                    self.list(item, depth + 1)?;
                    self.marker(ty::NVLIST_ARRAY_NEXT);
                }
            }
        }
        Ok(())
    }
}

/// bhyve's configuration for its slirp helper, from the first record.
///
/// bhyve sends the net device's configuration node (every value a string)
/// plus `vmname`. The helper reads `hostfwd` (rules separated by `;`),
/// `open` (a bhyve boolean) and `vmname`; every other key is listed in
/// [`ignored`](HelperConfig::ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelperConfig {
    /// Host forwarding rules, bhyve syntax, unparsed.
    pub hostfwd: Option<String>,
    /// The guest may reach the outside (`open`; false when absent).
    pub open: bool,
    /// The VM's name.
    pub vmname: Option<String>,
    /// Names of the keys the helper does not use, in wire order.
    pub ignored: Vec<String>,
}

/// A configuration record the helper cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The record is not a valid packed nvlist.
    #[error("{0}")]
    NvList(#[from] NvError),
    /// A known key has a value of the wrong type or form.
    #[error("configuration key {key:?}: {value} is not {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value, rendered briefly.
        value: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// A known key occurs more than once (a list with `NV_FLAG_NO_UNIQUE`).
    #[error("configuration key {key:?} occurs more than once")]
    Duplicate {
        /// The key.
        key: String,
    },
}

/// bhyve's boolean spellings (config.c `_bool_value`): `true`, `on`,
/// `yes` and `false`, `off`, `no` in any case, and `1`, `0`.
fn bhyve_bool(s: &str) -> Option<bool> {
    let is = |w: &str| s.eq_ignore_ascii_case(w);
    if is("true") || is("on") || is("yes") || s == "1" {
        Some(true)
    } else if is("false") || is("off") || is("no") || s == "0" {
        Some(false)
    } else {
        None
    }
}

impl HelperConfig {
    /// Decodes the packed configuration record.
    pub fn from_packed(record: &[u8]) -> Result<HelperConfig, ConfigError> {
        HelperConfig::from_nvlist(&NvList::unpack(record)?)
    }

    /// Reads the configuration from a decoded nvlist.
    pub fn from_nvlist(list: &NvList) -> Result<HelperConfig, ConfigError> {
        const STRING: &str = "a string";
        let mut cfg = HelperConfig::default();
        let mut seen = [false; 3];
        for (name, value) in list.pairs() {
            let known = ["hostfwd", "open", "vmname"]
                .iter()
                .position(|k| list.same_name(name, k));
            let Some(i) = known else {
                cfg.ignored.push(name.clone());
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(ConfigError::Duplicate { key: name.clone() });
            }
            let bad = |expected| ConfigError::BadValue {
                key: name.clone(),
                value: value.to_string(),
                expected,
            };
            match (i, value) {
                (0, Value::String(s)) => cfg.hostfwd = Some(s.clone()),
                (2, Value::String(s)) => cfg.vmname = Some(s.clone()),
                (0 | 2, _) => return Err(bad(STRING)),
                (_, Value::Bool(b)) => cfg.open = *b,
                (_, Value::String(s)) => {
                    cfg.open = bhyve_bool(s)
                        .ok_or_else(|| bad("a boolean (true/false, on/off, yes/no, 1/0)"))?
                }
                _ => return Err(bad("a boolean (a BOOL, or a string true/false)")),
            }
        }
        Ok(cfg)
    }

    /// The nvlist bhyve would send for this configuration (values as
    /// strings, `vmname` last, ignored keys left out).
    pub fn to_nvlist(&self) -> NvList {
        let mut l = NvList::new();
        if let Some(h) = &self.hostfwd {
            l.push("hostfwd", Value::String(h.clone()));
        }
        l.push("open", Value::String(self.open.to_string()));
        if let Some(n) = &self.vmname {
            l.push("vmname", Value::String(n.clone()));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds records by hand, independently of `Writer`.
    struct Raw {
        b: Vec<u8>,
        big: bool,
    }

    impl Raw {
        fn new(big: bool) -> Raw {
            Raw { b: Vec::new(), big }
        }
        fn u16(&mut self, v: u16) -> &mut Raw {
            let x = if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.b.extend_from_slice(&x);
            self
        }
        fn u64(&mut self, v: u64) -> &mut Raw {
            let x = if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.b.extend_from_slice(&x);
            self
        }
        /// An nvlist header whose size is patched by `finish`.
        fn header(&mut self, flags: u8) -> &mut Raw {
            let f = flags | if self.big { FLAG_BIG_ENDIAN } else { 0 };
            self.b.extend_from_slice(&[MAGIC, VERSION, f]);
            self.u64(0).u64(u64::MAX)
        }
        fn pair(&mut self, t: u8, name: &str, datasize: u64, nitems: u64) -> &mut Raw {
            self.b.push(t);
            self.u16(name.len() as u16 + 1).u64(datasize).u64(nitems);
            self.b.extend_from_slice(name.as_bytes());
            self.b.push(0);
            self
        }
        fn string(&mut self, name: &str, value: &str) -> &mut Raw {
            self.pair(ty::STRING, name, value.len() as u64 + 1, 0);
            self.b.extend_from_slice(value.as_bytes());
            self.b.push(0);
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Raw {
            self.b.extend_from_slice(b);
            self
        }
        /// Patches every header whose size is `u64::MAX` with what follows
        /// it.
        fn finish(&mut self) -> Vec<u8> {
            let total = self.b.len();
            let mut i = 0;
            while i + HEADER_SIZE <= total {
                if self.b[i] == MAGIC && self.b[i + 1] == 0 && self.b[i + 11..i + 19] == [0xff; 8] {
                    let size = (total - i - HEADER_SIZE) as u64;
                    let x = if self.big {
                        size.to_be_bytes()
                    } else {
                        size.to_le_bytes()
                    };
                    self.b[i + 11..i + 19].copy_from_slice(&x);
                }
                i += 1;
            }
            self.b.clone()
        }
    }

    /// What bhyve sends for `-s 2,virtio-net,slirp,hostfwd=...,open` with
    /// `-o name=vm0`: the device node, values as strings, `vmname` last.
    fn bhyve_record() -> Vec<u8> {
        let mut r = Vec::new();
        // nvlist header: magic, version, flags 0, 0 descriptors, size.
        r.extend_from_slice(&[0x6c, 0x00, 0x00]);
        r.extend_from_slice(&0u64.to_le_bytes());
        let size_at = r.len();
        r.extend_from_slice(&0u64.to_le_bytes());
        let pairs: [(&str, &str); 5] = [
            ("device", "virtio-net"),
            ("backend", "slirp"),
            ("hostfwd", "tcp:127.0.0.1:2222-:22;udp::5353-:53"),
            ("open", "true"),
            ("vmname", "vm0"),
        ];
        for (name, value) in pairs {
            r.push(4); // NV_TYPE_STRING
            r.extend_from_slice(&(name.len() as u16 + 1).to_le_bytes());
            r.extend_from_slice(&(value.len() as u64 + 1).to_le_bytes());
            r.extend_from_slice(&0u64.to_le_bytes());
            r.extend_from_slice(name.as_bytes());
            r.push(0);
            r.extend_from_slice(value.as_bytes());
            r.push(0);
        }
        let size = (r.len() - HEADER_SIZE) as u64;
        r[size_at..size_at + 8].copy_from_slice(&size.to_le_bytes());
        r
    }

    #[test]
    fn bhyve_record_byte_exact() {
        let rec = bhyve_record();
        // The first pair, byte by byte: type 4, namesize 7, datasize 11,
        // nitems 0, "device\0", "virtio-net\0".
        assert_eq!(
            &rec[19..19 + 19 + 7 + 11],
            b"\x04\x07\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00device\0virtio-net\0"
        );
        let cfg = HelperConfig::from_packed(&rec).unwrap();
        assert_eq!(
            cfg,
            HelperConfig {
                hostfwd: Some("tcp:127.0.0.1:2222-:22;udp::5353-:53".into()),
                open: true,
                vmname: Some("vm0".into()),
                ignored: vec!["device".into(), "backend".into()],
            }
        );
        // Our encoder writes the same bytes.
        let list = NvList::unpack(&rec).unwrap();
        assert_eq!(list.pack(Endian::Little).unwrap(), rec);
        assert_eq!(list.get("backend"), Some(&Value::String("slirp".into())));
    }

    #[test]
    fn big_endian_record() {
        let rec = Raw::new(true)
            .header(0)
            .string("hostfwd", "tcp::8080-:80")
            .pair(ty::BOOL, "open", 1, 0)
            .bytes(&[1])
            .pair(ty::NUMBER, "n", 8, 0)
            .bytes(&0x0102_0304_0506_0708u64.to_be_bytes())
            .finish();
        assert_eq!(rec[2], FLAG_BIG_ENDIAN);
        let list = NvList::unpack(&rec).unwrap();
        assert_eq!(list.get("n"), Some(&Value::Number(0x0102_0304_0506_0708)));
        assert_eq!(list.pack(Endian::Big).unwrap(), rec);
        let cfg = HelperConfig::from_nvlist(&list).unwrap();
        assert!(cfg.open);
        assert_eq!(cfg.hostfwd.as_deref(), Some("tcp::8080-:80"));
        assert_eq!(cfg.ignored, vec!["n".to_string()]);
    }

    #[test]
    fn nested_lists_and_arrays() {
        let rec = Raw::new(false)
            .header(0)
            .pair(ty::NVLIST, "sub", 1, 0)
            .header(0)
            .string("a", "b")
            .pair(ty::NVLIST_UP, "", 0, 0)
            .pair(ty::NVLIST_ARRAY, "arr", 0, 2)
            .header(0)
            .pair(ty::NVLIST_ARRAY_NEXT, "", 0, 0)
            .header(0)
            .pair(ty::NULL, "x", 0, 0)
            .pair(ty::NVLIST_ARRAY_NEXT, "", 0, 0)
            .pair(ty::STRING_ARRAY, "s", 4, 2)
            .bytes(b"a\0b\0")
            .finish();
        let list = NvList::unpack(&rec).unwrap();
        assert_eq!(
            list,
            NvList::new()
                .with(
                    "sub",
                    Value::NvList(NvList::new().with("a", Value::String("b".into())))
                )
                .with(
                    "arr",
                    Value::NvListArray(vec![NvList::new(), NvList::new().with("x", Value::Null)])
                )
                .with("s", Value::StringArray(vec!["a".into(), "b".into()]))
        );
    }

    fn err(rec: &[u8]) -> NvError {
        NvList::unpack(rec).unwrap_err()
    }

    #[test]
    fn malformed_headers() {
        let good = bhyve_record();
        let mut bad = good.clone();
        bad[0] = 0x6d;
        assert_eq!(
            err(&bad),
            NvError::BadMagic {
                offset: 0,
                magic: 0x6d
            }
        );
        assert!(err(&bad).to_string().contains("0x6d"));
        assert!(matches!(
            err(&good[..10]),
            NvError::Truncated {
                offset: 0,
                what: "nvlist header",
                need: 19,
                have: 10
            }
        ));
        assert!(matches!(err(&[]), NvError::Truncated { have: 0, .. }));
        let mut bad = good.clone();
        bad[1] = 1;
        assert_eq!(
            err(&bad),
            NvError::BadVersion {
                offset: 0,
                version: 1
            }
        );
        let mut bad = good.clone();
        bad[2] = 0x10;
        assert_eq!(
            err(&bad),
            NvError::BadFlags {
                offset: 0,
                flags: 0x10
            }
        );
        let mut bad = good.clone();
        bad[3] = 1;
        assert_eq!(
            err(&bad),
            NvError::Descriptors {
                offset: 0,
                count: 1
            }
        );
        // A record cut short: the header's size no longer matches.
        assert!(matches!(
            err(&good[..good.len() - 1]),
            NvError::SizeMismatch { offset: 0, .. }
        ));
    }

    #[test]
    fn malformed_pairs() {
        let base = || {
            let mut r = Raw::new(false);
            r.header(0);
            r
        };
        // namesize 0.
        let rec = base().bytes(&[ty::STRING, 0, 0]).u64(0).u64(0).finish();
        assert_eq!(
            err(&rec),
            NvError::BadNameSize {
                offset: 19,
                namesize: 0
            }
        );
        // namesize above NV_NAME_MAX.
        let rec = base().bytes(&[ty::NULL]).u16(2049).u64(0).u64(0).finish();
        assert!(matches!(
            err(&rec),
            NvError::BadNameSize { namesize: 2049, .. }
        ));
        // Name not NUL-terminated.
        let rec = base()
            .bytes(&[ty::NULL])
            .u16(3)
            .u64(0)
            .u64(0)
            .bytes(b"abc")
            .finish();
        assert_eq!(
            err(&rec),
            NvError::NameNotTerminated {
                offset: 19,
                namesize: 3
            }
        );
        // A NUL inside the name.
        let rec = base()
            .bytes(&[ty::NULL])
            .u16(3)
            .u64(0)
            .u64(0)
            .bytes(b"a\0\0")
            .finish();
        assert!(matches!(err(&rec), NvError::NameNotTerminated { .. }));
        // Name longer than the input.
        let rec = base()
            .bytes(&[ty::NULL])
            .u16(100)
            .u64(0)
            .u64(0)
            .bytes(b"ab\0")
            .finish();
        assert!(matches!(
            err(&rec),
            NvError::Truncated {
                what: "nvpair name",
                need: 100,
                have: 3,
                ..
            }
        ));
        // Data size beyond the input.
        let rec = base()
            .pair(ty::STRING, "hostfwd", 1000, 0)
            .bytes(b"x\0")
            .finish();
        let e = err(&rec);
        assert_eq!(
            e,
            NvError::DataBeyondInput {
                offset: 19,
                name: "hostfwd".into(),
                datasize: 1000,
                remaining: 2
            }
        );
        assert!(e.to_string().contains("hostfwd") && e.to_string().contains("1000"));
        let rec = base().pair(ty::BINARY, "b", u64::MAX, 0).finish();
        assert!(matches!(
            err(&rec),
            NvError::DataBeyondInput {
                datasize: u64::MAX,
                ..
            }
        ));
        // Absurd nitems on arrays (checked before allocating) and scalars.
        let rec = base().pair(ty::NVLIST_ARRAY, "a", 0, u64::MAX).finish();
        assert!(matches!(
            err(&rec),
            NvError::BadItemCount {
                nitems: u64::MAX,
                ty: "NVLIST ARRAY",
                ..
            }
        ));
        let rec = base()
            .pair(ty::NVLIST_ARRAY, "a", 0, 1 << 40)
            .bytes(&[0; 64])
            .finish();
        assert!(matches!(err(&rec), NvError::BadItemCount { .. }));
        let rec = base()
            .pair(ty::NUMBER_ARRAY, "a", 8, u64::MAX / 4)
            .bytes(&[0; 8])
            .finish();
        assert!(matches!(err(&rec), NvError::BadItemCount { .. }));
        let rec = base()
            .pair(ty::STRING_ARRAY, "a", 2, u64::MAX)
            .bytes(b"a\0")
            .finish();
        assert!(matches!(err(&rec), NvError::BadItemCount { .. }));
        let rec = base()
            .pair(ty::STRING_ARRAY, "a", 4, 1)
            .bytes(b"a\0b\0")
            .finish();
        assert!(matches!(err(&rec), NvError::BadItemCount { nitems: 1, .. }));
        let rec = base().pair(ty::NULL, "n", 0, 7).finish();
        assert!(matches!(err(&rec), NvError::BadItemCount { nitems: 7, .. }));
        // Wrong sizes and values for the type.
        let rec = base().pair(ty::NUMBER, "n", 4, 0).bytes(&[0; 4]).finish();
        assert!(matches!(
            err(&rec),
            NvError::BadDataSize {
                datasize: 4,
                ty: "NUMBER",
                ..
            }
        ));
        let rec = base().pair(ty::BOOL, "open", 1, 0).bytes(&[2]).finish();
        assert!(matches!(err(&rec), NvError::BadBool { value: 2, .. }));
        let rec = base().pair(ty::STRING, "s", 3, 0).bytes(b"abc").finish();
        assert!(matches!(err(&rec), NvError::StringNotTerminated { .. }));
        let rec = base().pair(ty::STRING, "s", 0, 0).finish();
        assert!(matches!(err(&rec), NvError::BadDataSize { .. }));
        // Unknown type, descriptor, stray markers, duplicates.
        let rec = base().pair(13, "x", 0, 0).finish();
        assert_eq!(err(&rec), NvError::UnknownType { offset: 19, ty: 13 });
        let rec = base()
            .pair(ty::DESCRIPTOR, "fd", 8, 0)
            .bytes(&[0; 8])
            .finish();
        assert!(matches!(err(&rec), NvError::Descriptor { .. }));
        let rec = base().pair(ty::NVLIST_UP, "", 0, 0).finish();
        assert!(matches!(
            err(&rec),
            NvError::UnexpectedMarker {
                marker: "NVLIST_UP",
                ..
            }
        ));
        let rec = base()
            .string("open", "true")
            .string("open", "false")
            .finish();
        assert!(matches!(err(&rec), NvError::DuplicateName { .. }));
        // A nested list without its closing marker.
        let rec = base().pair(ty::NVLIST, "sub", 19, 0).header(0).finish();
        assert!(matches!(
            err(&rec),
            NvError::Unterminated {
                opened: 42,
                marker: "NVLIST_UP",
                ..
            }
        ));
        // Non-UTF-8 name.
        let rec = base()
            .bytes(&[ty::NULL])
            .u16(2)
            .u64(0)
            .u64(0)
            .bytes(b"\xff\0")
            .finish();
        assert!(matches!(err(&rec), NvError::InvalidUtf8 { .. }));
    }

    #[test]
    fn depth_is_capped() {
        let mut l = NvList::new().with("leaf", Value::Null);
        for _ in 0..MAX_DEPTH {
            l = NvList::new().with("n", Value::NvList(l));
        }
        // MAX_DEPTH levels below the root are fine, one more is not.
        assert!(NvList::unpack(&l.pack(Endian::Little).unwrap()).is_ok());
        {
            l = NvList::new().with("n", Value::NvList(l));
        }
        assert!(matches!(
            l.pack(Endian::Little),
            Err(PackError::TooDeep { .. })
        ));
        // Hand-built: MAX_DEPTH + 1 nested headers.
        let mut r = Raw::new(false);
        r.header(0);
        for _ in 0..=MAX_DEPTH {
            r.pair(ty::NVLIST, "n", 1, 0).header(0);
        }
        for _ in 0..=MAX_DEPTH {
            r.pair(ty::NVLIST_UP, "", 0, 0);
        }
        assert!(matches!(
            err(&r.finish()),
            NvError::TooDeep { max: MAX_DEPTH, .. }
        ));
    }

    #[test]
    fn helper_config_values() {
        let cfg = |l: NvList| HelperConfig::from_nvlist(&l);
        let s = |v: &str| Value::String(v.into());
        for (v, want) in [
            ("true", true),
            ("On", true),
            ("1", true),
            ("NO", false),
            ("0", false),
        ] {
            assert_eq!(cfg(NvList::new().with("open", s(v))).unwrap().open, want);
        }
        assert!(
            cfg(NvList::new().with("open", Value::Bool(true)))
                .unwrap()
                .open
        );
        assert!(!cfg(NvList::new()).unwrap().open);
        let e = cfg(NvList::new().with("open", s("maybe"))).unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, value, .. } if key == "open" && value == "\"maybe\"")
        );
        assert!(e.to_string().contains("open") && e.to_string().contains("maybe"));
        let e = cfg(NvList::new().with("hostfwd", Value::Number(5))).unwrap_err();
        assert!(e.to_string().contains("hostfwd") && e.to_string().contains("NUMBER 5"));
        let e = cfg(NvList::new().with("open", Value::Number(1))).unwrap_err();
        assert!(matches!(e, ConfigError::BadValue { .. }));
        let dup = NvList::with_flags(FLAG_NO_UNIQUE)
            .with("vmname", s("a"))
            .with("vmname", s("b"));
        assert!(matches!(cfg(dup), Err(ConfigError::Duplicate { .. })));
        // The record bhyve would send round-trips through the typed view.
        let c = HelperConfig {
            hostfwd: Some("tcp::1-:2".into()),
            open: false,
            vmname: Some("vm".into()),
            ignored: vec![],
        };
        let rec = c.to_nvlist().pack(Endian::Little).unwrap();
        assert_eq!(HelperConfig::from_packed(&rec).unwrap(), c);
        assert!(matches!(
            HelperConfig::from_packed(&rec[..5]),
            Err(ConfigError::NvList(NvError::Truncated { .. }))
        ));
    }

    #[test]
    fn pack_refuses_what_libnv_cannot_represent() {
        let p = |l: NvList| l.pack(Endian::Little).unwrap_err();
        assert!(matches!(
            p(NvList::new().with("a\0b", Value::Null)),
            PackError::NulInName { .. }
        ));
        assert!(matches!(
            p(NvList::new().with("x".repeat(2048), Value::Null)),
            PackError::NameTooLong { .. }
        ));
        assert!(matches!(
            p(NvList::new().with("s", Value::String("a\0".into()))),
            PackError::NulInString { .. }
        ));
        assert!(matches!(
            p(NvList::new().with("b", Value::Binary(vec![]))),
            PackError::Empty { .. }
        ));
        assert!(matches!(
            p(NvList::new().with("a", Value::NumberArray(vec![]))),
            PackError::Empty { .. }
        ));
        assert!(matches!(
            p(NvList::new().with("a", Value::Null).with("a", Value::Null)),
            PackError::DuplicateName { .. }
        ));
        assert!(matches!(
            p(NvList::with_flags(FLAG_IGNORE_CASE)
                .with("a", Value::Null)
                .with("A", Value::Null)),
            PackError::DuplicateName { .. }
        ));
        // With NV_FLAG_NO_UNIQUE duplicates are fine both ways.
        let l = NvList::with_flags(FLAG_NO_UNIQUE)
            .with("a", Value::Null)
            .with("a", Value::Null);
        assert_eq!(NvList::unpack(&l.pack(Endian::Big).unwrap()).unwrap(), l);
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z]{0,6}"
    }

    fn arb_string() -> impl Strategy<Value = String> {
        "[^\u{0}]{0,12}"
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::Number),
            arb_string().prop_map(Value::String),
            prop::collection::vec(any::<u8>(), 1..20).prop_map(Value::Binary),
            prop::collection::vec(any::<bool>(), 1..5).prop_map(Value::BoolArray),
            prop::collection::vec(any::<u64>(), 1..5).prop_map(Value::NumberArray),
            prop::collection::vec(arb_string(), 1..5).prop_map(Value::StringArray),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            let list = (
                prop_oneof![Just(0u8), Just(FLAG_NO_UNIQUE), Just(FLAG_IGNORE_CASE)],
                prop::collection::vec((arb_name(), inner), 0..4),
            )
                .prop_map(|(flags, pairs)| unique(flags, pairs))
                .boxed();
            prop_oneof![
                list.clone().prop_map(Value::NvList),
                prop::collection::vec(list, 1..3).prop_map(Value::NvListArray),
            ]
        })
    }

    /// A list whose names satisfy its flags.
    fn unique(flags: u8, pairs: Vec<(String, Value)>) -> NvList {
        let mut l = NvList::with_flags(flags);
        let mut seen = HashSet::new();
        for (n, v) in pairs {
            if flags & FLAG_NO_UNIQUE != 0 || seen.insert(NvList::name_key(flags, &n)) {
                l.push(n, v);
            }
        }
        l
    }

    fn arb_list() -> impl Strategy<Value = NvList> {
        (
            prop_oneof![Just(0u8), Just(FLAG_NO_UNIQUE)],
            prop::collection::vec((arb_name(), arb_value()), 0..8),
        )
            .prop_map(|(f, p)| unique(f, p))
    }

    proptest! {
        #[test]
        fn pack_unpack_round_trip(list in arb_list(), big in any::<bool>()) {
            let endian = if big { Endian::Big } else { Endian::Little };
            let rec = list.pack(endian).unwrap();
            let back = NvList::unpack(&rec).unwrap();
            prop_assert_eq!(&back, &list);
            prop_assert_eq!(back.pack(endian).unwrap(), rec);
        }

        #[test]
        fn every_prefix_and_corruption_is_an_error_not_a_panic(
            list in arb_list(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let rec = list.pack(Endian::Little).unwrap();
            // Every strict prefix is refused (the header's size no longer
            // matches), never decoded as something else.
            for n in 0..rec.len() {
                prop_assert!(NvList::unpack(&rec[..n]).is_err());
            }
            let mut bad = rec.clone();
            let i = at.index(bad.len());
            bad[i] = byte;
            if let Ok(l) = NvList::unpack(&bad) {
                // Whatever decodes re-encodes and decodes to itself.
                let again = l.pack(Endian::Little).unwrap();
                prop_assert_eq!(NvList::unpack(&again).unwrap(), l);
            }
        }
    }
}
