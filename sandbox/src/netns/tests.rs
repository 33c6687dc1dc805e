//! The netns tests: pure parsing, and as root real namespaces and taps.

use super::ifconfig::{ifreq, parse_mac};
use super::target::namespace_fds;
use super::*;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: this test needs root (namespaces, /dev/net/tun)");
            return;
        }
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
struct NamedNetns {
    name: String,
}

impl NamedNetns {
    fn new() -> NamedNetns {
        let name = format!(
            "caploop-nt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run(&["ip", "netns", "add", &name]);
        NamedNetns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A `sleep` in new namespaces made by `unshare`, killed on drop.
struct NsProcess {
    child: Child,
}

impl NsProcess {
    fn spawn(unshare_args: &[&str]) -> NsProcess {
        let child = Command::new("unshare")
            .args(unshare_args)
            .args(["sleep", "30"])
            .stdin(Stdio::null())
            .spawn()
            .expect("running unshare");
        let p = NsProcess { child };
        // unshare makes the namespaces, then execs sleep: wait for that.
        let deadline = Instant::now() + Duration::from_secs(10);
        let comm = format!("/proc/{}/comm", p.pid());
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(Instant::now() < deadline, "unshare did not exec sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn nsenter(&self, ns: &[&str], args: &[&str]) -> String {
        let pid = self.pid().to_string();
        let mut all = vec!["nsenter", "-t", &pid];
        all.extend_from_slice(ns);
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn cfg(mtu: u32, mac: Option<[u8; 6]>) -> Configure {
    Configure {
        addr: Ipv4Addr::new(10, 0, 2, 100),
        prefix: 24,
        gateway: Ipv4Addr::new(10, 0, 2, 2),
        mtu,
        mac,
    }
}

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// Checks `ip -j addr show` / `ip -j route` output for what `-c` sets.
fn check_configured(addr_json: &str, lo_json: &str, route_json: &str, mtu: u64, mac: &str) {
    let addr: serde_json::Value = serde_json::from_str(addr_json).expect("ip -j addr");
    let link = &addr[0];
    assert_eq!(link["ifname"], "tap0", "{addr_json}");
    assert_eq!(link["mtu"].as_u64(), Some(mtu), "{addr_json}");
    assert_eq!(link["address"], mac, "{addr_json}");
    let flags: Vec<&str> = link["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(flags.contains(&"UP"), "tap0 not up: {addr_json}");
    let v4: Vec<&serde_json::Value> = link["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(v4.len(), 1, "{addr_json}");
    assert_eq!(v4[0]["local"], "10.0.2.100", "{addr_json}");
    assert_eq!(v4[0]["prefixlen"].as_u64(), Some(24), "{addr_json}");

    let lo: serde_json::Value = serde_json::from_str(lo_json).expect("ip -j link lo");
    let lo_flags = lo[0]["flags"].as_array().expect("lo flags");
    assert!(lo_flags.iter().any(|f| f == "UP"), "lo not up: {lo_json}");

    let routes: serde_json::Value = serde_json::from_str(route_json).expect("ip -j route");
    let default = routes
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["dst"] == "default")
        .unwrap_or_else(|| panic!("no default route: {route_json}"));
    assert_eq!(default["gateway"], "10.0.2.2", "{route_json}");
    assert_eq!(default["dev"], "tap0", "{route_json}");
}

/// The interface name a tap descriptor is attached to (TUNGETIFF).
fn tap_name(fd: BorrowedFd<'_>) -> String {
    let mut req = ifreq("x").unwrap();
    req.ifr_name = [0; libc::IFNAMSIZ];
    // SAFETY: TUNGETIFF fills one `ifreq`, which `req` is; `fd` is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) };
    assert!(rc >= 0, "TUNGETIFF: {}", io::Error::last_os_error());
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// Sends an ARP request for 10.0.2.100 from 10.0.2.2 into the tap and
/// checks the kernel's reply, byte by byte.
fn check_arp(fd: BorrowedFd<'_>, tap_mac: [u8; 6]) {
    let mut req = Vec::new();
    req.extend_from_slice(&[0xff; 6]);
    req.extend_from_slice(&PEER_MAC);
    req.extend_from_slice(&[0x08, 0x06]); // ARP
    req.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    req.extend_from_slice(&PEER_MAC);
    req.extend_from_slice(&[10, 0, 2, 2]);
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&[10, 0, 2, 100]);
    let n = nix::unistd::write(fd, &req).expect("writing the ARP request");
    assert_eq!(n, req.len());

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no ARP reply within 5 s");
        let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut pfd, ms) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll: {e}"),
        }
        let len = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => continue,
            Err(e) => panic!("reading the tap: {e}"),
        };
        let f = &buf[..len];
        // Skip IPv6 router solicitations, MLD and the like.
        if len < 42 || f[12..14] != [0x08, 0x06] || f[20..22] != [0, 2] {
            continue;
        }
        assert_eq!(&f[0..6], &PEER_MAC, "reply's destination");
        assert_eq!(&f[6..12], &tap_mac, "reply's source");
        assert_eq!(&f[14..20], &[0, 1, 0x08, 0x00, 6, 4], "ARP header");
        assert_eq!(&f[22..28], &tap_mac, "sender MAC");
        assert_eq!(&f[28..32], &[10, 0, 2, 100], "sender IP");
        assert_eq!(&f[32..38], &PEER_MAC, "target MAC");
        assert_eq!(&f[38..42], &[10, 0, 2, 2], "target IP");
        return;
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ----- pure -----

#[test]
fn parse_targets() {
    assert_eq!(Target::parse("1234", None).unwrap(), Target::Pid(1234));
    assert_eq!(
        Target::parse("1234", Some("pid")).unwrap(),
        Target::Pid(1234)
    );
    assert_eq!(
        Target::parse("/run/netns/x", Some("path")).unwrap(),
        Target::Path("/run/netns/x".into())
    );
    for bad in ["/run/netns/x", "abc", "0", "-5", "", "12a"] {
        let e = Target::parse(bad, None).unwrap_err().to_string();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
        assert!(e.contains("not a PID"), "{e}");
    }
    let e = Target::parse("1", Some("bess")).unwrap_err().to_string();
    assert!(e.contains("\"bess\""), "{e}");
    assert!(Target::parse("", Some("path")).is_err());
}

#[test]
fn parse_macs() {
    assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), MAC);
    assert_eq!(
        parse_mac("52:55:0A:00:02:02").unwrap(),
        [0x52, 0x55, 0x0a, 0, 2, 2]
    );
    for (bad, why) in [
        ("02:00:00:00:00", "fewer than six"),
        ("02:00:00:00:00:01:02", "more than six"),
        ("02:00:00:00:00:1", "two hex digits"),
        ("02:00:00:00:00:0g", "two hex digits"),
        ("02-00-00-00-00-01", "two hex digits"),
        ("", "two hex digits"),
        ("01:00:5e:00:00:01", "multicast"),
        ("00:00:00:00:00:00", "zeroes"),
    ] {
        let e = parse_mac(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn netmasks() {
    let mut c = cfg(1500, None);
    for (p, m) in [
        (0, "0.0.0.0"),
        (8, "255.0.0.0"),
        (24, "255.255.255.0"),
        (25, "255.255.255.128"),
        (32, "255.255.255.255"),
    ] {
        c.prefix = p;
        assert_eq!(c.netmask().to_string(), m);
    }
    c.prefix = 33;
    assert!(c.check().unwrap_err().to_string().contains("33"));
}

// ----- as root -----

fn path_target_configured(mtu: u32) {
    let ns = NamedNetns::new();
    let fd = open_tap(
        &Target::Path(ns.path()),
        None,
        "tap0",
        Some(&cfg(mtu, Some(MAC))),
    )
    .expect("open_tap");
    assert_eq!(tap_name(fd.as_fd()), "tap0");
    check_configured(
        &ns.ip(&["-j", "addr", "show", "tap0"]),
        &ns.ip(&["-j", "link", "show", "lo"]),
        &ns.ip(&["-j", "route"]),
        u64::from(mtu),
        "02:00:00:00:00:01",
    );
    check_arp(fd.as_fd(), MAC);
}

#[test]
fn path_target_configures_mtu_1500() {
    require_root!();
    path_target_configured(1500);
}

#[test]
fn path_target_configures_mtu_65520() {
    require_root!();
    path_target_configured(65520);
}

#[test]
fn path_target_random_mac() {
    require_root!();
    let ns = NamedNetns::new();
    let fd = open_tap(
        &Target::Path(ns.path()),
        None,
        "tap0",
        Some(&cfg(1500, None)),
    )
    .expect("open_tap");
    let addr = ns.ip(&["-j", "addr", "show", "tap0"]);
    let v: serde_json::Value = serde_json::from_str(&addr).unwrap();
    let mac = parse_mac(v[0]["address"].as_str().unwrap()).expect("the kernel's MAC");
    check_configured(
        &addr,
        &ns.ip(&["-j", "link", "show", "lo"]),
        &ns.ip(&["-j", "route"]),
        1500,
        &mac_text(mac),
    );
    check_arp(fd.as_fd(), mac);
}

#[test]
fn path_target_attaches_to_existing_tap() {
    require_root!();
    let ns = NamedNetns::new();
    ns.ip(&["tuntap", "add", "tap0", "mode", "tap"]);
    let before = ns.ip(&["-j", "link", "show", "tap0"]);
    let fd = open_tap(&Target::Path(ns.path()), None, "tap0", None).expect("open_tap");
    assert_eq!(tap_name(fd.as_fd()), "tap0");
    let after = ns.ip(&["-j", "link", "show", "tap0"]);
    let ifindex =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()[0]["ifindex"].as_u64();
    assert_eq!(ifindex(&before), ifindex(&after), "a new tap0 was made");
    // Not configured: no IPv4 address, still down.
    let addr = ns.ip(&["-j", "-4", "addr", "show", "tap0"]);
    assert!(!addr.contains("10.0.2.100"), "{addr}");
    // Only lo and tap0 there.
    let links: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link"])).unwrap();
    assert_eq!(links.as_array().unwrap().len(), 2, "{links}");
    // The tap is persistent: it outlives the descriptor.
    drop(fd);
    ns.ip(&["link", "show", "tap0"]);
}

#[test]
fn path_target_makes_tap_without_configure() {
    require_root!();
    let ns = NamedNetns::new();
    let fd = open_tap(&Target::Path(ns.path()), None, "tap7", None).expect("open_tap");
    assert_eq!(tap_name(fd.as_fd()), "tap7");
    ns.ip(&["link", "show", "tap7"]);
    // Made by the open, not persistent: it goes with the descriptor (once
    // any copy a concurrently forked test child holds is gone too).
    drop(fd);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut links = ns.ip(&["-j", "link"]);
    while links.contains("tap7") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        links = ns.ip(&["-j", "link"]);
    }
    assert!(!links.contains("tap7"), "{links}");
}

#[test]
fn pid_target_net_only() {
    require_root!();
    let p = NsProcess::spawn(&["--net"]);
    let target = Target::Pid(p.pid());
    let fds = namespace_fds(&target, None).expect("namespace fds");
    assert!(fds.user.is_none(), "same user namespace: nothing to join");
    drop(fds);
    let fd = open_tap(&target, None, "tap0", Some(&cfg(1500, Some(MAC)))).expect("open_tap");
    check_configured(
        &p.nsenter(&["-n"], &["ip", "-j", "addr", "show", "tap0"]),
        &p.nsenter(&["-n"], &["ip", "-j", "link", "show", "lo"]),
        &p.nsenter(&["-n"], &["ip", "-j", "route"]),
        1500,
        "02:00:00:00:00:01",
    );
    check_arp(fd.as_fd(), MAC);
}

/// Runs `f` in a forked, single-threaded child of the test process and
/// returns what it printed into a pipe, or panics with it.
fn in_forked_child(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    // Close-on-exec, so that no process another test spawns meanwhile
    // keeps the write end open.
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    // SAFETY: the child runs `f` (which forks again and runs `ip`-free
    // code), writes to a pipe and `_exit`s; it never returns into the
    // test harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(r);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("panicked".into()));
            let (code, text) = match res {
                Ok(t) => (0, t),
                Err(t) => (1, t),
            };
            let _ = nix::unistd::write(&w, text.as_bytes());
            // SAFETY: ends the forked test child at once.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut out = Vec::new();
            let mut file = std::fs::File::from(r);
            std::io::Read::read_to_end(&mut file, &mut out).unwrap();
            let st = waitpid(child, None).unwrap();
            let text = String::from_utf8_lossy(&out).into_owned();
            match st {
                WaitStatus::Exited(_, 0) => Ok(text),
                _ => Err(format!("{st:?}: {text}")),
            }
        }
    }
}

#[test]
fn pid_target_in_user_namespace_like_rootlesskit() {
    require_root!();
    let p = NsProcess::spawn(&["--user", "--map-root-user", "--net"]);
    // rootlesskit pre-creates tap0 from inside the child's namespaces.
    p.nsenter(
        &["-U", "-n"],
        &["ip", "tuntap", "add", "tap0", "mode", "tap"],
    );
    let target = Target::Pid(p.pid());
    let fds = namespace_fds(&target, None).expect("namespace fds");
    assert!(
        fds.user.is_some(),
        "another user namespace: it must be joined"
    );
    drop(fds);

    let t = target.clone();
    let res = in_forked_child(move || {
        let fd =
            open_tap(&t, None, "tap0", Some(&cfg(65520, Some(MAC)))).map_err(|e| e.to_string())?;
        Ok(tap_name(fd.as_fd()))
    });
    assert_eq!(res, Ok("tap0".to_owned()));
    // The tap0 rootlesskit made, now configured (the forked child's
    // descriptor is gone, the persistent tap stays, so no ARP here).
    let addr = p.nsenter(&["-n"], &["ip", "-j", "addr", "show", "tap0"]);
    assert!(addr.contains("\"local\":\"10.0.2.100\""), "{addr}");
    assert!(addr.contains("\"mtu\":65520"), "{addr}");
    let route = p.nsenter(&["-n"], &["ip", "-j", "route"]);
    assert!(route.contains("\"gateway\":\"10.0.2.2\""), "{route}");

    // And straight from this multithreaded test process: the forked
    // child is single-threaded, so it can join the user namespace too;
    // here with --userns-path and a path target, on a second tap.
    p.nsenter(
        &["-U", "-n"],
        &["ip", "tuntap", "add", "tap1", "mode", "tap"],
    );
    let userns = PathBuf::from(format!("/proc/{}/ns/user", p.pid()));
    let netns = Target::Path(PathBuf::from(format!("/proc/{}/ns/net", p.pid())));
    let fd = open_tap(&netns, Some(&userns), "tap1", None).expect("open_tap with userns");
    assert_eq!(tap_name(fd.as_fd()), "tap1");
}

#[test]
fn errors_name_the_value() {
    require_root!();
    // A PID that does not exist (beyond any pid_max).
    let e = open_tap(&Target::Pid(i32::MAX), None, "tap0", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2147483647"), "{e}");
    assert!(e.contains("the process does not exist"), "{e}");

    // A path that does not exist.
    let e = open_tap(
        &Target::Path("/nonexistent/caploop-netns".into()),
        None,
        "tap0",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/caploop-netns"), "{e}");

    // A file that is no namespace.
    let file = std::env::temp_dir().join(format!("caploop-nt-file-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let e = open_tap(&Target::Path(file.clone()), None, "tap0", None)
        .unwrap_err()
        .to_string();
    let _ = std::fs::remove_file(&file);
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(
        e.contains("is not a network namespace: it is not a namespace file"),
        "{e}"
    );

    // A namespace of the wrong kind, both ways round.
    let e = open_tap(
        &Target::Path("/proc/self/ns/user".into()),
        None,
        "tap0",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/proc/self/ns/user is not a network namespace: it is a user namespace"),
        "{e}"
    );
    let ns = NamedNetns::new();
    let e = open_tap(&Target::Path(ns.path()), Some(&ns.path()), "tap0", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not a user namespace: it is a network namespace"),
        "{e}"
    );

    // A bad tap name: reported by the child, naming it and the target.
    let e = open_tap(&Target::Path(ns.path()), None, "bad/name", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad/name"), "{e}");
    assert!(e.contains(&ns.name), "{e}");

    // A gateway off the network: the route fails, and says so.
    let mut c = cfg(1500, None);
    c.gateway = Ipv4Addr::new(192, 168, 77, 1);
    let e = open_tap(&Target::Path(ns.path()), None, "tap0", Some(&c))
        .unwrap_err()
        .to_string();
    assert!(e.contains("192.168.77.1") && e.contains("SIOCADDRT"), "{e}");

    // A bad MAC.
    let e = parse_mac("zz:00:00:00:00:01").unwrap_err().to_string();
    assert!(e.contains("\"zz:00:00:00:00:01\""), "{e}");
}
