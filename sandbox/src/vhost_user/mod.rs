//! `--vhost-user PATH`: a vhost-user-net back end. The helper listens on
//! PATH, the VMM (`-chardev socket,path=PATH -netdev vhost-user,chardev=..`)
//! connects, hands over the guest's memory and one eventfd per ring
//! direction, and from then on frames go through the virtio rings in the
//! shared memory: no frame crosses a socket, and the guest may send and
//! receive TCP super-frames behind a virtio-net header.
//!
//! All of it runs on the serve loop's one reactor: the socket is the
//! link's descriptor (whole messages, handled by the `vhost` crate's
//! [`BackendReqHandler`] and our [`device::Handler`]), the
//! kick eventfds are registrations [`VhostRx`] adds as they arrive, and the
//! call eventfds are written after buffers are used. Frames from libslirp
//! queue in [`VhostTx`] and go into the receive ring once per round.
//!
//! The socket is never read by the vhost crate directly: [`gate`] reads
//! whole messages off it without waiting, checks their size and
//! descriptors, and hands them to the crate over a socketpair; replies
//! wait in a bounded queue until the VMM reads them (a VMM that reads none
//! for 5 s is dropped). The kick and call eventfds the VMM hands over are
//! made non-blocking (their file status flags are shared with the VMM;
//! QEMU's are non-blocking already): a call eventfd at its maximum count
//! is skipped, never waited on, and a kick that hangs up, reports an
//! error or end of file, or stays readable however often it is read (a
//! semaphore eventfd) ends the session with exit 1. A fault in the
//! guest's memory (a memory file truncated under a live ring, or one
//! whose pages cannot be backed: a full tmpfs, no huge pages) ends the
//! helper with exit 1 and a line naming the region ([`faults`]).
//!
//! Known limits:
//! - a VMM that sends part of a message stalls only its own guest's
//!   network until the rest comes (SIGTERM still ends the helper);
//! - a region past its file's end when it arrives is refused (`fstat`);
//!   one that faults later ends the session as above;
//! - QEMU sends `SET_VRING_ENABLE 1` before `SET_FEATURES`, which the
//!   vhost crate refuses; rings are therefore enabled unless disabled
//!   after negotiation;
//! - QEMU 7.2 under TCG crashes (in `msix_set_vector_notifiers`) starting
//!   a vhost-user device with MSI-X: give it `virtio-net-pci,vectors=0`;
//! - one connection per helper: when the VMM hangs up the helper exits.
//!   The other way round works as QEMU expects: a helper restarted on the
//!   same path under a running guest (QEMU with `-chardev
//!   socket,...,reconnect=1`) is handed the same memory and rings with
//!   the indices QEMU kept, and serves the guest again; what the old
//!   helper held (TCP connections, NAT state) is gone, the guest's lease
//!   and addresses stay valid.

mod device;
mod faults;
mod gate;
mod rings;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caploop::frame::queue::{FrameQueue, Limits, WhenFull};
use caploop::net::offload::Coalescer;
use caploop::reactor::{Event, Handle, Interest, Reactor};
use caploop::Rights;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
};

use crate::core::Core;
use crate::error::ServeError;
use crate::link::{Arrival, LinkCounters, Tx};
use crate::source::{Link, Source};
use crate::startup;

pub use device::{Device, Handler};
use gate::{Gate, Step};

/// Frames held for the guest while its receive ring is full or not yet
/// set up; past this (or [`OUTBOX_BYTES`]) the oldest are dropped and
/// counted.
const OUTBOX_LIMIT: usize = 4096;
/// Bytes held for the guest at most (records of up to 64 KiB: 4,096 of
/// them would be 256 MiB for a guest that posts no receive buffers).
const OUTBOX_BYTES: usize = 16 << 20;
/// Bytes waiting past which the link counts as full: the own TCP path
/// keeps what it would send in its flows' buffers (no copy, no drop) until
/// the guest's buffers take the outbox (its kick writes it).
const OUTBOX_FULL: usize = 1 << 20;
/// Messages handled per wake-up of the socket; the rest wait for the next
/// round (the socket stays readable), so a flood cannot starve the rings.
const MESSAGES_PER_WAKEUP: usize = 32;
/// Reads of a kick eventfd per wake-up: an eventfd is empty after one (a
/// semaphore one after as many as its count); one still readable after
/// this many would wake the loop forever.
const KICK_READS: usize = 64;

