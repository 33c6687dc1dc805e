//! One busy TCP stream through libslirp next to N idle connections, on
//! caploop's reactor (persistent epoll registrations changed only where
//! libslirp's poll set changed) or on a loop that rebuilds a `poll()` array
//! every round as bhyve's slirp code does (`slirp_pollfds_fill` into a fresh
//! array, `poll()`, `slirp_pollfds_poll`). `netbe` is caploop again, but
//! through the `slirp` net back end (`Netbe::open("slirp,hostfwd=...")`,
//! 12-byte virtio-net header, frames for the guest queued and handed over
//! from the back end's receive callback) as a virtio-net front end uses it.
//! Driven by `benches/slirp_idle.sh`.
//!
//! ```text
//! slirp_idle_bench caploop|own|netbe|pollrebuild IDLE MIB
//! ```
//!
//! `own` is `caploop` with the own TCP path (`TcpMode::Own`): the forward
//! and its connections are the path's, not libslirp's.
//!
//! The guest is a smoltcp stack in this process, on the loop thread; the
//! host side (the idle connections and the busy writer) is a second thread
//! that connects to a TCP host forward on 127.0.0.1. Idle connections are
//! opened one at a time (libslirp's forward listens with backlog 1 and
//! accepts one connection per round), each until the guest sees it
//! established; the guest then forgets its end (nothing is sent, so libslirp
//! keeps the connection, both descriptors open and polled). Then the host
//! writes MIB MiB on one more connection and the guest reads and discards
//! it. The busy phase, and only it, is bracketed by two `getppid()` calls:
//! under `strace -o FILE` (without `-f`, so only this loop thread is
//! traced) the system calls between them are the busy phase's. One line on
//! stdout gives the loop kind, N, the descriptors libslirp polls, the bytes,
//! seconds, MiB/s and the loop iterations of the busy phase.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use caploop::net::Netbe;
use caploop::slirp::ffi;
use caploop::slirp::{Config, Proto, Rule, Stack, TcpMode};
use caploop::Reactor;
use smoltcp::socket::tcp;

#[allow(dead_code)]
#[path = "../tests/common/guest.rs"]
mod guest;

use guest::Guest;

const GUEST_PORT: u16 = 80;

/// One libslirp instance and how one loop iteration drives it.
trait Driver {
    fn input(&mut self, frame: &[u8]);
    /// One loop iteration, waiting at most `max_wait`.
    fn round(&mut self, max_wait: Duration);
    /// Descriptors libslirp has polled or registered.
    fn fds(&self) -> usize;
}

// ----- caploop ---------------------------------------------------------

struct Caploop {
    reactor: Reactor<()>,
    stack: Stack,
}

impl Driver for Caploop {
    fn input(&mut self, frame: &[u8]) {
        self.stack.input(frame);
    }
    fn round(&mut self, max_wait: Duration) {
        self.reactor
            .run_once(Some(max_wait), &mut ())
            .expect("reactor round");
    }
    fn fds(&self) -> usize {
        self.stack.registrations()
    }
}

// ----- caploop through the `slirp` net back end --------------------------

/// The front end's state: the back end and the guest's receive queue.
struct Fe {
    net: Option<Netbe<Fe>>,
    rx: Rc<RefCell<VecDeque<Vec<u8>>>>,
    hdr: [u8; 12],
    body: Vec<u8>,
}

/// The receive callback: drains the back end into the guest's queue.
fn fe_rx(_r: &mut Reactor<Fe>, fe: &mut Fe) {
    let Some(net) = fe.net.as_mut() else { return };
    while let Ok(Some(n)) =
        net.recv(&mut [IoSliceMut::new(&mut fe.hdr), IoSliceMut::new(&mut fe.body)])
    {
        fe.rx.borrow_mut().push_back(fe.body[..n - 12].to_vec());
    }
}

