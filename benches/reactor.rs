//! caploop's reactor against the raw `polling` crate and calloop, side by
//! side in one run.
//!
//! Groups (each with the functions `caploop`, `polling` and `calloop`):
//!
//! - `pingpong`: one byte bounced over a `UnixStream` pair. Side A writes,
//!   the loop wakes on B, reads the byte and writes it back, the loop wakes on
//!   A, reads it and writes the next one. One criterion iteration is one
//!   round trip (two loop wake-ups, two reads, two writes).
//! - `idle1000`: the same, with 1,000 further socket pairs registered for
//!   READ (one end each, with a callback) that never become ready.
//! - `timers100k`: schedule 100,000 one-shot timers with deadlines spread over
//!   0..10 ms from now, then run the loop until all have fired. One
//!   iteration is the whole schedule-and-fire. The wall time has a floor of
//!   10 ms (the last deadline), so this group also measures how close each
//!   loop wakes to its deadlines.
//! - `timers100k_burst`: the same with deadlines spread over 0..1 ms, which
//!   is shorter than scheduling 100,000 timers takes: almost every timer is
//!   due at the first wait, so this group is pure CPU cost of
//!   schedule + pop + dispatch.
//!
//! Every implementation does the same work per event: one `read` of one
//! byte and one `write` of one byte, through the same helpers, on
//! non-blocking sockets in level-triggered mode. Timers are given as a
//! `Duration` from now (each implementation reads the clock per timer, as
//! caploop's `add_timer` and calloop's `Timer::from_duration` do).
//!
//! `benches/ratios.py` turns criterion's estimates into a ratio table.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

use caploop::reactor::{Interest, Reactor};
use caploop::Rights;

const IDLE: usize = 1_000;
const TIMERS: usize = 100_000;

// ----- shared helpers ---------------------------------------------------

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

#[inline]
fn read1(mut s: &UnixStream) {
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).expect("read");
    debug_assert_eq!(n, 1);
}

#[inline]
fn write1(mut s: &UnixStream) {
    let n = s.write(&[0x5a]).expect("write");
    debug_assert_eq!(n, 1);
}

/// Timer offsets from "now", spread over `0..window` in a scrambled order
/// (so heap insertion is not sorted).
fn offsets(window: Duration) -> Vec<Duration> {
    let n = TIMERS as u64;
    let w = window.as_nanos() as u64;
    (0..n)
        .map(|i| Duration::from_nanos((i * 7919 % n) * w / n))
        .collect()
}

// ----- caploop ----------------------------------------------------------

struct CapPing {
    a: UnixStream,
    b: UnixStream,
    left: u64,
}

struct CapLoop {
    reactor: Reactor<CapPing>,
    data: CapPing,
    /// The unregistered peers of the idle registrations (the registered ends
    /// are owned by the reactor).
    _idle_peers: Vec<UnixStream>,
}

impl CapLoop {
    fn new(idle: usize) -> CapLoop {
        let mut reactor = Reactor::<CapPing>::new().expect("reactor");
        let (a, b) = pair();
        let mut idle_peers = Vec::with_capacity(idle);
        for _ in 0..idle {
            let (x, y) = pair();
            reactor
                .add(
                    OwnedFd::from(x),
                    Interest::READ,
                    Rights::READ_ONLY,
                    |_, _, _| {},
                )
                .expect("add idle");
            idle_peers.push(y);
        }
        reactor
            // SAFETY: `a` lives in the loop's data, dropped with the reactor.
            .add(
                unsafe { caploop::Source::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&a)) },
                Interest::READ,
                Rights::SOCKET,
                |_, d: &mut CapPing, _| {
                    read1(&d.a);
                    d.left -= 1;
                    if d.left > 0 {
                        write1(&d.a);
                    }
                },
            )
            .expect("add a");
        reactor
            // SAFETY: as above, for `b`.
            .add(
                unsafe { caploop::Source::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&b)) },
                Interest::READ,
                Rights::SOCKET,
                |_, d: &mut CapPing, _| {
                    read1(&d.b);
                    write1(&d.b);
                },
            )
            .expect("add b");
        CapLoop {
            reactor,
            data: CapPing { a, b, left: 0 },
            _idle_peers: idle_peers,
        }
    }

    fn round_trips(&mut self, n: u64) -> Duration {
        self.data.left = n;
        let start = Instant::now();
        write1(&self.data.a);
        while self.data.left > 0 {
            self.reactor.run_once(None, &mut self.data).expect("run");
        }
        start.elapsed()
    }
}

struct CapTimers {
    fired: usize,
}

