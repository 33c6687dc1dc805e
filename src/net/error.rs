//! Errors of the net back ends. Each names the back end, interface or
//! length at fault; nothing here panics on bad input.

use std::io;

/// What went wrong in a net back-end call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No back end's prefix matches the name (bhyve's `netbe_init` returning
    /// `EINVAL`).
    #[error("no net backend matches {name:?}: the name must start with one of {known}")]
    UnknownBackend {
        /// The name given.
        name: String,
        /// The prefixes that are known, comma separated.
        known: String,
    },
    /// The back end exists but cannot be used here (another platform, or
    /// not built yet).
    #[error("net backend {name:?}: {reason}")]
    Unsupported {
        /// The name given.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// The name cannot be a network interface or device name.
    #[error("invalid network interface name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A virtio-net header length other than 0, 10 or 12.
    #[error("virtio-net header length {0} is not one of 0, 10 and 12")]
    BadVnetHdrLen(usize),
    /// The back end refused the features or header length.
    #[error(
        "net backend {backend:?} cannot take features {features:#x} \
         with a {vnet_hdr_len}-byte virtio-net header"
    )]
    CapRefused {
        /// The back end's name.
        backend: String,
        /// The features asked for.
        features: u64,
        /// The header length asked for.
        vnet_hdr_len: usize,
    },
    /// The iovecs are shorter than the virtio-net header they must hold.
    #[error("the iovecs hold {have} bytes, fewer than the {need}-byte virtio-net header")]
    ShortIov {
        /// The header length.
        need: usize,
        /// The bytes the iovecs hold.
        have: usize,
    },
    /// A received frame does not fit in the buffers given. It stays
    /// pending: the next `recv` with enough room gets it, or
    /// `Netbe::recv_discard` drops it. Through [`Netbe`](super::Netbe)
    /// both lengths count the front end's virtio-net header, as
    /// `Netbe::peek_recvlen` does.
    #[error(
        "a {len}-byte frame does not fit in {room} bytes of buffers; it stays pending \
         (receive it with more room, or discard it)"
    )]
    FrameTooBig {
        /// The frame's length.
        len: usize,
        /// The room the buffers had.
        room: usize,
    },
    /// A received frame longer than any front end takes
    /// ([`MAX_FRAME_LEN`](super::MAX_FRAME_LEN)); it was dropped.
    #[error("a {len}-byte frame is longer than any front end takes ({max}); it was dropped")]
    FrameDropped {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame to send is shorter than an Ethernet header.
    #[error("a {len}-byte frame is shorter than an Ethernet header (14 bytes): not sent")]
    Runt {
        /// Its length, without a virtio-net header.
        len: usize,
    },
    /// A frame to send is longer than the back end carries
    /// ([`Netbe::max_frame_len`](super::Netbe::max_frame_len): its MTU
    /// and the Ethernet header); it was not sent.
    #[error(
        "a {len}-byte frame is longer than this back end carries ({max} bytes: \
         an MTU of {} and the 14-byte Ethernet header): not sent",
        max.saturating_sub(14)
    )]
    FrameTooLong {
        /// Its length, without a virtio-net header.
        len: usize,
        /// The longest the back end carries.
        max: usize,
    },
    /// A frame's virtio-net header asks for what was not offered or cannot
    /// be done (a checksum beyond the frame, a GSO type not negotiated, a
    /// super-segment that is not one TCP datagram).
    #[error("virtio-net header: {0}")]
    BadOffload(String),
    /// An option in a back end's name that it does not take or cannot read.
    #[error("net backend {backend:?}: option {option:?}: {reason}")]
    BadOption {
        /// The whole name given.
        backend: String,
        /// The option, as given.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The slirp helper could not apply its configuration (a host forward
    /// it could not bind, a rule it refused...): what it said, and how it
    /// ended.
    #[error("the slirp helper {helper:?} could not start: {reason}")]
    HelperFailed {
        /// The helper binary.
        helper: String,
        /// Its error, and its exit status when known.
        reason: String,
    },
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// The operation, with the device it was about.
        op: String,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The reactor refused a registration change.
    #[error(transparent)]
    Reactor(#[from] crate::reactor::Error),
}

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Io {
            op: op.into(),
            source: source.into(),
        }
    }
}

impl From<crate::frame::FrameError> for Error {
    /// A header shorter than it must be is [`Error::ShortIov`]; anything
    /// else the frame layer refuses, [`Error::BadOffload`].
    fn from(e: crate::frame::FrameError) -> Error {
        match e {
            crate::frame::FrameError::Short { have, need } => Error::ShortIov { have, need },
            crate::frame::FrameError::Bad(what) => Error::BadOffload(what),
        }
    }
}

impl From<Error> for io::Error {
    /// Keeps the kernel's error kind for [`Error::Io`]; buffer and length
    /// errors become [`io::ErrorKind::InvalidInput`].
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::ShortIov { .. }
            | Error::FrameTooBig { .. }
            | Error::FrameDropped { .. }
            | Error::Runt { .. }
            | Error::FrameTooLong { .. }
            | Error::BadOffload(_)
            | Error::BadOption { .. }
            | Error::BadVnetHdrLen(_)
            | Error::BadName { .. }
            | Error::UnknownBackend { .. } => io::ErrorKind::InvalidInput,
            Error::Unsupported { .. } | Error::CapRefused { .. } => io::ErrorKind::Unsupported,
            Error::Reactor(_) | Error::HelperFailed { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
