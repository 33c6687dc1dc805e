//! The reactor's semantics, each proven with real descriptors (socketpairs,
//! pipes, files), real signals and a real second thread.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use caploop::reactor::{Error, FdOwner, Interest, Reactor};
use caploop::Rights;

const SHORT: Option<Duration> = Some(Duration::from_millis(20));

/// Registers a descriptor the test keeps open for as long as the
/// registration (every test here deletes it or drops the reactor first).
fn borrow<T: std::os::fd::AsFd + ?Sized>(fd: &T) -> caploop::Source {
    borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()))
}

fn borrow_raw(fd: std::os::fd::RawFd) -> caploop::Source {
    // SAFETY: see `borrow`; the bad-descriptor tests pass numbers that are
    // not open on purpose, which the reactor must refuse.
    unsafe { caploop::Source::borrow_raw(fd) }
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn readable_event_reaches_callback_and_data_is_read() {
    let mut r: Reactor<Vec<u8>> = Reactor::new().unwrap();
    let (a, mut b) = pair();
    let a = Rc::new(a);
    let a2 = a.clone();
    r.add(
        borrow(&a),
        Interest::READ,
        Rights::READ_ONLY,
        move |_, got, ev| {
            assert!(ev.readable && !ev.writable);
            let mut buf = [0u8; 64];
            let n = (&*a2).read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        },
    )
    .unwrap();
    b.write_all(b"hello").unwrap();
    let mut got = Vec::new();
    let ran = r.run_once(SHORT, &mut got).unwrap();
    assert_eq!(ran, 1);
    assert_eq!(got, b"hello");
}

#[test]
fn level_triggered_unread_data_is_reported_again() {
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    let (a, mut b) = pair();
    r.add(borrow(&a), Interest::READ, Rights::READ_ONLY, |_, n, _| {
        *n += 1
    })
    .unwrap();
    b.write_all(b"x").unwrap();
    let mut n = 0;
    for _ in 0..3 {
        r.run_once(SHORT, &mut n).unwrap();
    }
    assert_eq!(n, 3, "unread data must keep the descriptor ready");
}

#[test]
fn add_disabled_enable_disable() {
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    let (a, mut b) = pair();
    let h = r
        .add_disabled(borrow(&a), Interest::READ, Rights::READ_ONLY, |_, n, _| {
            *n += 1
        })
        .unwrap();
    b.write_all(b"x").unwrap();
    let mut n = 0;
    r.run_once(SHORT, &mut n).unwrap();
    assert_eq!(n, 0, "a disabled registration gets no events");
    assert!(!r.is_enabled(h).unwrap());
    r.enable(h).unwrap();
    r.run_once(SHORT, &mut n).unwrap();
    assert_eq!(n, 1);
    r.disable(h).unwrap();
    r.run_once(SHORT, &mut n).unwrap();
    assert_eq!(n, 1, "disabled again: no more events");
    r.enable(h).unwrap();
    r.run_once(SHORT, &mut n).unwrap();
    assert_eq!(n, 2);
}

#[test]
fn write_interest_and_changing_interest() {
    let mut r: Reactor<Vec<(bool, bool)>> = Reactor::new().unwrap();
    let (a, _b) = pair();
    let h = r
        .add(
            borrow(&a),
            Interest::WRITE,
            Rights::SOCKET,
            |_, seen, ev| seen.push((ev.readable, ev.writable)),
        )
        .unwrap();
    let mut seen = Vec::new();
    r.run_once(SHORT, &mut seen).unwrap();
    assert_eq!(seen, vec![(false, true)]);
    r.set_interest(h, Interest::READ).unwrap();
    assert_eq!(r.interest(h).unwrap(), Interest::READ);
    seen.clear();
    r.run_once(SHORT, &mut seen).unwrap();
    assert!(seen.is_empty(), "nothing to read: no event after narrowing");
}

#[test]
fn delete_hands_owned_fd_back_and_delete_close_closes_it() {
    let mut r: Reactor = Reactor::new().unwrap();
    let (a, _b) = pair();
    let (c, _d) = pair();
    let a: OwnedFd = a.into();
    let c: OwnedFd = c.into();
    let (a_raw, c_raw) = (a.as_raw_fd(), c.as_raw_fd());
    let ha = r
        .add(a, Interest::READ, Rights::READ_ONLY, |_, _, _| {})
        .unwrap();
    let hc = r
        .add(c, Interest::READ, Rights::READ_ONLY, |_, _, _| {})
        .unwrap();
    assert_eq!(r.len(), 2);

    let back = r.delete(ha).unwrap().expect("owned fd comes back");
    assert_eq!(back.as_raw_fd(), a_raw);
    assert!(is_open(a_raw));

    r.delete_close(hc).unwrap();
    assert!(!is_open(c_raw), "delete_close closes the descriptor");
    assert!(r.is_empty());

    assert!(matches!(r.delete(ha), Err(Error::UnknownHandle(h)) if h == ha));
    assert!(matches!(r.enable(hc), Err(Error::UnknownHandle(_))));
}

#[test]
fn delete_close_refuses_a_borrowed_fd_and_keeps_it_registered() {
    let mut r: Reactor = Reactor::new().unwrap();
    let (a, _b) = pair();
    let h = r
        .add(borrow(&a), Interest::READ, Rights::READ_ONLY, |_, _, _| {})
        .unwrap();
    match r.delete_close(h) {
        Err(Error::NotOwned(fd)) => assert_eq!(fd, a.as_raw_fd()),
        other => panic!("expected NotOwned, got {other:?}"),
    }
    assert!(is_open(a.as_raw_fd()));
    assert_eq!(r.len(), 1);
    assert!(
        r.delete(h).unwrap().is_none(),
        "borrowed: nothing handed back"
    );
}

#[test]
fn bad_fds_and_double_registration_are_clear_errors() {
    let mut r: Reactor = Reactor::new().unwrap();
    assert!(matches!(
        r.add(
            borrow_raw(-1),
            Interest::READ,
            Rights::READ_ONLY,
            |_, _, _| {}
        ),
        Err(Error::BadFd(-1))
    ));

    // A number no descriptor can have (above the kernel's nr_open
    // default): a number just closed could be reused at once by a test
    // running on another thread.
    let closed: RawFd = (1 << 20) + 7;
    let err = r
        .add(
            borrow_raw(closed),
            Interest::READ,
            Rights::READ_ONLY,
            |_, _, _| {},
        )
        .unwrap_err();
    assert!(matches!(err, Error::BadFd(fd) if fd == closed), "{err}");
    let err = r
        .add_disabled(
            borrow_raw(closed),
            Interest::READ,
            Rights::READ_ONLY,
            |_, _, _| {},
        )
        .unwrap_err();
    assert!(matches!(err, Error::BadFd(fd) if fd == closed), "{err}");

    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let err = r
        .add(
            borrow(&file),
            Interest::READ,
            Rights::READ_ONLY,
            |_, _, _| {},
        )
        .unwrap_err();
    assert!(matches!(err, Error::NotPollable(_)), "{err}");
    assert!(err.to_string().contains(&file.as_raw_fd().to_string()));

    let (c, _d) = pair();
    let h = r
        .add(borrow(&c), Interest::READ, Rights::READ_ONLY, |_, _, _| {})
        .unwrap();
    let err = r
        .add(borrow(&c), Interest::WRITE, Rights::SOCKET, |_, _, _| {})
        .unwrap_err();
    match err {
        Error::AlreadyRegistered { fd, existing } => {
            assert_eq!(fd, c.as_raw_fd());
            assert_eq!(existing, h);
        }
        other => panic!("expected AlreadyRegistered, got {other:?}"),
    }
    assert_eq!(r.len(), 1);
}

#[test]
fn a_deleted_registration_never_gets_another_event() {
    // A and B are both ready in the same round; whichever runs first deletes
    // the other, which must then not run.
    let mut r: Reactor<Log> = Reactor::new().unwrap();
    let (a, mut a_peer) = pair();
    let (b, mut b_peer) = pair();
    let handles = Rc::new(RefCell::new(Vec::new()));
    for (name, fd) in [("a", &a), ("b", &b)] {
        let others = handles.clone();
        let h = r
            .add(
                borrow(fd),
                Interest::READ,
                Rights::READ_ONLY,
                move |r, log, ev| {
                    log.borrow_mut().push(name.to_string());
                    others.borrow_mut().retain(|&other| {
                        if other != ev.handle {
                            r.delete(other).unwrap();
                            return false;
                        }
                        true
                    });
                },
            )
            .unwrap();
        handles.borrow_mut().push(h);
    }
    a_peer.write_all(b"1").unwrap();
    b_peer.write_all(b"1").unwrap();
    let mut seen = log();
    r.run_once(SHORT, &mut seen).unwrap();
    assert_eq!(
        seen.borrow().len(),
        1,
        "only the first of the pair ran: {:?}",
        seen.borrow()
    );
    assert_eq!(r.len(), 1);
    r.run_once(SHORT, &mut seen).unwrap();
    r.run_once(SHORT, &mut seen).unwrap();
    assert_eq!(seen.borrow().len(), 3, "the survivor keeps getting events");
    assert!(seen.borrow().iter().all(|s| s == &seen.borrow()[0]));
}

#[test]
fn a_callback_can_delete_itself() {
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    let (a, mut b) = pair();
    r.add(borrow(&a), Interest::READ, Rights::READ_ONLY, |r, n, ev| {
        *n += 1;
        r.delete(ev.handle).unwrap();
    })
    .unwrap();
    b.write_all(b"x").unwrap();
    let mut n = 0;
    for _ in 0..3 {
        r.run_once(SHORT, &mut n).unwrap();
    }
    assert_eq!(n, 1);
    assert!(r.is_empty());
}

#[test]
fn a_registration_added_during_dispatch_waits_for_the_next_wait() {
    // C is already readable when A's callback adds it, and it even reuses
    // the slot B was deleted from in this round: it must not run until the
    // next wait.
    let mut r: Reactor<Log> = Reactor::new().unwrap();
    let (a, mut a_peer) = pair();
    let (b, mut b_peer) = pair();
    let (c, mut c_peer) = pair();
    c_peer.write_all(b"ready").unwrap();
    let c = Rc::new(c);
    let hb = Rc::new(RefCell::new(None));
    let hb2 = hb.clone();
    let c2 = c.clone();
    let mut added = false;
    r.add(
        borrow(&a),
        Interest::READ,
        Rights::READ_ONLY,
        move |r, log, _| {
            log.borrow_mut().push("a".into());
            if !added {
                added = true;
                if let Some(h) = hb2.borrow_mut().take() {
                    r.delete(h).unwrap();
                }
                r.add(
                    borrow(&c2),
                    Interest::READ,
                    Rights::READ_ONLY,
                    |_, log, _| log.borrow_mut().push("c".into()),
                )
                .unwrap();
            }
        },
    )
    .unwrap();
    *hb.borrow_mut() = Some(
        r.add(
            borrow(&b),
            Interest::READ,
            Rights::READ_ONLY,
            |_, log, _| log.borrow_mut().push("b".into()),
        )
        .unwrap(),
    );
    a_peer.write_all(b"1").unwrap();
    b_peer.write_all(b"1").unwrap();
    let mut seen = log();
    r.run_once(SHORT, &mut seen).unwrap();
    let first: Vec<String> = seen.borrow().clone();
    assert!(!first.contains(&"c".to_string()), "round 1: {first:?}");
    // b may have run before a in round 1 (kernel order), but never after.
    seen.borrow_mut().clear();
    r.run_once(SHORT, &mut seen).unwrap();
    let second = seen.borrow().clone();
    assert!(second.contains(&"c".to_string()), "round 2: {second:?}");
    assert!(!second.contains(&"b".to_string()), "round 2: {second:?}");
}

#[test]
fn reentrant_run_is_refused() {
    let mut r: Reactor<Option<Error>> = Reactor::new().unwrap();
    r.add_timer(Duration::ZERO, |r, out, _| {
        *out = r.run_once(Some(Duration::ZERO), &mut None).err();
    });
    let mut out = None;
    r.run_once(SHORT, &mut out).unwrap();
    assert!(matches!(out, Some(Error::Reentrant)));
}

#[test]
fn timers_fire_once_in_deadline_order() {
    let mut r: Reactor<Vec<u32>> = Reactor::new().unwrap();
    for (ms, id) in [(30u64, 3u32), (10, 1), (20, 2), (10, 11)] {
        r.add_timer(Duration::from_millis(ms), move |_, fired, _| fired.push(id));
    }
    let mut fired = Vec::new();
    let start = Instant::now();
    while fired.len() < 4 && start.elapsed() < Duration::from_secs(5) {
        r.run_once(None, &mut fired).unwrap();
    }
    assert_eq!(
        fired,
        vec![1, 11, 2, 3],
        "deadline order, ties in arming order"
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
    for _ in 0..3 {
        r.run_once(Some(Duration::from_millis(5)), &mut fired)
            .unwrap();
    }
    assert_eq!(fired.len(), 4, "one-shot timers fire once");
}

#[test]
fn a_due_timer_armed_by_a_descriptor_callback_fires_in_the_same_round() {
    // The slirp stack relies on this: fd callbacks record readiness and arm
    // a timer for "now"; the timer phase of the same round answers libslirp.
    let mut r: Reactor<Vec<&'static str>> = Reactor::new().unwrap();
    let t = r.add_timer_disarmed(|_, log, _| log.push("timer"));
    let (a, mut b) = pair();
    r.add(
        borrow(&a),
        Interest::READ,
        Rights::READ_ONLY,
        move |r, log, ev| {
            log.push("fd");
            r.rearm_timer_at(t, Instant::now()).unwrap();
            r.delete(ev.handle).unwrap();
        },
    )
    .unwrap();
    b.write_all(b"x").unwrap();
    let mut log = Vec::new();
    r.run_once(SHORT, &mut log).unwrap();
    assert_eq!(log, vec!["fd", "timer"]);
}

#[test]
fn timers_are_cancelled_and_rearmed_by_handle() {
    let mut r: Reactor<Vec<&'static str>> = Reactor::new().unwrap();
    let cancelled = r.add_timer(Duration::from_millis(5), |_, f, _| f.push("cancelled"));
    let moved = r.add_timer(Duration::from_secs(3600), |_, f, _| f.push("moved"));
    r.cancel_timer(cancelled).unwrap();
    assert!(matches!(
        r.cancel_timer(cancelled),
        Err(Error::UnknownTimer(_))
    ));
    r.rearm_timer(moved, Duration::from_millis(10)).unwrap();
    let mut fired = Vec::new();
    let start = Instant::now();
    while fired.is_empty() && start.elapsed() < Duration::from_secs(5) {
        r.run_once(None, &mut fired).unwrap();
    }
    assert_eq!(fired, vec!["moved"]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "re-armed to 10 ms, not the original hour"
    );
    // A fired one-shot timer is gone.
    assert!(matches!(r.cancel_timer(moved), Err(Error::UnknownTimer(_))));
}

#[test]
fn a_timer_cancelled_by_an_earlier_callback_in_the_same_round_does_not_fire() {
    let mut r: Reactor<Vec<&'static str>> = Reactor::new().unwrap();
    let victim = Rc::new(RefCell::new(None));
    let v2 = victim.clone();
    r.add_timer(Duration::from_millis(1), move |r, f, _| {
        f.push("first");
        r.cancel_timer(v2.borrow().unwrap()).unwrap();
    });
    *victim.borrow_mut() = Some(r.add_timer(Duration::from_millis(2), |_, f, _| f.push("victim")));
    std::thread::sleep(Duration::from_millis(5));
    let mut fired = Vec::new();
    r.run_once(SHORT, &mut fired).unwrap();
    r.run_once(SHORT, &mut fired).unwrap();
    assert_eq!(fired, vec!["first"]);
}

#[test]
fn a_one_shot_timer_can_rearm_itself_and_disarmed_timers_persist() {
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    r.add_timer(Duration::from_millis(1), |r, n, h| {
        *n += 1;
        if *n < 3 {
            r.rearm_timer(h, Duration::from_millis(1)).unwrap();
        }
    });
    let mut n = 0;
    let start = Instant::now();
    while n < 3 && start.elapsed() < Duration::from_secs(5) {
        r.run_once(None, &mut n).unwrap();
    }
    assert_eq!(n, 3);

    let mut fires = 0u32;
    let mut r2: Reactor<u32> = Reactor::new().unwrap();
    let t = r2.add_timer_disarmed(|_, n, _| *n += 1);
    assert_eq!(r2.timer_deadline(t).unwrap(), None);
    r2.run_once(Some(Duration::from_millis(5)), &mut fires)
        .unwrap();
    assert_eq!(fires, 0, "a disarmed timer does not fire");
    for _ in 0..2 {
        r2.rearm_timer(t, Duration::ZERO).unwrap();
        r2.run_once(SHORT, &mut fires).unwrap();
    }
    assert_eq!(
        fires, 2,
        "a persistent timer survives firing and can be re-armed"
    );
    r2.rearm_timer(t, Duration::from_millis(1)).unwrap();
    r2.disarm_timer(t).unwrap();
    r2.run_once(Some(Duration::from_millis(5)), &mut fires)
        .unwrap();
    assert_eq!(fires, 2);
    r2.cancel_timer(t).unwrap();
}

#[test]
fn periodic_timers_keep_their_phase() {
    // Every deadline of a periodic timer is first + k * period exactly,
    // however late each round runs: no cumulative drift.
    let period = Duration::from_millis(7);
    let mut r: Reactor<Vec<Instant>> = Reactor::new().unwrap();
    let h = r
        .add_periodic(period, |r, deadlines, h| {
            deadlines.push(r.timer_deadline(h).unwrap().expect("re-armed"));
            // Make the loop late on purpose.
            std::thread::sleep(Duration::from_millis(2));
        })
        .unwrap();
    let first = r.timer_deadline(h).unwrap().unwrap();
    let mut deadlines = Vec::new();
    while deadlines.len() < 10 {
        r.run_once(None, &mut deadlines).unwrap();
    }
    for d in &deadlines {
        let offset = d.duration_since(first).as_nanos();
        assert_eq!(offset % period.as_nanos(), 0, "off phase by {offset} ns");
    }
    assert!(deadlines.windows(2).all(|w| w[0] < w[1]));
    assert!(matches!(
        r.add_periodic(Duration::ZERO, |_, _, _| {}),
        Err(Error::ZeroPeriod)
    ));
    r.cancel_timer(h).unwrap();
}

#[test]
fn signals_are_delivered_on_the_loop_thread() {
    let loop_thread = std::thread::current().id();
    let mut r: Reactor<Vec<i32>> = Reactor::new().unwrap();
    let h = r
        .add_signal(libc::SIGUSR1, move |_, got, signo| {
            assert_eq!(std::thread::current().id(), loop_thread);
            got.push(signo)
        })
        .unwrap();
    assert!(matches!(
        r.add_signal(libc::SIGUSR1, |_, _, _| {}),
        Err(Error::SignalTaken(s)) if s == libc::SIGUSR1
    ));
    assert!(matches!(
        r.add_signal(libc::SIGKILL, |_, _, _| {}),
        Err(Error::BadSignal(_))
    ));
    assert!(matches!(
        r.add_signal(9999, |_, _, _| {}),
        Err(Error::BadSignal(9999))
    ));

    // Raised by the loop thread itself, from a callback.
    r.add_timer(Duration::ZERO, |_, _, _| {
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGUSR1).unwrap();
    });
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < Duration::from_secs(5) {
        r.run_once(Some(Duration::from_millis(50)), &mut got)
            .unwrap();
    }
    assert_eq!(got, vec![libc::SIGUSR1]);

    // Sent by another thread to the loop thread.
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: `me` is the loop thread, alive until the join below.
        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
    });
    got.clear();
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < Duration::from_secs(5) {
        r.run_once(Some(Duration::from_millis(50)), &mut got)
            .unwrap();
    }
    sender.join().unwrap();
    assert_eq!(got, vec![libc::SIGUSR1]);
    assert!(r
        .fds()
        .iter()
        .any(|f| f.owner == FdOwner::Internal("signalfd")));
    r.delete_signal(h).unwrap();
    assert!(matches!(r.delete_signal(h), Err(Error::UnknownSignal(_))));
}

