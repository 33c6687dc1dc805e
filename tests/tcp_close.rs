//! Closing through the own TCP path loses nothing: a guest (smoltcp)
//! sends 5 MiB and closes while the host is not reading; the host then
//! closes its side too, and only after that reads. smoltcp's socket is
//! closed for good by then (both FINs acknowledged) with most of the
//! bytes still in its buffer; every one of them must still reach the host,
//! followed by a clean end of file.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use caploop::slirp::{Config, Proto};
use common::guest::{pattern, Net, Upload};

const LEN: usize = 5 << 20;

#[test]
fn the_guests_last_bytes_reach_a_host_that_reads_after_both_fins() {
    let mut net = Net::new(Config::default());
    net.dhcp();
    let port = net.forward(Proto::Tcp, 80);
    let h = net.guest.tcp_listen(80, 8 << 20);
    let host = thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        // The guest sends and closes meanwhile; nothing is read.
        thread::sleep(Duration::from_millis(600));
        s.shutdown(Shutdown::Write)?;
        thread::sleep(Duration::from_millis(600));
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got)
    });
    let mut up = Upload::new(pattern(LEN, 5));
    let done = net.run_until(Duration::from_secs(15), |n| {
        up.step(n.guest.tcp(h));
        host.is_finished()
    });
    assert!(done, "the host did not finish reading");
    let got = host.join().unwrap().expect("a clean end of file");
    assert_eq!(got.len(), LEN, "bytes the host read");
    assert!(got == pattern(LEN, 5), "the host read different bytes");
}
