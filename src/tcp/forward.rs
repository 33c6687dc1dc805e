//! Host forwards the path serves: a listener per rule, each connection it
//! accepts a flow toward the guest.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::flow::{ip_address, new_socket, Flow, Phase};
use super::segment::Key;
use super::{host, watch, Path};
use crate::reactor::{Handle, Interest, Reactor};
use crate::rights::Rights;

/// How long a forwarded connection waits for the guest's Ethernet address.
pub(super) const ARP_WAIT: Duration = Duration::from_secs(3);

/// Where a forward's connections go, and as whom.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    /// The guest's address and port.
    pub(super) addr: SocketAddr,
    /// Connections come from the real client's address when the guest can
    /// answer it (as pasta's do), else from the host address.
    pub(super) real_client: bool,
}

/// A host forward the path serves: its listener and where it leads.
pub(super) struct Forward {
    pub(super) listener: Rc<std::net::TcpListener>,
    pub(super) reg: Handle,
    pub(super) guest: Target,
    /// The listener was reported readable: connections wait.
    pub(super) pending: bool,
    /// Disabled after a failed `accept` until then.
    pub(super) resting: Option<Instant>,
}

/// Ports forwarded connections come from, as the guest sees them.
pub(super) const FORWARD_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Connections one forward accepts per round, at most.
pub(super) const ACCEPTS_PER_ROUND: usize = 64;

