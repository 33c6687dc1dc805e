//! The virtio-net header (a tap opened with `IFF_VNET_HDR`, a
//! vhost-user ring): its fields, finishing a checksum the sender left
//! partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), and telling a TCP
//! super-segment (TSO, up to 64 KiB) from a frame.
//!
//! With `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)` the kernel
//! hands a tap's reader frames whose TCP or UDP checksum is only the
//! pseudo-header's sum, and whole TCP super-segments of up to 64 KiB: for
//! IPv4 one read, one libslirp input and one host `send` for what would be
//! some forty frames ([`segment`](super::segment::segment) cuts IPv6 ones
//! for libslirp). libslirp verifies checksums, so they are finished here
//! first. The rules are the kernel's (`virtio_net_hdr_to_skb`,
//! `skb_checksum_help`) and the virtio spec's (5.1.6.2).

use super::checksum::{check_field, finish_checksum};
use super::{bad, FrameError};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` covers only the pseudo-header; finish it over
/// `csum_start..`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was checked already.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on the GSO type.
pub const GSO_ECN: u8 = 0x80;

/// The 10-byte `virtio_net_hdr`, in the host's byte order (a tap's
/// default, as for legacy virtio).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, with `GSO_ECN` possibly set.
    pub gso_type: u8,
    /// Length of the headers before the payload (a hint).
    pub hdr_len: u16,
    /// The segment size a super-segment is cut to.
    pub gso_size: u16,
    /// Where the checksummed part starts, from the Ethernet header.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// Length of [`VnetHdr`] on the wire.
pub const VNET_HDR_SIZE: usize = 10;

impl VnetHdr {
    /// Reads the header from the first 10 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<VnetHdr, FrameError> {
        let b = bytes.get(..VNET_HDR_SIZE).ok_or(FrameError::Short {
            have: bytes.len(),
            need: VNET_HDR_SIZE,
        })?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_SIZE] {
        let mut b = [0u8; VNET_HDR_SIZE];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// What a frame from an offloading tap is, once [`finish`]ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloaded {
    /// An ordinary frame (no longer than the MTU allows).
    Frame,
    /// A TCP super-segment (TSO): one IPv4 or IPv6 datagram of up to 64
    /// KiB that the sender would have cut into `gso_size` segments.
    TcpSegment,
}

/// Finishes what the header says was left undone in `frame` (the Ethernet
/// frame after the header): the checksum, if `F_NEEDS_CSUM`. Accepts GSO
/// type TCPV4, TCPV6 and none; any other (UFO, USO: not offered) is an
/// error naming it. Whether a super-segment is what it claims is for its
/// consumer to check (`slirp::Stack::input_segment` does).
pub fn finish(hdr: &VnetHdr, frame: &mut [u8]) -> Result<Offloaded, FrameError> {
    let kind = match hdr.gso_type & !GSO_ECN {
        GSO_NONE => Offloaded::Frame,
        GSO_TCPV4 | GSO_TCPV6 => Offloaded::TcpSegment,
        other => return Err(bad(format!("GSO type {other} was not offered"))),
    };
    if hdr.flags & F_NEEDS_CSUM != 0 {
        finish_checksum(frame, hdr.csum_start.into(), hdr.csum_offset.into())?;
    }
    Ok(kind)
}

/// Hands on `frame`, made for a peer that takes what `hdr` asks, as that
/// peer's frames would be without offloads: a TCP super-segment cut into
/// segments of `gso_size` payload bytes with complete checksums
/// ([`segment`](super::segment::segment)), anything else with its checksum
/// finished. For a link that stopped taking offloads after the frame was
/// made. Returns how many frames went to `emit`; a frame that is not what
/// its header claims is an error naming it, and nothing is emitted.
pub fn complete(
    hdr: &VnetHdr,
    frame: &mut [u8],
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, FrameError> {
    if finish(hdr, frame)? == Offloaded::Frame {
        emit(frame);
        return Ok(1);
    }
    let Some((_, payload)) = super::tcp::tcp_segment(frame) else {
        return Err(bad(format!(
            "a {}-byte GSO frame is not one TCP/IP segment",
            frame.len()
        )));
    };
    let headers = frame.len() - payload - super::ETH_HLEN;
    if hdr.gso_size == 0 {
        return Err(bad("a GSO frame with a segment size of 0".into()));
    }
    super::segment::segment(frame, headers + usize::from(hdr.gso_size), emit)
}

/// A TCP checksum a sender left partial (virtio's `NEEDS_CSUM`): the
/// field at `start + offset` holds the pseudo-header's sum of the bytes
/// from `start` on. Its bounds are checked against the frame it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    /// Where the summed bytes begin (the TCP header).
    pub start: usize,
    /// Where the checksum field is, from `start`.
    pub offset: usize,
}

impl Partial {
    /// Stores the whole checksum in `frame`.
    pub fn finish(&self, frame: &mut [u8]) -> Result<(), FrameError> {
        finish_checksum(frame, self.start, self.offset)
    }
}

/// Frames at least this long whose checksum was left partial are handed
/// on unfinished by [`unwrap_record_lazily`]; shorter ones (ACKs, the
/// segments a run is merged from) are finished at once.
pub const LAZY_MIN: usize = 16 * 1024;

/// [`unwrap_record`], except that the partial checksum of a TCP
/// super-segment, or of a frame of [`LAZY_MIN`] bytes or more (a segment
/// at a large MTU), is left as it is and returned: a consumer that needs
/// no checksum (the own TCP path) spares the pass over up to 64 KiB, and
/// one that does finishes it ([`Partial::finish`]). Other frames are
/// finished here.
pub fn unwrap_record_lazily(
    record: &mut [u8],
    hdr_len: usize,
) -> Result<(Offloaded, Option<Partial>, &mut [u8]), FrameError> {
    if record.len() < hdr_len {
        return Err(FrameError::Short {
            have: record.len(),
            need: hdr_len,
        });
    }
    let (hdr, frame) = record.split_at_mut(hdr_len);
    let hdr = VnetHdr::parse(hdr)?;
    let kind = match hdr.gso_type & !GSO_ECN {
        GSO_TCPV4 | GSO_TCPV6 => Offloaded::TcpSegment,
        GSO_NONE if frame.len() >= LAZY_MIN => Offloaded::Frame,
        _ => return Ok((finish(&hdr, frame)?, None, frame)),
    };
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok((kind, None, frame));
    }
    let partial = Partial {
        start: hdr.csum_start.into(),
        offset: hdr.csum_offset.into(),
    };
    check_field(frame.len(), partial.start, partial.offset)?;
    Ok((kind, Some(partial), frame))
}

/// Splits a record (a `hdr_len`-byte virtio-net header, 10 or 12 bytes,
/// then the frame) and [`finish`]es what its header asks of the frame.
pub fn unwrap_record(
    record: &mut [u8],
    hdr_len: usize,
) -> Result<(Offloaded, &mut [u8]), FrameError> {
    let (kind, partial, frame) = unwrap_record_lazily(record, hdr_len)?;
    if let Some(p) = partial {
        p.finish(frame)?;
    }
    Ok((kind, frame))
}