/// The stack behind `Netbe::open("slirp,hostfwd=...")` with a 12-byte
/// virtio-net header, as a virtio-net front end would hold it.
struct ViaNetbe {
    reactor: Reactor<Fe>,
    fe: Fe,
}

impl ViaNetbe {
    fn open(port: u16, rx: Rc<RefCell<VecDeque<Vec<u8>>>>) -> Option<ViaNetbe> {
        let mut reactor = Reactor::new().expect("reactor");
        let name = format!("slirp,hostfwd=tcp:127.0.0.1:{port}-:{GUEST_PORT}");
        let mut net = Netbe::open(&name, &mut reactor, fe_rx).ok()?;
        net.set_cap(0, 12).expect("set_cap");
        net.recv_enable(&mut reactor).expect("recv_enable");
        Some(ViaNetbe {
            reactor,
            fe: Fe {
                net: Some(net),
                rx,
                hdr: [0; 12],
                body: vec![0; 65536],
            },
        })
    }
}

impl Driver for ViaNetbe {
    fn input(&mut self, frame: &[u8]) {
        let net = self.fe.net.as_mut().expect("open");
        net.send(&[IoSlice::new(&[0; 12]), IoSlice::new(frame)])
            .expect("send");
    }
    fn round(&mut self, max_wait: Duration) {
        self.reactor
            .run_once(Some(max_wait), &mut self.fe)
            .expect("reactor round");
    }
    fn fds(&self) -> usize {
        self.reactor.fds().len()
    }
}

// ----- the poll-array-rebuild baseline ---------------------------------

struct BTimer {
    id: ffi::SlirpTimerId,
    cb: Option<ffi::SlirpTimerCb>,
    cb_opaque: *mut c_void,
    expire_ms: Option<i64>,
    live: bool,
}

/// What the baseline's C callbacks reach through libslirp's opaque pointer.
struct Base {
    epoch: Instant,
    rx: Rc<RefCell<VecDeque<Vec<u8>>>>,
    pollfds: RefCell<Vec<libc::pollfd>>,
    timers: RefCell<Vec<BTimer>>,
}

impl Base {
    fn now_ms(&self) -> i64 {
        (self.epoch.elapsed().as_nanos() / 1_000_000) as i64 + 1_000
    }
}

/// # Safety
/// `opaque` must be the `Base` given to `slirp_new`, alive.
unsafe fn base<'a>(opaque: *mut c_void) -> &'a Base {
    // SAFETY: by the caller's contract; only shared references are made.
    unsafe { &*(opaque as *const Base) }
}

unsafe extern "C" fn b_send(buf: *const c_void, len: usize, opaque: *mut c_void) -> isize {
    // SAFETY: libslirp passes back our opaque pointer.
    let b = unsafe { base(opaque) };
    // SAFETY: libslirp hands `len` readable bytes at `buf` for the call.
    let f = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
    b.rx.borrow_mut().push_back(f.to_vec());
    len as isize
}

unsafe extern "C" fn b_guest_error(_msg: *const std::os::raw::c_char, _opaque: *mut c_void) {}

unsafe extern "C" fn b_clock(opaque: *mut c_void) -> i64 {
    // SAFETY: libslirp passes back our opaque pointer.
    let b = unsafe { base(opaque) };
    (b.epoch.elapsed().as_nanos() as i64) + 1_000_000_000
}

fn b_new_timer(b: &Base, t: BTimer) -> *mut c_void {
    let mut timers = b.timers.borrow_mut();
    timers.push(t);
    timers.len() as *mut c_void
}

unsafe extern "C" fn b_timer_new(
    cb: Option<ffi::SlirpTimerCb>,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    // SAFETY: libslirp passes back our opaque pointer.
    let b = unsafe { base(opaque) };
    b_new_timer(
        b,
        BTimer {
            id: 0,
            cb,
            cb_opaque,
            expire_ms: None,
            live: true,
        },
    )
}

