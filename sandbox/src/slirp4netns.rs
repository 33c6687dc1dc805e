//! The slirp4netns front end: a tap device in a rootless container's
//! network namespace, served by libslirp on the reactor, with slirp4netns
//! 1.2's command line, ready and exit descriptors and API socket, so
//! rootlesskit and Podman can run caploop-sandbox in its place.
//!
//! Order of start-up: close every descriptor but the ready and exit fds;
//! open the tap inside the target namespace (a child process joins the
//! namespaces and sends the descriptor back; this process never leaves its
//! own) and configure it with `-c`; set up the stack, the API socket and
//! the DNS forwarder; enter the sandbox (open mode, bind allowed only with
//! an API socket); then write "1" to the ready fd.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::rc::Rc;

use caploop::reactor::{Interest, Reactor};
use caploop::sandbox::{Plan, Policy};
use caploop::slirp::{Config, Stack};
use caploop::Rights;

use crate::api::{self, Forwards};
use crate::cli::{Cli, UsageError};
use crate::netns::{self, Configure, Target};
use crate::serve::{Outcome, ServeError};
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
                        "--outbound-addr: \"{s}\" is neither an IPv4 address nor an interface with one"
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
                    "--outbound-addr6: \"{s}\" is neither an IPv6 address nor an interface with one"
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

fn check_fd(fd: RawFd, flag: &str) -> Result<OwnedFd, ServeError> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(ServeError::Protocol(format!(
            "{flag} {fd}: not an open descriptor"
        )));
    }
    // SAFETY: the descriptor is open and was handed to this process on its
    // command line for this purpose; nothing else here owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Listens on the API socket path, replacing a stale socket (one a killed
/// instance left behind) but nothing else.
fn api_listener(path: &Path) -> Result<UnixListener, ServeError> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(ServeError::Protocol(format!(
                "--api-socket {}: exists and is not a socket",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|e| ServeError::Link {
        what: format!("binding the API socket {}", path.display()),
        source: e,
    })
}

/// Runs the slirp4netns front end until the exit fd fires or a signal.
pub fn run(cli: &Cli, target: &str, tapname: &str, mtu: usize) -> Result<Outcome, ServeError> {
    let (config, network) = config(cli, mtu).map_err(|e| ServeError::Protocol(e.0))?;
    let target = Target::parse(target, cli.netns_type.as_deref())
        .map_err(|e| ServeError::Protocol(e.to_string()))?;
    let mac = match cli.macaddress.as_deref() {
        Some(m) => Some(netns::parse_mac(m).map_err(|e| ServeError::Protocol(e.to_string()))?),
        None => None,
    };

    let keep: Vec<RawFd> = cli
        .exit_fd
        .iter()
        .chain(cli.ready_fd.iter())
        .copied()
        .collect();
    startup::close_other_fds(&keep)?;
    let exit_fd = cli
        .exit_fd
        .map(|fd| check_fd(fd, "--exit-fd"))
        .transpose()?;
    let ready_fd = cli
        .ready_fd
        .map(|fd| check_fd(fd, "--ready-fd"))
        .transpose()?;

    let configure = cli.configure.then_some(Configure {
        addr: network.guest(),
        prefix: network.prefix,
        gateway: network.gateway(),
        mtu: mtu as u32,
        mac,
    });
    let tap = netns::open_tap(
        &target,
        cli.userns_path.as_deref(),
        tapname,
        configure.as_ref(),
    )
    .map_err(|e| ServeError::Protocol(e.to_string()))?;
    startup::set_nonblocking(&tap).map_err(|e| ServeError::Link {
        what: "making the tap non-blocking".into(),
        source: e,
    })?;
    log::info!("tap {tapname} opened in {target:?}");

    let mut reactor: Reactor<()> = Reactor::new()?;
    let tap_fd = tap.as_raw_fd();
    let stack = Stack::new(&mut reactor, config, move |frame: &[u8]| {
        // SAFETY: write reads frame.len() bytes; the tap stays open for the
        // stack's life (both live until the end of `run`).
        let n = unsafe { libc::write(tap_fd, frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            log::debug!("tap write: {}", io::Error::last_os_error());
        }
    })?;
    let stack = Rc::new(stack);

    let outcome = Rc::new(RefCell::new(None::<Outcome>));
    let rx_stack = stack.clone();
    let mut frame = vec![0u8; 65536 + 64];
    reactor.add(
        &tap,
        Interest::READ,
        Rights::READ | Rights::WRITE | Rights::EVENT,
        move |r, _, _| {
            for _ in 0..64 {
                // SAFETY: read writes at most frame.len() bytes into frame.
                let n = unsafe { libc::read(tap_fd, frame.as_mut_ptr().cast(), frame.len()) };
                if n <= 0 {
                    break;
                }
                rx_stack.input(&frame[..n as usize]);
            }
            // A frame can make libslirp close a socket; drop its registration
            // now, before another callback this round (the API accepting)
            // gets the same descriptor number and cannot register it.
            rx_stack.sync(r);
        },
    )?;
    if let Some(fd) = &exit_fd {
        let o = outcome.clone();
        reactor.add(fd, Interest::READ, Rights::READ_ONLY, move |r, _, _| {
            log::info!("exit fd event");
            *o.borrow_mut() = Some(Outcome::PeerHungUp);
            r.stop();
        })?;
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let o = outcome.clone();
        reactor.add_signal(sig, move |r, _, _| {
            *o.borrow_mut() = Some(Outcome::Terminated);
            r.stop();
        })?;
    }
    let api_listener = match &cli.api_socket {
        Some(path) => {
            let l = api_listener(path)?;
            let forwards = Rc::new(RefCell::new(Forwards::new(stack.clone(), network.guest())));
            api::register(&mut reactor, l, forwards)?;
            true
        }
        None => false,
    };

    // libslirp reads the host's resolver lazily; make it read now.
    stack.prime_dns(&mut reactor);
    let mut plan = Plan::from_reactor(&reactor);
    plan.add_raw(1, Rights::WRITE_ONLY, "stdout");
    plan.add_raw(2, Rights::WRITE_ONLY, "stderr");
    if let Some(fd) = &ready_fd {
        // Closed right after entry: its number will be reused.
        plan.add(fd, Rights::WRITE_ONLY | Rights::EPHEMERAL, "ready fd");
    }
    let policy = Policy {
        allow_bind: api_listener,
        ..Policy::open()
    };
    let report = plan.apply_and_enter(&policy)?;
    log::info!(
        "sandbox entered ({:?} mode, {} descriptors limited, bind {})",
        report.mode,
        report.limited.len(),
        if api_listener {
            "allowed for the API"
        } else {
            "refused"
        }
    );
    if let Some(fd) = ready_fd {
        // SAFETY: write reads one byte from a static.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"1".as_ptr().cast(), 1) };
        if n != 1 {
            log::warn!("ready fd: {}", io::Error::last_os_error());
        }
        drop(fd);
    }

    reactor.run(&mut ())?;
    let counters = stack.counters();
    log::info!("slirp4netns: {counters:?}");
    let o = *outcome.borrow();
    Ok(o.unwrap_or(Outcome::Terminated))
}
