//! Giving up privileges before the sandbox: a hypervisor's helper drops
//! root to an unprivileged user (as bhyve's helper does); the slirp4netns
//! front end, which may run as root inside a user namespace and has no
//! user to drop to, gives up every capability instead (all but
//! `CAP_NET_BIND_SERVICE` when an API socket may add forwards below 1024,
//! as slirp4netns's `--enable-sandbox` keeps it).

use crate::startup::StartupError;

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> StartupError {
    let what = what.into();
    move |source| StartupError::Sys { what, source }
}

/// What the session gives up before entering the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privileges {
    /// When root, become this user (normally `nobody`).
    DropToUser(String),
    /// Keep the user; drop every capability, keeping only
    /// `CAP_NET_BIND_SERVICE` if `bind_service`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // slirp4netns only
    DropCapabilities {
        /// Keep `CAP_NET_BIND_SERVICE`.
        bind_service: bool,
    },
}

/// Gives up what `privileges` says, and says what was done in one line for
/// the log.
pub fn give_up(privileges: &Privileges) -> Result<String, StartupError> {
    match privileges {
        Privileges::DropToUser(user) => Ok(match drop_root(user)? {
            Identity::Dropped { user, uid, gid } => format!("running as {user} ({uid}:{gid})"),
            Identity::StayedRoot(why) => {
                log::warn!("still root: {why}; the sandbox is the only barrier");
                format!("still root: {why}")
            }
            Identity::Unprivileged => "not root: nothing to drop".to_owned(),
        }),
        Privileges::DropCapabilities { bind_service } => {
            drop_capabilities(*bind_service)?;
            Ok(if *bind_service {
                "every capability dropped but CAP_NET_BIND_SERVICE (API forwards)".to_owned()
            } else {
                "every capability dropped".to_owned()
            })
        }
    }
}

/// What [`drop_root`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Not started as root: nothing to drop.
    Unprivileged,
    /// Now running as this user.
    Dropped {
        /// The user name.
        user: String,
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
    },
    /// Root, but the user does not exist (or is not mapped in this user
    /// namespace): stayed root, the sandbox is the only barrier.
    StayedRoot(String),
}

/// Drops to `user` (normally `nobody`) when running as root: supplementary
/// groups cleared, then gid, then uid. Must run before the sandbox, which
/// forbids reading /etc/passwd.
pub fn drop_root(user: &str) -> Result<Identity, StartupError> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid, User};
    if !Uid::effective().is_root() {
        return Ok(Identity::Unprivileged);
    }
    let Some(pw) = User::from_name(user).map_err(sys(format!("looking up user {user}")))? else {
        return Ok(Identity::StayedRoot(format!("no user {user}")));
    };
    if let Err(e) = setgroups(&[pw.gid]) {
        // In a user namespace without setgroups permission, this fails with
        // EPERM: the uid/gid switch below is still worth doing.
        log::debug!("setgroups: {e}");
    }
    if let Err(e) = setgid(pw.gid) {
        return Ok(Identity::StayedRoot(format!("setgid({}): {e}", pw.gid)));
    }
    setuid(pw.uid).map_err(sys(format!("setuid({})", pw.uid)))?;
    if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() {
        return Err(StartupError::Sys {
            what: "root could be regained after dropping it".into(),
            source: nix::Error::EPERM,
        });
    }
    Ok(Identity::Dropped {
        user: user.to_string(),
        uid: pw.uid.as_raw(),
        gid: pw.gid.as_raw(),
    })
}

/// `CAP_NET_BIND_SERVICE`.
#[cfg(target_os = "linux")]
pub const CAP_NET_BIND_SERVICE: u32 = 10;

/// Drops every capability from the effective, permitted, inheritable,
/// ambient and bounding sets, but `CAP_NET_BIND_SERVICE` in the effective
/// and permitted sets if `bind_service`.
#[cfg(target_os = "linux")]
pub fn drop_capabilities(bind_service: bool) -> Result<(), StartupError> {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with the rest below. EINVAL marks the end of the kernel's list;
    // EPERM means there was nothing to drop (not privileged).
    for cap in 0..64u32 {
        if bind_service && cap == CAP_NET_BIND_SERVICE {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            match nix::Error::last() {
                nix::Error::EINVAL => break,
                nix::Error::EPERM => break,
                e => {
                    return Err(sys(format!(
                        "dropping capability {cap} from the bounding set"
                    ))(e))
                }
            }
        }
    }
    // SAFETY: prctl with integer arguments only. Fails (EINVAL) on kernels
    // without ambient capabilities, which then have none to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let keep = if bind_service {
        1u32 << CAP_NET_BIND_SERVICE
    } else {
        0
    };
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        Data::default(),
    ];
    // SAFETY: capset reads one header and two data records (version 3),
    // which live for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc < 0 {
        return Err(sys("dropping capabilities (capset)")(nix::Error::last()));
    }
    Ok(())
}

/// Elsewhere there is no capability set to drop (FreeBSD's capability
/// mode is the sandbox itself).
#[cfg(not(target_os = "linux"))]
pub fn drop_capabilities(_bind_service: bool) -> Result<(), StartupError> {
    Ok(())
}
