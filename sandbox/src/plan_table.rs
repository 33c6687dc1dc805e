//! The sandbox plan of every front end, FreeBSD's and Linux's rules side by
//! side: for each kind of descriptor a session keeps, the portable
//! [`Rights`] it is planned with, the Capsicum rights, ioctls and fcntls
//! FreeBSD limits it to, and the per-descriptor operations Linux's seccomp
//! filter lets through. Built from real sessions (`serve::prepare` on
//! socketpairs and pipes), not from a copy of the code's constants. Run with
//! `--nocapture` to see the table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

use caploop::sandbox::{
    capsicum_limits, linux_abi as abi, seccomp_rules, CapFcntl as F, CapIoctl as I, CapRight as C,
    ProcessFacts, Sys,
};
use caploop::slirp::{Config, Rule};
use caploop::Rights;

use crate::link::LinkKind;
use crate::privileges::Privileges;
use crate::record::{Medium, RecordRx, RecordTx};
use crate::serve::{self, Extras, Session};
use crate::source::Link;
use crate::stream::{StreamRx, StreamTx};

/// One kind of descriptor: what each platform lets the session do with it.
struct Row {
    kind: &'static str,
    rights: Rights,
    capsicum: &'static [C],
    ioctls: &'static [I],
    fcntls: &'static [F],
    /// The operations Linux's seccomp rules allow on this descriptor
    /// number, of those in [`PROBES`]; `None`: no rule names the number (it
    /// may be closed and its number reused), the allowlist alone applies.
    linux: Option<&'static str>,
}

const SOCKET_CAPS: &[C] = &[
    C::Read,
    C::Write,
    C::Event,
    C::Shutdown,
    C::Getsockopt,
    C::Getpeername,
    C::Getsockname,
    C::Fstat,
];
const LISTENER_CAPS: &[C] = &[
    C::Read,
    C::Write,
    C::Event,
    C::Accept,
    C::Shutdown,
    C::Getsockopt,
    C::Setsockopt,
    C::Getpeername,
    C::Getsockname,
    C::Fstat,
    C::Fcntl,
    C::Ioctl,
];
const SOCKET_OPS: &str = "read write recv send shutdown getsockopt getsockname getpeername fstat";
const LISTENER_OPS: &str = "read write recv send accept shutdown getsockopt setsockopt \
     getsockname getpeername F_GETFL F_SETFL FIONREAD FIONBIO fstat";

