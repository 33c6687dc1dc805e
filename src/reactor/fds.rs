//! Descriptor registrations: add, enable, disable, change, delete, and the
//! list of every descriptor with its rights (the sandbox's plan).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use polling::PollMode;

use super::source::SourceKind;
use super::*;

impl<D> Reactor<D> {
    // ----- descriptors -------------------------------------------------

    /// Registers `fd` for `interest`, enabled, with the `rights` it needs.
    /// `cb` runs on the loop thread each round the descriptor is ready.
    ///
    /// Pass an [`OwnedFd`] to hand the descriptor to the reactor, or an
    /// `Rc` of a socket or file to share it (see [`Source`]).
    pub fn add<F>(
        &mut self,
        fd: impl Into<Source>,
        interest: Interest,
        rights: Rights,
        cb: F,
    ) -> Result<Handle>
    where
        F: FnMut(&mut Reactor<D>, &mut D, Event) + 'static,
    {
        self.insert(fd.into(), interest, rights, true, Box::new(cb))
    }

    /// Registers `fd` like [`add`](Reactor::add), but disabled: it gets no
    /// events until [`enable`](Reactor::enable).
    pub fn add_disabled<F>(
        &mut self,
        fd: impl Into<Source>,
        interest: Interest,
        rights: Rights,
        cb: F,
    ) -> Result<Handle>
    where
        F: FnMut(&mut Reactor<D>, &mut D, Event) + 'static,
    {
        self.insert(fd.into(), interest, rights, false, Box::new(cb))
    }

    fn insert(
        &mut self,
        source: Source,
        interest: Interest,
        rights: Rights,
        enabled: bool,
        cb: FdCb<D>,
    ) -> Result<Handle> {
        self.apply_removals();
        let fd = source.raw();
        if fd < 0 {
            return Err(Error::BadFd(fd));
        }
        if let Some(&index) = self.by_fd.get(&fd) {
            let existing = Handle {
                index,
                gen: self.gens[index as usize],
            };
            return Err(Error::AlreadyRegistered { fd, existing });
        }
        let index = match self.free.last() {
            Some(&i) => i,
            None => self.slots.len() as u32,
        };
        if enabled {
            self.poll_add(fd, index, interest)?;
        } else {
            check_open(fd)?;
        }
        if self.free.pop().is_none() {
            self.slots.push(None);
            self.gens.push(0);
        }
        let gen = self.gens[index as usize];
        self.slots[index as usize] = Some(FdEntry {
            gen,
            source,
            interest,
            enabled,
            rights,
            cb: Some(cb),
        });
        self.by_fd.insert(fd, index);
        Ok(Handle { index, gen })
    }

    fn entry(&mut self, h: Handle) -> Result<&mut FdEntry<D>> {
        match self.slots.get_mut(h.index as usize) {
            Some(Some(e)) if e.gen == h.gen => Ok(e),
            _ => Err(Error::UnknownHandle(h)),
        }
    }

    fn poll_add(&self, fd: RawFd, index: u32, interest: Interest) -> Result<()> {
        // A number detached earlier and reused: this registration is new.
        self.detached.borrow_mut().remove(&fd);
        let ev = poll_event(index, interest);
        // SAFETY: `fd` was checked non-negative. On epoll and kqueue a
        // registration that outlives its descriptor cannot touch freed
        // memory: the kernel drops it when the descriptor closes, and the
        // reactor deletes it before closing descriptors it owns.
        let res = unsafe { self.poller.add_with_mode(fd, ev, PollMode::Level) };
        res.map_err(|e| classify(fd, "registering", e))
    }

