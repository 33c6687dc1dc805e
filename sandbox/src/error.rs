//! Why a session could not start or had to stop, each naming the flag,
//! path, descriptor or value at fault.

use std::io;

use caploop::wire::stream::StreamError;

use crate::cli::UsageError;
use crate::startup::StartupError;

/// What can stop a session.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The command line asks for something that cannot be.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The reactor failed.
    #[error(transparent)]
    Reactor(#[from] caploop::reactor::Error),
    /// libslirp refused the configuration or a forward.
    #[error(transparent)]
    Slirp(#[from] caploop::slirp::Error),
    /// The sandbox could not be entered.
    #[error("sandbox: {0}")]
    Sandbox(#[from] caploop::sandbox::Error),
    /// Start-up (privileges, descriptors) failed.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The link to the hypervisor or namespace failed.
    #[error("{what}: {source}")]
    Link {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// QEMU's stream broke the framing.
    #[error("QEMU stream: {0}")]
    Stream(#[from] StreamError),
    /// bhyve's configuration record could not be read.
    #[error("bhyve configuration: {0}")]
    BhyveConfig(String),
    /// The target namespace or its tap could not be had.
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
}
