//! What can go wrong decoding ([`NvError`]) or encoding ([`PackError`]) a
//! packed nvlist, each naming the offset, pair or value at fault.

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
    /// Nesting deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
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
    /// A name occurs twice in a list without [`FLAG_NO_UNIQUE`](super::FLAG_NO_UNIQUE).
    #[error("nvpair {name:?}: duplicate name in a list without NV_FLAG_NO_UNIQUE")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`](super::MAX_DEPTH) (the decoder would refuse it).
    #[error("nvpair {name:?}: nesting deeper than {max} levels")]
    TooDeep {
        /// The pair's name.
        name: String,
        /// The limit.
        max: usize,
    },
}
