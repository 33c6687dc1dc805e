//! A hostile vhost-user front end, in process: it sets the helper's
//! device up properly (one memory region, both rings), then scribbles on
//! the rings and descriptors in the shared memory and kicks, round after
//! round, and sends malformed messages. The helper must never crash: it
//! keeps serving, or ends the connection with a clear error (exit 1 and a
//! `vhost-user` line on stderr), or exits 0 when told to stop.

#![cfg(target_os = "linux")]

mod common;

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guest::Scratch;
use common::helper::{wait_exit, wait_for_path, BIN};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

const MEM: usize = 1 << 20;
/// The front end's "virtual address" of the region: any value will do, the
/// back end only translates ring addresses with it.
const USER_ADDR: u64 = 0x7f00_0000_0000;
const QSIZE: u16 = 256;
/// Ring layout in guest memory: (descriptors, avail, used) per ring.
const RINGS: [(u64, u64, u64); 2] = [(0x0000, 0x1000, 0x2000), (0x4000, 0x5000, 0x6000)];

const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;

/// xorshift64: reproducible garbage.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The guest's memory as the front end holds it: a memfd, mapped here.
struct Memory {
    fd: OwnedFd,
    base: *mut u8,
}

impl Memory {
    fn new() -> Memory {
        // SAFETY: memfd_create makes a descriptor owned below; ftruncate
        // sizes it; the shared mapping of MEM bytes lives until drop.
        unsafe {
            let fd = libc::memfd_create(c"hostile-guest".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, MEM as libc::off_t), 0);
            let base = libc::mmap(
                std::ptr::null_mut(),
                MEM,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            Memory {
                fd: OwnedFd::from_raw_fd(fd),
                base: base.cast(),
            }
        }
    }

    fn write(&self, at: u64, bytes: &[u8]) {
        assert!(at as usize + bytes.len() <= MEM);
        // SAFETY: inside the mapping (checked above); the helper may write
        // concurrently, which volatile-free byte copies tolerate here (the
        // contents are garbage on purpose).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(at as usize), bytes.len())
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new.
        unsafe { libc::munmap(self.base.cast(), MEM) };
    }
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd makes a new descriptor, owned here.
    unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        assert!(fd >= 0);
        OwnedFd::from_raw_fd(fd)
    }
}

