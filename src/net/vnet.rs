//! The virtio-net header adaptation, as pure functions on iovec lists.
//!
//! A virtio-net front end puts a header before every frame: 10 bytes
//! (`struct virtio_net_hdr`) or, with `VIRTIO_NET_F_MRG_RXBUF`, 12 bytes
//! (`struct virtio_net_hdr_mrg_rxbuf`, whose last field is the little-endian
//! `num_buffers`). When the back end takes no header (tap, slirp), the
//! generic layer adapts, as bhyve's `netbe_send` and `netbe_recv` do:
//!
//! - on send, the front end's header is skipped ([`strip_tx_header`]); it
//!   carries no offload request, since the back end offered none;
//! - on receive, a zeroed header is written in front of the frame
//!   ([`write_rx_header`]), with `num_buffers = 1` in the 12-byte form.
//!
//! Neither copies frame bytes: both return a new iovec list that starts
//! where the frame starts, even when the header is split across iovecs.
//! Short lists are kept on the stack.

use std::io::{IoSlice, IoSliceMut};
use std::ops::{Deref, DerefMut};

use super::Error;

/// Length of the 12-byte header with `num_buffers`
/// (`virtio_net_hdr_mrg_rxbuf`).
pub const VNET_HDR_LEN: usize = 12;

/// Length of the 10-byte header without `num_buffers` (`virtio_net_hdr`).
pub const VNET_HDR_LEN_NO_MRG: usize = crate::frame::vnet_hdr::VNET_HDR_SIZE;

/// Offset of the little-endian `num_buffers` field in the 12-byte header.
pub const NUM_BUFFERS_OFFSET: usize = crate::frame::vnet_hdr::VNET_HDR_SIZE;

const RX_HEADER_12: [u8; VNET_HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// How many iovecs an adapted list keeps on the stack before it allocates.
const INLINE: usize = 8;

/// A virtio-net header length: the only three there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VnetHdrLen {
    /// No header.
    #[default]
    None,
    /// The 10-byte header (`virtio_net_hdr`).
    NoMrg,
    /// The 12-byte header (`virtio_net_hdr_mrg_rxbuf`).
    Mrg,
}

impl VnetHdrLen {
    /// The header length for `len` bytes, if it is 0, 10 or 12.
    pub const fn new(len: usize) -> Result<VnetHdrLen, Error> {
        match len {
            0 => Ok(VnetHdrLen::None),
            VNET_HDR_LEN_NO_MRG => Ok(VnetHdrLen::NoMrg),
            VNET_HDR_LEN => Ok(VnetHdrLen::Mrg),
            other => Err(Error::BadVnetHdrLen(other)),
        }
    }

    /// The length in bytes.
    pub const fn len(self) -> usize {
        match self {
            VnetHdrLen::None => 0,
            VnetHdrLen::NoMrg => VNET_HDR_LEN_NO_MRG,
            VnetHdrLen::Mrg => VNET_HDR_LEN,
        }
    }

    /// Whether there is no header (length 0).
    pub const fn is_empty(self) -> bool {
        matches!(self, VnetHdrLen::None)
    }

    /// The header a back end without one hands the front end before each
    /// received frame: all zeroes (no checksum or segmentation offload), and
    /// `num_buffers = 1` in the 12-byte form.
    pub fn rx_header(self) -> &'static [u8] {
        &RX_HEADER_12[..self.len()]
    }
}

impl TryFrom<usize> for VnetHdrLen {
    type Error = Error;

    fn try_from(len: usize) -> Result<VnetHdrLen, Error> {
        VnetHdrLen::new(len)
    }
}