unsafe extern "C" fn b_timer_new_opaque(
    id: ffi::SlirpTimerId,
    cb_opaque: *mut c_void,
    opaque: *mut c_void,
) -> *mut c_void {
    // SAFETY: libslirp passes back our opaque pointer.
    let b = unsafe { base(opaque) };
    b_new_timer(
        b,
        BTimer {
            id,
            cb: None,
            cb_opaque,
            expire_ms: None,
            live: true,
        },
    )
}

unsafe extern "C" fn b_timer_free(timer: *mut c_void, opaque: *mut c_void) {
    // SAFETY: libslirp passes back our opaque pointer.
    let b = unsafe { base(opaque) };
    if let Some(t) = b
        .timers
        .borrow_mut()
        .get_mut((timer as usize).wrapping_sub(1))
    {
        t.live = false;
        t.expire_ms = None;
    }
}

unsafe extern "C" fn b_timer_mod(timer: *mut c_void, expire: i64, opaque: *mut c_void) {
    // SAFETY: libslirp passes back our opaque pointer.
    let b = unsafe { base(opaque) };
    if let Some(t) = b
        .timers
        .borrow_mut()
        .get_mut((timer as usize).wrapping_sub(1))
    {
        t.expire_ms = Some(expire);
    }
}

unsafe extern "C" fn b_fd(_fd: c_int, _opaque: *mut c_void) {}
unsafe extern "C" fn b_notify(_opaque: *mut c_void) {}

static B_CALLBACKS: ffi::SlirpCb = ffi::SlirpCb {
    send_packet: Some(b_send),
    guest_error: Some(b_guest_error),
    clock_get_ns: Some(b_clock),
    timer_new: Some(b_timer_new),
    timer_free: Some(b_timer_free),
    timer_mod: Some(b_timer_mod),
    register_poll_fd: Some(b_fd),
    unregister_poll_fd: Some(b_fd),
    notify: Some(b_notify),
    init_completed: None,
    timer_new_opaque: Some(b_timer_new_opaque),
};

unsafe extern "C" fn b_add_poll(fd: c_int, events: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: our pointer, passed to slirp_pollfds_fill.
    let b = unsafe { base(opaque) };
    let mut ev: libc::c_short = 0;
    for (s, p) in [
        (ffi::SLIRP_POLL_IN, libc::POLLIN),
        (ffi::SLIRP_POLL_OUT, libc::POLLOUT),
        (ffi::SLIRP_POLL_PRI, libc::POLLPRI),
        (ffi::SLIRP_POLL_ERR, libc::POLLERR),
        (ffi::SLIRP_POLL_HUP, libc::POLLHUP),
    ] {
        if events & s != 0 {
            ev |= p;
        }
    }
    let mut p = b.pollfds.borrow_mut();
    p.push(libc::pollfd {
        fd,
        events: ev,
        revents: 0,
    });
    (p.len() - 1) as c_int
}

unsafe extern "C" fn b_revents(idx: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: our pointer, passed to slirp_pollfds_poll.
    let b = unsafe { base(opaque) };
    let p = b.pollfds.borrow();
    let Some(pfd) = p.get(idx as usize) else {
        return 0;
    };
    let mut rev = pfd.revents;
    if pfd.events & libc::POLLHUP == 0 {
        rev &= !libc::POLLHUP;
    }
    let mut out = 0;
    for (s, p) in [
        (ffi::SLIRP_POLL_IN, libc::POLLIN),
        (ffi::SLIRP_POLL_OUT, libc::POLLOUT),
        (ffi::SLIRP_POLL_PRI, libc::POLLPRI),
        (ffi::SLIRP_POLL_ERR, libc::POLLERR),
        (ffi::SLIRP_POLL_HUP, libc::POLLHUP),
    ] {
        if rev & p != 0 {
            out |= s;
        }
    }
    out
}

struct PollRebuild {
    slirp: *mut ffi::Slirp,
    base: Box<Base>,
    last_fds: usize,
}

