//! The Internet checksum (RFC 1071): the one's complement sum of 16-bit
//! words, and finishing one a sender left partial (virtio 5.1.6.2).

use super::{bad, FrameError};

/// Stores at `start + offset` the Internet checksum of `frame[start..]`,
/// whose checksum field holds the pseudo-header's sum (virtio 5.1.6.2).
pub fn finish_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), FrameError> {
    check_field(frame.len(), start, offset)?;
    let at = start + offset;
    let sum = !fold(sum_be(&frame[start..], 0));
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Checks that a checksum field at `start + offset`, summing from
/// `start`, lies within a `len`-byte frame.
pub(crate) fn check_field(len: usize, start: usize, offset: usize) -> Result<(), FrameError> {
    if start >= len || start + offset + 2 > len {
        return Err(bad(format!(
            "csum_start {start} + csum_offset {offset} is beyond the {len}-byte frame"
        )));
    }
    Ok(())
}

/// The one's complement sum of `data` as big-endian 16-bit words (an odd
/// last byte padded with zero), added to `acc`, not yet folded.
pub fn sum_be(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a sum of 16-bit words into 16 bits.
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}