#[test]
fn a_waker_interrupts_the_wait_from_another_thread() {
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    r.set_wake_callback(|_, n| *n += 1);
    let waker = r.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let mut woken = 0;
    let start = Instant::now();
    // Nothing else is registered: without the wake this would block for ever.
    r.run_once(None, &mut woken).unwrap();
    t.join().unwrap();
    assert_eq!(woken, 1);
    assert!(start.elapsed() >= Duration::from_millis(40));

    // A wake before the wait makes the next wait return at once.
    // (The wake callback would also run after a timeout: that the wait
    // ended well before its 10 s is what shows the wake was seen.)
    let start = Instant::now();
    r.waker().wake().unwrap();
    r.run_once(Some(Duration::from_secs(10)), &mut woken)
        .unwrap();
    assert_eq!(woken, 2);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the wake was lost"
    );

    // Round after round, with a descriptor ready at the same time: each
    // wake is seen (the notifier is re-armed every time) and the ready
    // descriptor is not lost to the wake.
    let (a, mut b) = pair();
    let a = Rc::new(a);
    r.add(Rc::clone(&a), Interest::READ, Rights::SOCKET, |_, n, _| {
        *n += 100
    })
    .unwrap();
    for round in 1..=3 {
        let waker = r.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake().unwrap();
        });
        let (mut n, start) = (0, Instant::now());
        r.run_once(Some(Duration::from_secs(10)), &mut n).unwrap();
        t.join().unwrap();
        assert_eq!(n, 1, "round {round}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "round {round}: the wake was lost"
        );
        b.write_all(b"x").unwrap();
        r.waker().wake().unwrap();
        let (mut n, start) = (0, Instant::now());
        r.run_once(Some(Duration::from_secs(10)), &mut n).unwrap();
        assert_eq!(n, 101, "round {round}: the data was lost");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "round {round}: the wake was lost"
        );
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &*a, &mut buf).unwrap(), 1);
    }
}

