//! The netmap ring logic, on memory shaped like netmap's and nothing else:
//! no ioctls, no descriptors. The kernel's part (txsync, rxsync) comes in
//! through [`Kernel`], so the same code runs against the real device and
//! against an in-process model of it (see `tests/net_netmap.rs`).
//!
//! A [`Region`] is the shared memory; every read and write goes through it
//! and is checked against its length, so a corrupt offset, index or length
//! in memory the kernel (or anyone else with the mapping) controls gives a
//! [`RingError::Corrupt`], never an access outside the region or a panic.
//! A [`Port`] is one bound netmap port: its `netmap_if`, the first TX ring
//! (as bhyve uses) and every NIC RX ring.
//!
//! Ring rules (netmap.h): the application owns the slots `head .. tail-1`
//! and hands them back by moving `head` (and `cur`) forward; the kernel owns
//! the rest and moves `tail` during a sync. One slot always stays with the
//! kernel, so a ring of `num_slots` slots lends at most `num_slots - 1`. A
//! frame longer than a slot spans several, all but the last flagged
//! [`NS_MOREFRAG`].

use std::io::{self, IoSlice, IoSliceMut};
use std::sync::atomic::{fence, Ordering};

use super::region::{corrupt, within};
pub use super::region::{Region, RingError};

use super::abi::{
    IF_HOST_RX_RINGS, IF_HOST_TX_RINGS, IF_RING_OFS, IF_RX_RINGS, IF_TX_RINGS, NETMAP_MAX_FRAGS,
    NS_MOREFRAG, RING_BUF_OFS, RING_BUF_SIZE, RING_CUR, RING_HEAD, RING_NUM_SLOTS, RING_SLOTS,
    RING_TAIL, SLOT_BUF_IDX, SLOT_FLAGS, SLOT_LEN, SLOT_SIZE,
};

/// Most NIC RX rings a port may have (`nr_rx_rings` is a `u16`).
const MAX_RINGS: u32 = u16::MAX as u32;

/// The most bytes one slot carries: `netmap_slot.len` is a `u16`.
const MAX_SLOT_LEN: u32 = u16::MAX as u32;

/// The kernel's side of a port: what the ring logic asks of it.
pub trait Kernel {
    /// `NIOCTXSYNC`: hand the slots before `head` to the kernel and learn
    /// which are free again (the new `tail`).
    fn txsync(&mut self) -> io::Result<()>;
    /// `NIOCRXSYNC`: hand consumed slots back and learn of new frames (the
    /// new `tail`).
    fn rxsync(&mut self) -> io::Result<()>;
}

/// One ring, its constant fields read and checked once.
#[derive(Debug, Clone)]
struct Ring {
    /// "TX ring 0", "RX ring 2".
    label: String,
    /// Offset of the ring in the region.
    ofs: usize,
    num_slots: u32,
    buf_size: u32,
    /// Offset of buffer 0 in the region.
    bufs: usize,
}

/// One slot as read: where its buffer is, its length and flags.
#[derive(Debug, Clone, Copy)]
struct Slot {
    buf: usize,
    len: u32,
    flags: u16,
}

/// The frame at the head of an RX ring.
#[derive(Debug, Clone, Copy)]
struct Frame {
    head: u32,
    slots: u32,
    len: usize,
    /// The slot after its last.
    end: u32,
}

impl Ring {
    fn new(region: &Region, ofs: usize, label: String) -> Result<Ring, RingError> {
        if ofs > region.len() {
            return Err(corrupt(format!(
                "{label}: offset {ofs} lies outside the {}-byte region",
                region.len()
            )));
        }
        let num_slots = region
            .read_u32(ofs + RING_NUM_SLOTS, "num_slots")
            .map_err(within(&label))?;
        let buf_size = region
            .read_u32(ofs + RING_BUF_SIZE, "nr_buf_size")
            .map_err(within(&label))?;
        let buf_ofs = region
            .read_i64(ofs + RING_BUF_OFS, "buf_ofs")
            .map_err(within(&label))?;
        if num_slots == 0 || buf_size == 0 {
            return Err(corrupt(format!(
                "{label}: num_slots {num_slots} and nr_buf_size {buf_size} must not be 0"
            )));
        }
        // The slot array must lie in the region.
        let slots_len = (num_slots as usize).checked_mul(SLOT_SIZE);
        let slots_end = slots_len.and_then(|n| (ofs + RING_SLOTS).checked_add(n));
        if slots_end.is_none_or(|end| end > region.len()) {
            return Err(corrupt(format!(
                "{label}: {num_slots} slots at offset {ofs} run past the {}-byte region",
                region.len()
            )));
        }
        let bufs = i64::try_from(ofs)
            .ok()
            .and_then(|o| o.checked_add(buf_ofs))
            .and_then(|b| usize::try_from(b).ok())
            .filter(|&b| b <= region.len())
            .ok_or_else(|| {
                corrupt(format!(
                    "{label}: buf_ofs {buf_ofs} puts the buffers outside the {}-byte region",
                    region.len()
                ))
            })?;
        Ok(Ring {
            label,
            ofs,
            num_slots,
            buf_size,
            bufs,
        })
    }