    pub(super) fn poll_delete(&self, fd: RawFd) {
        if self.detached.borrow_mut().remove(&fd) {
            // Taken out while it was open (a Detacher): nothing left.
            return;
        }
        // SAFETY: only the descriptor number is used, to remove its
        // registration; a closed descriptor yields an error, counted.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = self.poller.delete(fd) {
            self.queue_errors.set(self.queue_errors.get() + 1);
            log::debug!("removing fd {} from the event queue: {e}", fd.as_raw_fd());
        }
    }

    /// How many removals from the event queue failed so far (a descriptor
    /// closed before its registration was deleted). On epoll that is
    /// harmless; polling's kqueue back end keeps such a number and refuses
    /// the next registration of it (`AlreadyExists`), so caploop's own
    /// code keeps this at zero, and tests check it.
    pub fn event_queue_errors(&self) -> u64 {
        self.queue_errors.get()
    }

    /// A [`Detacher`] for this reactor.
    #[cfg_attr(not(feature = "slirp"), allow(dead_code))]
    pub(crate) fn detacher(&self) -> Detacher {
        Detacher {
            poller: self.poller.clone(),
            detached: self.detached.clone(),
        }
    }

    /// Starts delivering events to a disabled registration.
    pub fn enable(&mut self, h: Handle) -> Result<()> {
        let e = self.entry(h)?;
        if e.enabled {
            return Ok(());
        }
        let (fd, interest) = (e.source.raw(), e.interest);
        self.poll_add(fd, h.index, interest)?;
        self.entry(h)?.enabled = true;
        Ok(())
    }

    /// Stops delivering events, keeping the registration. Events already
    /// collected in this round are not delivered either.
    pub fn disable(&mut self, h: Handle) -> Result<()> {
        let e = self.entry(h)?;
        if !e.enabled {
            return Ok(());
        }
        e.enabled = false;
        let fd = e.source.raw();
        self.poll_delete(fd);
        Ok(())
    }

    /// Whether the registration is enabled.
    pub fn is_enabled(&mut self, h: Handle) -> Result<bool> {
        Ok(self.entry(h)?.enabled)
    }

    /// Changes what the registration waits for.
    pub fn set_interest(&mut self, h: Handle, interest: Interest) -> Result<()> {
        let e = self.entry(h)?;
        if e.interest == interest {
            return Ok(());
        }
        let (fd, enabled) = (e.source.raw(), e.enabled);
        if enabled {
            // SAFETY: the descriptor is registered and, by the `add`
            // contract, still open.
            let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
            self.poller
                .modify_with_mode(bfd, poll_event(h.index, interest), PollMode::Level)
                .map_err(|e| classify(fd, "changing interest of", e))?;
        }
        self.entry(h)?.interest = interest;
        Ok(())
    }

    /// The registration's interest.
    pub fn interest(&mut self, h: Handle) -> Result<Interest> {
        Ok(self.entry(h)?.interest)
    }

    /// Records new rights for the registration's descriptor.
    pub fn set_rights(&mut self, h: Handle, rights: Rights) -> Result<()> {
        self.entry(h)?.rights = rights;
        Ok(())
    }

    /// The registration's descriptor.
    pub fn fd(&mut self, h: Handle) -> Result<RawFd> {
        Ok(self.entry(h)?.source.raw())
    }

    /// Borrows the descriptor of a registration the reactor owns or borrows.
    pub fn borrow_fd(&mut self, h: Handle) -> Result<BorrowedFd<'_>> {
        let fd = self.entry(h)?.source.raw();
        // SAFETY: the descriptor stays open while registered (owned: the
        // reactor closes it only on delete_close; borrowed: by the `add`
        // contract), and the borrow ends before any `&mut self` call.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// Deletes the registration, leaving the descriptor open. An owned
    /// descriptor is handed back. Its callback, if it is the one running,
    /// finishes and is then dropped.
    pub fn delete(&mut self, h: Handle) -> Result<Option<OwnedFd>> {
        self.entry(h)?;
        let e = self.slots[h.index as usize].take().expect("checked");
        let fd = e.source.raw();
        if e.enabled {
            self.poll_delete(fd);
        }
        self.by_fd.remove(&fd);
        self.gens[h.index as usize] = h.gen.wrapping_add(1);
        self.free.push(h.index);
        Ok(match e.source.0 {
            SourceKind::Owned(fd) => Some(fd),
            SourceKind::Shared(_) | SourceKind::Raw(_) => None,
        })
    }

    /// Deletes the registration and closes its descriptor, which the
    /// reactor must own; a shared one is released (closed when its last
    /// holder drops it); a raw borrowed one is refused, still registered.
    /// Once a sandbox is in force a planned descriptor's number is retired
    /// rather than freed ([`closing`](crate::closing)).
    pub fn delete_close(&mut self, h: Handle) -> Result<()> {
        if let SourceKind::Raw(fd) = self.entry(h)?.source.0 {
            return Err(Error::NotOwned(fd));
        }
        if let Some(fd) = self.delete(h)? {
            crate::closing::close(fd);
        }
        Ok(())
    }

    /// A [`Remover`]: deletes registrations of this reactor from a `Drop`.
    pub fn remover(&self) -> Remover {
        Remover {
            queue: self.removals.clone(),
        }
    }

    /// Deletes what a [`Remover`] asked for.
    pub(super) fn apply_removals(&mut self) {
        if self.removals.borrow().is_empty() {
            return;
        }
        let queued = std::mem::take(&mut *self.removals.borrow_mut());
        for h in queued {
            if let Ok(Some(fd)) = self.delete(h) {
                crate::closing::close(fd);
            }
        }
    }

    /// Every live descriptor with the rights it needs: registrations, then
    /// the reactor's own. This is the plan the sandbox limits.
    pub fn fds(&self) -> Vec<FdInfo> {
        let removing = self.removals.borrow();
        let mut out: Vec<FdInfo> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let e = s.as_ref()?;
                let handle = Handle {
                    index: i as u32,
                    gen: e.gen,
                };
                (!removing.contains(&handle)).then_some(FdInfo {
                    fd: e.source.raw(),
                    rights: e.rights,
                    owner: FdOwner::Registration(handle),
                })
            })
            .collect();
        out.push(FdInfo {
            fd: self.poller.as_raw_fd(),
            rights: Rights::POLLER,
            owner: FdOwner::Internal("event queue"),
        });
        for fd in self.signals.fds() {
            out.push(FdInfo {
                fd,
                rights: Rights::READ_ONLY,
                owner: FdOwner::Internal("signalfd"),
            });
        }
        let known: Vec<RawFd> = out.iter().map(|i| i.fd).collect();
        out.extend(poller_internal_fds(self.poller.as_raw_fd(), &known));
        out
    }

    /// Number of descriptor registrations.
    pub fn len(&self) -> usize {
        self.by_fd.len()
    }

    /// Whether there are no descriptor registrations.
    pub fn is_empty(&self) -> bool {
        self.by_fd.is_empty()
    }
}

