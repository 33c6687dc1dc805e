//! Errors of the reactor. Each names the descriptor, handle or signal at
//! fault so a caller can log it and move on; the reactor never panics on
//! bad input.

use std::io;
use std::os::fd::RawFd;

use super::{Handle, SignalHandle, TimerHandle};

/// What went wrong in a reactor call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The descriptor is not open (closed, or never was).
    #[error("fd {0} is not an open descriptor")]
    BadFd(RawFd),
    /// The descriptor refers to something that cannot be polled (a regular
    /// file or a directory).
    #[error("fd {0} cannot be polled (a regular file or directory?)")]
    NotPollable(RawFd),
    /// The descriptor already has a registration in this reactor.
    #[error("fd {fd} is already registered (as {existing:?})")]
    AlreadyRegistered {
        /// The descriptor given twice.
        fd: RawFd,
        /// The registration that holds it.
        existing: Handle,
    },
    /// The handle names no live registration: it was deleted, or belongs to
    /// another reactor.
    #[error("unknown registration handle {0:?}")]
    UnknownHandle(Handle),
    /// The timer handle names no live timer.
    #[error("unknown timer handle {0:?}")]
    UnknownTimer(TimerHandle),
    /// The signal handle names no live signal registration.
    #[error("unknown signal handle {0:?}")]
    UnknownSignal(SignalHandle),
    /// `delete_close` was asked to close a descriptor the reactor does not own.
    #[error("fd {0} is borrowed, not owned by the reactor: delete it and close it yourself")]
    NotOwned(RawFd),
    /// The signal number is not one the reactor can route (invalid, or one
    /// that cannot be caught such as SIGKILL and SIGSTOP).
    #[error("signal {0} cannot be delivered to a callback")]
    BadSignal(i32),
    /// The signal already has a callback in this reactor.
    #[error("signal {0} already has a callback")]
    SignalTaken(i32),
    /// A periodic timer was asked for a zero period.
    #[error("a periodic timer needs a non-zero period")]
    ZeroPeriod,
    /// `run` or `run_once` was called from inside a callback.
    #[error("the reactor is already dispatching: run and run_once cannot be nested")]
    Reentrant,
    /// This platform has no way to deliver the requested event kind.
    #[error("{0} is not supported on this platform")]
    Unsupported(&'static str),
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// The operation, with the descriptor it was about.
        op: String,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            op: op.into(),
            source,
        }
    }
}

/// The reactor's result type.
pub type Result<T> = std::result::Result<T, Error>;