/// Total bytes in an iovec list.
pub fn iov_len(iov: &[IoSlice<'_>]) -> usize {
    iov.iter().fold(0usize, |n, s| n.saturating_add(s.len()))
}

/// Total bytes in a mutable iovec list.
pub fn iov_len_mut(iov: &[IoSliceMut<'_>]) -> usize {
    iov.iter().fold(0usize, |n, s| n.saturating_add(s.len()))
}

/// Where byte `n` of the list is: (iovec index, offset in it). Empty iovecs
/// before that byte are passed over; `n` equal to the total length gives
/// (`count`, 0).
fn locate(lens: impl Iterator<Item = usize>, n: usize) -> Result<(usize, usize), Error> {
    let mut left = n;
    let mut have = 0usize;
    let mut count = 0;
    for (i, len) in lens.enumerate() {
        if left < len {
            return Ok((i, left));
        }
        left -= len;
        have = have.saturating_add(len);
        count = i + 1;
    }
    if left == 0 {
        Ok((count, 0))
    } else {
        Err(Error::ShortIov { need: n, have })
    }
}

/// A short list on the stack, a long one on the heap.
enum Small<T> {
    Inline([T; INLINE], usize),
    Heap(Vec<T>),
}

impl<T> Small<T> {
    fn collect(count: usize, items: impl Iterator<Item = T>, empty: impl Fn() -> T) -> Small<T> {
        if count <= INLINE {
            let mut buf: [T; INLINE] = std::array::from_fn(|_| empty());
            let mut n = 0;
            for (slot, item) in buf.iter_mut().zip(items) {
                *slot = item;
                n += 1;
            }
            Small::Inline(buf, n)
        } else {
            Small::Heap(items.collect())
        }
    }

    fn as_slice(&self) -> &[T] {
        match self {
            Small::Inline(buf, n) => &buf[..*n],
            Small::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Small::Inline(buf, n) => &mut buf[..*n],
            Small::Heap(v) => v,
        }
    }
}

enum IovsRepr<'a> {
    Tail(&'a [IoSlice<'a>]),
    Owned(Small<IoSlice<'a>>),
}

/// An iovec list that starts some bytes into another one, borrowing the
/// same memory. Dereferences to `[IoSlice]`.
pub struct Iovs<'a>(IovsRepr<'a>);

impl<'a> Deref for Iovs<'a> {
    type Target = [IoSlice<'a>];

    fn deref(&self) -> &[IoSlice<'a>] {
        match &self.0 {
            IovsRepr::Tail(s) => s,
            IovsRepr::Owned(v) => v.as_slice(),
        }
    }
}

impl std::fmt::Debug for Iovs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iovs")
            .field("iovecs", &self.len())
            .field("bytes", &iov_len(self))
            .finish()
    }
}

/// A mutable iovec list that starts some bytes into another one, borrowing
/// the same memory. Dereferences to `[IoSliceMut]`.
pub struct IovsMut<'a>(Small<IoSliceMut<'a>>);

impl<'a> Deref for IovsMut<'a> {
    type Target = [IoSliceMut<'a>];

    fn deref(&self) -> &[IoSliceMut<'a>] {
        self.0.as_slice()
    }
}

impl<'a> DerefMut for IovsMut<'a> {
    fn deref_mut(&mut self) -> &mut [IoSliceMut<'a>] {
        self.0.as_mut_slice()
    }
}

impl std::fmt::Debug for IovsMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IovsMut")
            .field("iovecs", &self.len())
            .field("bytes", &iov_len_mut(self))
            .finish()
    }
}

/// The list without its first `n` bytes, which may span several iovecs.
/// No bytes are copied: the result borrows `iov`'s memory, and is `iov`'s
/// own tail when `n` ends on an iovec boundary. Fails if `iov` holds fewer
/// than `n` bytes.
pub fn skip<'a>(iov: &'a [IoSlice<'_>], n: usize) -> Result<Iovs<'a>, Error> {
    let iov: &'a [IoSlice<'a>] = iov;
    let (idx, off) = locate(iov.iter().map(|s| s.len()), n)?;
    if off == 0 {
        return Ok(Iovs(IovsRepr::Tail(&iov[idx..])));
    }
    let first: &'a [u8] = &iov[idx][off..];
    let rest = &iov[idx + 1..];
    let items = std::iter::once(IoSlice::new(first)).chain(rest.iter().copied());
    Ok(Iovs(IovsRepr::Owned(Small::collect(
        rest.len() + 1,
        items,
        || IoSlice::new(&[]),
    ))))
}

/// Copies `front` into the first bytes of the list, across iovec
/// boundaries, and returns the list of what follows it. No other bytes are
/// touched or copied. Fails, writing nothing, if `iov` holds fewer bytes
/// than `front`.
pub fn write_front<'a>(iov: &'a mut [IoSliceMut<'_>], front: &[u8]) -> Result<IovsMut<'a>, Error> {
    let (idx, off) = locate(iov.iter().map(|s| s.len()), front.len())?;
    let (head, tail) = iov.split_at_mut(idx);
    let mut src = front;
    for s in head.iter_mut() {
        let k = s.len().min(src.len());
        s[..k].copy_from_slice(&src[..k]);
        src = &src[k..];
    }
    let count = tail.len();
    let mut tail = tail.iter_mut();
    let first = tail.next().map(|s| {
        let s: &'a mut [u8] = s;
        s[..off].copy_from_slice(&src[..off]);
        IoSliceMut::new(&mut s[off..])
    });
    let items = first
        .into_iter()
        .chain(tail.map(|s| IoSliceMut::new(&mut s[..])));
    Ok(IovsMut(Small::collect(count, items, || {
        IoSliceMut::new(&mut [])
    })))
}

/// The list followed by `spill`: a receive that overflows `iov` lands in
/// `spill`, so a back end can tell a frame was too long instead of handing
/// out a truncated one.
pub(crate) fn with_spill<'a>(iov: &'a mut [IoSliceMut<'_>], spill: &'a mut [u8]) -> IovsMut<'a> {
    let count = iov.len() + 1;
    let items = iov
        .iter_mut()
        .map(|s| IoSliceMut::new(&mut s[..]))
        .chain(std::iter::once(IoSliceMut::new(spill)));
    IovsMut(Small::collect(count, items, || IoSliceMut::new(&mut [])))
}

