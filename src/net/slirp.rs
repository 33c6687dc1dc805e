//! The `slirp` back end: libslirp in process, on the reactor
//! ([`crate::slirp::Stack`]), with bhyve's option syntax. Needs the `slirp`
//! feature (on by default); without it [`open`](super::open) refuses
//! `slirp` names as unsupported.
//!
//! bhyve's in-process back end runs libslirp on a second thread behind a
//! mutex and hands frames for the guest to the event loop through a
//! datagram socketpair. Here the stack runs on the loop itself, so frames
//! for the guest go into a bounded queue in memory ([`RX_QUEUE_FRAMES`]
//! frames, [`RX_QUEUE_BYTES`] bytes; what does not fit is counted and
//! dropped, as a full socketpair would drop it). There is no descriptor
//! that becomes readable when frames are queued, so the receive callback is
//! run from a zero-delay reactor timer, armed by a prepare hook at the start
//! of any round that finds frames queued while receive is enabled (and by
//! [`recv_enable`](NetBackend::recv_enable) itself). As with a
//! level-triggered descriptor, frames the front end leaves queued bring the
//! callback back on the next round.
//!
//! Frames from the guest take the sandboxed helper's way into the stack
//! ([`slirp::Inbound`], coalescing only): within one reactor round a
//! flow's run of in-order TCP segments goes in as one super-segment, so
//! libslirp makes one host `send()` and one ACK per run instead of one
//! per frame. What a round held goes in at the start of the next (the
//! same prepare hook), before the reactor waits. Pure ACKs are not
//! thinned here: measured, that cost this path 5-10% (see
//! [`Inbound::coalescing_only`]).
//!
//! The name is bhyve's backend string: `slirp` and then comma-separated
//! options, `slirp,hostfwd=tcp:127.0.0.1:2222-:22;udp::5353-:53,open`.
//! `hostfwd` takes rules in bhyve syntax separated by `;`; `open` (bare, or
//! with a bhyve boolean: `true`, `on`, `yes`, `1`, ...) lets the guest reach
//! the outside; `tcp=own` (the default) or `tcp=slirp` picks who serves
//! the guest's TCP (the own path, or libslirp alone: `crate::tcp`);
//! `vmname` is accepted. Any other key (a front-end option
//! such as `mac` included: a back end's name carries its own options
//! only), a key given twice, a bad rule or boolean is
//! [`Error::BadOption`] naming it, as for `slirp-helper`.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, IoSliceMut};
use std::rc::{Rc, Weak};
use std::time::Duration;

use super::backend::{refuse_offloads, NetBackend, RxCallback};
use super::options::SlirpKeys;
use super::vnet;
use super::Error;
use crate::frame::queue::{FrameQueue, Limits, WhenFull};
use crate::reactor::{PrepareHandle, Reactor, TimerHandle};
use crate::slirp::{self, Config, Inbound, Rule, Stack};
use crate::wire::HelperConfig;

/// Frames for the guest the back end queues at most.
pub const RX_QUEUE_FRAMES: usize = 1024;

/// Bytes of frames for the guest the back end queues at most.
pub const RX_QUEUE_BYTES: usize = 4 << 20;

/// The options of a `slirp` backend string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlirpOptions {
    /// The first field of the string (`slirp`).
    pub name: String,
    /// Host forwarding rules (`hostfwd`).
    pub hostfwd: Vec<Rule>,
    /// The guest may reach the outside (`open`).
    pub open: bool,
    /// The VM's name (`vmname`), unused.
    pub vmname: Option<String>,
    /// Who serves TCP (`tcp=own` or `tcp=slirp`; the default when absent,
    /// the own path).
    pub tcp: Option<slirp::TcpMode>,
    /// Keys given but not used, in order.
    pub ignored: Vec<String>,
}

