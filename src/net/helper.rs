//! The `slirp-helper` back end: libslirp in a separate, sandboxed process,
//! the hypervisor's half of bhyve's slirp helper protocol.
//!
//! bhyve's current slirp back end does not run libslirp in process: it
//! spawns `/usr/libexec/bhyve-slirp-helper -S <fd>` with one end of a
//! `SOCK_SEQPACKET` socketpair, sends the configuration as a packed nvlist
//! (`hostfwd`, `open`, `vmname`), then exchanges one Ethernet frame per
//! record. This back end does the same with `caploop-sandbox`, which enters
//! its own sandbox before it reads a frame: a compromised libslirp is then
//! locked in another process, which is the isolation that holds (within one
//! address space nothing protects one thread from another).
//!
//! The name is `slirp-helper` and then comma-separated options:
//! `helper=PATH` (the helper binary; default `caploop-sandbox` from
//! `PATH`), and the `slirp` back end's `hostfwd=RULES`, `open` and
//! `vmname=NAME`, which go to the helper in the configuration record.
//! Unknown options are an error.
//!
//! The configuration record carries one key bhyve never sends,
//! `caploop-ack`: `caploop-sandbox` then answers with one record before
//! any frame, once it applied the configuration (host forwards bound) or
//! with what stopped it, so [`open`](SlirpHelperBackend::open) fails with
//! the helper's own words ([`Error::HelperFailed`]) instead of a later
//! `recv` learning "exit status 1". A helper that does not speak it is
//! served as it is after at most 10 s, with a warning.
//!
//! The helper is spawned with only its socket (as fd 3), stdin and stdout
//! on `/dev/null` and the hypervisor's stderr (it writes one line per
//! warning or error there). Spawn it before entering the hypervisor's own
//! sandbox (no `exec` after). When the helper dies, `send` and `recv` say
//! so ([`io::ErrorKind::ConnectionAborted`], with its exit status) and the
//! registration is dropped, so the loop does not spin on a dead socket;
//! nothing hangs. On Linux the helper is reaped and, on `close`, killed if
//! it outstays the hang-up, through a pidfd the sandbox plan carries
//! (`child.rs`), so this holds inside the VMM's sandbox too.
//!
//! Linux and FreeBSD (where `caploop-sandbox` runs); elsewhere
//! [`open`](super::open()) refuses the name as unsupported.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use nix::sys::socket::MsgFlags;

use super::backend::{refuse_offloads, NetBackend, RxCallback};
use super::child::{self, Process};
use super::options::SlirpKeys;
use super::pending::Pending;
use super::{vnet, Error};
use crate::reactor::{Interest, Reactor, Registration};
use crate::rights::Rights;
use crate::wire::nvlist::{parse_ack, Endian, NvList, Value, ACK_KEY};

/// The longest frame the helper takes: its default MTU, 1500 (bhyve's
/// configuration record has no MTU), and the Ethernet header.
pub const HELPER_MAX_FRAME: usize = 1500 + crate::frame::ETH_HLEN;

/// How long [`close`](NetBackend::close) waits for the helper to exit,
/// then again after killing it.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The helper binary when no `helper=` option is given: found in `PATH`.
pub const DEFAULT_HELPER: &str = "caploop-sandbox";

/// What the back end's name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperOptions {
    /// The helper binary.
    pub helper: String,
    /// Host forwarding rules, bhyve syntax (checked here, sent as given).
    pub hostfwd: Option<String>,
    /// The guest may reach the outside.
    pub open: bool,
    /// The VM's name, for the helper's logs.
    pub vmname: Option<String>,
    /// Who serves TCP in the helper (`tcp=own` or `tcp=slirp`).
    pub tcp: Option<String>,
}

impl HelperOptions {
    /// Reads `slirp-helper[,option]...` (the options as the `slirp` back
    /// end reads them, plus `helper`).
    pub fn parse(name: &str) -> Result<HelperOptions, Error> {
        let keys = SlirpKeys::parse(name, true)?;
        Ok(HelperOptions {
            helper: keys.helper.unwrap_or_else(|| DEFAULT_HELPER.to_owned()),
            hostfwd: keys.hostfwd,
            open: keys.open,
            vmname: keys.vmname,
            tcp: keys.tcp,
        })
    }