fn kick(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: an 8-byte write to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

/// A vhost-user front end talking raw messages.
struct Front {
    sock: UnixStream,
}

impl Front {
    fn send(&mut self, req: u32, body: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        let mut hdr = Vec::with_capacity(12);
        hdr.extend_from_slice(&req.to_le_bytes());
        hdr.extend_from_slice(&1u32.to_le_bytes()); // version 1
        hdr.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let iov = [IoSlice::new(&hdr), IoSlice::new(body)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(self.sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
        Ok(())
    }

    fn reply_u64(&mut self) -> std::io::Result<u64> {
        let mut buf = [0u8; 20];
        self.sock.read_exact(&mut buf)?;
        Ok(u64::from_le_bytes(buf[12..20].try_into().unwrap()))
    }

    /// Sets up the memory table and both rings, properly.
    fn set_up(&mut self, mem: &Memory, kicks: &[OwnedFd; 2], calls: &[OwnedFd; 2]) {
        self.send(GET_FEATURES, &[], &[]).unwrap();
        let offered = self.reply_u64().unwrap();
        self.send(SET_OWNER, &[], &[]).unwrap();
        // VERSION_1, MRG_RXBUF, EVENT_IDX, CSUM, HOST_TSO4.
        let want = (1u64 << 32) | (1 << 15) | (1 << 29) | 1 | (1 << 11);
        assert_eq!(offered & want, want, "features offered: {offered:#x}");
        self.send(SET_FEATURES, &want.to_le_bytes(), &[]).unwrap();
        let mut table = Vec::new();
        table.extend_from_slice(&1u32.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        for v in [0u64, MEM as u64, USER_ADDR, 0] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        self.send(SET_MEM_TABLE, &table, &[mem.fd.as_raw_fd()])
            .unwrap();
        for (i, &(desc, avail, used)) in RINGS.iter().enumerate() {
            let idx = i as u32;
            let state = |n: u32| [idx.to_le_bytes(), n.to_le_bytes()].concat();
            self.send(SET_VRING_NUM, &state(u32::from(QSIZE)), &[])
                .unwrap();
            self.send(SET_VRING_BASE, &state(0), &[]).unwrap();
            let mut addr = Vec::new();
            addr.extend_from_slice(&idx.to_le_bytes());
            addr.extend_from_slice(&0u32.to_le_bytes());
            for a in [desc, used, avail, 0] {
                addr.extend_from_slice(&(USER_ADDR + a).to_le_bytes());
            }
            self.send(SET_VRING_ADDR, &addr, &[]).unwrap();
            let index = u64::from(idx).to_le_bytes();
            self.send(SET_VRING_CALL, &index, &[calls[i].as_raw_fd()])
                .unwrap();
            self.send(SET_VRING_KICK, &index, &[kicks[i].as_raw_fd()])
                .unwrap();
        }
    }
}

/// An ARP request for 10.0.2.2 behind a zero virtio-net header: libslirp
/// answers it, so the receive ring gets walked too.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 10, 0, 2, 15]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
    f.resize(12 + 60, 0);
    f
}

/// One round of scribbling on ring `r`, with `rng`: descriptors pointing
/// anywhere (in memory, past it, wrapping), any lengths and flags, chains
/// that loop, indirect tables, avail indexes far ahead, garbage
/// everywhere else; sometimes a valid frame among them.
fn scribble(mem: &Memory, rng: &mut Rng, r: usize, round: u16) {
    let (desc, avail, used) = RINGS[r];
    let frame = arp_request();
    mem.write(0x20000, &frame);
    match rng.below(4) {
        0 => {
            // Pure garbage over the whole ring area.
            let mut junk = vec![0u8; 0x3000];
            for b in junk.chunks_mut(8) {
                b.copy_from_slice(&rng.next().to_le_bytes()[..b.len()]);
            }
            mem.write(desc, &junk);
        }
        _ => {
            // Plausible descriptors with hostile fields.
            for i in 0..u64::from(QSIZE) {
                let addr = match rng.below(5) {
                    0 => 0x20000,
                    1 => rng.below(MEM as u64),
                    2 => MEM as u64 - rng.below(64),
                    3 => u64::MAX - rng.below(4096),
                    _ => rng.next(),
                };
                let len = match rng.below(4) {
                    0 => frame.len() as u32,
                    1 => rng.below(70000) as u32,
                    2 => u32::MAX - rng.below(16) as u32,
                    _ => rng.below(4096) as u32,
                };
                let flags = (rng.below(8)) as u16; // NEXT, WRITE, INDIRECT
                let next = rng.below(u64::from(QSIZE) + 4) as u16;
                let mut d = Vec::with_capacity(16);
                d.extend_from_slice(&addr.to_le_bytes());
                d.extend_from_slice(&len.to_le_bytes());
                d.extend_from_slice(&flags.to_le_bytes());
                d.extend_from_slice(&next.to_le_bytes());
                mem.write(desc + 16 * i, &d);
            }
            // A valid frame in descriptor 0 now and then.
            if rng.below(2) == 0 {
                let mut d = Vec::new();
                d.extend_from_slice(&0x20000u64.to_le_bytes());
                d.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                let write = if r == 0 { 2u16 } else { 0 };
                d.extend_from_slice(&write.to_le_bytes());
                d.extend_from_slice(&0u16.to_le_bytes());
                mem.write(desc, &d);
            }
            // The avail ring: flags, idx (near, or far ahead), entries.
            let idx = match rng.below(3) {
                0 => round,
                1 => round.wrapping_add(rng.below(u64::from(QSIZE)) as u16),
                _ => rng.next() as u16,
            };
            let mut a = Vec::new();
            a.extend_from_slice(&(rng.below(2) as u16).to_le_bytes());
            a.extend_from_slice(&idx.to_le_bytes());
            for _ in 0..QSIZE {
                let e = if rng.below(4) == 0 {
                    rng.next() as u16
                } else {
                    rng.below(u64::from(QSIZE)) as u16
                };
                a.extend_from_slice(&e.to_le_bytes());
            }
            a.extend_from_slice(&(rng.next() as u16).to_le_bytes()); // used_event
            mem.write(avail, &a);
            if rng.below(4) == 0 {
                // The used ring is the device's, but the guest can write it.
                let g = rng.next().to_le_bytes();
                mem.write(used, &g);
            }
        }
    }
}

/// A well-formed transmit ring: one more ARP request made available each
/// round, so libslirp answers and the (scribbled) receive ring is walked.
fn valid_tx(mem: &Memory, round: u16) {
    let (desc, avail, _) = RINGS[1];
    let frame = arp_request();
    mem.write(0x30000, &frame);
    let slot = u64::from(round % QSIZE);
    let mut d = Vec::new();
    d.extend_from_slice(&0x30000u64.to_le_bytes());
    d.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes());
    mem.write(desc + 16 * slot, &d);
    mem.write(avail + 4 + 2 * slot, &(slot as u16).to_le_bytes());
    mem.write(avail + 2, &round.wrapping_add(1).to_le_bytes());
}

/// How a helper session ended, or `None` while it runs.
fn ended(helper: &mut Child) -> Option<std::process::ExitStatus> {
    helper.try_wait().expect("try_wait")
}

fn stderr_text(helper: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = helper.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Checks an ending: exit 1 with a clear `vhost-user` error, or exit 0
/// (stopped, or the peer gone); never a signal.
fn check_ending(status: std::process::ExitStatus, err: &str, seed: u64) {
    assert!(
        status.signal().is_none(),
        "seed {seed}: the helper died of signal {:?}\n{err}",
        status.signal()
    );
    match status.code() {
        Some(0) => {}
        Some(1) => assert!(
            err.contains("vhost-user"),
            "seed {seed}: exit 1 without a vhost-user error\n{err}"
        ),
        other => panic!("seed {seed}: exit {other:?}\n{err}"),
    }
}

fn spawn(scratch: &Scratch, n: u64) -> (Child, Front) {
    let sock = scratch.0.join(format!("vu{n}.sock"));
    let helper = Command::new(BIN)
        .arg("--vhost-user")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn caploop-sandbox");
    assert!(wait_for_path(&sock, Duration::from_secs(10)));
    let sock = UnixStream::connect(&sock).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (helper, Front { sock })
}

#[test]
fn the_helper_survives_a_guest_scribbling_on_its_rings() {
    let scratch = Scratch::new("vuhostile");
    let (mut clean, mut errors) = (0, 0);
    for seed in 1..=12u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let (mut helper, mut front) = spawn(&scratch, seed);
        let mem = Memory::new();
        let kicks = [eventfd(), eventfd()];
        let calls = [eventfd(), eventfd()];
        front.set_up(&mem, &kicks, &calls);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut round = 0u16;
        while Instant::now() < deadline && ended(&mut helper).is_none() {
            // Odd seeds scribble on both rings; even ones keep the transmit
            // ring well-formed so the receive side is reached.
            if seed % 2 == 1 {
                let r = rng.below(2) as usize;
                scribble(&mem, &mut rng, r, round);
                kick(&kicks[r]);
            } else {
                valid_tx(&mem, round);
                scribble(&mem, &mut rng, 0, round);
                kick(&kicks[1]);
                kick(&kicks[0]);
            }
            round = round.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = match ended(&mut helper) {
            Some(s) => {
                errors += 1;
                s
            }
            None => {
                clean += 1;
                // Still serving: SIGTERM ends it with exit 0.
                // SAFETY: kill of our own child.
                unsafe { libc::kill(helper.id() as i32, libc::SIGTERM) };
                wait_exit(&mut helper, Duration::from_secs(10)).expect("helper exits on SIGTERM")
            }
        };
        let err = stderr_text(&mut helper);
        check_ending(status, &err, seed);
        eprintln!(
            "seed {seed}: round {round}: {status:?}: {}",
            err.lines().last().unwrap_or("")
        );
    }
    eprintln!("{clean} sessions kept serving, {errors} ended with an error");
}

#[test]
fn the_helper_refuses_malformed_messages_cleanly() {
    let scratch = Scratch::new("vumsgs");
    for seed in 1..=16u64 {
        let mut rng = Rng(0xd1b5_4a32_d192_ed03 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (mut helper, mut front) = spawn(&scratch, seed);
        let mem = Memory::new();
        let kicks = [eventfd(), eventfd()];
        let calls = [eventfd(), eventfd()];
        if seed % 2 == 0 {
            front.set_up(&mem, &kicks, &calls);
        }
        // Whole messages (so the helper never waits for a missing body)
        // with any request code, flags and body, sometimes with
        // descriptors attached.
        for _ in 0..64 {
            let req = match rng.below(3) {
                0 => rng.below(50) as u32,
                1 => [SET_MEM_TABLE, SET_VRING_ADDR, SET_VRING_NUM, SET_VRING_KICK]
                    [rng.below(4) as usize],
                _ => rng.next() as u32,
            };
            let len = rng.below(80) as usize;
            let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let fds: Vec<RawFd> = match rng.below(3) {
                0 => vec![kicks[0].as_raw_fd()],
                1 => vec![mem.fd.as_raw_fd()],
                _ => vec![],
            };
            if front.send(req, &body, &fds).is_err() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let status = match ended(&mut helper) {
            Some(s) => s,
            None => {
                // SAFETY: kill of our own child.
                unsafe { libc::kill(helper.id() as i32, libc::SIGTERM) };
                match wait_exit(&mut helper, Duration::from_secs(5)) {
                    Some(s) => s,
                    None => {
                        // Blocked on a message whose body never came (a
                        // request with a reply the garbage never reads is
                        // not one): closing our end unblocks it.
                        drop(front);
                        wait_exit(&mut helper, Duration::from_secs(10))
                            .expect("helper exits once the front end closes")
                    }
                }
            }
        };
        let err = stderr_text(&mut helper);
        check_ending(status, &err, seed);
        eprintln!(
            "seed {seed}: {status:?}: {}",
            err.lines().last().unwrap_or("")
        );
    }
}

#[test]
fn a_memory_region_past_the_end_of_its_file_is_refused() {
    // Mapped, it would fault (SIGBUS) as soon as a ring pointed past the
    // file's end.
    let scratch = Scratch::new("vupasteof");
    let (mut helper, mut front) = spawn(&scratch, 0);
    let mem = Memory::new();
    let mut table = Vec::new();
    table.extend_from_slice(&1u32.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes());
    for v in [0u64, 4 * MEM as u64, USER_ADDR, 0] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    front.send(SET_OWNER, &[], &[]).unwrap();
    front
        .send(SET_MEM_TABLE, &table, &[mem.fd.as_raw_fd()])
        .unwrap();
    let status = wait_exit(&mut helper, Duration::from_secs(10)).expect("the helper ends");
    let err = stderr_text(&mut helper);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("runs past its file"), "{err}");
}
