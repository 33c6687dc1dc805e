//! The state one libslirp instance shares with the closures it puts in
//! the reactor ([`Inner`]): the instance, its registrations, its timers,
//! its poll set, its counters and its sink. Everything else in the module
//! builds on this file: `poll.rs` (the poll round), `timers.rs` (libslirp
//! timers as reactor timers) and `stack.rs` (the public [`Stack`](super::Stack)).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::os::raw::c_int;
use std::rc::Rc;

use super::callbacks::{Op, Shared, TimerKind};
use super::config::{CConfig, Config};
use super::ffi;
use super::reass::Reassembler;
use crate::frame::vnet_hdr::{complete, VnetHdr, GSO_TCPV4, GSO_TCPV6};
use crate::reactor::{Handle, Interest, PrepareHandle, Reactor, TimerHandle};

/// Ethernet header length: the shortest frame accepted.
pub use crate::frame::ETH_HLEN;

/// What a [`Stack`](super::Stack) has done, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames from the guest handed to libslirp or taken by the own TCP
    /// path ([`Stack::tcp_counters`](super::Stack::tcp_counters) counts
    /// the path's alone).
    pub frames_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Frames from libslirp or the own TCP path handed to the sink.
    pub frames_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// TCP super-segments (TSO) taken in
    /// ([`Stack::input_segment`](super::Stack::input_segment)): IPv4 ones
    /// whole, IPv6 ones cut into MRU-sized segments.
    pub segments_in: u64,
    /// Frames from the guest shorter than an Ethernet header, dropped.
    pub dropped_runt: u64,
    /// Frames from the guest longer than MRU + 14 (and not a TCP
    /// super-segment given as one), dropped.
    pub dropped_oversize: u64,
    /// ARP, IPv4 or IPv6 frames too short for their own header, dropped.
    pub dropped_malformed: u64,
    /// IPv4 fragments from the guest (held for reassembly).
    pub fragments_in: u64,
    /// Datagrams reassembled from them and handed to libslirp whole.
    pub reassembled: u64,
    /// Fragments dropped: malformed, overlapping, too long, or more than
    /// the reassembly limits allow (see [`reass`](super::reass)).
    pub dropped_fragments: u64,
    /// Frames given after the stack was closed, dropped.
    pub dropped_closed: u64,
    /// TCP segments from the guest whose urgent data (URG, urgent
    /// pointer) was cleared before libslirp saw them.
    pub urgent_cleared: u64,
    /// Guest misbehaviour libslirp reported.
    pub guest_errors: u64,
    /// Reactor calls that failed while syncing libslirp's sockets (logged).
    pub reactor_errors: u64,
}

/// One libslirp socket's reactor registration.
pub(crate) struct Reg {
    pub handle: Handle,
    pub interest: Interest,
    pub enabled: bool,
    /// The sync generation that last saw this descriptor.
    pub seen: u64,
}

/// The stack's reactor-side bookkeeping. Borrowed only between libslirp
/// calls, never across one and never while the sink runs.
#[derive(Default)]
pub(crate) struct State {
    pub regs: HashMap<RawFd, Reg>,
    pub poll: PollCtx,
    pub timers: HashMap<usize, SlirpTimer>,
    pub poll_timer: Option<TimerHandle>,
    pub prepare: Option<PrepareHandle>,
    /// The poll timer is armed to fire this round (readiness was recorded).
    pub poll_now: bool,
    pub gen: u64,
    /// Registrations, timers and hook have been removed from the reactor.
    pub torn_down: bool,
    /// Descriptors the reactor refused to register (said once each).
    pub refused: std::collections::HashSet<RawFd>,
}

/// Where frames for the guest go.
pub(crate) type Sink = Box<dyn FnMut(&[u8])>;

/// The embedder's link that takes offloads: whether it takes TCP
/// super-segments now (IPv4, IPv6), and where a frame goes with its
/// virtio-net header.
pub(crate) struct Offload {
    pub takes: Box<dyn FnMut() -> (bool, bool)>,
    pub sink: OffloadSink,
}