#[test]
fn run_until_stopped_from_a_callback() {
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    r.add_periodic(Duration::from_millis(1), |r, n, _| {
        *n += 1;
        if *n == 5 {
            r.stop();
        }
    })
    .unwrap();
    let mut n = 0;
    r.run(&mut n).unwrap();
    assert_eq!(n, 5);
}

#[test]
fn prepare_hooks_run_before_each_wait() {
    let mut r: Reactor<Vec<&'static str>> = Reactor::new().unwrap();
    let h = r.add_prepare(|_, log| log.push("prepare"));
    r.add_timer(Duration::ZERO, |_, log, _| log.push("timer"));
    let mut log = Vec::new();
    r.run_once(SHORT, &mut log).unwrap();
    assert_eq!(log, vec!["prepare", "timer"]);
    assert!(r.remove_prepare(h));
    assert!(!r.remove_prepare(h));
    log.clear();
    r.run_once(Some(Duration::ZERO), &mut log).unwrap();
    assert!(log.is_empty());
}

#[test]
fn fds_lists_every_descriptor_with_its_rights() {
    let mut r: Reactor = Reactor::new().unwrap();
    let (a, _b) = pair();
    let (c, _d) = pair();
    let ha = r
        .add(borrow(&a), Interest::READ, Rights::READ_ONLY, |_, _, _| {})
        .unwrap();
    let hc = r
        .add_disabled(borrow(&c), Interest::BOTH, Rights::SOCKET, |_, _, _| {})
        .unwrap();
    let fds = r.fds();
    let find = |h| {
        fds.iter()
            .find(|f| f.owner == FdOwner::Registration(h))
            .copied()
    };
    assert_eq!(find(ha).unwrap().fd, a.as_raw_fd());
    assert_eq!(find(ha).unwrap().rights, Rights::READ_ONLY);
    assert_eq!(
        find(hc).unwrap().rights,
        Rights::SOCKET,
        "disabled ones count too"
    );
    assert!(fds
        .iter()
        .any(|f| f.owner == FdOwner::Internal("event queue") && f.rights == Rights::POLLER));
    r.set_rights(hc, Rights::READ_ONLY).unwrap();
    assert!(r
        .fds()
        .iter()
        .any(|f| f.owner == FdOwner::Registration(hc) && f.rights == Rights::READ_ONLY));
}

