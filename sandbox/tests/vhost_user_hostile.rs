//! A hostile vhost-user front end, in process: it sets the helper's
//! device up properly (one memory region, both rings), then scribbles on
//! the rings and descriptors in the shared memory and kicks, round after
//! round, and sends malformed messages; or it runs a real guest stack on
//! its rings and stops posting receive buffers while the own TCP path has
//! megabytes for it. The helper must never crash or spin: it keeps
//! serving, or ends the connection with a clear error (exit 1 and a
//! `vhost-user` line on stderr), or exits 0 when told to stop.

#![cfg(target_os = "linux")]

mod common;

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guest::Scratch;
use common::helper::{free_port, wait_exit, wait_for_path, BIN};
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

/// The guest's memory as the front end holds it: a memfd (or another
/// file), mapped here unless touching it would fault.
struct Memory {
    fd: OwnedFd,
    size: usize,
    base: *mut u8,
}

impl Memory {
    fn new() -> Memory {
        // SAFETY: memfd_create makes a descriptor owned below; ftruncate
        // sizes it.
        let fd = unsafe {
            let fd = libc::memfd_create(c"hostile-guest".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, MEM as libc::off_t), 0);
            OwnedFd::from_raw_fd(fd)
        };
        Memory::mapped(fd, MEM)
    }

    /// `fd` of `size` bytes, mapped shared here.
    fn mapped(fd: OwnedFd, size: usize) -> Memory {
        // SAFETY: a shared mapping of `size` bytes of `fd`, which lives
        // until drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        Memory {
            fd,
            size,
            base: base.cast(),
        }
    }

    /// `fd` of `size` bytes, handed over but never touched here.
    fn unmapped(fd: OwnedFd, size: usize) -> Memory {
        Memory {
            fd,
            size,
            base: std::ptr::null_mut(),
        }
    }

    fn write(&self, at: u64, bytes: &[u8]) {
        assert!(!self.base.is_null());
        assert!(at as usize + bytes.len() <= self.size);
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
        if !self.base.is_null() {
            // SAFETY: the mapping made in `mapped`.
            unsafe { libc::munmap(self.base.cast(), self.size) };
        }
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

/// An eventfd with `flags` (and close-on-exec) whose count is `value`.
fn eventfd_at(flags: libc::c_int, value: u64) -> OwnedFd {
    // SAFETY: eventfd makes a descriptor owned here; an 8-byte write sets
    // its count (from 0, so it fits).
    unsafe {
        let e = OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC | flags));
        let v = value.to_ne_bytes();
        assert_eq!(libc::write(e.as_raw_fd(), v.as_ptr().cast(), 8), 8);
        e
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

    /// Returns once the helper handled every message sent so far (they
    /// are handled in order; this one is answered).
    fn sync(&mut self) {
        self.send(GET_FEATURES, &[], &[]).unwrap();
        self.reply_u64().unwrap();
    }

    /// Sets up the memory table and both rings, properly.
    fn set_up(&mut self, mem: &Memory, kicks: &[OwnedFd; 2], calls: &[OwnedFd; 2]) {
        let kicks = [kicks[0].as_raw_fd(), kicks[1].as_raw_fd()];
        let calls = [calls[0].as_raw_fd(), calls[1].as_raw_fd()];
        self.set_up_raw(mem, kicks, calls);
    }

    /// [`set_up`](Front::set_up) with any descriptors as kicks and calls.
    fn set_up_raw(&mut self, mem: &Memory, kicks: [RawFd; 2], calls: [RawFd; 2]) {
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
        for v in [0u64, mem.size as u64, USER_ADDR, 0] {
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
            self.send(SET_VRING_CALL, &index, &[calls[i]]).unwrap();
            self.send(SET_VRING_KICK, &index, &[kicks[i]]).unwrap();
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
    spawn_with(scratch, n, &[])
}

fn spawn_with(scratch: &Scratch, n: u64, args: &[&str]) -> (Child, Front) {
    spawn_logging(scratch, n, args, "warn")
}

/// [`spawn_with`], the helper logging at `level` (`info` adds its
/// counters when it ends).
fn spawn_logging(scratch: &Scratch, n: u64, args: &[&str], level: &str) -> (Child, Front) {
    let sock = scratch.0.join(format!("vu{n}.sock"));
    let helper = Command::new(BIN)
        .env("RUST_LOG", level)
        .arg("--vhost-user")
        .arg(&sock)
        .args(args)
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
        // Messages with any request code, flags and body, sometimes with
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
                // Still serving, or waiting for the rest of a message
                // whose size the garbage gave: SIGTERM ends it either way.
                term(&helper);
                wait_exit(&mut helper, Duration::from_secs(1))
                    .expect("the helper exits within a second of SIGTERM")
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

// ----- a VMM that would wedge, spin or kill the helper ----------------------

fn term(helper: &Child) {
    // SAFETY: kill of our own child.
    unsafe { libc::kill(helper.id() as i32, libc::SIGTERM) };
}

/// SIGTERM ends the helper within a second with exit 0; its stderr.
fn sigterm_ends_it(helper: &mut Child, what: &str) -> String {
    term(helper);
    let Some(status) = wait_exit(helper, Duration::from_secs(1)) else {
        let _ = helper.kill();
        let _ = helper.wait();
        panic!(
            "{what}: SIGTERM did not end the helper within a second: {}",
            stderr_text(helper)
        );
    };
    let err = stderr_text(helper);
    assert_eq!(status.code(), Some(0), "{what}: {status:?}\n{err}");
    err
}

/// The helper ends by itself within `timeout` with exit 1 and a line that
/// holds each of `needles`; its stderr.
fn ends_with_error(helper: &mut Child, timeout: Duration, needles: &[&str], what: &str) -> String {
    let Some(status) = wait_exit(helper, timeout) else {
        let _ = helper.kill();
        let _ = helper.wait();
        panic!(
            "{what}: still running after {timeout:?}: {}",
            stderr_text(helper)
        );
    };
    let err = stderr_text(helper);
    assert_eq!(status.code(), Some(1), "{what}: {status:?}\n{err}");
    for n in needles {
        assert!(err.contains(n), "{what}: no {n:?} in\n{err}");
    }
    err
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

fn set_flag(fd: &OwnedFd, nonblock: bool) {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        let fl = if nonblock {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl), 0);
    }
}

/// A pipe's write end that is full (and blocking).
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = pipe();
    set_flag(&w, true);
    let chunk = [0u8; 4096];
    // SAFETY: writes from a stack buffer until the pipe is full.
    while unsafe { libc::write(w.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) } > 0 {}
    set_flag(&w, false);
    (r, w)
}

#[test]
fn a_kick_that_stays_readable_ends_the_session_instead_of_spinning() {
    let scratch = Scratch::new("vukick");
    for (n, case) in [
        "a pipe whose writer closed",
        "a socket whose peer closed",
        "a semaphore eventfd at 2^64-2",
    ]
    .into_iter()
    .enumerate()
    {
        let (mut helper, mut front) = spawn(&scratch, n as u64);
        let mem = Memory::new();
        let calls = [eventfd(), eventfd()];
        let rx_kick = eventfd();
        let kick: OwnedFd = match n {
            0 => pipe().0,
            1 => UnixStream::pair().unwrap().0.into(),
            _ => eventfd_at(libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE, u64::MAX - 1),
        };
        front.set_up_raw(
            &mem,
            [rx_kick.as_raw_fd(), kick.as_raw_fd()],
            [calls[0].as_raw_fd(), calls[1].as_raw_fd()],
        );
        let err = ends_with_error(
            &mut helper,
            Duration::from_secs(5),
            &["vhost-user", "the transmit ring's kick descriptor"],
            case,
        );
        eprintln!("{case}: {}", err.lines().last().unwrap_or(""));
    }
}

#[test]
fn a_call_descriptor_that_would_block_is_never_waited_on() {
    let scratch = Scratch::new("vucall");
    for (n, case) in [
        "a blocking eventfd at its maximum count",
        "a full blocking pipe",
    ]
    .into_iter()
    .enumerate()
    {
        let (mut helper, mut front) = spawn(&scratch, n as u64);
        let mem = Memory::new();
        let kicks = [eventfd(), eventfd()];
        let (call, _keep) = if n == 0 {
            (eventfd_at(0, u64::MAX - 1), None)
        } else {
            let (r, w) = full_pipe();
            (w, Some(r))
        };
        front.set_up_raw(
            &mem,
            [kicks[0].as_raw_fd(), kicks[1].as_raw_fd()],
            [call.as_raw_fd(), call.as_raw_fd()],
        );
        for round in 0..4 {
            valid_tx(&mem, round);
            kick(&kicks[1]);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            ended(&mut helper).is_none(),
            "{case}: {}",
            stderr_text(&mut helper)
        );
        sigterm_ends_it(&mut helper, case);
    }
}

#[test]
fn a_message_with_more_descriptors_than_its_type_carries_ends_the_session() {
    let scratch = Scratch::new("vufds");
    let evs: Vec<OwnedFd> = (0..200).map(|_| eventfd()).collect();
    let raw: Vec<RawFd> = evs.iter().map(AsRawFd::as_raw_fd).collect();
    let mut table = Vec::new();
    table.extend_from_slice(&1u32.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes());
    for v in [0u64, MEM as u64, USER_ADDR, 0] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    let cases: [(u32, Vec<u8>, usize, &str); 3] = [
        (
            SET_VRING_KICK,
            1u64.to_le_bytes().to_vec(),
            33,
            "SET_VRING_KICK (12) carried 33 descriptors; it carries at most 1",
        ),
        (
            SET_MEM_TABLE,
            table,
            200,
            "SET_MEM_TABLE (5) carried 200 descriptors; it carries at most 1",
        ),
        (
            GET_FEATURES,
            Vec::new(),
            1,
            "GET_FEATURES (1) carried 1 descriptor; it carries at most 0",
        ),
    ];
    for (n, (req, body, count, line)) in cases.into_iter().enumerate() {
        let (mut helper, mut front) = spawn(&scratch, n as u64);
        front.send(SET_OWNER, &[], &[]).unwrap();
        front.send(req, &body, &raw[..count]).unwrap();
        ends_with_error(&mut helper, Duration::from_secs(5), &[line], line);
    }
}

#[test]
fn a_vmm_that_never_reads_its_replies_cannot_hold_the_helper() {
    let scratch = Scratch::new("vureplies");
    for n in 0..2u64 {
        let (mut helper, front) = spawn(&scratch, n);
        front.sock.set_nonblocking(true).unwrap();
        // About 1,000 requests, each with a 20-byte reply nobody reads:
        // more than the socket holds, less than the helper queues.
        let req = [
            GET_FEATURES.to_le_bytes(),
            1u32.to_le_bytes(),
            0u32.to_le_bytes(),
        ]
        .concat();
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent < 1000 && Instant::now() < deadline {
            match (&front.sock).write(&req) {
                Ok(12) => sent += 1,
                Ok(_) => panic!("a short write"),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(sent, 1000, "the helper stopped reading requests");
        std::thread::sleep(Duration::from_millis(300));
        if n == 0 {
            sigterm_ends_it(&mut helper, "replies unread, then SIGTERM");
        } else {
            let err = ends_with_error(
                &mut helper,
                Duration::from_secs(10),
                &["vhost-user", "the VMM read none of", "bytes of replies"],
                "replies unread",
            );
            eprintln!("{}", err.lines().last().unwrap_or(""));
        }
        drop(front);
    }
}

#[test]
fn half_a_message_leaves_sigterm_working_and_frees_the_forwarded_port() {
    let scratch = Scratch::new("vuhalf");
    let header = [
        SET_FEATURES.to_le_bytes(),
        1u32.to_le_bytes(),
        8u32.to_le_bytes(),
    ]
    .concat();
    for (n, (part, case)) in [
        (&header[..6], "six header bytes"),
        (&header[..], "a header without its body"),
    ]
    .into_iter()
    .enumerate()
    {
        let port = free_port();
        let rule = format!("tcp:127.0.0.1:{port}-:22");
        let (mut helper, mut front) = spawn_with(&scratch, n as u64, &["--hostfwd", &rule]);
        front.sock.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            ended(&mut helper).is_none(),
            "{case}: {}",
            stderr_text(&mut helper)
        );
        sigterm_ends_it(&mut helper, case);
        std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{case}: the forwarded port is still bound: {e}"));
        drop(front);
    }
}

// ----- guest memory that faults --------------------------------------------

#[test]
fn a_memory_file_shrunk_under_a_live_ring_ends_the_session_with_exit_1() {
    let scratch = Scratch::new("vushrink");
    let (mut helper, mut front) = spawn(&scratch, 0);
    let mem = Memory::new();
    let kicks = [eventfd(), eventfd()];
    let calls = [eventfd(), eventfd()];
    front.set_up(&mem, &kicks, &calls);
    valid_tx(&mem, 0);
    front.sync();
    // Emptied under the live rings (our own mapping is not touched again).
    // SAFETY: ftruncate of a descriptor we own.
    assert_eq!(unsafe { libc::ftruncate(mem.fd.as_raw_fd(), 0) }, 0);
    kick(&kicks[1]);
    let err = ends_with_error(
        &mut helper,
        Duration::from_secs(5),
        &[
            "vhost-user",
            "guest memory faulted (SIGBUS)",
            "memory region 0 (guest 0x0, 1048576 bytes)",
        ],
        "shrunk memfd",
    );
    eprintln!("{}", err.lines().last().unwrap_or(""));
}

/// A tmpfs mounted for a test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_sparse_file_on_a_full_tmpfs_ends_the_session_with_exit_1() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let scratch = Scratch::new("vutmpfs");
    let dir = scratch.0.join("tmpfs");
    std::fs::create_dir_all(&dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256k"),
    )
    .expect("mount a tmpfs");
    let _mounted = Tmpfs(dir.clone());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("guest"))
        .unwrap();
    file.set_len(MEM as u64).unwrap(); // sparse: 1 MiB on a 256 KiB tmpfs
    let mem = Memory::mapped(file.into(), MEM);
    // Every page we touch now is backed; the receive buffer's page at
    // 0x80000 is not.
    mem.write(0, &[0u8; 0x8000]);
    let (mut helper, mut front) = spawn(&scratch, 0);
    let kicks = [eventfd(), eventfd()];
    let calls = [eventfd(), eventfd()];
    front.set_up(&mem, &kicks, &calls);
    valid_tx(&mem, 0);
    let (desc, avail, _) = RINGS[0];
    let mut d = Vec::new();
    d.extend_from_slice(&0x80000u64.to_le_bytes());
    d.extend_from_slice(&4096u32.to_le_bytes());
    d.extend_from_slice(&2u16.to_le_bytes()); // device-writable
    d.extend_from_slice(&0u16.to_le_bytes());
    mem.write(desc, &d);
    mem.write(avail + 4, &0u16.to_le_bytes());
    mem.write(avail + 2, &1u16.to_le_bytes());
    // Fill the tmpfs.
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    kick(&kicks[1]);
    kick(&kicks[0]);
    let err = ends_with_error(
        &mut helper,
        Duration::from_secs(5),
        &[
            "vhost-user",
            "guest memory faulted (SIGBUS) at guest address 0x80000",
            "memory region 0",
        ],
        "sparse file on a full tmpfs",
    );
    eprintln!("{}", err.lines().last().unwrap_or(""));
}

