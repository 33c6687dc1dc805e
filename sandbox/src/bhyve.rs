//! bhyve's slirp helper protocol: bhyve spawns
//! `/usr/libexec/bhyve-slirp-helper -S <fd>` with one end of a
//! SOCK_SEQPACKET socketpair. The first record is the configuration, a
//! packed FreeBSD nvlist (`hostfwd`, `open`, `vmname`, and keys to ignore);
//! after it, every record in either direction is one Ethernet frame. bhyve
//! closing its end ends the helper.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use caploop::net::SlirpOptions;
use caploop::wire::nvlist::HelperConfig;

use crate::error::ServeError;
use crate::link::LinkKind;
use crate::record::{Medium, RecordRx, RecordTx};
use crate::serve::{self, Session};
use crate::source::Link;
use crate::startup;

/// The largest record bhyve reads (its `SLIRP_MTU`): it asserts every frame
/// fits, so the helper never sends more.
pub const BHYVE_MAX_RECORD: usize = 2048;

/// The largest MTU that keeps frames within [`BHYVE_MAX_RECORD`].
pub const BHYVE_MAX_MTU: usize = BHYVE_MAX_RECORD - caploop::frame::ETH_HLEN;

/// The largest configuration record accepted.
const MAX_CONFIG: usize = 64 * 1024;

/// Takes the inherited socket `fd` (closing every other descriptor), reads
/// bhyve's configuration from it and applies it to `session`; returns the
/// link.
pub fn open(fd: RawFd, session: &mut Session) -> Result<Link, ServeError> {
    if session.config.mtu > BHYVE_MAX_MTU {
        return Err(crate::cli::UsageError(format!(
            "--mtu {} is larger than bhyve's frames allow ({BHYVE_MAX_MTU})",
            session.config.mtu
        ))
        .into());
    }
    startup::close_other_fds(&[fd])?;
    let sock = take_socket(fd)?;
    let record = read_config(&sock)?;
    let cfg = HelperConfig::from_packed(&record)
        .map_err(|e| ServeError::BhyveConfig(format!("bad nvlist: {e}")))?;
    if cfg.ack {
        crate::ack::owe(&sock).map_err(|e| ServeError::Link {
            what: "keeping bhyve's socket for the start-up acknowledgement".into(),
            source: e,
        })?;
    }
    let options = options_of(cfg)?;
    for key in &options.ignored {
        log::debug!("configuration key {key:?} ignored");
    }
    if options.open {
        session.config.restricted = false;
    }
    if let Some(tcp) = options.tcp {
        session.config.tcp = tcp;
    }
    session.rules.extend(options.hostfwd);
    if let Some(name) = options.vmname {
        session.name = name;
    }
    startup::set_nonblocking(&sock).map_err(|e| ServeError::Link {
        what: "making bhyve's socket non-blocking".into(),
        source: e,
    })?;
    let raw = sock.as_raw_fd();
    Ok(Link::polled(
        sock,
        LinkKind::Socket,
        Box::new(RecordRx::new(raw, Medium::Seqpacket, "bhyve")),
        Box::new(RecordTx::new(
            raw,
            Medium::Seqpacket,
            BHYVE_MAX_RECORD,
            "bhyve",
        )),
    ))
}

/// Takes the inherited socket `fd`, checking it is a SOCK_SEQPACKET socket.
fn take_socket(fd: RawFd) -> Result<OwnedFd, ServeError> {
    let sock = startup::inherited_fd(fd, "-S")?;
    let bad = |why: String| {
        ServeError::from(startup::StartupError::Descriptor {
            flag: "-S",
            fd,
            why,
        })
    };
    match serve::socket_type(&sock) {
        Ok(libc::SOCK_SEQPACKET) => Ok(sock),
        Ok(other) => Err(bad(format!("socket type {other} is not SOCK_SEQPACKET"))),
        Err(e) => Err(bad(format!("not a socket ({e})"))),
    }
}

/// Reads the configuration record (blocking).
fn read_config(sock: &OwnedFd) -> Result<Vec<u8>, ServeError> {
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
        return Err(ServeError::BhyveConfig(
            "bhyve closed the socket before sending it".into(),
        ));
    }
    if n > MAX_CONFIG {
        return Err(ServeError::BhyveConfig(format!(
            "a record of {n} bytes is larger than {MAX_CONFIG}"
        )));
    }
    buf.truncate(n);
    Ok(buf)
}

/// The options of a decoded configuration.
fn options_of(cfg: HelperConfig) -> Result<SlirpOptions, ServeError> {
    SlirpOptions::from_helper("bhyve", cfg)
        .map_err(|e| ServeError::BhyveConfig(format!("hostfwd: {e}")))
}