#[test]
fn hangup_is_reported() {
    let mut r: Reactor<Vec<caploop::Event>> = Reactor::new().unwrap();
    let (a, b) = pair();
    r.add(
        borrow(&a),
        Interest::READ,
        Rights::READ_ONLY,
        |r, seen, ev| {
            seen.push(ev);
            r.delete(ev.handle).unwrap();
        },
    )
    .unwrap();
    drop(b);
    let mut seen = Vec::new();
    r.run_once(SHORT, &mut seen).unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].readable, "end of file reads as readable");
    assert!(seen[0].hangup);
}

#[test]
fn an_armed_timer_rearmed_earlier_or_later_fires_once_at_the_new_deadline() {
    let mut r: Reactor<Vec<&'static str>> = Reactor::new().unwrap();
    let later = r.add_timer(Duration::from_millis(1), |_, f, _| f.push("later"));
    let earlier = r.add_timer(Duration::from_secs(3600), |_, f, _| f.push("earlier"));
    let base = Instant::now();
    r.rearm_timer_at(later, base + Duration::from_millis(40))
        .unwrap();
    r.rearm_timer_at(earlier, base + Duration::from_millis(20))
        .unwrap();
    assert_eq!(
        r.timer_deadline(later).unwrap(),
        Some(base + Duration::from_millis(40))
    );
    assert_eq!(
        r.timer_deadline(earlier).unwrap(),
        Some(base + Duration::from_millis(20))
    );
    let mut fired = Vec::new();
    r.run_once(Some(Duration::from_millis(5)), &mut fired)
        .unwrap();
    assert!(fired.is_empty(), "not at the original 1 ms: {fired:?}");
    while fired.len() < 2 && base.elapsed() < Duration::from_secs(5) {
        r.run_once(None, &mut fired).unwrap();
    }
    assert_eq!(fired, vec!["earlier", "later"]);
    assert!(base.elapsed() >= Duration::from_millis(40));
    for _ in 0..3 {
        r.run_once(Some(Duration::from_millis(2)), &mut fired)
            .unwrap();
    }
    assert_eq!(fired.len(), 2, "each fired once, stale entries skipped");
}

