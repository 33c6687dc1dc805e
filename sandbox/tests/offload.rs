//! The slirp4netns front end with tap offloads (the default): the tap is
//! opened with a virtio-net header, the namespace's kernel hands over
//! partial checksums and TCP super-segments of up to 64 KiB, and the
//! helper finishes the checksums and gives libslirp each IPv4
//! super-segment whole (IPv6 ones cut to its MTU); toward the namespace, a
//! round's TCP segments of one flow go out merged as one GSO frame, or,
//! from the own TCP path over IPv4, built as one by smoltcp. Each test
//! carries 4 MiB each way byte-exact (SHA-256) and reads
//! the helper's counters on exit to see which path the bytes took:
//!
//! - IPv4 with data packets dropped in the namespace (nftables): every
//!   20th super-segment it sends (so the ones after each loss arrive out
//!   of order and wait in libslirp's reassembly queue) and one merged
//!   frame it receives (libslirp, a Reno sender without SACK, recovers
//!   a lost run of segments one timeout at a time: more would only make
//!   the test long); super-segments in and merged frames out counted;
//! - IPv6 with the same losses: the namespace's TCP/IPv6 super-segments
//!   (TSO6) are cut to libslirp's MTU in front of it, libslirp's IPv6
//!   segments go out merged (`GSO_TCPV6`);
//! - offloads turned off inside the namespace (`ethtool -K tap0 tx off
//!   tso off`): the header stays, whole frames only;
//! - `--no-offload`: a plain tap.
//!
//! (This kernel has no `sch_netem`, so reordering is not injected beyond
//! what loss causes.) Needs root, `ip`, `nft`, `ethtool`, `python3`.

#![cfg(target_os = "linux")]

mod common;

use std::net::TcpListener;

use common::s4nn::*;

const LEN: usize = 4 << 20;

/// 4 MiB each way through 10.0.2.2, then the helper's log.
fn stream_v4_and_finish(ns: &Netns, h: Started) -> String {
    stream_each_way(
        ns,
        "10.0.2.2",
        TcpListener::bind("127.0.0.1:0").unwrap(),
        LEN,
    );
    finish(h)
}

/// A count from the link's "in" part of the helper's exit line: "N
/// offloaded" (TSO super-segments from the tap) or "N merged" (runs of
/// whole frames merged before libslirp).
fn link_in(log: &str, what: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(": link in "))
        .unwrap_or_else(|| panic!("no link counters in the log: {log}"));
    let part = line.split("), out").next().unwrap();
    let at = part
        .find(&format!(" {what}"))
        .unwrap_or_else(|| panic!("no {what} count: {line}"));
    part[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The counter `field` from the helper's exit lines (`field: N`), if
/// they have it.
fn counter(log: &str, field: &str) -> Option<u64> {
    let at = log.find(&format!("{field}: "))?;
    log[at + field.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The stack's `segments_in` counter.
fn segments_in(log: &str) -> u64 {
    counter(log, "segments_in").unwrap_or_else(|| panic!("no counters in the log: {log}"))
}

/// How many frames toward the namespace carried merged segments.
fn merged(log: &str) -> u64 {
    let out = log
        .split("), out ")
        .nth(1)
        .unwrap_or_else(|| panic!("no link counters in the log: {log}"));
    let at = out.find(" merged").unwrap();
    out[..at].rsplit('(').next().unwrap().parse().unwrap()
}

/// Super-segments came from the tap into libslirp, and merged frames went
/// to the tap.
fn assert_offloaded_both_ways(log: &str) {
    assert!(log.contains("with offloads"), "{log}");
    assert!(
        link_in(log, "offloaded") > 0,
        "no TSO super-segment came from the tap: {log}"
    );
    assert!(
        segments_in(log) > 0,
        "libslirp took no super-segment: {log}"
    );
    assert!(
        merged(log) + own_gso_frames(log) > 0,
        "no super-segment went toward the namespace: {log}"
    );
}

/// Super-segments the own TCP path built for the tap (IPv4); 0 without
/// the own path.
fn own_gso_frames(log: &str) -> u64 {
    counter(log, "gso_frames").unwrap_or(0)
}

#[test]
fn offloads_carry_4_mib_each_way_over_ipv4_with_packets_lost() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let h = helper_logging(&ns, &["-c"]);
    lose_packets(&ns, 100_000);
    let log = stream_v4_and_finish(&ns, h);
    assert_offloaded_both_ways(&log);
    assert_lost(&ns);
}

/// The same with libslirp's TCP: the checksums the own path leaves
/// partial (super-segments at MTU 1500, 64 KiB frames at 65520) are
/// finished before libslirp gets them (it verifies them), and every byte
/// arrives.
#[test]
fn offloads_carry_4_mib_each_way_over_ipv4_to_libslirp_with_packets_lost() {
    if !is_root() {
        return;
    }
    for mtu in ["1500", "65520"] {
        let ns = Netns::new();
        let h = helper_logging(&ns, &["-c", "--tcp=slirp", "--mtu", mtu]);
        lose_packets(&ns, 100_000);
        let log = stream_v4_and_finish(&ns, h);
        assert_eq!(own_gso_frames(&log), 0, "{log}");
        assert!(link_in(&log, "frames") > 0, "MTU {mtu}: {log}");
        if mtu == "1500" {
            assert_offloaded_both_ways(&log);
        }
        assert_lost(&ns);
    }
}

/// TSO6: the namespace's IPv6 super-segments are cut to libslirp's MTU
/// in front of it (its IPv6 input refuses more), and libslirp's IPv6
/// segments go to the namespace merged (`GSO_TCPV6`), with losses.
#[test]
fn offloads_carry_4_mib_each_way_over_ipv6_with_packets_lost() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    no_dad(&ns);
    let h = helper_logging(&ns, &["-c", "-6"]);
    wait_slaac(&ns);
    lose_packets(&ns, 100_000);
    stream_each_way(&ns, "fd00::2", TcpListener::bind("[::1]:0").unwrap(), LEN);
    let log = finish(h);
    assert_offloaded_both_ways(&log);
    assert_lost(&ns);
}

#[test]
fn offloads_turned_off_in_the_namespace_fall_back_to_whole_frames() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let h = helper_logging(&ns, &["-c"]);
    let out = ns.exec(&["ethtool", "-K", "tap0", "tx", "off", "tso", "off"]);
    assert!(
        out.status.success(),
        "ethtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = stream_v4_and_finish(&ns, h);
    assert!(log.contains("with offloads"), "{log}");
    assert_eq!(link_in(&log, "offloaded"), 0, "{log}");
    // Whole frames, merged before libslirp all the same.
    assert!(link_in(&log, "merged") > 0, "{log}");
    assert!(segments_in(&log) > 0, "{log}");
}

#[test]
fn no_offload_is_a_plain_tap() {
    if !is_root() {
        return;
    }
    let ns = Netns::new();
    let h = helper_logging(&ns, &["-c", "--no-offload"]);
    let log = stream_v4_and_finish(&ns, h);
    assert!(!log.contains("with offloads"), "{log}");
    assert_eq!(link_in(&log, "offloaded"), 0, "{log}");
    assert!(link_in(&log, "merged") > 0, "{log}");
}
