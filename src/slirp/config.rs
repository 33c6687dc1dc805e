//! The virtual network's configuration: bhyve's defaults plus the knobs a
//! QEMU `-netdev user` user looks for, validated before libslirp sees them.

use std::ffi::CString;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::raw::c_char;
use std::time::Duration;

use super::ffi;
pub use crate::tcp::TcpMode;

/// The smallest MTU/MRU accepted (the IPv4 minimum).
pub const MTU_MIN: usize = 68;
/// The largest MTU/MRU libslirp accepts.
pub const MTU_MAX: usize = 65520;

/// What the virtual network looks like and what the guest may do.
///
/// [`Config::default`] is bhyve's network: 10.0.2.0/24, host (gateway)
/// 10.0.2.2, DNS 10.0.2.3, DHCP from 10.0.2.15, IPv6 fd00::/64, restricted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The guest cannot reach the outside (only host forwards work). bhyve's
    /// default; its `open` option clears it.
    pub restricted: bool,
    /// IPv4 on.
    pub ipv4: bool,
    /// The virtual IPv4 network (host bits must be zero).
    pub network: Ipv4Addr,
    /// Its prefix length, 1 to 30.
    pub prefix_len: u8,
    /// The host's (gateway's) address inside the network.
    pub host: Ipv4Addr,
    /// The first address DHCP hands out; also the default guest of host forwards.
    pub dhcp_start: Ipv4Addr,
    /// The DNS forwarder's address inside the network.
    pub dns: Ipv4Addr,
    /// IPv6 on.
    pub ipv6: bool,
    /// The IPv6 prefix (host bits must be zero).
    pub prefix6: Ipv6Addr,
    /// Its length, 1 to 126.
    pub prefix6_len: u8,
    /// The host's IPv6 address inside the prefix.
    pub host6: Ipv6Addr,
    /// The IPv6 DNS forwarder's address inside the prefix.
    pub dns6: Ipv6Addr,
    /// Largest IP packet sent to the guest, 68 to 65520.
    pub mtu: usize,
    /// Largest IP packet accepted from the guest, 68 to 65520.
    pub mru: usize,
    /// Forward DNS queries to the host's resolvers (libslirp `disable_dns` off).
    pub dns_enabled: bool,
    /// Serve DHCP (libslirp `disable_dhcp` off).
    pub dhcp: bool,
    /// Let the guest reach the host's 127.0.0.1 through the host address
    /// (libslirp `disable_host_loopback` off).
    pub host_loopback: bool,
    /// Source address for the guest's outbound IPv4 connections.
    pub outbound_addr: Option<Ipv4Addr>,
    /// Source address for the guest's outbound IPv6 connections.
    pub outbound_addr6: Option<Ipv6Addr>,
    /// Host name offered by DHCP (at most 32 bytes).
    pub hostname: Option<String>,
    /// Domain name offered by DHCP.
    pub domainname: Option<String>,
    /// DNS search domains offered by DHCP.
    pub dns_search: Vec<String>,
    /// Who serves the guest's TCP: the path of scaled windows beside
    /// libslirp ([`crate::tcp`], the default: host forwards, and in open
    /// mode the guest's connections), or libslirp alone.
    pub tcp: TcpMode,
    /// With [`TcpMode::Own`]: a forwarded TCP connection reaches the guest
    /// from the real client's address and port, as pasta's do, unless the
    /// client is on the host's loopback (the guest would take that address
    /// for its own) or of the other IP family; then, and always when off,
    /// from the host address, as libslirp's (what slirp4netns users'
    /// programs expect). Off by default.
    pub hostfwd_real_source: bool,
    /// With [`TcpMode::Own`]: a connection whose guest side has sent
    /// nothing for half this long is probed (TCP keep-alive), and one
    /// whose guest has sent nothing for this long (a crashed or silent
    /// guest) is reset both ways. A live idle connection answers the
    /// probes and stays. A connection to the guest (through a forward)
    /// waits for its answer this long at most, 75 s if that is less.
    /// Default 7200 s (the kernel's keep-alive time, passt's activity
    /// timeout).
    pub tcp_idle_timeout: Duration,
    /// With [`TcpMode::Own`]: once both ends have sent their FIN, a flow
    /// that moves no byte either way and does not finish closing in this
    /// long is reset (its last ACK lost or never sent, or a peer that
    /// stopped taking the last bytes). A slow but moving transfer after
    /// both FINs is kept. Default 60 s (the kernel's `tcp_fin_timeout`).
    pub tcp_fin_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            restricted: true,
            ipv4: true,
            network: Ipv4Addr::new(10, 0, 2, 0),
            prefix_len: 24,
            host: Ipv4Addr::new(10, 0, 2, 2),
            dhcp_start: Ipv4Addr::new(10, 0, 2, 15),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            ipv6: true,
            prefix6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
            prefix6_len: 64,
            host6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            dns6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3),
            mtu: 1500,
            mru: 1500,
            dns_enabled: true,
            dhcp: true,
            host_loopback: true,
            outbound_addr: None,
            outbound_addr6: None,
            hostname: None,
            domainname: None,
            dns_search: Vec::new(),
            tcp: TcpMode::Own,
            hostfwd_real_source: false,
            tcp_idle_timeout: Duration::from_secs(7200),
            tcp_fin_timeout: Duration::from_secs(60),
        }
    }
}