#[test]
fn a_disarmed_timer_is_rearmed_many_times_and_rearms_itself() {
    // libslirp's pattern: few timers, many re-arms, earlier and later.
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    let t = r.add_timer_disarmed(|r, n, h| {
        *n += 1;
        if *n % 2 == 1 {
            // From its own callback, for "now": fires next round, not this.
            r.rearm_timer(h, Duration::ZERO).unwrap();
        }
    });
    let mut n = 0;
    for i in 0..50u32 {
        // Far, then near, then far again: only the last arm counts.
        r.rearm_timer(t, Duration::from_secs(3600)).unwrap();
        r.rearm_timer(t, Duration::ZERO).unwrap();
        if i % 5 == 0 {
            r.rearm_timer(t, Duration::from_secs(60)).unwrap();
            r.disarm_timer(t).unwrap();
            assert_eq!(r.timer_deadline(t).unwrap(), None);
            r.rearm_timer(t, Duration::ZERO).unwrap();
        }
        let before = n;
        r.run_once(SHORT, &mut n).unwrap();
        assert_eq!(n, before + 1, "one fire per round (round {i})");
        if n % 2 == 1 {
            assert!(r.timer_deadline(t).unwrap().is_some(), "re-armed itself");
            r.run_once(SHORT, &mut n).unwrap();
        }
    }
    assert_eq!(r.timer_deadline(t).unwrap(), None);
    r.run_once(Some(Duration::from_millis(2)), &mut n).unwrap();
    let total = n;
    r.cancel_timer(t).unwrap();
    r.run_once(Some(Duration::from_millis(2)), &mut n).unwrap();
    assert_eq!(n, total);
    assert!(matches!(
        r.rearm_timer(t, Duration::ZERO),
        Err(Error::UnknownTimer(_))
    ));
}

