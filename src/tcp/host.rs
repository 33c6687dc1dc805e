//! The host side of a flow: a non-blocking TCP socket connecting to where
//! the guest asked (or where libslirp's rules translate it to).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};

/// Where a `connect` stands right after it was made.
#[derive(Debug)]
pub(crate) enum Started {
    /// Connected at once (loopback may do that).
    Done(TcpStream),
    /// In progress: writable once it is done, then `SO_ERROR` says how.
    Pending(TcpStream),
}

/// A non-blocking, close-on-exec TCP socket to `to`, bound to `from` (port
/// any) when given, with Nagle off (smoltcp hands over whole runs).
pub(crate) fn connect_to(to: SocketAddr, from: Option<IpAddr>) -> io::Result<Started> {
    let fd = stream_socket(to)?;
    if let Some(ip) = from {
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(ip, 0)),
        )?;
    }
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    let raw = fd.as_raw_fd();
    match connect(raw, &SockaddrStorage::from(to)) {
        Ok(()) => Ok(Started::Done(TcpStream::from(fd))),
        Err(Errno::EINPROGRESS) => Ok(Started::Pending(TcpStream::from(fd))),
        Err(e) => Err(e.into()),
    }
}

/// A non-blocking, close-on-exec TCP listener on `at`, with
/// `SO_REUSEADDR` (as libslirp's forwards have).
pub(crate) fn listen_on(at: SocketAddr) -> io::Result<std::net::TcpListener> {
    let fd = stream_socket(at)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let raw = fd.as_raw_fd();
    bind(raw, &SockaddrStorage::from(at))?;
    nix::sys::socket::listen(
        &fd,
        nix::sys::socket::Backlog::new(128).map_err(io::Error::from)?,
    )?;
    Ok(std::net::TcpListener::from(fd))
}

/// A non-blocking TCP socket of `addr`'s family: non-blocking and
/// close-on-exec from the start where `socket` takes the flags (no
/// `fcntl` on it after entry), elsewhere through std's ioctl.
fn stream_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let flags = SockFlag::empty();
    let fd: OwnedFd = socket(family, SockType::Stream, flags, None)?;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let fd: OwnedFd = {
        let s = TcpStream::from(fd);
        s.set_nonblocking(true)?;
        s.into()
    };
    Ok(fd)
}
