//! The netmap shared memory as a bounds-checked [`Region`], and the
//! errors a corrupt ring gives ([`RingError`]): every read and write is
//! checked against the region's length and alignment, so memory the kernel
//! (or anyone else with the mapping) controls can give an error, never an
//! access outside the region or a panic.

use std::io;
use std::ptr::NonNull;

/// What went wrong on a ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The shared memory holds something impossible: an offset, index or
    /// length outside the region or the ring. Nothing was read or written
    /// out of bounds.
    #[error("netmap shared memory is corrupt: {0}")]
    Corrupt(String),
    /// Not enough free TX slots for the frame, even after a txsync. The
    /// frame was dropped; no slot was written (bhyve drops too).
    #[error("netmap TX ring full: the frame needs {need} slots, {space} are free; it was dropped")]
    Full {
        /// Slots the frame needs.
        need: usize,
        /// Slots free.
        space: usize,
    },
    /// The frame needs more slots than a frame may take on the TX ring:
    /// all but one of its slots, and at most `NETMAP_MAX_FRAGS` (64).
    #[error(
        "a {len}-byte frame needs {need} slots of {slot_len} bytes, more than the \
         {capacity} a frame may take on this TX ring"
    )]
    FrameTooLong {
        /// Frame length.
        len: usize,
        /// Slots it needs.
        need: usize,
        /// Bytes per slot.
        slot_len: usize,
        /// Slots a frame may take at most.
        capacity: usize,
    },
    /// The next received frame is longer than the buffers given. It stays
    /// in the ring; [`Port::peek`](super::ring::Port::peek) tells its length.
    #[error("a {len}-byte frame does not fit in {room} bytes of buffers; it stays in the ring")]
    DoesNotFit {
        /// The frame's length.
        len: usize,
        /// The room the buffers had.
        room: usize,
    },
    /// txsync or rxsync failed.
    #[error("{op} failed: {source}")]
    Sync {
        /// `NIOCTXSYNC` or `NIOCRXSYNC`.
        op: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

impl From<RingError> for io::Error {
    /// `Full` is `WouldBlock` (the trait's "full transmit queue"); frames
    /// too long for the ring or the buffers are `InvalidInput`; corruption
    /// is `InvalidData`; a failed sync keeps the kernel's kind.
    fn from(e: RingError) -> io::Error {
        let kind = match &e {
            RingError::Corrupt(_) => io::ErrorKind::InvalidData,
            RingError::Full { .. } => io::ErrorKind::WouldBlock,
            RingError::FrameTooLong { .. } | RingError::DoesNotFit { .. } => {
                io::ErrorKind::InvalidInput
            }
            RingError::Sync { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

pub(super) fn corrupt(msg: String) -> RingError {
    RingError::Corrupt(msg)
}

/// Puts `prefix` before a corruption message (on the error path only, so
/// the hot path formats nothing).
pub(super) fn within(prefix: impl std::fmt::Display) -> impl FnOnce(RingError) -> RingError {
    move |e| match e {
        RingError::Corrupt(msg) => RingError::Corrupt(format!("{prefix}: {msg}")),
        other => other,
    }
}

/// A shared-memory region: a base address and a length. Copies are cheap
/// and share the memory.
///
/// Every access is bounds-checked against the length and alignment-checked,
/// and goes through volatile reads and writes (fields) or byte copies
/// (buffers), because the memory is not this process's alone.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

impl Region {
    /// A region of `len` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base .. base + len` must be mapped, readable and writable, and
    /// stay so for as long as this region, a copy of it or a [`Port`](super::ring::Port) built
    /// on it is used. Other mappings of the same memory (the kernel's) may
    /// change it between calls; no Rust reference into it is ever made.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Region {
        Region { base, len }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of `off .. off + n`, if that lies within the region and
    /// is aligned to `align`.
    fn at(&self, off: usize, n: usize, align: usize, what: &str) -> Result<*mut u8, RingError> {
        match off.checked_add(n) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(corrupt(format!(
                    "{what}: bytes {off}..{off}+{n} lie outside the {}-byte region",
                    self.len
                )))
            }
        }
        // SAFETY: `off + n <= len`, so the offset stays within the mapping
        // the caller of `new` vouched for.
        let p = unsafe { self.base.as_ptr().add(off) };
        if !(p as usize).is_multiple_of(align) {
            return Err(corrupt(format!(
                "{what}: offset {off} is not {align}-byte aligned"
            )));
        }
        Ok(p)
    }

    /// Reads a `u16` at `off`.
    pub fn read_u16(&self, off: usize, what: &str) -> Result<u16, RingError> {
        let p = self.at(off, 2, 2, what)?;
        // SAFETY: `at` checked that the two bytes are inside the region and
        // aligned; the region is readable (`new`'s contract).
        Ok(unsafe { p.cast::<u16>().read_volatile() })
    }

    /// Reads a `u32` at `off`.
    pub fn read_u32(&self, off: usize, what: &str) -> Result<u32, RingError> {
        let p = self.at(off, 4, 4, what)?;
        // SAFETY: in bounds and aligned (`at`), readable (`new`).
        Ok(unsafe { p.cast::<u32>().read_volatile() })
    }

    /// Reads an `i64` at `off`.
    pub fn read_i64(&self, off: usize, what: &str) -> Result<i64, RingError> {
        let p = self.at(off, 8, 8, what)?;
        // SAFETY: in bounds and aligned (`at`), readable (`new`).
        Ok(unsafe { p.cast::<i64>().read_volatile() })
    }

    /// Writes a `u16` at `off`.
    pub fn write_u16(&self, off: usize, v: u16, what: &str) -> Result<(), RingError> {
        let p = self.at(off, 2, 2, what)?;
        // SAFETY: in bounds and aligned (`at`), writable (`new`).
        unsafe { p.cast::<u16>().write_volatile(v) };
        Ok(())
    }

    /// Writes a `u32` at `off`.
    pub fn write_u32(&self, off: usize, v: u32, what: &str) -> Result<(), RingError> {
        let p = self.at(off, 4, 4, what)?;
        // SAFETY: in bounds and aligned (`at`), writable (`new`).
        unsafe { p.cast::<u32>().write_volatile(v) };
        Ok(())
    }

    /// Writes an `i64` at `off`.
    pub fn write_i64(&self, off: usize, v: i64, what: &str) -> Result<(), RingError> {
        let p = self.at(off, 8, 8, what)?;
        // SAFETY: in bounds and aligned (`at`), writable (`new`).
        unsafe { p.cast::<i64>().write_volatile(v) };
        Ok(())
    }

    /// Copies `dst.len()` bytes from `off` into `dst`.
    pub fn read_bytes(&self, off: usize, dst: &mut [u8], what: &str) -> Result<(), RingError> {
        let p = self.at(off, dst.len(), 1, what)?;
        // SAFETY: the source range is inside the readable region (`at`,
        // `new`); `dst` is a distinct Rust buffer of exactly that length, so
        // the two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(p.cast_const(), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the region at `off`.
    pub fn write_bytes(&self, off: usize, src: &[u8], what: &str) -> Result<(), RingError> {
        let p = self.at(off, src.len(), 1, what)?;
        // SAFETY: the destination range is inside the writable region
        // (`at`, `new`); `src` is a distinct Rust buffer, so they cannot
        // overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }
}