    fn index(&self, region: &Region, field: usize, name: &str) -> Result<u32, RingError> {
        let v = region
            .read_u32(self.ofs + field, name)
            .map_err(within(&self.label))?;
        if v >= self.num_slots {
            return Err(corrupt(format!(
                "{}: {name} {v} is beyond num_slots {}",
                self.label, self.num_slots
            )));
        }
        Ok(v)
    }

    fn head(&self, region: &Region) -> Result<u32, RingError> {
        self.index(region, RING_HEAD, "head")
    }

    fn tail(&self, region: &Region) -> Result<u32, RingError> {
        let t = self.index(region, RING_TAIL, "tail")?;
        // What the kernel wrote before it moved tail is read after this.
        fence(Ordering::Acquire);
        Ok(t)
    }

    /// Hands the slots before `i` back: `head = cur = i`.
    fn release(&self, region: &Region, i: u32) -> Result<(), RingError> {
        // Slot contents and buffers are written before the kernel can see
        // the new head.
        fence(Ordering::Release);
        region
            .write_u32(self.ofs + RING_CUR, i, "cur")
            .and_then(|()| region.write_u32(self.ofs + RING_HEAD, i, "head"))
            .map_err(within(&self.label))
    }

    fn next(&self, i: u32) -> u32 {
        if i + 1 >= self.num_slots {
            0
        } else {
            i + 1
        }
    }

    /// Slots from `head` up to `tail`.
    fn space(&self, head: u32, tail: u32) -> u32 {
        if tail >= head {
            tail - head
        } else {
            tail + self.num_slots - head
        }
    }

    /// The most bytes one slot carries.
    fn slot_len(&self) -> u32 {
        self.buf_size.min(MAX_SLOT_LEN)
    }

    fn slot_ofs(&self, i: u32) -> usize {
        // i < num_slots and the array was checked to fit: no overflow.
        self.ofs + RING_SLOTS + i as usize * SLOT_SIZE
    }

    /// Reads slot `i` (< num_slots) and checks its buffer and, if `rx`, its
    /// length.
    fn slot(&self, region: &Region, i: u32, rx: bool) -> Result<Slot, RingError> {
        let s = self.slot_ofs(i);
        let at = || format!("{} slot {i}", self.label);
        let buf_idx = region
            .read_u32(s + SLOT_BUF_IDX, "buf_idx")
            .map_err(|e| within(at())(e))?;
        let len = region
            .read_u16(s + SLOT_LEN, "len")
            .map_err(|e| within(at())(e))?;
        let len = u32::from(len);
        let flags = region
            .read_u16(s + SLOT_FLAGS, "flags")
            .map_err(|e| within(at())(e))?;
        let size = self.buf_size as usize;
        let buf = (buf_idx as usize)
            .checked_mul(size)
            .and_then(|o| o.checked_add(self.bufs))
            .filter(|&b| b.checked_add(size).is_some_and(|end| end <= region.len()))
            .ok_or_else(|| {
                corrupt(format!(
                    "{}: buf_idx: buffer {buf_idx} ({size} bytes) lies outside the {}-byte region",
                    at(),
                    region.len()
                ))
            })?;
        if rx && len > self.buf_size {
            return Err(corrupt(format!(
                "{}: len {len} exceeds nr_buf_size {}",
                at(),
                self.buf_size
            )));
        }
        Ok(Slot { buf, len, flags })
    }