impl SlirpOptions {
    /// Parses `slirp[,key[=value]]...` as bhyve splits a backend string: a
    /// key without a value is `true`. Each key at most once; an unknown
    /// one, a repeated one, a bad rule or boolean is
    /// [`Error::BadOption`] naming it (the same for `slirp-helper`).
    pub fn parse(s: &str) -> Result<SlirpOptions, Error> {
        let name = s.split(',').next().unwrap_or_default();
        if !name.starts_with("slirp") {
            return Err(Error::BadOption {
                backend: s.to_owned(),
                option: name.to_owned(),
                reason: "not a slirp backend".into(),
            });
        }
        let keys = SlirpKeys::parse(s, false)?;
        let hostfwd = match keys.hostfwd.as_deref() {
            Some(rules) if !rules.trim().is_empty() => {
                slirp::parse_rules(rules).map_err(|e| Error::BadOption {
                    backend: s.to_owned(),
                    option: "hostfwd".into(),
                    reason: e.to_string(),
                })?
            }
            _ => Vec::new(),
        };
        Ok(SlirpOptions {
            name: name.to_owned(),
            hostfwd,
            open: keys.open,
            vmname: keys.vmname,
            tcp: keys.tcp.as_deref().and_then(|t| t.parse().ok()),
            ignored: Vec::new(),
        })
    }

    /// The options of a decoded bhyve configuration (the helper's first
    /// record, or a backend string's options), for the back end `name`.
    pub fn from_helper(name: &str, cfg: HelperConfig) -> Result<SlirpOptions, slirp::RuleError> {
        let hostfwd = match cfg.hostfwd.as_deref() {
            Some(rules) if !rules.trim().is_empty() => slirp::parse_rules(rules)?,
            _ => Vec::new(),
        };
        Ok(SlirpOptions {
            name: name.to_owned(),
            hostfwd,
            open: cfg.open,
            vmname: cfg.vmname,
            tcp: cfg.tcp.as_deref().and_then(|t| t.parse().ok()),
            ignored: cfg.ignored,
        })
    }

    /// The stack configuration: bhyve's defaults, restricted unless
    /// `open`, TCP served as `tcp` says.
    pub fn config(&self) -> Config {
        let c = if self.open {
            Config::open()
        } else {
            Config::default()
        };
        Config {
            tcp: self.tcp.unwrap_or(c.tcp),
            ..c
        }
    }
}

fn slirp_error(name: &str, e: slirp::Error) -> Error {
    let kind = match &e {
        slirp::Error::Hostfwd { source, .. } => source.kind(),
        slirp::Error::Config(_) | slirp::Error::Rule(_) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    Error::io(format!("slirp backend {name:?}"), io::Error::new(kind, e))
}

/// What the receive queue has done, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxStats {
    /// Frames queued now.
    pub queued: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// Frames queued so far.
    pub enqueued: u64,
    /// Frames handed to the front end so far.
    pub delivered: u64,
    /// Frames dropped because the queue was full.
    pub dropped_full: u64,
    /// Receives that did not fit the front end's buffers (the frame stayed
    /// queued).
    pub too_big: u64,
    /// Times the receive callback ran.
    pub callbacks: u64,
}

/// The receive side, shared by the back end, the stack's sink, the prepare
/// hook and the kick timer. Its cells are never borrowed across a call out.
struct Rx {
    queue: RefCell<FrameQueue>,
    stats: Cell<RxStats>,
    enabled: Cell<bool>,
    /// The kick timer is armed.
    kick_armed: Cell<bool>,
    /// The back end was dropped without `close`: the hook cleans up.
    orphaned: Cell<bool>,
    prepare: Cell<Option<PrepareHandle>>,
}

