//! The loop every hypervisor front end shares: frames from the hypervisor's
//! link into a libslirp [`Stack`], frames out of it back to the link, on one
//! [`Reactor`], inside the sandbox.
//!
//! A link is split into a receiving half ([`Rx`]) and a sending half
//! ([`Tx`]) behind separate cells: a frame read from the link goes into
//! libslirp, which may answer at once through the stack's sink, which pushes
//! to the sending half, so the two halves must never be borrowed together.
//! Frames the socket cannot take now stay queued in the sending half, and a
//! prepare hook asks for writability only while something is queued.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use caploop::reactor::{Handle, Interest, Reactor};
use caploop::sandbox::{Plan, Policy};
use caploop::slirp::{self, Config, Rule, Stack};
use caploop::Rights;

use crate::startup::{self, Identity, StartupError};

/// Why the loop ended, when it ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The hypervisor closed its end.
    PeerHungUp,
    /// SIGTERM or SIGINT.
    Terminated,
}

/// What can stop a session.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reactor failed.
    #[error(transparent)]
    Reactor(#[from] caploop::reactor::Error),
    /// libslirp refused the configuration or a forward.
    #[error(transparent)]
    Slirp(#[from] slirp::Error),
    /// The sandbox could not be entered.
    #[error("sandbox: {0}")]
    Sandbox(#[from] caploop::sandbox::Error),
    /// Start-up (privileges, descriptors) failed.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The link to the hypervisor failed.
    #[error("{what}: {source}")]
    Link {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The hypervisor sent something that is not what the protocol allows.
    #[error("{0}")]
    Protocol(String),
}

/// Link traffic counts, logged on exit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames read from the hypervisor.
    pub frames_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Frames written to the hypervisor.
    pub frames_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Frames not delivered: the link's queue was full or the frame could
    /// not be represented.
    pub dropped: u64,
}

/// The receiving half of a link.
pub trait Rx {
    /// Reads what the link has now (a bounded amount), handing each whole
    /// frame to `deliver`. `Ok(false)` once the peer has hung up.
    fn pull(&mut self, hangup: bool, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, ServeError>;
}

/// The sending half of a link.
pub trait Tx {
    /// Sends a frame, or queues it for the flush that runs once per round.
    fn push(&mut self, frame: &[u8]);
    /// Writes queued frames; `Ok(())` also when some remain queued.
    fn flush(&mut self) -> io::Result<()>;
    /// Whether frames are queued.
    fn pending(&self) -> bool;
    /// Whether sending showed the peer is gone (a datagram peer gives no
    /// hangup otherwise).
    fn gone(&self) -> bool {
        false
    }
    /// Traffic so far (frames out, drops).
    fn counters(&self) -> LinkCounters;
}

/// Everything a session needs besides its link.
#[derive(Debug, Clone)]
pub struct Session {
    /// The virtual network.
    pub config: Config,
    /// Host forwards to set up before entering the sandbox.
    pub rules: Vec<Rule>,
    /// The user to drop to when root.
    pub user: String,
    /// Whether logging was asked for (stdio stays open for it).
    pub logging: bool,
    /// The name for logs.
    pub name: String,
}

impl Session {
    /// The sandbox policy that fits the configuration.
    pub fn policy(&self) -> Policy {
        if self.config.restricted {
            Policy::restricted()
        } else {
            Policy::open()
        }
    }
}

/// The network of a hypervisor front end: bhyve's defaults, with the
/// command line's mode, MTU and IPv6 choice.
pub fn hypervisor_config(open: bool, mtu: usize, ipv6: bool) -> Config {
    Config {
        restricted: !open,
        mtu,
        mru: mtu,
        ipv6,
        ..Config::default()
    }
}

/// Runs one session on `link` until the peer hangs up or a signal stops it.
/// Everything is set up, root dropped and the sandbox entered before the
/// first frame is read.
pub fn run(
    session: Session,
    link: OwnedFd,
    rx: impl Rx + 'static,
    tx: impl Tx + 'static,
) -> Result<(Outcome, LinkCounters, slirp::Counters), ServeError> {
    let mut reactor: Reactor<()> = Reactor::new()?;
    let tx: Rc<RefCell<dyn Tx>> = Rc::new(RefCell::new(tx));
    let rx: Rc<RefCell<dyn Rx>> = Rc::new(RefCell::new(rx));

    let sink_tx = tx.clone();
    let stack = Stack::new(
        &mut reactor,
        session.config.clone(),
        move |frame: &[u8]| sink_tx.borrow_mut().push(frame),
    )?;
    for rule in &session.rules {
        stack.add_hostfwd(rule)?;
        log::info!("{}: forwarding {rule}", session.name);
    }
    let stack = Rc::new(stack);

    let outcome: Rc<Cell<Option<Result<Outcome, String>>>> = Rc::new(Cell::new(None));
    let inbound = Rc::new(Cell::new(LinkCounters::default()));

    let (cb_stack, cb_tx, cb_rx, cb_outcome, cb_in) = (
        stack.clone(),
        tx.clone(),
        rx.clone(),
        outcome.clone(),
        inbound.clone(),
    );
    let link_handle = reactor.add(
        &link,
        Interest::READ,
        Rights::SOCKET,
        move |r: &mut Reactor<()>, _, ev| {
            if ev.writable {
                if let Err(e) = cb_tx.borrow_mut().flush() {
                    cb_outcome.set(Some(Err(format!("writing to the link: {e}"))));
                    r.stop();
                    return;
                }
            }
            if !(ev.readable || ev.hangup || ev.error) {
                return;
            }
            let mut counts = cb_in.get();
            let res = cb_rx.borrow_mut().pull(ev.hangup, &mut |frame| {
                counts.frames_in += 1;
                counts.bytes_in += frame.len() as u64;
                cb_stack.input(frame);
            });
            cb_in.set(counts);
            match res {
                Ok(true) => {}
                Ok(false) => {
                    cb_outcome.set(Some(Ok(Outcome::PeerHungUp)));
                    r.stop();
                }
                Err(e) => {
                    cb_outcome.set(Some(Err(e.to_string())));
                    r.stop();
                }
            }
        },
    )?;
    watch_backlog(&mut reactor, link_handle, tx.clone(), outcome.clone());
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let o = outcome.clone();
        reactor.add_signal(sig, move |r, _, _| {
            o.set(Some(Ok(Outcome::Terminated)));
            r.stop();
        })?;
    }

    match startup::drop_root(&session.user)? {
        Identity::Dropped { user, uid, gid } => {
            log::info!("{}: running as {user} ({uid}:{gid})", session.name)
        }
        Identity::StayedRoot(why) => log::warn!("{}: still root: {why}", session.name),
        Identity::Unprivileged => {}
    }
    startup::quiet_stdio(session.logging)?;
    // libslirp reads the host's resolver lazily; make it read now.
    stack.prime_dns(&mut reactor);
    let mut plan = Plan::from_reactor(&reactor);
    if session.logging {
        plan.add_raw(2, Rights::WRITE_ONLY, "stderr");
    }
    let report = plan.apply_and_enter(&session.policy())?;
    log::info!(
        "{}: sandbox entered ({:?} mode, {} descriptors limited, landlock {:?}, seccomp {} syscalls)",
        session.name,
        report.mode,
        report.limited.len(),
        report.landlock.as_ref().map(|l| l.abi),
        report.seccomp.as_ref().map_or(0, |s| s.syscalls.len()),
    );
    for w in &report.warnings {
        log::warn!("{}: sandbox: {w}", session.name);
    }

    reactor.run(&mut ())?;

    let mut counters = tx.borrow().counters();
    let inbound = inbound.get();
    counters.frames_in = inbound.frames_in;
    counters.bytes_in = inbound.bytes_in;
    let slirp_counters = stack.counters();
    log::info!(
        "{}: link in {} frames / {} bytes, out {} frames / {} bytes, {} dropped; slirp {:?}",
        session.name,
        counters.frames_in,
        counters.bytes_in,
        counters.frames_out,
        counters.bytes_out,
        counters.dropped,
        slirp_counters,
    );
    let _ = reactor.delete(link_handle);
    drop(link);
    match outcome.take() {
        Some(Ok(o)) => Ok((o, counters, slirp_counters)),
        Some(Err(e)) => Err(ServeError::Protocol(e)),
        None => Ok((Outcome::Terminated, counters, slirp_counters)),
    }
}

/// Once per round, before the wait: writes what the round queued toward the
/// hypervisor (one write for a burst of frames), then asks for writability
/// only while something is left.
fn watch_backlog(
    reactor: &mut Reactor<()>,
    link: Handle,
    tx: Rc<RefCell<dyn Tx>>,
    outcome: Rc<Cell<Option<Result<Outcome, String>>>>,
) {
    let mut writing = false;
    reactor.add_prepare(move |r, _| {
        let mut tx = tx.borrow_mut();
        if let Err(e) = tx.flush() {
            log::debug!("writing to the link: {e}");
        }
        if tx.gone() {
            outcome.set(Some(Ok(Outcome::PeerHungUp)));
            r.stop();
            return;
        }
        let want = tx.pending();
        if want != writing {
            let interest = if want { Interest::BOTH } else { Interest::READ };
            if r.set_interest(link, interest).is_ok() {
                writing = want;
            }
        }
    });
}

/// Whether `fd` is a socket of `kind` (SOCK_SEQPACKET, SOCK_STREAM...).
pub fn socket_type(fd: &OwnedFd) -> io::Result<i32> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`, which lives
    // for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ty)
}
