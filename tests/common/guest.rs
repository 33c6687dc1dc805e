//! A real guest network stack (smoltcp) wired to a caploop slirp [`Stack`]
//! in the same process: frames the guest sends go to `Stack::input`, frames
//! the stack's sink receives go to the guest. [`Net`] owns the reactor, the
//! stack and the guest, and steps them together.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

use caploop::slirp::{Config, Proto, Rule, Stack};
use caploop::Reactor;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Cidr};

/// The guest's MAC address.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Frames between the guest and the stack.
pub struct Wire {
    /// Frames from the stack (the sink pushes here), for the guest.
    pub rx: Rc<RefCell<VecDeque<Vec<u8>>>>,
    /// Frames from the guest, for the stack.
    pub tx: VecDeque<Vec<u8>>,
    /// IP MTU.
    pub mtu: usize,
}

/// smoltcp's receive token: one frame.
pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// smoltcp's transmit token: appends to the wire's tx queue.
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// What DHCP handed the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Address and prefix.
    pub address: Ipv4Cidr,
    /// Default gateway.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
}

/// The guest: a smoltcp interface, its sockets, and a DHCP client.
pub struct Guest {
    /// The interface.
    pub iface: Interface,
    /// Its sockets (the DHCP socket included).
    pub sockets: SocketSet<'static>,
    /// The wire to the stack.
    pub wire: Wire,
    /// The DHCP client socket.
    pub dhcp: SocketHandle,
    /// The current lease.
    pub lease: Option<Lease>,
}

impl Guest {
    /// A guest whose frames from the stack arrive in `rx`, with IP MTU `mtu`.
    pub fn new(rx: Rc<RefCell<VecDeque<Vec<u8>>>>, mtu: usize) -> Guest {
        let mut wire = Wire {
            rx,
            tx: VecDeque::new(),
            mtu,
        };
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        cfg.random_seed = 0x5eed;
        let iface = Interface::new(cfg, &mut wire, SmolInstant::now());
        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = sockets.add(dhcpv4::Socket::new());
        Guest {
            iface,
            sockets,
            wire,
            dhcp,
            lease: None,
        }
    }

    /// Runs smoltcp once and handles DHCP events.
    pub fn poll(&mut self) {
        self.iface
            .poll(SmolInstant::now(), &mut self.wire, &mut self.sockets);
        let event = self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll();
        match event {
            Some(dhcpv4::Event::Configured(c)) => {
                self.iface.update_ip_addrs(|a| {
                    a.clear();
                    a.push(IpCidr::Ipv4(c.address)).expect("one address fits");
                });
                self.iface.routes_mut().remove_default_ipv4_route();
                if let Some(r) = c.router {
                    self.iface
                        .routes_mut()
                        .add_default_ipv4_route(r)
                        .expect("route fits");
                }
                self.lease = Some(Lease {
                    address: c.address,
                    router: c.router,
                    dns: c.dns_servers.iter().copied().collect(),
                });
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|a| a.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.lease = None;
            }
            None => {}
        }
    }

    /// How long smoltcp may sleep.
    pub fn delay(&mut self) -> Option<Duration> {
        self.iface
            .poll_delay(SmolInstant::now(), &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
    }

    /// Adds a TCP socket with `size`-byte buffers each way.
    pub fn tcp_socket(&mut self, size: usize) -> SocketHandle {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        );
        self.sockets.add(s)
    }

    /// Adds a TCP socket listening on `port`.
    pub fn tcp_listen(&mut self, port: u16, size: usize) -> SocketHandle {
        let h = self.tcp_socket(size);
        self.tcp(h).listen(port).expect("listen");
        h
    }

    /// The TCP socket `h`.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Adds a UDP socket bound to `port`.
    pub fn udp_bind(&mut self, port: u16) -> SocketHandle {
        let meta = || vec![udp::PacketMetadata::EMPTY; 16];
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0; 16 * 1024]),
            udp::PacketBuffer::new(meta(), vec![0; 16 * 1024]),
        );
        s.bind(port).expect("bind");
        self.sockets.add(s)
    }

    /// The UDP socket `h`.
    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }
}

/// Frames from the stack to the guest that were ARP, kept for inspection.
pub type ArpLog = Rc<RefCell<Vec<Vec<u8>>>>;

/// The reactor, the slirp stack on it, and the guest on the stack.
pub struct Net {
    /// The reactor the stack runs on.
    pub reactor: Reactor<()>,
    /// The stack.
    pub stack: Stack,
    /// The guest.
    pub guest: Guest,
    /// ARP frames the stack sent.
    pub arp: ArpLog,
    /// How the guest's frames reach the stack: `Stack::input` unless set
    /// (a test may rewrite, merge or hold them).
    pub feed: Option<Feed>,
}

/// A test's way of handing the guest's frames to the stack.
pub type Feed = Box<dyn FnMut(&Stack, Vec<u8>)>;

