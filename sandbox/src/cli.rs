//! The command line: one parser for every front end.
//!
//! - bhyve: `-S FD` (bhyve runs `/usr/libexec/bhyve-slirp-helper -S <fd>`);
//! - QEMU: `--qemu-stream PATH` (the default, at a default path), or
//!   `--qemu-dgram PATH` (`-netdev dgram`);
//! - vhost-user-net (Linux): `--vhost-user PATH`;
//! - slirp4netns: `[OPTION]... PID|PATH [TAPNAME]`, exactly as slirp4netns
//!   1.2 takes it, chosen by the positional arguments.
//!
//! rootlesskit and Podman read `--help` to decide which flags to pass, so the
//! help text names every slirp4netns option. A bad flag or value is reported
//! in one line that names it.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// The help text's opening.
const ABOUT: &str = "Sandboxed user-mode networking (libslirp on caploop) for one VM or one \
network namespace.\n\n\
Front ends (one per invocation):\n  \
  caploop-sandbox [OPTIONS] --qemu-stream PATH   QEMU: -netdev stream,server=off,addr.type=unix,addr.path=PATH\n  \
  caploop-sandbox [OPTIONS] --qemu-dgram PATH    QEMU: -netdev dgram,local.type=unix,local.path=Q,remote.type=unix,remote.path=PATH\n  \
  caploop-sandbox [OPTIONS] --vhost-user PATH    vhost-user-net (Linux): -chardev socket,id=c,path=PATH -netdev vhost-user,chardev=c\n  \
  caploop-sandbox [OPTIONS] -S FD                bhyve: the SOCK_SEQPACKET socket bhyve passes\n  \
  caploop-sandbox [OPTIONS] PID|PATH [TAPNAME]   slirp4netns: a tap in that network namespace\n\n\
With no front end, it serves QEMU on $XDG_RUNTIME_DIR/caploop-sandbox.sock (or /tmp/...).";

