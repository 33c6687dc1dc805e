//! Walking the two virtio-net rings in the guest's memory, which is
//! hostile input: every descriptor's address and length goes through
//! vm-memory (`read_slice`/`write_slice` refuse anything outside the
//! mapped regions), chains are bounded, and a malformed ring is a
//! [`RingError`] that ends the connection, never a crash.
//!
//! Transmit (guest to us): each chain is a virtio-net header (12 bytes with
//! VERSION_1) and an Ethernet frame; [`drain_tx`] strips the header,
//! finishes a partial checksum (`offload::finish`) and hands the frame, or
//! a TCP super-segment, on. Receive (us to the guest): [`fill_rx`]
//! writes queued records (header, then frame) into as many buffers as
//! they need, setting `num_buffers` (MRG_RXBUF).

use std::fmt;
use std::io::Write;

use caploop::frame::queue::FrameQueue;
use caploop::net::offload::{self, Offloaded, Partial, VNET_HDR_SIZE};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::device::{Vring, RX, TX};

/// The largest frame a transmit chain may carry, header included: a 64 KiB
/// super-segment, its Ethernet header and the virtio-net header.
pub const MAX_TX: usize = 65536 + 14 + 12;
/// Descriptors one receive record may take at most (a 64 KiB frame in
/// page-sized buffers, with room).
const MAX_RX_BUFFERS: usize = 64;

/// A ring broke the rules; the connection ends with it.
#[derive(Debug)]
pub struct RingError(pub String);

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(ring: usize, what: impl fmt::Display) -> RingError {
    let name = if ring == RX { "receive" } else { "transmit" };
    RingError(format!("{name} ring: {what}"))
}

/// Counts of the transmit side.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxStats {
    /// Frames whose header could not be honoured (dropped).
    pub bad_frames: u64,
}

/// Signals the ring's call eventfd if the driver wants to hear of new used
/// buffers now (event index honoured by `needs_notification`).
fn notify(ring: usize, v: &mut Vring, mem: &GuestMemoryMmap) -> Result<(), RingError> {
    if !v.queue.needs_notification(mem).map_err(|e| bad(ring, e))? {
        return Ok(());
    }
    signal(ring, v)
}

/// Writes the ring's call eventfd.
fn signal(ring: usize, v: &mut Vring) -> Result<(), RingError> {
    if let Some(call) = v.call.as_mut() {
        // An eventfd adds the value; a full counter (EAGAIN) is still
        // signalled.
        if let Err(e) = call.write(&1u64.to_ne_bytes()) {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(bad(ring, format_args!("signalling its call eventfd: {e}")));
            }
        }
    }
    Ok(())
}

/// The available index must not run ahead of the used one by more than
/// the ring holds; `pop_descriptor_chain` alone would only log it.
fn check_avail(ring: usize, v: &mut Vring, mem: &GuestMemoryMmap) -> Result<(), RingError> {
    v.queue.iter(mem).map(drop).map_err(|e| bad(ring, e))
}

/// Where [`drain_tx`] hands each frame.
pub type Deliver<'a> = dyn FnMut(&mut [u8], Offloaded, Option<Partial>) + 'a;

/// Reads every frame the guest made available on the transmit ring into
/// `buf` in turn and hands it to `deliver` (the Ethernet frame, whether
/// it is a TCP super-segment, and its checksum if the guest left it
/// partial and it is large: `offload::unwrap_record_lazily`); `hdr_len`
/// is the virtio-net header's length.
pub fn drain_tx(
    v: &mut Vring,
    mem: &GuestMemoryMmap,
    hdr_len: usize,
    buf: &mut Vec<u8>,
    stats: &mut TxStats,
    deliver: &mut Deliver<'_>,
) -> Result<(), RingError> {
    if !v.live() {
        return Ok(());
    }
    loop {
        check_avail(TX, v, mem)?;
        while let Some(chain) = v.queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            buf.clear();
            for desc in chain {
                if desc.is_write_only() {
                    return Err(bad(TX, "a descriptor is write-only"));
                }
                let len = desc.len() as usize;
                let at = buf.len();
                if at + len > MAX_TX {
                    return Err(bad(
                        TX,
                        format_args!("a chain is longer than {MAX_TX} bytes"),
                    ));
                }
                buf.resize(at + len, 0);
                mem.read_slice(&mut buf[at..], desc.addr()).map_err(|e| {
                    bad(TX, format_args!("descriptor at {:#x}: {e}", desc.addr().0))
                })?;
            }
            v.queue.add_used(mem, head, 0).map_err(|e| bad(TX, e))?;
            frame_in(buf, hdr_len, stats, deliver);
        }
        // Ask for a kick at the next buffer; if one came meanwhile, go on.
        if !v.queue.enable_notification(mem).map_err(|e| bad(TX, e))? {
            break;
        }
    }
    notify(TX, v, mem)
}