/// `front` followed by the list: what a back end writes when it owes the
/// kernel a header the caller did not give.
pub(crate) fn with_front<'a>(front: &'a [u8], iov: &'a [IoSlice<'_>]) -> Iovs<'a> {
    let iov: &'a [IoSlice<'a>] = iov;
    let items = std::iter::once(IoSlice::new(front)).chain(iov.iter().copied());
    Iovs(IovsRepr::Owned(Small::collect(
        iov.len() + 1,
        items,
        || IoSlice::new(&[]),
    )))
}

/// `front`, then the list, then `spill` if given: a receive whose first
/// bytes are a header the caller did not ask for (and a spill, as
/// [`with_spill`], for a frame longer than the list).
pub(crate) fn with_front_mut<'a>(
    front: &'a mut [u8],
    iov: &'a mut [IoSliceMut<'_>],
    spill: Option<&'a mut [u8]>,
) -> IovsMut<'a> {
    let count = iov.len() + 1 + usize::from(spill.is_some());
    let items = std::iter::once(IoSliceMut::new(front))
        .chain(iov.iter_mut().map(|s| IoSliceMut::new(&mut s[..])))
        .chain(spill.map(IoSliceMut::new));
    IovsMut(Small::collect(count, items, || IoSliceMut::new(&mut [])))
}

/// Copies `bytes` into the list at byte `at`, across iovec boundaries, as
/// far as the list reaches.
pub(crate) fn put_at(iov: &mut [IoSliceMut<'_>], mut at: usize, mut bytes: &[u8]) {
    for s in iov.iter_mut() {
        if bytes.is_empty() {
            return;
        }
        if at >= s.len() {
            at -= s.len();
            continue;
        }
        let k = (s.len() - at).min(bytes.len());
        s[at..at + k].copy_from_slice(&bytes[..k]);
        bytes = &bytes[k..];
        at = 0;
    }
}

/// What a back end without a header is handed on send: the front end's
/// frame without its `hdr`-byte header (bhyve's `netbe_send`).
pub fn strip_tx_header<'a>(iov: &'a [IoSlice<'_>], hdr: VnetHdrLen) -> Result<Iovs<'a>, Error> {
    skip(iov, hdr.len())
}

/// Writes the header a back end without one owes the front end
/// ([`VnetHdrLen::rx_header`]) into the first `hdr` bytes of the receive
/// buffers, and returns the buffers the frame goes into (bhyve's
/// `netbe_recv`).
pub fn write_rx_header<'a>(
    iov: &'a mut [IoSliceMut<'_>],
    hdr: VnetHdrLen,
) -> Result<IovsMut<'a>, Error> {
    write_front(iov, hdr.rx_header())
}

