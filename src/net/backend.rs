//! The net back-end API (bhyve's `net_backends.h`), the registry that picks
//! a back end by its name prefix, and [`Netbe`], which adapts the front
//! end's virtio-net header to what the back end takes.

use std::io::{self, IoSlice, IoSliceMut};

#[cfg(feature = "slirp")]
use super::slirp::SlirpBackend;
use super::tap::TapBackend;
use super::vnet::{self, VnetHdrLen};
use super::Error;
use crate::reactor::Reactor;

/// The callback a back end runs on the loop thread when received frames
/// are ready (bhyve's `net_be_rxeof_t` with its `param`). The front end
/// usually lives in `D` and drains the back end with
/// [`recv`](NetBackend::recv) until it returns `Ok(None)`; frames it leaves
/// pending bring the callback back on the next round.
pub type RxCallback<D> = Box<dyn FnMut(&mut Reactor<D>, &mut D)>;

/// One net back end: a source and sink of Ethernet frames, registered on a
/// [`Reactor`] (bhyve's `struct net_backend`).
///
/// Frames carry a virtio-net header of the length last accepted by
/// [`set_cap`](NetBackend::set_cap) (none at first). Front ends normally go
/// through [`Netbe`], which strips or adds the front end's header when the
/// back end takes none.
pub trait NetBackend<D> {
    /// The name it was opened with (`tap0`, `slirp`, ...).
    fn name(&self) -> &str;

    /// Sends one frame gathered from `iov`. Returns the bytes taken.
    /// A full transmit queue is an error of kind `WouldBlock`; the caller
    /// drops the frame or retries.
    fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Receives one frame into `iov` without blocking: `Ok(Some(len))`,
    /// or `Ok(None)` when nothing is pending. A frame longer than `iov` is
    /// dropped and reported as [`Error::FrameTooBig`] (kind
    /// `InvalidInput`); [`peek_recvlen`](NetBackend::peek_recvlen) tells the
    /// length first.
    fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>>;

    /// The length of the next frame [`recv`](NetBackend::recv) would
    /// return, without consuming it; 0 when nothing is pending.
    fn peek_recvlen(&mut self) -> io::Result<usize>;

    /// Starts calling the receive callback when frames are ready. Back ends
    /// start with receive disabled, as bhyve's do.
    fn recv_enable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error>;

    /// Stops calling the receive callback; on return it will not run until
    /// [`recv_enable`](NetBackend::recv_enable), even for events already
    /// collected in the current round.
    fn recv_disable(&mut self, reactor: &mut Reactor<D>) -> Result<(), Error>;

    /// The virtio-net features (checksum and segmentation offloads) the back
    /// end can support.
    fn get_cap(&self) -> u64;

    /// Enables `features` (a subset of [`get_cap`](NetBackend::get_cap))
    /// with a `vnet_hdr_len`-byte header on every frame, or refuses with
    /// [`Error::CapRefused`] and changes nothing.
    fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error>;

    /// Deletes the back end's registrations and closes its descriptors
    /// (bhyve's `netbe_cleanup`). Dropping a back end without closing it
    /// closes its descriptors but leaves stale entries in the reactor.
    fn close(self: Box<Self>, reactor: &mut Reactor<D>) -> Result<(), Error>;
}

/// The back ends [`open`] knows, by the prefix of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A tap device: `/dev/net/tun` on Linux, `/dev/tapN` on FreeBSD.
    Tap,
    /// A FreeBSD vmnet device (`/dev/vmnetN`), a tap that stays up.
    Vmnet,
    /// User-mode networking with libslirp, on the reactor (feature
    /// `slirp`; without it [`open`] refuses the name as unsupported).
    Slirp,
    /// A NIC in netmap mode, `netmap:IFNAME`.
    Netmap,
    /// A port of a VALE software switch, `valeX:Y` (netmap).
    Vale,
}