impl PollRebuild {
    fn new(rx: Rc<RefCell<VecDeque<Vec<u8>>>>) -> PollRebuild {
        let base = Box::new(Base {
            epoch: Instant::now(),
            rx,
            pollfds: RefCell::new(Vec::new()),
            timers: RefCell::new(Vec::new()),
        });
        let in4 = |a: Ipv4Addr| libc::in_addr {
            s_addr: u32::from(a).to_be(),
        };
        // SAFETY: SlirpConfig is plain data (integers, bools, addresses and
        // pointers) for which all-zero bytes are valid: NULL pointers and
        // false.
        let mut cfg: ffi::SlirpConfig = unsafe { std::mem::zeroed() };
        cfg.version = ffi::SLIRP_CONFIG_VERSION;
        cfg.restricted = 1;
        cfg.in_enabled = true;
        cfg.vnetwork = in4(Ipv4Addr::new(10, 0, 2, 0));
        cfg.vnetmask = in4(Ipv4Addr::new(255, 255, 255, 0));
        cfg.vhost = in4(Ipv4Addr::new(10, 0, 2, 2));
        cfg.vdhcp_start = in4(Ipv4Addr::new(10, 0, 2, 15));
        cfg.vnameserver = in4(Ipv4Addr::new(10, 0, 2, 3));
        cfg.if_mtu = 1500;
        cfg.if_mru = 1500;
        let opaque = &*base as *const Base as *mut c_void;
        // SAFETY: the config is a complete version-4 layout living for the
        // call (libslirp copies what it keeps; no outbound pointers given);
        // B_CALLBACKS is static and complete; `opaque` is the boxed Base,
        // which lives as long as the instance (the process, here).
        let slirp = unsafe { ffi::slirp_new(&cfg, &B_CALLBACKS, opaque) };
        assert!(!slirp.is_null(), "slirp_new failed");
        PollRebuild {
            slirp,
            base,
            last_fds: 0,
        }
    }

    fn add_hostfwd(&self, rule: &Rule) -> bool {
        let h = ffi::SockAddr::new(rule.host_socket_addr());
        let g = ffi::SockAddr::new(rule.guest_socket_addr(Ipv4Addr::new(10, 0, 2, 15)));
        let ((hp, hl), (gp, gl)) = (h.as_ptr(), g.as_ptr());
        // SAFETY: live instance; both addresses valid for their lengths.
        unsafe { ffi::slirp_add_hostxfwd(self.slirp, hp, hl, gp, gl, 0) == 0 }
    }

    fn opaque(&self) -> *mut c_void {
        &*self.base as *const Base as *mut c_void
    }

    fn run_timers(&mut self) {
        let now = self.base.now_ms();
        let due: Vec<(ffi::SlirpTimerId, Option<ffi::SlirpTimerCb>, *mut c_void)> = self
            .base
            .timers
            .borrow_mut()
            .iter_mut()
            .filter(|t| t.live && t.expire_ms.is_some_and(|e| e <= now))
            .map(|t| {
                t.expire_ms = None;
                (t.id, t.cb, t.cb_opaque)
            })
            .collect();
        for (id, cb, cb_opaque) in due {
            match cb {
                // SAFETY: the callback and its argument came from libslirp's
                // timer_new for this live instance.
                Some(cb) => unsafe { cb(cb_opaque) },
                // SAFETY: id and argument came from timer_new_opaque.
                None => unsafe { ffi::slirp_handle_timer(self.slirp, id, cb_opaque) },
            }
        }
    }
}

impl Driver for PollRebuild {
    fn input(&mut self, frame: &[u8]) {
        // SAFETY: live instance; the frame is valid for the call.
        unsafe { ffi::slirp_input(self.slirp, frame.as_ptr(), frame.len() as c_int) };
    }

