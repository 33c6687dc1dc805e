//! Our own declarations of the part of the libslirp 4.7 C API we use.
//!
//! Written from `/usr/include/slirp/libslirp.h` (4.7.0) with `libc` socket
//! types, so the `sockaddr` layouts are right on every platform. `SlirpCb`
//! is the full version-4 table (88 bytes on LP64, with `init_completed` and
//! `timer_new_opaque`): passing config version 4 with a shorter table makes
//! `slirp_new` read past it. The tests below pin both layouts.

use std::os::raw::{c_char, c_int, c_void};

use libc::{in6_addr, in_addr, sockaddr, sockaddr_in, sockaddr_in6, socklen_t};

/// The opaque libslirp instance.
#[repr(C)]
pub struct Slirp {
    _data: [u8; 0],
    _marker: std::marker::PhantomData<(*mut u8, std::marker::PhantomPinned)>,
}

/// `SLIRP_POLL_IN`: readable.
pub const SLIRP_POLL_IN: c_int = 1 << 0;
/// `SLIRP_POLL_OUT`: writable.
pub const SLIRP_POLL_OUT: c_int = 1 << 1;
/// `SLIRP_POLL_PRI`: urgent data.
pub const SLIRP_POLL_PRI: c_int = 1 << 2;
/// `SLIRP_POLL_ERR`: error pending.
pub const SLIRP_POLL_ERR: c_int = 1 << 3;
/// `SLIRP_POLL_HUP`: hung up.
pub const SLIRP_POLL_HUP: c_int = 1 << 4;

/// `SLIRP_HOSTFWD_UDP`: forward UDP instead of TCP.
pub const SLIRP_HOSTFWD_UDP: c_int = 1;

/// The `SlirpConfig` version whose layout [`SlirpConfig`] has.
pub const SLIRP_CONFIG_VERSION: u32 = 4;

/// `enum SlirpTimerId` (a C enum: `int`-sized on our ABIs).
pub type SlirpTimerId = c_int;

/// `SlirpWriteCb`.
pub type SlirpWriteCb =
    unsafe extern "C" fn(buf: *const c_void, len: usize, opaque: *mut c_void) -> isize;
/// `SlirpTimerCb`.
pub type SlirpTimerCb = unsafe extern "C" fn(opaque: *mut c_void);
/// `SlirpAddPollCb`: returns the index `get_revents` is later asked about.
pub type SlirpAddPollCb =
    unsafe extern "C" fn(fd: c_int, events: c_int, opaque: *mut c_void) -> c_int;
/// `SlirpGetREventsCb`.
pub type SlirpGetREventsCb = unsafe extern "C" fn(idx: c_int, opaque: *mut c_void) -> c_int;

/// `struct SlirpCb` as of config version 4.
#[repr(C)]
pub struct SlirpCb {
    /// Sends an Ethernet frame to the guest.
    pub send_packet: Option<SlirpWriteCb>,
    /// Reports guest misbehaviour.
    pub guest_error: Option<unsafe extern "C" fn(msg: *const c_char, opaque: *mut c_void)>,
    /// The clock, in nanoseconds.
    pub clock_get_ns: Option<unsafe extern "C" fn(opaque: *mut c_void) -> i64>,
    /// Makes a timer (used when `timer_new_opaque` is absent).
    pub timer_new: Option<
        unsafe extern "C" fn(
            cb: Option<SlirpTimerCb>,
            cb_opaque: *mut c_void,
            opaque: *mut c_void,
        ) -> *mut c_void,
    >,
    /// Frees a timer.
    pub timer_free: Option<unsafe extern "C" fn(timer: *mut c_void, opaque: *mut c_void)>,
    /// Arms a timer for an absolute time in milliseconds on the clock.
    pub timer_mod:
        Option<unsafe extern "C" fn(timer: *mut c_void, expire_time: i64, opaque: *mut c_void)>,
    /// A socket was created.
    pub register_poll_fd: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
    /// A socket is about to be closed.
    pub unregister_poll_fd: Option<unsafe extern "C" fn(fd: c_int, opaque: *mut c_void)>,
    /// Something may now be processed (buffer space freed).
    pub notify: Option<unsafe extern "C" fn(opaque: *mut c_void)>,
    /// Version 4: the instance is set up.
    pub init_completed: Option<unsafe extern "C" fn(slirp: *mut Slirp, opaque: *mut c_void)>,
    /// Version 4: makes a timer that fires through `slirp_handle_timer`.
    pub timer_new_opaque: Option<
        unsafe extern "C" fn(
            id: SlirpTimerId,
            cb_opaque: *mut c_void,
            opaque: *mut c_void,
        ) -> *mut c_void,
    >,
}

