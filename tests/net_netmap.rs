//! The netmap back end's ring logic against an in-process model of the
//! kernel side, on real shared memory: a memfd mapped twice, one mapping
//! for the code under test and one for the model, which plays netmap's
//! txsync (consumes TX slots, frees them, reassembles NS_MOREFRAG frames)
//! and rxsync (takes released slots back, writes frames, split over slots,
//! and moves tail). The model writes the structures at the offsets restated
//! from netmap.h below, not through the crate's own layout module.
//!
//! Also: the back end itself (`NetmapBackend` through `Netbe`, the reactor
//! registration, header negotiation) on the model, and opening a real
//! port, which fails here (no /dev/netmap) with an error naming the device
//! and the interface.
//!
//! Nothing here has met a netmap kernel.

#![cfg(target_os = "linux")]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::Duration;

use caploop::net::netmap::{
    abi, Kernel, NetmapBackend, NetmapDevice, Port, PortName, Region, RingError, DEVICE,
    NETMAP_FEATURES, NETMAP_RIGHTS,
};
use caploop::net::{self, Error, NetBackend, Netbe, MAX_FRAME_LEN};
use caploop::Reactor;
use proptest::prelude::*;

/// Offsets and constants as netmap.h states them (LP64).
mod h {
    // struct netmap_ring (netmap.h:285-327)
    pub const BUF_OFS: usize = 0;
    pub const NUM_SLOTS: usize = 8;
    pub const BUF_SIZE: usize = 12;
    pub const RINGID: usize = 16;
    pub const DIR: usize = 18;
    pub const HEAD: usize = 20;
    pub const CUR: usize = 24;
    pub const TAIL: usize = 28;
    pub const SLOTS: usize = 256;
    // struct netmap_slot (netmap.h:163-168)
    pub const SLOT: usize = 16;
    pub const BUF_IDX: usize = 0;
    pub const LEN: usize = 4;
    pub const FLAGS: usize = 6;
    // struct netmap_if (netmap.h:374-406)
    pub const TX_RINGS: usize = 24;
    pub const RX_RINGS: usize = 28;
    pub const HOST_TX_RINGS: usize = 36;
    pub const HOST_RX_RINGS: usize = 40;
    pub const RING_OFS: usize = 56;
    // netmap.h:214
    pub const NS_MOREFRAG: u16 = 0x20;
}

// ----- shared memory ---------------------------------------------------

/// A memfd mapped twice: the back end's view and the kernel's.
struct Shm {
    user: NonNull<u8>,
    kern: NonNull<u8>,
    len: usize,
    _fd: OwnedFd,
}

impl Shm {
    fn new(len: usize) -> Shm {
        // SAFETY: memfd_create with a NUL-terminated name and valid flags.
        let raw = unsafe { libc::memfd_create(c"netmap-model".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own memfd.
        let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) };
        assert_eq!(rc, 0, "ftruncate: {}", io::Error::last_os_error());
        let map = || {
            // SAFETY: a fresh shared mapping of the memfd, at an address
            // the kernel picks; nothing else refers to it.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
            NonNull::new(p.cast::<u8>()).unwrap()
        };
        let user = map();
        let kern = map();
        assert_ne!(user, kern);
        Shm {
            user,
            kern,
            len,
            _fd: fd,
        }
    }

    fn user(&self) -> Region {
        // SAFETY: the mapping lives as long as this Shm, which the model
        // owns; every region and port made from it is used only while the
        // model is alive.
        unsafe { Region::new(self.user, self.len) }
    }

    fn kern(&self) -> Region {
        // SAFETY: as for `user`.
        unsafe { Region::new(self.kern, self.len) }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        for p in [self.user, self.kern] {
            // SAFETY: the mappings made in `new`, unmapped once.
            unsafe { libc::munmap(p.as_ptr().cast(), self.len) };
        }
    }
}

// ----- the kernel model ------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Geo {
    /// Slots per ring.
    slots: u32,
    /// nr_buf_size.
    buf: u32,
    /// NIC RX rings.
    rx_rings: u32,
    /// Host TX and RX rings (not used by the port, but in ring_ofs).
    host: u32,
}

impl Geo {
    fn new(slots: u32, buf: u32) -> Geo {
        Geo {
            slots,
            buf,
            rx_rings: 1,
            host: 1,
        }
    }
}

#[derive(Debug)]
struct KRing {
    ofs: usize,
    hwcur: u32,
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn other(e: RingError) -> io::Error {
    io::Error::other(e.to_string())
}

struct Model {
    shm: Shm,
    k: Region,
    geo: Geo,
    nifp: usize,
    tx: KRing,
    rx: Vec<KRing>,
    /// Frames the "wire" got, and their (len, flags) per slot.
    sent: Vec<Vec<u8>>,
    sent_frags: Vec<Vec<(u16, u16)>>,
    /// Frames waiting to be delivered, per RX ring.
    inbox: Vec<VecDeque<Vec<u8>>>,
    /// Bytes per RX slot the kernel writes (<= buf).
    rx_frag: usize,
    /// The NIC does not transmit: txsync frees nothing.
    tx_stalled: bool,
    txsyncs: usize,
    rxsyncs: usize,
    /// Whether PORT_HDR_SET works (a VALE port) and what it was asked.
    takes_hdr: bool,
    hdr_log: Vec<usize>,
}

impl Model {
    fn new(geo: Geo) -> Model {
        let n = geo.slots as usize;
        let buf = geo.buf as usize;
        let nrings = (1 + geo.host + geo.rx_rings + geo.host) as usize;
        let nifp = 64;
        let if_size = h::RING_OFS + 8 * nrings;
        let ring_size = round_up(h::SLOTS + h::SLOT * n, 128);
        let rings = round_up(nifp + if_size, 128);
        let bufs = round_up(rings + nrings * ring_size, 4096);
        let nbufs = nrings * n + 7;
        let shm = Shm::new(bufs + nbufs * buf);
        let k = shm.kern();

        k.write_u32(nifp + h::TX_RINGS, 1, "m").unwrap();
        k.write_u32(nifp + h::RX_RINGS, geo.rx_rings, "m").unwrap();
        k.write_u32(nifp + h::HOST_TX_RINGS, geo.host, "m").unwrap();
        k.write_u32(nifp + h::HOST_RX_RINGS, geo.host, "m").unwrap();

        // Buffers are handed to slots in a shuffled order, so that an index
        // mix-up shows.
        let mut perm: Vec<u32> = (0..nbufs as u32).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..perm.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            perm.swap(i, (x % (i as u64 + 1)) as usize);
        }