/// Copies `src` into the list from its start; returns the bytes copied,
/// at most the list's length (bhyve's `buf_to_iov`).
pub fn copy_to_iov(src: &[u8], iov: &mut [IoSliceMut<'_>]) -> usize {
    let mut done = 0;
    for s in iov.iter_mut() {
        if done == src.len() {
            break;
        }
        let k = s.len().min(src.len() - done);
        s[..k].copy_from_slice(&src[done..done + k]);
        done += k;
    }
    done
}

/// Gathers the list into one buffer (for logging and tests).
pub fn gather(iov: &[IoSlice<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(iov_len(iov));
    for s in iov {
        out.extend_from_slice(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> Vec<u8> {
        (0u8..64).collect()
    }

    /// Cuts `buf` at `cuts` (sorted, deduplicated offsets) into pieces.
    fn pieces<'a>(buf: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts {
            out.push(&buf[at..c]);
            at = c;
        }
        out.push(&buf[at..]);
        out
    }

    #[test]
    fn put_at_crosses_iovecs_and_stops_at_the_end() {
        let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 0], [0u8; 4]);
        let mut iov = [
            IoSliceMut::new(&mut a),
            IoSliceMut::new(&mut b),
            IoSliceMut::new(&mut c),
        ];
        put_at(&mut iov, 2, &[1, 2, 3]);
        put_at(&mut iov, 6, &[9, 9, 9]);
        assert_eq!((a, c), ([0, 0, 1], [2, 3, 0, 9]));
    }

    #[test]
    fn lengths() {
        assert_eq!(VnetHdrLen::new(0).unwrap(), VnetHdrLen::None);
        assert_eq!(VnetHdrLen::new(10).unwrap(), VnetHdrLen::NoMrg);
        assert_eq!(VnetHdrLen::try_from(12).unwrap(), VnetHdrLen::Mrg);
        for bad in [1, 8, 11, 13, 14, 24, usize::MAX] {
            let e = VnetHdrLen::new(bad).unwrap_err();
            assert!(matches!(e, Error::BadVnetHdrLen(n) if n == bad));
            assert!(e.to_string().contains("0, 10 and 12"), "{e}");
        }
        assert_eq!(VnetHdrLen::None.rx_header(), &[] as &[u8]);
        assert_eq!(VnetHdrLen::NoMrg.rx_header(), &[0u8; 10]);
        assert_eq!(
            VnetHdrLen::Mrg.rx_header(),
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        let h = VnetHdrLen::Mrg.rx_header();
        assert_eq!(
            u16::from_le_bytes([h[NUM_BUFFERS_OFFSET], h[NUM_BUFFERS_OFFSET + 1]]),
            1
        );
    }

    #[test]
    fn strip_each_length_one_iovec() {
        let f = frame();
        for hdr in [VnetHdrLen::None, VnetHdrLen::NoMrg, VnetHdrLen::Mrg] {
            let iov = [IoSlice::new(&f)];
            let out = strip_tx_header(&iov, hdr).unwrap();
            assert_eq!(gather(&out), &f[hdr.len()..]);
            // The frame's bytes are borrowed, not copied.
            assert_eq!(out[0].as_ptr(), f[hdr.len()..].as_ptr());
        }
    }

    #[test]
    fn strip_header_split_across_iovecs() {
        let f = frame();
        // 12-byte header split 5 + 7, the second iovec carrying the frame too.
        let iov = [IoSlice::new(&f[..5]), IoSlice::new(&f[5..])];
        let out = strip_tx_header(&iov, VnetHdrLen::Mrg).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(gather(&out), &f[12..]);
        assert_eq!(out[0].as_ptr(), f[12..].as_ptr());

        // 10-byte header split 3 + 3 + 4, with an empty iovec in between,
        // ending exactly on a boundary: the result is the caller's tail.
        let iov = [
            IoSlice::new(&f[..3]),
            IoSlice::new(&[]),
            IoSlice::new(&f[3..6]),
            IoSlice::new(&f[6..10]),
            IoSlice::new(&f[10..20]),
            IoSlice::new(&f[20..]),
        ];
        let out = strip_tx_header(&iov, VnetHdrLen::NoMrg).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out.as_ptr(), iov[4..].as_ptr());
        assert_eq!(gather(&out), &f[10..]);
    }

    #[test]
    fn strip_many_iovecs_spills_to_heap() {
        let f = frame();
        let iov: Vec<IoSlice<'_>> = f.chunks(3).map(IoSlice::new).collect();
        let out = strip_tx_header(&iov, VnetHdrLen::NoMrg).unwrap();
        assert_eq!(gather(&out), &f[10..]);
    }

    #[test]
    fn strip_short_iov_is_an_error() {
        let f = frame();
        let iov = [IoSlice::new(&f[..4]), IoSlice::new(&f[4..11])];
        let e = strip_tx_header(&iov, VnetHdrLen::Mrg).unwrap_err();
        assert!(matches!(e, Error::ShortIov { need: 12, have: 11 }), "{e:?}");
        let e = strip_tx_header(&[], VnetHdrLen::NoMrg).unwrap_err();
        assert!(matches!(e, Error::ShortIov { need: 10, have: 0 }));
        // Exactly the header: an empty frame, not an error.
        let iov = [IoSlice::new(&f[..12])];
        assert!(strip_tx_header(&iov, VnetHdrLen::Mrg).unwrap().is_empty());
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn rx_header_each_length() {
        for hdr in [VnetHdrLen::None, VnetHdrLen::NoMrg, VnetHdrLen::Mrg] {
            let mut buf = [0xaau8; 40];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut rest = write_rx_header(&mut iov, hdr).unwrap();
            assert_eq!(iov_len_mut(&rest), 40 - hdr.len());
            let n = copy_to_iov(b"frame", &mut rest);
            assert_eq!(n, 5);
            drop(rest);
            assert_eq!(&buf[..hdr.len()], hdr.rx_header());
            assert_eq!(&buf[hdr.len()..hdr.len() + 5], b"frame");
            assert!(buf[hdr.len() + 5..].iter().all(|&b| b == 0xaa));
        }
    }

    #[test]
    fn rx_header_split_across_iovecs() {
        let mut a = [0xaau8; 5];
        let mut b = [0xaau8; 4];
        let mut c = [0xaau8; 30];
        {
            let mut iov = [
                IoSliceMut::new(&mut a),
                IoSliceMut::new(&mut b),
                IoSliceMut::new(&mut c),
            ];
            let mut rest = write_rx_header(&mut iov, VnetHdrLen::Mrg).unwrap();
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].len(), 27);
            rest[0][0] = 0x11;
        }
        assert_eq!(a, [0; 5]);
        assert_eq!(b, [0; 4]);
        assert_eq!(&c[..4], &[0, 1, 0, 0x11]);
        // 10 bytes ending on a boundary.
        let mut a = [0xaau8; 10];
        let mut b = [0xaau8; 3];
        {
            let mut iov = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
            let rest = write_rx_header(&mut iov, VnetHdrLen::NoMrg).unwrap();
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].len(), 3);
        }
        assert_eq!(a, [0; 10]);
        assert_eq!(b, [0xaa; 3]);
    }

    #[test]
    fn rx_header_short_iov_writes_nothing() {
        let mut a = [0xaau8; 6];
        let mut b = [0xaau8; 5];
        let mut iov = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        let e = write_rx_header(&mut iov, VnetHdrLen::Mrg).unwrap_err();
        assert!(matches!(e, Error::ShortIov { need: 12, have: 11 }));
        assert_eq!(a, [0xaa; 6]);
        assert_eq!(b, [0xaa; 5]);
    }

    proptest! {
        #[test]
        fn strip_matches_slicing(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..20),
            which in 0usize..3,
        ) {
            let hdr = [VnetHdrLen::None, VnetHdrLen::NoMrg, VnetHdrLen::Mrg][which];
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let parts = pieces(&data, &cuts);
            let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            match strip_tx_header(&iov, hdr) {
                Ok(out) => {
                    prop_assert!(data.len() >= hdr.len());
                    prop_assert_eq!(gather(&out), &data[hdr.len()..]);
                }
                Err(Error::ShortIov { need, have }) => {
                    prop_assert!(data.len() < hdr.len());
                    prop_assert_eq!(need, hdr.len());
                    prop_assert_eq!(have, data.len());
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }

        #[test]
        fn rx_header_then_frame(
            len in 0usize..200,
            cuts in proptest::collection::vec(0usize..200, 0..20),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            which in 0usize..3,
        ) {
            let hdr = [VnetHdrLen::None, VnetHdrLen::NoMrg, VnetHdrLen::Mrg][which];
            let mut buf = vec![0xaau8; len];
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let copied;
            {
                let mut slices: Vec<&mut [u8]> = Vec::new();
                let mut rest: &mut [u8] = &mut buf;
                let mut at = 0;
                for &c in &cuts {
                    let (a, b) = rest.split_at_mut(c - at);
                    slices.push(a);
                    rest = b;
                    at = c;
                }
                slices.push(rest);
                let mut iov: Vec<IoSliceMut<'_>> =
                    slices.into_iter().map(IoSliceMut::new).collect();
                match write_rx_header(&mut iov, hdr) {
                    Ok(mut out) => {
                        prop_assert!(len >= hdr.len());
                        prop_assert_eq!(iov_len_mut(&out), len - hdr.len());
                        copied = copy_to_iov(&payload, &mut out);
                        prop_assert_eq!(copied, payload.len().min(len - hdr.len()));
                    }
                    Err(Error::ShortIov { need, have }) => {
                        prop_assert!(len < hdr.len());
                        prop_assert_eq!((need, have), (hdr.len(), len));
                        copied = 0;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
                }
            }
            if len >= hdr.len() {
                prop_assert_eq!(&buf[..hdr.len()], hdr.rx_header());
                let body = &buf[hdr.len()..];
                prop_assert_eq!(&body[..copied], &payload[..copied]);
                prop_assert!(body[copied..].iter().all(|&b| b == 0xaa));
            } else {
                prop_assert!(buf.iter().all(|&b| b == 0xaa));
            }
        }
    }
}
