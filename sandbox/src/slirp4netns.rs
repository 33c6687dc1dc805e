//! The slirp4netns front end: a tap device in a rootless container's
//! network namespace, served by libslirp on the reactor, with slirp4netns
//! 1.2's command line, ready and exit descriptors and API socket, so
//! rootlesskit and Podman can run caploop-sandbox in its place.
//!
//! This file opens the link: it closes every descriptor but the ready and
//! exit fds, opens the tap inside the target namespace (a child process
//! joins the namespaces and sends the descriptor back; this process never
//! leaves its own), configures it with `-c`, and binds the API socket. The
//! serve loop does the rest: open mode (bind allowed only with an API
//! socket), every capability dropped (but `CAP_NET_BIND_SERVICE` with an
//! API socket), the sandbox entered, then "1" written to the ready fd.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use caploop::slirp::Config;

use crate::cli::{Cli, UsageError};
use crate::error::ServeError;
use crate::link::LinkKind;
use crate::netns::{self, Configure, Target};
use crate::privileges::Privileges;
use crate::record::{Medium, RecordRx, RecordTx};
use crate::serve::{Extras, Session};
use crate::source::Link;
use crate::startup;

/// The network slirp4netns sets up for a `--cidr` (default 10.0.2.0/24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The network address.
    pub net: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

impl Network {
    fn at(&self, host: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + host)
    }

    /// The gateway (the host as seen from the namespace): .2.
    pub fn gateway(&self) -> Ipv4Addr {
        self.at(2)
    }

    /// The DNS forwarder: .3.
    pub fn dns(&self) -> Ipv4Addr {
        self.at(3)
    }

    /// The first address DHCP hands out: .15.
    pub fn dhcp_start(&self) -> Ipv4Addr {
        self.at(15)
    }

    /// The namespace's own address: .100.
    pub fn guest(&self) -> Ipv4Addr {
        self.at(100)
    }
}

/// The slirp configuration the command line asks for.
pub fn config(cli: &Cli, mtu: usize) -> Result<(Config, Network), UsageError> {
    let (net, prefix) = cli.cidr()?.unwrap_or((Ipv4Addr::new(10, 0, 2, 0), 24));
    let network = Network { net, prefix };
    let outbound_addr = match cli.outbound_addr.as_deref() {
        None => None,
        Some(s) => Some(match s.parse::<Ipv4Addr>() {
            Ok(a) => a,
            Err(_) => interface_addr(s)
                .and_then(|a| match a {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                })
                .ok_or_else(|| {
                    UsageError(format!(
                        "--outbound-addr: outbound-addr has to be valid ipv4 address or interface name: \"{s}\" is neither an IPv4 address nor an interface with one"
                    ))
                })?,
        }),
    };
    let outbound_addr6 = match cli.outbound_addr6.as_deref() {
        None => None,
        Some(s) => Some(match s.parse::<Ipv6Addr>() {
            Ok(a) => a,
            Err(_) => interface_addr6(s).ok_or_else(|| {
                UsageError(format!(
                    "--outbound-addr6: outbound-addr6 has to be valid ipv6 address or interface name: \"{s}\" is neither an IPv6 address nor an interface with one"
                ))
            })?,
        }),
    };
    let config = Config {
        restricted: false,
        network: net,
        prefix_len: prefix,
        host: network.gateway(),
        dns: network.dns(),
        dhcp_start: network.dhcp_start(),
        ipv6: cli.ipv6,
        mtu,
        mru: mtu,
        dns_enabled: !cli.disable_dns,
        host_loopback: !cli.disable_host_loopback,
        outbound_addr,
        outbound_addr6,
        tcp: cli.tcp,
        hostfwd_real_source: cli.hostfwd_real_source,
        tcp_idle_timeout: std::time::Duration::from_secs(cli.tcp_idle_timeout),
        tcp_fin_timeout: std::time::Duration::from_secs(cli.tcp_fin_timeout),
        ..Config::default()
    };
    config
        .validate()
        .map_err(|e| UsageError(format!("network: {e}")))?;
    Ok((config, network))
}

fn interface_addrs(name: &str) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let s = a.address?;
            if let Some(v4) = s.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .collect()
}

fn interface_addr(name: &str) -> Option<IpAddr> {
    interface_addrs(name).into_iter().find(IpAddr::is_ipv4)
}

fn interface_addr6(name: &str) -> Option<Ipv6Addr> {
    interface_addrs(name).into_iter().find_map(|a| match a {
        // Not link-local (fe80::/10).
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 != 0xfe80 => Some(v6),
        _ => None,
    })
}

/// Opens the slirp4netns front end's link: the tap `tapname` in `target`.
/// Returns the session, the link and the extras (exit and ready fds, the
/// API socket).
pub fn open(
    cli: &Cli,
    target: &str,
    tapname: &str,
    mtu: usize,
) -> Result<(Session, Link, Extras), ServeError> {
    let (config, network) = config(cli, mtu)?;
    cli.api_socket()?;
    let target = Target::parse(target, cli.netns_type.as_deref())?;
    let mac = cli
        .macaddress
        .as_deref()
        .map(netns::parse_mac)
        .transpose()?;

    let keep: Vec<RawFd> = cli
        .exit_fd
        .iter()
        .chain(cli.ready_fd.iter())
        .copied()
        .collect();
    startup::close_other_fds(&keep)?;
    let exit_fd = cli
        .exit_fd
        .map(|fd| startup::inherited_fd(fd, "--exit-fd"))
        .transpose()?;
    let ready_fd = cli
        .ready_fd
        .map(|fd| startup::inherited_fd(fd, "--ready-fd"))
        .transpose()?;

    let configure = cli.configure.then_some(Configure {
        addr: network.guest(),
        prefix: network.prefix,
        gateway: network.gateway(),
        mtu: mtu as u32,
        mac,
    });
    let tap = netns::open_tap_with(
        &target,
        cli.userns_path.as_deref(),
        tapname,
        configure.as_ref(),
        !cli.no_offload,
    )?;
    let vnet = caploop::net::tap::has_vnet_hdr(tap.as_fd()).unwrap_or(false);
    startup::set_nonblocking(&tap).map_err(|e| ServeError::Link {
        what: "making the tap non-blocking".into(),
        source: e,
    })?;
    log::info!(
        "tap {tapname} opened in {target}{}",
        if vnet { ", with offloads" } else { "" }
    );

    let api = match cli.api_socket()? {
        Some(path) => {
            startup::clear_socket_path(path, "--api-socket")?;
            let l = startup::listen_private(path).map_err(|e| ServeError::Link {
                what: format!("binding the API socket {}", path.display()),
                source: e,
            })?;
            Some((l, network.guest()))
        }
        None => None,
    };
    let session = Session {
        name: "slirp4netns".into(),
        config,
        rules: Vec::new(),
        privileges: Privileges::DropCapabilities {
            bind_service: api.is_some(),
        },
        vm: false,
    };
    let raw = tap.as_raw_fd();
    let medium = if vnet { Medium::TapVnet } else { Medium::Tap };
    let link = Link::polled(
        tap,
        LinkKind::Tap,
        Box::new(RecordRx::new(raw, medium, "the tap")),
        Box::new(RecordTx::new(
            raw,
            medium,
            mtu + caploop::frame::ETH_HLEN,
            "the tap",
        )),
    );
    let extras = Extras {
        exit_fd,
        ready_fd,
        api,
    };
    Ok((session, link, extras))
}
