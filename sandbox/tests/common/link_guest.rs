//! A real guest network stack (smoltcp, the library tests' guest) on the
//! hypervisor's side of a helper's link: frames cross a real socket to the
//! built `caploop-sandbox`, framed as the front end frames them (QEMU's
//! 4-byte length prefix, or one frame per record for bhyve and QEMU's
//! dgram). The test can also put raw frames on the link.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use caploop::wire::stream::{header, Decoder};

#[path = "../../../tests/common/guest.rs"]
#[allow(dead_code)]
mod smol;

pub use smol::{pattern, Guest};

/// How frames are delimited on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A 4-byte big-endian length before each frame (QEMU stream).
    Stream,
    /// One frame per record (bhyve's SOCK_SEQPACKET, QEMU's dgram).
    Record,
}

/// The guest and its end of the link.
pub struct LinkGuest {
    sock: OwnedFd,
    framing: Framing,
    decoder: Decoder,
    /// The guest stack.
    pub guest: Guest,
}

impl LinkGuest {
    /// A guest on `sock` (made non-blocking here), IP MTU `mtu`.
    pub fn new(sock: OwnedFd, framing: Framing, mtu: usize) -> LinkGuest {
        nix::fcntl::fcntl(
            &sock,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        LinkGuest {
            sock,
            framing,
            decoder: Decoder::new(70_000),
            guest: Guest::new(Default::default(), mtu),
        }
    }

    /// Puts `frame` on the link as the hypervisor would.
    pub fn send_raw(&self, frame: &[u8]) {
        let mut out = Vec::with_capacity(frame.len() + 4);
        if self.framing == Framing::Stream {
            out.extend_from_slice(&header(frame.len()).unwrap());
        }
        out.extend_from_slice(frame);
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while sent < out.len() {
            // SAFETY: send reads out.len() - sent bytes of a live buffer.
            let n = unsafe {
                libc::send(
                    self.sock.as_raw_fd(),
                    out[sent..].as_ptr().cast(),
                    out.len() - sent,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(
                    e.kind(),
                    ErrorKind::WouldBlock,
                    "sending to the helper: {e}"
                );
                assert!(Instant::now() < deadline, "the helper does not read");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if self.framing == Framing::Record {
                return;
            }
            sent += n as usize;
        }
    }

    /// Reads what the helper sent (into the guest), runs the guest, sends
    /// what the guest made; waits at most `wait` for the helper first.
    pub fn step(&mut self, wait: Duration) {
        let wait = self.guest.delay().map_or(wait, |d| d.min(wait));
        let mut pfd = [nix::poll::PollFd::new(
            self.sock.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let _ = nix::poll::poll(&mut pfd, ms);
        let mut buf = vec![0u8; 70_000];
        loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            let got = &buf[..n as usize];
            match self.framing {
                Framing::Record => self.guest.wire.rx.borrow_mut().push_back(got.to_vec()),
                Framing::Stream => {
                    self.decoder.feed(got);
                    while let Some(f) = self.decoder.next_frame().expect("the helper's framing") {
                        self.guest.wire.rx.borrow_mut().push_back(f.to_vec());
                    }
                }
            }
        }
        for _ in 0..64 {
            self.guest.poll();
            let out: Vec<Vec<u8>> = self.guest.wire.tx.drain(..).collect();
            if out.is_empty() {
                break;
            }
            for f in out {
                self.send_raw(&f);
            }
        }
    }

    /// Steps until `cond` holds (true) or `timeout` passes (false).
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&mut LinkGuest) -> bool,
    ) -> bool {
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

    /// Runs until the guest has a DHCP lease; panics after 10 s.
    pub fn dhcp(&mut self) {
        assert!(
            self.run_until(Duration::from_secs(10), |g| g.guest.lease.is_some()),
            "no DHCP lease through the helper within 10 s"
        );
    }

    /// Serves one connection to guest port `port` that arrives through the
    /// host forward at 127.0.0.1:`host_port`: the host sends `len` bytes,
    /// the guest echoes them back; returns whether both directions were
    /// byte-exact. The host closes only once it has every byte back
    /// (libslirp 4.7 drops what it still buffers toward the host when the
    /// guest's side closes last, so the test does not close that way).
    pub fn echo_through_hostfwd(&mut self, port: u16, host_port: u16, len: usize) -> bool {
        let h = self.guest.tcp_listen(port, 128 * 1024);
        let data = pattern(len, u64::from(host_port));
        let sent = data.clone();
        let host = std::thread::spawn(move || {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, host_port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
            let mut got = vec![0u8; len];
            let mut n = 0;
            while n < got.len() {
                match s.read(&mut got[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            got.truncate(n);
            writer.join().unwrap();
            let _ = s.shutdown(Shutdown::Both);
            got
        });
        let mut pending: Vec<u8> = Vec::new();
        let mut echoed = 0usize;
        let mut closed = false;
        let done = self.run_until(Duration::from_secs(60), |g| {
            let s = g.guest.tcp(h);
            while s.can_recv() {
                s.recv(|b| {
                    pending.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            while !pending.is_empty() && s.can_send() {
                let k = s.send_slice(&pending).unwrap();
                if k == 0 {
                    break;
                }
                pending.drain(..k);
                echoed += k;
            }
            // The host closed (after it had everything back): close too.
            if pending.is_empty() && s.state() == smoltcp::socket::tcp::State::CloseWait && !closed
            {
                s.close();
                closed = true;
            }
            host.is_finished()
        });
        assert!(
            done,
            "the echo did not finish: {echoed} of {len} bytes echoed"
        );
        let got = host.join().unwrap();
        if got != data {
            let at = got.iter().zip(&data).position(|(a, b)| a != b);
            eprintln!(
                "echo: {} of {len} bytes came back, first difference at {at:?}",
                got.len()
            );
        }
        got == data
    }
}