#[test]
fn a_timer_armed_by_a_timer_callback_for_now_fires_in_the_next_round() {
    let mut r: Reactor<Vec<&'static str>> = Reactor::new().unwrap();
    r.add_timer(Duration::ZERO, |r, f, _| {
        f.push("first");
        r.add_timer(Duration::ZERO, |_, f, _| f.push("second"));
    });
    let mut fired = Vec::new();
    r.run_once(SHORT, &mut fired).unwrap();
    assert_eq!(fired, vec!["first"]);
    r.run_once(SHORT, &mut fired).unwrap();
    assert_eq!(fired, vec!["first", "second"]);
}

#[test]
fn cancelled_timers_drop_their_callbacks_and_stale_handles_stay_stale() {
    let token = Rc::new(());
    let mut r: Reactor<Vec<u32>> = Reactor::new().unwrap();
    let t1 = token.clone();
    let h = r.add_timer(Duration::from_secs(3600), move |_, f, _| {
        let _ = &t1;
        f.push(1)
    });
    assert_eq!(Rc::strong_count(&token), 2);
    r.cancel_timer(h).unwrap();
    assert_eq!(Rc::strong_count(&token), 1, "dropped at cancel");

    // The slot is reused; the old handle does not reach the new timer.
    let h2 = r.add_timer(Duration::ZERO, |_, f, _| f.push(2));
    assert!(matches!(r.cancel_timer(h), Err(Error::UnknownTimer(_))));
    assert!(matches!(r.timer_deadline(h), Err(Error::UnknownTimer(_))));
    assert!(matches!(
        r.rearm_timer(h, Duration::ZERO),
        Err(Error::UnknownTimer(_))
    ));
    assert!(r.timer_deadline(h2).unwrap().is_some());

    // A timer that cancels itself from its callback: dropped when it returns.
    let t3 = token.clone();
    r.add_timer_disarmed(move |r, f, h| {
        let _ = &t3;
        f.push(3);
        r.cancel_timer(h).unwrap();
        r.add_timer(Duration::ZERO, |_, f, _| f.push(4));
    });
    let h3 = r
        .add_periodic(Duration::from_millis(1), |_, f, _| f.push(5))
        .unwrap();
    r.cancel_timer(h3).unwrap();
    let mut fired = Vec::new();
    r.run_once(SHORT, &mut fired).unwrap();
    assert_eq!(fired, vec![2]);
    assert_eq!(Rc::strong_count(&token), 2);
}

