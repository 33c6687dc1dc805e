//! [`Netbe`]: a back end as a virtio-net front end sees it (bhyve's
//! `netbe_*` functions): it holds the front end's and the back end's
//! virtio-net header lengths and adapts between them, refuses runts, and
//! discards without allocating.

use std::io::{self, IoSlice, IoSliceMut};

use super::backend::NetBackend;
use super::registry::open;
use super::vnet::{self, VnetHdrLen};
use super::{Error, MAX_FRAME_LEN, MIN_FRAME_LEN};
use crate::reactor::Reactor;

/// The virtio-net features that are the back end's business: checksum and
/// segmentation offloads (`CSUM`, `GUEST_CSUM`, `GUEST_TSO4/6`,
/// `GUEST_ECN`, `GUEST_UFO`, `HOST_TSO4/6`, `HOST_ECN`, `HOST_UFO`: bits 0,
/// 1 and 7 to 14). The rest (`MAC`, `STATUS`, `MRG_RXBUF`, queues) is the
/// front end's.
pub const BACKEND_FEATURES: u64 = 0b11 | (0xff << 7);

/// A back end with the front end's view of it (bhyve's `netbe_*`
/// functions): it holds the front end's and the back end's virtio-net
/// header lengths and, when the back end takes no header, strips the front
/// end's on send and writes a zeroed one on receive.
pub struct Netbe<D> {
    be: Box<dyn NetBackend<D>>,
    fe_hdr: VnetHdrLen,
    be_hdr: VnetHdrLen,
    /// Where [`recv_discard`](Netbe::recv_discard) receives, made once.
    scratch: Vec<u8>,
}

impl<D> std::fmt::Debug for Netbe<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netbe")
            .field("backend", &self.be.name())
            .field("fe_vnet_hdr_len", &self.fe_hdr.len())
            .field("be_vnet_hdr_len", &self.be_hdr.len())
            .finish()
    }
}

impl<D: 'static> Netbe<D> {
    /// Opens a back end by name, as [`open`] does, and wraps it.
    pub fn open(
        name: &str,
        reactor: &mut Reactor<D>,
        cb: impl FnMut(&mut Reactor<D>, &mut D) + 'static,
    ) -> Result<Netbe<D>, Error> {
        Ok(Netbe::new(open(name, reactor, cb)?))
    }
}

impl<D> Netbe<D> {
    /// Wraps an opened back end; no header on either side yet.
    pub fn new(be: Box<dyn NetBackend<D>>) -> Netbe<D> {
        Netbe {
            be,
            fe_hdr: VnetHdrLen::None,
            be_hdr: VnetHdrLen::None,
            scratch: Vec::new(),
        }
    }

    /// The back end.
    pub fn backend(&self) -> &dyn NetBackend<D> {
        &*self.be
    }

    /// The back end, mutably.
    pub fn backend_mut(&mut self) -> &mut dyn NetBackend<D> {
        &mut *self.be
    }

    /// The header length the front end uses.
    pub fn fe_vnet_hdr_len(&self) -> usize {
        self.fe_hdr.len()
    }

    /// The header length the back end uses: the front end's, or 0 when this
    /// layer adapts.
    pub fn be_vnet_hdr_len(&self) -> usize {
        self.be_hdr.len()
    }

    fn adapting(&self) -> bool {
        self.fe_hdr != self.be_hdr
    }

    /// The back end's virtio-net features.
    pub fn get_cap(&self) -> u64 {
        self.be.get_cap()
    }