/// One transmitted chain's bytes: header, then frame.
fn frame_in(buf: &mut [u8], hdr_len: usize, stats: &mut TxStats, deliver: &mut Deliver<'_>) {
    if buf.len() < hdr_len + 14 {
        stats.bad_frames += 1;
        return;
    }
    match offload::unwrap_record_lazily(buf, hdr_len) {
        Ok((kind, partial, frame)) => deliver(frame, kind, partial),
        Err(e) => {
            stats.bad_frames += 1;
            log::debug!("vhost-user: a transmitted frame: {e}");
        }
    }
}

/// How many times one [`fill_rx`] looks again after the guest added
/// buffers while it was giving up (a guest racing it forever must not keep
/// the loop here).
const MAX_RX_RETRIES: u32 = 8;

/// Out of receive buffers for the next record: asks for a kick at the
/// guest's next added buffer (with the event index, `avail_event` is set
/// to the guest's current index, not to the device's position, which buffers
/// just given back may leave behind it, where no kick would come), and
/// says whether buffers were added meanwhile.
fn want_kick(v: &mut Vring, mem: &GuestMemoryMmap) -> Result<bool, RingError> {
    let now = v
        .queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .map_err(|e| bad(RX, e))?;
    let keep = v.queue.next_avail();
    v.queue.set_next_avail(now.0);
    let added = v.queue.enable_notification(mem).map_err(|e| bad(RX, e));
    v.queue.set_next_avail(keep);
    added
}

/// What [`fill_rx`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Records written.
    pub frames: u64,
    /// Their bytes, headers left out.
    pub bytes: u64,
    /// Records dropped: larger than every buffer the guest offers.
    pub dropped: u64,
}

/// Writes records from `outbox` into the receive ring until it is empty
/// or the ring has no room. Each record is a 10-byte virtio-net header
/// (as `offload::Coalescer` makes them) then the frame; it goes to the
/// guest behind a `hdr_len`-byte header, the negotiated one at the time
/// it is written (12: `num_buffers` added). `mrg`: MRG_RXBUF was
/// accepted, so one record may take several buffers.
pub fn fill_rx(
    v: &mut Vring,
    mem: &GuestMemoryMmap,
    hdr_len: usize,
    mrg: bool,
    outbox: &mut FrameQueue,
) -> Result<Filled, RingError> {
    let mut done = Filled::default();
    if !v.live() || outbox.is_empty() {
        return Ok(done);
    }
    let mut chains: Vec<(u16, Vec<(GuestAddress, usize)>)> = Vec::new();
    let mut retries = 0;
    let first_used = v.queue.next_used();
    'records: while let Some(rec) = outbox.front() {
        if rec.len() < VNET_HDR_SIZE || !(VNET_HDR_SIZE..=12).contains(&hdr_len) {
            outbox.pop_front();
            done.dropped += 1;
            continue;
        }
        chains.clear();
        let need = rec.len() - VNET_HDR_SIZE + hdr_len;
        let mut room = 0usize;
        check_avail(RX, v, mem)?;
        while room < need {
            let Some(chain) = v.queue.pop_descriptor_chain(mem) else {
                if chains.len() >= usize::from(v.queue.size()) {
                    // The whole ring cannot hold it: dropped below.
                    break;
                }
                // Out of buffers: give back what was taken, and ask for a
                // kick when the guest adds some (or go on if it just did).
                for _ in 0..chains.len() {
                    v.queue.go_to_previous_position();
                }
                retries += 1;
                if retries <= MAX_RX_RETRIES && want_kick(v, mem)? {
                    continue 'records;
                }
                break 'records;
            };
            let head = chain.head_index();
            let mut segs = Vec::new();
            for desc in chain {
                if !desc.is_write_only() {
                    return Err(bad(RX, "a descriptor is not writable"));
                }
                segs.push((desc.addr(), desc.len() as usize));
                room = room.saturating_add(desc.len() as usize);
            }
            chains.push((head, segs));
            if !mrg || chains.len() >= MAX_RX_BUFFERS {
                break;
            }
        }
        if room < need {
            // Larger than what the guest offers for one frame: the buffers
            // go back used and empty, the record is dropped.
            for &(head, _) in &chains {
                v.queue.add_used(mem, head, 0).map_err(|e| bad(RX, e))?;
            }
            outbox.pop_front();
            done.dropped += 1;
            continue;
        }
        // The header as negotiated, `num_buffers` in it, then the frame.
        let mut hdr = [0u8; 12];
        hdr[..VNET_HDR_SIZE].copy_from_slice(&rec[..VNET_HDR_SIZE]);
        hdr[10..12].copy_from_slice(&(chains.len() as u16).to_le_bytes());
        let mut src = Gather::new([&hdr[..hdr_len], &rec[VNET_HDR_SIZE..]]);
        let mut used = Vec::with_capacity(chains.len());
        for (head, segs) in &chains {
            let mut written = 0u32;
            for &(addr, len) in segs {
                written += src.write_into(mem, addr, len)?;
            }
            used.push((*head, written));
        }
        publish(v, mem, &used)?;
        done.frames += 1;
        done.bytes += (need - hdr_len) as u64;
        outbox.pop_front();
    }
    if done.frames + done.dropped > 0 {
        notify_since(RX, v, mem, first_used)?;
    }
    Ok(done)
}

