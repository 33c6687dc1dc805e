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

mod flow;
mod forward;
mod host;
mod rules;
mod segment;
mod wire;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::wire::IpListenEndpoint;

use crate::frame::ethernet::Ethernet;
use crate::frame::tcp::{ACK, RST, SYN};
use crate::reactor::{Interest, Reactor, TimerHandle};
use crate::rights::Rights;
use flow::{iface_for, ip_address, new_socket, queue, Flow, Phase, Ready};
use forward::{Forward, Target, FORWARD_PORTS};
use host::Started;
pub use rules::Rules;
use segment::{segment, Key};
pub use wire::Frames;
use wire::{Incoming, Macs, Wire};

/// Who serves the guest's TCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcpMode {
    /// libslirp, as every libslirp user has it (at most 64 KiB in flight
    /// per connection): the fallback, and the anchor benches compare with.
    Slirp,
    /// This path (the default): smoltcp's TCP with scaled windows, each
    /// connection relayed to a host socket. It serves host forwards in
    /// both modes and the guest's own connections in open mode.
    #[default]
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

/// How long a handshake with the guest may wait for its answer, at most
/// (less if the idle timeout is shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(75);

/// Hands the frames made so far to the link toward the guest (emptying
/// the list), and says whether that link is full: frames wait in its
/// queue. While it is, flows keep what they would send in their smoltcp
/// buffers rather than in the link's queue (one copy less, memory
/// bounded by the flows' buffers).
pub(crate) type Drain<'a> = dyn FnMut(&mut Frames) -> bool + 'a;