/// Where a frame goes with its virtio-net header: `(header, frame)`.
pub(crate) type OffloadSink = Box<dyn FnMut(&[u8], &[u8])>;

/// Everything the stack owns, shared (by `Rc`) between the [`Stack`] handle
/// and the closures it puts in the reactor.
pub(crate) struct Inner {
    pub slirp: Cell<*mut ffi::Slirp>,
    pub in_slirp: Cell<bool>,
    /// The Stack handle was dropped; the next prepare hook tears down.
    pub closing: Cell<bool>,
    pub shared: Box<Shared>,
    /// Kept for the instance's life: libslirp keeps the outbound pointers.
    pub _cconfig: CConfig,
    pub config: Config,
    pub state: RefCell<State>,
    pub reass: RefCell<Reassembler>,
    pub sink: RefCell<Sink>,
    pub counters: Cell<Counters>,
    /// The own TCP path ([`TcpMode::Own`](crate::tcp::TcpMode)).
    pub tcp: Option<RefCell<crate::tcp::Path>>,
    /// The embedder's word on whether its link toward the guest is full.
    pub link_full: RefCell<Option<Box<dyn FnMut() -> bool>>>,
    /// The embedder's link that takes offloads, if it said so.
    pub offload: RefCell<Option<Offload>>,
}

impl Inner {
    /// Runs `f` with the instance unless the stack is closed or already
    /// inside libslirp (libslirp is not re-entrant).
    pub fn call<R>(&self, f: impl FnOnce(*mut ffi::Slirp) -> R) -> Option<R> {
        let s = self.slirp.get();
        if s.is_null() || self.in_slirp.get() {
            return None;
        }
        self.in_slirp.set(true);
        let r = f(s);
        self.in_slirp.set(false);
        Some(r)
    }

    pub fn is_open(&self) -> bool {
        !self.slirp.get().is_null()
    }

    pub fn count(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// Hands queued frames to the sink. A nested call (the sink fed a frame
    /// back in) leaves them to the outer loop.
    pub fn drain_frames(&self) {
        let Ok(mut sink) = self.sink.try_borrow_mut() else {
            return;
        };
        while let Some(frame) = self.shared.pop_frame() {
            self.count(|c| {
                c.frames_out += 1;
                c.bytes_out += frame.len() as u64;
            });
            sink(&frame);
            self.shared.recycle(frame);
        }
    }

    /// Applies what libslirp asked for during the last calls, then hands
    /// out frames. Run right after every libslirp call made with the
    /// reactor at hand.
    pub fn after_call<D: 'static>(self: &Rc<Self>, r: &mut Reactor<D>) {
        self.apply(r);
        self.drain_frames();
    }

