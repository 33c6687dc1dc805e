//! Where the guest's connections go: the host address is the host's
//! loopback (when allowed), addresses beyond the virtual network are
//! themselves, the rest of the network stays libslirp's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Where the path may take the guest's connections, from the stack's
/// configuration.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Rules {
    pub ipv4: bool,
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    pub host: Ipv4Addr,
    pub ipv6: bool,
    pub prefix6: Ipv6Addr,
    pub prefix6_len: u8,
    pub host6: Ipv6Addr,
    pub host_loopback: bool,
    pub outbound: Option<Ipv4Addr>,
    pub outbound6: Option<Ipv6Addr>,
    /// The largest IP packet toward the guest.
    pub mtu: usize,
    /// The guest may connect out (open mode); else the path serves host
    /// forwards only.
    pub open: bool,
    /// A flow whose guest has sent nothing this long is reset (probed at
    /// half of it).
    pub idle_timeout: Duration,
    /// A flow both of whose FINs were seen and that moves no byte either
    /// way this long is reset.
    pub fin_timeout: Duration,
}

impl Rules {
    /// Where a guest connection to `to` goes on the host, if this path
    /// takes it: the host's address means its loopback (when allowed);
    /// anything else inside the virtual network, and addresses no host
    /// socket should reach, stay libslirp's.
    pub fn target(&self, to: SocketAddr) -> Option<SocketAddr> {
        let port = to.port();
        match to.ip() {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                if !self.ipv4 {
                    None
                } else if a == self.host {
                    self.host_loopback
                        .then(|| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))
                } else if u32::from(a) & mask == u32::from(self.network) & mask
                    || a.is_loopback()
                    || a.is_unspecified()
                    || a.is_broadcast()
                    || a.is_multicast()
                {
                    None
                } else {
                    Some(to)
                }
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix6_len))
                    .unwrap_or(0);
                if !self.ipv6 {
                    None
                } else if a == self.host6 {
                    self.host_loopback
                        .then(|| SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port))
                } else if u128::from(a) & mask == u128::from(self.prefix6) & mask
                    || a.is_loopback()
                    || a.is_unspecified()
                    || a.is_multicast()
                {
                    None
                } else {
                    Some(to)
                }
            }
        }
    }

    pub(super) fn bind_for(&self, to: SocketAddr) -> Option<IpAddr> {
        match to {
            SocketAddr::V4(_) => self.outbound.map(IpAddr::from),
            SocketAddr::V6(_) => self.outbound6.map(IpAddr::from),
        }
    }
}