/// What the path has done, for the stack's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Guest frames the path took.
    pub frames_in: u64,
    /// Frames it sent the guest.
    pub frames_out: u64,
    /// Of them, TCP super-segments the link's peer cuts (IPv4 over a link
    /// that takes offloads).
    pub gso_frames: u64,
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
    /// Flows with segments to send that a full link held back, served
    /// again once it has room.
    held: Vec<u64>,
    /// Forwarded connections waiting for the guest's Ethernet address
    /// (asked by ARP), with their deadline.
    waiting: Vec<(TcpStream, Target, Instant)>,
    /// The link takes TCP super-segments with partial checksums (IPv4,
    /// IPv6): flows opened from now make them ([`Path::set_offload`]).
    offload: (bool, bool),
}

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
            held: Vec::new(),
            waiting: Vec::new(),
            offload: (false, false),
        }
    }

    /// Whether the link takes TCP super-segments with partial checksums,
    /// for IPv4 and for IPv6 (the embedder's word, asked each round):
    /// flows opened while it does hand their frames on with a virtio-net
    /// header.
    pub fn set_offload(&mut self, families: (bool, bool)) {
        self.offload = families;
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
        self.held.clear();
        if let Some(h) = self.timer.take() {
            let _ = r.cancel_timer(h);
        }
    }

    /// Host sockets and listeners registered in the reactor.
    pub fn registrations(&self) -> usize {
        self.flows.values().filter(|f| f.reg.is_some()).count() + self.forwards.len()
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
            let now = self.now();
            let flow = self.flows.get_mut(&id).expect("indexed flows exist");
            self.counters.frames_in += 1;
            match &mut flow.phase {
                // A retransmitted SYN: the first one still waits.
                Phase::Connecting { .. } => {}
                Phase::Relaying => {
                    flow.macs = seg.macs;
                    if seg.flags & SYN != 0 {
                        flow.learn_mss(seg.mss);
                    }
                    flow.ingest(now, seg.packet, &mut self.out);
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
        let syn = Phase::Connecting {
            syn: seg.packet.to_vec(),
        };
        let mut flow = match started {
            Some(Started::Done(s)) | Some(Started::Pending(s)) => Flow::new(
                seg.key,
                syn,
                s,
                seg.macs,
                self.rules.mtu,
                self.offload,
                self.now(),
            ),
            None => {
                // No socket of its own: smoltcp answers the SYN with a RST.
                self.counters.flows_refused += 1;
                let now = self.now();
                let mut iface = iface_for(seg.key.remote, self.rules.mtu, false, now);
                let mut sockets = SocketSet::new(Vec::new());
                let mut wire = Wire {
                    rx: Incoming::One(Some(seg.packet)),
                    out: &mut self.out,
                    macs: seg.macs,
                    mtu: self.rules.mtu,
                    offload: false,
                    cut: None,
                };
                iface.poll(now, &mut wire, &mut sockets);
                // Goes to the link with the next round's frames.
                return true;
            }
        };
        flow.learn_mss(seg.mss);
        self.counters.flows_opened += 1;
        self.by_key.insert(seg.key, id);
        queue(&mut self.work, &mut flow, id);
        self.flows.insert(id, flow);
        true
    }

    /// One round: registers new host sockets, serves every flow something
    /// happened to, arms the wake-up for the next smoltcp timer. Frames
    /// for the guest go to `drain` as they are made (see [`Drain`]).
    pub fn run<D: 'static>(&mut self, r: &mut Reactor<D>, drain: &mut Drain<'_>) {
        if self.timer.is_none() {
            self.timer = Some(r.add_timer_disarmed(|_, _, _| {}));
        }
        let made = self.out.made;
        // Frames left from `take` (a refused SYN's RST) go first; then,
        // if the link has room again, the flows it held back are served.
        let mut full = drain(&mut self.out);
        if !full {
            for id in std::mem::take(&mut self.held) {
                if let Some(flow) = self.flows.get_mut(&id) {
                    flow.held = false;
                    queue(&mut self.work, flow, id);
                }
            }
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
                    self.connect_guest(stream, guest);
                } else if deadline > now {
                    self.waiting.push((stream, guest, deadline));
                } else {
                    log::warn!(
                        "tcp: forward to {}: the guest never answered ARP",
                        guest.addr
                    );
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
            full = self.serve(r, id, full, drain);
        }
        drain(&mut self.out);
        self.counters.flows = self.flows.len() as u64;
        self.counters.frames_out = self.out.made;
        self.counters.gso_frames = self.out.gso;
        if let Some(h) = self.timer {
            // While connections wait for ARP, look again every 100 ms.
            let arp =
                (!self.waiting.is_empty()).then(|| Instant::now() + Duration::from_millis(100));
            let next = self.timers.first().map(|&(when, _)| when);
            let resting = self.forwards.values().filter_map(|f| f.resting).min();
            // Frames made this round: the round should end without waiting,
            // so a loop that hands them to its guest after the round (a VMM
            // driving `run_once`) does so at once, not after its timeout.
            let sent = (self.out.made != made).then(Instant::now);
            let _ = match next.into_iter().chain(arp).chain(resting).chain(sent).min() {
                Some(when) => r.rearm_timer_at(h, when),
                None => r.disarm_timer(h),
            };
        }
    }

    /// Serves flow `id`; `full` says whether the link toward the guest
    /// is full (the flow then takes the guest's packets in but sends
    /// nothing new). Returns whether the link is full after.
    fn serve<D: 'static>(
        &mut self,
        r: &mut Reactor<D>,
        id: u64,
        full: bool,
        drain: &mut Drain<'_>,
    ) -> bool {
        let smol_now = self.now();
        let connect_timeout = self.rules.idle_timeout.min(CONNECT_TIMEOUT);
        let mut full = full;
        let Some(flow) = self.flows.get_mut(&id) else {
            return full;
        };
        flow.queued = false;
        if flow.reg.is_none() && !matches!(flow.phase, Phase::Done) {
            let reg = watch(
                r,
                &self.events,
                Rc::clone(&flow.host),
                Interest::WRITE,
                Rights::EPHEMERAL | Rights::SOCKET,
                id,
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
                        let mut s = new_socket(connect_timeout);
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
        full = flow.poll(smol_now, &mut self.out, !full, drain);
        let mut fin_deadline = None;
        if matches!(flow.phase, Phase::Relaying) {
            if flow.relay() {
                full = flow.poll(smol_now, &mut self.out, !full, drain);
            }
            flow.tune(self.rules.idle_timeout);
            let now = Instant::now();
            fin_deadline = flow.fin_deadline(now, self.rules.fin_timeout);
            if fin_deadline.is_some_and(|d| d <= now) {
                log::debug!(
                    "tcp: {} -> {}: the guest did not finish closing in {:?}; reset",
                    flow.key.guest,
                    flow.key.remote,
                    self.rules.fin_timeout
                );
                flow.abort();
                // The RST goes out even to a full link.
                flow.poll(smol_now, &mut self.out, true, &mut |o| {
                    drain(o);
                    false
                });
                fin_deadline = None;
            }
            if flow.finished() {
                flow.phase = Phase::Done;
            }
        }
        if matches!(flow.phase, Phase::Done) {
            if !flow.closed_both_ways() {
                flow.reset_host();
            }
            if let Some(h) = flow.reg.take() {
                let _ = r.delete(h);
            }
            let key = flow.key;
            self.flows.remove(&id);
            self.by_key.remove(&key);
            return full;
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
        // smoltcp's next wake-up for this flow; none while a full link
        // holds back what it would send now (it is served again once the
        // link has room, not spun on).
        let delay = flow.iface.poll_delay(smol_now, &flow.sockets);
        let held = full && delay == Some(smoltcp::time::Duration::ZERO);
        if held && !flow.held {
            flow.held = true;
            self.held.push(id);
        }
        let next = delay
            .filter(|_| !held)
            .map(|d| Instant::now() + Duration::from_micros(d.total_micros()))
            .into_iter()
            .chain(fin_deadline)
            .min();
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
        full
    }
}

/// Registers `source` (flow or forward `id`'s host socket) in `r`: its
/// readiness is queued in `events` for the next round.
fn watch<D: 'static>(
    r: &mut Reactor<D>,
    events: &Rc<RefCell<Vec<(u64, Ready)>>>,
    source: impl Into<crate::reactor::Source>,
    interest: Interest,
    rights: Rights,
    id: u64,
) -> crate::reactor::Result<crate::reactor::Handle> {
    let events = Rc::clone(events);
    r.add(source, interest, rights, move |_, _, ev| {
        events.borrow_mut().push((
            id,
            Ready {
                readable: ev.readable,
                writable: ev.writable,
                hangup: ev.hangup || ev.error,
            },
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ethernet::ETHERTYPE_IPV4;
    use crate::frame::ipv4::{Ipv4, PROTO_TCP};
    use crate::frame::tcp::Tcp;
    use std::net::Ipv4Addr;

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
            idle_timeout: Duration::from_secs(7200),
            fin_timeout: Duration::from_secs(60),
        }
    }

    fn at(s: &str) -> std::net::SocketAddr {
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
        let rst = segment(&p.out.list[0].0).unwrap();
        // From the address the guest asked for, to the guest.
        assert_eq!(rst.key.guest, at(&format!("10.0.2.2:{port}")));
        assert_eq!(rst.key.remote, at("10.0.2.15:1003"));
        assert_eq!(rst.flags & RST, RST);
        // A retransmitted SYN of an open flow is taken, and opens nothing.
        assert!(p.take(&seg4([10, 0, 2, 2], 1001, port, SYN)));
        assert_eq!(p.counters.flows_opened, 2);
    }

    #[test]
    fn connections_waiting_for_a_silent_guest_are_bounded_by_the_table() {
        let mut r: Reactor<()> = Reactor::new().unwrap();
        let mut p = Path::new(rules());
        p.max_flows = 2;
        p.add_forward(&mut r, at("127.0.0.1:0"), at("10.0.2.15:80"), false)
            .unwrap();
        let host = p
            .forwards
            .values()
            .next()
            .unwrap()
            .listener
            .local_addr()
            .unwrap();
        let clients: Vec<_> = (0..3).map(|_| TcpStream::connect(host).unwrap()).collect();
        r.run_once(Some(Duration::from_millis(200)), &mut ())
            .unwrap();
        p.run(&mut r, &mut |_| false);
        // The guest has sent nothing: two wait for its address (ARP asked),
        // the third is refused.
        assert_eq!(p.waiting.len(), 2);
        assert_eq!(p.counters.flows_refused, 1);
        assert!(!p.out.list.is_empty(), "an ARP request went out");
        p.teardown(&mut r);
        drop(clients);
    }
}