    /// The configuration record bhyve would send: every value a string.
    pub fn config_record(&self) -> Vec<u8> {
        let mut l = NvList::new();
        if let Some(h) = &self.hostfwd {
            l.push("hostfwd", Value::String(h.clone()));
        }
        l.push(
            "open",
            Value::String(if self.open { "true" } else { "false" }.into()),
        );
        if let Some(v) = &self.vmname {
            l.push("vmname", Value::String(v.clone()));
        }
        if let Some(t) = &self.tcp {
            l.push("tcp", Value::String(t.clone()));
        }
        // Ours alone: the helper says whether it could apply this before
        // any frame (bhyve never asks, and never gets one).
        l.push(ACK_KEY, Value::String("1".into()));
        let endian = if cfg!(target_endian = "big") {
            Endian::Big
        } else {
            Endian::Little
        };
        l.pack(endian).expect("strings without NUL pack")
    }
}

/// libslirp in a spawned, sandboxed `caploop-sandbox -S 3`.
pub struct SlirpHelperBackend<D> {
    name: String,
    helper: String,
    /// Our end of the socketpair, shared with the registration.
    /// Closed through `closing` (a sandbox in force retires the number).
    sock: Rc<crate::closing::ClosingFd>,
    reg: Registration,
    /// The helper process (reaped and killed through a pidfd on Linux, so
    /// also after the VMM entered its sandbox).
    proc: Option<Process>,
    /// A frame received ahead (by `peek_recvlen`, or one that did not fit).
    pending: Pending,
    /// Where a frame of several iovecs is gathered to be sent.
    scratch: Vec<u8>,
    /// Why the helper is gone, once it is.
    gone: Option<String>,
    _loop: std::marker::PhantomData<fn(&mut D)>,
}

impl<D> std::fmt::Debug for SlirpHelperBackend<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlirpHelperBackend")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("gone", &self.gone)
            .finish()
    }
}

impl<D: 'static> SlirpHelperBackend<D> {
    /// Spawns the helper `name` asks for, sends it the configuration, and
    /// registers the socket on `reactor`, receive disabled.
    pub fn open(
        name: &str,
        reactor: &mut Reactor<D>,
        mut cb: RxCallback<D>,
    ) -> Result<Self, Error> {
        let opts = HelperOptions::parse(name)?;
        let io = |what: String| move |e: io::Error| Error::io(what, e);
        let (ours, theirs) = socketpair().map_err(io("making the helper's socketpair".into()))?;
        let mut proc = Process::spawn(&opts.helper, &theirs, reactor)?;
        drop(theirs);
        // A helper that will not be served is ended and reaped.
        let give_up = |mut proc: Process, r: &mut Reactor<D>, e: Error| {
            proc.kill();
            proc.wait_for(CLOSE_WAIT);
            proc.forget(r);
            e
        };
        let record = opts.config_record();
        let sent = send_record(&ours, &record)
            .and_then(|_| set_nonblocking(&ours))
            .map_err(io(format!(
                "sending the configuration to the slirp helper {:?}",
                opts.helper
            )));
        if let Err(e) = sent {
            return Err(give_up(proc, reactor, e));
        }
        let mut pending = Pending::default();
        if let Err(reason) = await_ack(&ours, &mut proc, &mut pending) {
            let e = Error::HelperFailed {
                helper: opts.helper,
                reason,
            };
            return Err(give_up(proc, reactor, e));
        }
        let sock = Rc::new(crate::closing::ClosingFd::new(ours));
        let handle = match reactor.add_disabled(
            Rc::clone(&sock),
            Interest::READ,
            Rights::SOCKET,
            move |r, d, _| cb(r, d),
        ) {
            Ok(h) => h,
            Err(e) => return Err(give_up(proc, reactor, e.into())),
        };
        Ok(SlirpHelperBackend {
            name: name.to_owned(),
            helper: opts.helper,
            sock,
            reg: Registration::new(reactor, handle),
            proc: Some(proc),
            pending,
            scratch: Vec::new(),
            gone: None,
            _loop: std::marker::PhantomData,
        })
    }
}

impl<D> SlirpHelperBackend<D> {
    /// The helper's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Process::id)
    }

    /// The helper is gone: say why (with its exit status, reaping it:
    /// the socket's hang-up comes a moment before the process can be
    /// reaped, so that moment is waited for, up to 200 ms), stop watching
    /// its socket, and keep saying so.
    fn gone(&mut self, what: &str) -> io::Error {
        if self.gone.is_none() {
            let status = self
                .proc
                .as_mut()
                .and_then(|p| p.wait_for(Duration::from_millis(200)));
            let status = child::describe(status, "closed its socket");
            self.gone = Some(format!(
                "the slirp helper {:?} (pid {}) {status}",
                self.helper,
                self.pid().unwrap_or(0)
            ));
            self.reg.release();
        }
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "{what} ({}): {}",
                self.name,
                self.gone.as_deref().unwrap_or_default()
            ),
        )
    }
}

