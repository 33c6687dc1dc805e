//! The one contract between a front end's link (to its hypervisor or
//! namespace) and the serve loop, calloop's `EventSource` as the model:
//!
//! - a [`Source`] registers its own descriptors and hooks on the reactor
//!   and hands every frame it reads to the [`Core`] (`deliver`, then
//!   `settle` at the end of each read: one batch boundary for all), which
//!   also ends the session; it names for the sandbox plan whatever it
//!   keeps that is not a registration;
//! - a [`Tx`] takes the stack's frames toward the peer and keeps what the
//!   link cannot take now in its out-queue, flushed once per round and
//!   whenever the registration the source returned becomes writable.
//!
//! Most links are one descriptor read with an [`Rx`] ([`Link::polled`]:
//! bhyve, QEMU stream and dgram, the tap); vhost-user brings its own
//! source (the socket's messages, and kick eventfds registered as they
//! arrive), on the same road.

use std::os::fd::{OwnedFd, RawFd};

use caploop::reactor::{Handle, Interest, Reactor};
use caploop::Rights;

use crate::core::Core;
use crate::error::ServeError;
use crate::link::{LinkKind, Rx, Tx};

/// Where a link's frames come from: what it registers on the reactor.
pub trait Source {
    /// Descriptors the link keeps that are not registrations (the
    /// vhost-user socket as its gate reads it), with their rights and a
    /// label, for the sandbox plan. Asked before [`register`](Self::register).
    fn plan(&self) -> Vec<(RawFd, Rights, &'static str)> {
        Vec::new()
    }

    /// Registers the link's descriptors and hooks on `r`; what they read
    /// goes to `core`. Returns the registration the loop watches for
    /// writability while the [`Tx`] holds frames.
    fn register(self: Box<Self>, r: &mut Reactor<()>, core: Core) -> Result<Handle, ServeError>;
}

/// What a front end hands the serve loop: where frames come from and
/// where they go.
pub struct Link {
    /// Registers the link's sources.
    pub source: Box<dyn Source>,
    /// Writes frames.
    pub tx: Box<dyn Tx>,
}

impl Link {
    /// A link that is one descriptor, read with `rx` and written with
    /// `tx` (both use it), limited to `kind`'s rights.
    pub fn polled(fd: OwnedFd, kind: LinkKind, rx: Box<dyn Rx>, tx: Box<dyn Tx>) -> Link {
        Link {
            source: Box::new(Polled { fd, kind, rx }),
            tx,
        }
    }
}

/// One descriptor, read by an [`Rx`] whenever it is readable.
struct Polled {
    fd: OwnedFd,
    kind: LinkKind,
    rx: Box<dyn Rx>,
}

impl Source for Polled {
    fn register(self: Box<Self>, r: &mut Reactor<()>, core: Core) -> Result<Handle, ServeError> {
        let Polled { fd, kind, mut rx } = *self;
        let rights = match kind {
            LinkKind::Socket => Rights::SOCKET,
            LinkKind::Tap => Rights::READ | Rights::WRITE | Rights::EVENT,
        };
        // The reactor owns the link's descriptor while the session runs.
        let h = r.add(fd, Interest::READ, rights, move |r, _, ev| {
            if ev.writable && !core.flush_now(r) {
                return;
            }
            if !(ev.readable || ev.hangup || ev.error) {
                return;
            }
            // One read is one batch of the inbound path.
            let res = rx.pull(ev.hangup, &mut |arrival| core.deliver(arrival));
            core.settle(r);
            match res {
                Ok(true) => {}
                Ok(false) => core.hung_up(r),
                Err(e) => core.end(r, Err(e)),
            }
        })?;
        Ok(h)
    }
}
