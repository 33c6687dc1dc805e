//! Two back ends wired to each other on one reactor: what one receives,
//! the other sends. A VMM's virtio-net device does this between its
//! guest's queues and its back end; [`Relay`] does it for a guest side
//! that is itself a back end (a tap in a network namespace, with the
//! kernel as the guest, as in the examples, tests and benches), so that
//! nobody writes the two receive callbacks by hand again.
//!
//! ```no_run
//! # #[cfg(target_os = "linux")]
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use caploop::net::relay::Relay;
//! use caploop::net::tap::{TapBackend, TapDevice};
//! use caploop::net::Netbe;
//! use caploop::Reactor;
//!
//! let mut reactor: Reactor<()> = Reactor::new()?;
//! let tap = TapDevice::open_in_netns("/var/run/netns/vm0".as_ref(), "tap0")?;
//! let relay = Relay::new(
//!     &mut reactor,
//!     |r, cb| Ok(Netbe::new(Box::new(TapBackend::register(tap, r, cb)?))),
//!     |r, cb| Netbe::open("slirp-helper,hostfwd=tcp:127.0.0.1:8080-:80", r, cb),
//! )?;
//! reactor.run(&mut ())?;
//! relay.close(&mut reactor)?;
//! # Ok(()) }
//! ```
//!
//! Both ends run without a virtio-net header and without offloads. A
//! frame an end cannot take now (`WouldBlock`) or at all (`FrameTooLong`,
//! a frame dropped on receive) is counted and dropped, as a NIC drops it;
//! any other error stops the relay (both ends stop receiving, so nothing
//! spins) and is kept in [`Relay::failure`], with the reactor stopped if
//! [`Relay::stop_on_failure`] asked for it.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, IoSliceMut};
use std::rc::Rc;

use super::{Error, Netbe, RxCallback, MAX_FRAME_LEN};
use crate::reactor::Reactor;

/// What a [`Relay`] moved and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayCounts {
    /// Frames from the first end sent to the second.
    pub a_to_b: u64,
    /// Frames from the second end sent to the first.
    pub b_to_a: u64,
    /// Frames dropped: the receiving end was full or could not carry them,
    /// or the sending end dropped one too long for any front end.
    pub dropped: u64,
}

struct Ends<D> {
    ends: [Option<Netbe<D>>; 2],
    buf: Vec<u8>,
    counts: RelayCounts,
    failure: Option<String>,
}

/// See the module docs.
pub struct Relay<D> {
    shared: Rc<RefCell<Ends<D>>>,
    stop_on_failure: Rc<Cell<bool>>,
}

impl<D> std::fmt::Debug for Relay<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.shared.borrow();
        f.debug_struct("Relay")
            .field("counts", &e.counts)
            .field("failure", &e.failure)
            .finish()
    }
}

/// How many frames one wake-up of an end moves at most (the rest wait for
/// the next round: the end stays readable).
const BURST: usize = 64;

impl<D: 'static> Relay<D> {
    /// Opens the two ends with the receive callbacks the relay needs
    /// (each `open` gets the reactor and its end's callback), sets both to
    /// no header and no offloads, and enables receive on both.
    pub fn new(
        reactor: &mut Reactor<D>,
        open_a: impl FnOnce(&mut Reactor<D>, RxCallback<D>) -> Result<Netbe<D>, Error>,
        open_b: impl FnOnce(&mut Reactor<D>, RxCallback<D>) -> Result<Netbe<D>, Error>,
    ) -> Result<Relay<D>, Error> {
        let shared = Rc::new(RefCell::new(Ends {
            ends: [None, None],
            buf: vec![0u8; MAX_FRAME_LEN],
            counts: RelayCounts::default(),
            failure: None,
        }));
        let stop = Rc::new(Cell::new(false));
        let callback = |from: usize| -> RxCallback<D> {
            let (shared, stop) = (Rc::clone(&shared), Rc::clone(&stop));
            Box::new(move |r, _| pump(&shared, from, r, stop.get()))
        };
        let mut a = open_a(reactor, callback(0))?;
        let mut b = match open_b(reactor, callback(1)) {
            Ok(b) => b,
            Err(e) => {
                let _ = a.close(reactor);
                return Err(e);
            }
        };
        for end in [&mut a, &mut b] {
            end.set_cap(0, 0)?;
            end.recv_enable(reactor)?;
        }
        shared.borrow_mut().ends = [Some(a), Some(b)];
        Ok(Relay {
            shared,
            stop_on_failure: stop,
        })
    }

    /// Whether a failure stops the reactor (default: no; it only stops
    /// the relay).
    pub fn stop_on_failure(&self, stop: bool) {
        self.stop_on_failure.set(stop);
    }

    /// What was moved and dropped so far.
    pub fn counts(&self) -> RelayCounts {
        self.shared.borrow().counts
    }

    /// Why the relay stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.borrow().failure.clone()
    }

    /// The pid of the helper process either end runs (`slirp-helper`).
    pub fn helper_pid(&self) -> Option<u32> {
        let e = self.shared.borrow();
        e.ends.iter().flatten().find_map(Netbe::helper_pid)
    }

    /// Closes both ends.
    pub fn close(self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        let ends = std::mem::take(&mut self.shared.borrow_mut().ends);
        let mut first = Ok(());
        for end in ends.into_iter().flatten() {
            if let Err(e) = end.close(reactor) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// Moves what end `from` has to the other end.
fn pump<D>(shared: &Rc<RefCell<Ends<D>>>, from: usize, r: &mut Reactor<D>, stop: bool) {
    let mut e = shared.borrow_mut();
    let Ends {
        ends,
        buf,
        counts,
        failure,
    } = &mut *e;
    if failure.is_some() {
        return;
    }
    let [a, b] = ends;
    let (src, dst) = match (from, a.as_mut(), b.as_mut()) {
        (0, Some(a), Some(b)) => (a, b),
        (_, Some(a), Some(b)) => (b, a),
        _ => return,
    };
    let what = if from == 0 { "first" } else { "second" };
    for _ in 0..BURST {
        let n = match src.recv(&mut [IoSliceMut::new(buf)]) {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(err) if dropped(&err) => {
                counts.dropped += 1;
                continue;
            }
            Err(err) => {
                return fail(failure, src, dst, r, stop, format!("the {what} end: {err}"));
            }
        };
        match dst.send(&[IoSlice::new(&buf[..n])]) {
            Ok(_) if from == 0 => counts.a_to_b += 1,
            Ok(_) => counts.b_to_a += 1,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock || too_long(&err) => {
                counts.dropped += 1
            }
            Err(err) => {
                let other = if from == 0 { "second" } else { "first" };
                return fail(
                    failure,
                    src,
                    dst,
                    r,
                    stop,
                    format!("the {other} end: {err}"),
                );
            }
        }
    }
}

fn fail<D>(
    failure: &mut Option<String>,
    src: &mut Netbe<D>,
    dst: &mut Netbe<D>,
    r: &mut Reactor<D>,
    stop: bool,
    why: String,
) {
    log::warn!("relay stopped: {why}");
    *failure = Some(why);
    let _ = src.recv_disable(r);
    let _ = dst.recv_disable(r);
    if stop {
        r.stop();
    }
}

fn net_error(e: &io::Error) -> Option<&Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<Error>())
}

/// A frame the sending end dropped (longer than any front end takes).
fn dropped(e: &io::Error) -> bool {
    matches!(net_error(e), Some(Error::FrameDropped { .. }))
}

/// A frame the receiving end cannot carry.
fn too_long(e: &io::Error) -> bool {
    matches!(net_error(e), Some(Error::FrameTooLong { .. }))
}