/// Every kind of descriptor a session plans, both platforms side by side.
const TABLE: &[Row] = &[
    Row {
        kind: "link: bhyve/QEMU socket",
        rights: Rights::SOCKET,
        capsicum: SOCKET_CAPS,
        ioctls: &[],
        fcntls: &[],
        linux: Some(SOCKET_OPS),
    },
    Row {
        kind: "vhost-user socket",
        rights: Rights::SOCKET,
        capsicum: SOCKET_CAPS,
        ioctls: &[],
        fcntls: &[],
        linux: Some(SOCKET_OPS),
    },
    Row {
        kind: "vhost-user gate pair",
        rights: Rights::SOCKET.union(Rights::SENDMSG),
        capsicum: SOCKET_CAPS,
        ioctls: &[],
        fcntls: &[],
        linux: Some(
            "read write recv send shutdown getsockopt getsockname getpeername fstat sendmsg",
        ),
    },
    Row {
        kind: "link: slirp4netns tap",
        rights: Rights::READ.union(Rights::WRITE).union(Rights::EVENT),
        capsicum: &[C::Read, C::Write, C::Event],
        ioctls: &[],
        fcntls: &[],
        linux: Some("read write"),
    },
    Row {
        kind: "event queue (epoll/kqueue)",
        rights: Rights::POLLER,
        capsicum: &[C::KqueueEvent, C::KqueueChange],
        ioctls: &[],
        fcntls: &[],
        linux: Some(""),
    },
    Row {
        kind: "signal pipe (read end)",
        rights: Rights::READ_ONLY,
        capsicum: &[C::Read, C::Event, C::Fstat],
        ioctls: &[],
        fcntls: &[],
        linux: Some("read fstat"),
    },
    Row {
        kind: "signal pipe (write end)",
        rights: Rights::WRITE_ONLY,
        capsicum: &[C::Write, C::Event, C::Fstat],
        ioctls: &[],
        fcntls: &[],
        linux: Some("write fstat"),
    },
    Row {
        kind: "polling's eventfd (Linux)",
        rights: Rights::READ.union(Rights::WRITE).union(Rights::EVENT),
        capsicum: &[C::Read, C::Write, C::Event],
        ioctls: &[],
        fcntls: &[],
        linux: Some("read write"),
    },
    Row {
        kind: "polling's timerfd (Linux)",
        rights: Rights::READ_ONLY,
        capsicum: &[C::Read, C::Event, C::Fstat],
        ioctls: &[],
        fcntls: &[],
        linux: Some("read fstat"),
    },
    Row {
        kind: "stderr",
        rights: Rights::WRITE_ONLY,
        capsicum: &[C::Write, C::Event, C::Fstat],
        ioctls: &[],
        fcntls: &[],
        linux: Some("write fstat"),
    },
    Row {
        kind: "libslirp host-forward listener",
        rights: Rights::LISTENER.union(Rights::EPHEMERAL),
        capsicum: LISTENER_CAPS,
        ioctls: &[I::Fionread],
        fcntls: &[F::GetFL, F::SetFL],
        linux: None,
    },
    Row {
        kind: "slirp4netns exit fd",
        rights: Rights::READ_ONLY,
        capsicum: &[C::Read, C::Event, C::Fstat],
        ioctls: &[],
        fcntls: &[],
        linux: Some("read fstat"),
    },
    Row {
        kind: "slirp4netns ready fd",
        rights: Rights::WRITE_ONLY.union(Rights::EPHEMERAL),
        capsicum: &[C::Write, C::Event, C::Fstat],
        ioctls: &[],
        fcntls: &[],
        linux: None,
    },
    Row {
        kind: "slirp4netns API listener",
        rights: Rights::LISTENER,
        capsicum: LISTENER_CAPS,
        ioctls: &[I::Fionread],
        fcntls: &[F::GetFL, F::SetFL],
        linux: Some(LISTENER_OPS),
    },
];

/// The per-descriptor operations probed against the seccomp rules: the
/// call and its second and third arguments.
const PROBES: &[(&str, Sys, u64, u64)] = &[
    ("read", Sys::Read, 0, 0),
    ("write", Sys::Write, 0, 0),
    ("recv", Sys::Recvfrom, 0, 0),
    ("send", Sys::Sendto, 0, 0),
    ("accept", Sys::Accept4, 0, 0),
    ("shutdown", Sys::Shutdown, 0, 0),
    ("getsockopt", Sys::Getsockopt, 0, 0),
    (
        "setsockopt",
        Sys::Setsockopt,
        abi::SOL_SOCKET,
        abi::SO_REUSEADDR,
    ),
    ("getsockname", Sys::Getsockname, 0, 0),
    ("getpeername", Sys::Getpeername, 0, 0),
    ("F_GETFL", Sys::Fcntl, abi::F_GETFL, 0),
    ("F_SETFL", Sys::Fcntl, abi::F_SETFL, 0),
    ("FIONREAD", Sys::Ioctl, abi::FIONREAD, 0),
    ("FIONBIO", Sys::Ioctl, abi::FIONBIO, 0),
    ("TUNSETOFFLOAD", Sys::Ioctl, abi::TUNSETOFFLOAD, 0),
    ("fstat", Sys::Fstat, 0, 0),
    ("sendmsg", Sys::Sendmsg, 0, 0),
];

