//! A measured spike, not a product: smoltcp's TCP as the namespace-facing
//! end of a tap, each connection relayed to a host socket, the design
//! issue 23 weighed against translating flows onto host sockets (passt's;
//! measured with smoltcp 0.12, it now builds with the library's smoltcp).
//! `benches/netns.sh` runs it as the peer `smoltcp`; ARCHITECTURE.md says
//! what it measured and which design won.
//!
//! It serves one port: the namespace connects to 10.0.2.2:PORT, and each
//! connection is relayed to 127.0.0.1:PORT. smoltcp answers ARP for
//! 10.0.2.2, terminates TCP with 4 MiB buffers each way (window scaling
//! follows from their size) and verifies every checksum; the tap carries
//! no virtio-net header. One thread, `poll(2)`, no sandbox.
//!
//! ```text
//! smoltcp_relay /var/run/netns/NS tap0 MTU PORT
//! ```

#[cfg(target_os = "linux")]
fn main() {
    if let Err(e) = linux::run() {
        eprintln!("smoltcp_relay: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("smoltcp_relay: network namespaces are Linux's");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::VecDeque;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};

    use caploop::net::tap::TapDevice;
    use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
    use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant;
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

    /// Connections served at once (iperf3 uses two).
    const SOCKETS: usize = 4;
    /// Each socket's buffer, each way.
    const BUF: usize = 4 << 20;

    /// The tap, read ahead into `rx`, written at once.
    struct Tap {
        fd: RawFd,
        rx: VecDeque<Vec<u8>>,
        mtu: usize,
    }

    impl Tap {
        fn fill(&mut self) {
            loop {
                let mut buf = vec![0u8; self.mtu + 14];
                // SAFETY: buf is valid for its length; fd is the open tap.
                let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return;
                }
                buf.truncate(n as usize);
                self.rx.push_back(buf);
            }
        }
    }

    struct Rx(Vec<u8>);
    struct Tx(RawFd);

    impl phy::RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl phy::TxToken for Tx {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut buf = vec![0u8; len];
            let r = f(&mut buf);
            // SAFETY: buf is valid for its length; fd is the open tap. A
            // frame the tap cannot take is dropped, as a NIC would.
            unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
            r
        }
    }

    impl Device for Tap {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx;

        fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
            let f = self.rx.pop_front()?;
            Some((Rx(f), Tx(self.fd)))
        }

        fn transmit(&mut self, _: Instant) -> Option<Tx> {
            Some(Tx(self.fd))
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut c = DeviceCapabilities::default();
            c.medium = Medium::Ethernet;
            c.max_transmission_unit = self.mtu + 14;
            c
        }
    }

    fn listener<'a>(port: u16) -> tcp::Socket<'a> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; BUF]),
            tcp::SocketBuffer::new(vec![0; BUF]),
        );
        s.set_nagle_enabled(false);
        s.listen(port).expect("a fresh socket listens");
        s
    }

    /// One relayed connection: smoltcp's socket and the host's.
    struct Flow {
        handle: SocketHandle,
        host: Option<TcpStream>,
        host_eof: bool,
    }

    pub fn run() -> Result<(), Box<dyn std::error::Error>> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let [netns, tap_name, mtu, port] = &args[..] else {
            return Err("usage: smoltcp_relay NETNS_PATH TAP MTU PORT".into());
        };
        let (mtu, port): (usize, u16) = (mtu.parse()?, port.parse()?);
        let dev: OwnedFd = TapDevice::open_in_netns(netns.as_ref(), tap_name)?.into_fd();
        let fd = dev.as_raw_fd();
        // SAFETY: fcntl on an open descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        let mut tap = Tap {
            fd,
            rx: VecDeque::new(),
            mtu,
        };
        let mac = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
        let mut iface = Interface::new(Config::new(mac.into()), &mut tap, Instant::now());
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(10, 0, 2, 2), 24)).unwrap();
        });
        let mut sockets = SocketSet::new(vec![]);
        let mut flows: Vec<Flow> = (0..SOCKETS)
            .map(|_| Flow {
                handle: sockets.add(listener(port)),
                host: None,
                host_eof: false,
            })
            .collect();
        eprintln!("smoltcp_relay: serving {tap_name}, 10.0.2.2:{port} -> 127.0.0.1:{port}");
        loop {
            tap.fill();
            iface.poll(Instant::now(), &mut tap, &mut sockets);
            let mut fds = vec![libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            for f in &mut flows {
                let s = sockets.get_mut::<tcp::Socket>(f.handle);
                if f.host.is_none() && s.is_active() && s.may_recv() {
                    let h = TcpStream::connect(("127.0.0.1", port))?;
                    h.set_nonblocking(true)?;
                    h.set_nodelay(true)?;
                    f.host = Some(h);
                }
                let Some(h) = f.host.as_mut() else { continue };
                // Namespace -> host: what the host socket takes leaves
                // smoltcp's buffer.
                while s.can_recv() {
                    let r = s.recv(|buf| match h.write(buf) {
                        Ok(n) => (n, n),
                        Err(_) => (0, 0),
                    });
                    if !matches!(r, Ok(n) if n > 0) {
                        break;
                    }
                }
                // Host -> namespace: read straight into smoltcp's buffer.
                while !f.host_eof && s.can_send() {
                    let r = s.send(|buf| match h.read(buf) {
                        Ok(0) => (0, Some(0)),
                        Ok(n) => (n, Some(n)),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => (0, None),
                        Err(_) => (0, Some(0)),
                    });
                    match r {
                        Ok(Some(0)) => {
                            f.host_eof = true;
                            s.close();
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
                if !s.may_recv() && s.recv_queue() == 0 {
                    let _ = h.shutdown(std::net::Shutdown::Write);
                }
                if !s.is_open() {
                    // Done: listen again for the next connection.
                    sockets.remove(f.handle);
                    f.handle = sockets.add(listener(port));
                    f.host = None;
                    f.host_eof = false;
                    continue;
                }
                let mut events = 0;
                if s.can_send() && !f.host_eof {
                    events |= libc::POLLIN;
                }
                if s.recv_queue() > 0 {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd {
                    fd: h.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
            iface.poll(Instant::now(), &mut tap, &mut sockets);
            if !tap.rx.is_empty() {
                continue;
            }
            let delay = iface
                .poll_delay(Instant::now(), &sockets)
                .map_or(100, |d| d.total_millis().min(100) as i32);
            // SAFETY: fds is a valid array of pollfd for its length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, delay) };
        }
    }
}
