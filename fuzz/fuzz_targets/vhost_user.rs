//! The vhost-user back end's socket gate, message handler and ring
//! walker, in process: the helper's own `gate.rs` (whole messages off a
//! non-blocking socket, descriptors counted), `device.rs` (the
//! `VhostUserBackendReqHandlerMut` impl) behind the vhost crate's
//! `BackendReqHandler`, fed over a socketpair as the helper feeds it, and
//! its own `rings.rs` walking rings in a 64 KiB memfd the input also
//! scribbles on. Nothing may crash, hang or panic: a refused message or a
//! malformed ring ends the "connection" (the input) with an error, as it
//! ends the helper's.
//!
//! Input: records, each an op byte and its operands:
//! - 0: a message: request (1 byte; below 48 taken as is, else one of the
//!   set-up requests), body length (1 byte) and body, and the descriptors
//!   to attach (1 byte: bit 0 the memfd, bit 1 an eventfd, bits 2-7 that
//!   many more eventfds, up to 63);
//! - 1: the whole proper set-up (features, memory table, both rings);
//! - 2: a write into guest memory: offset (2 bytes, ×1), length (1 byte),
//!   bytes;
//! - 3: walk the transmit ring;
//! - 4: queue a frame (length byte, bytes) for the guest and fill the
//!   receive ring;
//! - 5: a ring-shaped write: descriptor `n` (1 byte) of ring `r` set to
//!   (addr 2 bytes ×16, len 2 bytes, flags, next), and the avail index;
//! - 6: raw bytes on the socket (length byte, bytes): part of a message,
//!   the rest of one, or several at once.
//!
//! After every write to the socket the gate is read until it waits, as
//! the helper reads it when the socket is readable. The memfd and the
//! socketpair are made afresh for each input.
#![no_main]

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use caploop::frame::queue::{FrameQueue, Limits, WhenFull};
use libfuzzer_sys::fuzz_target;
use vhost::vhost_user::BackendReqHandler;
use vm_memory::{Bytes, GuestAddress};

#[allow(dead_code)]
#[path = "../../sandbox/src/vhost_user/device.rs"]
mod device;
#[allow(dead_code)]
#[path = "../../sandbox/src/vhost_user/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "../../sandbox/src/vhost_user/gate.rs"]
mod gate;
#[allow(dead_code)]
#[path = "../../sandbox/src/vhost_user/rings.rs"]
mod rings;

use device::{Device, Handler, RX, TX};
use gate::{Gate, Step};

const MEM: u64 = 65536;
const USER: u64 = 0x7f00_0000_0000;
const SETUP_REQS: [u32; 10] = [1, 2, 3, 5, 8, 9, 10, 12, 13, 18];

fuzz_target!(|data: &[u8]| run(data));

struct Peer {
    sock: UnixStream,
}

impl Peer {
    /// Sends one whole message (the size field always matches the body,
    /// so the handler never waits for bytes that will not come).
    fn send(&self, req: u32, body: &[u8], fds: &[RawFd]) -> bool {
        let mut hdr = Vec::with_capacity(12);
        hdr.extend_from_slice(&req.to_le_bytes());
        hdr.extend_from_slice(&1u32.to_le_bytes());
        hdr.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let iov = [IoSlice::new(&hdr), IoSlice::new(body)];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(fds)];
        let cmsgs: &[_] = if fds.is_empty() { &[] } else { &cmsg };
        nix::sys::socket::sendmsg::<()>(
            self.sock.as_raw_fd(),
            &iov,
            cmsgs,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .is_ok()
    }

    /// Writes raw bytes (no descriptors).
    fn raw(&self, bytes: &[u8]) -> bool {
        nix::sys::socket::send(
            self.sock.as_raw_fd(),
            bytes,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .is_ok()
    }

    /// Drops whatever replies came back.
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        while nix::sys::socket::recv(
            self.sock.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .is_ok_and(|n| n > 0)
        {}
    }
}

fn memfd() -> OwnedFd {
    // SAFETY: memfd_create makes a descriptor owned here; ftruncate sizes it.
    unsafe {
        let fd = libc::memfd_create(c"fuzz-guest".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0 && libc::ftruncate(fd, MEM as libc::off_t) == 0);
        OwnedFd::from_raw_fd(fd)
    }
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd makes a descriptor owned here.
    unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        assert!(fd >= 0);
        OwnedFd::from_raw_fd(fd)
    }
}

