//! The FreeBSD Capsicum limits as data: what each portable right becomes as
//! capability rights, ioctl and fcntl limits. Platform-independent and
//! unit-tested; `super::super::capsicum` applies it on FreeBSD.

use crate::rights::Rights;

/// A Capsicum capability right (the `capsicum` crate's `Right` variant of the
/// same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapRight {
    /// `CAP_READ` (also `CAP_RECV`).
    Read,
    /// `CAP_WRITE` (also `CAP_SEND`).
    Write,
    /// `CAP_SEEK`.
    Seek,
    /// `CAP_EVENT`: poll, select, kevent on the descriptor.
    Event,
    /// `CAP_ACCEPT`.
    Accept,
    /// `CAP_CONNECT`.
    Connect,
    /// `CAP_BIND`.
    Bind,
    /// `CAP_LISTEN`.
    Listen,
    /// `CAP_SHUTDOWN`.
    Shutdown,
    /// `CAP_GETSOCKOPT`.
    Getsockopt,
    /// `CAP_SETSOCKOPT`.
    Setsockopt,
    /// `CAP_GETPEERNAME`.
    Getpeername,
    /// `CAP_GETSOCKNAME`.
    Getsockname,
    /// `CAP_FSTAT`.
    Fstat,
    /// `CAP_FCNTL`, narrowed by the fcntl list.
    Fcntl,
    /// `CAP_IOCTL`, narrowed by the ioctl list.
    Ioctl,
    /// `CAP_KQUEUE_EVENT`: wait on a kqueue.
    KqueueEvent,
    /// `CAP_KQUEUE_CHANGE`: change a kqueue's filters.
    KqueueChange,
    /// `CAP_PDWAIT`: wait for a process descriptor's process.
    Pdwait,
    /// `CAP_PDKILL`: signal it.
    Pdkill,
}

/// An fcntl command left to a descriptor that has [`CapRight::Fcntl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapFcntl {
    /// `F_GETFL`.
    GetFL,
    /// `F_SETFL`.
    SetFL,
}

/// An ioctl left to a descriptor that has [`CapRight::Ioctl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapIoctl {
    /// `FIONREAD`: bytes waiting to be read.
    Fionread,
    /// `FIONBIO`: set non-blocking mode (tap devices).
    Fionbio,
    /// netmap's `NIOCTXSYNC`.
    NiocTxsync,
    /// netmap's `NIOCRXSYNC`.
    NiocRxsync,
    /// netmap's `NIOCCTRL` (`NETMAP_REQ_PORT_HDR_SET` on a bound port).
    NiocCtrl,
}

/// The complete Capsicum limit of one descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapLimits {
    /// `cap_rights_limit`.
    pub rights: Vec<CapRight>,
    /// `cap_ioctls_limit`, applied when `rights` has [`CapRight::Ioctl`].
    pub ioctls: Vec<CapIoctl>,
    /// `cap_fcntls_limit`, applied when `rights` has [`CapRight::Fcntl`].
    pub fcntls: Vec<CapFcntl>,
}