/// The descriptors the `polling` crate keeps registered in its own event
/// queue (on Linux an eventfd to wake the wait and a timerfd for
/// sub-millisecond timeouts), found in the epoll descriptor's
/// `/proc/self/fdinfo` entry (`tfd:` lines): every registered descriptor
/// that is not one of `known`. Empty elsewhere, and once `/proc` cannot be
/// read (inside the sandbox): the plan is taken before entry.
#[cfg(target_os = "linux")]
fn poller_internal_fds(epfd: RawFd, known: &[RawFd]) -> Vec<FdInfo> {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")) else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<RawFd>().ok())
        .filter(|fd| !known.contains(fd))
        .map(|fd| {
            let what = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            let (rights, owner) = match what.to_string_lossy().as_ref() {
                "anon_inode:[eventfd]" => (
                    Rights::READ | Rights::WRITE | Rights::EVENT,
                    "polling's notifier (eventfd)",
                ),
                "anon_inode:[timerfd]" => (Rights::READ_ONLY, "polling's timer (timerfd)"),
                _ => (Rights::READ_ONLY, "polling's own descriptor"),
            };
            FdInfo {
                fd,
                rights,
                owner: FdOwner::Internal(owner),
            }
        })
        .collect()
}

/// kqueue keeps no descriptors of its own beside the queue.
#[cfg(not(target_os = "linux"))]
fn poller_internal_fds(_epfd: RawFd, _known: &[RawFd]) -> Vec<FdInfo> {
    Vec::new()
}

fn check_open(fd: RawFd) -> Result<()> {
    // SAFETY: F_GETFD only reads the descriptor table entry.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::BadFd(fd));
    }
    Ok(())
}

fn classify(fd: RawFd, what: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EBADF) => Error::BadFd(fd),
        Some(libc::EPERM) => Error::NotPollable(fd),
        _ => Error::io(format!("{what} fd {fd}"), e),
    }
}

/// Takes a registered descriptor out of the event queue at once, while it
/// is still open, for code that learns of a close only from inside a
/// library call, without the reactor (libslirp's `unregister_poll_fd`,
/// right before it closes the socket): kqueue forgets a descriptor only
/// while it is open. The registration itself is deleted later as usual.
#[derive(Clone)]
#[cfg_attr(not(feature = "slirp"), allow(dead_code))]
pub(crate) struct Detacher {
    poller: std::sync::Arc<polling::Poller>,
    detached: std::rc::Rc<std::cell::RefCell<std::collections::HashSet<RawFd>>>,
}

#[cfg_attr(not(feature = "slirp"), allow(dead_code))]
impl Detacher {
    /// Removes `fd` from the event queue if it is there.
    pub(crate) fn detach(&self, fd: RawFd) {
        if fd < 0 {
            return;
        }
        // SAFETY: `fd` is open (the caller is told so before the close);
        // only its number is used.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if self.poller.delete(borrowed).is_ok() {
            self.detached.borrow_mut().insert(fd);
        }
    }
}
