//! Serves a tap device in a network namespace with one of caploop's net
//! back ends, the way a VMM's virtio-net device serves its guest: every
//! frame the tap gives goes to the back end, every frame the back end has
//! goes to the tap (a [`Relay`]), all on one reactor, and the process
//! limits its descriptors and enters the sandbox before the loop, as a
//! VMM would (open mode for `slirp,...,open`, whose libslirp connects out
//! from this process; restricted otherwise). With `slirp,...` libslirp
//! runs in this process; with `slirp-helper,helper=PATH,...` in a
//! sandboxed caploop-sandbox, so the cost of that isolation can be
//! measured (`benches/netns.sh`, peers `inproc` and `helper`).
//!
//! ```text
//! ip netns add ns1
//! cargo build --release --example tap_netbe_relay
//! tap_netbe_relay /var/run/netns/ns1 tap0 'slirp,open' &
//! ip -n ns1 addr add 10.0.2.100/24 dev tap0; ip -n ns1 link set tap0 up
//! ip -n ns1 route add default via 10.0.2.2
//! ```
//!
//! The tap is made by a thread that joins the namespace
//! ([`TapDevice::open_in_netns`]); the process stays in its own. SIGTERM
//! or SIGINT ends it with a one-line summary on stderr. Network
//! namespaces are Linux's: elsewhere it says so and exits.
//!
//! [`Relay`]: caploop::net::relay::Relay
//! [`TapDevice::open_in_netns`]: caploop::net::tap::TapDevice

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
    use caploop::net::relay::Relay;
    use caploop::net::tap::{TapBackend, TapDevice};
    use caploop::net::Netbe;
    use caploop::sandbox::{Plan, Policy};
    use caploop::Reactor;

    pub fn run() -> Result<(), Box<dyn std::error::Error>> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let [netns, tap_name, backend] = &args[..] else {
            return Err("usage: tap_netbe_relay NETNS_PATH TAP BACKEND".into());
        };
        let dev = TapDevice::open_in_netns(netns.as_ref(), tap_name)?;
        let mut r: Reactor<()> = Reactor::new()?;
        let relay = Relay::new(
            &mut r,
            |r, cb| Ok(Netbe::new(Box::new(TapBackend::register(dev, r, cb)?))),
            |r, cb| Netbe::open(backend, r, cb),
        )?;
        relay.stop_on_failure(true);
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

        r.run(&mut ())?;
        let c = relay.counts();
        eprintln!(
            "tap_netbe_relay: {} frames to the back end, {} to the tap, {} dropped",
            c.a_to_b, c.b_to_a, c.dropped
        );
        let failure = relay.failure();
        relay.close(&mut r)?;
        match failure {
            Some(why) => Err(why.into()),
            None => Ok(()),
        }
    }
}
