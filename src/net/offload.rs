//! The virtio-net header's offloads, where back ends and front ends have
//! long found them: re-exported from the frame layer ([`crate::frame`]),
//! which holds the code.

pub use crate::frame::checksum::{finish_checksum, fold, sum_be};
pub use crate::frame::coalesce::Coalescer;
pub use crate::frame::segment::segment;
pub use crate::frame::vnet_hdr::{
    complete, finish, unwrap_record, unwrap_record_lazily, Offloaded, Partial, VnetHdr,
    F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4,
    VNET_HDR_SIZE,
};
pub use crate::frame::FrameError;