fn le64(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn state(i: u32, n: u32) -> Vec<u8> {
    [i.to_le_bytes(), n.to_le_bytes()].concat()
}

/// The proper set-up: rings of 64 at 0x0/0x1000/0x2000 and
/// 0x4000/0x5000/0x6000.
fn setup(peer: &Peer, mem: &OwnedFd, ev: &OwnedFd) -> Vec<(u32, Vec<u8>, Vec<RawFd>)> {
    let feats: u64 =
        (1 << 32) | (1 << 15) | (1 << 29) | (1 << 28) | 1 | (1 << 11) | (1 << 7) | (1 << 1);
    let _ = peer;
    let mut v = vec![
        (3, vec![], vec![]),
        (2, feats.to_le_bytes().to_vec(), vec![]),
        (
            5,
            [vec![1, 0, 0, 0, 0, 0, 0, 0], le64(&[0, MEM, USER, 0])].concat(),
            vec![mem.as_raw_fd()],
        ),
    ];
    for (i, base) in [(0u32, 0u64), (1, 0x4000)] {
        v.push((8, state(i, 64), vec![]));
        v.push((10, state(i, 0), vec![]));
        v.push((
            9,
            [
                state(i, 0),
                le64(&[USER + base, USER + base + 0x2000, USER + base + 0x1000, 0]),
            ]
            .concat(),
            vec![],
        ));
        v.push((
            13,
            u64::from(i).to_le_bytes().to_vec(),
            vec![ev.as_raw_fd()],
        ));
        v.push((
            12,
            u64::from(i).to_le_bytes().to_vec(),
            vec![ev.as_raw_fd()],
        ));
    }
    v
}

/// Reads the gate until it waits, handling each whole message as the
/// helper does; false once the connection would end.
fn pump(gate: &mut Gate, req: &mut BackendReqHandler<Mutex<Handler>>, peer: &Peer) -> bool {
    for _ in 0..64 {
        match gate.next_message() {
            Ok(Step::Wait) => return true,
            Ok(Step::HungUp) | Err(_) => return false,
            Ok(Step::Passed(_)) => {}
        }
        let handled = match req.handle_request() {
            Ok(()) => true,
            Err(vhost::vhost_user::Error::InactiveFeature(_)) => true,
            Err(_) => false,
        };
        if !handled || gate.take_replies().is_err() {
            return false;
        }
        peer.drain();
        let _ = gate.flush();
    }
    true
}

fn run(data: &[u8]) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let peer = Peer { sock: theirs };
    let mem = memfd();
    let ev = eventfd();
    // Made on first use: most inputs attach none.
    let mut extra: Vec<OwnedFd> = Vec::new();
    let dev = Rc::new(RefCell::new(Device::new(1500, device::OFFERED)));
    #[allow(clippy::arc_with_non_send_sync)]
    let handler = Arc::new(Mutex::new(Handler { dev: dev.clone() }));
    let (mut gate, crate_end) = Gate::new(ours).expect("gate");
    let mut req = BackendReqHandler::from_stream(crate_end, handler);
    let mut buf = Vec::new();
    let mut stats = rings::TxStats::default();
    let mut outbox = FrameQueue::new(Limits {
        frames: 64,
        bytes: usize::MAX,
        when_full: WhenFull::DropOldest,
    });

    let mut rest = data;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rest.len() < n {
            return None;
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Some(a)
    };
    let mut ops = 0;
    while let Some(&[op]) = take(1) {
        ops += 1;
        if ops > 256 {
            break;
        }
        // One message, handled: false once the connection would end.
        let mut message = |req_code: u32, body: &[u8], fds: &[RawFd]| -> bool {
            if !peer.send(req_code, body, fds) {
                return false;
            }
            let ok = pump(&mut gate, &mut req, &peer);
            // The helper registers these; here they are just closed.
            dev.borrow_mut().new_kicks.clear();
            dev.borrow_mut().stopped.clear();
            ok
        };
        let alive = match op % 7 {
            0 => {
                let Some(&[code, len]) = take(2) else { break };
                let code = if code < 48 {
                    u32::from(code)
                } else {
                    SETUP_REQS[usize::from(code) % SETUP_REQS.len()]
                };
                let Some(body) = take(usize::from(len)) else {
                    break;
                };
                let Some(&[attach]) = take(1) else { break };
                let mut fds = Vec::new();
                if attach & 1 != 0 {
                    fds.push(mem.as_raw_fd());
                }
                if attach & 2 != 0 {
                    fds.push(ev.as_raw_fd());
                }
                let more = usize::from(attach >> 2);
                while extra.len() < more {
                    extra.push(eventfd());
                }
                fds.extend(extra[..more].iter().map(|f| f.as_raw_fd()));
                message(code, &body.to_vec(), &fds)
            }
            6 => {
                let Some(&[len]) = take(1) else { break };
                let Some(bytes) = take(usize::from(len)) else {
                    break;
                };
                let sent = peer.raw(bytes);
                let ok = pump(&mut gate, &mut req, &peer);
                dev.borrow_mut().new_kicks.clear();
                dev.borrow_mut().stopped.clear();
                sent && ok
            }
            1 => setup(&peer, &mem, &ev)
                .into_iter()
                .all(|(c, b, f)| message(c, &b, &f)),
            2 => {
                let Some(h) = take(3) else { break };
                let at = u64::from(u16::from_le_bytes([h[0], h[1]]));
                let Some(bytes) = take(usize::from(h[2])) else {
                    break;
                };
                write_guest(&dev, at, bytes);
                true
            }
            3 => {
                let mut d = dev.borrow_mut();
                let hdr_len = d.hdr_len();
                let Device { mem, vrings, .. } = &mut *d;
                match mem.as_ref() {
                    Some(m) => rings::drain_tx(
                        &mut vrings[TX],
                        m,
                        hdr_len,
                        &mut buf,
                        &mut stats,
                        &mut |frame, _, _| assert!(frame.len() <= rings::MAX_TX),
                    )
                    .is_ok(),
                    None => true,
                }
            }
            4 => {
                let Some(&[len]) = take(1) else { break };
                let Some(frame) = take(usize::from(len)) else {
                    break;
                };
                let mut d = dev.borrow_mut();
                let hdr_len = d.hdr_len();
                // Queued with a 10-byte header, as the outbox keeps them.
                outbox.push(&[&[0u8; 10], frame]);
                let mrg = d.has(15);
                let Device { mem, vrings, .. } = &mut *d;
                match mem.as_ref() {
                    Some(m) => {
                        rings::fill_rx(&mut vrings[RX], m, hdr_len, mrg, &mut outbox).is_ok()
                    }
                    None => true,
                }
            }
            _ => {
                let Some(h) = take(9) else { break };
                let ring = u64::from(h[0] & 1) * 0x4000;
                let n = u64::from(h[1] & 63);
                let addr = u64::from(u16::from_le_bytes([h[2], h[3]])) * 16;
                let len = u32::from(u16::from_le_bytes([h[4], h[5]]));
                let mut d = Vec::new();
                d.extend_from_slice(&addr.to_le_bytes());
                d.extend_from_slice(&len.to_le_bytes());
                d.extend_from_slice(&u16::from(h[6] & 7).to_le_bytes());
                d.extend_from_slice(&u16::from(h[7] & 127).to_le_bytes());
                write_guest(&dev, ring + 16 * n, &d);
                // avail ring: entry n, then the index.
                let slot = u64::from(h[8] & 63);
                write_guest(
                    &dev,
                    ring + 0x1000 + 4 + 2 * slot,
                    &(n as u16).to_le_bytes(),
                );
                write_guest(&dev, ring + 0x1000 + 2, &u16::from(h[8]).to_le_bytes());
                true
            }
        };
        if !alive {
            break;
        }
    }
}

/// Writes into guest memory through the device's own mapping (what the
/// guest does), clipped to it.
fn write_guest(dev: &Rc<RefCell<Device>>, at: u64, bytes: &[u8]) {
    if let Some(m) = dev.borrow().mem.as_ref() {
        let _ = m.write_slice(bytes, GuestAddress(at));
    }
}