impl<D> NetBackend<D> for SlirpHelperBackend<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.gone.is_some() {
            return Err(self.gone("sending a frame"));
        }
        let len = vnet::iov_len(iov);
        if len > HELPER_MAX_FRAME {
            return Err(Error::FrameTooLong {
                len,
                max: HELPER_MAX_FRAME,
            }
            .into());
        }
        // One record per frame, with send (no sendmsg: a sandbox may not
        // allow it): a frame in several pieces is gathered first.
        let frame: &[u8] = match iov {
            [one] => one,
            _ => {
                self.scratch.clear();
                for s in iov {
                    self.scratch.extend_from_slice(s);
                }
                &self.scratch
            }
        };
        match send_record(&self.sock, frame) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
                ) =>
            {
                Err(self.gone("sending a frame"))
            }
            Err(e) => Err(e),
        }
    }

    fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
        if let Some(held) = self.pending.take(iov) {
            return held.map(Some);
        }
        if self.gone.is_some() {
            return Err(self.gone("receiving a frame"));
        }
        let room = vnet::iov_len_mut(iov);
        let sock = Rc::clone(&self.sock);
        let mut parts = vnet::with_spill(iov, self.pending.buf());
        let res = nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut parts,
            None,
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|m| (m.bytes, m.flags.contains(MsgFlags::MSG_TRUNC)));
        drop(parts);
        match res {
            Ok((0, _)) => Err(self.gone("receiving a frame")),
            Ok((len, cut)) if len > room || cut => Err(self.pending.keep_split(iov, len, cut)),
            Ok((len, _)) => Ok(Some(len)),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(nix::errno::Errno::ECONNRESET) => Err(self.gone("receiving a frame")),
            Err(e) => Err(e.into()),
        }
    }

    fn peek_recvlen(&mut self) -> io::Result<usize> {
        if self.pending.len() > 0 {
            return Ok(self.pending.len());
        }
        if self.gone.is_some() {
            return Err(self.gone("receiving a frame"));
        }
        let sock = Rc::clone(&self.sock);
        let res = nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut [IoSliceMut::new(self.pending.buf())],
            None,
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|m| (m.bytes, m.flags.contains(MsgFlags::MSG_TRUNC)));
        match res {
            Ok((0, _)) => Err(self.gone("receiving a frame")),
            Ok((len, cut)) => self.pending.hold(len, cut),
            Err(nix::errno::Errno::EAGAIN) => Ok(0),
            Err(nix::errno::Errno::ECONNRESET) => Err(self.gone("receiving a frame")),
            Err(e) => Err(e.into()),
        }
    }

    fn recv_enable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        match self.reg.handle() {
            Some(h) => Ok(reactor.enable(h)?),
            None => Err(Error::io(
                format!("enabling receive on {:?}", self.name),
                self.gone("enabling receive"),
            )),
        }
    }

    fn recv_disable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        match self.reg.handle() {
            Some(h) => Ok(reactor.disable(h)?),
            None => Ok(()),
        }
    }

    fn get_cap(&self) -> u64 {
        0
    }

    fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
        refuse_offloads(&self.name, features, vnet_hdr_len)
    }

    fn helper_pid(&self) -> Option<u32> {
        self.pid()
    }

    /// The helper's MTU (1500: bhyve's protocol carries none) and the
    /// Ethernet header.
    fn max_frame_len(&self) -> usize {
        HELPER_MAX_FRAME
    }

    /// Hangs up on the helper (it exits 0 on the hang-up) and waits up to
    /// 2 s for it; one that does not go is killed and waited for up to 2 s
    /// more. Either way it is reaped (on Linux also inside the VMM's
    /// sandbox) and never waited for longer; a helper that had to be
    /// killed, or would not die, is logged with its pid.
    fn close(mut self: Box<Self>, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.reg.delete(reactor)?;
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(mut p) = self.proc.take() {
            if p.wait_for(CLOSE_WAIT).is_none() {
                p.kill();
                match p.wait_for(CLOSE_WAIT) {
                    Some(st) => log::warn!(
                        "the slirp helper {:?} (pid {}) did not exit on hang-up; killed: {st}",
                        self.helper,
                        p.id()
                    ),
                    None => log::warn!(
                        "the slirp helper {:?} (pid {}) did not die within {CLOSE_WAIT:?} of SIGKILL; left",
                        self.helper,
                        p.id()
                    ),
                }
            }
            p.forget(reactor);
        }
        Ok(())
    }
}