impl Rx {
    fn stat(&self, f: impl FnOnce(&mut RxStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn pending(&self) -> bool {
        self.queue.try_borrow().is_ok_and(|q| !q.is_empty())
    }

    /// The stack's sink: queues one frame for the guest, or counts it
    /// dropped when the queue is full.
    fn push(&self, frame: &[u8]) {
        let Ok(mut q) = self.queue.try_borrow_mut() else {
            self.stat(|s| s.dropped_full += 1);
            return;
        };
        if q.push(&[frame]) {
            self.stat(|s| s.enqueued += 1);
        } else {
            self.stat(|s| s.dropped_full += 1);
        }
    }

    /// The counts, with the queue's size now.
    fn stats(&self) -> RxStats {
        let mut s = self.stats.get();
        if let Ok(q) = self.queue.try_borrow() {
            s.queued = q.len();
            s.queued_bytes = q.byte_len();
        }
        s
    }

    /// Arms the kick timer to fire this round if frames wait for an enabled
    /// receiver.
    fn kick<D>(&self, r: &mut Reactor<D>, timer: TimerHandle) {
        if self.enabled.get()
            && !self.kick_armed.get()
            && self.pending()
            && r.rearm_timer(timer, Duration::ZERO).is_ok()
        {
            self.kick_armed.set(true);
        }
    }
}

/// The `slirp` back end: a [`Stack`] on the reactor, with frames for the
/// guest queued for [`recv`](NetBackend::recv). It takes no virtio-net
/// header ([`Netbe`](super::Netbe) adapts the front end's).
///
/// Call [`close`](NetBackend::close) to remove it from the reactor;
/// dropping it instead leaves the clean-up to the reactor's next round.
pub struct SlirpBackend<D> {
    name: String,
    stack: Option<Rc<Stack>>,
    /// Guest frames held within a round (coalescing).
    inbound: Rc<RefCell<Inbound>>,
    rx: Rc<Rx>,
    kick: Option<TimerHandle>,
    /// Where a frame sent in several pieces is gathered.
    scratch: Vec<u8>,
    /// The longest frame the stack takes: its MRU and the Ethernet header.
    max_frame: usize,
    _loop: std::marker::PhantomData<fn(&mut D)>,
}

impl<D> std::fmt::Debug for SlirpBackend<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlirpBackend")
            .field("name", &self.name)
            .field("stack", &self.stack)
            .field("rx", &self.rx.stats())
            .field("enabled", &self.rx.enabled.get())
            .finish()
    }
}

impl<D: 'static> SlirpBackend<D> {
    /// Opens the back end a bhyve backend string describes
    /// (`slirp,hostfwd=...,open`; see [`SlirpOptions::parse`]) on
    /// `reactor`, receive disabled.
    pub fn open(name: &str, reactor: &mut Reactor<D>, cb: RxCallback<D>) -> Result<Self, Error> {
        let opts = SlirpOptions::parse(name)?;
        for key in &opts.ignored {
            log::warn!("slirp backend {name:?}: ignoring option {key:?}");
        }
        SlirpBackend::new(&opts.name, opts.config(), &opts.hostfwd, reactor, cb)
    }

    /// Starts a stack for `config` on `reactor` with the host forwards
    /// `hostfwd`, receive disabled, with `cb` as the receive callback.
    pub fn new(
        name: &str,
        config: Config,
        hostfwd: &[Rule],
        reactor: &mut Reactor<D>,
        mut cb: RxCallback<D>,
    ) -> Result<Self, Error> {
        let rx = Rc::new(Rx {
            queue: RefCell::new(FrameQueue::new(Limits {
                frames: RX_QUEUE_FRAMES,
                bytes: RX_QUEUE_BYTES,
                when_full: WhenFull::RefuseNew,
            })),
            stats: Cell::new(RxStats::default()),
            enabled: Cell::new(false),
            kick_armed: Cell::new(false),
            orphaned: Cell::new(false),
            prepare: Cell::new(None),
        });
        let sink_rx = Rc::clone(&rx);
        let max_frame = config.mru + crate::slirp::ETH_HLEN;
        let stack = Stack::new(reactor, config, move |f: &[u8]| sink_rx.push(f))
            .map_err(|e| slirp_error(name, e))?;
        for rule in hostfwd {
            if let Err(e) = stack.add_hostfwd(reactor, rule) {
                stack.close(reactor);
                return Err(slirp_error(name, e));
            }
        }

        let timer_rx = Rc::clone(&rx);
        let kick = reactor.add_timer_disarmed(move |r, d, _h| {
            timer_rx.kick_armed.set(false);
            if timer_rx.enabled.get() && timer_rx.pending() {
                timer_rx.stat(|s| s.callbacks += 1);
                cb(r, d);
            }
        });
        let stack = Rc::new(stack);
        let inbound = Rc::new(RefCell::new(Inbound::coalescing_only()));
        let hook_rx = Rc::clone(&rx);
        let (hook_in, hook_stack): (_, Weak<Stack>) = (Rc::clone(&inbound), Rc::downgrade(&stack));
        let prepare = reactor.add_prepare(move |r, _d| {
            if hook_rx.orphaned.get() {
                let _ = r.cancel_timer(kick);
                if let Some(h) = hook_rx.prepare.take() {
                    r.remove_prepare(h);
                }
                return;
            }
            // The round's held frames go in; the stack's registrations
            // then count for this wait, whichever hook ran first.
            if let (Some(stack), Ok(mut held)) = (hook_stack.upgrade(), hook_in.try_borrow_mut()) {
                if held.end_batch(&stack) {
                    stack.sync(r);
                }
            }
            hook_rx.kick(r, kick);
        });
        rx.prepare.set(Some(prepare));
        Ok(SlirpBackend {
            name: name.to_owned(),
            stack: Some(stack),
            inbound,
            rx,
            kick: Some(kick),
            scratch: Vec::new(),
            max_frame,
            _loop: std::marker::PhantomData,
        })
    }
}

