//! bhyve's slirp helper protocol: bhyve spawns
//! `/usr/libexec/bhyve-slirp-helper -S <fd>` with one end of a
//! SOCK_SEQPACKET socketpair. The first record is the configuration, a
//! packed FreeBSD nvlist (`hostfwd`, `open`, `vmname`, and keys to ignore);
//! after it, every record in either direction is one Ethernet frame. bhyve
//! closing its end ends the helper.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use caploop::slirp;
use caploop::wire::nvlist;

use crate::serve::{self, LinkCounters, Rx, ServeError, Session, Tx};
use crate::startup;

/// The largest record bhyve reads (its `SLIRP_MTU`): it asserts every frame
/// fits, so the helper never sends more.
pub const BHYVE_MAX_RECORD: usize = 2048;

/// The largest MTU that keeps frames within [`BHYVE_MAX_RECORD`].
pub const BHYVE_MAX_MTU: usize = BHYVE_MAX_RECORD - 14;

/// The largest configuration record accepted.
const MAX_CONFIG: usize = 64 * 1024;

/// Frames queued toward bhyve before the oldest are dropped (bhyve reads
/// its socket from its own event loop; a stalled guest must not make the
/// helper grow without bound).
const MAX_QUEUED: usize = 1024;

/// Takes the inherited socket `fd`, checking it is a SOCK_SEQPACKET socket.
pub fn take_socket(fd: RawFd) -> Result<OwnedFd, ServeError> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(ServeError::Protocol(format!(
            "-S {fd}: not an open descriptor"
        )));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process on its command line; nothing else in the process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    match serve::socket_type(&sock) {
        Ok(libc::SOCK_SEQPACKET) => Ok(sock),
        Ok(other) => Err(ServeError::Protocol(format!(
            "-S {fd}: socket type {other} is not SOCK_SEQPACKET"
        ))),
        Err(e) => Err(ServeError::Protocol(format!("-S {fd}: not a socket ({e})"))),
    }
}

/// What the configuration record asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BhyveConfig {
    /// Host forwarding rules (bhyve syntax).
    pub hostfwd: Vec<slirp::Rule>,
    /// The guest may reach the outside.
    pub open: bool,
    /// The VM's name.
    pub vmname: Option<String>,
}

/// Reads the configuration record (blocking) and decodes it.
pub fn read_config(sock: &OwnedFd) -> Result<BhyveConfig, ServeError> {
    let mut buf = vec![0u8; MAX_CONFIG + 1];
    let n = loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ServeError::Link {
                what: "reading the configuration record".into(),
                source: e,
            });
        }
        break n as usize;
    };
    if n == 0 {
        return Err(ServeError::Protocol(
            "bhyve closed the socket before sending the configuration".into(),
        ));
    }
    if n > MAX_CONFIG {
        return Err(ServeError::Protocol(format!(
            "configuration record of {n} bytes is larger than {MAX_CONFIG}"
        )));
    }
    decode_config(&buf[..n])
}

/// Decodes a configuration record.
pub fn decode_config(record: &[u8]) -> Result<BhyveConfig, ServeError> {
    let cfg = nvlist::HelperConfig::from_packed(record)
        .map_err(|e| ServeError::Protocol(format!("bad configuration nvlist: {e}")))?;
    for key in &cfg.ignored {
        log::debug!("configuration key {key:?} ignored");
    }
    let hostfwd = match cfg.hostfwd.as_deref() {
        Some(rules) if !rules.trim().is_empty() => slirp::parse_rules(rules)
            .map_err(|e| ServeError::Protocol(format!("configuration hostfwd: {e}")))?,
        _ => Vec::new(),
    };
    Ok(BhyveConfig {
        hostfwd,
        open: cfg.open,
        vmname: cfg.vmname,
    })
}

/// Serves bhyve on `sock` after its configuration arrived.
pub fn serve(
    sock: OwnedFd,
    bhyve: BhyveConfig,
    mut session: Session,
) -> Result<serve::Outcome, ServeError> {
    if session.config.mtu > BHYVE_MAX_MTU {
        return Err(ServeError::Protocol(format!(
            "--mtu {} is larger than bhyve's frames allow ({BHYVE_MAX_MTU})",
            session.config.mtu
        )));
    }
    if bhyve.open {
        session.config.restricted = false;
    }
    session.rules.extend(bhyve.hostfwd);
    if let Some(name) = bhyve.vmname {
        session.name = name;
    }
    startup::set_nonblocking(&sock).map_err(|e| ServeError::Link {
        what: "making bhyve's socket non-blocking".into(),
        source: e,
    })?;
    let fd = sock.as_raw_fd();
    let (outcome, ..) = serve::run(
        session,
        sock,
        SeqpacketRx::new(fd),
        SeqpacketTx {
            fd,
            queue: VecDeque::new(),
            counters: LinkCounters::default(),
        },
    )?;
    Ok(outcome)
}

/// Reads one frame per record.
pub struct SeqpacketRx {
    fd: RawFd,
    buf: Vec<u8>,
}

impl SeqpacketRx {
    /// A receiver on the (non-blocking) socket `fd`.
    pub fn new(fd: RawFd) -> SeqpacketRx {
        SeqpacketRx {
            fd,
            buf: vec![0u8; 65536 + 64],
        }
    }
}

impl Rx for SeqpacketRx {
    fn pull(&mut self, hangup: bool, deliver: &mut dyn FnMut(&[u8])) -> Result<bool, ServeError> {
        // A bounded batch per round keeps one busy guest from starving
        // libslirp's sockets.
        for _ in 0..64 {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(!hangup),
                    io::ErrorKind::Interrupted => continue,
                    _ if e.raw_os_error() == Some(libc::ECONNRESET) => Ok(false),
                    _ => Err(ServeError::Link {
                        what: "reading a frame from bhyve".into(),
                        source: e,
                    }),
                };
            }
            let n = n as usize;
            if n == 0 {
                // End of stream, or an empty record: only the former comes
                // with a hangup.
                if hangup {
                    return Ok(false);
                }
                continue;
            }
            if n > self.buf.len() {
                log::debug!("dropping a {n}-byte record from bhyve: larger than any frame");
                continue;
            }
            deliver(&self.buf[..n]);
        }
        Ok(true)
    }
}

/// Sends one frame per record, queueing what the socket cannot take.
pub struct SeqpacketTx {
    fd: RawFd,
    queue: VecDeque<Vec<u8>>,
    counters: LinkCounters,
}

impl SeqpacketTx {
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        loop {
            // SAFETY: send reads frame.len() bytes from frame.
            let n = unsafe {
                libc::send(
                    self.fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_EOR,
                )
            };
            if n >= 0 {
                self.counters.frames_out += 1;
                self.counters.bytes_out += frame.len() as u64;
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(false),
                _ => return Err(e),
            }
        }
    }
}

impl Tx for SeqpacketTx {
    fn push(&mut self, frame: &[u8]) {
        if frame.len() > BHYVE_MAX_RECORD {
            self.counters.dropped += 1;
            return;
        }
        if self.queue.is_empty() {
            match self.send(frame) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    log::debug!("sending a frame to bhyve: {e}");
                    self.counters.dropped += 1;
                    return;
                }
            }
        }
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
            self.counters.dropped += 1;
        }
        self.queue.push_back(frame.to_vec());
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(frame) = self.queue.pop_front() {
            if !self.send(&frame)? {
                self.queue.push_front(frame);
                break;
            }
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        !self.queue.is_empty()
    }

    fn counters(&self) -> LinkCounters {
        self.counters
    }
}
