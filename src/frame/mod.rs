//! Frames on the wire: the ground floor that the stack's way in
//! ([`crate::slirp`]), the back ends ([`crate::net`]) and the helper's
//! links build on, importing nothing of theirs. Byte offsets of the
//! Ethernet, IPv4, IPv6, TCP and UDP headers are written here once; so are the
//! Internet checksum, the virtio-net header and its offloads, merging a
//! flow's segments into one (GSO toward a peer that takes it, GRO in
//! front of libslirp), cutting a super-segment back into segments, and
//! thinning a round's pure ACKs.
//!
//! - [`ethernet`], [`ipv4`], [`ipv6`], [`tcp`], [`udp`]: checked views
//!   of each header (after `new_checked` no accessor panics), and in
//!   [`tcp`] telling one TCP segment from other frames.
//! - [`checksum`]: the one's complement sum and finishing a partial one.
//! - [`vnet_hdr`]: the 10-byte `virtio_net_hdr` and what its offloads
//!   leave undone.
//! - [`coalesce`]: a round's TCP segments of one flow merged into one GSO
//!   record.
//! - [`segment`]: a super-segment cut to an MTU, as a NIC doing TSO would.
//! - [`gro`]: receive coalescing in front of a stack.
//! - [`acks`]: of a flow's pure ACKs in a round, only the last.
//! - [`queue`]: the out-queue every link uses, bounded in frames and bytes.

pub mod acks;
pub mod checksum;
pub mod coalesce;
pub mod ethernet;
pub mod gro;
pub mod ipv4;
pub mod ipv6;
pub mod queue;
pub mod segment;
pub mod tcp;
pub mod udp;
pub mod vnet_hdr;

#[cfg(test)]
mod tests;

/// The Ethernet header's length (no VLAN tag): destination, source, type.
pub const ETH_HLEN: usize = 14;

/// What a frame or header could not be, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header needs.
    #[error("{have} bytes hold no {need}-byte header")]
    Short {
        /// The bytes there are.
        have: usize,
        /// The header's length.
        need: usize,
    },
    /// The header asks for something that cannot be done, or the frame is
    /// not what it must be.
    #[error("{0}")]
    Bad(String),
}

pub(crate) fn bad(what: String) -> FrameError {
    FrameError::Bad(what)
}