/// How long `open` waits for the helper to say it applied its
/// configuration (caploop-sandbox does in milliseconds).
const ACK_WAIT: Duration = Duration::from_secs(10);

/// Waits for the helper's start-up acknowledgement on `sock`
/// (non-blocking): `Ok` once it applied its configuration, or the reason
/// it could not (its own words and exit status). A helper that answers
/// with a frame instead, or not within [`ACK_WAIT`], does not speak the
/// acknowledgement (not caploop-sandbox): its frame is kept in `pending`
/// and it is served as it is, with a warning.
fn await_ack(sock: &OwnedFd, proc: &mut Process, pending: &mut Pending) -> Result<(), String> {
    let deadline = std::time::Instant::now() + ACK_WAIT;
    loop {
        let got = nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut [IoSliceMut::new(pending.buf())],
            None,
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|m| (m.bytes, m.flags.contains(MsgFlags::MSG_TRUNC)));
        match got {
            Ok((0, _)) | Err(nix::errno::Errno::ECONNRESET) => {
                let status = proc.wait_for(Duration::from_secs(1));
                return Err(child::describe(status, "it closed its socket"));
            }
            Ok((n, cut)) => match parse_ack(&pending.buf()[..n]) {
                Some(Ok(())) => return Ok(()),
                Some(Err(text)) => {
                    let status = proc.wait_for(Duration::from_secs(1));
                    return Err(format!(
                        "{text} ({})",
                        child::describe(status, "still running")
                    ));
                }
                None => {
                    log::warn!(
                        "the slirp helper sent a frame before any acknowledgement; served as it is"
                    );
                    // One longer than any frame is dropped (the first
                    // recv says so).
                    let _ = pending.hold(n, cut);
                    return Ok(());
                }
            },
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("reading its acknowledgement: {e}")),
        }
        if let Some(st) = proc.try_reap() {
            return Err(child::describe(Some(st), ""));
        }
        if std::time::Instant::now() >= deadline {
            log::warn!(
                "the slirp helper did not acknowledge its configuration in {ACK_WAIT:?}; \
                 served as it is"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Sends one record, never raising SIGPIPE.
fn send_record(sock: &impl AsRawFd, record: &[u8]) -> io::Result<usize> {
    use nix::sys::socket::send;
    Ok(send(
        sock.as_raw_fd(),
        record,
        MsgFlags::MSG_EOR | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = HelperOptions::parse("slirp-helper").unwrap();
        assert_eq!(o.helper, DEFAULT_HELPER);
        assert!(!o.open && o.hostfwd.is_none());
        let o = HelperOptions::parse(
            "slirp-helper,helper=/usr/libexec/x,hostfwd=tcp::2222-:22,open,vmname=vm0",
        )
        .unwrap();
        assert_eq!(o.helper, "/usr/libexec/x");
        assert_eq!(o.hostfwd.as_deref(), Some("tcp::2222-:22"));
        assert!(o.open);
        assert_eq!(o.vmname.as_deref(), Some("vm0"));
        // `tcp` reaches the helper in its configuration record.
        let o = HelperOptions::parse("slirp-helper,tcp=slirp").unwrap();
        let sent = crate::wire::nvlist::HelperConfig::from_packed(&o.config_record()).unwrap();
        assert_eq!(sent.tcp.as_deref(), Some("slirp"));
        for (name, option) in [
            ("slirp-helper,tcp=fast", "tcp"),
            ("slirp-helper,mtu=9000", "mtu"),
            ("slirp-helper,open=maybe", "open"),
            #[cfg(feature = "slirp")]
            ("slirp-helper,hostfwd=tcp::70000-:22", "hostfwd"),
        ] {
            match HelperOptions::parse(name) {
                Err(Error::BadOption { option: o, .. }) => assert_eq!(o, option, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_record_is_what_the_helper_reads() {
        let o = HelperOptions::parse("slirp-helper,hostfwd=tcp::2222-:22,vmname=vm0").unwrap();
        let cfg = crate::wire::nvlist::HelperConfig::from_packed(&o.config_record()).unwrap();
        assert_eq!(cfg.hostfwd.as_deref(), Some("tcp::2222-:22"));
        assert!(!cfg.open);
        assert_eq!(cfg.vmname.as_deref(), Some("vm0"));
        assert!(cfg.ignored.is_empty());
    }
}
