//! The own TCP path's segmentation offload (`Stack::set_offload`), with a
//! real guest stack (smoltcp) behind a link that cuts super-segments as a
//! guest's kernel would (`offload::complete`) and real host sockets
//! through a host forward, over IPv4 and IPv6: while the link takes
//! offloads, the download's data reaches it as super-segments of the
//! guest's MSS, several segments each (IPv6 ones told by their length:
//! smoltcp 0.14 gives no metadata there); once the link stops taking them (a guest that
//! renegotiated without `GUEST_TSO4`), the same flow's super-segments are
//! cut and checksummed by the stack and reach the plain sink. Every byte
//! arrives, in order, with checksums the guest verified.

mod common;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpStream};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use caploop::net::offload::{complete, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};
use caploop::slirp::{Config, Proto};
use common::guest::{pattern, Net};

const LEN: usize = 4 << 20;

#[test]
fn super_segments_go_to_a_link_that_takes_them_and_are_cut_for_one_that_stops() {
    download(false);
}

#[test]
fn ipv6_super_segments_too() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return;
    }
    download(true);
}

/// A 4 MiB download through a host forward to the guest's port 80, over
/// IPv6 if `v6`; the link stops taking offloads halfway.
fn download(v6: bool) {
    let mut net = Net::new(Config::default());
    let takes = Rc::new(Cell::new(true));
    let seen: Rc<RefCell<Vec<(VnetHdr, usize)>>> = Rc::default();
    let rx = net.guest.wire.rx.clone();
    let (t, s) = (takes.clone(), seen.clone());
    net.stack.set_offload(
        move || (t.get(), t.get()),
        move |hdr, frame| {
            let h = VnetHdr::parse(hdr).expect("a whole header");
            s.borrow_mut().push((h, frame.len()));
            let mut f = frame.to_vec();
            complete(&h, &mut f, &mut |piece| {
                rx.borrow_mut().push_back(piece.to_vec())
            })
            .expect("a super-segment the guest's kernel would take");
        },
    );
    net.dhcp();
    let (port, to): (u16, IpAddr) = if v6 {
        (
            net.forward6("fd00::15".parse().unwrap(), 80),
            Ipv6Addr::LOCALHOST.into(),
        )
    } else {
        (net.forward(Proto::Tcp, 80), Ipv4Addr::LOCALHOST.into())
    };
    let h = net.guest.tcp_listen(80, 1 << 20);
    let host = thread::spawn(move || -> std::io::Result<()> {
        let mut s = TcpStream::connect((to, port))?;
        s.write_all(&pattern(LEN, 3))?;
        s.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    let mut at_switch = None;
    let done = net.run_until(Duration::from_secs(30), |n| {
        let g = n.guest.tcp(h);
        let mut b = vec![0u8; 1 << 16];
        while g.can_recv() {
            let k = g.recv_slice(&mut b).unwrap();
            got.extend_from_slice(&b[..k]);
        }
        if got.len() >= LEN / 2 && at_switch.is_none() {
            takes.set(false);
            at_switch = Some(seen.borrow().len());
        }
        got.len() == LEN && !g.may_recv()
    });
    host.join().unwrap().expect("the host sent it all");
    assert!(done, "{} of {LEN} bytes arrived", got.len());
    assert!(got == pattern(LEN, 3), "the guest got different bytes");

    let seen = seen.borrow();
    let at_switch = at_switch.unwrap();
    assert!(at_switch > 0, "no super-segment while the link took them");
    assert_eq!(
        seen.len(),
        at_switch,
        "the offload sink was used after the link stopped"
    );
    // The guest's MSS at MTU 1500; more than one segment each.
    let (gso_type, mss) = if v6 {
        (GSO_TCPV6, 1440)
    } else {
        (GSO_TCPV4, 1460)
    };
    for (h, len) in seen.iter() {
        assert_eq!((h.gso_type, h.flags), (gso_type, F_NEEDS_CSUM), "{h:?}");
        assert_eq!(h.gso_size, mss, "{h:?}");
        assert!(
            *len > usize::from(h.hdr_len + mss),
            "{len}-byte frame, {h:?}"
        );
    }
    let made = net.stack.tcp_counters().unwrap().gso_frames;
    assert!(
        made > at_switch as u64,
        "{made} super-segments made, {at_switch} taken by the link: none was cut by the stack"
    );
}