impl<D> SlirpBackend<D> {
    /// The stack (for host forwards added later, counters, ...), until
    /// [`close`](NetBackend::close).
    pub fn stack(&self) -> Option<&Stack> {
        self.stack.as_deref()
    }

    /// Runs of the guest's TCP segments that went into the stack as one
    /// super-segment, so far.
    pub fn segments_merged(&self) -> u64 {
        self.inbound.borrow().merged()
    }

    /// What the receive queue has done.
    pub fn rx_stats(&self) -> RxStats {
        self.rx.stats()
    }

    /// Sets the receive queue's limits (at least one frame); frames already
    /// queued stay.
    pub fn set_rx_limits(&mut self, frames: usize, bytes: usize) {
        self.rx.queue.borrow_mut().set_limits(Limits {
            frames: frames.max(1),
            bytes: bytes.max(1),
            when_full: WhenFull::RefuseNew,
        });
    }

    fn closed(&self) -> io::Error {
        Error::io(
            format!("using slirp backend {:?}", self.name),
            io::Error::new(io::ErrorKind::NotConnected, "the back end is closed"),
        )
        .into()
    }
}

impl<D: 'static> NetBackend<D> for SlirpBackend<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(stack) = self.stack.as_ref() else {
            return Err(self.closed());
        };
        let len = vnet::iov_len(iov);
        if len < super::MIN_FRAME_LEN {
            return Err(Error::Runt { len }.into());
        }
        if len > self.max_frame {
            return Err(Error::FrameTooLong {
                len,
                max: self.max_frame,
            }
            .into());
        }
        let mut inbound = self.inbound.borrow_mut();
        if let [one] = iov {
            inbound.frame(stack, one);
            return Ok(one.len());
        }
        self.scratch.clear();
        for s in iov {
            self.scratch.extend_from_slice(s);
        }
        inbound.frame(stack, &self.scratch);
        Ok(self.scratch.len())
    }

    /// The stack's MRU and the Ethernet header.
    fn max_frame_len(&self) -> usize {
        self.max_frame
    }

    fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
        let room = vnet::iov_len_mut(iov);
        let mut q = self.rx.queue.borrow_mut();
        let Some(frame) = q.front() else {
            return Ok(None);
        };
        let len = frame.len();
        if len > room {
            drop(q);
            // Kept at the head of the queue (bhyve's semantics).
            self.rx.stat(|s| s.too_big += 1);
            return Err(Error::FrameTooBig { len, room }.into());
        }
        let n = vnet::copy_to_iov(frame, iov);
        q.pop_front();
        drop(q);
        self.rx.stat(|s| s.delivered += 1);
        Ok(Some(n))
    }

    fn peek_recvlen(&mut self) -> io::Result<usize> {
        Ok(self.rx.queue.borrow().front().map_or(0, <[u8]>::len))
    }

    fn recv_enable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        let Some(kick) = self.kick else {
            return Err(Error::io(
                format!("enabling receive on slirp backend {:?}", self.name),
                io::Error::new(io::ErrorKind::NotConnected, "the back end is closed"),
            ));
        };
        self.rx.enabled.set(true);
        self.rx.kick(reactor, kick);
        Ok(())
    }

    fn recv_disable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.rx.enabled.set(false);
        if let Some(kick) = self.kick {
            if self.rx.kick_armed.replace(false) {
                reactor.disarm_timer(kick)?;
            }
        }
        Ok(())
    }

    fn get_cap(&self) -> u64 {
        0
    }

    fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
        refuse_offloads(&self.name, features, vnet_hdr_len)
    }

    fn close(mut self: Box<Self>, reactor: &mut Reactor<D>) -> Result<(), Error> {
        // What the guest sent this round still goes in.
        if let Some(stack) = self.stack.as_deref() {
            self.inbound.borrow_mut().end_batch(stack);
        }
        self.rx.enabled.set(false);
        if let Some(h) = self.rx.prepare.take() {
            reactor.remove_prepare(h);
        }
        if let Some(kick) = self.kick.take() {
            reactor.cancel_timer(kick)?;
        }
        if let Some(stack) = self.stack.take() {
            // The hook's handle was weak and the hook is gone: this is the
            // only one.
            match Rc::try_unwrap(stack) {
                Ok(stack) => stack.close(reactor),
                Err(_) => log::warn!("slirp backend {:?}: the stack is still shared", self.name),
            }
        }
        self.rx.queue.borrow_mut().clear();
        Ok(())
    }
}