    /// Sets the features the front end negotiated and its header length
    /// (0, 10 or 12; anything else is [`Error::BadVnetHdrLen`]). Front-end
    /// features (outside [`BACKEND_FEATURES`]) are not passed on; a
    /// back-end feature the back end does not offer is refused
    /// ([`Error::CapRefused`]), never dropped silently. If the back end
    /// will not take the header but no back-end features are wanted, it
    /// runs without one and this layer adapts (what bhyve does for tap). On
    /// error nothing changes.
    pub fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
        let fe = VnetHdrLen::new(vnet_hdr_len)?;
        let wanted = features & BACKEND_FEATURES;
        if wanted & !self.be.get_cap() != 0 {
            return Err(Error::CapRefused {
                backend: self.be.name().to_owned(),
                features: wanted & !self.be.get_cap(),
                vnet_hdr_len,
            });
        }
        let offered = wanted;
        match self.be.set_cap(offered, fe.len()) {
            Ok(()) => {
                self.fe_hdr = fe;
                self.be_hdr = fe;
                Ok(())
            }
            Err(e) if offered != 0 || fe.is_empty() => Err(e),
            Err(e) => {
                if self.be.set_cap(0, 0).is_err() {
                    return Err(e);
                }
                self.fe_hdr = fe;
                self.be_hdr = VnetHdrLen::None;
                Ok(())
            }
        }
    }

    /// Sends one frame, the front end's header first (bhyve's
    /// `netbe_send`). Returns the bytes of `iov` consumed, header included.
    /// An `iov` shorter than the header is [`Error::ShortIov`], a frame
    /// shorter than an Ethernet header [`Error::Runt`], one longer than the
    /// back end carries [`Error::FrameTooLong`] (all of kind
    /// `InvalidInput`), and nothing is sent.
    pub fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        let frame_len = vnet::iov_len(iov).saturating_sub(self.fe_hdr.len());
        if frame_len < MIN_FRAME_LEN && vnet::iov_len(iov) >= self.fe_hdr.len() {
            return Err(Error::Runt { len: frame_len }.into());
        }
        let max = self.be.max_frame_len();
        if frame_len > max {
            return Err(Error::FrameTooLong {
                len: frame_len,
                max,
            }
            .into());
        }
        if !self.adapting() {
            return self.be.send(iov);
        }
        let frame = vnet::strip_tx_header(iov, self.fe_hdr)?;
        let n = self.be.send(&frame)?;
        Ok(n + self.fe_hdr.len())
    }

    /// Receives one frame without blocking, the front end's header first
    /// (bhyve's `netbe_recv`): `Ok(Some(len))` with the header counted, or
    /// `Ok(None)` when nothing is pending. An `iov` shorter than the header
    /// is [`Error::ShortIov`] and no frame is taken; a frame that does not
    /// fit is [`Error::FrameTooBig`], its length and the room counted with
    /// the header too, as [`peek_recvlen`](Self::peek_recvlen) counts it.
    pub fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
        if !self.adapting() {
            return self.be.recv(iov);
        }
        let hlen = self.fe_hdr.len();
        let mut frame = vnet::write_rx_header(iov, self.fe_hdr)?;
        match self.be.recv(&mut frame) {
            Ok(n) => Ok(n.map(|n| n + hlen)),
            Err(e) => Err(with_header(e, hlen)),
        }
    }

    /// What [`recv`](Netbe::recv) would return next, header counted; 0
    /// when nothing is pending. (bhyve's `netbe_peek_recvlen` leaves the
    /// header to the caller; this one counts it.)
    pub fn peek_recvlen(&mut self) -> io::Result<usize> {
        let n = self.be.peek_recvlen()?;
        if n > 0 && self.adapting() {
            Ok(n + self.fe_hdr.len())
        } else {
            Ok(n)
        }
    }

    /// Receives one frame and throws it away (bhyve's `netbe_rx_discard`):
    /// for a front end with no buffers to give. Returns its length as the
    /// back end holds it (with the back end's header, if it takes one), or
    /// `None` when nothing was pending. Receives into a buffer made once.
    pub fn recv_discard(&mut self) -> io::Result<Option<usize>> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; MAX_FRAME_LEN];
        }
        let mut iov = [IoSliceMut::new(&mut self.scratch)];
        match self.be.recv(&mut iov) {
            Err(e) if is_dropped(&e) => self.recv_discard(),
            other => other,
        }
    }

    /// Starts calling the receive callback (bhyve's `netbe_rx_enable`).
    pub fn recv_enable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.be.recv_enable(reactor)
    }

    /// Stops calling the receive callback (bhyve's `netbe_rx_disable`).
    pub fn recv_disable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.be.recv_disable(reactor)
    }

    /// Closes the back end (bhyve's `netbe_cleanup`).
    pub fn close(self, reactor: &mut Reactor<D>) -> Result<(), Error> {
        self.be.close(reactor)
    }

    /// The longest frame the back end carries, Ethernet header included,
    /// the front end's virtio-net header left out (smoltcp's
    /// `DeviceCapabilities::max_transmission_unit` for an Ethernet
    /// device).
    pub fn max_frame_len(&self) -> usize {
        self.be.max_frame_len()
    }

    /// The IP MTU the back end carries: [`max_frame_len`](Self::max_frame_len)
    /// less the 14-byte Ethernet header.
    pub fn mtu(&self) -> usize {
        self.max_frame_len().saturating_sub(14)
    }

    /// The helper process's id, for a back end that runs one
    /// (`slirp-helper`).
    pub fn helper_pid(&self) -> Option<u32> {
        self.be.helper_pid()
    }
}