/// Every option of every front end.
#[derive(Debug, Parser)]
#[command(
    name = "caploop-sandbox",
    version,
    about = ABOUT,
    disable_version_flag = true,
    after_help = "Logging: set RUST_LOG (error, warn, info, debug) to log to stderr; without it \
the helper's stdio points at /dev/null.\n\
Sandbox: always on. Every descriptor is limited to the rights it uses, then seccomp and \
Landlock (Linux) or Capsicum (FreeBSD) remove all other authority. --enable-sandbox and \
--enable-seccomp are accepted for slirp4netns compatibility; they change nothing."
)]
pub struct Cli {
    // ----- hypervisor front ends -----
    /// bhyve: serve the SOCK_SEQPACKET socket FD (config nvlist first, then one frame per record).
    #[arg(
        short = 'S',
        long = "socket",
        value_name = "FD",
        help_heading = "bhyve"
    )]
    pub bhyve_fd: Option<i32>,

    /// QEMU: listen on the unix stream socket PATH (4-byte big-endian length before each frame).
    #[arg(long, value_name = "PATH", help_heading = "QEMU")]
    pub qemu_stream: Option<PathBuf>,

    /// QEMU: a unix datagram socket at PATH, one frame per datagram (-netdev dgram,remote.type=unix,remote.path=PATH).
    #[arg(long, value_name = "PATH", help_heading = "QEMU")]
    pub qemu_dgram: Option<PathBuf>,

    /// vhost-user-net back end (Linux): listen on the unix socket PATH; the VMM shares the guest's memory (QEMU: -chardev socket,id=c,path=PATH -netdev vhost-user,chardev=c, memory-backend-memfd with share=on).
    #[arg(long, value_name = "PATH", help_heading = "QEMU")]
    pub vhost_user: Option<PathBuf>,

    /// Host forwarding rules, bhyve syntax: tcp:127.0.0.1:2222-:22;udp::5353-:53 (IPv6 in brackets).
    #[arg(long, value_name = "RULES", help_heading = "Network")]
    pub hostfwd: Option<String>,

    /// Let the guest reach the outside (default: restricted to host forwards).
    #[arg(long, help_heading = "Network")]
    pub open: bool,

    /// Who serves the guest's TCP: own (scaled windows, each connection
    /// relayed to a host socket; host forwards, and in open mode the
    /// guest's connections) or slirp (libslirp, at most 64 KiB in flight).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "own",
        value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<caploop::slirp::TcpMode>()),
        help_heading = "Network"
    )]
    pub tcp: caploop::slirp::TcpMode,

    /// With --tcp=own (the default): a forwarded connection reaches the guest from the
    /// real client's address (not 10.0.2.2) unless the client is on the
    /// host's loopback.
    #[arg(long = "hostfwd-real-source", help_heading = "Network")]
    pub hostfwd_real_source: bool,

    /// With --tcp=own: a connection silent this many seconds either way
    /// is probed with keep-alives from half of it, and reset if the guest
    /// does not answer; a forwarded connection the guest does not accept
    /// is given up after this long or 75 s, whichever is less.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 7200,
        help_heading = "Network"
    )]
    pub tcp_idle_timeout: u64,

    /// With --tcp=own: once both ends sent their FIN, a connection that
    /// moves no byte and does not finish closing in this many seconds is
    /// reset.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        help_heading = "Network"
    )]
    pub tcp_fin_timeout: u64,

    /// The VM's name, for logs.
    #[arg(long, value_name = "NAME", help_heading = "Network")]
    pub vmname: Option<String>,

    /// Drop to this user when started as root.
    #[arg(
        long,
        value_name = "USER",
        default_value = "nobody",
        help_heading = "Network"
    )]
    pub user: String,

    // ----- shared -----
    /// MTU (default 1500; at most 65520 for VMs, 65521 for slirp4netns).
    #[arg(short = 'm', long, value_name = "MTU", help_heading = "Network")]
    pub mtu: Option<u32>,

    /// Enable IPv6 (fd00::/64, host fd00::2, DNS fd00::3).
    #[arg(
        short = '6',
        long = "enable-ipv6",
        visible_alias = "ipv6",
        help_heading = "Network"
    )]
    pub ipv6: bool,

    // ----- slirp4netns -----
    /// Bring up the tap device (cidr+100/24, MTU, default route via the gateway).
    #[arg(short = 'c', long, help_heading = "slirp4netns")]
    pub configure: bool,

    /// Exit when FD becomes readable or hangs up.
    #[arg(
        short = 'e',
        long = "exit-fd",
        value_name = "FD",
        help_heading = "slirp4netns"
    )]
    pub exit_fd: Option<i32>,

    /// Write "1" to FD and close it once the network is served.
    #[arg(
        short = 'r',
        long = "ready-fd",
        value_name = "FD",
        help_heading = "slirp4netns"
    )]
    pub ready_fd: Option<i32>,

    /// API socket path (add_hostfwd, list_hostfwd, remove_hostfwd).
    #[arg(
        short = 'a',
        long = "api-socket",
        value_name = "PATH",
        help_heading = "slirp4netns"
    )]
    pub api_socket: Option<PathBuf>,

    /// Network address in CIDR notation (default 10.0.2.0/24).
    #[arg(long, value_name = "CIDR", help_heading = "slirp4netns")]
    pub cidr: Option<String>,

    /// Prohibit connecting to 127.0.0.1:* on the host (10.0.2.2 and fd00::2).
    #[arg(long = "disable-host-loopback", help_heading = "slirp4netns")]
    pub disable_host_loopback: bool,

    /// How to read PID|PATH: pid (default) or path.
    #[arg(long = "netns-type", value_name = "TYPE", help_heading = "slirp4netns")]
    pub netns_type: Option<String>,

    /// The user namespace to join (default: the target PID's, when it differs).
    #[arg(
        long = "userns-path",
        value_name = "PATH",
        help_heading = "slirp4netns"
    )]
    pub userns_path: Option<PathBuf>,

    /// Do not ask the tap for checksum and TCP segmentation offload (by
    /// default the tap hands over partial checksums and TCP
    /// super-segments of up to 64 KiB, finished here). With --vhost-user:
    /// offer the guest no checksum or TSO features.
    #[arg(long = "no-offload", help_heading = "slirp4netns")]
    pub no_offload: bool,

    /// Accepted for compatibility: the sandbox is always on.
    #[arg(long = "enable-sandbox", help_heading = "slirp4netns")]
    pub enable_sandbox: bool,

    /// Accepted for compatibility: seccomp is always on.
    #[arg(long = "enable-seccomp", help_heading = "slirp4netns")]
    pub enable_seccomp: bool,

    /// Source IPv4 address (or interface name) for outbound connections.
    #[arg(
        long = "outbound-addr",
        value_name = "IPv4|IFNAME",
        help_heading = "slirp4netns"
    )]
    pub outbound_addr: Option<String>,

    /// Source IPv6 address (or interface name) for outbound connections.
    #[arg(
        long = "outbound-addr6",
        value_name = "IPv6|IFNAME",
        help_heading = "slirp4netns"
    )]
    pub outbound_addr6: Option<String>,

    /// Disable the built-in DNS forwarder (10.0.2.3).
    #[arg(long = "disable-dns", help_heading = "slirp4netns")]
    pub disable_dns: bool,

    /// The tap device's MAC address (with --configure).
    #[arg(long, value_name = "MAC", help_heading = "slirp4netns")]
    pub macaddress: Option<String>,

    /// Target type: netns (default). bess is not supported.
    #[arg(
        long = "target-type",
        value_name = "TYPE",
        help_heading = "slirp4netns"
    )]
    pub target_type: Option<String>,

    /// Print version information (slirp4netns's lines, then ours).
    #[arg(short = 'v', long = "version", action = ArgAction::SetTrue)]
    pub version: bool,

    /// slirp4netns: the target network namespace: a PID, or a path with --netns-type=path.
    #[arg(value_name = "PID|PATH")]
    pub target: Option<String>,

    /// slirp4netns: the tap device's name in the target namespace.
    #[arg(value_name = "TAPNAME")]
    pub tapname: Option<String>,
}

