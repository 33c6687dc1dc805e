//! TCP beside libslirp: the guest's connections terminated by smoltcp's
//! TCP, with windows scaled past libslirp's 64 KiB, each relayed to a host
//! socket of its own (ARCHITECTURE.md, "TCP beside libslirp", says why
//! this design and what a spike measured).
//!
//! A [`Stack`](crate::slirp::Stack) made with [`TcpMode::Own`] in open
//! mode hands this path every TCP segment of a flow it serves, and every
//! SYN the guest sends to the host's address (translated to the host's
//! loopback, as libslirp does) or beyond the virtual network; everything
//! else (ARP, DHCP, DNS, UDP, ICMP, TCP to the DNS address) stays
//! libslirp's, and in restricted mode all of TCP does.
//!
//! Each flow has its own smoltcp interface holding one socket, so a
//! segment finds its flow by one hash lookup and a round touches only the
//! flows something happened to (a segment, a host event, a timer), never
//! all of them. The guest's SYN is answered only once the host's
//! `connect` succeeded; a refusal, a failure, or a full flow table is a
//! RST. Bounds a guest cannot push through: [`MAX_FLOWS`] flows, each
//! holding at most [`BUFFER`] bytes each way (allocated zeroed and lazily
//! backed by the kernel), and no call that blocks on a peer (the host
//! socket is non-blocking and the reactor's). smoltcp never reads TCP's
//! urgent pointer, so urgent data is ordinary data here.

mod host;
mod wire;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use crate::frame::ethernet::{Ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::frame::ipv4::{Ipv4, PROTO_TCP};
use crate::frame::ipv6::Ipv6;
use crate::frame::tcp::{Tcp, ACK, RST, SYN};
use crate::reactor::{Handle, Interest, Reactor, TimerHandle};
use crate::rights::Rights;
use host::Started;
pub use wire::Frames;
use wire::{Macs, Wire};

/// Who serves the guest's TCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcpMode {
    /// libslirp, as every libslirp user has it (at most 64 KiB in flight
    /// per connection).
    #[default]
    Slirp,
    /// This path, in open mode: smoltcp's TCP with scaled windows relayed
    /// to host sockets. In restricted mode TCP stays libslirp's.
    Own,
}

impl std::str::FromStr for TcpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TcpMode, String> {
        match s {
            "slirp" => Ok(TcpMode::Slirp),
            "own" => Ok(TcpMode::Own),
            _ => Err(format!("TCP mode {s:?} is neither \"slirp\" nor \"own\"")),
        }
    }
}

/// Flows served at once; a SYN beyond them is answered with a RST.
pub const MAX_FLOWS: usize = 1024;
/// Bytes one flow holds each way at most (its smoltcp buffers). The
/// window offered to the guest scales to it.
pub const BUFFER: usize = 1 << 21;

/// Segments one flow may send per round, at most.
const EGRESS_PASSES: usize = 256;

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

    fn bind_for(&self, to: SocketAddr) -> Option<IpAddr> {
        match to {
            SocketAddr::V4(_) => self.outbound.map(IpAddr::from),
            SocketAddr::V6(_) => self.outbound6.map(IpAddr::from),
        }
    }
}

/// A flow as the guest's segments name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    guest: SocketAddr,
    remote: SocketAddr,
}

/// One TCP segment from the guest, as the path needs it.
struct Segment<'a> {
    key: Key,
    /// The IP packet (header to its length).
    packet: &'a [u8],
    flags: u8,
    macs: Macs,
}

/// Reads what the path needs from a guest frame: one TCP segment over
/// IPv4 (unfragmented) or IPv6 (no extension headers); `None` otherwise.
fn segment(frame: &[u8]) -> Option<Segment<'_>> {
    let eth = Ethernet::new_checked(frame).ok()?;
    let macs = Macs {
        guest: eth.src(),
        gateway: eth.dst(),
    };
    let (src, dst, packet, payload): (IpAddr, IpAddr, &[u8], &[u8]) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4::new_checked(eth.into_payload()).ok()?;
            if ip.protocol() != PROTO_TCP || ip.is_fragment() {
                return None;
            }
            let packet = &eth.into_payload()[..ip.total_len()];
            (ip.src().into(), ip.dst().into(), packet, ip.into_payload())
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6::new_checked(eth.into_payload()).ok()?;
            if ip.next_header() != PROTO_TCP {
                return None;
            }
            let (s, d) = ip.addrs().split_at(16);
            let s: [u8; 16] = s.try_into().ok()?;
            let d: [u8; 16] = d.try_into().ok()?;
            let packet = &eth.into_payload()[..crate::frame::ipv6::IP6 + ip.payload_len()];
            (s.into(), d.into(), packet, ip.into_payload())
        }
        _ => return None,
    };
    let tcp = Tcp::new_checked(payload).ok()?;
    Some(Segment {
        key: Key {
            guest: SocketAddr::new(src, tcp.src_port()),
            remote: SocketAddr::new(dst, tcp.dst_port()),
        },
        packet,
        flags: tcp.flags(),
        macs,
    })
}