/// A front end's session, set up on socketpairs and pipes as the front
/// end sets it up on its real link, with which descriptor is which.
struct Front {
    name: &'static str,
    session: Session,
    link: Link,
    extras: Extras,
    known: Vec<(RawFd, &'static str)>,
    _keep: Vec<OwnedFd>,
}

fn forward() -> Rule {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("tcp:127.0.0.1:{port}-:22").parse().unwrap()
}

/// A hypervisor's front end whose link's polled descriptor is `raw`.
fn hypervisor(name: &'static str, link: Link, raw: RawFd, peer: OwnedFd) -> Front {
    Front {
        name,
        session: Session {
            name: name.into(),
            config: Config::default(),
            rules: vec![forward()],
            privileges: Privileges::DropToUser("nobody".into()),
            vm: true,
        },
        link,
        extras: Extras::default(),
        known: vec![(raw, "link: bhyve/QEMU socket")],
        _keep: vec![peer],
    }
}

fn fronts(dir: &std::path::Path) -> Vec<Front> {
    let mut out = Vec::new();

    let (a, b) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let raw = a.as_raw_fd();
    let link = Link::polled(
        a,
        LinkKind::Socket,
        Box::new(RecordRx::new(raw, Medium::Seqpacket, "bhyve")),
        Box::new(RecordTx::new(raw, Medium::Seqpacket, 2048, "bhyve")),
    );
    out.push(hypervisor("bhyve -S", link, raw, b));

    let (a, b) = UnixStream::pair().unwrap();
    let a = OwnedFd::from(a);
    let raw = a.as_raw_fd();
    let link = Link::polled(
        a,
        LinkKind::Socket,
        Box::new(StreamRx::new(raw, 70_000)),
        Box::new(StreamTx::new(raw)),
    );
    out.push(hypervisor("--qemu-stream", link, raw, b.into()));

    let (a, b) = UnixDatagram::pair().unwrap();
    let a = OwnedFd::from(a);
    let raw = a.as_raw_fd();
    let link = Link::polled(
        a,
        LinkKind::Socket,
        Box::new(RecordRx::new(raw, Medium::Datagram, "QEMU")),
        Box::new(RecordTx::new(raw, Medium::Datagram, 70_000, "QEMU")),
    );
    out.push(hypervisor("--qemu-dgram", link, raw, b.into()));

    // vhost-user: the reactor polls a duplicate of the socket the gate
    // reads and replies on; the gate's pair carries messages to the vhost
    // crate.
    let (a, b) = UnixStream::pair().unwrap();
    let polled = OwnedFd::from(a.try_clone().unwrap());
    let gate_fd = a.as_raw_fd();
    let polled_raw = polled.as_raw_fd();
    let mut front = hypervisor(
        "--vhost-user",
        crate::vhost_user::link(polled, a, 1500, true).expect("the vhost-user link"),
        polled_raw,
        b.into(),
    );
    front.known.push((gate_fd, "vhost-user socket"));
    out.push(front);

    // slirp4netns: a stand-in for the tap (the plan depends on the link's
    // kind, not on the device), the exit and ready pipes, the API socket.
    let (tap, peer) = UnixDatagram::pair().unwrap();
    let tap = OwnedFd::from(tap);
    let raw = tap.as_raw_fd();
    let (exit_r, exit_w) = nix::unistd::pipe().unwrap();
    let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
    let api = UnixListener::bind(dir.join("api.sock")).unwrap();
    let known = vec![
        (raw, "link: slirp4netns tap"),
        (exit_r.as_raw_fd(), "slirp4netns exit fd"),
        (ready_w.as_raw_fd(), "slirp4netns ready fd"),
        (api.as_raw_fd(), "slirp4netns API listener"),
    ];
    out.push(Front {
        name: "slirp4netns",
        session: Session {
            name: "slirp4netns".into(),
            config: Config::open(),
            rules: Vec::new(),
            privileges: Privileges::DropCapabilities { bind_service: true },
            vm: false,
        },
        link: Link::polled(
            tap,
            LinkKind::Tap,
            Box::new(RecordRx::new(raw, Medium::Tap, "the tap")),
            Box::new(RecordTx::new(raw, Medium::Tap, 1514, "the tap")),
        ),
        extras: Extras {
            exit_fd: Some(exit_r),
            ready_fd: Some(ready_w),
            api: Some((api, Ipv4Addr::new(10, 0, 2, 100))),
        },
        known,
        _keep: vec![peer.into(), exit_w, ready_r],
    });
    out
}

/// The kind of each planned descriptor, by its number or its label.
fn kind_of(
    label: &str,
    fd: RawFd,
    rights: Rights,
    known: &[(RawFd, &'static str)],
) -> &'static str {
    if let Some(&(_, k)) = known.iter().find(|(n, _)| *n == fd) {
        return k;
    }
    match label {
        "stderr" => "stderr",
        "signal pipe (write end)" => "signal pipe (write end)",
        "vhost-user gate (ours)" | "vhost-user gate (the vhost crate's)" => "vhost-user gate pair",
        "reactor event queue" => "event queue (epoll/kqueue)",
        // The only registration the loop reads and polls, and nothing more.
        l if l.starts_with("registration") && rights == Rights::READ_ONLY => {
            "signal pipe (read end)"
        }
        "reactor polling's notifier (eventfd)" => "polling's eventfd (Linux)",
        "reactor polling's timer (timerfd)" => "polling's timerfd (Linux)",
        // Every other registration is one of libslirp's sockets.
        l if l.starts_with("registration") => "libslirp host-forward listener",
        other => panic!("a planned descriptor of no known kind: {other} (fd {fd})"),
    }
}

#[test]
fn each_front_end_plans_each_descriptor_as_the_table_says() {
    let dir = std::env::temp_dir().join(format!("caploop-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let table: BTreeMap<&str, &Row> = TABLE.iter().map(|r| (r.kind, r)).collect();
    let mut printed = String::from(
        "front end | descriptor | Rights | FreeBSD: cap_rights / ioctls / fcntls | Linux: seccomp per fd\n",
    );
    for front in fronts(&dir) {
        let Front {
            name,
            session,
            link,
            extras,
            known,
            _keep,
        } = front;
        let prepared = serve::prepare(session, link, extras).expect("a session");
        let plan = prepared.plan();
        let rules = seccomp_rules(plan.fds(), prepared.policy(), ProcessFacts::default());
        let mut kinds = Vec::new();
        for p in plan.fds() {
            let kind = kind_of(&p.label, p.fd, p.rights, &known);
            kinds.push(kind);
            let row = table[kind];
            assert_eq!(p.rights, row.rights, "{name}: {kind}");
            let cap = capsicum_limits(p.rights);
            let mut want = row.capsicum.to_vec();
            want.sort();
            let mut got = cap.rights.clone();
            got.sort();
            assert_eq!(got, want, "{name}: {kind}: Capsicum rights");
            assert_eq!(cap.ioctls, row.ioctls, "{name}: {kind}: ioctls");
            assert_eq!(cap.fcntls, row.fcntls, "{name}: {kind}: fcntls");
            // What seccomp lets through on this number, compared with a
            // number no rule names.
            let allowed = |fd: RawFd| -> Vec<&str> {
                PROBES
                    .iter()
                    .filter(|(_, sys, a1, a2)| rules.permits(*sys, [fd as u64, *a1, *a2, 0, 0, 0]))
                    .map(|(n, _, _, _)| *n)
                    .collect()
            };
            let ops = allowed(p.fd);
            let unplanned = allowed(999);
            match row.linux {
                Some(want) => assert_eq!(ops.join(" "), want, "{name}: {kind}: seccomp"),
                None => assert_eq!(ops, unplanned, "{name}: {kind}: no rule by number"),
            }
            printed.push_str(&format!(
                "{name} | {kind} | {:?} | {:?} / {:?} / {:?} | {}\n",
                p.rights,
                cap.rights,
                cap.ioctls,
                cap.fcntls,
                row.linux.unwrap_or("(allowlist only: closed after entry)")
            ));
        }
        kinds.sort();
        let mut want: Vec<&str> = vec![
            "event queue (epoll/kqueue)",
            "signal pipe (read end)",
            "signal pipe (write end)",
            "polling's eventfd (Linux)",
            "polling's timerfd (Linux)",
            "stderr",
        ];
        if name == "slirp4netns" {
            want.extend([
                "link: slirp4netns tap",
                "slirp4netns exit fd",
                "slirp4netns ready fd",
                "slirp4netns API listener",
            ]);
        } else {
            want.extend(["link: bhyve/QEMU socket", "libslirp host-forward listener"]);
        }
        if name == "--vhost-user" {
            want.extend([
                "vhost-user socket",
                "vhost-user gate pair",
                "vhost-user gate pair",
            ]);
        }
        want.sort();
        assert_eq!(kinds, want, "{name}: the descriptors planned");
    }
    println!("{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}
