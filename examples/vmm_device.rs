//! A VMM author's virtio-net device loop on caploop, with two NICs side by
//! side: one backed by libslirp in a separate, sandboxed helper process
//! (`slirp-helper`: the isolation that holds), one by libslirp in this
//! process (`slirp`). Both sit behind [`Netbe`], which adapts the
//! front end's 12-byte virtio-net header (`MRG_RXBUF`) to back ends that
//! take none; the "guests" are small TCP/IP stacks (smoltcp) serving HTTP
//! on port 80, reached through each back end's host forward.
//!
//! The order a VMM follows: open every back end (the helper is spawned
//! here), register everything on one reactor, then limit every descriptor
//! and enter the sandbox, and only then run the device loop.
//!
//! ```text
//! cargo run --example vmm_device -- --helper target/debug/caploop-sandbox
//! # prints "ready PORT0 PORT1"; then: curl http://127.0.0.1:PORT0/
//! ```

#[path = "../tests/common/guest.rs"]
#[allow(dead_code)]
mod guest;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use caploop::net::Netbe;
use caploop::sandbox::{self, Plan, Policy};
use caploop::{Reactor, Rights};
use guest::Guest;
use smoltcp::iface::SocketHandle;

/// The virtio-net header the front end puts before every frame.
const HDR: usize = 12;
/// `VIRTIO_NET_F_MRG_RXBUF`: a front-end feature, not passed to back ends.
const MRG_RXBUF: u64 = 1 << 15;

/// One NIC: its back end, the guest behind it, and what the guest served.
struct Nic {
    label: &'static str,
    net: Option<Netbe<Vm>>,
    /// Frames for the guest, header stripped (the virtqueue's job).
    to_guest: Rc<RefCell<VecDeque<Vec<u8>>>>,
    guest: Guest,
    http: SocketHandle,
    served: u32,
}

struct Vm {
    nics: Vec<Nic>,
}

/// The receive callback of NIC `i`: what a virtio-net device does when its
/// back end has frames: fill RX descriptors (here: 2 KiB buffers, header
/// first) until the back end is empty.
fn rx(i: usize) -> impl FnMut(&mut Reactor<Vm>, &mut Vm) {
    move |_, vm| {
        let nic = &mut vm.nics[i];
        let Some(net) = nic.net.as_mut() else { return };
        let mut desc = [0u8; 2048];
        loop {
            match net.recv(&mut [IoSliceMut::new(&mut desc)]) {
                Ok(Some(n)) => nic.to_guest.borrow_mut().push_back(desc[HDR..n].to_vec()),
                Ok(None) => return,
                Err(e) => {
                    eprintln!("{}: receiving: {e}", nic.label);
                    // A frame too long for our buffers: discard it.
                    let _ = net.recv_discard();
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let helper = match args.iter().position(|a| a == "--helper") {
        Some(i) => args.get(i + 1).cloned().ok_or("--helper needs a path")?,
        None => "caploop-sandbox".into(),
    };
    let free = || -> std::io::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let ports = [free()?, free()?];

    let mut reactor: Reactor<Vm> = Reactor::new()?;
    let names = [
        (
            "nic0/helper",
            format!(
                "slirp-helper,helper={helper},hostfwd=tcp:127.0.0.1:{}-:80",
                ports[0]
            ),
        ),
        (
            "nic1/in-process",
            format!("slirp,hostfwd=tcp:127.0.0.1:{}-:80", ports[1]),
        ),
    ];
    let mut nics = Vec::new();
    for (i, (label, name)) in names.iter().enumerate() {
        let mut net = Netbe::open(name, &mut reactor, rx(i))?;
        // The front end negotiated MRG_RXBUF: a 12-byte header, which
        // Netbe strips and writes for these header-less back ends.
        net.set_cap(MRG_RXBUF, HDR)?;
        net.recv_enable(&mut reactor)?;
        let to_guest: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
        let mut guest = Guest::new(to_guest.clone(), 1500);
        let http = guest.tcp_listen(80, 16 * 1024);
        nics.push(Nic {
            label,
            net: Some(net),
            to_guest,
            guest,
            http,
            served: 0,
        });
    }

    // Every descriptor limited, then no ambient authority: the helper is
    // already running, the in-process stack's forward is bound.
    let mut plan = Plan::from_reactor(&reactor);
    plan.add(&std::io::stdout(), Rights::WRITE_ONLY, "stdout")
        .add(&std::io::stderr(), Rights::WRITE_ONLY, "stderr");
    let report = plan.apply_and_enter(&Policy::restricted())?;
    let st = sandbox::status();
    println!(
        "sandbox: {:?} mode, {} descriptors limited, seccomp {:?}",
        report.mode,
        report.limited.len(),
        st.seccomp
    );
    println!("ready {} {}", ports[0], ports[1]);
    std::io::stdout().flush()?;

    let mut vm = Vm { nics };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until every NIC served a request and every answer left its guest.
    let done = |vm: &mut Vm| {
        vm.nics.iter_mut().all(|n| {
            let s = n.guest.tcp(n.http);
            n.served > 0 && s.send_queue() == 0 && !s.is_active()
        })
    };
    while !done(&mut vm) && Instant::now() < deadline {
        reactor.run_once(Some(Duration::from_millis(2)), &mut vm)?;
        for nic in &mut vm.nics {
            step(nic);
        }
    }
    for nic in &mut vm.nics {
        println!("{}: served {}", nic.label, nic.served);
        if let Some(net) = nic.net.take() {
            net.close(&mut reactor)?;
        }
    }
    if vm.nics.iter().any(|n| n.served == 0) {
        return Err("not every NIC served a request within 30 s".into());
    }
    Ok(())
}

/// One device round for `nic`: the guest runs, its frames go out with the
/// front end's header, and its HTTP server answers.
fn step(nic: &mut Nic) {
    nic.guest.poll();
    let frames: Vec<Vec<u8>> = nic.guest.wire.tx.drain(..).collect();
    if let Some(net) = nic.net.as_mut() {
        for f in frames {
            // A TX descriptor chain: the header, then the frame.
            let hdr = [0u8; HDR];
            if let Err(e) = net.send(&[IoSlice::new(&hdr), IoSlice::new(&f)]) {
                eprintln!("{}: sending: {e}", nic.label);
            }
        }
    }
    let s = nic.guest.tcp(nic.http);
    if s.can_recv() {
        let mut req = Vec::new();
        let _ = s.recv(|b| {
            req.extend_from_slice(b);
            (b.len(), ())
        });
        if req.starts_with(b"GET ") {
            let body = format!("hello from {}\n", nic.label);
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.send_slice(resp.as_bytes());
            s.close();
            nic.served += 1;
        }
    }
    if !s.is_open() {
        // Listen again for the next request.
        let _ = s.listen(80);
    }
}
