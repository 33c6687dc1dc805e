//! The one loop every front end runs: frames from the front end's
//! [`Link`] into a libslirp [`Stack`], frames out of it back to the link,
//! on one [`Reactor`], inside the sandbox.
//!
//! A front end opens its link and hands it here with its [`Extras`] (the
//! slirp4netns exit and ready descriptors, the API socket). Everything
//! else exists once: the stack and its host forwards, the signals, giving
//! up privileges, stdio, the sandbox plan and entry, the outcome and the
//! counters. Order: set up everything, give up root or capabilities, point
//! stdin/stdout at /dev/null, make libslirp read the resolver, limit every
//! descriptor and enter the sandbox, say "ready", and only then read
//! frames.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::rc::Rc;

use caploop::reactor::{Handle, Interest, Reactor};
use caploop::sandbox::{Mode, Plan, Policy, Report};
use caploop::slirp::{self, Config, Rule, Stack};
use caploop::Rights;

use crate::api::{self, Forwards};
pub use crate::core::Outcome;
use crate::core::{end, Core, Ending};
use crate::error::ServeError;
use crate::inbound::Inbound;
use crate::link::{LinkCounters, Thinned, Tx};
use crate::privileges::{self, Privileges};
use crate::source::Link;
use crate::startup;
use crate::terminate;

/// The largest MTU at which a VM guest's TCP downloads through libslirp
/// (`--tcp=slirp`) were seen never to stall (10 of 10 QEMU guest runs; at
/// 65,520 about one in four stalled: `benches/vm_net.sh`). The own TCP
/// path has no such limit.
pub const VM_MTU_WITHOUT_STALLS: usize = 16384;

/// Everything a session needs besides its link.
#[derive(Debug, Clone)]
pub struct Session {
    /// The name for logs (the VM's name, or the front end's).
    pub name: String,
    /// The virtual network.
    pub config: Config,
    /// Host forwards to set up before entering the sandbox.
    pub rules: Vec<Rule>,
    /// What to give up before entering.
    pub privileges: Privileges,
    /// A VM's guest (bhyve, QEMU, vhost-user), not a namespace's kernel.
    pub vm: bool,
}

/// What a front end hands the loop besides its link.
#[derive(Debug, Default)]
pub struct Extras {
    /// Ends the session (exit 0) when readable or hung up (slirp4netns
    /// `--exit-fd`).
    pub exit_fd: Option<OwnedFd>,
    /// Gets "1" once the sandbox is entered, then is closed (slirp4netns
    /// `--ready-fd`).
    pub ready_fd: Option<OwnedFd>,
    /// The API socket (bound) and the guest address forwards default to.
    pub api: Option<(UnixListener, Ipv4Addr)>,
}

/// How a session ended, with its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Why.
    pub outcome: Outcome,
    /// The link's traffic.
    pub link: LinkCounters,
    /// The stack's.
    pub slirp: slirp::Counters,
}

/// The sandbox policy for `config` and `extras`: restricted unless the
/// network is open; `bind` allowed only for what binds after entry (API
/// forwards, and libslirp binding outbound sockets to `--outbound-addr`).
pub fn policy(config: &Config, extras: &Extras) -> Policy {
    Policy {
        mode: if config.restricted {
            Mode::Restricted
        } else {
            Mode::Open
        },
        allow_bind: extras.api.is_some()
            || config.outbound_addr.is_some()
            || config.outbound_addr6.is_some(),
        ..Policy::default()
    }
}

/// Runs one session until the peer hangs up, the exit descriptor fires or
/// a signal stops it.
pub fn run(session: Session, link: Link, extras: Extras) -> Result<Finished, ServeError> {
    prepare(session, link, extras)?.enter_and_run()
}

