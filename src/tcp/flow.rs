//! One flow: its smoltcp interface and socket, its host socket, and the
//! bytes relayed between them.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::segment::Key;
use super::wire::{Frames, Incoming, Macs, Wire};
use super::{Drain, BUFFER, EGRESS_PASSES};
use crate::frame::ipv6::IP6;
use crate::frame::tcp::TCP_HLEN;
use crate::reactor::{Handle, Interest};

/// Where a flow stands.
pub(super) enum Phase {
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
pub(super) struct Ready {
    pub(super) readable: bool,
    pub(super) writable: bool,
    pub(super) hangup: bool,
}

pub(super) struct Flow {
    pub(super) key: Key,
    pub(super) phase: Phase,
    pub(super) iface: Interface,
    pub(super) sockets: SocketSet<'static>,
    pub(super) socket: Option<SocketHandle>,
    pub(super) host: Rc<TcpStream>,
    pub(super) reg: Option<Handle>,
    pub(super) interest: Interest,
    pub(super) ready: Ready,
    /// Packets from the guest for smoltcp's next poll.
    pub(super) rx: VecDeque<Vec<u8>>,
    pub(super) macs: Macs,
    /// The host sent its end of file (smoltcp's socket was closed).
    pub(super) host_eof: bool,
    /// The guest's FIN was seen (smoltcp's socket was past it).
    pub(super) guest_fin: bool,
    /// The guest's FIN was passed on (`shutdown(SHUT_WR)`).
    pub(super) shut_wr: bool,
    /// When smoltcp next wants a poll, as queued in `Path::timers`.
    pub(super) due: Option<Instant>,
    pub(super) queued: bool,
    /// Its interface's MTU: the link's, or the largest for an offloading
    /// IPv6 flow.
    pub(super) mtu: usize,
    /// Its frames are made for a link that takes offloads.
    pub(super) offload: bool,
    /// The link's MTU.
    link_mtu: usize,
    /// For an offloading IPv6 flow once the guest's SYN told its MSS:
    /// where its super-segments are cut ([`Wire::cut`]).
    pub(super) cut: Option<u16>,
    /// Once both FINs were seen: since when no byte moved, and how many
    /// were left to move (either way) then. The FIN timeout runs from there.
    pub(super) fin_clock: Option<(Instant, usize)>,
    /// In `Path::held`: it has segments to send and the link is full.
    pub(super) held: bool,
}

/// A smoltcp socket with the path's buffers, Nagle off (the bytes come
/// from a host socket in runs already), that gives up a handshake the
/// guest leaves unanswered for `timeout`.
pub(super) fn new_socket(timeout: Duration) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUFFER]),
        tcp::SocketBuffer::new(vec![0; BUFFER]),
    );
    s.set_nagle_enabled(false);
    s.set_timeout(Some(smol_duration(timeout)));
    s
}

fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_micros().try_into().unwrap_or(u64::MAX))
}

/// Queues `flow` (id `id`) for this round's service, once.
pub(super) fn queue(work: &mut Vec<u64>, flow: &mut Flow, id: u64) {
    if !flow.queued {
        flow.queued = true;
        work.push(id);
    }
}

pub(super) fn ip_address(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(a) => IpAddress::Ipv4(a),
        IpAddr::V6(a) => IpAddress::Ipv6(a),
    }
}