impl Path {
    /// Serves TCP host forward `host` -> `guest` (the stack's rule) from
    /// now on: a non-blocking listener on `host` (`SO_REUSEADDR`, as
    /// libslirp's), registered in `r`. Each connection it accepts reaches
    /// the guest from the host address (10.0.2.2 or its IPv6 one), or
    /// with `real_client` from the client's own where the guest can answer
    /// it, with a scaled window.
    pub fn add_forward<D: 'static>(
        &mut self,
        r: &mut Reactor<D>,
        host: SocketAddr,
        guest: SocketAddr,
        real_client: bool,
    ) -> std::io::Result<()> {
        if self
            .forwards
            .values()
            .any(|f| f.listener.local_addr().ok() == Some(host))
        {
            return Err(std::io::Error::from(ErrorKind::AddrInUse));
        }
        let listener = Rc::new(host::listen_on(host)?);
        let id = self.next_id;
        self.next_id += 1;
        let reg = watch(
            r,
            &self.events,
            Rc::clone(&listener),
            Interest::READ,
            Rights::EPHEMERAL | Rights::LISTENER,
            id,
        )
        .map_err(std::io::Error::other)?;
        self.forwards.insert(
            id,
            Forward {
                listener,
                reg,
                guest: Target {
                    addr: guest,
                    real_client,
                },
                pending: false,
                resting: None,
            },
        );
        Ok(())
    }

    /// Stops serving the host forward listening on `host`; connections
    /// already forwarded stay up. Whether there was one.
    pub fn remove_forward<D: 'static>(&mut self, r: &mut Reactor<D>, host: SocketAddr) -> bool {
        let Some(id) = self
            .forwards
            .iter()
            .find(|(_, f)| f.listener.local_addr().ok() == Some(host))
            .map(|(&id, _)| id)
        else {
            return false;
        };
        if let Some(f) = self.forwards.remove(&id) {
            let _ = r.delete(f.reg);
        }
        true
    }

    /// Accepts what forward `fid`'s listener has waiting, each connection
    /// a flow toward the guest (smoltcp's socket connecting to it).
    pub(super) fn accept<D: 'static>(&mut self, r: &mut Reactor<D>, fid: u64) {
        for _ in 0..ACCEPTS_PER_ROUND {
            let Some(f) = self.forwards.get_mut(&fid) else {
                return;
            };
            let (stream, peer) = match f.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    f.pending = false;
                    return;
                }
                Err(e) => {
                    // Out of descriptors, say: the listener stays readable,
                    // so it rests a second rather than spin the loop.
                    log::warn!("tcp: forward to {}: accept: {e}; resting 1 s", f.guest.addr);
                    f.pending = false;
                    if r.disable(f.reg).is_ok() {
                        f.resting = Some(Instant::now() + Duration::from_secs(1));
                    }
                    return;
                }
            };
            let guest = f.guest;
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            log::debug!("tcp: forward from {peer} to {}", guest.addr);
            self.connect_guest(stream, guest);
        }
    }

    /// Opens a flow from the host address (or the real client's, with
    /// `Target::real_client`) to `target` for a connection a forward
    /// accepted; asks the guest's Ethernet address first (ARP, or IPv6
    /// neighbour discovery) if no frame of the guest's has told it yet.
    pub(super) fn connect_guest(&mut self, stream: TcpStream, target: Target) {
        let guest = target.addr;
        // Waiting connections count against the table: a host that
        // connects while the guest stays silent holds at most that many.
        if self.flows.len() + self.waiting.len() >= self.max_flows {
            self.counters.flows_refused += 1;
            return;
        }
        let Some(macs) = self.macs else {
            // libslirp's gateway address, from the host's IPv4 address.
            let h = self.rules.host.octets();
            let gateway = [0x52, 0x55, h[0], h[1], h[2], h[3]];
            let ask = match guest.ip() {
                IpAddr::V4(ip) => crate::frame::ethernet::arp_request(gateway, h, ip.octets()),
                IpAddr::V6(ip) => crate::frame::ipv6::neighbour_solicitation(
                    gateway,
                    self.rules.host6.octets(),
                    ip.octets(),
                ),
            };
            self.out.push(ask, None);
            self.waiting
                .push((stream, target, Instant::now() + ARP_WAIT));
            return;
        };
        // The real client when asked for and the guest can answer it (same
        // family, not a loopback address, which the guest would take for
        // its own); else the host address on a port of ours.
        let real = stream.peer_addr().ok().filter(|p| {
            target.real_client
                && p.is_ipv4() == guest.is_ipv4()
                && !p.ip().is_loopback()
                && !p.ip().is_unspecified()
        });
        let key = match real {
            Some(remote) if !self.by_key.contains_key(&Key { guest, remote }) => {
                Some(Key { guest, remote })
            }
            _ => {
                let from = match guest.ip() {
                    IpAddr::V4(_) => IpAddr::V4(self.rules.host),
                    IpAddr::V6(_) => IpAddr::V6(self.rules.host6),
                };
                self.free_key(guest, from)
            }
        };
        let Some(key) = key else {
            self.counters.flows_refused += 1;
            return;
        };
        let mut flow = Flow::new(
            key,
            Phase::Relaying,
            stream,
            macs,
            self.rules.mtu,
            self.offload,
            self.now(),
        );
        let mut s = new_socket(self.rules.idle_timeout.min(super::CONNECT_TIMEOUT));
        let ok = s
            .connect(
                flow.iface.context(),
                (ip_address(guest.ip()), guest.port()),
                (ip_address(key.remote.ip()), key.remote.port()),
            )
            .is_ok();
        if !ok {
            self.counters.flows_refused += 1;
            return;
        }
        flow.socket = Some(flow.sockets.add(s));
        let id = self.next_id;
        self.next_id += 1;
        self.counters.flows_opened += 1;
        self.by_key.insert(key, id);
        // Served (its SYN sent) in this round's pass over the work.
        super::flow::queue(&mut self.work, &mut flow, id);
        self.flows.insert(id, flow);
    }

    /// A flow key from `from` on a port no flow to `guest` uses.
    fn free_key(&mut self, guest: SocketAddr, from: IpAddr) -> Option<Key> {
        let span = usize::from(FORWARD_PORTS.end() - FORWARD_PORTS.start()) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *FORWARD_PORTS.end() {
                *FORWARD_PORTS.start()
            } else {
                port + 1
            };
            let key = Key {
                guest,
                remote: SocketAddr::new(from, port),
            };
            if !self.by_key.contains_key(&key) {
                return Some(key);
            }
        }
        None
    }
}