/// `struct SlirpConfig`, version 4 layout.
#[repr(C)]
pub struct SlirpConfig {
    /// Layout version; we always pass [`SLIRP_CONFIG_VERSION`].
    pub version: u32,
    /// Non-zero: the guest cannot reach the outside.
    pub restricted: c_int,
    /// IPv4 on.
    pub in_enabled: bool,
    /// The virtual network.
    pub vnetwork: in_addr,
    /// Its netmask.
    pub vnetmask: in_addr,
    /// The host's (gateway's) address.
    pub vhost: in_addr,
    /// IPv6 on.
    pub in6_enabled: bool,
    /// The IPv6 prefix.
    pub vprefix_addr6: in6_addr,
    /// Its length.
    pub vprefix_len: u8,
    /// The host's IPv6 address.
    pub vhost6: in6_addr,
    /// Host name handed out by DHCP.
    pub vhostname: *const c_char,
    /// TFTP server name (unused: NULL).
    pub tftp_server_name: *const c_char,
    /// TFTP root (unused: NULL).
    pub tftp_path: *const c_char,
    /// Boot file (unused: NULL).
    pub bootfile: *const c_char,
    /// First DHCP address.
    pub vdhcp_start: in_addr,
    /// The DNS forwarder's address.
    pub vnameserver: in_addr,
    /// The IPv6 DNS forwarder's address.
    pub vnameserver6: in6_addr,
    /// NULL-terminated DNS search list.
    pub vdnssearch: *const *const c_char,
    /// Domain name handed out by DHCP.
    pub vdomainname: *const c_char,
    /// MTU towards the guest.
    pub if_mtu: usize,
    /// MRU from the guest.
    pub if_mru: usize,
    /// Forbid reaching the host's loopback through the host address.
    pub disable_host_loopback: bool,
    /// libslirp's protocol emulation (unsafe upstream; always false).
    pub enable_emu: bool,
    /// Version 2: source address for outbound IPv4 (libslirp keeps the
    /// pointer, so it must outlive the instance).
    pub outbound_addr: *mut sockaddr_in,
    /// Version 2: source address for outbound IPv6 (kept, like the above).
    pub outbound_addr6: *mut sockaddr_in6,
    /// Version 3: no DNS forwarding.
    pub disable_dns: bool,
    /// Version 4: no DHCP server.
    pub disable_dhcp: bool,
}

#[link(name = "slirp")]
extern "C" {
    /// Makes an instance; NULL if the configuration is refused.
    pub fn slirp_new(
        cfg: *const SlirpConfig,
        callbacks: *const SlirpCb,
        opaque: *mut c_void,
    ) -> *mut Slirp;
    /// Destroys an instance, closing its sockets and freeing its timers.
    pub fn slirp_cleanup(slirp: *mut Slirp);
    /// Collects the descriptors to poll; `timeout` (ms) is lowered as needed.
    pub fn slirp_pollfds_fill(
        slirp: *mut Slirp,
        timeout: *mut u32,
        add_poll: SlirpAddPollCb,
        opaque: *mut c_void,
    );
    /// Handles readiness collected after a `slirp_pollfds_fill`.
    pub fn slirp_pollfds_poll(
        slirp: *mut Slirp,
        select_error: c_int,
        get_revents: SlirpGetREventsCb,
        opaque: *mut c_void,
    );
    /// Hands libslirp one Ethernet frame from the guest.
    pub fn slirp_input(slirp: *mut Slirp, pkt: *const u8, pkt_len: c_int);
    /// Fires a timer made by `timer_new_opaque`.
    pub fn slirp_handle_timer(slirp: *mut Slirp, id: SlirpTimerId, cb_opaque: *mut c_void);
    /// Adds an IPv4 host forward.
    pub fn slirp_add_hostfwd(
        slirp: *mut Slirp,
        is_udp: c_int,
        host_addr: in_addr,
        host_port: c_int,
        guest_addr: in_addr,
        guest_port: c_int,
    ) -> c_int;
    /// Removes an IPv4 host forward.
    pub fn slirp_remove_hostfwd(
        slirp: *mut Slirp,
        is_udp: c_int,
        host_addr: in_addr,
        host_port: c_int,
    ) -> c_int;
    /// Adds a host forward with any address families.
    pub fn slirp_add_hostxfwd(
        slirp: *mut Slirp,
        haddr: *const sockaddr,
        haddrlen: socklen_t,
        gaddr: *const sockaddr,
        gaddrlen: socklen_t,
        flags: c_int,
    ) -> c_int;
    /// Removes a host forward added with `slirp_add_hostxfwd`.
    pub fn slirp_remove_hostxfwd(
        slirp: *mut Slirp,
        haddr: *const sockaddr,
        haddrlen: socklen_t,
        flags: c_int,
    ) -> c_int;
    /// A human-readable table of connections (malloc'd; free it).
    pub fn slirp_connection_info(slirp: *mut Slirp) -> *mut c_char;
    /// The library's version, a static string.
    pub fn slirp_version_string() -> *const c_char;
}