/// A smoltcp interface that owns `remote`'s address: the guest's packets
/// to it are its own.
/// (smoltcp keeps the device's capabilities, the MTU among them, from here.)
/// With `offload`, its segments may be super-segments ([`Wire::offload`]).
pub(super) fn iface_for(
    remote: SocketAddr,
    mtu: usize,
    offload: bool,
    now: smoltcp::time::Instant,
) -> Interface {
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ip),
        &mut Wire {
            rx: Incoming::One(None),
            out: &mut Frames::default(),
            macs: Macs::default(),
            mtu,
            offload,
            cut: None,
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
    pub(super) fn new(
        key: Key,
        phase: Phase,
        host: TcpStream,
        macs: Macs,
        mtu: usize,
        offload: (bool, bool),
        now: smoltcp::time::Instant,
    ) -> Flow {
        // The link's offloads for the flow's family, at an MTU where a
        // 64 KiB super-segment holds two segments or more (at 65520 one
        // segment is already that big).
        let family = if key.remote.is_ipv4() {
            offload.0
        } else {
            offload.1
        };
        let offload = family && mtu <= usize::from(u16::MAX) / 2;
        // smoltcp 0.14 drops an IPv6 packet over its interface's MTU even
        // when the device segments it: an offloading IPv6 flow's interface
        // gets the largest (its segments still follow the guest's MSS,
        // which its MTU bounds).
        let iface_mtu = if offload && key.remote.is_ipv6() {
            usize::from(u16::MAX)
        } else {
            mtu
        };
        Flow {
            key,
            phase,
            iface: iface_for(key.remote, iface_mtu, offload, now),
            mtu: iface_mtu,
            offload,
            link_mtu: mtu,
            cut: None,
            sockets: SocketSet::new(Vec::new()),
            socket: None,
            host: Rc::new(host),
            reg: None,
            interest: Interest::empty(),
            ready: Ready::default(),
            rx: VecDeque::new(),
            macs,
            host_eof: false,
            guest_fin: false,
            shut_wr: false,
            due: None,
            queued: false,
            fin_clock: None,
            held: false,
        }
    }

    /// Takes the MSS the guest's SYN (or SYN-ACK) announced: an
    /// offloading IPv6 flow cuts its super-segments there, or at 536 bytes
    /// without one (as smoltcp assumes), and never above what the link's
    /// MTU carries.
    pub(super) fn learn_mss(&mut self, mss: Option<u16>) {
        if self.offload && self.key.remote.is_ipv6() && self.cut.is_none() {
            let link = self.link_mtu.saturating_sub(IP6 + TCP_HLEN);
            let most = u16::try_from(link).unwrap_or(u16::MAX);
            self.cut = Some(mss.unwrap_or(536).min(most).max(1));
        }
    }

    /// Once established: the guest silent for `idle` ends the flow
    /// (smoltcp's timeout), probed by keep-alives at half of it, so a
    /// live idle guest answers and stays.
    pub(super) fn tune(&mut self, idle: Duration) {
        let Some(h) = self.socket else {
            return;
        };
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        // Once: a keep-alive interval set means tuned.
        if s.keep_alive().is_none() && s.state() == tcp::State::Established {
            s.set_timeout(Some(smol_duration(idle)));
            s.set_keep_alive(Some(smol_duration(idle / 2)));
        }
    }

    /// When the FIN timeout ends this flow: `fin` after both FINs were
    /// seen and no byte moved since (`now` starts the clock, and restarts
    /// it whenever bytes left either way since the last look). A slow
    /// guest still taking the host's last bytes, or a slow host taking
    /// the guest's, keeps the flow; one that stopped does not.
    pub(super) fn fin_deadline(&mut self, now: Instant, fin: Duration) -> Option<Instant> {
        if !(self.host_eof && self.guest_fin) {
            return None;
        }
        let left = self.socket.map_or(0, |h| {
            let s = self.sockets.get::<tcp::Socket>(h);
            s.send_queue() + s.recv_queue()
        });
        match self.fin_clock {
            // After both FINs nothing is added either way: fewer bytes
            // left is progress.
            Some((since, was)) if left >= was => Some(since + fin),
            _ => {
                self.fin_clock = Some((now, left));
                Some(now + fin)
            }
        }
    }

    /// Both FINs were passed on: the host's to the guest, the guest's to
    /// the host.
    pub(super) fn closed_both_ways(&self) -> bool {
        self.host_eof && self.shut_wr
    }

    /// Resets the guest's side (smoltcp sends a RST at its next poll).
    pub(super) fn abort(&mut self) {
        if let Some(h) = self.socket {
            self.sockets.get_mut::<tcp::Socket>(h).abort();
        }
    }

    /// Makes closing the host socket a reset (`SO_LINGER` 0), for a flow
    /// that did not end with both FINs: the host peer sees the failure
    /// rather than a clean end of file.
    pub(super) fn reset_host(&self) {
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ =
            nix::sys::socket::setsockopt(&*self.host, nix::sys::socket::sockopt::Linger, &linger);
    }

    /// Feeds smoltcp one packet of the guest's at once, borrowed from the
    /// link's buffer (a copy of every byte the guest sends saved); what it
    /// answers right away (a RST) waits in `out`.
    pub(super) fn ingest(&mut self, now: smoltcp::time::Instant, packet: &[u8], out: &mut Frames) {
        let mut wire = Wire {
            rx: Incoming::One(Some(packet)),
            out,
            macs: self.macs,
            mtu: self.mtu,
            offload: self.offload,
            cut: self.cut,
        };
        self.iface
            .poll_ingress_single(now, &mut wire, &mut self.sockets);
    }

    /// Feeds smoltcp the guest's packets; then, with `egress`, lets it
    /// send what its window allows, one segment a pass, each handed to
    /// `drain` as it is made, and stops once `drain` says the link toward
    /// the guest is full (the rest stays in smoltcp's buffer, to be sent
    /// when the link has room) or after [`EGRESS_PASSES`]. Returns whether
    /// the link is full.
    pub(super) fn poll(
        &mut self,
        now: smoltcp::time::Instant,
        out: &mut Frames,
        egress: bool,
        drain: &mut Drain<'_>,
    ) -> bool {
        loop {
            let mut wire = Wire {
                rx: Incoming::Queue(&mut self.rx),
                out: &mut *out,
                macs: self.macs,
                mtu: self.mtu,
                offload: self.offload,
                cut: self.cut,
            };
            let r = self
                .iface
                .poll_ingress_single(now, &mut wire, &mut self.sockets);
            if r == PollIngressSingleResult::None {
                break;
            }
        }
        // Replies made while taking packets in (a RST) go out regardless.
        let mut full = drain(out);
        if !egress {
            return full;
        }
        for _ in 0..EGRESS_PASSES {
            if full {
                break;
            }
            let mut wire = Wire {
                rx: Incoming::Queue(&mut self.rx),
                out: &mut *out,
                macs: self.macs,
                mtu: self.mtu,
                offload: self.offload,
                cut: self.cut,
            };
            if self.iface.poll_egress(now, &mut wire, &mut self.sockets) == PollResult::None {
                break;
            }
            full = drain(out);
        }
        full
    }

    /// Moves bytes both ways between smoltcp's socket and the host's, as
    /// far as each takes them. Returns whether smoltcp has anything new
    /// to send (data, a window update, a FIN).
    pub(super) fn relay(&mut self) -> bool {
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
        // (Remembered: after our own FIN's ACK the socket is Closed, with
        // the guest's last bytes possibly still to pass on.)
        self.guest_fin |= matches!(
            s.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        );
        if !self.shut_wr && self.guest_fin && s.recv_queue() == 0 {
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
        // The host's FIN, after its data. Once the guest's FIN came first
        // (CLOSE-WAIT), only when every byte before it is acknowledged:
        // smoltcp in LAST-ACK takes a pure window update for a duplicate
        // ACK and drops it, so a guest whose window had filled would never
        // be sent the rest (the flow wedged until the FIN timeout).
        let fin_due = match s.state() {
            tcp::State::Established => true,
            tcp::State::CloseWait => s.send_queue() == 0,
            _ => false,
        };
        if self.host_eof && fin_due {
            s.close();
            changed = true;
        }
        changed
    }

    /// Whether the flow is over: smoltcp's socket closed for good (both
    /// FINs through, a RST either way, or it never left `Listen` after its
    /// SYN) and, after the guest's FIN, every byte it sent passed on to the
    /// host (smoltcp keeps them readable once closed).
    pub(super) fn finished(&mut self) -> bool {
        let Some(h) = self.socket else {
            return true;
        };
        let s = self.sockets.get::<tcp::Socket>(h);
        let unsent = self.guest_fin && s.recv_queue() > 0;
        matches!(s.state(), tcp::State::Closed | tcp::State::Listen)
            && self.rx.is_empty()
            && !unsent
    }

    pub(super) fn interest_wanted(&self) -> Interest {
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