#[test]
fn a_huge_page_memfd_without_huge_pages_ends_the_session_with_exit_1() {
    let pages = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default();
    if pages.trim() != "0" {
        eprintln!("skipped: this host has huge pages ({})", pages.trim());
        return;
    }
    const HUGE: usize = 2 << 20;
    // SAFETY: memfd_create makes a descriptor owned below.
    let fd = unsafe {
        libc::memfd_create(
            c"hostile-huge".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_HUGETLB,
        )
    };
    if fd < 0 {
        eprintln!("skipped: no hugetlbfs: {}", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: fd was just made; ftruncate sizes it (no page is allocated).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::ftruncate(fd.as_raw_fd(), HUGE as libc::off_t) },
        0
    );
    let mem = Memory::unmapped(fd, HUGE);
    let scratch = Scratch::new("vuhuge");
    let (mut helper, mut front) = spawn(&scratch, 0);
    let kicks = [eventfd(), eventfd()];
    let calls = [eventfd(), eventfd()];
    front.set_up(&mem, &kicks, &calls);
    kick(&kicks[1]);
    let err = ends_with_error(
        &mut helper,
        Duration::from_secs(5),
        &["vhost-user", "memory region 0"],
        "huge-page memfd",
    );
    eprintln!("{}", err.lines().last().unwrap_or(""));
}

