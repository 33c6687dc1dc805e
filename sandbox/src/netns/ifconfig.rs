//! What `-c` / `--configure` does to the tap inside the namespace, with
//! ioctls on an `AF_INET` datagram socket made there (no `ip` command):
//! MTU, MAC (`--macaddress`), cidr+100 with its netmask, the tap and `lo`
//! up, and a default route via the gateway, in slirp4netns's order.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType};

use super::NetnsError;

/// What `-c` / `--configure` sets on the tap, as slirp4netns does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configure {
    /// The guest's address (cidr+100, 10.0.2.100 by default).
    pub addr: Ipv4Addr,
    /// The network's prefix length (24 by default), 0 to 32.
    pub prefix: u8,
    /// The default route's gateway (cidr+2, 10.0.2.2 by default).
    pub gateway: Ipv4Addr,
    /// The tap's MTU.
    pub mtu: u32,
    /// The tap's MAC address (`--macaddress`); the kernel's random one if
    /// `None`.
    pub mac: Option<[u8; 6]>,
}

impl Configure {
    /// The netmask of [`prefix`](Self::prefix).
    pub(super) fn netmask(&self) -> Ipv4Addr {
        match self.prefix {
            0 => Ipv4Addr::UNSPECIFIED,
            p => Ipv4Addr::from(u32::MAX << (32 - u32::from(p.min(32)))),
        }
    }

    pub(super) fn check(&self) -> Result<(), NetnsError> {
        if self.prefix > 32 {
            return Err(NetnsError::BadConfigure(format!(
                "prefix length {} is more than 32",
                self.prefix
            )));
        }
        if self.mtu == 0 || self.mtu > i32::MAX as u32 {
            return Err(NetnsError::BadConfigure(format!(
                "MTU {} is out of range",
                self.mtu
            )));
        }
        Ok(())
    }
}

/// Reads a MAC address written as six colon-separated hex pairs
/// (`02:00:00:00:00:01`). Multicast and all-zero addresses are refused: the
/// kernel will not give them to an Ethernet device.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetnsError> {
    let bad = |reason: &'static str| NetnsError::BadMac {
        value: s.to_owned(),
        reason,
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let part = parts
            .next()
            .ok_or_else(|| bad("it has fewer than six parts"))?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("each of the six parts must be two hex digits"));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad("a part is not hex"))?;
    }
    if parts.next().is_some() {
        return Err(bad("it has more than six parts"));
    }
    if mac[0] & 1 != 0 {
        return Err(bad("it is a multicast address (the first byte is odd)"));
    }
    if mac == [0; 6] {
        return Err(bad("it is all zeroes"));
    }
    Ok(mac)
}

/// An `ifreq` for `name`, with its union zeroed.
pub(super) fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(format!("invalid interface name {name:?}"));
    }
    // SAFETY: `ifreq` is plain old data (a name array and a union of
    // integers, addresses and a pointer), for which all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// An `AF_INET` `sockaddr` holding `addr`.
fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` are both 16 bytes of plain data;
    // this is the cast every SIOCSIFADDR caller makes.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Runs one interface ioctl on `sock`.
fn ifr_ioctl(
    sock: BorrowedFd<'_>,
    req: libc::Ioctl,
    ifr: &mut libc::ifreq,
    what: &str,
) -> Result<(), String> {
    // SAFETY: every request used here (SIOC[GS]IF*) reads or writes one
    // `ifreq`, which `ifr` is and which outlives the call; `sock` is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, ifr as *mut libc::ifreq) };
    if rc < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// Sets `IFF_UP` on `name`.
fn bring_up(sock: BorrowedFd<'_>, name: &str) -> Result<(), String> {
    let mut ifr = ifreq(name)?;
    ifr_ioctl(
        sock,
        libc::SIOCGIFFLAGS,
        &mut ifr,
        &format!("reading the flags of {name} (SIOCGIFFLAGS)"),
    )?;
    // SAFETY: SIOCGIFFLAGS has just filled `ifru_flags`, a plain integer.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ifr_ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        &mut ifr,
        &format!("bringing {name} up (SIOCSIFFLAGS)"),
    )
}

/// What `-c` does: MTU, MAC, address and netmask, the tap and `lo` up, and
/// the default route, in slirp4netns's order.
pub(super) fn configure(tap: &str, cfg: &Configure) -> Result<(), String> {
    let sock = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("making an AF_INET socket in the namespace: {e}"))?;
    let s = sock.as_fd();

    bring_up(s, "lo")?;

    let mut ifr = ifreq(tap)?;
    ifr.ifr_ifru.ifru_mtu = cfg.mtu as libc::c_int;
    ifr_ioctl(
        s,
        libc::SIOCSIFMTU,
        &mut ifr,
        &format!("setting the MTU of {tap} to {} (SIOCSIFMTU)", cfg.mtu),
    )?;

    if let Some(mac) = cfg.mac {
        let mut ifr = ifreq(tap)?;
        // SAFETY: `sockaddr` is plain data, for which all zeroes is valid.
        let mut hw: libc::sockaddr = unsafe { std::mem::zeroed() };
        hw.sa_family = libc::ARPHRD_ETHER;
        for (dst, &src) in hw.sa_data.iter_mut().zip(mac.iter()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = hw;
        ifr_ioctl(
            s,
            libc::SIOCSIFHWADDR,
            &mut ifr,
            &format!("setting the MAC address of {tap} (SIOCSIFHWADDR)"),
        )?;
    }

    bring_up(s, tap)?;

    let mut ifr = ifreq(tap)?;
    ifr.ifr_ifru.ifru_addr = sockaddr_in(cfg.addr);
    ifr_ioctl(
        s,
        libc::SIOCSIFADDR,
        &mut ifr,
        &format!("giving {tap} the address {} (SIOCSIFADDR)", cfg.addr),
    )?;

    let mut ifr = ifreq(tap)?;
    ifr.ifr_ifru.ifru_netmask = sockaddr_in(cfg.netmask());
    ifr_ioctl(
        s,
        libc::SIOCSIFNETMASK,
        &mut ifr,
        &format!(
            "setting the netmask of {tap} to {} (SIOCSIFNETMASK)",
            cfg.netmask()
        ),
    )?;

    let dev = CString::new(tap).map_err(|_| format!("invalid interface name {tap:?}"))?;
    // SAFETY: `rtentry` is plain data plus one pointer, for which all
    // zeroes (a null `rt_dev`) is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_in(cfg.gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_ptr() as *mut libc::c_char;
    // SAFETY: SIOCADDRT reads one `rtentry`, which `rt` is; its `rt_dev`
    // points at `dev`, a NUL-terminated string that outlives the call (the
    // kernel only reads it); `s` is open.
    let rc = unsafe {
        libc::ioctl(
            s.as_raw_fd(),
            libc::SIOCADDRT,
            &mut rt as *mut libc::rtentry,
        )
    };
    if rc < 0 {
        return Err(format!(
            "adding the default route via {} on {tap} (SIOCADDRT): {}",
            cfg.gateway,
            io::Error::last_os_error()
        ));
    }
    Ok(())
}
