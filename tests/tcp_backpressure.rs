//! The own TCP path's back-pressure: while the embedder's link toward the
//! guest says it is full (`Stack::set_link_full`), the path sends the
//! guest nothing new, does not spin, and loses nothing; once the link has
//! room the transfer completes byte-exact. A real guest stack (smoltcp)
//! reads throughout, so what is held is held by the path, not by the
//! guest's window.

mod common;

use std::cell::Cell;
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use caploop::slirp::{Config, Proto};
use common::guest::{pattern, Net};

const LEN: usize = 8 << 20;

#[test]
fn a_full_link_holds_the_paths_output_without_spinning_or_losing_a_byte() {
    let mut net = Net::new(Config::default());
    net.dhcp();
    let port = net.forward(Proto::Tcp, 80);
    let h = net.guest.tcp_listen(80, 256 * 1024);
    let full = Rc::new(Cell::new(false));
    let asked = Rc::new(Cell::new(0u64));
    {
        let (full, asked) = (full.clone(), asked.clone());
        net.stack.set_link_full(move || {
            asked.set(asked.get() + 1);
            full.get()
        });
    }
    let data = pattern(LEN, 11);
    let sent = data.clone();
    let host = thread::spawn(move || {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.write_all(&sent).unwrap();
    });
    let mut got = Vec::with_capacity(LEN);
    let read = |net: &mut Net, got: &mut Vec<u8>| {
        let s = net.guest.tcp(h);
        while s.can_recv() {
            s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
    };
    assert!(
        net.run_until(Duration::from_secs(10), |n| {
            read(n, &mut got);
            got.len() >= 1 << 20
        }),
        "the first MiB did not arrive"
    );

    // Full: nothing new reaches the guest, and the loop waits.
    full.set(true);
    net.step(Duration::from_millis(5));
    read(&mut net, &mut got);
    let (frames, bytes, calls) = (
        net.stack.tcp_counters().unwrap().frames_out,
        got.len(),
        asked.get(),
    );
    let t0 = Instant::now();
    net.run_until(Duration::from_millis(500), |n| {
        read(n, &mut got);
        false
    });
    let held_for = t0.elapsed();
    let sent_meanwhile = net.stack.tcp_counters().unwrap().frames_out - frames;
    let calls = asked.get() - calls;
    assert_eq!(sent_meanwhile, 0, "frames sent to a full link");
    assert_eq!(got.len(), bytes, "bytes arrived through a full link");
    assert!(
        calls < 1000,
        "the path asked {calls} times in {held_for:?}: it spins on a full link"
    );

    // Room again: the rest arrives, byte-exact.
    full.set(false);
    assert!(
        net.run_until(Duration::from_secs(20), |n| {
            read(n, &mut got);
            got.len() >= LEN
        }),
        "{} of {LEN} bytes after the link cleared",
        got.len()
    );
    host.join().unwrap();
    assert!(got == data, "the guest received different bytes");
}