impl Net {
    /// A stack for `config` with a guest on it (no lease yet).
    pub fn new(config: Config) -> Net {
        let mut reactor = Reactor::new().expect("reactor");
        let rx: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
        let arp: ArpLog = Rc::default();
        let mtu = config.mtu;
        let (rx2, arp2) = (rx.clone(), arp.clone());
        let stack = Stack::new(&mut reactor, config, move |frame: &[u8]| {
            if frame.len() >= 14 && frame[12..14] == [0x08, 0x06] {
                arp2.borrow_mut().push(frame.to_vec());
            }
            rx2.borrow_mut().push_back(frame.to_vec());
        })
        .expect("stack");
        Net {
            reactor,
            stack,
            guest: Guest::new(rx, mtu),
            arp,
            feed: None,
        }
    }

    /// Moves frames both ways until neither side has any left.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            self.guest.poll();
            if self.guest.wire.tx.is_empty() {
                if self.guest.wire.rx.borrow().is_empty() {
                    return;
                }
                continue;
            }
            while let Some(f) = self.guest.wire.tx.pop_front() {
                match self.feed.as_mut() {
                    Some(feed) => feed(&self.stack, f),
                    None => self.stack.input(&f),
                }
            }
        }
    }

    /// One step: pump frames, then one reactor round waiting at most
    /// `max_wait` (less if smoltcp has timers due), then pump again.
    pub fn step(&mut self, max_wait: Duration) {
        self.pump();
        let wait = self.guest.delay().map_or(max_wait, |d| d.min(max_wait));
        self.reactor
            .run_once(Some(wait), &mut ())
            .expect("reactor round");
        self.pump();
    }

    /// Steps until `cond` holds (true) or `timeout` passes (false).
    pub fn run_until(&mut self, timeout: Duration, mut cond: impl FnMut(&mut Net) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.step(Duration::from_millis(5));
        }
    }

    /// Runs until the guest has a DHCP lease (panics after 5 s).
    pub fn dhcp(&mut self) -> Lease {
        assert!(
            self.run_until(Duration::from_secs(5), |n| n.guest.lease.is_some()),
            "no DHCP lease within 5 s"
        );
        self.guest.lease.clone().expect("lease")
    }

    /// Adds a host forward from a free port on 127.0.0.1 to `guest_port`,
    /// retrying if another test took the port first. Returns the host port.
    pub fn forward(&mut self, proto: Proto, guest_port: u16) -> u16 {
        for _ in 0..20 {
            let port = free_port(proto);
            let rule = Rule {
                proto,
                host_addr: Some(Ipv4Addr::LOCALHOST.into()),
                host_port: port,
                guest_addr: None,
                guest_port,
                real_source: None,
            };
            if self.stack.add_hostfwd(&mut self.reactor, &rule).is_ok() {
                return port;
            }
        }
        panic!("no free host port for a {proto} forward");
    }

    /// Gives the guest `guest6` (/64) and adds a TCP forward from a free
    /// port on [::1] to its `guest_port`. Returns the host port.
    pub fn forward6(&mut self, guest6: std::net::Ipv6Addr, guest_port: u16) -> u16 {
        self.guest.iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv6(guest6), 64)).unwrap();
        });
        for _ in 0..20 {
            let port = TcpListener::bind("[::1]:0")
                .and_then(|l| l.local_addr())
                .expect("bind [::1]")
                .port();
            let rule: Rule = format!("tcp:[::1]:{port}-[{guest6}]:{guest_port}")
                .parse()
                .expect("an IPv6 rule");
            if self.stack.add_hostfwd(&mut self.reactor, &rule).is_ok() {
                return port;
            }
        }
        panic!("no free host port for an IPv6 forward");
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port(proto: Proto) -> u16 {
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    match proto {
        Proto::Tcp => TcpListener::bind(any)
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port(),
        Proto::Udp => UdpSocket::bind(any)
            .and_then(|s| s.local_addr())
            .expect("bind")
            .port(),
    }
}

/// A deterministic pseudo-random buffer (xorshift), different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A guest socket's upload: `data` sent as the socket takes it, then the
/// socket closed, over as many steps as that needs.
pub struct Upload {
    data: Vec<u8>,
    /// Bytes the socket has taken.
    pub sent: usize,
    closed: bool,
}

impl Upload {
    /// An upload of `data`.
    pub fn new(data: Vec<u8>) -> Upload {
        Upload {
            data,
            sent: 0,
            closed: false,
        }
    }

    /// Hands `s` what it takes now; closes it once all is taken.
    pub fn step(&mut self, s: &mut tcp::Socket<'static>) {
        while self.sent < self.data.len() && s.can_send() {
            let k = s.send_slice(&self.data[self.sent..]).unwrap();
            if k == 0 {
                break;
            }
            self.sent += k;
        }
        if self.sent == self.data.len() && !self.closed {
            s.close();
            self.closed = true;
        }
    }
}