/// A socket address in the form `slirp_add_hostxfwd` takes.
pub enum SockAddr {
    /// IPv4.
    V4(sockaddr_in),
    /// IPv6.
    V6(sockaddr_in6),
}

impl SockAddr {
    /// Builds the C form of `addr`.
    pub fn new(addr: std::net::SocketAddr) -> SockAddr {
        match addr {
            std::net::SocketAddr::V4(a) => SockAddr::V4(sockaddr_v4(a)),
            std::net::SocketAddr::V6(a) => SockAddr::V6(sockaddr_v6(a)),
        }
    }

    /// Pointer and length for C.
    pub fn as_ptr(&self) -> (*const sockaddr, socklen_t) {
        match self {
            SockAddr::V4(s) => (
                (s as *const sockaddr_in).cast(),
                std::mem::size_of::<sockaddr_in>() as socklen_t,
            ),
            SockAddr::V6(s) => (
                (s as *const sockaddr_in6).cast(),
                std::mem::size_of::<sockaddr_in6>() as socklen_t,
            ),
        }
    }
}

/// `struct sockaddr_in` for `a`.
pub fn sockaddr_v4(a: std::net::SocketAddrV4) -> sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all zeroes is valid.
    let mut s: sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = in4(*a.ip());
    #[cfg(any(
        target_os = "freebsd",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    {
        s.sin_len = std::mem::size_of::<sockaddr_in>() as u8;
    }
    s
}

/// `struct sockaddr_in6` for `a`.
pub fn sockaddr_v6(a: std::net::SocketAddrV6) -> sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain old data; all zeroes is valid.
    let mut s: sockaddr_in6 = unsafe { std::mem::zeroed() };
    s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    s.sin6_port = a.port().to_be();
    s.sin6_addr = in6(*a.ip());
    s.sin6_scope_id = a.scope_id();
    #[cfg(any(
        target_os = "freebsd",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    {
        s.sin6_len = std::mem::size_of::<sockaddr_in6>() as u8;
    }
    s
}

/// `struct in_addr` for `a`.
pub fn in4(a: std::net::Ipv4Addr) -> in_addr {
    in_addr {
        s_addr: u32::from(a).to_be(),
    }
}

/// `struct in6_addr` for `a`.
pub fn in6(a: std::net::Ipv6Addr) -> in6_addr {
    // SAFETY: in6_addr is plain old data; all zeroes is valid.
    let mut s: in6_addr = unsafe { std::mem::zeroed() };
    s.s6_addr = a.octets();
    s
}

