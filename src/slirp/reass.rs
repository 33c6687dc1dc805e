//! IPv4 reassembly in front of libslirp.
//!
//! libslirp 4.7.0's own reassembly (`ip_reass` in `ip_input.c`) type-puns
//! its queue head (`struct ipq`) and its fragments (`struct ipasfrag`);
//! GCC 12 at `-O2` (Debian's build) then reads the queue's first link before
//! the store that inserted the fragment, so a fragment that *starts* a
//! queue looks like a complete datagram. When that fragment is a last one
//! (MF clear, offset > 0: alone, out of order, or repeated) libslirp
//! concatenates an empty queue and dereferences a null link: one guest frame
//! crashes it (SIGBUS or SIGSEGV). Fixed upstream in 4.8.0 ("ip: Enforce
//! strict aliasing", 26be815b). So caploop reassembles IPv4 itself and hands
//! libslirp only whole datagrams: no frame a guest can send reaches
//! `ip_reass`.
//!
//! Bounded on purpose: at most [`MAX_DATAGRAMS`] datagrams in progress,
//! [`MAX_BYTES`] buffered, [`MAX_PIECES`] separate pieces per datagram,
//! [`TIMEOUT`] to complete (libslirp's own is 30 s). Overlapping fragments
//! drop their datagram (an exact duplicate is ignored); a datagram longer
//! than 65,535 bytes is dropped.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Datagrams being reassembled at once; more fragments that would start
/// another are dropped.
pub const MAX_DATAGRAMS: usize = 64;
/// Payload bytes buffered across all datagrams in progress.
pub const MAX_BYTES: usize = 1 << 20;
/// Separate (not yet adjacent) pieces one datagram may have.
pub const MAX_PIECES: usize = 64;
/// How long a datagram may take to arrive whole.
pub const TIMEOUT: Duration = Duration::from_secs(30);

use crate::frame::ethernet::{Ethernet, ETHERTYPE_IPV4};
use crate::frame::ipv4::{Ipv4, MF, OFFSET_MASK};
use crate::frame::ETH_HLEN;
/// The largest IPv4 datagram.
const IP_MAXPACKET: usize = 65_535;

/// What became of a frame given to [`Reassembler::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not an IPv4 fragment: pass it on as it is.
    Pass,
    /// A fragment, kept until its datagram is whole.
    Held,
    /// The fragment completed its datagram: this Ethernet frame carries it
    /// whole (the first fragment's Ethernet and IP headers, offset and MF
    /// cleared, length and checksum fixed).
    Complete(Vec<u8>),
    /// The fragment was dropped.
    Dropped(DropReason),
}

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its IPv4 header is malformed (length, version, checksum).
    Malformed,
    /// A fragment with MF set whose length is not a multiple of 8, or an
    /// empty fragment.
    BadLength,
    /// It would make the datagram longer than 65,535 bytes.
    TooLong,
    /// It overlaps data already received, or contradicts the datagram's
    /// known end: the whole datagram is dropped.
    Overlap,
    /// Too many datagrams, bytes or pieces in progress.
    Full,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Malformed => "malformed IPv4 header",
            DropReason::BadLength => "fragment length not a multiple of 8",
            DropReason::TooLong => "datagram longer than 65535 bytes",
            DropReason::Overlap => "overlapping fragments (datagram dropped)",
            DropReason::Full => "reassembly table full",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    proto: u8,
}

/// One datagram in progress.
struct Datagram {
    key: Key,
    started: Instant,
    /// The first fragment's Ethernet and IP headers, once it arrived.
    head: Option<Vec<u8>>,
    /// Payload bytes at their offsets (holes are zero).
    data: Vec<u8>,
    /// Received byte ranges, sorted, merged when adjacent.
    have: Vec<(usize, usize)>,
    /// The payload length, once the last fragment arrived.
    total: Option<usize>,
}

impl Datagram {
    fn complete(&self) -> bool {
        self.head.is_some()
            && self
                .total
                .is_some_and(|t| self.have.len() == 1 && self.have[0] == (0, t))
    }