/// A session set up and not yet sandboxed: the reactor with every
/// registration, the stack with its forwards.
pub struct Prepared {
    name: String,
    policy: Policy,
    privileges: Privileges,
    reactor: Reactor<()>,
    stack: Rc<Stack>,
    tx: Rc<RefCell<Box<dyn Tx>>>,
    inbound: Rc<RefCell<Inbound>>,
    ending: Ending,
    link_handle: Handle,
    ready_fd: Option<OwnedFd>,
    unpolled: Vec<(RawFd, Rights, &'static str)>,
    /// The signal pipe's write end (the handler's).
    stop_write: OwnedFd,
}

/// Sets up everything a session needs; nothing is given up or entered.
pub fn prepare(session: Session, link: Link, extras: Extras) -> Result<Prepared, ServeError> {
    let name = session.name.clone();
    let policy = policy(&session.config, &extras);
    let mut reactor: Reactor<()> = Reactor::new()?;
    let Link { source, tx } = link;
    let libslirp_tcp = session.config.tcp == caploop::slirp::TcpMode::Slirp;
    if session.vm && libslirp_tcp && session.config.mtu > VM_MTU_WITHOUT_STALLS {
        log::warn!(
            "{name}: MTU {} with --tcp=slirp: libslirp has no TCP window scaling, and above \
             {VM_MTU_WITHOUT_STALLS} a guest's downloads can stall for 5 s at a time (its window \
             falls below one 32 KiB segment and nothing reopens it until libslirp's probe); \
             --mtu {VM_MTU_WITHOUT_STALLS}, or the default --tcp=own, avoids it",
            session.config.mtu
        );
    }
    #[cfg(target_os = "freebsd")]
    if !session.config.restricted {
        log::warn!(
            "{name}: open mode on FreeBSD: the guest's pings to the outside get no answer \
             (no ICMP datagram socket; libslirp's raw socket needs root; its UDP echo \
             fallback reaches only hosts with an echo service)"
        );
    }
    let tx: Rc<RefCell<Box<dyn Tx>>> = Rc::new(RefCell::new(Box::new(Thinned::new(tx))));
    let unpolled = source.plan();

    let sink = tx.clone();
    let stack = Rc::new(Stack::new(
        &mut reactor,
        session.config.clone(),
        move |frame: &[u8]| sink.borrow_mut().push(frame),
    )?);
    // The own TCP path holds back while the link's queue is not empty
    // (flushed here first: this runs before the round's own flush).
    let full = tx.clone();
    stack.set_link_full(move || {
        let Ok(mut t) = full.try_borrow_mut() else {
            return false;
        };
        if t.full() {
            let _ = t.flush();
        }
        t.full()
    });
    // A link that takes offloads gets the own path's super-segments as
    // they are made, behind their virtio-net header.
    let (takes, offloaded) = (tx.clone(), tx.clone());
    stack.set_offload(
        move || takes.try_borrow().map_or((false, false), |t| t.offloads()),
        move |hdr, frame| offloaded.borrow_mut().push_offloaded(hdr, frame),
    );
    for rule in &session.rules {
        stack.add_hostfwd(&mut reactor, rule)?;
        log::info!("{name}: forwarding {rule}");
    }

    let ending: Ending = Rc::new(Cell::new(None));
    let inbound = Rc::new(RefCell::new(Inbound::new(stack.clone())));
    let core = Core {
        stack: stack.clone(),
        inbound: inbound.clone(),
        tx: tx.clone(),
        ending: ending.clone(),
    };
    let link_handle = source.register(&mut reactor, core)?;
    watch_backlog(&mut reactor, link_handle, tx.clone(), ending.clone());
    let Extras {
        exit_fd,
        ready_fd,
        api,
    } = extras;
    if let Some(exit) = exit_fd {
        let e = ending.clone();
        let n = name.clone();
        reactor.add(exit, Interest::READ, Rights::READ_ONLY, move |r, _, _| {
            log::info!("{n}: exit fd event");
            end(r, &e, Ok(Outcome::PeerHungUp));
        })?;
    }
    // SIGTERM and SIGINT: a handler writes to this pipe (terminate.rs).
    let (stop_read, stop_write) = terminate::pipe().map_err(|source| ServeError::Link {
        what: "making the signal pipe".into(),
        source,
    })?;
    let e = ending.clone();
    let n = name.clone();
    reactor.add(
        stop_read,
        Interest::READ,
        Rights::READ_ONLY,
        move |r, _, ev| {
            let got = terminate::drain(ev.fd);
            log::info!("{n}: signal {got:?}");
            end(r, &e, Ok(Outcome::Terminated));
        },
    )?;
    if let Some((listener, guest)) = api {
        api::register(&mut reactor, listener, Forwards::new(stack.clone(), guest))?;
    }
    // Everything is applied (the forwards are bound): caploop's
    // slirp-helper back end, if it asked, hears so before any frame.
    crate::ack::ok();
    Ok(Prepared {
        name,
        policy,
        privileges: session.privileges,
        reactor,
        stack,
        tx,
        inbound,
        ending,
        link_handle,
        ready_fd,
        unpolled,
        stop_write,
    })
}

impl Prepared {
    /// Every descriptor the session keeps, with the rights it needs: the
    /// reactor's (the link, the extras, libslirp's, its own) plus stderr
    /// and the ready fd.
    #[cfg_attr(not(all(test, target_os = "linux")), allow(dead_code))]
    pub fn plan(&self) -> Plan {
        plan_of(
            &self.reactor,
            self.ready_fd.as_ref(),
            &self.unpolled,
            &self.stop_write,
        )
    }