fn caploop_timers(reactor: &mut Reactor<CapTimers>, offs: &[Duration]) -> Duration {
    let mut data = CapTimers { fired: 0 };
    let start = Instant::now();
    for &d in offs {
        reactor.add_timer(d, |_, t: &mut CapTimers, _| t.fired += 1);
    }
    while data.fired < offs.len() {
        reactor.run_once(None, &mut data).expect("run");
    }
    start.elapsed()
}

// ----- raw polling --------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    A,
    B,
    Idle,
}

struct RawLoop {
    poller: polling::Poller,
    events: polling::Events,
    /// Key -> what the registration is (the "key lookup").
    slots: Vec<Kind>,
    a: UnixStream,
    b: UnixStream,
    idle: Vec<(UnixStream, UnixStream)>,
}

impl RawLoop {
    fn new(idle: usize) -> RawLoop {
        let poller = polling::Poller::new().expect("poller");
        let (a, b) = pair();
        let idle: Vec<_> = (0..idle).map(|_| pair()).collect();
        let mut slots = Vec::with_capacity(idle.len() + 2);
        for (x, _) in &idle {
            let key = slots.len();
            slots.push(Kind::Idle);
            // SAFETY: deleted in Drop before the socket closes.
            unsafe {
                poller
                    .add_with_mode(x, polling::Event::readable(key), polling::PollMode::Level)
                    .expect("add idle");
            }
        }
        for (s, kind) in [(&a, Kind::A), (&b, Kind::B)] {
            let key = slots.len();
            slots.push(kind);
            // SAFETY: deleted in Drop before the socket closes.
            unsafe {
                poller
                    .add_with_mode(s, polling::Event::readable(key), polling::PollMode::Level)
                    .expect("add");
            }
        }
        RawLoop {
            poller,
            events: polling::Events::with_capacity(256.try_into().expect("non-zero")),
            slots,
            a,
            b,
            idle,
        }
    }

    fn round_trips(&mut self, n: u64) -> Duration {
        let mut left = n;
        let start = Instant::now();
        write1(&self.a);
        while left > 0 {
            self.events.clear();
            self.poller.wait(&mut self.events, None).expect("wait");
            for ev in self.events.iter() {
                match self.slots.get(ev.key) {
                    Some(Kind::A) => {
                        read1(&self.a);
                        left -= 1;
                        if left > 0 {
                            write1(&self.a);
                        }
                    }
                    Some(Kind::B) => {
                        read1(&self.b);
                        write1(&self.b);
                    }
                    Some(Kind::Idle) | None => {}
                }
            }
        }
        start.elapsed()
    }
}

impl Drop for RawLoop {
    fn drop(&mut self) {
        for (x, _) in &self.idle {
            let _ = self.poller.delete(x.as_fd());
        }
        let _ = self.poller.delete(self.a.as_fd());
        let _ = self.poller.delete(self.b.as_fd());
    }
}

/// One raw timer: its deadline, a tie-breaker, and its callback, kept in
/// the heap entry itself (the minimal design: no cancellation, so no table).
struct RawTimer {
    deadline: Instant,
    id: u32,
    cb: Box<dyn FnMut(&mut usize)>,
}

impl PartialEq for RawTimer {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.id) == (other.deadline, other.id)
    }
}

impl Eq for RawTimer {}

impl PartialOrd for RawTimer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RawTimer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.id).cmp(&(other.deadline, other.id))
    }
}

struct RawTimers {
    poller: polling::Poller,
    events: polling::Events,
    heap: BinaryHeap<Reverse<RawTimer>>,
    fired: usize,
}

impl RawTimers {
    fn new() -> RawTimers {
        RawTimers {
            poller: polling::Poller::new().expect("poller"),
            events: polling::Events::with_capacity(256.try_into().expect("non-zero")),
            heap: BinaryHeap::new(),
            fired: 0,
        }
    }

    fn run(&mut self, offs: &[Duration]) -> Duration {
        self.fired = 0;
        let start = Instant::now();
        for (i, &d) in offs.iter().enumerate() {
            self.heap.push(Reverse(RawTimer {
                deadline: Instant::now() + d,
                id: i as u32,
                cb: Box::new(|fired: &mut usize| *fired += 1),
            }));
        }
        loop {
            let now = Instant::now();
            while let Some(Reverse(t)) = self.heap.peek() {
                if t.deadline > now {
                    break;
                }
                let Some(Reverse(mut t)) = self.heap.pop() else {
                    break;
                };
                (t.cb)(&mut self.fired);
            }
            let Some(Reverse(next)) = self.heap.peek() else {
                break;
            };
            let next = next.deadline;
            self.events.clear();
            self.poller
                .wait_deadline(&mut self.events, next)
                .expect("wait");
        }
        let elapsed = start.elapsed();
        assert_eq!(self.fired, offs.len());
        elapsed
    }
}