/// Where a flow stands.
enum Phase {
    /// The host `connect` is in progress; the guest's SYN waits for it.
    Connecting { syn: Vec<u8> },
    /// Connected: smoltcp's socket and the host's relay bytes.
    Relaying,
    /// Over: removed after this round's poll (a RST may still go out).
    Done,
}

/// Readiness the reactor reported for a flow's host socket since the
/// flow was last served.
#[derive(Debug, Clone, Copy, Default)]
struct Ready {
    readable: bool,
    writable: bool,
    hangup: bool,
}

struct Flow {
    key: Key,
    phase: Phase,
    iface: Interface,
    sockets: SocketSet<'static>,
    socket: Option<SocketHandle>,
    host: Rc<TcpStream>,
    reg: Option<Handle>,
    interest: Interest,
    ready: Ready,
    /// Packets from the guest for smoltcp's next poll.
    rx: VecDeque<Vec<u8>>,
    macs: Macs,
    /// The host sent its end of file (smoltcp's socket was closed).
    host_eof: bool,
    /// The guest's FIN was passed on (`shutdown(SHUT_WR)`).
    shut_wr: bool,
    /// When smoltcp next wants a poll, as queued in `Path::timers`.
    due: Option<Instant>,
    queued: bool,
}

/// What the path has done, for the stack's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Guest frames the path took.
    pub frames_in: u64,
    /// Frames it sent the guest.
    pub frames_out: u64,
    /// Connections the guest opened through it.
    pub flows_opened: u64,
    /// Connections refused (host refusal or failure, or the flow table
    /// full), answered with a RST.
    pub flows_refused: u64,
    /// Flows open now.
    pub flows: u64,
}

/// The path: its flows, and what the reactor has told it since the last
/// round.
pub(crate) struct Path {
    rules: Rules,
    epoch: Instant,
    flows: HashMap<u64, Flow>,
    by_key: HashMap<Key, u64>,
    next_id: u64,
    /// Flows to serve this round.
    work: Vec<u64>,
    /// smoltcp's wake-ups: (when, flow).
    timers: BTreeSet<(Instant, u64)>,
    /// Readiness from the reactor's callbacks, taken each round.
    events: Rc<RefCell<Vec<(u64, Ready)>>>,
    timer: Option<TimerHandle>,
    /// Frames for the guest, handed to the stack's sink after each round.
    pub out: Frames,
    pub counters: TcpCounters,
    /// [`MAX_FLOWS`], or fewer for a test.
    max_flows: usize,
    /// Host forwards served by the path, by id (ids shared with flows).
    forwards: HashMap<u64, Forward>,
    /// The guest's and the gateway's Ethernet addresses, from the last
    /// unicast frame the guest sent (for connections the host opens).
    macs: Option<Macs>,
    /// The next port on the host address a forwarded connection comes
    /// from, as the guest sees it.
    next_port: u16,
    /// Forwarded connections waiting for the guest's Ethernet address
    /// (asked by ARP), with their deadline.
    waiting: Vec<(TcpStream, SocketAddr, Instant)>,
}

/// How long a forwarded connection waits for the guest's Ethernet address.
const ARP_WAIT: Duration = Duration::from_secs(3);

/// A host forward the path serves: its listener and where it leads.
struct Forward {
    listener: Rc<std::net::TcpListener>,
    reg: Handle,
    guest: SocketAddr,
    /// The listener was reported readable: connections wait.
    pending: bool,
    /// Disabled after a failed `accept` until then.
    resting: Option<Instant>,
}

