//! Joins a tap device in a network namespace to a unix stream socket with
//! QEMU's `-netdev stream` framing (a 4-byte big-endian length before each
//! Ethernet frame), so the Linux kernel in that namespace plays the guest of
//! a QEMU stream peer (caploop-sandbox --qemu-stream, passt).
//!
//! ```text
//! ip netns add ns1
//! ip netns exec ns1 ip tuntap add tap0 mode tap
//! cargo build --release --example tap_stream_relay
//! tap_stream_relay ns1 tap0 /tmp/peer.sock [MTU]
//! ```
//!
//! The tap is opened on a helper thread that joins the namespace
//! (`setns(CLONE_NEWNET)` on `/var/run/netns/NAME`); the process itself stays
//! in the host namespace, where it connects to SOCKET_PATH as QEMU would
//! (retrying until the socket exists) and relays on caploop's reactor:
//!
//! - tap readable: read frames (a bounded batch, until `EAGAIN`), queue each
//!   length-prefixed in a [`Backlog`], write the backlog to the socket. While
//!   the backlog is above a high-water mark the tap is not read, so the
//!   guest's queue fills and nothing is dropped.
//! - socket readable: read into a [`Decoder`], write each frame to the tap;
//!   a frame the tap refuses with `EAGAIN` is queued and the tap waited on
//!   for writability, and while that queue is long the socket is not read.
//!
//! It exits when the peer hangs up, with a one-line summary on stderr.
//! Network namespaces are Linux's: elsewhere it builds but says so and
//! exits.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use caploop::net::tap::TAP_RIGHTS;
use caploop::net::TapDevice;
use caploop::reactor::{Event, Handle, Interest, Reactor};
use caploop::wire::stream::{Backlog, Decoder, DEFAULT_MAX_FRAME};
use caploop::Rights;

/// Frames read from the tap per readiness event.
const TAP_BATCH: usize = 64;
/// Socket reads per readiness event.
const SOCK_BATCH: usize = 16;
/// Bytes queued toward the socket at which the tap is no longer read.
const SOCK_HIGH: usize = 1 << 20;
/// Bytes queued toward the tap at which the socket is no longer read.
const TAP_HIGH: usize = 1 << 20;
/// The tap read buffer: the largest tap MTU (65521) plus the Ethernet
/// header, rounded up.
const TAP_BUF: usize = 64 * 1024 + 256;
/// How long to wait for the peer's socket to appear.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The relay's state, handed to every callback.
struct Relay {
    tap: File,
    sock: UnixStream,
    tap_h: Option<Handle>,
    sock_h: Option<Handle>,
    /// One frame read from the tap.
    frame: Vec<u8>,
    /// Length-prefixed frames the socket has not taken yet.
    to_sock: Backlog,
    /// Bytes from the socket, cut into frames.
    from_sock: Decoder,
    /// Frames the tap refused with `EAGAIN`, in order.
    to_tap: VecDeque<Vec<u8>>,
    to_tap_bytes: usize,
    frames_in: u64,
    frames_out: u64,
    tap_dropped: u64,
    /// Why the loop stopped, if it stopped for an error.
    failed: Option<String>,
}

impl Relay {
    /// Writes the backlog to the socket until it is empty or the socket is
    /// full; `false` if the socket is gone.
    fn flush_sock(&mut self) -> bool {
        while !self.to_sock.is_empty() {
            match self.sock.write(self.to_sock.pending()) {
                Ok(0) => return false,
                Ok(n) => self.to_sock.consume(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.fail_sock("writing to the socket", e),
            }
        }
        true
    }

    /// Records a socket error; hang-ups are the normal way out.
    fn fail_sock(&mut self, what: &str, e: io::Error) -> bool {
        if !matches!(
            e.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected
        ) {
            self.failed = Some(format!("{what}: {e}"));
        }
        false
    }

    /// Writes one frame to the tap, queueing it if the tap is full or
    /// frames are already queued.
    fn to_tap(tap: &mut File, queue: &mut VecDeque<Vec<u8>>, queued: &mut usize, frame: &[u8]) {
        if queue.is_empty() {
            match tap.write(frame) {
                Ok(_) => return,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // A NIC drops what it cannot send; so does the tap (the
                // interface down, say).
                Err(_) => return,
            }
        }
        *queued += frame.len();
        queue.push_back(frame.to_vec());
    }

    /// Writes queued frames to the tap until it is full.
    fn drain_tap(&mut self) {
        while let Some(f) = self.to_tap.front() {
            let len = f.len();
            match self.tap.write(f) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => self.tap_dropped += 1,
            }
            self.to_tap.pop_front();
            self.to_tap_bytes -= len;
        }
    }