/// Listens on `path`, waits for the VMM's connection, removes the socket
/// file and returns the link. `mtu` is what the config space reports;
/// `offload`: offer checksum and TSO offloads ([`device::OFFLOADS`]).
pub fn open(path: &Path, mtu: usize, offload: bool) -> Result<Link, ServeError> {
    let err = |what: String| move |source| ServeError::Link { what, source };
    startup::close_other_fds(&[])?;
    startup::clear_socket_path(path, "--vhost-user")?;
    let listener =
        startup::listen_private(path).map_err(err(format!("listening on {}", path.display())))?;
    eprintln!(
        "caploop-sandbox: waiting for the VMM on {p}: qemu-system-x86_64 ... \
         -object memory-backend-memfd,id=mem,size=RAM,share=on -numa node,memdev=mem \
         -chardev socket,id=c,path={p},reconnect=1 -netdev vhost-user,id=n0,chardev=c \
         -device virtio-net-pci,netdev=n0",
        p = path.display()
    );
    let (conn, _) = listener
        .accept()
        .map_err(err(format!("accepting on {}", path.display())))?;
    drop(listener);
    if let Err(e) = std::fs::remove_file(path) {
        log::warn!("removing {}: {e}", path.display());
    }
    faults::install().map_err(err("installing the guest-memory fault handler".into()))?;
    // The reactor polls a second descriptor for the socket; the gate reads
    // and writes the first.
    let polled = conn
        .try_clone()
        .map_err(err("duplicating the vhost-user socket".into()))?;
    link(OwnedFd::from(polled), conn, mtu, offload)
}

/// The link for a connected vhost-user socket: `polled` (a duplicate of
/// `conn`) is what the reactor watches.
pub fn link(
    polled: OwnedFd,
    conn: std::os::unix::net::UnixStream,
    mtu: usize,
    offload: bool,
) -> Result<Link, ServeError> {
    let offered = if offload {
        device::OFFERED
    } else {
        device::OFFERED & !device::OFFLOADS
    };
    let (gate, crate_end) = Gate::new(conn).map_err(|source| ServeError::Link {
        what: "setting up the vhost-user socket".into(),
        source,
    })?;
    let dev = Rc::new(RefCell::new(Device::new(
        u16::try_from(mtu).unwrap_or(u16::MAX),
        offered,
    )));
    // The vhost crate takes its handler as `Arc<impl ..ReqHandler>`; it
    // never leaves this thread.
    #[allow(clippy::arc_with_non_send_sync)]
    let handler = Arc::new(Mutex::new(Handler { dev: dev.clone() }));
    let out = Rc::new(RefCell::new(Outbox::default()));
    let gate = Rc::new(RefCell::new(gate));
    Ok(Link {
        source: Box::new(VhostSource {
            polled,
            rx: VhostRx {
                req: BackendReqHandler::from_stream(crate_end, handler),
                gate: gate.clone(),
                dev: dev.clone(),
                out: out.clone(),
                core: None,
                kicks: [None, None],
                deadline_armed: Rc::new(Cell::new(false)),
            },
        }),
        tx: Box::new(VhostTx { dev, out, gate }),
    })
}

/// The link's source: the socket's messages (through the gate) on the
/// polled duplicate, and the kick eventfds registered as they arrive.
struct VhostSource {
    polled: OwnedFd,
    rx: VhostRx,
}

impl Source for VhostSource {
    /// The VMM's socket as the gate reads and writes it, and the gate's
    /// pair (our end and the vhost crate's), which carry descriptors.
    fn plan(&self) -> Vec<(RawFd, Rights, &'static str)> {
        let g = self.rx.gate.borrow();
        vec![
            (g.vmm_fd(), Rights::SOCKET, "vhost-user socket"),
            (
                g.inner_fd(),
                Rights::SOCKET | Rights::SENDMSG,
                "vhost-user gate (ours)",
            ),
            (
                self.rx.req.as_raw_fd(),
                Rights::SOCKET | Rights::SENDMSG,
                "vhost-user gate (the vhost crate's)",
            ),
        ]
    }

    fn register(self: Box<Self>, r: &mut Reactor<()>, core: Core) -> Result<Handle, ServeError> {
        let VhostSource { polled, mut rx } = *self;
        rx.core = Some(core.clone());
        let h = r.add(polled, Interest::READ, Rights::SOCKET, move |r, _, ev| {
            if ev.writable && !core.flush_now(r) {
                return;
            }
            if !(ev.readable || ev.hangup || ev.error) {
                return;
            }
            match rx.messages(r) {
                Ok(true) => {}
                Ok(false) => core.hung_up(r),
                Err(e) => core.end(r, Err(e)),
            }
        })?;
        Ok(h)
    }
}