// ----- a guest that stops posting receive buffers --------------------------

/// Receive buffers the ring guest posts (2 KiB each at [`RX_AT`]); a frame
/// of the helper's default MTU fits one.
const RX_BUFS: u16 = 64;
const RX_AT: u64 = 0x10000;
const TX_AT: u64 = 0x40000;
const BUF: u64 = 2048;
/// The virtio-net header with VERSION_1: 12 bytes.
const VNET: usize = 12;

/// A guest network stack (smoltcp, its address from DHCP) behind a
/// driver for the helper's two rings in shared memory: it takes frames
/// from the receive ring, puts its own on the transmit ring and kicks. While `holding`, it
/// posts no receive buffer back, as a guest whose driver stopped would.
struct RingGuest {
    /// The session: the helper serves the rings while it is open.
    _front: Front,
    mem: Memory,
    kicks: [OwnedFd; 2],
    _calls: [OwnedFd; 2],
    guest: common::link_guest::Guest,
    rx_avail: u16,
    rx_used: u16,
    tx_avail: u16,
    holding: bool,
    /// Receive descriptors taken back while holding.
    held: Vec<u16>,
}

impl RingGuest {
    fn new(mut front: Front) -> RingGuest {
        let mem = Memory::new();
        let kicks = [eventfd(), eventfd()];
        let calls = [eventfd(), eventfd()];
        front.set_up(&mem, &kicks, &calls);
        let mut g = RingGuest {
            _front: front,
            mem,
            kicks,
            _calls: calls,
            guest: common::link_guest::Guest::new(Default::default(), 1500),
            rx_avail: 0,
            rx_used: 0,
            tx_avail: 0,
            holding: false,
            held: Vec::new(),
        };
        let (desc, _, _) = RINGS[0];
        for id in 0..RX_BUFS {
            let mut d = Vec::new();
            d.extend_from_slice(&(RX_AT + BUF * u64::from(id)).to_le_bytes());
            d.extend_from_slice(&(BUF as u32).to_le_bytes());
            d.extend_from_slice(&2u16.to_le_bytes()); // VIRTQ_DESC_F_WRITE
            d.extend_from_slice(&0u16.to_le_bytes());
            g.mem.write(desc + 16 * u64::from(id), &d);
            g.post_rx(id);
        }
        kick(&g.kicks[0]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.guest.lease.is_none() {
            assert!(Instant::now() < deadline, "no DHCP lease within 10 s");
            g.step();
        }
        g
    }

    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        assert!(at as usize + len <= self.mem.size);
        let mut v = vec![0u8; len];
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: inside the mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(self.mem.base.add(at as usize), v.as_mut_ptr(), len)
        };
        v
    }

    fn u16_at(&self, at: u64) -> u16 {
        u16::from_le_bytes(self.read(at, 2).try_into().unwrap())
    }

    /// Makes receive descriptor `id` available again.
    fn post_rx(&mut self, id: u16) {
        let (_, avail, _) = RINGS[0];
        let slot = u64::from(self.rx_avail % QSIZE);
        self.mem.write(avail + 4 + 2 * slot, &id.to_le_bytes());
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.rx_avail = self.rx_avail.wrapping_add(1);
        self.mem.write(avail + 2, &self.rx_avail.to_le_bytes());
    }

    fn send(&mut self, frame: &[u8]) {
        let (desc, avail, used) = RINGS[1];
        // Wait for a free slot: the helper hands transmit buffers back in order.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.tx_avail.wrapping_sub(self.u16_at(used + 2)) >= QSIZE {
            assert!(Instant::now() < deadline, "the transmit ring stays full");
            kick(&self.kicks[1]);
            std::thread::sleep(Duration::from_millis(1));
        }
        let slot = u64::from(self.tx_avail % QSIZE);
        let at = TX_AT + BUF * slot;
        let mut buf = vec![0u8; VNET];
        buf.extend_from_slice(frame);
        assert!(
            buf.len() as u64 <= BUF,
            "a guest frame of {} bytes",
            frame.len()
        );
        self.mem.write(at, &buf);
        let mut d = Vec::new();
        d.extend_from_slice(&at.to_le_bytes());
        d.extend_from_slice(&(buf.len() as u32).to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        self.mem.write(desc + 16 * slot, &d);
        self.mem
            .write(avail + 4 + 2 * slot, &(slot as u16).to_le_bytes());
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.tx_avail = self.tx_avail.wrapping_add(1);
        self.mem.write(avail + 2, &self.tx_avail.to_le_bytes());
        kick(&self.kicks[1]);
    }

    /// Takes what the helper put on the receive ring, runs the guest,
    /// sends what it made; then sleeps a millisecond.
    fn step(&mut self) {
        let (_, _, used) = RINGS[0];
        let mut posted = false;
        while self.rx_used != self.u16_at(used + 2) {
            let e = self.read(used + 4 + 8 * u64::from(self.rx_used % QSIZE), 8);
            self.rx_used = self.rx_used.wrapping_add(1);
            let id = u16::from_le_bytes([e[0], e[1]]);
            let len = u32::from_le_bytes(e[4..8].try_into().unwrap()) as usize;
            assert!(id < RX_BUFS && (VNET..=BUF as usize).contains(&len));
            let buf = self.read(RX_AT + BUF * u64::from(id), len);
            assert_eq!(u16::from_le_bytes([buf[10], buf[11]]), 1, "num_buffers");
            self.guest
                .wire
                .rx
                .borrow_mut()
                .push_back(buf[VNET..].to_vec());
            if self.holding {
                self.held.push(id);
            } else {
                self.post_rx(id);
                posted = true;
            }
        }
        if posted {
            kick(&self.kicks[0]);
        }
        for _ in 0..64 {
            self.guest.poll();
            let out: Vec<Vec<u8>> = self.guest.wire.tx.drain(..).collect();
            if out.is_empty() {
                break;
            }
            for f in out {
                self.send(&f);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    /// Posts every receive buffer the guest held back and goes on posting.
    fn resume(&mut self) {
        self.holding = false;
        for id in std::mem::take(&mut self.held) {
            self.post_rx(id);
        }
        kick(&self.kicks[0]);
    }
}

/// Host connections through a forward to the ring guest, held.
struct HeldFlows {
    helper: Child,
    g: RingGuest,
    socks: Vec<smoltcp::iface::SocketHandle>,
    /// What each guest socket received so far.
    got: Vec<Vec<u8>>,
    /// Bytes each host writer has written so far.
    written: Vec<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl HeldFlows {
    /// `flows` connections to guest port 80 through a host forward (the
    /// own TCP path), each host writer sending `len` bytes of its own
    /// pattern and closing; once the guest accepted them all it stops
    /// posting receive buffers, and this returns when the writers stalled.
    fn new(scratch: &Scratch, n: u64, flows: usize, len: usize) -> HeldFlows {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Barrier};
        let port = free_port();
        let rule = format!("tcp:127.0.0.1:{port}-:80");
        let (helper, front) = spawn_logging(scratch, n, &["--hostfwd", &rule], "info");
        let mut g = RingGuest::new(front);
        let socks: Vec<_> = (0..flows)
            .map(|_| g.guest.tcp_listen(80, 3 << 20))
            .collect();
        let go = Arc::new(Barrier::new(flows + 1));
        let written: Vec<_> = (0..flows).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let writers = (0..flows)
            .map(|i| {
                let (go, written) = (go.clone(), written[i].clone());
                std::thread::spawn(move || {
                    let data = common::link_guest::pattern(len, i as u64);
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    go.wait();
                    for chunk in data.chunks(64 << 10) {
                        // Fails once the helper is gone: the test is over.
                        if s.write_all(chunk).is_err() {
                            return;
                        }
                        written.fetch_add(chunk.len(), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut held = HeldFlows {
            helper,
            g,
            socks,
            got: vec![Vec::new(); flows],
            written,
            writers,
        };
        let up = held.run_until(Duration::from_secs(20), |h| {
            h.socks
                .iter()
                .all(|&s| h.g.guest.tcp(s).state() == smoltcp::socket::tcp::State::Established)
        });
        assert!(up, "the guest did not accept {flows} connections");
        held.g.holding = true;
        go.wait();
        // Stalled: no writer moved for a second.
        let mut last = (usize::MAX, Instant::now());
        let stalled = held.run_until(Duration::from_secs(30), |h| {
            let now = h.total_written();
            if now != last.0 {
                last = (now, Instant::now());
            }
            now > 0 && last.1.elapsed() > Duration::from_secs(1)
        });
        assert!(stalled, "the host writers never stalled");
        held
    }

    fn total_written(&self) -> usize {
        self.written
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Steps the guest (reading what each socket received) until `cond`
    /// holds (true) or `timeout` passes (false).
    fn run_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&mut HeldFlows) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.g.step();
            for (i, &h) in self.socks.iter().enumerate() {
                let s = self.g.guest.tcp(h);
                while s.can_recv() {
                    s.recv(|b| {
                        self.got[i].extend_from_slice(b);
                        (b.len(), ())
                    })
                    .unwrap();
                }
            }
        }
    }
}

#[test]
fn a_guest_that_posts_no_receive_buffers_holds_its_flows_without_spinning_and_sigterm_ends_it() {
    // Twelve flows with 2 MiB each in flight would be 24 MiB toward a
    // guest that takes nothing: more than the outbox may hold (16 MiB,
    // 4,096 frames). The own path must hold them in its buffers instead,
    // losing nothing, and wait without spinning.
    let scratch = Scratch::new("vuheld");
    let (flows, len) = (12, 8 << 20);
    let mut held = HeldFlows::new(&scratch, 0, flows, len);
    let stalled = held.total_written();
    assert!(stalled < flows * len, "every byte went through: {stalled}");
    let pid = held.helper.id();
    let t0 = common::helper::cpu_ticks(pid);
    let start = Instant::now();
    held.run_until(Duration::from_secs(1), |_| false);
    let ticks = common::helper::cpu_ticks(pid) - t0;
    let tck = 100.0 * start.elapsed().as_secs_f64();
    assert!(
        (ticks as f64) < 0.2 * tck,
        "the helper spun while its flows were held: {ticks} ticks in {:?}",
        start.elapsed()
    );
    let err = sigterm_ends_it(&mut held.helper, "flows held behind a full outbox");
    let counters = err
        .lines()
        .find(|l| l.contains("link in"))
        .unwrap_or_else(|| panic!("no counters in\n{err}"));
    assert!(
        counters.contains(" 0 dropped;"),
        "frames were dropped toward the guest: {counters}"
    );
    eprintln!("stalled after {stalled} bytes\n{err}");
}

#[test]
fn a_guest_that_stops_posting_receive_buffers_and_resumes_gets_every_byte() {
    let scratch = Scratch::new("vuresume");
    let (flows, len) = (4, 4 << 20);
    let mut held = HeldFlows::new(&scratch, 0, flows, len);
    held.g.resume();
    let done = held.run_until(Duration::from_secs(120), |h| {
        h.got.iter().all(|g| g.len() >= len)
    });
    let got: Vec<usize> = held.got.iter().map(Vec::len).collect();
    assert!(done, "{got:?} of {len} bytes each arrived");
    // The guest's sockets took the connections in the order their SYNs
    // came, not the writers': each stream must be one writer's, whole.
    let mut writers: Vec<Vec<u8>> = (0..flows)
        .map(|i| common::link_guest::pattern(len, i as u64))
        .collect();
    for (i, g) in held.got.iter().enumerate() {
        let Some(w) = writers.iter().position(|w| w == g) else {
            panic!("flow {i}: its bytes are no writer's");
        };
        writers.swap_remove(w);
    }
    for w in std::mem::take(&mut held.writers) {
        w.join().unwrap();
    }
    sigterm_ends_it(&mut held.helper, "after the resumed flows");
}