/// Ports forwarded connections come from, as the guest sees them.
const FORWARD_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Connections one forward accepts per round, at most.
const ACCEPTS_PER_ROUND: usize = 64;

impl Path {
    pub fn new(rules: Rules) -> Path {
        Path {
            rules,
            epoch: Instant::now(),
            flows: HashMap::new(),
            by_key: HashMap::new(),
            next_id: 1,
            work: Vec::new(),
            timers: BTreeSet::new(),
            events: Rc::new(RefCell::new(Vec::new())),
            timer: None,
            out: Frames::default(),
            counters: TcpCounters::default(),
            max_flows: MAX_FLOWS,
            forwards: HashMap::new(),
            macs: None,
            next_port: *FORWARD_PORTS.start(),
            waiting: Vec::new(),
        }
    }

    /// Serves TCP host forward `host` -> `guest` (the stack's rule) from
    /// now on: a non-blocking listener on `host` (`SO_REUSEADDR`, as
    /// libslirp's), registered in `r`. Each connection it accepts reaches
    /// the guest from the host address (10.0.2.2 or its IPv6 one), with a
    /// scaled window.
    pub fn add_forward<D: 'static>(
        &mut self,
        r: &mut Reactor<D>,
        host: SocketAddr,
        guest: SocketAddr,
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
        let events = Rc::clone(&self.events);
        let reg = r
            .add(
                Rc::clone(&listener),
                Interest::READ,
                Rights::EPHEMERAL | Rights::LISTENER,
                move |_, _, _| {
                    events.borrow_mut().push((
                        id,
                        Ready {
                            readable: true,
                            ..Ready::default()
                        },
                    ))
                },
            )
            .map_err(std::io::Error::other)?;
        self.forwards.insert(
            id,
            Forward {
                listener,
                reg,
                guest,
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
    fn accept<D: 'static>(&mut self, r: &mut Reactor<D>, fid: u64) {
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
                    log::warn!("tcp: forward to {}: accept: {e}; resting 1 s", f.guest);
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
            log::debug!("tcp: forward from {peer} to {guest}");
            self.connect_guest(r, stream, guest);
        }
    }