/// Frames on their way to the guest, and how to frame them.
struct Outbox {
    /// Records: a 10-byte virtio-net header, then the frame.
    queue: FrameQueue,
    /// Merges a round's TCP segments of the families the guest takes
    /// (GUEST_TSO4, GUEST_TSO6); with neither, it only puts each frame
    /// behind an empty header.
    gso: Coalescer,
    /// What `gso` merges: (GUEST_TSO4, GUEST_TSO6).
    merging: (bool, bool),
    /// Records merged by coalescers replaced since.
    merged_before: u64,
    counters: LinkCounters,
    /// The receive ring broke the rules (why): the session ends.
    broken: Option<String>,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox {
            queue: FrameQueue::new(Limits {
                frames: OUTBOX_LIMIT,
                bytes: OUTBOX_BYTES,
                when_full: WhenFull::DropOldest,
            }),
            gso: Coalescer::new(false, false),
            merging: (false, false),
            merged_before: 0,
            counters: LinkCounters::default(),
            broken: None,
        }
    }
}

impl Outbox {
    /// Queues a frame (or holds a TCP segment for the next one): records
    /// are a 10-byte header then the frame, as [`Coalescer`] emits them;
    /// the header is widened to the negotiated one when written.
    fn push(&mut self, frame: &[u8]) {
        let queue = &mut self.queue;
        self.gso.push(frame, &mut |hdr, f| {
            queue.push(&[hdr, f]);
        });
    }

    /// Whether what waits for the guest's buffers is past [`OUTBOX_FULL`].
    fn full(&self) -> bool {
        self.queue.byte_len() >= OUTBOX_FULL
    }

    /// Queues a super-segment made for the guest's GSO as it is, after
    /// whatever is pending before it.
    fn push_offloaded(&mut self, hdr: &[u8], frame: &[u8]) {
        self.seal();
        self.queue.push(&[hdr, frame]);
    }

    /// Hands on a pending merged run.
    fn seal(&mut self) {
        let queue = &mut self.queue;
        self.gso.finish(&mut |hdr, f| {
            queue.push(&[hdr, f]);
        });
        self.counters.merged = self.merged_before + self.gso.merged();
    }

    /// Merges the families the guest now takes.
    fn merge(&mut self, tso: (bool, bool)) {
        if tso != self.merging {
            self.seal();
            self.merged_before += self.gso.merged();
            self.gso = Coalescer::new(tso.0, tso.1);
            self.merging = tso;
        }
    }

    /// What it counted, with the records dropped for room.
    fn counters(&self) -> LinkCounters {
        let mut c = self.counters;
        c.dropped += self.queue.dropped();
        c
    }

    /// Writes what fits into the receive ring.
    fn write(&mut self, dev: &mut Device) -> Result<(), rings::RingError> {
        self.seal();
        let (hdr_len, mrg) = (dev.hdr_len(), dev.has(VIRTIO_NET_F_MRG_RXBUF));
        let Device { mem, vrings, .. } = dev;
        let Some(mem) = mem.as_ref() else {
            return Ok(());
        };
        let done = rings::fill_rx(&mut vrings[device::RX], mem, hdr_len, mrg, &mut self.queue)?;
        self.counters.frames_out += done.frames;
        self.counters.bytes_out += done.bytes;
        self.counters.dropped += done.dropped;
        Ok(())
    }
}

/// The receiving half: the vhost-user socket's messages (through the
/// [`Gate`]), and the kick eventfds registered as they arrive.
pub struct VhostRx {
    /// The vhost crate's side, reading our end of the gate's pair.
    req: BackendReqHandler<Mutex<Handler>>,
    gate: Rc<RefCell<Gate>>,
    dev: Rc<RefCell<Device>>,
    out: Rc<RefCell<Outbox>>,
    core: Option<Core>,
    kicks: [Option<Handle>; 2],
    /// A timer watches replies the VMM has not read.
    deadline_armed: Rc<Cell<bool>>,
}