// ----- calloop ------------------------------------------------------------

mod cl {
    pub use calloop::generic::Generic;
    pub use calloop::timer::{TimeoutAction, Timer};
    pub use calloop::{EventLoop, Interest, Mode, PostAction};
}

struct ClPing {
    left: u64,
}

struct ClLoop {
    event_loop: cl::EventLoop<'static, ClPing>,
    data: ClPing,
    /// A duplicate of side A, for the first write of each batch.
    kick: UnixStream,
    _idle_peers: Vec<UnixStream>,
}

impl ClLoop {
    fn new(idle: usize) -> ClLoop {
        let event_loop = cl::EventLoop::<ClPing>::try_new().expect("event loop");
        let handle = event_loop.handle();
        let (a, b) = pair();
        let kick = a.try_clone().expect("dup");
        let mut idle_peers = Vec::with_capacity(idle);
        for _ in 0..idle {
            let (x, y) = pair();
            handle
                .insert_source(
                    cl::Generic::new(x, cl::Interest::READ, cl::Mode::Level),
                    |_, _, _| Ok(cl::PostAction::Continue),
                )
                .expect("insert idle");
            idle_peers.push(y);
        }
        handle
            .insert_source(
                cl::Generic::new(a, cl::Interest::READ, cl::Mode::Level),
                |_, s, d: &mut ClPing| {
                    read1(s);
                    d.left -= 1;
                    if d.left > 0 {
                        write1(s);
                    }
                    Ok(cl::PostAction::Continue)
                },
            )
            .expect("insert a");
        handle
            .insert_source(
                cl::Generic::new(b, cl::Interest::READ, cl::Mode::Level),
                |_, s, _| {
                    read1(s);
                    write1(s);
                    Ok(cl::PostAction::Continue)
                },
            )
            .expect("insert b");
        ClLoop {
            event_loop,
            data: ClPing { left: 0 },
            kick,
            _idle_peers: idle_peers,
        }
    }

    fn round_trips(&mut self, n: u64) -> Duration {
        self.data.left = n;
        let start = Instant::now();
        write1(&self.kick);
        while self.data.left > 0 {
            self.event_loop
                .dispatch(None, &mut self.data)
                .expect("dispatch");
        }
        start.elapsed()
    }
}

struct ClTimers {
    fired: usize,
}

fn calloop_timers(
    event_loop: &mut cl::EventLoop<'static, ClTimers>,
    offs: &[Duration],
) -> Duration {
    let mut data = ClTimers { fired: 0 };
    let handle = event_loop.handle();
    let start = Instant::now();
    for &d in offs {
        handle
            .insert_source(cl::Timer::from_duration(d), |_, _, t: &mut ClTimers| {
                t.fired += 1;
                cl::TimeoutAction::Drop
            })
            .expect("insert timer");
    }
    while data.fired < offs.len() {
        event_loop.dispatch(None, &mut data).expect("dispatch");
    }
    start.elapsed()
}

// ----- the benchmarks -----------------------------------------------------

fn pingpong_group(c: &mut Criterion, name: &str, idle: usize) {
    let mut g = c.benchmark_group(name);
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    {
        let mut l = CapLoop::new(idle);
        g.bench_function("caploop", |bch| bch.iter_custom(|n| l.round_trips(n)));
    }
    {
        let mut l = RawLoop::new(idle);
        g.bench_function("polling", |bch| bch.iter_custom(|n| l.round_trips(n)));
    }
    {
        let mut l = ClLoop::new(idle);
        g.bench_function("calloop", |bch| bch.iter_custom(|n| l.round_trips(n)));
    }
    g.finish();
}

fn timers_group(c: &mut Criterion, name: &str, window: Duration) {
    let offs = offsets(window);
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    {
        let mut r = Reactor::<CapTimers>::new().expect("reactor");
        g.bench_function("caploop", |bch| {
            bch.iter_custom(|n| (0..n).map(|_| caploop_timers(&mut r, &offs)).sum())
        });
    }
    {
        let mut t = RawTimers::new();
        g.bench_function("polling", |bch| {
            bch.iter_custom(|n| (0..n).map(|_| t.run(&offs)).sum())
        });
    }
    {
        let mut el = cl::EventLoop::<ClTimers>::try_new().expect("event loop");
        g.bench_function("calloop", |bch| {
            bch.iter_custom(|n| (0..n).map(|_| calloop_timers(&mut el, &offs)).sum())
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    pingpong_group(c, "pingpong", 0);
    pingpong_group(c, "idle1000", IDLE);
    timers_group(c, "timers100k", Duration::from_millis(10));
    timers_group(c, "timers100k_burst", Duration::from_millis(1));
}

criterion_group!(reactor, benches);
criterion_main!(reactor);
