//! What a registration holds: its descriptor, owned, shared or (unsafe)
//! borrowed by number, and the [`Remover`] that deletes registrations from
//! a `Drop`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::Handle;

/// A descriptor to register, and who keeps it open while it is registered.
///
/// - An [`OwnedFd`] hands the descriptor to the reactor: [`Reactor::delete`](super::Reactor::delete)
///   hands it back, [`Reactor::delete_close`](super::Reactor::delete_close) closes it.
/// - An `Rc<T>` (any `T: AsFd`, e.g. `Rc<UnixStream>`) is shared: the
///   registration holds a reference, so the descriptor cannot close while
///   it is registered, whatever the caller drops; deleting the registration
///   drops the reactor's reference.
/// - [`Source::borrow_raw`] (unsafe) registers a number the caller promises
///   to keep open until it deletes the registration (a C library's socket,
///   whose life that library rules).
///
/// There is no conversion from `&T`: a borrow cannot outlive the call, and a
/// registration that outlived its descriptor would watch whatever reused
/// the number.
#[derive(Debug)]
pub struct Source(pub(super) SourceKind);

pub(super) enum SourceKind {
    Owned(OwnedFd),
    Shared(std::rc::Rc<dyn AsFd>),
    Raw(RawFd),
}

impl std::fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::Owned(fd) => write!(f, "Owned({})", fd.as_raw_fd()),
            SourceKind::Shared(fd) => write!(f, "Shared({})", fd.as_fd().as_raw_fd()),
            SourceKind::Raw(fd) => write!(f, "Raw({fd})"),
        }
    }
}

impl From<OwnedFd> for Source {
    fn from(fd: OwnedFd) -> Source {
        Source(SourceKind::Owned(fd))
    }
}

impl<T: AsFd + 'static> From<std::rc::Rc<T>> for Source {
    fn from(fd: std::rc::Rc<T>) -> Source {
        Source(SourceKind::Shared(fd))
    }
}

impl Source {
    /// A descriptor number the caller keeps open.
    ///
    /// # Safety
    ///
    /// `fd` must stay open until the registration is deleted, queued for
    /// deletion with a [`Remover`] (the reactor deletes queued
    /// registrations before it registers, lists or dispatches anything
    /// else), or the reactor is dropped. Closing it otherwise would leave
    /// the number registered, and a descriptor that reuses it would get its
    /// events and its planned rights.
    pub unsafe fn borrow_raw(fd: RawFd) -> Source {
        Source(SourceKind::Raw(fd))
    }

    pub(super) fn raw(&self) -> RawFd {
        match &self.0 {
            SourceKind::Owned(fd) => fd.as_raw_fd(),
            SourceKind::Shared(fd) => fd.as_fd().as_raw_fd(),
            SourceKind::Raw(fd) => *fd,
        }
    }
}

/// Deletes registrations from where the reactor is not at hand, such as a
/// `Drop` (a back end dropped without being closed). Made by
/// [`Reactor::remover`](super::Reactor::remover); cheap to clone, not `Send`.
///
/// The registration stops getting events at once (before the next callback
/// runs) and is deleted then; its descriptor, held by the reactor
/// (owned or shared), is released with it, so the number is never left
/// registered after the descriptor closed.
#[derive(Clone)]
pub struct Remover {
    pub(super) queue: std::rc::Rc<std::cell::RefCell<Vec<Handle>>>,
}

impl std::fmt::Debug for Remover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remover")
            .field("queued", &self.queue.borrow().len())
            .finish()
    }
}

impl Remover {
    /// Asks for `h` to be deleted.
    pub fn remove(&self, h: Handle) {
        self.queue.borrow_mut().push(h);
    }
}

/// A registration owned by a value (a back end, a device): deleted by
/// [`delete`](Self::delete) when the reactor is at hand, or, if the owner
/// is dropped first, queued through a [`Remover`] so the reactor deletes it
/// before anything else.
#[derive(Debug)]
pub struct Registration {
    handle: Option<Handle>,
    remover: Remover,
}

impl Registration {
    /// Takes ownership of `handle`, a registration of `reactor`.
    pub fn new<D>(reactor: &super::Reactor<D>, handle: Handle) -> Registration {
        Registration {
            handle: Some(handle),
            remover: reactor.remover(),
        }
    }

    /// The registration's handle, until it is deleted or released.
    pub fn handle(&self) -> Option<Handle> {
        self.handle
    }

    /// Deletes the registration now (a no-op once it is gone).
    pub fn delete<D>(&mut self, reactor: &mut super::Reactor<D>) -> super::Result<()> {
        match self.handle.take() {
            Some(h) => reactor
                .delete(h)
                .map(|fd| fd.map_or((), crate::closing::close)),
            None => Ok(()),
        }
    }

    /// Queues the registration for deletion, for an owner that learns
    /// inside a callback, without the reactor, that its descriptor is done.
    pub fn release(&mut self) {
        if let Some(h) = self.handle.take() {
            self.remover.remove(h);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.release();
    }
}