/// `SLIRP_CONFIG_VERSION_MAX` of the libslirp header caploop was built
/// against (0 if the header could not be read, and on docs.rs, where the
/// build script reads no header): the newest `SlirpConfig` layout that
/// libslirp knows. caploop uses version 4.
pub const CONFIG_VERSION_MAX: u32 = parse_u32(env!("CAPLOOP_SLIRP_CONFIG_VERSION_MAX"));

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// The version string of the libslirp linked in, e.g. `"4.7.0"`.
pub fn version() -> &'static str {
    // SAFETY: slirp_version_string returns a pointer to a static,
    // NUL-terminated string (SLIRP_VERSION_STRING) or, defensively, NULL.
    let p = unsafe { slirp_version_string() };
    if p.is_null() {
        return "unknown";
    }
    // SAFETY: non-NULL, NUL-terminated, and static for the program's life.
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    s.to_str().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    // The header caploop builds against knows the layout it uses.
    const _: () = assert!(CONFIG_VERSION_MAX >= 4);

    /// Offsets computed by hand from libslirp.h with the LP64 C rules
    /// (in_addr and in6_addr are 4-byte aligned, pointers and size_t 8).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn config_layout_matches_c() {
        assert_eq!(offset_of!(SlirpConfig, version), 0);
        assert_eq!(offset_of!(SlirpConfig, restricted), 4);
        assert_eq!(offset_of!(SlirpConfig, in_enabled), 8);
        assert_eq!(offset_of!(SlirpConfig, vnetwork), 12);
        assert_eq!(offset_of!(SlirpConfig, vnetmask), 16);
        assert_eq!(offset_of!(SlirpConfig, vhost), 20);
        assert_eq!(offset_of!(SlirpConfig, in6_enabled), 24);
        assert_eq!(offset_of!(SlirpConfig, vprefix_addr6), 28);
        assert_eq!(offset_of!(SlirpConfig, vprefix_len), 44);
        assert_eq!(offset_of!(SlirpConfig, vhost6), 48);
        assert_eq!(offset_of!(SlirpConfig, vhostname), 64);
        assert_eq!(offset_of!(SlirpConfig, tftp_server_name), 72);
        assert_eq!(offset_of!(SlirpConfig, tftp_path), 80);
        assert_eq!(offset_of!(SlirpConfig, bootfile), 88);
        assert_eq!(offset_of!(SlirpConfig, vdhcp_start), 96);
        assert_eq!(offset_of!(SlirpConfig, vnameserver), 100);
        assert_eq!(offset_of!(SlirpConfig, vnameserver6), 104);
        assert_eq!(offset_of!(SlirpConfig, vdnssearch), 120);
        assert_eq!(offset_of!(SlirpConfig, vdomainname), 128);
        assert_eq!(offset_of!(SlirpConfig, if_mtu), 136);
        assert_eq!(offset_of!(SlirpConfig, if_mru), 144);
        assert_eq!(offset_of!(SlirpConfig, disable_host_loopback), 152);
        assert_eq!(offset_of!(SlirpConfig, enable_emu), 153);
        assert_eq!(offset_of!(SlirpConfig, outbound_addr), 160);
        assert_eq!(offset_of!(SlirpConfig, outbound_addr6), 168);
        assert_eq!(offset_of!(SlirpConfig, disable_dns), 176);
        assert_eq!(offset_of!(SlirpConfig, disable_dhcp), 177);
        assert_eq!(size_of::<SlirpConfig>(), 184);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn callbacks_layout_matches_c() {
        assert_eq!(offset_of!(SlirpCb, send_packet), 0);
        assert_eq!(offset_of!(SlirpCb, notify), 64);
        assert_eq!(offset_of!(SlirpCb, init_completed), 72);
        assert_eq!(offset_of!(SlirpCb, timer_new_opaque), 80);
        assert_eq!(size_of::<SlirpCb>(), 88);
    }

    #[test]
    fn version_is_4_7_or_newer() {
        let v = version();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        assert!((major, minor) >= (4, 7), "libslirp {v}");
    }

    #[test]
    fn sockaddr_v4_is_network_order() {
        let a = SockAddr::new("127.0.0.1:2222".parse().unwrap());
        match a {
            SockAddr::V4(s) => {
                assert_eq!(s.sin_port, 2222u16.to_be());
                assert_eq!(
                    s.sin_addr.s_addr,
                    u32::from_be_bytes([127, 0, 0, 1]).to_be()
                );
            }
            SockAddr::V6(_) => panic!("v4 expected"),
        }
    }
}