    fn round(&mut self, max_wait: Duration) {
        // A fresh array every round, as bhyve's loops do.
        *self.base.pollfds.borrow_mut() = Vec::new();
        let mut timeout: u32 = u32::MAX;
        // SAFETY: live instance; the callback gets our Base.
        unsafe { ffi::slirp_pollfds_fill(self.slirp, &mut timeout, b_add_poll, self.opaque()) };
        let now = self.base.now_ms();
        let mut wait = (timeout as u64).min(max_wait.as_millis() as u64) as i64;
        if let Some(next) = self
            .base
            .timers
            .borrow()
            .iter()
            .filter(|t| t.live)
            .filter_map(|t| t.expire_ms)
            .min()
        {
            wait = wait.min((next - now).max(0));
        }
        if max_wait.is_zero() {
            wait = 0;
        }
        let n = {
            let mut p = self.base.pollfds.borrow_mut();
            self.last_fds = p.len();
            // SAFETY: `p` is a valid array of `p.len()` pollfds for the call.
            unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, wait as c_int) }
        };
        // SAFETY: live instance; revents come from the array just polled.
        unsafe {
            ffi::slirp_pollfds_poll(self.slirp, c_int::from(n < 0), b_revents, self.opaque())
        };
        self.run_timers();
    }

    fn fds(&self) -> usize {
        self.last_fds
    }
}

// ----- the host side ---------------------------------------------------

enum Cmd {
    Connect,
    Busy(u64),
}