impl BackendKind {
    /// Every kind, in the order names are matched.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Tap,
        BackendKind::Vmnet,
        BackendKind::Slirp,
        BackendKind::Netmap,
        BackendKind::Vale,
    ];

    /// The name prefix that selects this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            BackendKind::Tap => "tap",
            BackendKind::Vmnet => "vmnet",
            BackendKind::Slirp => "slirp",
            BackendKind::Netmap => "netmap",
            BackendKind::Vale => "vale",
        }
    }

    /// The first kind whose prefix starts `name`, as bhyve's `netbe_init`
    /// matches.
    pub fn from_name(name: &str) -> Result<BackendKind, Error> {
        BackendKind::ALL
            .into_iter()
            .find(|k| name.starts_with(k.prefix()))
            .ok_or_else(|| Error::UnknownBackend {
                name: name.to_owned(),
                known: BackendKind::ALL
                    .iter()
                    .map(|k| k.prefix())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Opens the back end `name` selects by its prefix (bhyve's `netbe_init`)
/// and registers it on `reactor`, receive disabled, with `cb` as its receive
/// callback.
pub fn open<D: 'static>(
    name: &str,
    reactor: &mut Reactor<D>,
    cb: impl FnMut(&mut Reactor<D>, &mut D) + 'static,
) -> Result<Box<dyn NetBackend<D>>, Error> {
    let cb: RxCallback<D> = Box::new(cb);
    match BackendKind::from_name(name)? {
        BackendKind::Tap => Ok(Box::new(TapBackend::open(name, reactor, cb)?)),
        BackendKind::Vmnet if cfg!(target_os = "freebsd") => {
            Ok(Box::new(TapBackend::open(name, reactor, cb)?))
        }
        BackendKind::Vmnet => Err(Error::Unsupported {
            name: name.to_owned(),
            reason: "vmnet devices exist only on FreeBSD",
        }),
        #[cfg(feature = "slirp")]
        BackendKind::Slirp => Ok(Box::new(SlirpBackend::open(name, reactor, cb)?)),
        #[cfg(not(feature = "slirp"))]
        BackendKind::Slirp => Err(Error::Unsupported {
            name: name.to_owned(),
            reason: "caploop was built without the `slirp` feature",
        }),
        BackendKind::Netmap | BackendKind::Vale => super::netmap::open_boxed(name, reactor, cb),
    }
}

/// A back end with the front end's view of it (bhyve's `netbe_*`
/// functions): it holds the front end's and the back end's virtio-net
/// header lengths and, when the back end takes no header, strips the front
/// end's on send and writes a zeroed one on receive.
pub struct Netbe<D> {
    be: Box<dyn NetBackend<D>>,
    fe_hdr: VnetHdrLen,
    be_hdr: VnetHdrLen,
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
    /// (0, 10 or 12; anything else is [`Error::BadVnetHdrLen`]). Features
    /// the back end did not offer are front-end business and are not passed
    /// on. If the back end will not take the header but no back-end
    /// features are wanted, it runs without one and this layer adapts (what
    /// bhyve does for tap). On error nothing changes.
    pub fn set_cap(&mut self, features: u64, vnet_hdr_len: usize) -> Result<(), Error> {
        let fe = VnetHdrLen::new(vnet_hdr_len)?;
        let offered = features & self.be.get_cap();
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
    /// An `iov` shorter than the header is [`Error::ShortIov`] (kind
    /// `InvalidInput`) and nothing is sent.
    pub fn send(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
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
    /// is [`Error::ShortIov`] and no frame is taken.
    pub fn recv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
        if !self.adapting() {
            return self.be.recv(iov);
        }
        let hlen = self.fe_hdr.len();
        let mut frame = vnet::write_rx_header(iov, self.fe_hdr)?;
        Ok(self.be.recv(&mut frame)?.map(|n| n + hlen))
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

    /// Receives one frame and throws it away (bhyve's `netbe_rx_discard`).
    /// Returns its length without header, or `None` when nothing was
    /// pending.
    pub fn rx_discard(&mut self) -> io::Result<Option<usize>> {
        let mut buf = vec![0u8; super::MAX_FRAME_LEN];
        let mut iov = [IoSliceMut::new(&mut buf)];
        match self.be.recv(&mut iov) {
            Err(e) if is_too_big(&e) => Ok(Some(super::MAX_FRAME_LEN)),
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
}

fn is_too_big(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .is_some_and(|e| matches!(e, Error::FrameTooBig { .. }))
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
    fn names_pick_backends_by_prefix() {
        assert_eq!(BackendKind::from_name("tap0").unwrap(), BackendKind::Tap);
        assert_eq!(BackendKind::from_name("tap").unwrap(), BackendKind::Tap);
        assert_eq!(
            BackendKind::from_name("vmnet3").unwrap(),
            BackendKind::Vmnet
        );
        assert_eq!(BackendKind::from_name("slirp").unwrap(), BackendKind::Slirp);
        assert_eq!(
            BackendKind::from_name("slirp,hostfwd=tcp::2222-:22").unwrap(),
            BackendKind::Slirp
        );
        assert_eq!(
            BackendKind::from_name("netmap:em0").unwrap(),
            BackendKind::Netmap
        );
        assert_eq!(
            BackendKind::from_name("vale0:1").unwrap(),
            BackendKind::Vale
        );
        for bad in ["", "eth0", "TAP0", " tap0"] {
            let e = BackendKind::from_name(bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("tap, vmnet, slirp, netmap, vale"), "{msg}");
        }
    }

    #[test]
    fn open_refuses_what_it_cannot_build() {
        let mut r: Reactor<()> = Reactor::new().unwrap();
        let e = open("foo0", &mut r, |_, _| {}).err().unwrap();
        assert!(matches!(e, Error::UnknownBackend { .. }), "{e}");
        #[cfg(feature = "slirp")]
        {
            let be = open("slirp", &mut r, |_, _| {}).unwrap();
            assert_eq!(be.name(), "slirp");
            be.close(&mut r).unwrap();
        }
        let e = open("slirp,open=maybe", &mut r, |_, _| {}).err().unwrap();
        assert!(e.to_string().contains("slirp"), "{e}");
        #[cfg(not(feature = "slirp"))]
        {
            let e = open("slirp", &mut r, |_, _| {}).err().unwrap();
            assert!(e.to_string().contains("`slirp` feature"), "{e}");
        }
        #[cfg(not(target_os = "freebsd"))]
        {
            let e = open("vmnet0", &mut r, |_, _| {}).err().unwrap();
            assert!(e.to_string().contains("only on FreeBSD"), "{e}");
        }
        let e = open("tap/../x", &mut r, |_, _| {}).err().unwrap();
        assert!(matches!(e, Error::BadName { .. }), "{e}");
        let e = open("tap0123456789abcdef", &mut r, |_, _| {})
            .err()
            .unwrap();
        assert!(matches!(e, Error::BadName { .. }), "{e}");
        assert!(r.is_empty());
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
        let f = [7u8; 20];
        assert_eq!(nb.send(&[IoSlice::new(&f)]).unwrap(), 20);
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
            assert_eq!(nb.rx_discard().unwrap(), Some(30));
            assert_eq!(nb.rx_discard().unwrap(), None);
        }
    }
}