impl VhostRx {
    /// Has the crate handle the message the gate just passed on.
    fn message(&mut self) -> Result<(), ServeError> {
        match self.req.handle_request() {
            Ok(()) => Ok(()),
            // QEMU disables the rings (SET_VRING_ENABLE 0) before it
            // accepts any feature; the crate refuses that for want of
            // PROTOCOL_FEATURES, after reading the whole message and
            // without a reply to send. Rings start disabled anyway.
            Err(e @ VuError::InactiveFeature(_)) => {
                log::debug!("vhost-user: ignored: {e}");
                Ok(())
            }
            Err(VuError::PartialMessage) => Err(vhost_err("a message was cut short".into())),
            Err(e) => Err(vhost_err(format!("a message was refused: {e}"))),
        }
    }

    /// Brings the reactor's kick registrations and the outbox's framing in
    /// line with what the last message changed.
    fn sync(&mut self, r: &mut Reactor<()>) -> Result<(), ServeError> {
        let mut dev = self.dev.borrow_mut();
        {
            let mut out = self.out.borrow_mut();
            let tso = (
                dev.has(VIRTIO_NET_F_GUEST_TSO4),
                dev.has(VIRTIO_NET_F_GUEST_TSO6),
            );
            out.merge(tso);
        }
        for i in std::mem::take(&mut dev.stopped) {
            if let Some(h) = self.kicks[i].take() {
                // Dropping the descriptor closes it.
                let _ = r.delete(h)?;
            }
        }
        let kicks = std::mem::take(&mut dev.new_kicks);
        drop(dev);
        let Some(core) = self.core.clone() else {
            return Ok(());
        };
        for (i, file) in kicks {
            let file = Rc::new(file);
            let cb = kick_callback(
                i,
                file.clone(),
                self.dev.clone(),
                self.out.clone(),
                core.clone(),
            );
            let h = r.add(file, Interest::READ, Rights::READ_ONLY, cb)?;
            self.kicks[i] = Some(h);
        }
        Ok(())
    }

    /// While replies wait for the VMM, a timer checks that it reads them
    /// within the gate's deadline, and ends the session if not.
    fn watch_replies(&mut self, r: &mut Reactor<()>) {
        if !self.gate.borrow().pending() || self.deadline_armed.get() {
            return;
        }
        let Some(core) = self.core.clone() else {
            return;
        };
        let (gate, armed) = (self.gate.clone(), self.deadline_armed.clone());
        armed.set(true);
        r.add_timer(Duration::from_secs(1), move |r, _, h| {
            let g = gate.borrow();
            if let Some(e) = g.overdue(Instant::now()) {
                core.end(r, Err(vhost_err(e.to_string())));
            } else if g.pending() && r.rearm_timer(h, Duration::from_secs(1)).is_ok() {
                return;
            }
            armed.set(false);
        });
    }
}

fn vhost_err(what: String) -> ServeError {
    ServeError::Link {
        what: "vhost-user".into(),
        source: io::Error::new(io::ErrorKind::InvalidData, what),
    }
}

/// The name of ring `i`, for errors.
fn ring_name(i: usize) -> &'static str {
    if i == device::TX {
        "transmit"
    } else {
        "receive"
    }
}

/// Empties a kick eventfd (non-blocking, see [`device`]): an error names
/// what is wrong with it.
fn drain_kick(kick: &File, ev: Event) -> Result<(), String> {
    let mut count = [0u8; 8];
    for _ in 0..KICK_READS {
        match (&*kick).read(&mut count) {
            Ok(0) => {
                return Err(
                    "end of file (a pipe or socket whose writer is gone, not an eventfd)".into(),
                )
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return if ev.hangup || ev.error {
                    Err("it hung up or reported an error".into())
                } else {
                    Ok(())
                };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading it: {e}")),
        }
    }
    Err(format!(
        "still readable after {KICK_READS} reads (a semaphore eventfd, or a pipe kept full?)"
    ))
}

/// What a kick on ring `i` does: drain the transmit ring into the stack,
/// or fill the receive ring the guest just gave buffers to.
fn kick_callback(
    i: usize,
    kick: Rc<File>,
    dev: Rc<RefCell<Device>>,
    out: Rc<RefCell<Outbox>>,
    core: Core,
) -> impl FnMut(&mut Reactor<()>, &mut (), Event) + 'static {
    let mut buf = Vec::with_capacity(rings::MAX_TX);
    let mut stats = rings::TxStats::default();
    move |r, _, ev| {
        if let Err(why) = drain_kick(&kick, ev) {
            let what = format!("the {} ring's kick descriptor: {why}", ring_name(i));
            core.end(r, Err(vhost_err(what)));
            return;
        }
        let res = if i == device::TX {
            let mut d = dev.borrow_mut();
            let hdr_len = d.hdr_len();
            let Device { mem, vrings, .. } = &mut *d;
            match mem.as_ref() {
                Some(mem) => rings::drain_tx(
                    &mut vrings[device::TX],
                    mem,
                    hdr_len,
                    &mut buf,
                    &mut stats,
                    &mut |frame, kind, partial| {
                        core.deliver(Arrival::offloaded(kind, partial, frame))
                    },
                ),
                None => Ok(()),
            }
        } else {
            out.borrow_mut().write(&mut dev.borrow_mut())
        };
        core.settle(r);
        if let Err(e) = res {
            core.end(r, Err(vhost_err(e.0)));
        }
    }
}