    /// The sandbox policy the session enters.
    #[cfg_attr(not(all(test, target_os = "linux")), allow(dead_code))]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Gives up privileges, enters the sandbox, says "ready", and runs.
    pub fn enter_and_run(self) -> Result<Finished, ServeError> {
        let Prepared {
            name,
            policy,
            privileges,
            mut reactor,
            stack,
            tx,
            inbound,
            ending,
            link_handle,
            ready_fd,
            unpolled,
            stop_write,
        } = self;
        let given_up = privileges::give_up(&privileges)?;
        log::info!("{name}: {given_up}");
        startup::quiet_stdio()?;
        // libslirp reads the host's resolver lazily; make it read now.
        stack.prime_dns(&mut reactor);
        if let Some(fd) = &ready_fd {
            // Written after entry without waiting for its reader (and
            // Capsicum would refuse F_SETFL then).
            startup::set_nonblocking(fd).map_err(|source| ServeError::Link {
                what: "making the ready fd non-blocking".into(),
                source,
            })?;
        }
        let plan = plan_of(&reactor, ready_fd.as_ref(), &unpolled, &stop_write);
        terminate::install(&stop_write).map_err(|source| ServeError::Link {
            what: "handling SIGTERM".into(),
            source,
        })?;
        #[cfg(debug_assertions)]
        let fault = crate::fault::prepare();
        let report = plan.apply_and_enter(&policy)?;
        log_entry(&name, &report);
        if let Some(fd) = ready_fd {
            say_ready(&mut reactor, fd);
        }
        #[cfg(debug_assertions)]
        fault.strike();

        reactor.run(&mut ())?;

        let mut link = tx.borrow().counters();
        let inbound = inbound.borrow().counts();
        link.frames_in = inbound.frames_in;
        link.bytes_in = inbound.bytes_in;
        link.merged_in = inbound.merged_in;
        link.offloaded_in = inbound.offloaded_in;
        link.acks_thinned_in = inbound.acks_thinned_in;
        let slirp = stack.counters();
        if let Some(tcp) = stack.tcp_counters() {
            log::info!("{name}: own TCP {tcp:?}");
        }
        log::info!(
            "{name}: link in {} frames / {} bytes ({} offloaded, {} merged, {} ACKs thinned), out {} frames / {} bytes ({} merged, {} ACKs thinned), {} dropped; slirp {slirp:?}",
            link.frames_in,
            link.bytes_in,
            link.offloaded_in,
            link.merged_in,
            link.acks_thinned_in,
            link.frames_out,
            link.bytes_out,
            link.merged,
            link.acks_thinned,
            link.dropped,
        );
        let _ = reactor.delete(link_handle);
        let outcome = match ending.take() {
            Some(Ok(o)) => o,
            Some(Err(e)) => return Err(e),
            None => Outcome::Terminated,
        };
        log::info!("{name}: {outcome:?}");
        Ok(Finished {
            outcome,
            link,
            slirp,
        })
    }
}

/// The plan of a session: the reactor's descriptors, stderr, the ready fd,
/// the link's unpolled descriptors, the signal pipe's write end.
fn plan_of(
    reactor: &Reactor<()>,
    ready_fd: Option<&OwnedFd>,
    unpolled: &[(RawFd, Rights, &'static str)],
    stop_write: &OwnedFd,
) -> Plan {
    let mut plan = Plan::from_reactor(reactor);
    plan.add_raw(2, Rights::WRITE_ONLY, "stderr");
    plan.add(stop_write, Rights::WRITE_ONLY, "signal pipe (write end)");
    for &(fd, rights, label) in unpolled {
        plan.add_raw(fd, rights, label);
    }
    if let Some(fd) = ready_fd {
        // Closed right after entry: its number will be reused.
        plan.add(fd, Rights::WRITE_ONLY | Rights::EPHEMERAL, "ready fd");
    }
    plan
}

/// Writes "1" to the ready descriptor and closes it, without waiting for
/// its reader: a pipe that cannot take it now gets it once writable.
fn say_ready(reactor: &mut Reactor<()>, fd: OwnedFd) {
    /// `Some(())` once written or failed for good, `None` to wait.
    fn write_one(fd: RawFd) -> Option<()> {
        // SAFETY: write reads one byte from a static.
        if unsafe { libc::write(fd, b"1".as_ptr().cast(), 1) } == 1 {
            return Some(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            log::debug!("ready fd: full, written once its reader reads");
            return None;
        }
        log::warn!("ready fd: {e}");
        Some(())
    }
    if write_one(fd.as_raw_fd()).is_some() {
        return;
    }
    let res = reactor.add(
        fd,
        Interest::WRITE,
        Rights::WRITE_ONLY | Rights::EPHEMERAL,
        |r, _, ev| {
            if write_one(ev.fd).is_some() {
                let _ = r.delete_close(ev.handle);
            }
        },
    );
    if let Err(e) = res {
        log::warn!("ready fd: {e}");
    }
}

/// Logs what the sandbox enforces; what is weaker than asked (a missing
/// or partial Landlock, FreeBSD's open mode) is a warning, which reaches
/// stderr whether or not logging was asked for.
fn log_entry(name: &str, report: &Report) {
    log::info!(
        "{name}: sandbox entered ({:?} mode, {} descriptors limited, {}, seccomp {} syscalls)",
        report.mode,
        report.limited.len(),
        report
            .landlock
            .as_ref()
            .map_or("no Landlock".to_owned(), |l| l.summary()),
        report.seccomp.as_ref().map_or(0, |s| s.syscalls.len()),
    );
    for w in &report.warnings {
        log::warn!("sandbox: {w}");
    }
}

/// Once per round, before the wait: writes what the round queued toward the
/// peer (one write for a burst of frames), then asks for writability only
/// while something is left.
fn watch_backlog(
    reactor: &mut Reactor<()>,
    link: Handle,
    tx: Rc<RefCell<Box<dyn Tx>>>,
    ending: Ending,
) {
    let mut writing = false;
    reactor.add_prepare(move |r, _| {
        let mut tx = tx.borrow_mut();
        if let Err(e) = tx.flush() {
            log::debug!("writing to the link: {e}");
        }
        if let Some(e) = tx.failure() {
            drop(tx);
            end(r, &ending, Err(e));
            return;
        }
        if tx.gone() {
            drop(tx);
            end(r, &ending, Ok(Outcome::PeerHungUp));
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

/// The socket type of `fd` (SOCK_SEQPACKET, SOCK_STREAM...).
pub fn socket_type(fd: &OwnedFd) -> std::io::Result<i32> {
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
        return Err(std::io::Error::last_os_error());
    }
    Ok(ty)
}