    /// Opens a flow from the host address to `guest` for a connection a
    /// forward accepted; asks the guest's Ethernet address first (ARP) if
    /// no frame of the guest's has told it yet.
    fn connect_guest<D: 'static>(
        &mut self,
        r: &mut Reactor<D>,
        stream: TcpStream,
        guest: SocketAddr,
    ) {
        let Some(macs) = self.macs else {
            if let IpAddr::V4(ip) = guest.ip() {
                let h = self.rules.host.octets();
                let gateway = [0x52, 0x55, h[0], h[1], h[2], h[3]];
                self.out
                    .list
                    .push(crate::frame::ethernet::arp_request(gateway, h, ip.octets()));
            }
            self.waiting
                .push((stream, guest, Instant::now() + ARP_WAIT));
            return;
        };
        if self.flows.len() >= self.max_flows {
            self.counters.flows_refused += 1;
            return;
        }
        let from = match guest.ip() {
            IpAddr::V4(_) => IpAddr::V4(self.rules.host),
            IpAddr::V6(_) => IpAddr::V6(self.rules.host6),
        };
        let Some(key) = self.free_key(guest, from) else {
            self.counters.flows_refused += 1;
            return;
        };
        let mut flow = Flow::new(key, stream, macs, self.rules.mtu, self.now());
        let mut s = new_socket();
        let ok = s
            .connect(
                flow.iface.context(),
                (ip_address(guest.ip()), guest.port()),
                (ip_address(from), key.remote.port()),
            )
            .is_ok();
        if !ok {
            self.counters.flows_refused += 1;
            return;
        }
        flow.socket = Some(flow.sockets.add(s));
        flow.phase = Phase::Relaying;
        let id = self.next_id;
        self.next_id += 1;
        self.counters.flows_opened += 1;
        self.by_key.insert(key, id);
        self.flows.insert(id, flow);
        self.serve(r, id);
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

    /// Removes every registration and the timer from the reactor (the
    /// stack is closing); the flows' host sockets close with them.
    pub fn teardown<D: 'static>(&mut self, r: &mut Reactor<D>) {
        for (_, flow) in self.flows.drain() {
            if let Some(h) = flow.reg {
                let _ = r.delete(h);
            }
        }
        for (_, f) in self.forwards.drain() {
            let _ = r.delete(f.reg);
        }
        self.by_key.clear();
        self.timers.clear();
        self.work.clear();
        if let Some(h) = self.timer.take() {
            let _ = r.cancel_timer(h);
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// Takes `frame` if it is a TCP segment this path serves: one of a
    /// flow it has, or a SYN it will serve. Syscalls only (the host
    /// `connect`); the reactor work waits for [`run`](Path::run).
    pub fn take(&mut self, frame: &[u8]) -> bool {
        if let Ok(eth) = Ethernet::new_checked(frame) {
            // Unicast to the gateway: its address and the guest's.
            if eth.dst()[0] & 1 == 0 {
                self.macs = Some(Macs {
                    guest: eth.src(),
                    gateway: eth.dst(),
                });
            }
        }
        let Some(seg) = segment(frame) else {
            return false;
        };
        if let Some(&id) = self.by_key.get(&seg.key) {
            let flow = self.flows.get_mut(&id).expect("indexed flows exist");
            self.counters.frames_in += 1;
            match &mut flow.phase {
                // A retransmitted SYN: the first one still waits.
                Phase::Connecting { .. } => {}
                Phase::Relaying => {
                    flow.rx.push_back(seg.packet.to_vec());
                    flow.macs = seg.macs;
                    queue(&mut self.work, flow, id);
                }
                Phase::Done => {}
            }
            return true;
        }
        if !self.rules.open || seg.flags & (SYN | ACK | RST) != SYN {
            return false;
        }
        let Some(target) = self.rules.target(seg.key.remote) else {
            return false;
        };
        self.counters.frames_in += 1;
        let id = self.next_id;
        self.next_id += 1;
        let refuse = |why: &dyn std::fmt::Display| {
            log::debug!(
                "tcp: {} -> {} ({target}) refused: {why}",
                seg.key.guest,
                seg.key.remote
            );
        };
        let started = if self.flows.len() >= self.max_flows {
            refuse(&format_args!("{} flows are open", self.max_flows));
            None
        } else {
            match host::connect_to(target, self.rules.bind_for(target)) {
                Ok(s) => Some(s),
                Err(e) => {
                    refuse(&e);
                    None
                }
            }
        };
        let mut flow = match started {
            Some(Started::Done(s)) | Some(Started::Pending(s)) => {
                Flow::new(seg.key, s, seg.macs, self.rules.mtu, self.now())
            }
            None => {
                // No socket of its own: smoltcp answers the SYN with a RST.
                self.counters.flows_refused += 1;
                let now = self.now();
                let mut iface = iface_for(seg.key.remote, self.rules.mtu, now);
                let mut sockets = SocketSet::new(Vec::new());
                let mut rx = VecDeque::from([seg.packet.to_vec()]);
                let mut wire = Wire {
                    rx: &mut rx,
                    out: &mut self.out,
                    macs: seg.macs,
                    mtu: self.rules.mtu,
                };
                iface.poll(now, &mut wire, &mut sockets);
                return true;
            }
        };
        flow.phase = Phase::Connecting {
            syn: seg.packet.to_vec(),
        };
        self.counters.flows_opened += 1;
        self.by_key.insert(seg.key, id);
        self.flows.insert(id, flow);
        self.work.push(id);
        if let Some(f) = self.flows.get_mut(&id) {
            f.queued = true;
        }
        true
    }

    /// One round: registers new host sockets, serves every flow something
    /// happened to, arms the wake-up for the next smoltcp timer. Frames
    /// for the guest are left in [`out`](Path::out).
    pub fn run<D: 'static>(&mut self, r: &mut Reactor<D>) {
        if self.timer.is_none() {
            self.timer = Some(r.add_timer_disarmed(|_, _, _| {}));
        }
        let events = std::mem::take(&mut *self.events.borrow_mut());
        let mut accepts = Vec::new();
        for (id, ready) in events {
            if let Some(f) = self.forwards.get_mut(&id) {
                f.pending = true;
                accepts.push(id);
            } else if let Some(flow) = self.flows.get_mut(&id) {
                flow.ready.readable |= ready.readable;
                flow.ready.writable |= ready.writable;
                flow.ready.hangup |= ready.hangup;
                queue(&mut self.work, flow, id);
            }
        }
        let now = Instant::now();
        while let Some(&(when, id)) = self.timers.first() {
            if when > now {
                break;
            }
            self.timers.pop_first();
            if let Some(flow) = self.flows.get_mut(&id) {
                if flow.due == Some(when) {
                    flow.due = None;
                    queue(&mut self.work, flow, id);
                }
            }
        }
        // Connections that waited for the guest's Ethernet address.
        if !self.waiting.is_empty() {
            let now = Instant::now();
            let waiting = std::mem::take(&mut self.waiting);
            for (stream, guest, deadline) in waiting {
                if self.macs.is_some() {
                    self.connect_guest(r, stream, guest);
                } else if deadline > now {
                    self.waiting.push((stream, guest, deadline));
                } else {
                    log::warn!("tcp: forward to {guest}: the guest never answered ARP");
                    self.counters.flows_refused += 1;
                }
            }
        }
        for f in self.forwards.values_mut() {
            if f.resting.is_some_and(|t| t <= Instant::now()) && r.enable(f.reg).is_ok() {
                f.resting = None;
            }
        }
        // Listeners still holding connections from the last round too.
        accepts.extend(
            self.forwards
                .iter()
                .filter(|(_, f)| f.pending)
                .map(|(&id, _)| id),
        );
        accepts.sort_unstable();
        accepts.dedup();
        for fid in accepts {
            self.accept(r, fid);
        }
        let work = std::mem::take(&mut self.work);
        for id in work {
            self.serve(r, id);
        }
        self.counters.flows = self.flows.len() as u64;
        self.counters.frames_out += self.out.len() as u64;
        if let Some(h) = self.timer {
            // While connections wait for ARP, look again every 100 ms.
            let arp =
                (!self.waiting.is_empty()).then(|| Instant::now() + Duration::from_millis(100));
            let next = self.timers.first().map(|&(when, _)| when);
            let resting = self.forwards.values().filter_map(|f| f.resting).min();
            // Frames made this round: the round should end without waiting,
            // so a loop that hands them to its guest after the round (a VMM
            // driving `run_once`) does so at once, not after its timeout.
            let sent = (!self.out.is_empty()).then(Instant::now);
            let _ = match next.into_iter().chain(arp).chain(resting).chain(sent).min() {
                Some(when) => r.rearm_timer_at(h, when),
                None => r.disarm_timer(h),
            };
        }
    }

    fn serve<D: 'static>(&mut self, r: &mut Reactor<D>, id: u64) {
        let smol_now = self.now();
        let mtu = self.rules.mtu;
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.queued = false;
        if flow.reg.is_none() && !matches!(flow.phase, Phase::Done) {
            let events = Rc::clone(&self.events);
            let reg = r.add(
                Rc::clone(&flow.host),
                Interest::WRITE,
                Rights::EPHEMERAL | Rights::SOCKET,
                move |_, _, ev| {
                    events.borrow_mut().push((
                        id,
                        Ready {
                            readable: ev.readable,
                            writable: ev.writable,
                            hangup: ev.hangup || ev.error,
                        },
                    ))
                },
            );
            match reg {
                Ok(h) => {
                    flow.reg = Some(h);
                    flow.interest = Interest::WRITE;
                }
                Err(e) => {
                    log::warn!("tcp: {} -> {}: {e}", flow.key.guest, flow.key.remote);
                    flow.phase = Phase::Done;
                }
            }
        }
        if let Phase::Connecting { syn } = &mut flow.phase {
            if flow.ready.writable || flow.ready.hangup {
                let syn = std::mem::take(syn);
                match flow.host.take_error() {
                    Ok(None) => {
                        let mut s = new_socket();
                        let local = IpListenEndpoint {
                            addr: Some(ip_address(flow.key.remote.ip())),
                            port: flow.key.remote.port(),
                        };
                        if s.listen(local).is_ok() {
                            flow.socket = Some(flow.sockets.add(s));
                        }
                        flow.phase = Phase::Relaying;
                    }
                    Ok(Some(e)) | Err(e) => {
                        log::debug!(
                            "tcp: {} -> {} refused: {e}",
                            flow.key.guest,
                            flow.key.remote
                        );
                        self.counters.flows_refused += 1;
                        flow.phase = Phase::Done;
                    }
                }
                // Served by the new socket, or answered with a RST.
                flow.rx.push_front(syn);
                flow.ready.writable = false;
            }
        }
        flow.poll(smol_now, &mut self.out, mtu);
        if matches!(flow.phase, Phase::Relaying) {
            if flow.relay() {
                flow.poll(smol_now, &mut self.out, mtu);
            }
            if flow.finished() {
                flow.phase = Phase::Done;
            }
        }
        if matches!(flow.phase, Phase::Done) {
            if let Some(h) = flow.reg.take() {
                let _ = r.delete(h);
            }
            let key = flow.key;
            self.flows.remove(&id);
            self.by_key.remove(&key);
            return;
        }
        // No interest means disabled: epoll reports a hang-up (both
        // directions shut) whatever the interest, and would spin the loop.
        let want = flow.interest_wanted();
        if want != flow.interest {
            if let Some(h) = flow.reg {
                let done = if want.is_empty() {
                    r.disable(h)
                } else if flow.interest.is_empty() {
                    r.set_interest(h, want).and_then(|()| r.enable(h))
                } else {
                    r.set_interest(h, want)
                };
                if done.is_ok() {
                    flow.interest = want;
                }
            }
        }
        // smoltcp's next wake-up for this flow.
        let next = flow
            .iface
            .poll_delay(smol_now, &flow.sockets)
            .map(|d| Instant::now() + Duration::from_micros(d.total_micros()));
        if log::log_enabled!(log::Level::Trace) {
            if let Some(h) = flow.socket {
                let s = flow.sockets.get::<tcp::Socket>(h);
                log::trace!(
                    "tcp: {} -> {}: {}, {} to send, {} received, host eof {}, {:?}, interest {:?}, next poll in {:?}",
                    flow.key.guest,
                    flow.key.remote,
                    s.state(),
                    s.send_queue(),
                    s.recv_queue(),
                    flow.host_eof,
                    flow.ready,
                    flow.interest,
                    next.map(|n| n.saturating_duration_since(Instant::now()))
                );
            }
        }
        if next != flow.due {
            if let Some(old) = flow.due.take() {
                self.timers.remove(&(old, id));
            }
            if let Some(when) = next {
                self.timers.insert((when, id));
                flow.due = Some(when);
            }
        }
    }
}