/// The front end chosen by the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontEnd {
    /// bhyve's helper protocol on an inherited SOCK_SEQPACKET socket.
    Bhyve {
        /// The inherited socket.
        fd: i32,
    },
    /// QEMU's `-netdev stream` on a unix socket path.
    QemuStream {
        /// Where to listen.
        path: PathBuf,
    },
    /// QEMU's `-netdev dgram` on a unix datagram socket path.
    QemuDgram {
        /// Where to bind.
        path: PathBuf,
    },
    /// A vhost-user-net back end on a unix socket path.
    VhostUser {
        /// Where to listen.
        path: PathBuf,
    },
    /// slirp4netns's tap in a network namespace.
    Slirp4netns {
        /// PID or path of the target.
        target: String,
        /// Tap device name.
        tapname: String,
    },
}

/// A command-line mistake, in one line that names the bad value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Cli {
    /// Parses `args` (with the program name first). Help and version
    /// requests come back as `Err(Ok(text))`, to print and exit 0; mistakes
    /// as `Err(Err(UsageError))`, to print and exit 1.
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, Result<String, UsageError>>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Cli::try_parse_from(args) {
            Ok(cli) if cli.version => Err(Ok(version_text())),
            Ok(cli) => Ok(cli),
            Err(e) => match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Err(Ok(e.render().to_string()))
                }
                _ => {
                    let text = e.render().to_string();
                    let first = text
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("bad command line")
                        .trim_start_matches("error: ")
                        .to_string();
                    Err(Err(UsageError(first)))
                }
            },
        }
    }

    /// Which front end to run, checking that the options fit it.
    pub fn front_end(&self) -> Result<FrontEnd, UsageError> {
        let chosen = [
            self.bhyve_fd.is_some(),
            self.qemu_stream.is_some(),
            self.qemu_dgram.is_some(),
            self.vhost_user.is_some(),
            self.target.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        if chosen > 1 {
            return Err(UsageError(
                "choose one front end: -S FD, --qemu-stream PATH, --qemu-dgram PATH, --vhost-user PATH, or PID|PATH [TAPNAME]".into(),
            ));
        }
        if let Some(t) = self.target_type.as_deref() {
            match t {
                "netns" => {}
                "bess" => {
                    return Err(UsageError(
                        "--target-type=bess is not supported: only netns".into(),
                    ))
                }
                other => {
                    return Err(UsageError(format!(
                        "--target-type: unknown type \"{other}\" (expected netns)"
                    )))
                }
            }
        }
        if let Some(t) = self.netns_type.as_deref() {
            if t != "pid" && t != "path" {
                return Err(UsageError(format!(
                    "--netns-type: unknown type \"{t}\" (expected pid or path)"
                )));
            }
        }
        if let Some(fd) = self.bhyve_fd {
            if fd < 0 {
                return Err(UsageError(format!("-S: \"{fd}\" is not a descriptor")));
            }
            return Ok(FrontEnd::Bhyve { fd });
        }
        if let Some(target) = &self.target {
            return Ok(FrontEnd::Slirp4netns {
                target: target.clone(),
                tapname: self.tapname.clone().unwrap_or_else(|| "tap0".into()),
            });
        }
        if let Some(path) = &self.qemu_dgram {
            return Ok(FrontEnd::QemuDgram { path: path.clone() });
        }
        if let Some(path) = &self.vhost_user {
            return Ok(FrontEnd::VhostUser { path: path.clone() });
        }
        let path = self.qemu_stream.clone().unwrap_or_else(default_socket_path);
        Ok(FrontEnd::QemuStream { path })
    }

    /// The MTU to use, checked against the front end's limit.
    pub fn mtu_for(&self, front: &FrontEnd) -> Result<u32, UsageError> {
        use caploop::slirp::config::{MTU_MAX, MTU_MIN};
        // slirp4netns takes one more than libslirp's limit (and caps it).
        let max = match front {
            FrontEnd::Slirp4netns { .. } => MTU_MAX as u32 + 1,
            _ => MTU_MAX as u32,
        };
        let mtu = self.mtu.unwrap_or(1500);
        if !(MTU_MIN as u32..=max).contains(&mtu) {
            return Err(UsageError(format!(
                "--mtu: MTU must be a positive integer (< {}): {mtu} is out of range ({MTU_MIN} to {max})",
                max + 1
            )));
        }
        Ok(mtu)
    }

    /// The slirp4netns `--cidr`, as network address and prefix length.
    #[cfg_attr(not(test), allow(dead_code))] // the slirp4netns front end's
    pub fn cidr(&self) -> Result<Option<(Ipv4Addr, u8)>, UsageError> {
        let Some(c) = self.cidr.as_deref() else {
            return Ok(None);
        };
        let bad = || {
            UsageError(format!(
                "--cidr: invalid CIDR: \"{c}\" (expected an IPv4 CIDR like 10.0.2.0/24)"
            ))
        };
        let (addr, len) = c.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if !(1..=25).contains(&len) {
            return Err(UsageError(format!(
                "--cidr: prefix length needs to be 1-25: /{len} in \"{c}\" leaves no room for the gateway, DNS and guest"
            )));
        }
        let mask = u32::MAX << (32 - u32::from(len));
        if u32::from(addr) & !mask != 0 {
            // slirp4netns's own words, then the value.
            return Err(UsageError(format!(
                "--cidr: CIDR needs to be a network address like 10.0.2.0/24, not like \
                 10.0.2.100/24: \"{c}\" (the network is {}/{len})",
                Ipv4Addr::from(u32::from(addr) & mask)
            )));
        }
        Ok(Some((addr, len)))
    }

    /// The slirp4netns `--api-socket`, if its path fits a unix socket
    /// address (slirp4netns refuses a longer one the same way; a client
    /// could not connect to it).
    #[cfg_attr(not(test), allow(dead_code))] // the slirp4netns front end's
    pub fn api_socket(&self) -> Result<Option<&std::path::Path>, UsageError> {
        let Some(p) = self.api_socket.as_deref() else {
            return Ok(None);
        };
        let max = crate::startup::sun_path_len();
        if p.as_os_str().len() >= max {
            return Err(UsageError(format!(
                "--api-socket: the specified API socket path is too long (>= {max}): {} ({} bytes)",
                p.display(),
                p.as_os_str().len()
            )));
        }
        Ok(Some(p))
    }
}