impl<D> Drop for SlirpBackend<D> {
    fn drop(&mut self) {
        // Dropped without close: the stack tears itself down on the next
        // round, and so does the prepare hook with the kick timer.
        self.rx.enabled.set(false);
        self.rx.orphaned.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_bhyve_splits_them() {
        let o = SlirpOptions::parse("slirp").unwrap();
        assert_eq!(o.name, "slirp");
        assert!(!o.open && o.hostfwd.is_empty() && o.ignored.is_empty());
        assert!(o.config().restricted);

        let o =
            SlirpOptions::parse("slirp,hostfwd=tcp:127.0.0.1:2222-:22;udp::5353-:53,open").unwrap();
        assert!(o.open);
        assert!(!o.config().restricted);
        assert_eq!(o.hostfwd.len(), 2);
        assert_eq!(o.hostfwd[0].host_port, 2222);
        assert_eq!(o.hostfwd[0].guest_port, 22);
        assert_eq!(o.hostfwd[1].proto, slirp::Proto::Udp);
        assert!(o.ignored.is_empty());
        // A front end's option in a back end's name is a mistake.
        match SlirpOptions::parse("slirp,mac=52:54:00:00:00:01") {
            Err(Error::BadOption { option, .. }) => assert_eq!(option, "mac"),
            other => panic!("{other:?}"),
        }

        for (s, open) in [("slirp,open=false", false), ("slirp,open=on", true)] {
            assert_eq!(SlirpOptions::parse(s).unwrap().open, open, "{s}");
        }
        assert_eq!(
            SlirpOptions::parse("slirp,vmname=vm1,").unwrap().vmname,
            Some("vm1".to_owned())
        );
        // TCP: the own path unless `tcp=slirp`.
        assert_eq!(
            SlirpOptions::parse("slirp").unwrap().config().tcp,
            slirp::TcpMode::Own
        );
        assert_eq!(
            SlirpOptions::parse("slirp,open,tcp=slirp")
                .unwrap()
                .config()
                .tcp,
            slirp::TcpMode::Slirp
        );
        match SlirpOptions::parse("slirp,tcp=fast") {
            Err(Error::BadOption { option, reason, .. }) => {
                assert_eq!(option, "tcp");
                assert!(reason.contains("\"fast\""), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "slirp,open=maybe",
            "slirp,hostfwd=tcp:2222-:22",
            "slirp,open,open",
            "slirp,=x",
            "tap0,open",
        ] {
            let e = SlirpOptions::parse(bad).unwrap_err();
            assert_eq!(
                io::Error::from(e).kind(),
                io::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    #[test]
    fn queue_is_bounded_and_recv_pops_in_order() {
        let mut r: Reactor<()> = Reactor::new().unwrap();
        let mut be =
            SlirpBackend::new("slirp", Config::default(), &[], &mut r, Box::new(|_, _| {}))
                .unwrap();
        be.set_rx_limits(3, 1 << 20);
        for i in 0..5u8 {
            be.rx.push(&[i; 60]);
        }
        let s = be.rx_stats();
        assert_eq!((s.queued, s.enqueued, s.dropped_full), (3, 3, 2));
        assert_eq!(be.peek_recvlen().unwrap(), 60);
        let mut small = [0u8; 10];
        let e = be.recv(&mut [IoSliceMut::new(&mut small)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(be.rx_stats().too_big, 1);
        // The frame stayed: the next receive with room gets it.
        assert_eq!(be.peek_recvlen().unwrap(), 60);
        let mut a = [0u8; 20];
        let mut b = [0u8; 100];
        let n = be
            .recv(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
            .unwrap();
        assert_eq!(n, Some(60));
        assert_eq!((a[0], b[39]), (0, 0));
        assert_eq!(be.recv(&mut [IoSliceMut::new(&mut b)]).unwrap(), Some(60));
        assert_eq!(b[0], 1);
        assert_eq!(be.recv(&mut [IoSliceMut::new(&mut b)]).unwrap(), Some(60));
        assert_eq!(b[0], 2);
        assert_eq!(be.recv(&mut [IoSliceMut::new(&mut b)]).unwrap(), None);
        assert_eq!(be.peek_recvlen().unwrap(), 0);
        be.set_rx_limits(100, 100);
        be.rx.push(&[9; 60]);
        be.rx.push(&[9; 60]);
        assert_eq!(be.rx_stats().queued, 1);
        Box::new(be).close(&mut r).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn dropping_without_close_cleans_up_on_the_next_round() {
        let mut r: Reactor<()> = Reactor::new().unwrap();
        let mut be = SlirpBackend::new(
            "slirp",
            Config::default(),
            &[],
            &mut r,
            Box::new(|_, _| panic!("receive callback after drop")),
        )
        .unwrap();
        be.recv_enable(&mut r).unwrap();
        be.rx.push(&[1; 60]);
        let kick = be.kick.unwrap();
        let rx = Rc::clone(&be.rx);
        drop(be);
        r.run_once(Some(Duration::ZERO), &mut ()).unwrap();
        r.run_once(Some(Duration::ZERO), &mut ()).unwrap();
        assert!(r.timer_deadline(kick).is_err(), "kick timer left behind");
        assert!(rx.prepare.get().is_none(), "prepare hook left behind");
        assert!(r.is_empty());
    }

    #[test]
    fn callback_runs_only_while_enabled() {
        struct St {
            be: Option<SlirpBackend<St>>,
            got: Vec<usize>,
        }
        let mut r: Reactor<St> = Reactor::new().unwrap();
        let be = SlirpBackend::new(
            "slirp",
            Config::default(),
            &[],
            &mut r,
            Box::new(|_r, st: &mut St| {
                let mut buf = [0u8; 2048];
                let be = st.be.as_mut().unwrap();
                while let Ok(Some(n)) = be.recv(&mut [IoSliceMut::new(&mut buf)]) {
                    st.got.push(n);
                }
            }),
        )
        .unwrap();
        let mut st = St {
            be: Some(be),
            got: Vec::new(),
        };
        let zero = Some(Duration::ZERO);
        st.be.as_ref().unwrap().rx.push(&[1; 64]);
        r.run_once(zero, &mut st).unwrap();
        r.run_once(zero, &mut st).unwrap();
        assert!(st.got.is_empty(), "receive is disabled");
        st.be.as_mut().unwrap().recv_enable(&mut r).unwrap();
        r.run_once(zero, &mut st).unwrap();
        assert_eq!(st.got, [64]);
        st.be.as_ref().unwrap().rx.push(&[1; 70]);
        r.run_once(zero, &mut st).unwrap();
        assert_eq!(st.got, [64, 70]);
        st.be.as_mut().unwrap().recv_disable(&mut r).unwrap();
        st.be.as_ref().unwrap().rx.push(&[1; 80]);
        r.run_once(zero, &mut st).unwrap();
        assert_eq!(st.got, [64, 70]);
        assert_eq!(st.be.as_ref().unwrap().rx_stats().callbacks, 2);
        let be = st.be.take().unwrap();
        Box::new(be).close(&mut r).unwrap();
    }
}