        let first_rx = 1 + geo.host as usize;
        for r in 0..nrings {
            let ofs = rings + r * ring_size;
            let is_tx = r < first_rx;
            k.write_i64(nifp + h::RING_OFS + 8 * r, (ofs - nifp) as i64, "m")
                .unwrap();
            k.write_i64(ofs + h::BUF_OFS, bufs as i64 - ofs as i64, "m")
                .unwrap();
            k.write_u32(ofs + h::NUM_SLOTS, geo.slots, "m").unwrap();
            k.write_u32(ofs + h::BUF_SIZE, geo.buf, "m").unwrap();
            k.write_u16(ofs + h::RINGID, r as u16, "m").unwrap();
            k.write_u16(ofs + h::DIR, u16::from(!is_tx), "m").unwrap();
            k.write_u32(ofs + h::HEAD, 0, "m").unwrap();
            k.write_u32(ofs + h::CUR, 0, "m").unwrap();
            let tail = if is_tx { geo.slots - 1 } else { 0 };
            k.write_u32(ofs + h::TAIL, tail, "m").unwrap();
            for j in 0..n {
                let s = ofs + h::SLOTS + h::SLOT * j;
                k.write_u32(s + h::BUF_IDX, perm[r * n + j], "m").unwrap();
                k.write_u16(s + h::LEN, 0, "m").unwrap();
                k.write_u16(s + h::FLAGS, 0, "m").unwrap();
            }
        }
        let tx = KRing {
            ofs: rings,
            hwcur: 0,
        };
        let rx = (0..geo.rx_rings as usize)
            .map(|j| KRing {
                ofs: rings + (first_rx + j) * ring_size,
                hwcur: 0,
            })
            .collect();
        Model {
            shm,
            k,
            geo,
            nifp,
            tx,
            rx,
            sent: Vec::new(),
            sent_frags: Vec::new(),
            inbox: (0..geo.rx_rings).map(|_| VecDeque::new()).collect(),
            rx_frag: buf,
            tx_stalled: false,
            txsyncs: 0,
            rxsyncs: 0,
            takes_hdr: true,
            hdr_log: Vec::new(),
        }
    }

    fn port(&self) -> Port {
        Port::from_if(self.shm.user(), self.nifp).unwrap()
    }

    fn next(&self, i: u32) -> u32 {
        (i + 1) % self.geo.slots
    }

    fn slot(&self, ring: usize, i: u32) -> usize {
        ring + h::SLOTS + h::SLOT * i as usize
    }

    fn buf_of(&self, ring: usize, i: u32) -> Result<usize, RingError> {
        let idx = self.k.read_u32(self.slot(ring, i) + h::BUF_IDX, "model")?;
        let base = ring as i64 + self.k.read_i64(ring + h::BUF_OFS, "model")?;
        Ok(base as usize + idx as usize * self.geo.buf as usize)
    }

    /// The ring's field, as the kernel sees it.
    fn field(&self, ring: usize, f: usize) -> u32 {
        self.k.read_u32(ring + f, "model").unwrap()
    }

    fn set_field(&self, ring: usize, f: usize, v: u32) {
        self.k.write_u32(ring + f, v, "model").unwrap();
    }

    /// The whole region, as the kernel sees it.
    fn snapshot(&self) -> Vec<u8> {
        let mut v = vec![0; self.k.len()];
        self.k.read_bytes(0, &mut v, "model").unwrap();
        v
    }

    fn do_txsync(&mut self) -> Result<(), RingError> {
        let n = self.geo.slots;
        let ofs = self.tx.ofs;
        let head = self.field(ofs, h::HEAD);
        if head >= n {
            return Err(RingError::Corrupt("model: TX head".into()));
        }
        if self.tx_stalled {
            return Ok(());
        }
        let mut i = self.tx.hwcur;
        let mut frame = Vec::new();
        let mut frags = Vec::new();
        while i != head {
            let s = self.slot(ofs, i);
            let len = self.k.read_u16(s + h::LEN, "model")?;
            let flags = self.k.read_u16(s + h::FLAGS, "model")?;
            assert!(len as u32 <= self.geo.buf, "slot len {len} > buf");
            let mut b = vec![0u8; len as usize];
            self.k.read_bytes(self.buf_of(ofs, i)?, &mut b, "model")?;
            frame.extend_from_slice(&b);
            frags.push((len, flags));
            if flags & h::NS_MOREFRAG == 0 {
                self.sent.push(std::mem::take(&mut frame));
                self.sent_frags.push(std::mem::take(&mut frags));
            }
            i = self.next(i);
        }
        assert!(
            frags.is_empty(),
            "a partial frame was handed to the kernel: {frags:?}"
        );
        self.tx.hwcur = head;
        self.set_field(ofs, h::TAIL, (head + n - 1) % n);
        Ok(())
    }

    fn do_rxsync(&mut self) -> Result<(), RingError> {
        let n = self.geo.slots;
        let frag = self.rx_frag.min(self.geo.buf as usize);
        for r in 0..self.rx.len() {
            let ofs = self.rx[r].ofs;
            let head = self.field(ofs, h::HEAD);
            let mut tail = self.field(ofs, h::TAIL);
            if head >= n || tail >= n {
                return Err(RingError::Corrupt("model: RX head/tail".into()));
            }
            self.rx[r].hwcur = head;
            while let Some(f) = self.inbox[r].front() {
                let need = f.len().div_ceil(frag).max(1);
                let free = ((head + n - 1 - tail) % n) as usize;
                if need > free {
                    break;
                }
                let f = self.inbox[r].pop_front().unwrap();
                let chunks: Vec<&[u8]> = if f.is_empty() {
                    vec![&[]]
                } else {
                    f.chunks(frag).collect()
                };
                for (c, chunk) in chunks.iter().enumerate() {
                    let s = self.slot(ofs, tail);
                    self.k
                        .write_bytes(self.buf_of(ofs, tail)?, chunk, "model")?;
                    self.k.write_u16(s + h::LEN, chunk.len() as u16, "model")?;
                    let last = c + 1 == chunks.len();
                    let flags = if last { 0 } else { h::NS_MOREFRAG };
                    self.k.write_u16(s + h::FLAGS, flags, "model")?;
                    tail = self.next(tail);
                }
            }
            self.set_field(ofs, h::TAIL, tail);
        }
        Ok(())
    }