    /// Applies queued socket and timer operations to the reactor.
    pub fn apply<D: 'static>(self: &Rc<Self>, r: &mut Reactor<D>) {
        let ops = self.shared.take_ops();
        if ops.is_empty() {
            return;
        }
        let Ok(mut st) = self.state.try_borrow_mut() else {
            return;
        };
        for op in ops {
            match op {
                Op::Register(fd) => log::trace!("slirp: fd {fd} opened"),
                Op::Unregister(fd) => {
                    // libslirp has closed the descriptor by now; it was
                    // taken out of the event queue while still open, in
                    // the callback itself (`Shared::detacher`), so this
                    // only frees the registration.
                    if let Some(reg) = st.regs.remove(&fd) {
                        let _ = r.delete(reg.handle);
                    }
                    st.poll.revents.remove(&fd);
                    st.refused.remove(&fd);
                }
                op => self.apply_timer_op(&mut st, r, op),
            }
        }
    }

    /// Removes everything the stack put in the reactor.
    pub fn teardown<D: 'static>(&self, r: &mut Reactor<D>) {
        let _ = self.shared.take_ops();
        self.shared.clear_frames();
        let Ok(mut st) = self.state.try_borrow_mut() else {
            return;
        };
        if st.torn_down {
            return;
        }
        st.torn_down = true;
        for (_, reg) in st.regs.drain() {
            let _ = r.delete(reg.handle);
        }
        for (_, t) in st.timers.drain() {
            let _ = r.cancel_timer(t.handle);
        }
        if let Some(h) = st.poll_timer.take() {
            let _ = r.cancel_timer(h);
        }
        if let Some(h) = st.prepare.take() {
            r.remove_prepare(h);
        }
        if let Some(p) = &self.tcp {
            if let Ok(mut p) = p.try_borrow_mut() {
                p.teardown(r);
            }
        }
    }

    /// One round of the own TCP path, its frames handed to the sink (or,
    /// made for a link that takes offloads, to its offload sink; finished
    /// here if that link no longer takes them).
    pub fn run_tcp<D: 'static>(&self, r: &mut Reactor<D>) {
        let Some(p) = &self.tcp else {
            return;
        };
        let Ok(mut p) = p.try_borrow_mut() else {
            return;
        };
        let mut offload = self.offload.try_borrow_mut().ok();
        let takes = offload
            .as_mut()
            .and_then(|o| o.as_mut())
            .map_or((false, false), |o| (o.takes)());
        p.set_offload(takes);
        let mut drain = |out: &mut crate::tcp::Frames| {
            if !out.is_empty() {
                if let Ok(mut sink) = self.sink.try_borrow_mut() {
                    out.hand_over(|frame, hdr| {
                        self.count(|c| {
                            c.frames_out += 1;
                            c.bytes_out += frame.len() as u64;
                        });
                        let Some(hdr) = hdr else {
                            sink(frame);
                            return;
                        };
                        let taken = VnetHdr::parse(hdr).map(|h| match h.gso_type {
                            GSO_TCPV4 => (h, takes.0),
                            GSO_TCPV6 => (h, takes.1),
                            _ => (h, false),
                        });
                        let done = match (taken, offload.as_mut().and_then(|o| o.as_mut())) {
                            (Ok((_, true)), Some(o)) => {
                                (o.sink)(hdr, frame);
                                Ok(())
                            }
                            // The link stopped taking them: cut here.
                            (Ok((h, _)), _) => complete(&h, frame, &mut |f| sink(f)).map(drop),
                            (Err(e), _) => Err(e),
                        };
                        if let Err(e) = done {
                            log::debug!("tcp: a frame for the guest: {e}");
                        }
                    });
                }
            }
            self.link_full()
        };
        p.run(r, &mut drain);
    }

    /// Whether the embedder's link toward the guest is full
    /// ([`Stack::set_link_full`](super::Stack::set_link_full)).
    fn link_full(&self) -> bool {
        self.link_full
            .try_borrow_mut()
            .ok()
            .and_then(|mut f| f.as_mut().map(|f| f()))
            .unwrap_or(false)
    }

    /// Destroys the libslirp instance (closing its sockets).
    pub fn cleanup(&self) {
        let s = self.slirp.get();
        if s.is_null() || self.in_slirp.get() {
            return;
        }
        self.slirp.set(std::ptr::null_mut());
        // SAFETY: `s` came from slirp_new and is cleaned up once (the
        // pointer is cleared first); no libslirp call is running.
        unsafe { ffi::slirp_cleanup(s) };
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Normally done by Stack's Drop; this covers the rest. `shared`,
        // which the callbacks use, is dropped only after this returns.
        self.cleanup();
    }
}

/// The poll set of one fill and the readiness recorded since.
#[derive(Default)]
pub(crate) struct PollCtx {
    /// What the last fill reported; the index is what libslirp asks about.
    pub entries: Vec<(RawFd, c_int)>,
    /// SLIRP_POLL_* bits seen per descriptor since the last poll.
    pub revents: HashMap<RawFd, c_int>,
}

/// One libslirp timer.
pub(crate) struct SlirpTimer {
    pub kind: TimerKind,
    pub handle: TimerHandle,
    /// When it is due on our clock (ms), if armed.
    pub expire_ms: Option<i64>,
}