/// A smoltcp socket with the path's buffers, Nagle off (the bytes come
/// from a host socket in runs already).
fn new_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUFFER]),
        tcp::SocketBuffer::new(vec![0; BUFFER]),
    );
    s.set_nagle_enabled(false);
    s
}

/// Queues `flow` (id `id`) for this round's service, once.
fn queue(work: &mut Vec<u64>, flow: &mut Flow, id: u64) {
    if !flow.queued {
        flow.queued = true;
        work.push(id);
    }
}

fn ip_address(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(a) => IpAddress::Ipv4(a),
        IpAddr::V6(a) => IpAddress::Ipv6(a),
    }
}

/// A smoltcp interface that owns `remote`'s address: the guest's packets
/// to it are its own.
/// (smoltcp keeps the device's capabilities, the MTU among them, from here.)
fn iface_for(remote: SocketAddr, mtu: usize, now: smoltcp::time::Instant) -> Interface {
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ip),
        &mut Wire {
            rx: &mut VecDeque::new(),
            out: &mut Frames::default(),
            macs: Macs::default(),
            mtu,
        },
        now,
    );
    let prefix = if remote.is_ipv4() { 32 } else { 128 };
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(ip_address(remote.ip()), prefix));
    });
    iface
}

impl Flow {
    fn new(key: Key, host: TcpStream, macs: Macs, mtu: usize, now: smoltcp::time::Instant) -> Flow {
        Flow {
            key,
            phase: Phase::Done,
            iface: iface_for(key.remote, mtu, now),
            sockets: SocketSet::new(Vec::new()),
            socket: None,
            host: Rc::new(host),
            reg: None,
            interest: Interest::empty(),
            ready: Ready::default(),
            rx: VecDeque::new(),
            macs,
            host_eof: false,
            shut_wr: false,
            due: None,
            queued: false,
        }
    }