/// A configuration value libslirp would refuse or misuse, naming the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A prefix length out of range.
    #[error("{what} prefix length /{len} is out of range ({min} to {max})")]
    PrefixLen {
        /// Which prefix.
        what: &'static str,
        /// The bad length.
        len: u8,
        /// Smallest allowed.
        min: u8,
        /// Largest allowed.
        max: u8,
    },
    /// A netmask whose one bits are not contiguous.
    #[error("netmask {0} is not contiguous")]
    Netmask(Ipv4Addr),
    /// The network address has host bits set.
    #[error("network {addr}/{len} has host bits set (did you mean {expected}/{len}?)")]
    NetworkHostBits {
        /// The bad network.
        addr: String,
        /// Its prefix length.
        len: u8,
        /// The network it probably meant.
        expected: String,
    },
    /// An address that must be inside the network is not.
    #[error("{what} {addr} is not inside the network {network}/{len}")]
    OutsideNetwork {
        /// Which address.
        what: &'static str,
        /// The bad address.
        addr: String,
        /// The network.
        network: String,
        /// Its prefix length.
        len: u8,
    },
    /// An address that cannot be used for a host (network or broadcast).
    #[error("{what} {addr} is the network or broadcast address of {network}/{len}")]
    Reserved {
        /// Which address.
        what: &'static str,
        /// The bad address.
        addr: Ipv4Addr,
        /// The network.
        network: Ipv4Addr,
        /// Its prefix length.
        len: u8,
    },
    /// Two roles given the same address.
    #[error("{a} and {b} are both {addr}")]
    Clash {
        /// One role.
        a: &'static str,
        /// The other.
        b: &'static str,
        /// The shared address.
        addr: String,
    },
    /// An MTU or MRU out of range.
    #[error("{what} {value} is out of range ({MTU_MIN} to {MTU_MAX})")]
    Mtu {
        /// `"MTU"` or `"MRU"`.
        what: &'static str,
        /// The bad value.
        value: usize,
    },
    /// Both IPv4 and IPv6 off.
    #[error("both IPv4 and IPv6 are disabled")]
    NoProtocol,
    /// A timeout of zero, or too long for the clock.
    #[error("{what} {value:?} is out of range (1 ms to 30 days)")]
    Timeout {
        /// Which timeout.
        what: &'static str,
        /// The bad value.
        value: Duration,
    },
    /// A name that cannot be passed to C or does not fit.
    #[error("{what} {value:?} {why}")]
    Name {
        /// Which name.
        what: &'static str,
        /// The bad value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl Config {
    /// The configuration with the guest allowed out (bhyve's `open`).
    pub fn open() -> Config {
        Config {
            restricted: false,
            ..Config::default()
        }
    }

    /// The IPv4 netmask for [`prefix_len`](Config::prefix_len).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask4(self.prefix_len))
    }

    /// Sets the prefix length from a dotted netmask, refusing a
    /// non-contiguous one.
    pub fn set_netmask(&mut self, mask: Ipv4Addr) -> Result<(), ConfigError> {
        let m = u32::from(mask);
        let len = m.leading_ones();
        if m.checked_shl(len).unwrap_or(0) != 0 {
            return Err(ConfigError::Netmask(mask));
        }
        self.prefix_len = len as u8;
        Ok(())
    }

    /// Checks every value, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.ipv4 && !self.ipv6 {
            return Err(ConfigError::NoProtocol);
        }
        if self.ipv4 {
            self.validate4()?;
        }
        if self.ipv6 {
            self.validate6()?;
        }
        for (what, value) in [("MTU", self.mtu), ("MRU", self.mru)] {
            if !(MTU_MIN..=MTU_MAX).contains(&value) {
                return Err(ConfigError::Mtu { what, value });
            }
        }
        let timeouts = [
            ("TCP idle timeout", self.tcp_idle_timeout),
            ("TCP FIN timeout", self.tcp_fin_timeout),
        ];
        for (what, value) in timeouts {
            let range = Duration::from_millis(1)..=Duration::from_secs(30 * 86400);
            if !range.contains(&value) {
                return Err(ConfigError::Timeout { what, value });
            }
        }
        if let Some(h) = &self.hostname {
            check_name("host name", h, 32)?;
        }
        if let Some(d) = &self.domainname {
            check_name("domain name", d, 255)?;
        }
        for s in &self.dns_search {
            check_name("DNS search domain", s, 255)?;
        }
        Ok(())
    }

    fn validate4(&self) -> Result<(), ConfigError> {
        let len = self.prefix_len;
        if !(1..=30).contains(&len) {
            return Err(ConfigError::PrefixLen {
                what: "IPv4",
                len,
                min: 1,
                max: 30,
            });
        }
        let mask = mask4(len);
        let net = u32::from(self.network);
        if net & !mask != 0 {
            return Err(ConfigError::NetworkHostBits {
                addr: self.network.to_string(),
                len,
                expected: Ipv4Addr::from(net & mask).to_string(),
            });
        }
        let roles = [
            ("host address", self.host),
            ("DHCP start", self.dhcp_start),
            ("DNS address", self.dns),
        ];
        for (what, addr) in roles {
            let a = u32::from(addr);
            if a & mask != net {
                return Err(ConfigError::OutsideNetwork {
                    what,
                    addr: addr.to_string(),
                    network: self.network.to_string(),
                    len,
                });
            }
            if a == net || a == net | !mask {
                return Err(ConfigError::Reserved {
                    what,
                    addr,
                    network: self.network,
                    len,
                });
            }
        }
        for (i, (a, x)) in roles.iter().enumerate() {
            for (b, y) in &roles[i + 1..] {
                if x == y {
                    return Err(ConfigError::Clash {
                        a,
                        b,
                        addr: x.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    fn validate6(&self) -> Result<(), ConfigError> {
        let len = self.prefix6_len;
        if !(1..=126).contains(&len) {
            return Err(ConfigError::PrefixLen {
                what: "IPv6",
                len,
                min: 1,
                max: 126,
            });
        }
        let mask = mask6(len);
        let net = u128::from(self.prefix6);
        if net & !mask != 0 {
            return Err(ConfigError::NetworkHostBits {
                addr: self.prefix6.to_string(),
                len,
                expected: Ipv6Addr::from(net & mask).to_string(),
            });
        }
        for (what, addr) in [
            ("IPv6 host address", self.host6),
            ("IPv6 DNS address", self.dns6),
        ] {
            if u128::from(addr) & mask != net {
                return Err(ConfigError::OutsideNetwork {
                    what,
                    addr: addr.to_string(),
                    network: self.prefix6.to_string(),
                    len,
                });
            }
        }
        if self.host6 == self.dns6 {
            return Err(ConfigError::Clash {
                a: "IPv6 host address",
                b: "IPv6 DNS address",
                addr: self.host6.to_string(),
            });
        }
        Ok(())
    }

    /// The C form, with the strings and addresses it points to. Validates
    /// first.
    pub(crate) fn to_c(&self) -> Result<CConfig, ConfigError> {
        self.validate()?;
        let cstr = |what, s: &str| {
            CString::new(s).map_err(|_| ConfigError::Name {
                what,
                value: s.to_string(),
                why: "contains a NUL byte",
            })
        };
        let hostname = self
            .hostname
            .as_deref()
            .map(|s| cstr("host name", s))
            .transpose()?;
        let domainname = self
            .domainname
            .as_deref()
            .map(|s| cstr("domain name", s))
            .transpose()?;
        let search: Vec<CString> = self
            .dns_search
            .iter()
            .map(|s| cstr("DNS search domain", s))
            .collect::<Result<_, _>>()?;
        let mut search_ptrs: Vec<*const c_char> = search.iter().map(|s| s.as_ptr()).collect();
        search_ptrs.push(std::ptr::null());
        let mut outbound = self
            .outbound_addr
            .map(|a| Box::new(ffi::sockaddr_v4(SocketAddrV4::new(a, 0))));
        let mut outbound6 = self
            .outbound_addr6
            .map(|a| Box::new(ffi::sockaddr_v6(SocketAddrV6::new(a, 0, 0, 0))));
        let raw = ffi::SlirpConfig {
            version: ffi::SLIRP_CONFIG_VERSION,
            restricted: i32::from(self.restricted),
            in_enabled: self.ipv4,
            vnetwork: ffi::in4(self.network),
            vnetmask: ffi::in4(self.netmask()),
            vhost: ffi::in4(self.host),
            in6_enabled: self.ipv6,
            vprefix_addr6: ffi::in6(self.prefix6),
            vprefix_len: self.prefix6_len,
            vhost6: ffi::in6(self.host6),
            vhostname: hostname.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tftp_server_name: std::ptr::null(),
            tftp_path: std::ptr::null(),
            bootfile: std::ptr::null(),
            vdhcp_start: ffi::in4(self.dhcp_start),
            vnameserver: ffi::in4(self.dns),
            vnameserver6: ffi::in6(self.dns6),
            vdnssearch: if search.is_empty() {
                std::ptr::null()
            } else {
                search_ptrs.as_ptr()
            },
            vdomainname: domainname.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            if_mtu: self.mtu,
            if_mru: self.mru,
            disable_host_loopback: !self.host_loopback,
            enable_emu: false,
            outbound_addr: outbound
                .as_mut()
                .map_or(std::ptr::null_mut(), |b| &mut **b as *mut _),
            outbound_addr6: outbound6
                .as_mut()
                .map_or(std::ptr::null_mut(), |b| &mut **b as *mut _),
            disable_dns: !self.dns_enabled,
            disable_dhcp: !self.dhcp,
        };
        Ok(CConfig {
            raw,
            _hostname: hostname,
            _domainname: domainname,
            _search: search,
            _search_ptrs: search_ptrs,
            _outbound: outbound,
            _outbound6: outbound6,
        })
    }
}

fn check_name(what: &'static str, value: &str, max: usize) -> Result<(), ConfigError> {
    let why = if value.is_empty() {
        "is empty"
    } else if value.len() > max {
        if max == 32 {
            "is longer than 32 bytes"
        } else {
            "is longer than 255 bytes"
        }
    } else if value.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(ConfigError::Name {
        what,
        value: value.to_string(),
        why,
    })
}

/// A [`ffi::SlirpConfig`] with the memory its pointers point into. The heap
/// buffers do not move when this moves; libslirp keeps the outbound address
/// pointers, so the stack holds this for the instance's whole life.
pub(crate) struct CConfig {
    pub raw: ffi::SlirpConfig,
    _hostname: Option<CString>,
    _domainname: Option<CString>,
    _search: Vec<CString>,
    _search_ptrs: Vec<*const c_char>,
    _outbound: Option<Box<libc::sockaddr_in>>,
    _outbound6: Option<Box<libc::sockaddr_in6>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_bhyves() {
        let c = Config::default();
        assert!(c.restricted);
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.host, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(c.dns, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(c.dhcp_start, Ipv4Addr::new(10, 0, 2, 15));
        c.validate().unwrap();
        assert!(!Config::open().restricted);
    }

    #[test]
    fn host_outside_network_is_named() {
        let c = Config {
            host: Ipv4Addr::new(10, 0, 3, 2),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "host address 10.0.3.2 is not inside the network 10.0.2.0/24"
        );
    }

    #[test]
    fn mtu_range() {
        for bad in [0, 67, 65521] {
            let c = Config {
                mtu: bad,
                ..Config::default()
            };
            assert_eq!(
                c.validate().unwrap_err().to_string(),
                format!("MTU {bad} is out of range (68 to 65520)")
            );
        }
        let c = Config {
            mtu: 65520,
            mru: 65520,
            ..Config::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn netmask_and_host_bits() {
        let mut c = Config::default();
        c.set_netmask(Ipv4Addr::new(255, 255, 0, 0)).unwrap();
        assert_eq!(c.prefix_len, 16);
        assert!(c.set_netmask(Ipv4Addr::new(255, 0, 255, 0)).is_err());
        c.network = Ipv4Addr::new(10, 0, 2, 0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("has host bits set (did you mean 10.0.0.0/16?)"));
    }

    #[test]
    fn clashes_and_reserved() {
        let c = Config {
            dns: Ipv4Addr::new(10, 0, 2, 2),
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "host address and DNS address are both 10.0.2.2"
        );
        let c = Config {
            dhcp_start: Ipv4Addr::new(10, 0, 2, 255),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("broadcast"));
    }

    #[test]
    fn ipv6_checks() {
        let c = Config {
            host6: "fd01::2".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "IPv6 host address fd01::2 is not inside the network fd00::/64"
        );
        let c = Config {
            ipv6: false,
            host6: "fd01::2".parse().unwrap(),
            ..Config::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn names() {
        let c = Config {
            hostname: Some("x".repeat(33)),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("32 bytes"));
        let c = Config {
            domainname: Some("a\0b".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("NUL"));
    }

    #[test]
    fn timeouts_of_zero_are_named() {
        let c = Config {
            tcp_fin_timeout: std::time::Duration::ZERO,
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("TCP FIN timeout 0ns"), "{e}");
        let c = Config {
            tcp_idle_timeout: std::time::Duration::from_secs(31 * 86400),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("TCP idle timeout 2678400s"), "{e}");
    }

    #[test]
    fn c_form_points_into_owned_memory() {
        let c = Config {
            hostname: Some("guest".into()),
            dns_search: vec!["example.org".into()],
            outbound_addr: Some(Ipv4Addr::LOCALHOST),
            dhcp: false,
            ..Config::default()
        };
        let cc = c.to_c().unwrap();
        assert_eq!(cc.raw.version, 4);
        assert!(cc.raw.disable_dhcp);
        assert!(!cc.raw.vhostname.is_null());
        assert!(!cc.raw.vdnssearch.is_null());
        assert!(!cc.raw.outbound_addr.is_null());
        assert!(cc.raw.outbound_addr6.is_null());
        assert_eq!(
            cc.raw.vnetmask.s_addr,
            u32::from_be_bytes([255, 255, 255, 0]).to_be()
        );
    }
}
