//! `--vhost-user PATH`: a vhost-user-net back end. The helper listens on
//! PATH, the VMM (`-chardev socket,path=PATH -netdev vhost-user,chardev=..`)
//! connects, hands over the guest's memory and one eventfd per ring
//! direction, and from then on frames go through the virtio rings in the
//! shared memory: no frame crosses a socket, and the guest may send and
//! receive TCP super-frames behind a virtio-net header.
//!
//! All of it runs on the serve loop's one reactor: the socket is the
//! link's descriptor (one message per readable event, handled by the
//! `vhost` crate's [`BackendReqHandler`] and our [`device::Handler`]), the
//! kick eventfds are registrations [`VhostRx`] adds as they arrive, and the
//! call eventfds are written after buffers are used. Frames from libslirp
//! queue in [`VhostTx`] and go into the receive ring once per round.
//!
//! The socket stays blocking: `handle_request` reads one whole message
//! (header, body, descriptors), which the VMM sends at once.
//!
//! Known limits:
//! - a VMM that sends part of a message stalls the helper in `recvmsg`
//!   (SIGTERM waits behind it; closing the socket or SIGKILL ends it): the
//!   vhost crate retries a short read in a loop, so a non-blocking socket
//!   would spin instead;
//! - a VMM that shrinks a memory file it handed over can make the helper
//!   fault (SIGBUS) when a ring points past the new end; a region past the
//!   file's end when it arrives is refused (`fstat`);
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
mod rings;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use caploop::net::offload::{Coalescer, Offloaded, VNET_HDR_SIZE};
use caploop::reactor::{Handle, Interest, Reactor};
use caploop::Rights;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
};

use crate::error::ServeError;
use crate::link::{Arrival, Link, LinkCounters, LinkKind, Rx, Tx};
use crate::serve::Feed;
use crate::startup;

pub use device::{Device, Handler};

/// Frames held for the guest while its receive ring is full or not yet
/// set up; past this the oldest are dropped and counted.
const OUTBOX_LIMIT: usize = 4096;

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
    // The reactor polls a second descriptor for the socket; the vhost
    // crate reads and writes the first.
    let polled = conn
        .try_clone()
        .map_err(err("duplicating the vhost-user socket".into()))?;
    Ok(link(OwnedFd::from(polled), conn, mtu, offload))
}

/// The link for a connected vhost-user socket: `polled` (a duplicate of
/// `conn`) is what the reactor watches.
pub fn link(
    polled: OwnedFd,
    conn: std::os::unix::net::UnixStream,
    mtu: usize,
    offload: bool,
) -> Link {
    let offered = if offload {
        device::OFFERED
    } else {
        device::OFFERED & !device::OFFLOADS
    };
    let dev = Rc::new(RefCell::new(Device::new(
        u16::try_from(mtu).unwrap_or(u16::MAX),
        offered,
    )));
    // The vhost crate takes its handler as `Arc<impl ..ReqHandler>`; it
    // never leaves this thread.
    #[allow(clippy::arc_with_non_send_sync)]
    let handler = Arc::new(Mutex::new(Handler { dev: dev.clone() }));
    let out = Rc::new(RefCell::new(Outbox::default()));
    Link {
        fd: polled,
        kind: LinkKind::Socket,
        rx: Box::new(VhostRx {
            req: BackendReqHandler::from_stream(conn, handler),
            dev: dev.clone(),
            out: out.clone(),
            feed: None,
            kicks: [None, None],
        }),
        tx: Box::new(VhostTx { dev, out }),
    }
}

/// Frames on their way to the guest, and how to frame them.
#[derive(Default)]
struct Outbox {
    /// Records: a 10-byte virtio-net header, then the frame.
    queue: VecDeque<Vec<u8>>,
    /// GUEST_TSO4 or GUEST_TSO6 was accepted: a round's TCP segments of
    /// those families are merged.
    merge: Option<Coalescer>,
    /// What `merge` merges: (GUEST_TSO4, GUEST_TSO6).
    merging: (bool, bool),
    counters: LinkCounters,
    /// The receive ring broke the rules (why): the session ends.
    broken: Option<String>,
}

impl Outbox {
    /// Queues a record (a 10-byte header then the frame, as [`Coalescer`]
    /// emits them); the header is widened to the negotiated one when the
    /// record is written.
    fn enqueue(&mut self, rec: Vec<u8>) {
        if self.queue.len() >= OUTBOX_LIMIT {
            self.queue.pop_front();
            self.counters.dropped += 1;
        }
        self.queue.push_back(rec);
    }

    fn push(&mut self, frame: &[u8]) {
        if let Some(mut c) = self.merge.take() {
            c.push(frame, &mut |rec| self.enqueue(rec.to_vec()));
            self.merge = Some(c);
        } else {
            let mut rec = Vec::with_capacity(VNET_HDR_SIZE + frame.len());
            rec.extend_from_slice(&[0; VNET_HDR_SIZE]);
            rec.extend_from_slice(frame);
            self.enqueue(rec);
        }
    }