/// Connects on command; keeps every connection until the channel closes.
fn host_side(port: u16, cmds: mpsc::Receiver<Cmd>) {
    let mut idle = Vec::new();
    let chunk = vec![0x5au8; 1 << 20];
    while let Ok(cmd) = cmds.recv() {
        match cmd {
            Cmd::Connect => {
                idle.push(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect"))
            }
            Cmd::Busy(mut left) => {
                let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    s.write_all(&chunk[..n]).expect("busy write");
                    left -= n as u64;
                }
                idle.push(s);
            }
        }
    }
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Pins the calling thread to `cpu` if the machine has more than one: the
/// loop and the host side on CPUs of their own make runs comparable.
#[cfg(target_os = "linux")]
fn pin(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        return;
    }
    // SAFETY: cpu_set_t is a plain bit array; CPU_ZERO/CPU_SET write into
    // the one we own, and sched_setaffinity(0, ...) reads it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Elsewhere the threads are not pinned (`sched_setaffinity` is Linux's).
#[cfg(not(target_os = "linux"))]
fn pin(_cpu: usize) {}

/// This thread's CPU time in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn marker() {
    // SAFETY: getppid has no preconditions; it marks the trace.
    unsafe { libc::getppid() };
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: slirp_idle_bench caploop|own|netbe|pollrebuild IDLE MIB";
    let kind = args.get(1).expect(usage).clone();
    let idle: usize = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
    let mib: u64 = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
    raise_nofile();

    let rx: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
    let mut port = 0;
    let mut driver: Box<dyn Driver> = match kind.as_str() {
        "caploop" | "own" => {
            let mut reactor = Reactor::new().expect("reactor");
            let rx2 = rx.clone();
            let config = Config {
                ipv6: false,
                tcp: if kind == "own" {
                    TcpMode::Own
                } else {
                    TcpMode::Slirp
                },
                ..Config::default()
            };
            let stack = Stack::new(&mut reactor, config, move |f: &[u8]| {
                rx2.borrow_mut().push_back(f.to_vec())
            })
            .expect("stack");
            for _ in 0..20 {
                port = guest::free_port(Proto::Tcp);
                if stack.add_hostfwd(&mut reactor, &rule(port)).is_ok() {
                    break;
                }
            }
            Box::new(Caploop { reactor, stack })
        }
        "netbe" => {
            let mut d = None;
            for _ in 0..20 {
                port = guest::free_port(Proto::Tcp);
                d = ViaNetbe::open(port, rx.clone());
                if d.is_some() {
                    break;
                }
            }
            Box::new(d.expect("no free port for the forward"))
        }
        "pollrebuild" => {
            let d = PollRebuild::new(rx.clone());
            for _ in 0..20 {
                port = guest::free_port(Proto::Tcp);
                if d.add_hostfwd(&rule(port)) {
                    break;
                }
            }
            Box::new(d)
        }
        _ => panic!("{usage}"),
    };

    let mut g = Guest::new(rx, 1500);
    // A static address: no DHCP in the measurement.
    g.iface.update_ip_addrs(|a| {
        a.push(smoltcp::wire::IpCidr::new(
            smoltcp::wire::IpAddress::v4(10, 0, 2, 15),
            24,
        ))
        .unwrap();
    });
    g.iface
        .routes_mut()
        .add_default_ipv4_route(smoltcp::wire::Ipv4Address::new(10, 0, 2, 2))
        .unwrap();

    let (tx, cmds) = mpsc::channel();
    pin(0);
    let host = std::thread::spawn(move || {
        pin(1);
        host_side(port, cmds)
    });

    let step = |d: &mut dyn Driver, g: &mut Guest, wait: Duration| {
        g.poll();
        while let Some(f) = g.wire.tx.pop_front() {
            d.input(&f);
        }
        let w = g.delay().map_or(wait, |x| x.min(wait));
        d.round(w);
        g.poll();
        while let Some(f) = g.wire.tx.pop_front() {
            d.input(&f);
        }
    };

    // DHCP first: libslirp learns the guest's MAC address from it, so its
    // first SYN towards the guest is not lost to ARP resolution.
    let t0 = Instant::now();
    while g.lease.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no DHCP lease");
        step(&mut *driver, &mut g, Duration::from_millis(5));
    }

    // Idle connections, one at a time.
    let setup = Instant::now();
    for i in 0..idle {
        let h = g.tcp_listen(GUEST_PORT, 4096);
        tx.send(Cmd::Connect).unwrap();
        let t0 = Instant::now();
        while g.tcp(h).state() != tcp::State::Established {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "idle connection {i} not established"
            );
            step(&mut *driver, &mut g, Duration::from_millis(1));
        }
        // Forget it without a word: libslirp keeps its end.
        g.sockets.remove(h);
    }
    let setup = setup.elapsed();

    // The busy stream.
    let h = {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1 << 20]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        let h = g.sockets.add(s);
        g.tcp(h).listen(GUEST_PORT).unwrap();
        h
    };
    let total = mib << 20;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut iters = 0u64;
    let cpu0 = thread_cpu();
    marker();
    let t0 = Instant::now();
    tx.send(Cmd::Busy(total)).unwrap();
    while got < total {
        step(&mut *driver, &mut g, Duration::from_millis(5));
        iters += 1;
        let s = g.tcp(h);
        while s.can_recv() {
            match s.recv_slice(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "busy stream stalled"
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    marker();
    let cpu = thread_cpu() - cpu0;
    let fds = driver.fds();
    let mibs = total as f64 / (1 << 20) as f64;
    println!(
        "loop={kind} idle={idle} fds={fds} bytes={total} secs={secs:.4} mibps={:.1} \
         cpu_us_per_mib={:.1} iters={iters} setup_secs={:.3}",
        mibs / secs,
        cpu * 1e6 / mibs,
        setup.as_secs_f64()
    );
    std::io::stdout().flush().unwrap();
    drop(tx);
    host.join().unwrap();
    // The process exits with libslirp's sockets open; nothing to clean.
    std::process::exit(0);
}

fn rule(port: u16) -> Rule {
    Rule {
        proto: Proto::Tcp,
        host_addr: Some(Ipv4Addr::LOCALHOST.into()),
        host_port: port,
        guest_addr: None,
        guest_port: GUEST_PORT,
        real_source: None,
    }
}