/// A back end's [`Error::FrameTooBig`] as the front end sees it: the
/// header this layer adds counted in both lengths.
fn with_header(e: io::Error, hlen: usize) -> io::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(&Error::FrameTooBig { len, room }) => Error::FrameTooBig {
            len: len + hlen,
            room: room + hlen,
        }
        .into(),
        _ => e,
    }
}

/// Whether the back end dropped a frame no buffer could hold (and the next
/// one may be pending).
fn is_dropped(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .is_some_and(|e| matches!(e, Error::FrameDropped { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// A back end in memory: frames to hand out, frames sent, and whether
    /// it takes a header.
    #[derive(Default)]
    struct State {
        rx: VecDeque<Vec<u8>>,
        tx: Vec<Vec<u8>>,
        cap: u64,
        takes_header: bool,
        hdr: usize,
    }

    struct Mock(Rc<RefCell<State>>);

    /// A Netbe around a Mock, and the Mock's state.
    fn mock(cap: u64, takes_header: bool) -> (Netbe<()>, Rc<RefCell<State>>) {
        let st = Rc::new(RefCell::new(State {
            cap,
            takes_header,
            ..State::default()
        }));
        (Netbe::new(Box::new(Mock(st.clone()))), st)
    }

    impl NetBackend<()> for Mock {
        fn name(&self) -> &str {
            "mock"
        }
        fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
            let f = vnet::gather(iov);
            let n = f.len();
            self.0.borrow_mut().tx.push(f);
            Ok(n)
        }
        fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
            Ok(self
                .0
                .borrow_mut()
                .rx
                .pop_front()
                .map(|f| vnet::copy_to_iov(&f, iov)))
        }
        fn peek_recvlen(&mut self) -> io::Result<usize> {
            Ok(self.0.borrow().rx.front().map_or(0, |f| f.len()))
        }
        fn recv_enable(&mut self, _: &mut Reactor<()>) -> Result<(), Error> {
            Ok(())
        }
        fn recv_disable(&mut self, _: &mut Reactor<()>) -> Result<(), Error> {
            Ok(())
        }
        fn get_cap(&self) -> u64 {
            self.0.borrow().cap
        }
        fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
            let mut st = self.0.borrow_mut();
            if (vnet_hdr_len != 0 && !st.takes_header) || features & !st.cap != 0 {
                return Err(Error::CapRefused {
                    backend: "mock".into(),
                    features,
                    vnet_hdr_len,
                });
            }
            st.hdr = vnet_hdr_len;
            Ok(())
        }
        fn close(self: Box<Self>, _: &mut Reactor<()>) -> Result<(), Error> {
            Ok(())
        }
    }

    #[test]
    fn set_cap_checks_lengths() {
        let (mut nb, st) = mock(0, false);
        for bad in [1, 11, 13, 16] {
            let e = nb.set_cap(0, bad).unwrap_err();
            assert!(matches!(e, Error::BadVnetHdrLen(n) if n == bad));
        }
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (0, 0));
        nb.set_cap(0, 10).unwrap();
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (10, 0));
        // Front-end features (MAC, STATUS, MRG_RXBUF) are not the back
        // end's business.
        nb.set_cap(1 << 5 | 1 << 15 | 1 << 16, 12).unwrap();
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (12, 0));
        assert_eq!(st.borrow_mut().hdr, 0);
        nb.set_cap(0, 0).unwrap();
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (0, 0));
    }

    #[test]
    fn set_cap_hands_header_to_a_backend_that_takes_it() {
        let (mut nb, st) = mock(0b11, true);
        nb.set_cap(0b1 | 1 << 15, 12).unwrap();
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (12, 12));
        assert_eq!(st.borrow_mut().hdr, 12);
        // No adaptation: the header goes through as is.
        let f = [7u8; 12 + 60];
        assert_eq!(nb.send(&[IoSlice::new(&f)]).unwrap(), 72);
        assert_eq!(st.borrow_mut().tx[0], f);
    }

    #[test]
    fn offloads_without_header_are_refused() {
        // Offers offloads but cannot take a header: the front end's offload
        // features cannot be honoured without one, so this fails and
        // nothing changes.
        let (mut nb, _st) = mock(0b1, false);
        let e = nb.set_cap(0b1, 12).unwrap_err();
        assert!(matches!(e, Error::CapRefused { .. }), "{e}");
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (0, 0));
    }

    #[test]
    fn runts_are_refused_and_reach_nothing() {
        for hlen in [0usize, 12] {
            let (mut nb, st) = mock(0, false);
            nb.set_cap(0, hlen).unwrap();
            let f = vec![1u8; hlen + 3];
            match nb.send(&[IoSlice::new(&f)]) {
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                    assert!(e.to_string().contains("3-byte frame"), "{e}");
                }
                Ok(n) => panic!("a runt was sent: {n}"),
            }
            assert!(st.borrow().tx.is_empty());
        }
    }

    #[test]
    fn backend_features_not_offered_are_refused_not_dropped() {
        // A front end that negotiated HOST_TSO4 on a back end without it
        // would send super-frames nobody takes apart.
        let (mut nb, st) = mock(0b1, true);
        let e = nb.set_cap(1 << 11 | 1 << 15, 12).unwrap_err();
        assert!(
            matches!(e, Error::CapRefused { features, .. } if features == 1 << 11),
            "{e}"
        );
        assert_eq!((nb.fe_vnet_hdr_len(), nb.be_vnet_hdr_len()), (0, 0));
        assert_eq!(st.borrow().hdr, 0);
        // What it offers, with front-end features beside, is fine.
        nb.set_cap(0b1 | 1 << 5 | 1 << 15, 12).unwrap();
        assert_eq!(nb.be_vnet_hdr_len(), 12);
    }

    #[test]
    fn adaptation_strips_and_prepends() {
        for hlen in [10usize, 12] {
            let (mut nb, st) = mock(0, false);
            nb.set_cap(0, hlen).unwrap();
            let hdr = [0x55u8; 12];
            let body: Vec<u8> = (0..30).collect();
            // Header split across the first two iovecs.
            let iov = [
                IoSlice::new(&hdr[..4]),
                IoSlice::new(&hdr[4..hlen]),
                IoSlice::new(&body),
            ];
            assert_eq!(nb.send(&iov).unwrap(), hlen + 30);
            assert_eq!(st.borrow_mut().tx[0], body);
            let e = nb.send(&[IoSlice::new(&hdr[..hlen - 1])]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(st.borrow_mut().tx.len(), 1);

            st.borrow_mut().rx.push_back(body.clone());
            assert_eq!(nb.peek_recvlen().unwrap(), hlen + 30);
            let mut a = [0xffu8; 3];
            let mut b = [0xffu8; 100];
            let n = nb
                .recv(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)])
                .unwrap();
            assert_eq!(n, Some(hlen + 30));
            let mut got = a.to_vec();
            got.extend_from_slice(&b);
            assert_eq!(&got[..hlen], VnetHdrLen::new(hlen).unwrap().rx_header());
            assert_eq!(&got[hlen..hlen + 30], &body[..]);
            assert_eq!(nb.peek_recvlen().unwrap(), 0);
            assert_eq!(nb.recv(&mut [IoSliceMut::new(&mut b)]).unwrap(), None);

            // Too short for the header: an error, and the frame stays.
            st.borrow_mut().rx.push_back(body.clone());
            let mut short = [0u8; 5];
            let e = nb.recv(&mut [IoSliceMut::new(&mut short)]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(nb.recv_discard().unwrap(), Some(30));
            assert_eq!(nb.recv_discard().unwrap(), None);
        }
    }
}