    fn poll(&mut self, now: smoltcp::time::Instant, out: &mut Frames, mtu: usize) {
        let mut wire = Wire {
            rx: &mut self.rx,
            out,
            macs: self.macs,
            mtu,
        };
        self.iface.poll(now, &mut wire, &mut self.sockets);
        // smoltcp sends one segment a socket per egress pass: let it send
        // what its window allows, up to a bound (the rest next round, its
        // poll delay then being zero).
        for _ in 0..EGRESS_PASSES {
            if self.iface.poll_egress(now, &mut wire, &mut self.sockets) == PollResult::None {
                break;
            }
        }
    }

    /// Moves bytes both ways between smoltcp's socket and the host's, as
    /// far as each takes them. Returns whether smoltcp has anything new
    /// to send (data, a window update, a FIN).
    fn relay(&mut self) -> bool {
        let Some(h) = self.socket else {
            return false;
        };
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        let mut changed = false;
        let mut host = &*self.host;
        // Guest -> host: what the host socket takes leaves smoltcp's
        // buffer (and opens the guest's window).
        while s.can_recv() {
            let r = s.recv(|buf| match host.write(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(n)) if n > 0 => changed = true,
                Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => {
                    self.ready.writable = false;
                    break;
                }
                Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Ok(Err(_)) => {
                    // The host side is gone: reset the guest's side.
                    s.abort();
                    return true;
                }
                _ => break,
            }
        }
        // The guest's FIN, once its data is through.
        let guest_fin = matches!(
            s.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        );
        if !self.shut_wr && guest_fin && s.recv_queue() == 0 {
            let _ = host.shutdown(Shutdown::Write);
            self.shut_wr = true;
        }
        // Host -> guest: read straight into smoltcp's buffer.
        while !self.host_eof && self.ready.readable && s.can_send() {
            let r = s.send(|buf| match host.read(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(0)) => {
                    self.host_eof = true;
                    s.close();
                    changed = true;
                }
                Ok(Ok(_)) => changed = true,
                Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => {
                    self.ready.readable = false;
                }
                Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Ok(Err(_)) => {
                    s.abort();
                    return true;
                }
                Err(_) => break,
            }
        }
        changed
    }

