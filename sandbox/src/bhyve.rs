//! bhyve's slirp helper protocol: bhyve spawns
//! `/usr/libexec/bhyve-slirp-helper -S <fd>` with one end of a
//! SOCK_SEQPACKET socketpair. The first record is the configuration, a
//! packed FreeBSD nvlist (`hostfwd`, `open`, `vmname`, and keys to ignore);
//! after it, every record in either direction is one Ethernet frame. bhyve
//! closing its end ends the helper.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use caploop::slirp;
use caploop::wire::nvlist;

use crate::record::{RecordRx, RecordTx};
use crate::serve::{self, ServeError, Session};
use crate::startup;

/// The largest record bhyve reads (its `SLIRP_MTU`): it asserts every frame
/// fits, so the helper never sends more.
pub const BHYVE_MAX_RECORD: usize = 2048;

/// The largest MTU that keeps frames within [`BHYVE_MAX_RECORD`].
pub const BHYVE_MAX_MTU: usize = BHYVE_MAX_RECORD - 14;

/// The largest configuration record accepted.
const MAX_CONFIG: usize = 64 * 1024;

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
        RecordRx::new(fd, "bhyve"),
        RecordTx::new(fd, BHYVE_MAX_RECORD, "bhyve"),
    )?;
    Ok(outcome)
}