    /// Queues `f` on RX ring `r`; the next rxsync writes it into the ring
    /// if it fits whole.
    fn deliver(&mut self, r: usize, f: Vec<u8>) {
        self.inbox[r].push_back(f);
    }
}

impl Kernel for Model {
    fn txsync(&mut self) -> io::Result<()> {
        self.txsyncs += 1;
        self.do_txsync().map_err(other)
    }

    fn rxsync(&mut self) -> io::Result<()> {
        self.rxsyncs += 1;
        self.do_rxsync().map_err(other)
    }
}

// ----- frames and iovecs -----------------------------------------------

/// `len` bytes, different for every `seed`.
fn frame(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `buf` cut into iovecs of the sizes in `cuts`, cycling.
fn split<'a>(buf: &'a [u8], cuts: &[usize]) -> Vec<IoSlice<'a>> {
    let mut out = Vec::new();
    let mut rest = buf;
    let mut k = 0;
    while !rest.is_empty() {
        let n = cuts[k % cuts.len()].clamp(1, rest.len());
        out.push(IoSlice::new(&rest[..n]));
        rest = &rest[n..];
        k += 1;
    }
    out
}

/// Receive buffers of the sizes in `cuts`, cycling, `total` bytes in all.
fn bufs(total: usize, cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut left = total;
    let mut k = 0;
    while left > 0 {
        let n = cuts[k % cuts.len()].clamp(1, left);
        out.push(vec![0xa5; n]);
        left -= n;
        k += 1;
    }
    out
}

/// Receives one frame into buffers cut as `cuts`, `room` bytes in all.
fn recv_cut(
    port: &mut Port,
    m: &mut Model,
    room: usize,
    cuts: &[usize],
) -> Result<Option<Vec<u8>>, RingError> {
    let mut b = bufs(room, cuts);
    let mut iov: Vec<IoSliceMut<'_>> = b.iter_mut().map(|v| IoSliceMut::new(v)).collect();
    let n = port.recv(m, &mut iov)?;
    drop(iov);
    Ok(n.map(|n| {
        let mut all: Vec<u8> = b.concat();
        all.truncate(n);
        all
    }))
}

fn assert_frags(frags: &[(u16, u16)], len: usize, slot_len: usize) {
    let want = len.div_ceil(slot_len).max(1);
    assert_eq!(frags.len(), want, "slots for a {len}-byte frame");
    for (k, &(l, f)) in frags.iter().enumerate() {
        if k + 1 < frags.len() {
            assert_eq!(l as usize, slot_len, "slot {k} of {len} not full");
            assert_eq!(f, h::NS_MOREFRAG, "slot {k} of {len} lacks NS_MOREFRAG");
        } else {
            assert_eq!(l as usize, len - slot_len * k, "last slot of {len}");
            assert_eq!(f, 0, "last slot of {len} has NS_MOREFRAG");
        }
    }
}

