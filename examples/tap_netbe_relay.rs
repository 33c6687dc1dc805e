//! Serves a tap device in a network namespace with one of caploop's net
//! back ends, the way a VMM's virtio-net device serves its guest: every
//! frame the tap gives goes to [`Netbe::send`], every frame the back end
//! has goes to the tap from its receive callback, all on one reactor, and
//! the process limits its descriptors and enters the sandbox before the
//! loop, as a VMM would (open mode for `slirp,...,open`, whose libslirp
//! connects out from this process; restricted otherwise). With `slirp,...` libslirp runs in this process;
//! with `slirp-helper,helper=PATH,...` in a sandboxed caploop-sandbox, so
//! the cost of that isolation can be measured (`benches/netns.sh`, peers
//! `inproc` and `helper`).
//!
//! ```text
//! ip netns add ns1
//! cargo build --release --example tap_netbe_relay
//! tap_netbe_relay /var/run/netns/ns1 tap0 'slirp,open' &
//! ip -n ns1 addr add 10.0.2.100/24 dev tap0; ip -n ns1 link set tap0 up
//! ip -n ns1 route add default via 10.0.2.2
//! ```
//!
//! The tap is made on a thread that joins the namespace; the process stays
//! in its own. SIGTERM or SIGINT ends it with a one-line summary on
//! stderr. Network namespaces are Linux's: elsewhere it says so and exits.

#[cfg(target_os = "linux")]
fn main() {
    if let Err(e) = linux::run() {
        eprintln!("tap_netbe_relay: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("tap_netbe_relay: network namespaces are Linux's");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;

    use caploop::net::tap::{TapBackend, TapDevice};
    use caploop::net::{NetBackend, Netbe};
    use caploop::sandbox::{Plan, Policy};
    use caploop::Reactor;

    /// The device loop's state: the tap (the guest's side) and the back
    /// end, with what went wrong or was dropped.
    struct Dev {
        tap: Option<TapBackend<Dev>>,
        net: Option<Netbe<Dev>>,
        buf: Vec<u8>,
        to_net: u64,
        to_tap: u64,
        tap_dropped: u64,
        failed: Option<String>,
    }

    /// Tap readable: its frames go to the back end, one `send` each.
    fn tap_to_net(r: &mut Reactor<Dev>, d: &mut Dev) {
        for _ in 0..64 {
            let (Some(tap), Some(net)) = (d.tap.as_mut(), d.net.as_mut()) else {
                return;
            };
            match tap.recv(&mut [IoSliceMut::new(&mut d.buf)]) {
                Ok(Some(n)) => match net.send(&[IoSlice::new(&d.buf[..n])]) {
                    Ok(_) => d.to_net += 1,
                    // A full back end drops, as a NIC would.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return stop(r, d, format!("back end send: {e}")),
                },
                Ok(None) => return,
                Err(e) => return stop(r, d, format!("tap read: {e}")),
            }
        }
    }

    /// The back end has frames: they go to the tap.
    fn net_to_tap(r: &mut Reactor<Dev>, d: &mut Dev) {
        loop {
            let (Some(tap), Some(net)) = (d.tap.as_mut(), d.net.as_mut()) else {
                return;
            };
            match net.recv(&mut [IoSliceMut::new(&mut d.buf)]) {
                Ok(Some(n)) => match tap.send(&[IoSlice::new(&d.buf[..n])]) {
                    Ok(_) => d.to_tap += 1,
                    Err(_) => d.tap_dropped += 1,
                },
                Ok(None) => return,
                Err(e) => return stop(r, d, format!("back end recv: {e}")),
            }
        }
    }

    fn stop(r: &mut Reactor<Dev>, d: &mut Dev, why: String) {
        d.failed.get_or_insert(why);
        r.stop();
    }

    pub fn run() -> Result<(), Box<dyn std::error::Error>> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let [netns, tap_name, backend] = &args[..] else {
            return Err("usage: tap_netbe_relay NETNS_PATH TAP BACKEND".into());
        };
        let ns = std::fs::File::open(netns).map_err(|e| format!("{netns}: {e}"))?;
        let name = tap_name.clone();
        let dev = std::thread::spawn(move || -> Result<TapDevice, String> {
            // SAFETY: setns takes a descriptor, open for the call, and a
            // flag; it moves only this thread, which ends once the tap is
            // made.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(format!("joining the namespace: {e}"));
            }
            TapDevice::open(&name).map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the namespace thread panicked")??;

        let mut r: Reactor<Dev> = Reactor::new()?;
        let mut net = Netbe::open(backend, &mut r, net_to_tap)?;
        net.set_cap(0, 0)?;
        net.recv_enable(&mut r)?;
        let mut tap = TapBackend::register(dev, &mut r, Box::new(tap_to_net))?;
        tap.recv_enable(&mut r)?;
        for sig in [libc::SIGTERM, libc::SIGINT] {
            r.add_signal(sig, |r, _, _| r.stop())?;
        }
        // libslirp in this process connects out for an open guest: open
        // mode then; the relay in front of a helper needs no network.
        let open = backend.starts_with("slirp,") && backend.split(',').any(|o| o == "open");
        let policy = if open {
            Policy::open()
        } else {
            Policy::restricted()
        };
        Plan::from_reactor(&r).apply_and_enter(&policy)?;
        eprintln!("tap_netbe_relay: serving {tap_name} with {backend}");

        let mut d = Dev {
            tap: Some(tap),
            net: Some(net),
            buf: vec![0u8; 65536 + 256],
            to_net: 0,
            to_tap: 0,
            tap_dropped: 0,
            failed: None,
        };
        r.run(&mut d)?;
        eprintln!(
            "tap_netbe_relay: {} frames to the back end, {} to the tap, {} the tap dropped",
            d.to_net, d.to_tap, d.tap_dropped
        );
        if let Some(net) = d.net.take() {
            net.close(&mut r)?;
        }
        if let Some(tap) = d.tap.take() {
            Box::new(tap).close(&mut r)?;
        }
        match d.failed {
            Some(why) => Err(why.into()),
            None => Ok(()),
        }
    }
}
