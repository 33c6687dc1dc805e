//! caploop: one thread, one reactor, every descriptor limited to exactly the
//! rights it uses, and then no ambient authority at all.
//!
//! caploop is for hypervisor authors who run device back ends the way the
//! most careful systems do (bhyve's capability-mode helpers, crosvm's
//! jailed devices). It has three layers:
//!
//! - [`reactor`]: a single-threaded event loop on the `polling` crate
//!   (epoll on Linux, kqueue on FreeBSD and macOS) with descriptor
//!   registrations, timers, signals and a cross-thread [`Waker`]. It is
//!   bhyve's mevent, redone: registrations can be added disabled, enabled,
//!   disabled, deleted or deleted-and-closed by handle, from any callback.
//! - [`rights`]: the platform-neutral [`Rights`] each registration records,
//!   so the sandbox knows what every descriptor needs.
//! - `sandbox`, `slirp`, `net`, `wire`: limiting and entering the sandbox,
//!   libslirp user-mode networking on the reactor, bhyve's net back-end API,
//!   and the pure codecs of the helper protocols.
//!
//! # Features
//!
//! - `slirp` (default): the `slirp` module and the libslirp net back end
//!   (`net::slirp`). Links the C libslirp (4.7 or newer), found through
//!   pkg-config at build time.
//! - `api`: `wire::api`, the slirp4netns JSON API codec (serde, serde_json).
//!
//! With `--no-default-features` caploop depends on no C library beyond libc
//! and on no serialization crate: the reactor, the rights, the sandbox, the
//! tap and netmap back ends and the nvlist and stream codecs are all there.
//!
//! # Example
//!
//! A socketpair echo: one registration reads what the peer wrote and
//! answers it, a timer stops the loop if nothing happens.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! use caploop::{Interest, Reactor, Rights};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The state every callback sees: what came back to the client.
//! let mut answers: Vec<u8> = Vec::new();
//! let mut reactor: Reactor<Vec<u8>> = Reactor::new()?;
//!
//! let (mut server, mut client) = UnixStream::pair()?;
//! server.set_nonblocking(true)?;
//! client.set_nonblocking(true)?;
//!
//! // The server side: echo whatever arrives. The registration and the
//! // callback share the stream (an `Rc`), so it stays open while registered.
//! let server = Rc::new(server);
//! let s = Rc::clone(&server);
//! reactor.add(server, Interest::READ, Rights::SOCKET, move |_, _, _| {
//!     let mut buf = [0u8; 512];
//!     if let Ok(n) = (&*s).read(&mut buf) {
//!         let _ = (&*s).write_all(&buf[..n]);
//!     }
//! })?;
//!
//! // The client side: collect the answer and stop when it is complete.
//! client.write_all(b"ping")?;
//! let client = Rc::new(client);
//! let c = Rc::clone(&client);
//! let h = reactor.add(client, Interest::READ, Rights::SOCKET, move |r, answers, ev| {
//!     let mut buf = [0u8; 512];
//!     if let Ok(n) = (&*c).read(&mut buf) {
//!         answers.extend_from_slice(&buf[..n]);
//!     }
//!     if answers.len() >= 4 {
//!         r.delete(ev.handle).unwrap(); // a callback may delete itself
//!         r.stop();
//!     }
//! })?;
//!
//! // A watchdog timer, cancelled by handle if never needed.
//! let watchdog = reactor.add_timer(Duration::from_secs(5), |r, _, _| r.stop());
//!
//! // Every live descriptor and the rights it needs: the sandbox's plan
//! // (the two registrations, the event queue and, on Linux, the `polling`
//! // crate's own eventfd and timerfd).
//! assert!(reactor.fds().len() >= 3);
//!
//! reactor.run(&mut answers)?;
//! assert_eq!(answers, b"ping");
//! reactor.cancel_timer(watchdog)?;
//! assert!(reactor.delete(h).is_err()); // already deleted by its callback
//! # Ok(())
//! # }
//! ```
//!
//! # Threads
//!
//! A [`Reactor`] is `!Send`: it is created, fed and run on one thread.
//! Other threads reach it only through a [`Waker`]. Signals routed with
//! [`Reactor::add_signal`] are blocked in the loop thread's mask; create the
//! reactor and route signals before starting other threads so they inherit
//! the mask.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod closing;
pub mod frame;
pub mod net;
pub mod reactor;
pub mod rights;
pub mod sandbox;
#[cfg(feature = "slirp")]
#[cfg_attr(docsrs, doc(cfg(feature = "slirp")))]
pub mod slirp;
#[cfg(feature = "slirp")]
#[cfg_attr(docsrs, doc(cfg(feature = "slirp")))]
pub mod tcp;
pub mod wire;

pub use reactor::{Event, Handle, Interest, Reactor, Remover, Source, TimerHandle, Waker};
pub use rights::Rights;