/// The slirp4netns release whose command line this one takes.
pub const SLIRP4NETNS_VERSION: &str = "1.2.0";

/// What `--version` prints: slirp4netns's lines first (its version line,
/// the linked libslirp and the header's `SLIRP_CONFIG_VERSION_MAX`), as
/// `podman info` and scripts read them, then caploop's own.
pub fn version_text() -> String {
    format!(
        "slirp4netns version {SLIRP4NETNS_VERSION}\n\
         libslirp: {}\n\
         SLIRP_CONFIG_VERSION_MAX: {}\n\
         caploop-sandbox: {} (the slirp4netns {SLIRP4NETNS_VERSION} command line; sandbox always on)\n",
        caploop::slirp::ffi::version(),
        caploop::slirp::ffi::CONFIG_VERSION_MAX,
        env!("CARGO_PKG_VERSION"),
    )
}

/// `$XDG_RUNTIME_DIR/caploop-sandbox.sock`, or under /tmp.
pub fn default_socket_path() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("caploop-sandbox.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut v = vec!["caploop-sandbox"];
        v.extend_from_slice(args);
        Cli::parse_from_args(v).unwrap_or_else(|e| panic!("{args:?}: {e:?}"))
    }

    fn usage_err(args: &[&str]) -> String {
        let mut v = vec!["caploop-sandbox"];
        v.extend_from_slice(args);
        match Cli::parse_from_args(v) {
            Err(Err(e)) => e.0,
            Ok(cli) => match cli.front_end().and_then(|f| cli.mtu_for(&f).map(|_| ())) {
                Err(e) => e.0,
                Ok(()) => match cli.cidr().and_then(|_| cli.api_socket()) {
                    Err(e) => e.0,
                    Ok(_) => panic!("{args:?} parsed"),
                },
            },
            Err(Ok(t)) => panic!("{args:?} printed {t}"),
        }
    }

    #[test]
    fn help_names_every_option_the_clients_look_for() {
        let Err(Ok(help)) = Cli::parse_from_args(["caploop-sandbox", "--help"]) else {
            panic!("--help must print help")
        };
        for opt in [
            "--configure",
            "--exit-fd",
            "--ready-fd",
            "--mtu",
            "--enable-ipv6",
            "--api-socket",
            "--cidr",
            "--disable-host-loopback",
            "--netns-type",
            "--userns-path",
            "--enable-sandbox",
            "--enable-seccomp",
            "--outbound-addr",
            "--outbound-addr6",
            "--disable-dns",
            "--macaddress",
            "--target-type",
            "--help",
            "--version",
            "-S",
            "--qemu-stream",
            "--hostfwd",
            "--open",
        ] {
            assert!(help.contains(opt), "help lacks {opt}");
        }
        for flag in ["-v", "--version"] {
            let Err(Ok(v)) = Cli::parse_from_args(["caploop-sandbox", flag]) else {
                panic!("{flag} must print the version")
            };
            let lines: Vec<&str> = v.lines().collect();
            assert_eq!(lines[0], "slirp4netns version 1.2.0", "{v}");
            assert_eq!(
                lines[1],
                format!("libslirp: {}", caploop::slirp::ffi::version())
            );
            assert!(lines[1].starts_with("libslirp: 4."), "{v}");
            assert_eq!(lines[2], "SLIRP_CONFIG_VERSION_MAX: 4", "{v}");
            assert!(lines[3].contains(env!("CARGO_PKG_VERSION")), "{v}");
        }
    }

    #[test]
    fn rootlesskit_and_podman_command_lines_parse() {
        let rk = parse(&[
            "--mtu",
            "1500",
            "-r",
            "3",
            "--disable-host-loopback",
            "--cidr",
            "10.0.3.0/24",
            "--api-socket",
            "/run/x/.s4nn.sock",
            "--enable-sandbox",
            "--enable-seccomp",
            "15980",
            "tap0",
        ]);
        assert_eq!(rk.ready_fd, Some(3));
        assert_eq!(rk.cidr().unwrap(), Some(("10.0.3.0".parse().unwrap(), 24)));
        assert_eq!(
            rk.front_end().unwrap(),
            FrontEnd::Slirp4netns {
                target: "15980".into(),
                tapname: "tap0".into()
            }
        );
        let podman = parse(&[
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-e",
            "3",
            "-r",
            "4",
            "--netns-type=path",
            "/run/netns/netns-1",
            "tap0",
        ]);
        assert!(podman.configure && podman.ipv6);
        assert_eq!((podman.exit_fd, podman.ready_fd), (Some(3), Some(4)));
        let f = podman.front_end().unwrap();
        assert_eq!(podman.mtu_for(&f).unwrap(), 65520);
        // TAPNAME defaults to tap0.
        let bare = parse(&["1234"]);
        assert_eq!(
            bare.front_end().unwrap(),
            FrontEnd::Slirp4netns {
                target: "1234".into(),
                tapname: "tap0".into()
            }
        );
    }

    #[test]
    fn hypervisor_front_ends() {
        assert_eq!(
            parse(&["-S", "3"]).front_end().unwrap(),
            FrontEnd::Bhyve { fd: 3 }
        );
        let q = parse(&[
            "--qemu-stream",
            "/tmp/q.sock",
            "--hostfwd",
            "tcp::2222-:22",
            "--open",
        ]);
        assert_eq!(
            q.front_end().unwrap(),
            FrontEnd::QemuStream {
                path: "/tmp/q.sock".into()
            }
        );
        assert!(q.open);
        assert!(matches!(
            parse(&[]).front_end().unwrap(),
            FrontEnd::QemuStream { .. }
        ));
    }

    #[test]
    fn mistakes_are_one_line_naming_the_value() {
        let long_path = format!("/tmp/{}", "a".repeat(103));
        for (args, needle) in [
            (&["--bogus"][..], "--bogus"),
            (&["--mtu", "abc"][..], "abc"),
            (&["--mtu", "70000"][..], "70000"),
            (&["--mtu=65521", "--qemu-stream", "/x"][..], "65521"),
            (&["--target-type=bess", "1"][..], "bess"),
            (&["--netns-type=file", "1"][..], "file"),
            (&["--cidr", "10.0.2.0/33", "1"][..], "10.0.2.0/33"),
            (&["--cidr", "10.0.2.0/30", "1"][..], "/30"),
            (&["-S", "3", "--qemu-stream", "/x"][..], "one front end"),
            (&["-S", "-5"][..], "-5"),
            // slirp4netns's own phrases, beside ours.
            (&["--cidr", "abc", "1"][..], "invalid CIDR"),
            (
                &["--cidr", "10.0.2.0/26", "1"][..],
                "prefix length needs to be 1-25",
            ),
            (
                &["--mtu", "65522", "1"][..],
                "MTU must be a positive integer (< 65522)",
            ),
            (
                &["--cidr", "10.0.2.100/24", "1"][..],
                "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24",
            ),
            (&["--cidr", "10.0.2.100/24", "1"][..], "10.0.2.100/24\""),
            (
                &["--api-socket", &long_path, "1"][..],
                "the specified API socket path is too long (>= 108)",
            ),
        ] {
            let e = usage_err(args);
            assert!(!e.contains('\n'), "{args:?}: {e:?}");
            assert!(e.contains(needle), "{args:?}: {e:?} lacks {needle}");
        }
    }
}