#[test]
fn a_self_cancelling_timer_callback_is_dropped_when_it_returns() {
    let token = Rc::new(());
    let mut r: Reactor<Vec<u32>> = Reactor::new().unwrap();
    let t = token.clone();
    let h = r.add_timer_disarmed(move |r, f, h| {
        let _ = &t;
        f.push(1);
        r.cancel_timer(h).unwrap();
        // May take the freed slot.
        r.add_timer(Duration::ZERO, |_, f, _| f.push(2));
    });
    r.rearm_timer(h, Duration::ZERO).unwrap();
    let mut fired = Vec::new();
    r.run_once(SHORT, &mut fired).unwrap();
    assert_eq!(fired, vec![1]);
    assert_eq!(Rc::strong_count(&token), 1);
    assert!(matches!(r.cancel_timer(h), Err(Error::UnknownTimer(_))));
    r.run_once(SHORT, &mut fired).unwrap();
    assert_eq!(fired, vec![1, 2]);
}

#[test]
fn many_timers_fire_in_deadline_order_with_ties_in_arming_order() {
    let mut r: Reactor<Vec<u32>> = Reactor::new().unwrap();
    let base = Instant::now() + Duration::from_millis(5);
    let mut expected = Vec::new();
    let mut handles = Vec::new();
    for i in 0..2000u32 {
        let ms = u64::from(i * 7919 % 97) / 10; // many ties
        let deadline = base + Duration::from_millis(ms);
        let h = r.add_timer_disarmed(move |_, f, _| f.push(i));
        r.rearm_timer_at(h, deadline).unwrap();
        handles.push((h, ms, i));
    }
    // Cancel every third, move every fifth later (re-armed: ties go last).
    let mut moved = Vec::new();
    for &(h, ms, i) in &handles {
        if i % 3 == 0 {
            r.cancel_timer(h).unwrap();
        } else if i % 5 == 0 {
            r.rearm_timer_at(h, base + Duration::from_millis(ms + 1))
                .unwrap();
            moved.push((ms + 1, i));
        } else {
            expected.push((ms, i));
        }
    }
    let mut order: Vec<(u64, usize, u32)> = expected
        .iter()
        .map(|&(ms, i)| (ms, 0, i))
        .chain(moved.iter().map(|&(ms, i)| (ms, 1, i)))
        .collect();
    order.sort();
    let expected: Vec<u32> = order.into_iter().map(|(_, _, i)| i).collect();
    let mut fired = Vec::new();
    let start = Instant::now();
    while fired.len() < expected.len() && start.elapsed() < Duration::from_secs(5) {
        r.run_once(None, &mut fired).unwrap();
    }
    // Arming order breaks ties: the moved timers were armed last.
    assert!(fired == expected, "fired out of order");
}

