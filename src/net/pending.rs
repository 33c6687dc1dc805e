//! The one frame a descriptor back end (tap, slirp helper) holds between
//! receives: read ahead by `peek_recvlen`, or one too long for the
//! buffers it was read for, kept whole for a receive with more room
//! (bhyve's semantics) rather than cut.

use std::io::{self, IoSliceMut};

use super::vnet;
use super::{Error, MAX_FRAME_LEN};

/// A held frame and the buffer it lives in (allocated at first use, then
/// reused).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    buf: Vec<u8>,
    len: usize,
}

impl Pending {
    /// The held frame's length; 0 when none is held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Hands the held frame to `iov`: `None` when none is held,
    /// [`Error::FrameTooBig`] (the frame still held) when it does not fit.
    pub(crate) fn take(&mut self, iov: &mut [IoSliceMut<'_>]) -> Option<io::Result<usize>> {
        if self.len == 0 {
            return None;
        }
        let (len, room) = (self.len, vnet::iov_len_mut(iov));
        if len > room {
            return Some(Err(Error::FrameTooBig { len, room }.into()));
        }
        self.len = 0;
        Some(Ok(vnet::copy_to_iov(&self.buf[..len], iov)))
    }

    /// The [`MAX_FRAME_LEN`]-byte buffer a frame is read into: ahead of
    /// time (then [`hold`](Self::hold)), or as the spill behind a
    /// caller's buffers (then [`keep_split`](Self::keep_split)).
    pub(crate) fn buf(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; MAX_FRAME_LEN];
        }
        &mut self.buf
    }

    /// Holds the `len` bytes just read into [`buf`](Self::buf); a read the
    /// kernel cut (`truncated`) is dropped with [`Error::FrameDropped`].
    pub(crate) fn hold(&mut self, len: usize, truncated: bool) -> io::Result<usize> {
        if truncated || len > self.buf.len() {
            self.len = 0;
            return Err(dropped(len));
        }
        self.len = len;
        Ok(len)
    }

    /// A `len`-byte frame was read into `iov` and on into
    /// [`buf`](Self::buf) (see `vnet::with_spill`), more than `iov` holds:
    /// gathers it here whole and answers [`Error::FrameTooBig`]. A frame
    /// that does not fit even here (a hostile peer's, or one the kernel
    /// cut: `truncated`) is dropped with [`Error::FrameDropped`].
    pub(crate) fn keep_split(
        &mut self,
        iov: &[IoSliceMut<'_>],
        len: usize,
        truncated: bool,
    ) -> io::Error {
        let room = vnet::iov_len_mut(iov);
        debug_assert!(len > room);
        if truncated || len > self.buf.len() || len <= room {
            self.len = 0;
            return dropped(len);
        }
        self.buf.copy_within(..len - room, room);
        let mut at = 0;
        for s in iov {
            let n = s.len().min(room - at);
            self.buf[at..at + n].copy_from_slice(&s[..n]);
            at += n;
        }
        self.len = len;
        Error::FrameTooBig { len, room }.into()
    }
}

fn dropped(len: usize) -> io::Error {
    Error::FrameDropped {
        len,
        max: MAX_FRAME_LEN,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `frame` the way a back end does: into `iov` then the spill.
    fn read_split(p: &mut Pending, iov: &mut [IoSliceMut<'_>], frame: &[u8]) -> io::Error {
        let mut parts = vnet::with_spill(iov, p.buf());
        let n = vnet::copy_to_iov(frame, &mut parts);
        drop(parts);
        p.keep_split(iov, n, false)
    }

    #[test]
    fn a_split_frame_is_kept_whole_and_handed_to_a_bigger_buffer() {
        let frame: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut p = Pending::default();
        let (mut a, mut b) = ([0u8; 700], [0u8; 300]);
        let e = read_split(
            &mut p,
            &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)],
            &frame,
        );
        assert_eq!(
            e.to_string(),
            Error::FrameTooBig {
                len: 3000,
                room: 1000
            }
            .to_string()
        );
        assert_eq!(p.len(), 3000);
        // Still too small: kept.
        let mut small = [0u8; 2999];
        assert!(p.take(&mut [IoSliceMut::new(&mut small)]).unwrap().is_err());
        let (mut c, mut d) = ([0u8; 1000], [0u8; 2500]);
        let n = p
            .take(&mut [IoSliceMut::new(&mut c), IoSliceMut::new(&mut d)])
            .unwrap()
            .unwrap();
        assert_eq!(n, 3000);
        assert_eq!(&c[..], &frame[..1000]);
        assert_eq!(&d[..2000], &frame[1000..]);
        assert_eq!(p.len(), 0);
        assert!(p.take(&mut [IoSliceMut::new(&mut c)]).is_none());
    }

    #[test]
    fn a_frame_longer_than_any_is_dropped_not_a_panic() {
        let mut p = Pending::default();
        p.buf();
        let mut a = [0u8; 100];
        // 100 bytes in the caller's buffer and a full spill behind it.
        let len = 100 + MAX_FRAME_LEN;
        let e = p.keep_split(&[IoSliceMut::new(&mut a)], len, false);
        assert!(e.to_string().contains(&format!("{len}-byte frame")), "{e}");
        assert_eq!(p.len(), 0);
        let e = p.keep_split(&[IoSliceMut::new(&mut a)], 200, true);
        assert!(e.to_string().contains("dropped"), "{e}");
        assert_eq!(p.len(), 0);
        assert!(p.hold(MAX_FRAME_LEN, true).is_err());
        assert_eq!(p.hold(60, false).unwrap(), 60);
        assert_eq!(p.len(), 60);
    }
}