/// Maps portable rights to Capsicum rights, ioctls and fcntls.
///
/// `RECV` and `SEND` are `CAP_READ` and `CAP_WRITE` on FreeBSD. `POLLER`
/// (the reactor's kqueue) becomes `CAP_KQUEUE_EVENT` + `CAP_KQUEUE_CHANGE`.
/// `IOCTL_TAP` keeps only `FIONBIO`: the tap device is configured before
/// entry.
pub fn capsicum_limits(rights: Rights) -> CapLimits {
    const MAP: &[(Rights, CapRight)] = &[
        (Rights::READ, CapRight::Read),
        (Rights::RECV, CapRight::Read),
        (Rights::WRITE, CapRight::Write),
        (Rights::SEND, CapRight::Write),
        (Rights::SENDMSG, CapRight::Write),
        (Rights::SEEK, CapRight::Seek),
        (Rights::EVENT, CapRight::Event),
        (Rights::ACCEPT, CapRight::Accept),
        (Rights::CONNECT, CapRight::Connect),
        (Rights::BIND, CapRight::Bind),
        (Rights::LISTEN, CapRight::Listen),
        (Rights::SHUTDOWN, CapRight::Shutdown),
        (Rights::GETSOCKOPT, CapRight::Getsockopt),
        (Rights::SETSOCKOPT, CapRight::Setsockopt),
        (Rights::GETPEERNAME, CapRight::Getpeername),
        (Rights::GETSOCKNAME, CapRight::Getsockname),
        (Rights::FSTAT, CapRight::Fstat),
        (Rights::FCNTL_FLAGS, CapRight::Fcntl),
        (Rights::IOCTL_FIONREAD, CapRight::Ioctl),
        (Rights::IOCTL_TAP, CapRight::Ioctl),
        (Rights::IOCTL_NETMAP, CapRight::Ioctl),
        (Rights::POLLER, CapRight::KqueueEvent),
        (Rights::POLLER, CapRight::KqueueChange),
        (Rights::PROCESS, CapRight::Pdwait),
        (Rights::PROCESS, CapRight::Pdkill),
    ];
    let mut out = CapLimits::default();
    for &(r, c) in MAP {
        if rights.contains(r) && !out.rights.contains(&c) {
            out.rights.push(c);
        }
    }
    if rights.contains(Rights::IOCTL_FIONREAD) {
        out.ioctls.push(CapIoctl::Fionread);
    }
    if rights.contains(Rights::IOCTL_TAP) {
        out.ioctls.push(CapIoctl::Fionbio);
    }
    if rights.contains(Rights::IOCTL_NETMAP) {
        out.ioctls.extend([
            CapIoctl::NiocTxsync,
            CapIoctl::NiocRxsync,
            CapIoctl::NiocCtrl,
        ]);
    }
    if rights.contains(Rights::FCNTL_FLAGS) {
        out.fcntls = vec![CapFcntl::GetFL, CapFcntl::SetFL];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsicum_read_only() {
        let l = capsicum_limits(Rights::READ_ONLY);
        assert_eq!(
            l.rights,
            vec![CapRight::Read, CapRight::Event, CapRight::Fstat]
        );
        assert!(l.ioctls.is_empty());
        assert!(l.fcntls.is_empty());
    }

    #[test]
    fn capsicum_listener_carries_accepted_socket_rights() {
        let l = capsicum_limits(Rights::LISTENER);
        for r in [
            CapRight::Read,
            CapRight::Write,
            CapRight::Event,
            CapRight::Accept,
            CapRight::Setsockopt,
            CapRight::Shutdown,
            CapRight::Fcntl,
            CapRight::Ioctl,
        ] {
            assert!(l.rights.contains(&r), "{r:?} missing");
        }
        assert!(!l.rights.contains(&CapRight::Connect));
        assert!(!l.rights.contains(&CapRight::Bind));
        assert_eq!(l.ioctls, vec![CapIoctl::Fionread]);
        assert_eq!(l.fcntls, vec![CapFcntl::GetFL, CapFcntl::SetFL]);
        // RECV/SEND fold into READ/WRITE: no duplicates.
        let mut sorted = l.rights.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), l.rights.len());
    }

    #[test]
    fn capsicum_poller_and_tap() {
        let l = capsicum_limits(Rights::POLLER);
        assert_eq!(
            l.rights,
            vec![CapRight::KqueueEvent, CapRight::KqueueChange]
        );
        let l = capsicum_limits(Rights::READ | Rights::WRITE | Rights::EVENT | Rights::IOCTL_TAP);
        assert!(l.rights.contains(&CapRight::Ioctl));
        assert_eq!(l.ioctls, vec![CapIoctl::Fionbio]);
        assert!(capsicum_limits(Rights::empty()).rights.is_empty());
    }

    #[test]
    fn sending_to_an_address_and_process_descriptors_map_to_their_capabilities() {
        // kern_sendit: sendto with an address needs CAP_SEND and CAP_CONNECT.
        let l = capsicum_limits(Rights::SEND | Rights::CONNECT);
        assert!(l.rights.contains(&CapRight::Write) && l.rights.contains(&CapRight::Connect));
        // pdkill and EVFILT_PROCDESC on a process descriptor.
        let l = capsicum_limits(Rights::PROCESS | Rights::EVENT);
        for r in [CapRight::Pdwait, CapRight::Pdkill, CapRight::Event] {
            assert!(l.rights.contains(&r), "{r:?}");
        }
    }
}
