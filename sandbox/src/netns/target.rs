//! The target of the slirp4netns front end: a PID or a netns path, and the
//! namespace files to join for it, each checked to be a namespace of the
//! right kind (`NS_GET_NSTYPE`) so a wrong PID or path is reported here,
//! naming it.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::NetnsError;

/// The network namespace to serve: slirp4netns's `PID|PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A process whose network namespace (`/proc/PID/ns/net`) is the target;
    /// its user namespace is joined too when it is not ours.
    Pid(i32),
    /// A network namespace file (`--netns-type=path`), such as Podman's
    /// `/run/netns/netns-<uuid>`.
    Path(PathBuf),
}

impl Target {
    /// Reads slirp4netns's target argument: a PID unless `netns_type` is
    /// `"path"` (`None` and `"pid"` mean a PID).
    pub fn parse(target: &str, netns_type: Option<&str>) -> Result<Target, NetnsError> {
        match netns_type.unwrap_or("pid") {
            "pid" => match target.parse::<i32>() {
                Ok(pid) if pid > 0 => Ok(Target::Pid(pid)),
                _ => Err(NetnsError::BadPid(target.to_owned())),
            },
            "path" => {
                if target.is_empty() {
                    Err(NetnsError::EmptyPath)
                } else {
                    Ok(Target::Path(PathBuf::from(target)))
                }
            }
            other => Err(NetnsError::BadNetnsType(other.to_owned())),
        }
    }

    /// The network namespace file this target names.
    pub(super) fn netns_path(&self) -> PathBuf {
        match self {
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Target::Path(p) => p.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pid(pid) => write!(f, "the network namespace of PID {pid}"),
            Target::Path(p) => write!(f, "the network namespace at {}", p.display()),
        }
    }
}

/// The namespace files to join, opened in the parent.
#[derive(Debug)]
pub(super) struct NsFds {
    /// The user namespace to join first, if any.
    pub user: Option<OwnedFd>,
    /// The network namespace.
    pub net: OwnedFd,
}

/// Opens a namespace file read-only and close-on-exec.
fn open_ns(path: &Path, what: impl FnOnce() -> String) -> Result<OwnedFd, NetnsError> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
        let hint = match (e, path.starts_with("/proc")) {
            (Errno::ENOENT, true) => "; the process does not exist",
            (Errno::EACCES | Errno::EPERM, _) => "; it is not ours to join",
            _ => "",
        };
        NetnsError::Open {
            what: what(),
            path: path.to_owned(),
            source: e.into(),
            hint,
        }
    })
}

/// Checks that `fd` is a namespace of the kind `flag` (`NS_GET_NSTYPE`).
fn check_ns_type(
    fd: BorrowedFd<'_>,
    path: &Path,
    flag: CloneFlags,
    expected: &'static str,
) -> Result<(), NetnsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value; `fd`
    // is open for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    let found = if rc < 0 {
        match Errno::last() {
            Errno::ENOTTY | Errno::EINVAL => "not a namespace file at all".to_owned(),
            e => format!("not usable as a namespace ({e})"),
        }
    } else if rc == flag.bits() {
        return Ok(());
    } else {
        let kind = match rc {
            libc::CLONE_NEWNET => "network",
            libc::CLONE_NEWUSER => "user",
            libc::CLONE_NEWNS => "mount",
            libc::CLONE_NEWPID => "PID",
            libc::CLONE_NEWUTS => "UTS",
            libc::CLONE_NEWIPC => "IPC",
            libc::CLONE_NEWCGROUP => "cgroup",
            libc::CLONE_NEWTIME => "time",
            _ => "some other",
        };
        format!("a {kind} namespace")
    };
    Err(NetnsError::NotNamespace {
        path: path.to_owned(),
        found,
        expected,
    })
}

/// Opens the namespaces `open_tap` joins (see the module docs for which).
pub(super) fn namespace_fds(
    target: &Target,
    userns_path: Option<&Path>,
) -> Result<NsFds, NetnsError> {
    let net_path = target.netns_path();
    let net = open_ns(&net_path, || match target {
        Target::Pid(pid) => format!(
            "the network namespace of PID {pid} ({})",
            net_path.display()
        ),
        Target::Path(p) => format!("the network namespace file {}", p.display()),
    })?;
    check_ns_type(net.as_fd(), &net_path, CloneFlags::CLONE_NEWNET, "network")?;

    let user = match (userns_path, target) {
        (Some(path), _) => {
            let fd = open_ns(path, || {
                format!("the user namespace file {} (--userns-path)", path.display())
            })?;
            check_ns_type(fd.as_fd(), path, CloneFlags::CLONE_NEWUSER, "user")?;
            Some(fd)
        }
        (None, Target::Pid(pid)) => {
            let path = PathBuf::from(format!("/proc/{pid}/ns/user"));
            let what = || format!("the user namespace of PID {pid} ({})", path.display());
            let fd = open_ns(&path, what)?;
            let theirs = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| NetnsError::Open {
                what: what(),
                path: path.clone(),
                source: e.into(),
                hint: "",
            })?;
            let own = Path::new("/proc/self/ns/user");
            let ours = std::fs::metadata(own).map_err(|e| NetnsError::Open {
                what: "our own user namespace (/proc/self/ns/user)".to_owned(),
                path: own.to_owned(),
                source: e,
                hint: "",
            })?;
            if theirs.st_dev == ours.dev() && theirs.st_ino == ours.ino() {
                None
            } else {
                Some(fd)
            }
        }
        (None, Target::Path(_)) => None,
    };
    Ok(NsFds { user, net })
}