/// Bytes from two slices in turn, written across descriptors.
struct Gather<'a> {
    parts: [&'a [u8]; 2],
    at: usize,
}

impl<'a> Gather<'a> {
    fn new(parts: [&'a [u8]; 2]) -> Gather<'a> {
        Gather { parts, at: 0 }
    }

    /// Writes up to `len` of the bytes left at `addr`; how many.
    fn write_into(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
    ) -> Result<u32, RingError> {
        let mut done = 0;
        while done < len && self.at < 2 {
            let part = self.parts[self.at];
            let n = part.len().min(len - done);
            let to = addr
                .checked_add(done as u64)
                .ok_or_else(|| bad(RX, "a descriptor wraps the address space"))?;
            mem.write_slice(&part[..n], to)
                .map_err(|e| bad(RX, format_args!("descriptor at {:#x}: {e}", to.0)))?;
            done += n;
            self.parts[self.at] = &part[n..];
            if self.parts[self.at].is_empty() {
                self.at += 1;
            }
        }
        Ok(done as u32)
    }
}

/// Puts one record's buffers in the used ring and only then publishes the
/// used index, once for all of them: the guest reads `num_buffers` in the
/// first buffer and takes the next ones at once, so they must all be
/// there when it sees the first (published one by one, a guest polling
/// meanwhile found some missing and dropped the frame as too short).
fn publish(v: &mut Vring, mem: &GuestMemoryMmap, used: &[(u16, u32)]) -> Result<(), RingError> {
    let Some((&(last_head, last_len), rest)) = used.split_last() else {
        return Ok(());
    };
    let size = v.queue.size();
    let first = v.queue.next_used();
    for (j, &(head, len)) in rest.iter().enumerate() {
        let slot = u64::from(first.wrapping_add(j as u16) % size);
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        let addr = GuestAddress(v.queue.used_ring())
            .checked_add(4 + 8 * slot)
            .ok_or_else(|| bad(RX, "the used ring wraps the address space"))?;
        mem.write_slice(&elem, addr)
            .map_err(|e| bad(RX, format_args!("used ring at {:#x}: {e}", addr.0)))?;
    }
    v.queue.set_next_used(first.wrapping_add(rest.len() as u16));
    // Writes the last element, then the index (a release store).
    v.queue
        .add_used(mem, last_head, last_len)
        .map_err(|e| bad(RX, e))
}

/// Signals the receive ring's call eventfd if the driver asked to hear of
/// a used index in (`old`, now] (event index), or always without it. Done
/// here rather than by `needs_notification`, which counts `add_used`
/// calls, fewer than the buffers [`publish`] adds.
fn notify_since(
    ring: usize,
    v: &mut Vring,
    mem: &GuestMemoryMmap,
    old: u16,
) -> Result<(), RingError> {
    let new = v.queue.next_used();
    let wanted = if v.queue.event_idx_enabled() {
        // The used index is published before the driver's event is read.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let at = GuestAddress(v.queue.avail_ring())
            .checked_add(4 + 2 * u64::from(v.queue.size()))
            .ok_or_else(|| bad(ring, "the avail ring wraps the address space"))?;
        let used_event: u16 = mem
            .read_obj(at)
            .map_err(|e| bad(ring, format_args!("used_event at {:#x}: {e}", at.0)))?;
        new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        true
    };
    if wanted {
        signal(ring, v)?;
    }
    Ok(())
}