#[test]
fn a_shared_descriptor_stays_open_while_registered() {
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    let (a, mut b) = pair();
    let number = a.as_raw_fd();
    let a = Rc::new(a);
    let h = r
        .add(
            Rc::clone(&a),
            Interest::READ,
            Rights::READ_ONLY,
            |_, n, _| *n += 1,
        )
        .unwrap();
    drop(a); // the caller's reference: the registration keeps its own
    assert!(is_open(number), "closed while registered");
    b.write_all(b"x").unwrap();
    let mut n = 0;
    r.run_once(SHORT, &mut n).unwrap();
    assert_eq!(n, 1, "still watched");
    assert!(
        r.delete(h).unwrap().is_none(),
        "shared: nothing handed back"
    );
    assert!(
        !is_open(number),
        "the last reference went with the registration"
    );
}

#[test]
fn an_owned_registration_goes_with_its_owner() {
    // Deleted at once with the reactor at hand; dropped, deleted before
    // the next round could deliver an event to it.
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    let (a, _b) = pair();
    let h = r
        .add(
            OwnedFd::from(a),
            Interest::READ,
            Rights::SOCKET,
            |_, n, _| *n += 1,
        )
        .unwrap();
    let mut reg = caploop::reactor::Registration::new(&r, h);
    assert_eq!(reg.handle(), Some(h));
    reg.delete(&mut r).unwrap();
    assert_eq!(reg.handle(), None);
    reg.delete(&mut r).unwrap();
    assert!(r.is_empty());
    assert!(r.delete(h).is_err(), "deleted once");

    let (c, _d) = pair();
    let h = r
        .add(
            OwnedFd::from(c),
            Interest::READ,
            Rights::SOCKET,
            |_, n, _| *n += 1,
        )
        .unwrap();
    let (e, mut f) = pair();
    let h2 = r
        .add(
            OwnedFd::from(e),
            Interest::READ,
            Rights::SOCKET,
            |_, n, _| *n += 10,
        )
        .unwrap();
    f.write_all(b"y").unwrap();
    drop(caploop::reactor::Registration::new(&r, h2));
    let mut n = 0;
    r.run_once(SHORT, &mut n).unwrap();
    assert_eq!(n, 0, "a dropped registration saw an event");
    assert!(r.delete(h2).is_err(), "deleted by the drop");
    r.delete(h).unwrap();
    assert!(r.is_empty());
}

#[test]
fn a_remover_deletes_before_the_number_can_be_reused() {
    // A back end dropped without `close` queues its registration's
    // deletion; its descriptor closes; a new descriptor gets the same
    // number and registers without a clash, and the plan never lists the
    // old one.
    let mut r: Reactor<u32> = Reactor::new().unwrap();
    let remover = r.remover();
    let (a, _b) = pair();
    let number = a.as_raw_fd();
    let h = r
        .add(borrow(&a), Interest::READ, Rights::SOCKET, |_, _, _| {})
        .unwrap();
    remover.remove(h);
    assert!(
        !r.fds()
            .iter()
            .any(|f| f.owner == caploop::reactor::FdOwner::Registration(h)),
        "listed after its removal was asked for"
    );
    drop(a);
    let (c, mut d) = pair();
    assert_eq!(c.as_raw_fd(), number, "the number came back");
    let c = Rc::new(c);
    r.add(
        Rc::clone(&c),
        Interest::READ,
        Rights::READ_ONLY,
        |_, n, _| *n += 1,
    )
    .expect("the old registration is gone");
    assert!(r.delete(h).is_err(), "deleted once, by the remover");
    d.write_all(b"x").unwrap();
    let mut n = 0;
    r.run_once(SHORT, &mut n).unwrap();
    assert_eq!(n, 1);
}

#[test]
#[cfg(target_os = "linux")]
fn fds_lists_the_polling_crates_own_descriptors() {
    let r: Reactor = Reactor::new().unwrap();
    let internal: Vec<(&str, Rights)> = r
        .fds()
        .iter()
        .filter_map(|f| match f.owner {
            caploop::reactor::FdOwner::Internal(what) => Some((what, f.rights)),
            _ => None,
        })
        .collect();
    assert!(
        internal.contains(&(
            "polling's notifier (eventfd)",
            Rights::READ | Rights::WRITE | Rights::EVENT
        )),
        "{internal:?}"
    );
    assert!(
        internal
            .iter()
            .any(|(w, _)| *w == "polling's timer (timerfd)"),
        "{internal:?}"
    );
}