    /// Hands on a pending merged run.
    fn seal(&mut self) {
        if let Some(mut c) = self.merge.take() {
            c.finish(&mut |rec| self.enqueue(rec.to_vec()));
            self.counters.merged = c.merged();
            self.merge = Some(c);
        }
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

/// The receiving half: the vhost-user socket's messages, and the kick
/// eventfds registered as they arrive.
pub struct VhostRx {
    req: BackendReqHandler<Mutex<Handler>>,
    dev: Rc<RefCell<Device>>,
    out: Rc<RefCell<Outbox>>,
    feed: Option<Feed>,
    kicks: [Option<Handle>; 2],
}

impl VhostRx {
    /// Handles one message; `Ok(false)` once the VMM hung up.
    fn message(&mut self) -> Result<bool, ServeError> {
        match self.req.handle_request() {
            Ok(()) => Ok(true),
            Err(VuError::Disconnected) => Ok(false),
            // QEMU disables the rings (SET_VRING_ENABLE 0) before it
            // accepts any feature; the crate refuses that for want of
            // PROTOCOL_FEATURES, after reading the whole message and
            // without a reply to send. Rings start disabled anyway.
            Err(e @ VuError::InactiveFeature(_)) => {
                log::debug!("vhost-user: ignored: {e}");
                Ok(true)
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
            if tso != out.merging {
                out.seal();
                out.merging = tso;
                out.merge = (tso.0 || tso.1).then(|| Coalescer::new(tso.0, tso.1));
            }
        }
        for i in std::mem::take(&mut dev.stopped) {
            if let Some(h) = self.kicks[i].take() {
                // Dropping the descriptor closes it.
                let _ = r.delete(h)?;
            }
        }
        let kicks = std::mem::take(&mut dev.new_kicks);
        drop(dev);
        let Some(feed) = self.feed.clone() else {
            return Ok(());
        };
        for (i, file) in kicks {
            let file = Rc::new(file);
            let cb = kick_callback(
                i,
                file.clone(),
                self.dev.clone(),
                self.out.clone(),
                feed.clone(),
            );
            let h = r.add(file, Interest::READ, Rights::READ_ONLY, cb)?;
            self.kicks[i] = Some(h);
        }
        Ok(())
    }
}

fn vhost_err(what: String) -> ServeError {
    ServeError::Link {
        what: "vhost-user".into(),
        source: io::Error::new(io::ErrorKind::InvalidData, what),
    }
}

/// What a kick on ring `i` does: drain the transmit ring into the stack,
/// or fill the receive ring the guest just gave buffers to.
fn kick_callback(
    i: usize,
    kick: Rc<std::fs::File>,
    dev: Rc<RefCell<Device>>,
    out: Rc<RefCell<Outbox>>,
    feed: Feed,
) -> impl FnMut(&mut Reactor<()>, &mut (), caploop::reactor::Event) + 'static {
    let mut buf = Vec::with_capacity(rings::MAX_TX);
    let mut stats = rings::TxStats::default();
    move |r, _, _| {
        // Reset the eventfd's counter (it is non-blocking; a spurious
        // wake-up reads nothing).
        let mut count = [0u8; 8];
        let _ = (&*kick).read(&mut count);
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
                    &mut |frame, kind| {
                        feed.deliver(match kind {
                            Offloaded::Frame => Arrival::Frame(frame),
                            Offloaded::TcpSegment => Arrival::Segment(frame),
                        })
                    },
                ),
                None => Ok(()),
            }
        } else {
            out.borrow_mut().write(&mut dev.borrow_mut())
        };
        feed.settle(r);
        if let Err(e) = res {
            feed.end(r, Err(vhost_err(e.0)));
        }
    }
}

impl Rx for VhostRx {
    fn pull(
        &mut self,
        _hangup: bool,
        _deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> Result<bool, ServeError> {
        self.message()
    }

    fn attach(&mut self, feed: Feed) {
        self.feed = Some(feed);
    }

    /// The socket the vhost crate reads messages (with descriptors) from
    /// and sends replies on.
    fn unpolled(&self) -> Vec<(RawFd, Rights, &'static str)> {
        vec![(
            self.req.as_raw_fd(),
            Rights::SOCKET | Rights::SENDMSG,
            "vhost-user socket",
        )]
    }

    fn pull_with(
        &mut self,
        reactor: &mut Reactor<()>,
        _hangup: bool,
        _deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> Result<bool, ServeError> {
        let alive = self.message()?;
        self.sync(reactor)?;
        Ok(alive)
    }
}

/// The sending half: frames from libslirp wait in the outbox and go into
/// the receive ring once per round (or when the guest adds buffers).
/// Nothing here waits for the socket to be writable, so it never asks
/// the loop to watch for that.
pub struct VhostTx {
    dev: Rc<RefCell<Device>>,
    out: Rc<RefCell<Outbox>>,
}

impl Tx for VhostTx {
    fn push(&mut self, frame: &[u8]) {
        self.out.borrow_mut().push(frame);
    }

    fn flush(&mut self) -> io::Result<()> {
        let Ok(mut dev) = self.dev.try_borrow_mut() else {
            return Ok(());
        };
        let mut out = self.out.borrow_mut();
        if let Err(e) = out.write(&mut dev) {
            // Taken by `failure`, which ends the session with it.
            out.broken = Some(e.0);
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        false
    }

    fn failure(&mut self) -> Option<ServeError> {
        self.out.borrow_mut().broken.take().map(vhost_err)
    }

    fn counters(&self) -> LinkCounters {
        self.out.borrow().counters
    }
}