    /// Reads a batch of frames from the tap and sends them; `false` if the
    /// loop must stop.
    fn pump_tap(&mut self) -> bool {
        for _ in 0..TAP_BATCH {
            if self.to_sock.len() >= SOCK_HIGH {
                break;
            }
            match self.tap.read(&mut self.frame) {
                Ok(0) => break,
                Ok(n) => {
                    // The backlog is unbounded: the high-water mark above
                    // is the back-pressure, so a push never fails.
                    if self.to_sock.push(&self.frame[..n]).is_ok() {
                        self.frames_out += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed = Some(format!("reading the tap: {e}"));
                    return false;
                }
            }
        }
        self.flush_sock()
    }

    /// Reads a batch from the socket and writes its frames to the tap;
    /// `false` if the loop must stop.
    fn pump_sock(&mut self) -> bool {
        for _ in 0..SOCK_BATCH {
            if self.to_tap_bytes >= TAP_HIGH {
                break;
            }
            let room = self.from_sock.read_buf();
            match self.sock.read(room) {
                Ok(0) => return false,
                Ok(n) => self.from_sock.filled(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.fail_sock("reading the socket", e),
            }
            loop {
                match self.from_sock.next_frame() {
                    Ok(Some(frame)) => {
                        self.frames_in += 1;
                        Relay::to_tap(
                            &mut self.tap,
                            &mut self.to_tap,
                            &mut self.to_tap_bytes,
                            frame,
                        );
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.failed = Some(format!("the socket's stream: {e}"));
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Sets both registrations' interest from the queues.
    fn rearm(&mut self, r: &mut Reactor<Relay>) {
        let mut tap = Interest::empty();
        if self.to_sock.len() < SOCK_HIGH {
            tap |= Interest::READ;
        }
        if !self.to_tap.is_empty() {
            tap |= Interest::WRITE;
        }
        let mut sock = Interest::empty();
        if self.to_tap_bytes < TAP_HIGH {
            sock |= Interest::READ;
        }
        if !self.to_sock.is_empty() {
            sock |= Interest::WRITE;
        }
        for (h, want) in [(self.tap_h, tap), (self.sock_h, sock)] {
            let Some(h) = h else { continue };
            let res = if want.is_empty() {
                r.disable(h)
            } else {
                r.set_interest(h, want).and_then(|()| r.enable(h))
            };
            if let Err(e) = res {
                self.failed = Some(format!("rearming: {e}"));
                r.stop();
            }
        }
    }
}

fn on_tap(r: &mut Reactor<Relay>, st: &mut Relay, ev: Event) {
    if ev.writable {
        st.drain_tap();
    }
    if ev.readable && !st.pump_tap() {
        r.stop();
        return;
    }
    st.rearm(r);
}

fn on_sock(r: &mut Reactor<Relay>, st: &mut Relay, ev: Event) {
    if ev.writable && !st.flush_sock() {
        r.stop();
        return;
    }
    if ev.readable {
        if !st.pump_sock() {
            r.stop();
            return;
        }
    } else if ev.hangup || ev.error {
        // Not reading (the tap is behind) and the peer is gone.
        r.stop();
        return;
    }
    st.rearm(r);
}

/// Opens tap `name` in the network namespace `netns` on a thread that joins
/// it, leaving this thread where it is.
#[cfg(target_os = "linux")]
fn open_tap_in(netns: &str, name: &str) -> Result<TapDevice, String> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/var/run/netns").join(netns);
    let name = name.to_owned();
    std::thread::spawn(move || {
        let ns = File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        // SAFETY: setns takes a descriptor, open for the call, and a flag;
        // it changes only the calling thread's network namespace, and this
        // thread ends once the tap is open.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!(
                "joining the network namespace {}: {}",
                path.display(),
                io::Error::last_os_error()
            ));
        }
        TapDevice::open(&name).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_owned())?
}

/// Network namespaces are Linux-only.
#[cfg(not(target_os = "linux"))]
fn open_tap_in(_netns: &str, _name: &str) -> Result<TapDevice, String> {
    Err(format!(
        "network namespaces are Linux-only; there are none on {}",
        std::env::consts::OS
    ))
}

/// Connects to `path` as QEMU would, retrying until the peer listens.
fn connect(path: &Path) -> Result<UnixStream, String> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > CONNECT_TIMEOUT => {
                return Err(format!("connecting to {}: {e}", path.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("tap_stream_relay: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        return Err("usage: tap_stream_relay NETNS_NAME TAPNAME SOCKET_PATH [MTU]".into());
    }
    let mtu: usize = match args.get(4) {
        Some(m) => m.parse().map_err(|e| format!("MTU {m:?}: {e}"))?,
        None => 1500,
    };
    if !(68..=65521).contains(&mtu) {
        return Err(format!("MTU {mtu} is out of range (68 to 65521)"));
    }

    let dev = open_tap_in(&args[1], &args[2])?;
    let tap = File::from(dev.into_fd());
    let sock = connect(Path::new(&args[3]))?;
    sock.set_nonblocking(true)
        .map_err(|e| format!("making the socket non-blocking: {e}"))?;

    let mut reactor: Reactor<Relay> = Reactor::new().map_err(|e| e.to_string())?;
    let mut relay = Relay {
        tap,
        sock,
        tap_h: None,
        sock_h: None,
        frame: vec![0; TAP_BUF.max(mtu + 64)],
        to_sock: Backlog::unbounded(),
        from_sock: Decoder::new(DEFAULT_MAX_FRAME),
        to_tap: VecDeque::new(),
        to_tap_bytes: 0,
        frames_in: 0,
        frames_out: 0,
        tap_dropped: 0,
        failed: None,
    };
    relay.tap_h = Some(
        reactor
            // SAFETY: `relay` owns the tap and outlives both registrations,
            // which are deleted below before it is dropped.
            .add(
                unsafe { caploop::Source::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&relay.tap)) },
                Interest::READ,
                TAP_RIGHTS,
                on_tap,
            )
            .map_err(|e| format!("registering the tap: {e}"))?,
    );
    relay.sock_h = Some(
        reactor
            // SAFETY: as above.
            .add(
                unsafe {
                    caploop::Source::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&relay.sock))
                },
                Interest::READ,
                Rights::SOCKET,
                on_sock,
            )
            .map_err(|e| format!("registering the socket: {e}"))?,
    );

    let res = reactor.run(&mut relay).map_err(|e| e.to_string());
    for h in [relay.tap_h.take(), relay.sock_h.take()]
        .into_iter()
        .flatten()
    {
        let _ = reactor.delete(h);
    }
    res?;
    eprintln!(
        "tap_stream_relay: peer hung up; frames tap->socket {}, socket->tap {}, dropped by the tap {}",
        relay.frames_out, relay.frames_in, relay.tap_dropped
    );
    match relay.failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