    /// The complete frame at `head`, if there is one.
    fn frame(&self, region: &Region) -> Result<Option<Frame>, RingError> {
        let head = self.head(region)?;
        let tail = self.tail(region)?;
        let avail = self.space(head, tail);
        let mut i = head;
        let mut len = 0usize;
        for n in 1..=avail {
            let s = self.slot(region, i, true)?;
            len += s.len as usize;
            i = self.next(i);
            if s.flags & NS_MOREFRAG == 0 {
                return Ok(Some(Frame {
                    head,
                    slots: n,
                    len,
                    end: i,
                }));
            }
        }
        if avail > 0 && avail + 1 >= self.num_slots {
            return Err(corrupt(format!(
                "{}: a frame continues (NS_MOREFRAG) past all {avail} slots of the ring",
                self.label
            )));
        }
        // Empty, or the kernel has not handed over the frame's last slot.
        Ok(None)
    }
}

/// A bound netmap port: its first TX ring and all its NIC RX rings, in a
/// [`Region`].
#[derive(Debug, Clone)]
pub struct Port {
    region: Region,
    tx: Ring,
    rx: Vec<Ring>,
    /// The RX ring to look at first (round robin).
    next_rx: usize,
}

impl Port {
    /// Reads the `netmap_if` at `nifp` in `region` (the `nr_offset` the
    /// register request returned) and its rings, checking every offset and
    /// count against the region.
    pub fn from_if(region: Region, nifp: usize) -> Result<Port, RingError> {
        if nifp > region.len() {
            return Err(corrupt(format!(
                "netmap_if: offset {nifp} lies outside the {}-byte region",
                region.len()
            )));
        }
        let tx_rings = region.read_u32(nifp + IF_TX_RINGS, "netmap_if: ni_tx_rings")?;
        let rx_rings = region.read_u32(nifp + IF_RX_RINGS, "netmap_if: ni_rx_rings")?;
        let host_tx = region.read_u32(nifp + IF_HOST_TX_RINGS, "netmap_if: ni_host_tx_rings")?;
        let host_rx = region.read_u32(nifp + IF_HOST_RX_RINGS, "netmap_if: ni_host_rx_rings")?;
        for (name, n) in [
            ("ni_tx_rings", tx_rings),
            ("ni_rx_rings", rx_rings),
            ("ni_host_tx_rings", host_tx),
            ("ni_host_rx_rings", host_rx),
        ] {
            if n > MAX_RINGS {
                return Err(corrupt(format!(
                    "netmap_if: {name} {n} exceeds {MAX_RINGS}"
                )));
            }
        }
        if tx_rings == 0 || rx_rings == 0 {
            return Err(corrupt(format!(
                "netmap_if: {tx_rings} TX and {rx_rings} RX rings; at least one of each needed"
            )));
        }
        let ring_at = |k: u32, label: String| -> Result<Ring, RingError> {
            let entry = nifp + IF_RING_OFS + k as usize * 8;
            let rel = region.read_i64(entry, &format!("netmap_if: ring_ofs[{k}]"))?;
            let ofs = i64::try_from(nifp)
                .ok()
                .and_then(|n| n.checked_add(rel))
                .and_then(|o| usize::try_from(o).ok())
                .ok_or_else(|| {
                    corrupt(format!(
                        "netmap_if: ring_ofs[{k}] = {rel} points before the region"
                    ))
                })?;
            Ring::new(&region, ofs, label)
        };
        let tx = ring_at(0, "TX ring 0".to_owned())?;
        let first_rx = tx_rings + host_tx;
        let rx = (0..rx_rings)
            .map(|j| ring_at(first_rx + j, format!("RX ring {j}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Port {
            region,
            tx,
            rx,
            next_rx: 0,
        })
    }

    /// The number of NIC RX rings read.
    pub fn rx_rings(&self) -> usize {
        self.rx.len()
    }

    /// Sends one frame gathered from `iov` on TX ring 0, then txsyncs.
    ///
    /// The frame fills slots of `min(nr_buf_size, 65535)` bytes each, all
    /// but the last flagged `NS_MOREFRAG`, at most `NETMAP_MAX_FRAGS` (64)
    /// of them ([`RingError::FrameTooLong`] beyond). If the ring lacks the slots, a
    /// txsync is tried first; if it still lacks them the frame is dropped
    /// with [`RingError::Full`], and no slot is written. A corrupt slot met
    /// while writing leaves `head` where it was, so no partial frame is
    /// ever handed to the kernel. Returns the frame's length.
    ///
    /// If the txsync after the frame is queued fails, the error is returned
    /// but the frame stays queued: it leaves with the next sync.
    pub fn send<K: Kernel + ?Sized>(
        &mut self,
        k: &mut K,
        iov: &[IoSlice<'_>],
    ) -> Result<usize, RingError> {
        let ring = &self.tx;
        let region = &self.region;
        let len = iov.iter().fold(0usize, |n, s| n.saturating_add(s.len()));
        let slot_len = ring.slot_len() as usize;
        let need = len.div_ceil(slot_len).max(1);
        // VALE sizes its per-frame tables for NETMAP_MAX_FRAGS fragments.
        let capacity = (ring.num_slots as usize - 1).min(NETMAP_MAX_FRAGS);
        if need > capacity {
            return Err(RingError::FrameTooLong {
                len,
                need,
                slot_len,
                capacity,
            });
        }
        let mut head = ring.head(region)?;
        let mut space = ring.space(head, ring.tail(region)?) as usize;
        if space < need {
            k.txsync().map_err(|source| RingError::Sync {
                op: "NIOCTXSYNC",
                source,
            })?;
            head = ring.head(region)?;
            space = ring.space(head, ring.tail(region)?) as usize;
            if space < need {
                return Err(RingError::Full { need, space });
            }
        }

        let mut i = head;
        let mut slot = ring.slot(region, i, false)?;
        let mut filled = 0usize;
        for piece in iov {
            let mut data: &[u8] = piece;
            while !data.is_empty() {
                if filled == slot_len {
                    finish_slot(ring, region, i, filled, NS_MOREFRAG)?;
                    i = ring.next(i);
                    slot = ring.slot(region, i, false)?;
                    filled = 0;
                }
                let n = (slot_len - filled).min(data.len());
                region
                    .write_bytes(slot.buf + filled, &data[..n], "buffer")
                    .map_err(|e| within(format!("{} slot {i}", ring.label))(e))?;
                filled += n;
                data = &data[n..];
            }
        }
        finish_slot(ring, region, i, filled, 0)?;
        ring.release(region, ring.next(i))?;
        k.txsync().map_err(|source| RingError::Sync {
            op: "NIOCTXSYNC",
            source,
        })?;
        Ok(len)
    }

    /// The RX ring and frame `recv` would take next; rxsyncs once if no
    /// ring has a complete frame.
    fn next_frame<K: Kernel + ?Sized>(
        &mut self,
        k: &mut K,
    ) -> Result<Option<(usize, Frame)>, RingError> {
        for attempt in 0..2 {
            let n = self.rx.len();
            for j in 0..n {
                let r = (self.next_rx + j) % n;
                if let Some(f) = self.rx[r].frame(&self.region)? {
                    return Ok(Some((r, f)));
                }
            }
            if attempt == 0 {
                k.rxsync().map_err(|source| RingError::Sync {
                    op: "NIOCRXSYNC",
                    source,
                })?;
            }
        }
        Ok(None)
    }

    /// Receives one frame into `iov` without blocking: `Ok(Some(len))`, or
    /// `Ok(None)` when no complete frame is pending (after one rxsync).
    /// A frame longer than `iov` is not taken: [`RingError::DoesNotFit`]
    /// reports its length and it stays at the head of its ring. Slots are
    /// handed back only for a frame delivered. RX rings are served round
    /// robin.
    pub fn recv<K: Kernel + ?Sized>(
        &mut self,
        k: &mut K,
        iov: &mut [IoSliceMut<'_>],
    ) -> Result<Option<usize>, RingError> {
        let room = iov.iter().fold(0usize, |n, s| n.saturating_add(s.len()));
        let Some((r, f)) = self.next_frame(k)? else {
            return Ok(None);
        };
        if f.len > room {
            return Err(RingError::DoesNotFit { len: f.len, room });
        }
        let ring = &self.rx[r];
        let region = &self.region;
        let mut out = IovCursor::new(iov);
        let mut i = f.head;
        for _ in 0..f.slots {
            // Read again: the checks hold for what is copied, whatever the
            // memory says now. The cursor never writes past `iov`.
            let s = ring.slot(region, i, true)?;
            out.fill_from(region, s.buf, s.len as usize, &ring.label)?;
            i = ring.next(i);
        }
        ring.release(region, f.end)?;
        self.next_rx = (r + 1) % self.rx.len();
        Ok(Some(out.done))
    }

    /// The length of the frame [`recv`](Port::recv) would return next, 0
    /// when none is pending (after one rxsync). Takes nothing.
    pub fn peek<K: Kernel + ?Sized>(&mut self, k: &mut K) -> Result<usize, RingError> {
        Ok(self.next_frame(k)?.map_or(0, |(_, f)| f.len))
    }

    /// Hands the next frame's slots back without copying it. Returns its
    /// length, or `None` when none is pending.
    pub fn discard<K: Kernel + ?Sized>(&mut self, k: &mut K) -> Result<Option<usize>, RingError> {
        let Some((r, f)) = self.next_frame(k)? else {
            return Ok(None);
        };
        self.rx[r].release(&self.region, f.end)?;
        self.next_rx = (r + 1) % self.rx.len();
        Ok(Some(f.len))
    }
}

fn finish_slot(
    ring: &Ring,
    region: &Region,
    i: u32,
    len: usize,
    flags: u16,
) -> Result<(), RingError> {
    let s = ring.slot_ofs(i);
    // len <= slot_len <= 65535.
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    region
        .write_u16(s + SLOT_LEN, len, "len")
        .and_then(|()| region.write_u16(s + SLOT_FLAGS, flags, "flags"))
        .map_err(|e| within(format!("{} slot {i}", ring.label))(e))
}

/// Where the next received byte goes in an iovec list.
struct IovCursor<'a, 'b> {
    iov: &'a mut [IoSliceMut<'b>],
    idx: usize,
    off: usize,
    done: usize,
}

impl<'a, 'b> IovCursor<'a, 'b> {
    fn new(iov: &'a mut [IoSliceMut<'b>]) -> Self {
        IovCursor {
            iov,
            idx: 0,
            off: 0,
            done: 0,
        }
    }

    /// Copies `len` bytes at `src` in the region into the iovecs, as many
    /// as fit.
    fn fill_from(
        &mut self,
        region: &Region,
        mut src: usize,
        mut len: usize,
        label: &str,
    ) -> Result<(), RingError> {
        while len > 0 && self.idx < self.iov.len() {
            let dst = &mut self.iov[self.idx][self.off..];
            let n = dst.len().min(len);
            region.read_bytes(src, &mut dst[..n], label)?;
            src += n;
            len -= n;
            self.off += n;
            self.done += n;
            if self.off == self.iov[self.idx].len() {
                self.idx += 1;
                self.off = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::NonNull;

    /// A region on the heap, 8-aligned, for quick checks of the bounds
    /// logic (the shared-memory model is in tests/net_netmap.rs).
    fn heap(len_words: usize) -> (Vec<u64>, Region) {
        let mut v = vec![0u64; len_words];
        let p = NonNull::new(v.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the Vec outlives every use of the region in these tests
        // and is never reallocated.
        let r = unsafe { Region::new(p, len_words * 8) };
        (v, r)
    }

    #[test]
    fn region_refuses_out_of_bounds_and_misaligned() {
        let (_v, r) = heap(4);
        assert_eq!(r.len(), 32);
        r.write_u32(28, 7, "x").unwrap();
        assert_eq!(r.read_u32(28, "x").unwrap(), 7);
        assert!(matches!(r.read_u32(29, "x"), Err(RingError::Corrupt(_))));
        assert!(matches!(r.read_u32(30, "x"), Err(RingError::Corrupt(_))));
        assert!(matches!(r.read_u32(32, "x"), Err(RingError::Corrupt(_))));
        assert!(matches!(
            r.read_i64(usize::MAX - 3, "x"),
            Err(RingError::Corrupt(_))
        ));
        let mut big = [0u8; 33];
        assert!(r.read_bytes(0, &mut big, "x").is_err());
        assert!(r.write_bytes(31, &[1, 2], "x").is_err());
        r.write_bytes(30, &[1, 2], "x").unwrap();
    }

    #[test]
    fn errors_map_to_io_kinds() {
        let k = |e: RingError| io::Error::from(e).kind();
        assert_eq!(
            k(RingError::Full { need: 2, space: 1 }),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(
            k(RingError::DoesNotFit { len: 2, room: 1 }),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            k(RingError::Corrupt("x".into())),
            io::ErrorKind::InvalidData
        );
    }
}
