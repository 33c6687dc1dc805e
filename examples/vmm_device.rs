//! A VMM's network on caploop, two NICs side by side: NIC 0 with libslirp
//! in a separate, sandboxed helper process (`slirp-helper`: the isolation
//! that holds), NIC 1 with libslirp in this process (`slirp`). Each NIC's
//! guest is a tap in a network namespace (the namespace's kernel plays the
//! guest's network stack); a [`Relay`] moves every frame between the tap
//! and the NIC's back end, as the device's virtqueues would. Copy it out:
//! it needs nothing but this crate and `libc`.
//!
//! The order a VMM follows: open every back end (the helper is spawned
//! and has bound its forward when `open` returns), register everything on
//! one reactor, then limit every descriptor and enter the sandbox, and
//! only then run the loop. SIGTERM or SIGINT ends it.
//!
//! ```text
//! ip netns add vm0; ip netns add vm1
//! cargo run --example vmm_device -- --helper target/debug/caploop-sandbox \
//!     /var/run/netns/vm0 /var/run/netns/vm1
//! # prints "ready PORT0 PORT1": host forwards to port 80 of 10.0.2.15 in
//! # vm0 and vm1. Then, in each namespace:
//! ip -n vm0 addr add 10.0.2.15/24 dev tap0; ip -n vm0 link set tap0 up
//! ip -n vm0 route add default via 10.0.2.2
//! ip netns exec vm0 python3 -m http.server 80 &
//! curl http://127.0.0.1:PORT0/
//! ```
//!
//! A real device loop differs at the guest's end only: it takes frames
//! from its TX virtqueue and sends them with `Netbe::send` (its header
//! first: `Netbe::set_cap(MRG_RXBUF, 12)` adapts a 12-byte virtio-net
//! header for back ends that take none), and fills its RX virtqueue from
//! the receive callback with `Netbe::recv`. Network namespaces are
//! Linux's: elsewhere it says so and exits.
//!
//! [`Relay`]: caploop::net::relay::Relay

#[cfg(target_os = "linux")]
fn main() {
    if let Err(e) = linux::run() {
        eprintln!("vmm_device: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("vmm_device: the example's guests are taps in Linux network namespaces");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::Write;

    use caploop::net::relay::Relay;
    use caploop::net::tap::{TapBackend, TapDevice};
    use caploop::net::Netbe;
    use caploop::sandbox::{self, Plan, Policy};
    use caploop::{Reactor, Rights};

    pub fn run() -> Result<(), Box<dyn std::error::Error>> {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let helper = match args.iter().position(|a| a == "--helper") {
            Some(i) => {
                let path = args.get(i + 1).cloned().ok_or("--helper needs a path")?;
                args.drain(i..i + 2);
                path
            }
            None => "caploop-sandbox".into(),
        };
        let [ns0, ns1] = &args[..] else {
            return Err("usage: vmm_device [--helper PATH] NETNS0 NETNS1".into());
        };
        let free = || -> std::io::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let ports = [free()?, free()?];
        let nics = [
            (
                "nic0/helper",
                ns0,
                format!(
                    "slirp-helper,helper={helper},hostfwd=tcp:127.0.0.1:{}-:80,vmname=nic0",
                    ports[0]
                ),
            ),
            (
                "nic1/in-process",
                ns1,
                format!("slirp,hostfwd=tcp:127.0.0.1:{}-:80", ports[1]),
            ),
        ];

        let mut reactor: Reactor<()> = Reactor::new()?;
        let mut relays = Vec::new();
        for (label, netns, backend) in &nics {
            let tap = TapDevice::open_in_netns(netns.as_ref(), "tap0")?;
            let relay = Relay::new(
                &mut reactor,
                |r, cb| Ok(Netbe::new(Box::new(TapBackend::register(tap, r, cb)?))),
                |r, cb| Netbe::open(backend, r, cb),
            )?;
            if let Some(pid) = relay.helper_pid() {
                println!("{label}: helper pid {pid}");
            }
            relays.push((label, relay));
        }
        for sig in [libc::SIGTERM, libc::SIGINT] {
            reactor.add_signal(sig, |r, _, _| r.stop())?;
        }

        // Every descriptor limited, then no ambient authority: the helper
        // runs in its own sandbox, the in-process stack's forward is bound.
        let mut plan = Plan::from_reactor(&reactor);
        plan.add(&std::io::stdout(), Rights::WRITE_ONLY, "stdout")
            .add(&std::io::stderr(), Rights::WRITE_ONLY, "stderr");
        let report = plan.apply_and_enter(&Policy::restricted())?;
        println!(
            "sandbox: {:?} mode, {} descriptors limited, seccomp {:?}",
            report.mode,
            report.limited.len(),
            sandbox::status().seccomp
        );
        println!("ready {} {}", ports[0], ports[1]);
        std::io::stdout().flush()?;

        reactor.run(&mut ())?;

        for (label, relay) in relays {
            let c = relay.counts();
            println!(
                "{label}: {} frames from the guest, {} to it, {} dropped{}",
                c.a_to_b,
                c.b_to_a,
                c.dropped,
                relay
                    .failure()
                    .map(|f| format!("; stopped: {f}"))
                    .unwrap_or_default()
            );
            relay.close(&mut reactor)?;
        }
        Ok(())
    }
}
