//! The sandbox plan: which descriptors get which [`Rights`], what the
//! process keeps ([`Policy`]), and what to do before entering. What the
//! plan becomes on each platform is in [`rules`](super::rules).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use crate::reactor::{FdOwner, Reactor};
use crate::rights::Rights;

/// How much the process keeps once the sandbox is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// No new connections to the outside: no `connect`, no `sendto` with an
    /// address, no new sockets (unless [`Policy::allow_bind`]). On FreeBSD
    /// the process enters capability mode.
    #[default]
    Restricted,
    /// The guest may reach the outside: `socket` (IPv4 and IPv6 only),
    /// `connect` and `sendto` with an address are allowed, and on Linux
    /// `stat` by path (libslirp's DNS forwarder checks `/etc/resolv.conf`).
    /// On Linux TCP connects can be narrowed to [`Policy::connect_ports`]. On FreeBSD
    /// capability mode forbids both calls, so open mode limits descriptor
    /// rights but does **not** enter capability mode.
    Open,
}

/// What the sandbox allows beyond the planned descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Restricted (default) or open.
    pub mode: Mode,
    /// Linux, open mode: the only TCP ports `connect` may reach (Landlock
    /// `NetPort` rules). Empty means any port. Ignored in restricted mode,
    /// where no connect is allowed at all, and on FreeBSD.
    pub connect_ports: Vec<u16>,
    /// Allow `socket` + `bind` + `listen` after entry, for host forwards
    /// added at run time (the slirp4netns API). Default false: forwards must
    /// be set up before entering. In restricted mode only TCP sockets may be
    /// made. On FreeBSD capability mode forbids `bind` to an address, so
    /// this has no effect there (add forwards before entering).
    pub allow_bind: bool,
    /// Allow new threads after entry (`clone` of a thread, never a
    /// process): for a back end that starts helper threads once sandboxed.
    /// They inherit the sandbox. Default false: `std::thread::spawn` fails
    /// with an error (and panics) after entry. Ignored on FreeBSD, where
    /// capability mode allows threads.
    pub allow_threads: bool,
    /// Linux: log seccomp violations through the kernel audit log instead of
    /// refusing them with `EPERM` (for finding a missing syscall; never in
    /// production). Landlock still refuses.
    pub audit: bool,
}

impl Policy {
    /// Restricted mode, no bind: the default.
    pub fn restricted() -> Policy {
        Policy::default()
    }

    /// Open mode, any port, no bind.
    pub fn open() -> Policy {
        Policy {
            mode: Mode::Open,
            ..Policy::default()
        }
    }
}

/// One descriptor the plan limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFd {
    /// The descriptor.
    pub fd: RawFd,
    /// Everything the process may do with it after entry.
    pub rights: Rights,
    /// Who asked for it (for errors and the report).
    pub label: String,
}

type Hook = Box<dyn FnOnce() -> std::io::Result<()>>;

/// The descriptors to limit and the work to do before entering.
///
/// Collect it with [`Plan::from_reactor`], add the caller's own descriptors
/// with [`Plan::add`], then call [`Plan::apply_and_enter`]. A descriptor
/// added twice keeps the union of the rights asked for.
#[derive(Default)]
pub struct Plan {
    pub(crate) fds: Vec<PlannedFd>,
    pub(crate) hooks: Vec<(String, Hook)>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("fds", &self.fds)
            .field(
                "hooks",
                &self.hooks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Plan {
        Plan::default()
    }

    /// Every live descriptor of `reactor` with the rights its registration
    /// recorded, the reactor's own event queue and signal descriptor
    /// included.
    pub fn from_reactor<D>(reactor: &Reactor<D>) -> Plan {
        let mut plan = Plan::new();
        plan.add_reactor(reactor);
        plan
    }

    /// Adds every live descriptor of `reactor` (see [`Plan::from_reactor`]).
    pub fn add_reactor<D>(&mut self, reactor: &Reactor<D>) -> &mut Plan {
        for info in reactor.fds() {
            let label = match info.owner {
                FdOwner::Registration(h) => format!("registration {h:?}"),
                FdOwner::Internal(what) => format!("reactor {what}"),
            };
            self.add_raw(info.fd, info.rights, label);
        }
        self
    }

    /// Adds a descriptor the caller holds, with the rights it needs.
    pub fn add(&mut self, fd: &impl AsFd, rights: Rights, label: &str) -> &mut Plan {
        self.add_raw(fd.as_fd().as_raw_fd(), rights, label.to_owned())
    }

    /// Adds a descriptor by number. It must stay open until entry, where it
    /// is checked.
    pub fn add_raw(&mut self, fd: RawFd, rights: Rights, label: impl Into<String>) -> &mut Plan {
        match self.fds.iter_mut().find(|p| p.fd == fd) {
            Some(p) => p.rights |= rights,
            None => self.fds.push(PlannedFd {
                fd,
                rights,
                label: label.into(),
            }),
        }
        self
    }

    /// Runs `hook` just before any limit is applied, while the process still
    /// has its full authority: read what a library would otherwise read
    /// lazily after entry (libslirp's `/etc/resolv.conf` on the first DNS
    /// query in open mode: see the [module docs](super) for the two
    /// queries it takes), open files, warm caches. Hooks run in the order
    /// added; the first error aborts entry with [`Error::Hook`](super::Error::Hook).
    pub fn before_entry(
        &mut self,
        name: &str,
        hook: impl FnOnce() -> std::io::Result<()> + 'static,
    ) -> &mut Plan {
        self.hooks.push((name.to_owned(), Box::new(hook)));
        self
    }

    /// The planned descriptors, in the order added.
    pub fn fds(&self) -> &[PlannedFd] {
        &self.fds
    }

    /// The rights planned for `fd`, if it is planned.
    pub fn rights_of(&self, fd: RawFd) -> Option<Rights> {
        self.fds.iter().find(|p| p.fd == fd).map(|p| p.rights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_merges_duplicates() {
        let mut p = Plan::new();
        p.add_raw(3, Rights::READ, "a")
            .add_raw(3, Rights::EVENT, "b");
        assert_eq!(p.fds().len(), 1);
        assert_eq!(p.rights_of(3), Some(Rights::READ | Rights::EVENT));
        assert_eq!(p.rights_of(4), None);
    }
}
