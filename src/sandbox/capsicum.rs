//! FreeBSD: limit each planned descriptor with Capsicum, then `cap_enter`.
//!
//! Thin on purpose: the limits come from [`super::rules::capsicum_limits`]
//! (unit-tested on every host). CI type-checks and lints this file for
//! FreeBSD (`.ci/cross`) but cannot run it, so each call was also checked
//! against the `capsicum` 0.4.5 crate's source:
//!
//! - `FileRights::new() -> Self` (src/right.rs:260), `FileRights::allow(&mut self,
//!   Right) -> &mut Self` (src/right.rs:316); `Right::{Read, Write, Seek, Event,
//!   Accept, Connect, Bind, Listen, Shutdown, Getsockopt, Setsockopt, Getpeername,
//!   Getsockname, Fstat, Fcntl, Ioctl, KqueueEvent, KqueueChange}` (src/right.rs:30-120)
//! - trait `CapRights { fn limit<F: AsFd>(&self, f: &F) -> io::Result<()> }`
//!   (src/common.rs:8,13), implemented for `FileRights` (src/right.rs:420,
//!   `cap_rights_limit`), `IoctlRights` (src/ioctl.rs:193, `cap_ioctls_limit`, only
//!   for `Limited`) and `FcntlRights` (src/fcntl.rs:177, `cap_fcntls_limit`)
//! - `IoctlsBuilder::new()` (src/ioctl.rs:44), `allow(self, u_long) -> Self`, by
//!   value (src/ioctl.rs:64), `finalize(self) -> IoctlRights` = `Limited(list)`
//!   (src/ioctl.rs:101); `libc::FIONREAD`/`FIONBIO` are `c_ulong` = `u_long` on
//!   FreeBSD (libc 0.2.191 src/unix/bsd/mod.rs:193-194)
//! - `FcntlRights::new()` (src/fcntl.rs:111), `allow(&mut self, Fcntl) -> &mut Self`
//!   (src/fcntl.rs:124), `Fcntl::{GetFL, SetFL}` (src/fcntl.rs:22,24)
//! - `enter() -> io::Result<()>` (src/process.rs:10), `get_mode() ->
//!   io::Result<bool>` (src/process.rs:28)
//!
//! `F_GETFD`/`F_SETFD` need no right on FreeBSD, so debug builds' check
//! before closing an `OwnedFd` keeps working.

use std::io;
use std::os::fd::BorrowedFd;

use ::capsicum::{CapRights, Fcntl, FcntlRights, FileRights, IoctlsBuilder, Right};

use super::plan::Mode;
use super::rules::{capsicum_limits, CapFcntl, CapIoctl, CapRight};
use super::{Error, Plan, PlannedFd, Policy, Report, Result};

/// Applies the plan (see [`enter`]); Capsicum has no Landlock report.
pub(super) fn apply(
    plan: &Plan,
    policy: &Policy,
    report: &mut Report,
) -> Result<Option<super::LandlockReport>> {
    enter(plan, policy, report)?;
    Ok(None)
}

/// Whether the process is in capability mode.
pub(super) fn fill_status(st: &mut super::SandboxStatus) {
    st.capability_mode = ::capsicum::get_mode().ok();
}

pub(super) fn enter(plan: &Plan, policy: &Policy, report: &mut Report) -> Result<()> {
    for p in &plan.fds {
        limit(p)?;
    }
    if policy.mode == Mode::Open {
        let msg = "open mode: descriptor rights are limited but capability mode is not \
                   entered (connect and addressed sendto are impossible in it)";
        log::warn!("{msg}");
        report.warnings.push(msg.into());
        return Ok(());
    }
    if policy.allow_bind {
        report
            .warnings
            .push("allow_bind has no effect in capability mode: bind is refused".into());
    }
    ::capsicum::enter().map_err(|source| Error::Syscall {
        syscall: "cap_enter",
        source,
    })?;
    report.capability_mode = true;
    Ok(())
}

fn limit(p: &PlannedFd) -> Result<()> {
    // SAFETY: the descriptor was checked open by `super::enter`, and the
    // borrow ends within this function.
    let fd = unsafe { BorrowedFd::borrow_raw(p.fd) };
    let fail = |call: &'static str| {
        move |source: io::Error| Error::Limit {
            fd: p.fd,
            label: p.label.clone(),
            call,
            source,
        }
    };
    let limits = capsicum_limits(p.rights);

    let mut rights = FileRights::new();
    for r in &limits.rights {
        rights.allow(right(*r));
    }
    rights.limit(&fd).map_err(fail("cap_rights_limit"))?;

    if limits.rights.contains(&CapRight::Ioctl) {
        let mut ioctls = IoctlsBuilder::new();
        for i in &limits.ioctls {
            ioctls = ioctls.allow(match i {
                CapIoctl::Fionread => libc::FIONREAD,
                CapIoctl::Fionbio => libc::FIONBIO,
                CapIoctl::NiocTxsync => crate::net::netmap::abi::NIOCTXSYNC,
                CapIoctl::NiocRxsync => crate::net::netmap::abi::NIOCRXSYNC,
                CapIoctl::NiocCtrl => crate::net::netmap::abi::NIOCCTRL,
            });
        }
        ioctls
            .finalize()
            .limit(&fd)
            .map_err(fail("cap_ioctls_limit"))?;
    }

    if limits.rights.contains(&CapRight::Fcntl) {
        let mut fcntls = FcntlRights::new();
        for f in &limits.fcntls {
            fcntls.allow(match f {
                CapFcntl::GetFL => Fcntl::GetFL,
                CapFcntl::SetFL => Fcntl::SetFL,
            });
        }
        fcntls.limit(&fd).map_err(fail("cap_fcntls_limit"))?;
    }
    Ok(())
}

fn right(r: CapRight) -> Right {
    match r {
        CapRight::Read => Right::Read,
        CapRight::Write => Right::Write,
        CapRight::Seek => Right::Seek,
        CapRight::Event => Right::Event,
        CapRight::Accept => Right::Accept,
        CapRight::Connect => Right::Connect,
        CapRight::Bind => Right::Bind,
        CapRight::Listen => Right::Listen,
        CapRight::Shutdown => Right::Shutdown,
        CapRight::Getsockopt => Right::Getsockopt,
        CapRight::Setsockopt => Right::Setsockopt,
        CapRight::Getpeername => Right::Getpeername,
        CapRight::Getsockname => Right::Getsockname,
        CapRight::Fstat => Right::Fstat,
        CapRight::Fcntl => Right::Fcntl,
        CapRight::Ioctl => Right::Ioctl,
        CapRight::KqueueEvent => Right::KqueueEvent,
        CapRight::KqueueChange => Right::KqueueChange,
        CapRight::Pdwait => Right::Pdwait,
        CapRight::Pdkill => Right::Pdkill,
    }
}