    /// Records `[start, end)`. `Ok(false)`: an exact duplicate, ignored.
    fn insert(&mut self, start: usize, end: usize) -> Result<bool, DropReason> {
        if self.have.contains(&(start, end)) {
            return Ok(false);
        }
        if self.have.iter().any(|&(s, e)| start < e && s < end) {
            return Err(DropReason::Overlap);
        }
        let at = self.have.partition_point(|&(s, _)| s < start);
        self.have.insert(at, (start, end));
        // Merge with the neighbours it touches.
        if at + 1 < self.have.len() && self.have[at].1 == self.have[at + 1].0 {
            self.have[at].1 = self.have[at + 1].1;
            self.have.remove(at + 1);
        }
        if at > 0 && self.have[at - 1].1 == self.have[at].0 {
            self.have[at - 1].1 = self.have[at].1;
            self.have.remove(at);
        }
        if self.have.len() > MAX_PIECES {
            return Err(DropReason::Full);
        }
        Ok(true)
    }
}

/// IPv4 reassembly for one guest's frames. See the [module docs](self).
#[derive(Default)]
pub struct Reassembler {
    datagrams: Vec<Datagram>,
    bytes: usize,
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("datagrams", &self.datagrams.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Whether `frame` is an IPv4 fragment (MF set or a non-zero offset), by
/// its Ethernet type and IPv4 flags alone (the rest of the header is
/// checked when it is taken).
pub fn is_fragment(frame: &[u8]) -> bool {
    Ethernet::new_checked(frame).is_ok_and(|eth| {
        eth.ethertype() == ETHERTYPE_IPV4
            && Ipv4::new_header(eth.payload()).is_ok_and(|ip| ip.is_fragment())
    })
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Datagrams in progress.
    pub fn pending(&self) -> usize {
        self.datagrams.len()
    }

    /// Takes one Ethernet frame from the guest at time `now`.
    pub fn push(&mut self, frame: &[u8], now: Instant) -> Verdict {
        if !is_fragment(frame) {
            return Verdict::Pass;
        }
        self.expire(now);
        let Ok(ip) = Ipv4::new_checked(&frame[ETH_HLEN..]) else {
            return Verdict::Dropped(DropReason::Malformed);
        };
        if !ip.checksum_ok() {
            return Verdict::Dropped(DropReason::Malformed);
        }
        let hlen = ip.header_len();
        let off = ip.flags_offset();
        let more = off & MF != 0;
        let start = usize::from(off & OFFSET_MASK) * 8;
        let payload = ip.into_payload();
        let end = start + payload.len();
        if payload.is_empty() || (more && payload.len() % 8 != 0) {
            return Verdict::Dropped(DropReason::BadLength);
        }
        if end + hlen > IP_MAXPACKET {
            return Verdict::Dropped(DropReason::TooLong);
        }
        let key = Key {
            src: Ipv4Addr::from(ip.src()),
            dst: Ipv4Addr::from(ip.dst()),
            id: ip.ident(),
            proto: ip.protocol(),
        };
        let i = match self.datagrams.iter().position(|d| d.key == key) {
            Some(i) => i,
            None => {
                if self.datagrams.len() >= MAX_DATAGRAMS {
                    return Verdict::Dropped(DropReason::Full);
                }
                self.datagrams.push(Datagram {
                    key,
                    started: now,
                    head: None,
                    data: Vec::new(),
                    have: Vec::new(),
                    total: None,
                });
                self.datagrams.len() - 1
            }
        };
        match self.add(i, frame, hlen, start, end, more, payload) {
            Ok(true) if self.datagrams[i].complete() => Verdict::Complete(self.finish(i)),
            Ok(_) => Verdict::Held,
            Err(why) => {
                self.remove(i);
                Verdict::Dropped(why)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        i: usize,
        frame: &[u8],
        hlen: usize,
        start: usize,
        end: usize,
        more: bool,
        payload: &[u8],
    ) -> Result<bool, DropReason> {
        let d = &mut self.datagrams[i];
        match (more, d.total) {
            (false, Some(t)) if t != end => return Err(DropReason::Overlap),
            (false, None) if d.have.last().is_some_and(|&(_, e)| e > end) => {
                return Err(DropReason::Overlap)
            }
            (true, Some(t)) if end > t => return Err(DropReason::Overlap),
            _ => {}
        }
        if !d.insert(start, end)? {
            return Ok(false);
        }
        if !more {
            d.total = Some(end);
        }
        let grow = end.saturating_sub(d.data.len());
        if self.bytes + grow > MAX_BYTES {
            return Err(DropReason::Full);
        }
        if grow > 0 {
            d.data.resize(end, 0);
            self.bytes += grow;
        }
        d.data[start..end].copy_from_slice(payload);
        if start == 0 {
            d.head = Some(frame[..ETH_HLEN + hlen].to_vec());
        }
        Ok(true)
    }

    /// The whole datagram `i` as one frame; removes it.
    fn finish(&mut self, i: usize) -> Vec<u8> {
        let d = self.remove(i);
        let head = d.head.expect("complete");
        let total = d.total.expect("complete");
        let hlen = head.len() - ETH_HLEN;
        let mut frame = Vec::with_capacity(head.len() + total);
        frame.extend_from_slice(&head);
        frame.extend_from_slice(&d.data[..total]);
        // The first fragment's header, whose view was checked on arrival.
        let mut ip = Ipv4::new_header(&mut frame[ETH_HLEN..]).expect("a checked header");
        ip.set_total_len((hlen + total) as u16);
        ip.set_flags_offset(0);
        ip.fill_checksum();
        frame
    }

    fn remove(&mut self, i: usize) -> Datagram {
        let d = self.datagrams.swap_remove(i);
        self.bytes -= d.data.len();
        d
    }

    /// Drops datagrams older than [`TIMEOUT`].
    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.datagrams.len() {
            if now.saturating_duration_since(self.datagrams[i].started) > TIMEOUT {
                let d = self.remove(i);
                log::debug!(
                    "slirp: IPv4 datagram {} from {} to {} not whole after {TIMEOUT:?}: dropped",
                    d.key.id,
                    d.key.src,
                    d.key.dst
                );
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with an IPv4 UDP-protocol fragment of `payload` at
    /// byte offset `off`, MF as given, id `id`.
    fn frag(id: u16, off: usize, more: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            0x52, 0x55, 10, 0, 2, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 8, 0,
        ];
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2,
        ];
        ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        let flags = (off / 8) as u16 | if more { MF } else { 0 };
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        Ipv4::new_header(&mut ip[..]).unwrap().fill_checksum();
        f.extend_from_slice(&ip);
        f.extend_from_slice(payload);
        f
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn whole(verdict: Verdict) -> Vec<u8> {
        match verdict {
            Verdict::Complete(f) => f,
            other => panic!("not complete: {other:?}"),
        }
    }

    fn check_whole(frame: &[u8], payload: &[u8]) {
        let ip = &frame[14..];
        assert_eq!(&ip[20..], payload);
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            20 + payload.len()
        );
        assert_eq!(&ip[6..8], &[0, 0], "offset and MF cleared");
        assert!(
            Ipv4::new_checked(ip).unwrap().checksum_ok(),
            "header checksum"
        );
        assert!(!is_fragment(frame));
    }

    #[test]
    fn whole_datagrams_pass() {
        let mut r = Reassembler::new();
        let mut f = frag(1, 0, false, &data(100));
        assert_eq!(r.push(&f, Instant::now()), Verdict::Pass);
        // DF alone, or the reserved bit alone, is not a fragment.
        f[14 + 6] = 0x40;
        assert_eq!(r.push(&f, Instant::now()), Verdict::Pass);
        f[14 + 6] = 0x80;
        assert_eq!(r.push(&f, Instant::now()), Verdict::Pass);
        assert_eq!(r.push(&[0u8; 20], Instant::now()), Verdict::Pass);
    }

    #[test]
    fn in_order_and_out_of_order() {
        let payload = data(4008);
        let pieces: Vec<(usize, usize)> = vec![(0, 1480), (1480, 2960), (2960, 4008)];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let mut r = Reassembler::new();
            let now = Instant::now();
            let mut out = None;
            for (n, &k) in order.iter().enumerate() {
                let (s, e) = pieces[k];
                let v = r.push(&frag(9, s, e != 4008, &payload[s..e]), now);
                if n == 2 {
                    out = Some(whole(v));
                } else {
                    assert_eq!(v, Verdict::Held, "{order:?} piece {k}");
                }
            }
            check_whole(&out.unwrap(), &payload);
            assert_eq!(r.pending(), 0);
            assert_eq!(r.bytes, 0);
        }
    }

    #[test]
    fn the_frame_that_crashes_libslirp_is_held_then_expires() {
        // A lone last fragment: offset 8, MF clear, total length 240.
        let mut r = Reassembler::new();
        let t0 = Instant::now();
        let f = frag(7, 8, false, &data(220));
        assert_eq!(r.push(&f, t0), Verdict::Held);
        assert_eq!(r.push(&f, t0), Verdict::Held, "an exact duplicate");
        assert_eq!(r.pending(), 1);
        let later = t0 + TIMEOUT + Duration::from_secs(1);
        assert_eq!(r.push(&frag(8, 0, true, &data(8)), later), Verdict::Held);
        assert_eq!(r.pending(), 1, "the old datagram expired");
    }

    #[test]
    fn overlaps_and_contradictions_drop_the_datagram() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        r.push(&frag(1, 0, true, &data(16)), now);
        assert_eq!(
            r.push(&frag(1, 8, true, &data(16)), now),
            Verdict::Dropped(DropReason::Overlap)
        );
        assert_eq!(r.pending(), 0);
        // Two different ends.
        r.push(&frag(2, 16, false, &data(8)), now);
        assert_eq!(
            r.push(&frag(2, 32, false, &data(8)), now),
            Verdict::Dropped(DropReason::Overlap)
        );
        // A piece beyond the known end.
        r.push(&frag(3, 16, false, &data(8)), now);
        assert_eq!(
            r.push(&frag(3, 24, true, &data(8)), now),
            Verdict::Dropped(DropReason::Overlap)
        );
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn bad_fragments_are_refused() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        assert_eq!(
            r.push(&frag(1, 0, true, &data(12)), now),
            Verdict::Dropped(DropReason::BadLength)
        );
        assert_eq!(
            r.push(&frag(1, 65_528, false, &data(8)), now),
            Verdict::Dropped(DropReason::TooLong)
        );
        let mut f = frag(1, 8, false, &data(8));
        f[14 + 10] ^= 0xff;
        assert_eq!(r.push(&f, now), Verdict::Dropped(DropReason::Malformed));
        let mut f = frag(1, 8, false, &data(8));
        f.truncate(f.len() - 1);
        assert_eq!(r.push(&f, now), Verdict::Dropped(DropReason::Malformed));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn bounded() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        for id in 0..MAX_DATAGRAMS as u16 {
            assert_eq!(r.push(&frag(id, 8, true, &data(8)), now), Verdict::Held);
        }
        assert_eq!(
            r.push(&frag(999, 8, true, &data(8)), now),
            Verdict::Dropped(DropReason::Full)
        );
        let mut r = Reassembler::new();
        // Every other 8-byte piece: the pieces never merge.
        let mut last = Verdict::Held;
        for k in 0..=MAX_PIECES {
            last = r.push(&frag(5, 16 + k * 16, true, &data(8)), now);
        }
        assert_eq!(last, Verdict::Dropped(DropReason::Full));
        assert_eq!(r.bytes, 0);
    }

    proptest::proptest! {
        #[test]
        fn any_order_any_split_reassembles(
            len in 1usize..6000,
            cuts in proptest::collection::vec(1usize..800, 0..12),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let payload = data(len);
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts {
                let next = (at + c * 8).min(len);
                if next >= len { break; }
                pieces.push((at, next));
                at = next;
            }
            pieces.push((at, len));
            // A deterministic shuffle.
            let mut s = seed;
            for i in (1..pieces.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                pieces.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut r = Reassembler::new();
            let now = Instant::now();
            let n = pieces.len();
            for (k, &(a, b)) in pieces.iter().enumerate() {
                let v = r.push(&frag(3, a, b != len, &payload[a..b]), now);
                if k + 1 < n {
                    proptest::prop_assert_eq!(v, Verdict::Held);
                } else if n == 1 {
                    proptest::prop_assert_eq!(v, Verdict::Pass);
                } else {
                    check_whole(&whole(v), &payload);
                }
            }
            proptest::prop_assert_eq!(r.pending(), 0);
        }
    }
}