    /// Whether smoltcp's socket is closed for good (both FINs through, a
    /// RST either way, or it never left `Listen` after its SYN).
    fn finished(&mut self) -> bool {
        let Some(h) = self.socket else {
            return true;
        };
        let s = self.sockets.get::<tcp::Socket>(h);
        matches!(s.state(), tcp::State::Closed | tcp::State::Listen) && self.rx.is_empty()
    }

    fn interest_wanted(&self) -> Interest {
        let mut i = Interest::empty();
        match self.phase {
            Phase::Connecting { .. } => i |= Interest::WRITE,
            Phase::Relaying => {
                if let Some(h) = self.socket {
                    let s = self.sockets.get::<tcp::Socket>(h);
                    if !self.host_eof && s.can_send() {
                        i |= Interest::READ;
                    }
                    if s.can_recv() {
                        i |= Interest::WRITE;
                    }
                }
            }
            Phase::Done => {}
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            ipv4: true,
            network: Ipv4Addr::new(10, 0, 2, 0),
            prefix_len: 24,
            host: Ipv4Addr::new(10, 0, 2, 2),
            ipv6: true,
            prefix6: "fd00::".parse().unwrap(),
            prefix6_len: 64,
            host6: "fd00::2".parse().unwrap(),
            host_loopback: true,
            outbound: None,
            outbound6: None,
            mtu: 1500,
            open: true,
        }
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_host_address_is_the_loopback_and_the_rest_of_the_network_is_libslirps() {
        let r = rules();
        assert_eq!(r.target(at("10.0.2.2:80")), Some(at("127.0.0.1:80")));
        assert_eq!(r.target(at("[fd00::2]:80")), Some(at("[::1]:80")));
        assert_eq!(r.target(at("10.0.2.3:53")), None, "DNS stays libslirp's");
        assert_eq!(r.target(at("10.0.2.99:80")), None);
        assert_eq!(r.target(at("[fd00::3]:53")), None);
        assert_eq!(r.target(at("192.0.2.1:443")), Some(at("192.0.2.1:443")));
        assert_eq!(
            r.target(at("[2001:db8::1]:443")),
            Some(at("[2001:db8::1]:443"))
        );
        for never in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
        ] {
            assert_eq!(r.target(at(never)), None, "{never}");
        }
        assert_eq!(r.target(at("[::1]:80")), None);
        let no_loopback = Rules {
            host_loopback: false,
            ..rules()
        };
        assert_eq!(no_loopback.target(at("10.0.2.2:80")), None);
        let v4_only = Rules {
            ipv6: false,
            ..rules()
        };
        assert_eq!(v4_only.target(at("[2001:db8::1]:443")), None);
    }