fn is_corrupt<T: std::fmt::Debug>(r: Result<T, RingError>, what: &str) -> String {
    match r {
        Err(RingError::Corrupt(msg)) => {
            let io = io::Error::from(RingError::Corrupt(msg.clone()));
            assert_eq!(io.kind(), io::ErrorKind::InvalidData);
            msg
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

const SIZES: [usize; 12] = [
    60, 64, 100, 1514, 2047, 2048, 2049, 4096, 9000, 16384, 65534, 65535,
];

// ----- layout ----------------------------------------------------------

/// The crate's layout module and the offsets the model uses (restated from
/// netmap.h) agree.
#[test]
fn model_offsets_match_the_crate_layout() {
    assert_eq!(abi::RING_BUF_OFS, h::BUF_OFS);
    assert_eq!(abi::RING_NUM_SLOTS, h::NUM_SLOTS);
    assert_eq!(abi::RING_BUF_SIZE, h::BUF_SIZE);
    assert_eq!(abi::RING_HEAD, h::HEAD);
    assert_eq!(abi::RING_CUR, h::CUR);
    assert_eq!(abi::RING_TAIL, h::TAIL);
    assert_eq!(abi::RING_SLOTS, h::SLOTS);
    assert_eq!(abi::SLOT_SIZE, h::SLOT);
    assert_eq!(
        (abi::SLOT_BUF_IDX, abi::SLOT_LEN, abi::SLOT_FLAGS),
        (h::BUF_IDX, h::LEN, h::FLAGS)
    );
    assert_eq!(
        (
            abi::IF_TX_RINGS,
            abi::IF_RX_RINGS,
            abi::IF_HOST_TX_RINGS,
            abi::IF_HOST_RX_RINGS,
            abi::IF_RING_OFS
        ),
        (
            h::TX_RINGS,
            h::RX_RINGS,
            h::HOST_TX_RINGS,
            h::HOST_RX_RINGS,
            h::RING_OFS
        )
    );
    assert_eq!(abi::NS_MOREFRAG, h::NS_MOREFRAG);
}

// ----- TX --------------------------------------------------------------

/// Frames of 60 to 65535 bytes, gathered from odd iovecs, reach the wire
/// byte for byte; slots of 2048, 1500 and 1024 bytes force NS_MOREFRAG on
/// all but the last slot of each frame (up to 64 slots).
#[test]
fn tx_frames_byte_exact_over_slots() {
    for buf in [2048u32, 1500, 1024] {
        let slots = (65535 / buf + 2) * 2;
        let mut m = Model::new(Geo::new(slots, buf));
        let mut port = m.port();
        for (k, &len) in SIZES.iter().enumerate() {
            let f = frame(len, k as u64 + u64::from(buf));
            let iov = split(&f, &[7, 1, 300, 4096, 13]);
            assert_eq!(port.send(&mut m, &iov).unwrap(), len, "buf {buf}");
            assert_eq!(m.sent.last().unwrap(), &f, "{len} bytes, buf {buf}");
            assert_frags(m.sent_frags.last().unwrap(), len, buf as usize);
        }
        assert_eq!(m.sent.len(), SIZES.len());
        // One txsync per frame: the kernel always had room.
        assert_eq!(m.txsyncs, SIZES.len());
    }
}

/// A full ring (the NIC stalled) drops the frame: the error is
/// `WouldBlock`, nothing in the shared memory changed, and no partial
/// frame reaches the kernel; once the NIC moves, frames flow again.
#[test]
fn tx_full_ring_drops_whole_frame() {
    let mut m = Model::new(Geo::new(8, 1000));
    let mut port = m.port();
    m.tx_stalled = true;
    // 7 slots to lend: a 3-slot frame and a 3-slot frame fit, then 1 left.
    let a = frame(2500, 1);
    let b = frame(3000, 2);
    port.send(&mut m, &[IoSlice::new(&a)]).unwrap();
    port.send(&mut m, &[IoSlice::new(&b)]).unwrap();
    assert!(m.sent.is_empty());
    let before = m.snapshot();
    let syncs = m.txsyncs;
    let c = frame(1001, 3); // needs 2 slots, 1 free
    let e = port.send(&mut m, &[IoSlice::new(&c)]).unwrap_err();
    assert!(matches!(e, RingError::Full { need: 2, space: 1 }), "{e:?}");
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::WouldBlock);
    assert_eq!(m.txsyncs, syncs + 1, "a txsync was tried first");
    assert_eq!(m.snapshot(), before, "nothing written for a dropped frame");
    // A 1-slot frame still fits.
    let d = frame(999, 4);
    port.send(&mut m, &[IoSlice::new(&d)]).unwrap();
    let e = port.send(&mut m, &[IoSlice::new(&d)]).unwrap_err();
    assert!(matches!(e, RingError::Full { need: 1, space: 0 }), "{e:?}");

    // The NIC moves: the queued frames go, in order, and the dropped one
    // never does.
    m.tx_stalled = false;
    port.send(&mut m, &[IoSlice::new(&c)]).unwrap();
    assert_eq!(m.sent, vec![a, b, d, c]);
}

/// A frame that needs more slots than the ring can ever lend is refused
/// without touching the ring or the kernel.
#[test]
fn tx_frame_longer_than_the_ring() {
    let mut m = Model::new(Geo::new(4, 100));
    let mut port = m.port();
    let before = m.snapshot();
    let f = frame(301, 9);
    let e = port.send(&mut m, &[IoSlice::new(&f)]).unwrap_err();
    assert!(
        matches!(
            e,
            RingError::FrameTooLong {
                len: 301,
                need: 4,
                capacity: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidInput);
    assert_eq!(m.txsyncs, 0);
    assert_eq!(m.snapshot(), before);
    let f = frame(300, 9);
    port.send(&mut m, &[IoSlice::new(&f)]).unwrap();
    assert_eq!(m.sent, vec![f]);
}

/// A frame may take at most NETMAP_MAX_FRAGS (64) slots, however long the
/// ring.
#[test]
fn tx_at_most_64_slots_per_frame() {
    let mut m = Model::new(Geo::new(200, 256));
    let mut port = m.port();
    let ok = frame(64 * 256, 1);
    port.send(&mut m, &split(&ok, &[1000])).unwrap();
    assert_frags(m.sent_frags.last().unwrap(), ok.len(), 256);
    let before = m.snapshot();
    let long = frame(64 * 256 + 1, 2);
    let e = port.send(&mut m, &[IoSlice::new(&long)]).unwrap_err();
    assert!(
        matches!(
            e,
            RingError::FrameTooLong {
                need: 65,
                capacity: 64,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(m.snapshot(), before);
    assert_eq!(m.sent, vec![ok]);
}

/// Frames cross the end of a small ring many times, both ways.
#[test]
fn wrap_around_both_ways() {
    let mut m = Model::new(Geo::new(5, 128));
    let mut port = m.port();
    let mut want = Vec::new();
    for k in 0..200u64 {
        let f = frame(1 + (k as usize * 37) % 512, k);
        port.send(&mut m, &split(&f, &[50, 3])).unwrap();
        want.push(f);
    }
    assert_eq!(m.sent, want);

    for (k, f) in want.iter().enumerate() {
        m.deliver(0, f.clone());
        let got = recv_cut(&mut port, &mut m, 600, &[5, 100, 1]).unwrap();
        assert_eq!(got.as_ref(), Some(f), "frame {k}");
    }
    assert_eq!(recv_cut(&mut port, &mut m, 600, &[600]).unwrap(), None);
}

/// A corrupt slot in the middle of a frame stops the send before `head`
/// moves: the kernel sees nothing of the frame.
#[test]
fn tx_corrupt_slot_mid_frame_publishes_nothing() {
    let mut m = Model::new(Geo::new(8, 256));
    let mut port = m.port();
    let tx = m.tx.ofs;
    m.k.write_u32(m.slot(tx, 2) + h::BUF_IDX, u32::MAX, "t")
        .unwrap();
    let f = frame(700, 5); // slots 0, 1, 2
    is_corrupt(port.send(&mut m, &[IoSlice::new(&f)]), "buf_idx in slot 2");
    assert_eq!(m.field(tx, h::HEAD), 0);
    m.do_txsync().unwrap();
    assert!(m.sent.is_empty());
}

// ----- RX --------------------------------------------------------------

/// Frames of 60 to 65535 bytes, split by the kernel over slots of 2048,
/// 1000 and 300 bytes, arrive byte for byte in odd iovecs; peek tells each
/// length first and takes nothing.
#[test]
fn rx_frames_byte_exact_over_slots() {
    for (buf, frag) in [(2048u32, 2048usize), (1000, 1000), (2048, 300)] {
        let slots = (65535 / frag as u32 + 2) * 2;
        let mut m = Model::new(Geo::new(slots, buf));
        m.rx_frag = frag;
        let mut port = m.port();
        for (k, &len) in SIZES.iter().enumerate() {
            let f = frame(len, 100 + k as u64);
            m.deliver(0, f.clone());
            assert_eq!(port.peek(&mut m).unwrap(), len);
            assert_eq!(port.peek(&mut m).unwrap(), len, "peek takes nothing");
            let got = recv_cut(&mut port, &mut m, 70000, &[9, 1, 1500, 64]).unwrap();
            assert_eq!(got.as_deref(), Some(&f[..]), "{len} bytes, slots {frag}");
        }
        assert_eq!(port.peek(&mut m).unwrap(), 0);
        assert_eq!(recv_cut(&mut port, &mut m, 10, &[10]).unwrap(), None);
    }
}

/// A frame longer than the buffers stays in the ring with its length
/// reported; a bigger buffer then gets it whole, and the frame after it
/// follows.
#[test]
fn rx_too_small_buffer_keeps_the_frame() {
    let mut m = Model::new(Geo::new(16, 512));
    let mut port = m.port();
    let a = frame(1800, 7); // 4 slots
    let b = frame(60, 8);
    m.deliver(0, a.clone());
    m.deliver(0, b.clone());
    let e = recv_cut(&mut port, &mut m, 1799, &[1000, 500]).unwrap_err();
    assert!(
        matches!(
            e,
            RingError::DoesNotFit {
                len: 1800,
                room: 1799
            }
        ),
        "{e:?}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidInput);
    assert_eq!(port.peek(&mut m).unwrap(), 1800);
    let head = m.field(m.rx[0].ofs, h::HEAD);
    assert_eq!(head, 0, "no slot released");
    let got = recv_cut(&mut port, &mut m, 1800, &[1000, 800]).unwrap();
    assert_eq!(got, Some(a));
    assert_eq!(m.field(m.rx[0].ofs, h::HEAD), 4);
    assert_eq!(recv_cut(&mut port, &mut m, 60, &[60]).unwrap(), Some(b));
}

/// A frame whose last slot the kernel has not handed over yet is not
/// pending; once it is, it arrives whole.
#[test]
fn rx_incomplete_frame_waits() {
    let mut m = Model::new(Geo::new(8, 100));
    let mut port = m.port();
    let rx = m.rx[0].ofs;
    // Two slots with NS_MOREFRAG and nothing after them.
    let f = frame(250, 3);
    for (i, chunk) in f.chunks(100).take(2).enumerate() {
        let s = m.slot(rx, i as u32);
        m.k.write_bytes(m.buf_of(rx, i as u32).unwrap(), chunk, "t")
            .unwrap();
        m.k.write_u16(s + h::LEN, 100, "t").unwrap();
        m.k.write_u16(s + h::FLAGS, h::NS_MOREFRAG, "t").unwrap();
    }
    m.set_field(rx, h::TAIL, 2);
    assert_eq!(port.peek(&mut m).unwrap(), 0);
    assert_eq!(recv_cut(&mut port, &mut m, 1000, &[1000]).unwrap(), None);
    assert_eq!(m.field(rx, h::HEAD), 0);
    // The last fragment arrives.
    let s = m.slot(rx, 2);
    m.k.write_bytes(m.buf_of(rx, 2).unwrap(), &f[200..], "t")
        .unwrap();
    m.k.write_u16(s + h::LEN, 50, "t").unwrap();
    m.k.write_u16(s + h::FLAGS, 0, "t").unwrap();
    m.set_field(rx, h::TAIL, 3);
    assert_eq!(port.peek(&mut m).unwrap(), 250);
    assert_eq!(recv_cut(&mut port, &mut m, 1000, &[1000]).unwrap(), Some(f));
}

/// Frames on several RX rings are all delivered, round robin, and peek
/// always names the frame recv returns next.
#[test]
fn rx_rings_round_robin() {
    let mut g = Geo::new(8, 256);
    g.rx_rings = 3;
    g.host = 2;
    let mut m = Model::new(g);
    let mut port = m.port();
    assert_eq!(port.rx_rings(), 3);
    let mut want = Vec::new();
    for k in 0..12u64 {
        let f = frame(60 + k as usize * 50, k);
        m.deliver((k % 3) as usize, f.clone());
        want.push(f);
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        let len = port.peek(&mut m).unwrap();
        match recv_cut(&mut port, &mut m, 2000, &[2000]).unwrap() {
            Some(f) => {
                assert_eq!(f.len(), len);
                got.push(f);
            }
            None => {
                assert_eq!(len, 0);
                break;
            }
        }
    }
    assert_eq!(got, want, "ring 0, 1, 2, 0, 1, 2, ...");
}

// ----- corruption ------------------------------------------------------

/// `head` or `tail` beyond num_slots, in a TX or an RX ring: an error
/// from send, recv and peek, never an access out of bounds.
#[test]
fn corrupt_head_and_tail() {
    for (field, v) in [(h::HEAD, 8u32), (h::HEAD, u32::MAX), (h::TAIL, 9)] {
        let mut m = Model::new(Geo::new(8, 256));
        let mut port = m.port();
        m.set_field(m.tx.ofs, field, v);
        let msg = is_corrupt(port.send(&mut m, &[IoSlice::new(&[1; 60])]), "TX");
        assert!(
            msg.contains("TX ring 0") && msg.contains("num_slots 8"),
            "{msg}"
        );

        let mut m = Model::new(Geo::new(8, 256));
        let mut port = m.port();
        m.set_field(m.rx[0].ofs, field, v);
        is_corrupt(port.peek(&mut m), "RX peek");
        let msg = is_corrupt(recv_cut(&mut port, &mut m, 100, &[100]), "RX recv");
        assert!(msg.contains("RX ring 0"), "{msg}");
    }
}

/// A slot's buffer index beyond the region, in TX and RX rings.
#[test]
fn corrupt_buf_idx() {
    for idx in [u32::MAX, 1 << 20] {
        let mut m = Model::new(Geo::new(8, 256));
        let mut port = m.port();
        let tx = m.tx.ofs;
        m.k.write_u32(m.slot(tx, 0) + h::BUF_IDX, idx, "t").unwrap();
        let msg = is_corrupt(port.send(&mut m, &[IoSlice::new(&[1; 60])]), "TX");
        assert!(msg.contains("buf_idx") && msg.contains("outside"), "{msg}");

        m.deliver(0, frame(60, 1));
        m.do_rxsync().unwrap();
        let rx = m.rx[0].ofs;
        m.k.write_u32(m.slot(rx, 0) + h::BUF_IDX, idx, "t").unwrap();
        is_corrupt(port.peek(&mut m), "RX peek");
        is_corrupt(recv_cut(&mut port, &mut m, 100, &[100]), "RX recv");
        assert_eq!(m.field(rx, h::HEAD), 0);
    }
}

/// An RX slot longer than the buffer.
#[test]
fn corrupt_slot_len() {
    let mut m = Model::new(Geo::new(8, 256));
    let mut port = m.port();
    m.deliver(0, frame(100, 1));
    m.do_rxsync().unwrap();
    let rx = m.rx[0].ofs;
    m.k.write_u16(m.slot(rx, 0) + h::LEN, 257, "t").unwrap();
    let msg = is_corrupt(port.peek(&mut m), "peek");
    assert!(msg.contains("len 257 exceeds nr_buf_size 256"), "{msg}");
    is_corrupt(recv_cut(&mut port, &mut m, 70000, &[70000]), "recv");
}

/// Every slot the kernel handed over says NS_MOREFRAG: the frame can never
/// end.
#[test]
fn corrupt_endless_frame() {
    let mut m = Model::new(Geo::new(8, 100));
    let mut port = m.port();
    let rx = m.rx[0].ofs;
    for i in 0..7 {
        let s = m.slot(rx, i);
        m.k.write_u16(s + h::LEN, 100, "t").unwrap();
        m.k.write_u16(s + h::FLAGS, h::NS_MOREFRAG, "t").unwrap();
    }
    m.set_field(rx, h::TAIL, 7);
    let msg = is_corrupt(port.peek(&mut m), "peek");
    assert!(msg.contains("NS_MOREFRAG"), "{msg}");
}

/// Ring and interface fields that put rings, slots or buffers outside the
/// region are refused when the port is read.
#[test]
fn corrupt_ring_and_interface_headers() {
    type Poke = fn(&Model);
    let cases: [(&str, Poke); 9] = [
        ("num_slots 0", |m| m.set_field(m.tx.ofs, h::NUM_SLOTS, 0)),
        ("num_slots huge", |m| {
            m.set_field(m.rx[0].ofs, h::NUM_SLOTS, u32::MAX)
        }),
        ("nr_buf_size 0", |m| m.set_field(m.tx.ofs, h::BUF_SIZE, 0)),
        ("buf_ofs before the region", |m| {
            m.k.write_i64(m.tx.ofs + h::BUF_OFS, -(1 << 40), "t")
                .unwrap()
        }),
        ("buf_ofs past the region", |m| {
            m.k.write_i64(m.rx[0].ofs + h::BUF_OFS, 1 << 40, "t")
                .unwrap()
        }),
        ("ring_ofs past the region", |m| {
            m.k.write_i64(m.nifp + h::RING_OFS, 1 << 40, "t").unwrap()
        }),
        ("ring_ofs misaligned", |m| {
            let v = m.k.read_i64(m.nifp + h::RING_OFS, "t").unwrap();
            m.k.write_i64(m.nifp + h::RING_OFS, v + 2, "t").unwrap()
        }),
        ("no RX rings", |m| {
            m.k.write_u32(m.nifp + h::RX_RINGS, 0, "t").unwrap()
        }),
        ("too many RX rings", |m| {
            m.k.write_u32(m.nifp + h::RX_RINGS, 1 << 20, "t").unwrap()
        }),
    ];
    for (what, poke) in cases {
        let m = Model::new(Geo::new(8, 256));
        poke(&m);
        let msg = is_corrupt(Port::from_if(m.shm.user(), m.nifp), what);
        assert!(!msg.is_empty());
    }
    let m = Model::new(Geo::new(8, 256));
    let len = m.k.len();
    for nifp in [len, len - 8, usize::MAX - 100, 3] {
        is_corrupt(Port::from_if(m.shm.user(), nifp), "nifp offset");
    }
}

// ----- the property ----------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Random frame sizes (60 to 65535) and slot sizes, random iovec cuts,
    /// several RX rings: every frame arrives byte for byte both ways, TX
    /// slots are laid out as NS_MOREFRAG chains, peek always matches recv,
    /// and the per-ring order is kept.
    #[test]
    fn random_frames_both_ways(
        buf in 64u32..=4096,
        frag_div in 1usize..4,
        extra in 2u32..20,
        rx_rings in 1u32..4,
        sizes in prop::collection::vec(60usize..=65535, 1..10),
        cuts in prop::collection::vec(1usize..3000, 1..5),
    ) {
        let frag = (buf as usize / frag_div).max(16);
        let slots = 65535u32.div_ceil(frag as u32) + extra;
        let mut g = Geo::new(slots, buf);
        g.rx_rings = rx_rings;
        let mut m = Model::new(g);
        m.rx_frag = frag;
        let mut port = m.port();

        let capacity = (slots as usize - 1).min(abi::NETMAP_MAX_FRAGS);
        let mut sent = 0;
        for (k, &len) in sizes.iter().enumerate() {
            let f = frame(len, k as u64);
            let need = len.div_ceil(buf as usize);
            match port.send(&mut m, &split(&f, &cuts)) {
                Ok(n) => {
                    prop_assert!(need <= capacity);
                    prop_assert_eq!(n, len);
                    sent += 1;
                    prop_assert_eq!(m.sent.last().unwrap(), &f);
                    assert_frags(m.sent_frags.last().unwrap(), len, buf as usize);
                }
                Err(RingError::FrameTooLong { need: n, capacity: c, .. }) => {
                    prop_assert!(need > capacity);
                    prop_assert_eq!((n, c), (need, capacity));
                }
                Err(e) => prop_assert!(false, "{:?}", e),
            }
            prop_assert_eq!(m.sent.len(), sent);
        }

        // Tag each RX frame with its ring and sequence number.
        let mut want: Vec<Vec<u8>> = Vec::new();
        for (k, &len) in sizes.iter().enumerate() {
            let r = k % rx_rings as usize;
            let mut f = frame(len, 1000 + k as u64);
            f[0] = r as u8;
            f[1] = k as u8;
            m.deliver(r, f.clone());
            want.push(f);
        }
        let mut got: Vec<Vec<u8>> = Vec::new();
        for _ in 0..10 * sizes.len() + 10 {
            let len = port.peek(&mut m).unwrap();
            match recv_cut(&mut port, &mut m, 65535, &cuts).unwrap() {
                Some(f) => {
                    prop_assert_eq!(f.len(), len);
                    got.push(f);
                }
                None => {
                    prop_assert_eq!(len, 0);
                    if m.inbox.iter().all(|q| q.is_empty()) {
                        break;
                    }
                }
            }
        }
        prop_assert_eq!(got.len(), want.len());
        for r in 0..rx_rings as u8 {
            let a: Vec<&Vec<u8>> = got.iter().filter(|f| f[0] == r).collect();
            let b: Vec<&Vec<u8>> = want.iter().filter(|f| f[0] == r).collect();
            prop_assert_eq!(a, b, "ring {}", r);
        }
    }
}

// ----- the back end on the model ---------------------------------------

/// The model as a device: shared with the test, plus an eventfd standing
/// in for the netmap descriptor's readiness.
struct Dev {
    m: Rc<RefCell<Model>>,
    ev: OwnedFd,
}

impl Dev {
    fn new(m: Rc<RefCell<Model>>) -> Dev {
        // SAFETY: eventfd with valid flags.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(raw >= 0);
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let ev = unsafe { OwnedFd::from_raw_fd(raw) };
        Dev { m, ev }
    }
}

/// Makes an eventfd readable.
fn ready(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    nix::unistd::write(fd, &one).unwrap();
}

impl AsFd for Dev {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ev.as_fd()
    }
}

impl Kernel for Dev {
    fn txsync(&mut self) -> io::Result<()> {
        self.m.borrow_mut().txsync()
    }
    fn rxsync(&mut self) -> io::Result<()> {
        self.m.borrow_mut().rxsync()
    }
}

// SAFETY: the region is the model's user mapping, which lives in the Model
// this device keeps alive through its Rc.
unsafe impl NetmapDevice for Dev {
    fn region(&self) -> Region {
        self.m.borrow().shm.user()
    }
    fn nifp_offset(&self) -> usize {
        self.m.borrow().nifp
    }
    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.hdr_log.push(len);
        if m.takes_hdr {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ENXIO))
        }
    }
}

#[derive(Default)]
struct Vm {
    net: Option<Netbe<Vm>>,
    got: Vec<Vec<u8>>,
    calls: usize,
}

fn drain(_r: &mut Reactor<Vm>, vm: &mut Vm) {
    vm.calls += 1;
    let Some(net) = vm.net.as_mut() else { return };
    // Bounded, so that a ring bug fails the test instead of hanging it.
    for _ in 0..100 {
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        match net.recv(&mut [IoSliceMut::new(&mut buf)]) {
            Ok(Some(n)) => {
                buf.truncate(n);
                vm.got.push(buf);
            }
            _ => break,
        }
    }
}

fn backend(
    m: &Rc<RefCell<Model>>,
    name: &str,
    reactor: &mut Reactor<Vm>,
) -> (NetmapBackend<Vm>, OwnedFd) {
    let dev = Dev::new(m.clone());
    let ev = dev.ev.try_clone().unwrap();
    let be = NetmapBackend::with_device(name, Box::new(dev), reactor, Box::new(drain)).unwrap();
    (be, ev)
}

/// A VALE-like port (takes headers): the capability probe sets 12 and
/// restores 0, a 12-byte header goes through untouched both ways, the
/// callback runs only while receive is enabled, and close leaves the
/// reactor empty.
#[test]
fn backend_with_vnet_header() {
    let m = Rc::new(RefCell::new(Model::new(Geo::new(64, 2048))));
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let (be, ev) = backend(&m, "vale0:1", &mut r);
    assert_eq!(NetBackend::<Vm>::get_cap(&be), NETMAP_FEATURES);
    assert_eq!(m.borrow().hdr_log, vec![12, 0], "probe, then restore");
    assert!(be.handle().is_some());

    let mut nb = Netbe::new(Box::new(be));
    nb.set_cap(1 << 15, 12).unwrap();
    assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (12, 12));
    assert_eq!(m.borrow().hdr_log, vec![12, 0, 12]);

    // Send: header and frame reach the port as one frame.
    let f = frame(12 + 3000, 1);
    assert_eq!(nb.send(&split(&f, &[5, 700])).unwrap(), f.len());
    assert_eq!(m.borrow().sent, vec![f.clone()]);

    // Receive through the reactor, only while enabled.
    let mut vm = Vm {
        net: Some(nb),
        ..Vm::default()
    };
    let g = frame(12 + 60000, 2);
    m.borrow_mut().deliver(0, g.clone());
    ready(ev.as_fd());
    r.run_once(Some(Duration::from_millis(50)), &mut vm)
        .unwrap();
    assert_eq!(vm.calls, 0, "receive starts disabled");
    vm.net.as_mut().unwrap().recv_enable(&mut r).unwrap();
    r.run_once(Some(Duration::from_secs(1)), &mut vm).unwrap();
    assert_eq!(vm.calls, 1);
    assert_eq!(vm.got, vec![g]);
    vm.net.as_mut().unwrap().recv_disable(&mut r).unwrap();
    r.run_once(Some(Duration::from_millis(50)), &mut vm)
        .unwrap();
    assert_eq!(vm.calls, 1, "no callback while disabled");

    // Bad lengths and unoffered features are refused, nothing changes.
    let nb = vm.net.as_mut().unwrap();
    assert!(matches!(nb.set_cap(0, 11), Err(Error::BadVnetHdrLen(11))));
    let be = nb.backend_mut();
    assert!(matches!(
        be.set_cap(1 << 20, 12),
        Err(Error::CapRefused { .. })
    ));
    assert!(matches!(be.set_cap(1, 0), Err(Error::CapRefused { .. })));
    be.set_cap(0, 0).unwrap();
    assert_eq!(m.borrow().hdr_log, vec![12, 0, 12, 0]);

    vm.net.take().unwrap().close(&mut r).unwrap();
    assert!(r.is_empty());
}

/// A NIC-like port (no headers): no features, and Netbe adapts a 12-byte
/// front-end header on both paths. A frame too long for the caller stays
/// (InvalidInput, peek tells), one longer than any caller can take is
/// dropped as FrameDropped, and recv_discard makes progress.
#[test]
fn backend_without_vnet_header() {
    let m = Rc::new(RefCell::new(Model::new(Geo::new(64, 2048))));
    m.borrow_mut().takes_hdr = false;
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let (be, _ev) = backend(&m, "netmap:em0", &mut r);
    assert_eq!(NetBackend::<Vm>::get_cap(&be), 0);
    assert_eq!(be.vnet_hdr_len(), 0);
    let mut nb = Netbe::new(Box::new(be));
    nb.set_cap(0, 12).unwrap();
    assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (12, 0));
    assert_eq!(m.borrow().hdr_log, vec![12], "probe failed; no ioctl after");

    let body = frame(1514, 3);
    let mut hdr_and_body = vec![0u8; 12];
    hdr_and_body.extend_from_slice(&body);
    assert_eq!(nb.send(&split(&hdr_and_body, &[3, 9, 1000])).unwrap(), 1526);
    assert_eq!(m.borrow().sent, vec![body.clone()]);

    m.borrow_mut().deliver(0, body.clone());
    assert_eq!(nb.peek_recvlen().unwrap(), 12 + 1514);
    let mut buf = vec![0u8; 2000];
    let n = nb.recv(&mut [IoSliceMut::new(&mut buf)]).unwrap().unwrap();
    assert_eq!(n, 1526);
    assert_eq!(&buf[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&buf[12..n], &body[..]);

    // Too long for these buffers: kept, and the length is known.
    let big = frame(5000, 4);
    m.borrow_mut().deliver(0, big.clone());
    let mut small = vec![0u8; 3000];
    let e = nb.recv(&mut [IoSliceMut::new(&mut small)]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("stays pending"), "{e}");
    assert_eq!(nb.peek_recvlen().unwrap(), 12 + 5000);
    assert_eq!(nb.recv_discard().unwrap(), Some(5000));

    // Longer than MAX_FRAME_LEN: dropped and said so.
    let huge = frame(MAX_FRAME_LEN + 1, 5);
    m.borrow_mut().deliver(0, huge);
    m.borrow_mut().deliver(0, body.clone());
    let e = nb.recv(&mut [IoSliceMut::new(&mut small)]).unwrap_err();
    assert!(e.to_string().contains("dropped"), "{e}");
    assert_eq!(nb.peek_recvlen().unwrap(), 12 + 1514, "the next frame");
    assert_eq!(nb.recv_discard().unwrap(), Some(1514));
    assert_eq!(nb.recv_discard().unwrap(), None);
    nb.close(&mut r).unwrap();
    assert!(r.is_empty());
}

/// The registration asks for polling rights only.
#[test]
fn backend_registration_rights() {
    let m = Rc::new(RefCell::new(Model::new(Geo::new(8, 256))));
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let (be, _ev) = backend(&m, "vale0:1", &mut r);
    let fd = r.fd(be.handle().unwrap()).unwrap();
    let info = r
        .fds()
        .into_iter()
        .find(|f| f.fd == fd)
        .expect("the descriptor is registered");
    assert_eq!(info.rights, NETMAP_RIGHTS);
    Box::new(be).close(&mut r).unwrap();
}

/// A device whose interface is corrupt is refused at open, with the name.
#[test]
fn backend_refuses_corrupt_interface() {
    let m = Rc::new(RefCell::new(Model::new(Geo::new(8, 256))));
    {
        let mm = m.borrow();
        mm.k.write_u32(mm.nifp + h::RX_RINGS, 0, "t").unwrap();
    }
    let mut r: Reactor<Vm> = Reactor::new().unwrap();
    let dev = Dev::new(m.clone());
    let e =
        NetmapBackend::with_device("vale9:9", Box::new(dev), &mut r, Box::new(drain)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("vale9:9") && msg.contains("RX rings"), "{msg}");
    assert!(r.is_empty());
}

// ----- opening the real device -----------------------------------------

/// There is no netmap here: opening fails with an error that names
/// /dev/netmap and the interface or VALE port, directly and through the
/// registry; malformed names fail before any device is touched.
#[test]
fn open_without_netmap_names_device_and_interface() {
    if std::path::Path::new(DEVICE).exists() {
        eprintln!("skipped: {DEVICE} exists on this machine");
        return;
    }
    let mut r: Reactor<()> = Reactor::new().unwrap();
    for (name, iface) in [
        ("netmap:eth0", "interface \"eth0\""),
        ("vale0:1", "VALE port \"vale0:1\""),
    ] {
        let cb = Box::new(|_: &mut Reactor<()>, _: &mut ()| {});
        let e = NetmapBackend::open(name, &mut r, cb).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(DEVICE), "{msg}");
        assert!(msg.contains(iface), "{msg}");
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains("kernel module"), "{msg}");
        assert!(matches!(e, Error::Io { .. }));
        let e = net::open(name, &mut r, |_, _| {}).err().unwrap();
        assert!(e.to_string().contains(iface), "{e}");
    }
    for bad in ["netmap:", "netmap:em0-1", "vale0", "netmapx"] {
        let e = net::open(bad, &mut r, |_, _| {}).err().unwrap();
        assert!(matches!(e, Error::BadName { .. }), "{bad}: {e}");
    }
    assert_eq!(PortName::parse("vale0:1").unwrap().kernel_name(), "vale0:1");
    assert!(r.is_empty());
}