impl VhostRx {
    /// Reads what the socket has (a bounded number of whole messages),
    /// has each handled, and registers what they changed. `Ok(false)` once
    /// the VMM hung up.
    fn messages(&mut self, reactor: &mut Reactor<()>) -> Result<bool, ServeError> {
        let gate_err = |e: gate::GateError| vhost_err(e.to_string());
        let mut alive = true;
        for _ in 0..MESSAGES_PER_WAKEUP {
            let step = self.gate.borrow_mut().next_message().map_err(gate_err)?;
            match step {
                Step::Wait => break,
                Step::HungUp => {
                    alive = false;
                    break;
                }
                Step::Passed(_) => {}
            }
            self.message()?;
            self.gate.borrow_mut().take_replies().map_err(gate_err)?;
            self.sync(reactor)?;
        }
        self.watch_replies(reactor);
        Ok(alive)
    }
}

/// The sending half: frames from libslirp wait in the outbox and go into
/// the receive ring once per round (or when the guest adds buffers);
/// replies the VMM's socket could not take wait in the gate, and only
/// they make the loop watch the socket for writability.
pub struct VhostTx {
    dev: Rc<RefCell<Device>>,
    out: Rc<RefCell<Outbox>>,
    gate: Rc<RefCell<Gate>>,
}

impl Tx for VhostTx {
    fn push(&mut self, frame: &[u8]) {
        self.out.borrow_mut().push(frame);
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Ok(mut dev) = self.dev.try_borrow_mut() {
            let mut out = self.out.borrow_mut();
            if let Err(e) = out.write(&mut dev) {
                // Taken by `failure`, which ends the session with it.
                out.broken = Some(e.0);
            }
        }
        match self.gate.try_borrow_mut() {
            Ok(mut g) => g.flush(),
            Err(_) => Ok(()),
        }
    }

    fn pending(&self) -> bool {
        self.gate.try_borrow().is_ok_and(|g| g.pending())
    }

    fn full(&self) -> bool {
        self.out.try_borrow().is_ok_and(|o| o.full())
    }

    fn offloads(&self) -> (bool, bool) {
        self.out.try_borrow().map_or((false, false), |o| o.merging)
    }

    fn push_offloaded(&mut self, hdr: &[u8], frame: &[u8]) {
        self.out.borrow_mut().push_offloaded(hdr, frame);
    }

    fn failure(&mut self) -> Option<ServeError> {
        self.out.borrow_mut().broken.take().map(vhost_err)
    }

    fn counters(&self) -> LinkCounters {
        self.out.borrow().counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest that posts no receive buffers: the outbox says full past
    /// a mebibyte (the own TCP path then holds back) and never holds more
    /// than its byte bound, dropping and counting the oldest beyond it.
    #[test]
    fn the_outbox_is_full_past_a_mebibyte_and_bounded_in_bytes() {
        let mut o = Outbox::default();
        let (hdr, frame) = ([0u8; 10], vec![7u8; 60_000]);
        for _ in 0..17 {
            o.push_offloaded(&hdr, &frame);
        }
        assert!(!o.full(), "{} bytes", o.queue.byte_len());
        o.push_offloaded(&hdr, &frame);
        assert!(o.full(), "{} bytes", o.queue.byte_len());
        for _ in 0..1000 {
            o.push_offloaded(&hdr, &frame);
        }
        assert!(
            o.queue.byte_len() <= OUTBOX_BYTES,
            "{} bytes",
            o.queue.byte_len()
        );
        assert!(o.counters().dropped > 700, "{:?}", o.counters());
    }
}