    #[test]
    fn tcp_modes_parse_and_others_are_named() {
        assert_eq!("own".parse::<TcpMode>(), Ok(TcpMode::Own));
        assert_eq!("slirp".parse::<TcpMode>(), Ok(TcpMode::Slirp));
        let e = "fast".parse::<TcpMode>().unwrap_err();
        assert!(e.contains("\"fast\""), "{e}");
    }

    /// A TCP/IPv4 segment from 10.0.2.15:`sport` to `dst`:`dport`
    /// behind Ethernet, checksums complete.
    fn seg4(dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        let mut eth = Ethernet::new_checked(&mut f[..]).unwrap();
        eth.set_dst([0x52, 0x55, 10, 0, 2, 2]);
        eth.set_src([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        eth.set_ethertype(ETHERTYPE_IPV4);
        f[14] = 0x45;
        f[14 + 8] = 64;
        f[14 + 9] = PROTO_TCP;
        f[26..30].copy_from_slice(&[10, 0, 2, 15]);
        f[30..34].copy_from_slice(&dst);
        let mut ip = Ipv4::new_header(&mut f[14..]).unwrap();
        ip.set_total_len(40);
        ip.fill_checksum();
        let pseudo = ip.pseudo_sum(20);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        f[48..50].copy_from_slice(&64240u16.to_be_bytes());
        Tcp::new_checked(&mut f[34..])
            .unwrap()
            .fill_checksum(pseudo);
        f
    }

    fn syn(dst: [u8; 4], flags: u8) -> Vec<u8> {
        seg4(dst, 40000, 80, flags)
    }

    #[test]
    fn segments_are_read_with_their_flow_and_addresses() {
        let f = syn([10, 0, 2, 2], SYN);
        let s = segment(&f).unwrap();
        assert_eq!(s.key.guest, at("10.0.2.15:40000"));
        assert_eq!(s.key.remote, at("10.0.2.2:80"));
        assert_eq!(s.flags, SYN);
        assert_eq!(s.packet.len(), 40);
        assert_eq!(s.macs.guest, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(s.macs.gateway, [0x52, 0x55, 10, 0, 2, 2]);
        assert!(segment(&f[..50]).is_none(), "cut short");
        let mut udp = f.clone();
        udp[14 + 9] = 17;
        assert!(segment(&udp).is_none());
    }

    #[test]
    fn only_a_syn_to_where_the_path_goes_opens_a_flow_and_a_full_table_resets() {
        let mut p = Path::new(rules());
        // Not SYN alone, or not the path's: libslirp's.
        assert!(!p.take(&syn([192, 0, 2, 1], SYN | ACK)));
        assert!(!p.take(&syn([192, 0, 2, 1], ACK)));
        assert!(!p.take(&syn([10, 0, 2, 3], SYN)));
        assert_eq!(p.counters, TcpCounters::default());
        // Restricted: the guest opens nothing through the path.
        let mut restricted = Path::new(Rules {
            open: false,
            ..rules()
        });
        assert!(!restricted.take(&syn([10, 0, 2, 2], SYN)));
        // SYNs to the host address, which is this host's loopback: two
        // flows fit the table, the third is refused with a RST.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        p.max_flows = 2;
        for sport in [1001, 1002, 1003] {
            assert!(p.take(&seg4([10, 0, 2, 2], sport, port, SYN)));
        }
        assert_eq!(p.counters.flows_opened, 2);
        assert_eq!(p.counters.flows_refused, 1);
        assert_eq!(p.flows.len(), 2);
        assert_eq!(p.out.len(), 1, "one RST");
        let rst = segment(&p.out.list[0]).unwrap();
        // From the address the guest asked for, to the guest.
        assert_eq!(rst.key.guest, at(&format!("10.0.2.2:{port}")));
        assert_eq!(rst.key.remote, at("10.0.2.15:1003"));
        assert_eq!(rst.flags & RST, RST);
        // A retransmitted SYN of an open flow is taken, and opens nothing.
        assert!(p.take(&seg4([10, 0, 2, 2], 1001, port, SYN)));
        assert_eq!(p.counters.flows_opened, 2);
    }
}
