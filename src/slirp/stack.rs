//! [`Stack`]: one libslirp instance driven by a [`Reactor`].

use std::cell::{Cell, RefCell};
use std::os::raw::c_int;
use std::rc::Rc;

use super::callbacks::{Shared, CALLBACKS};
use super::config::{Config, TcpMode};
use super::ffi;
use super::hostfwd::{Proto, Rule};
use super::inner::{Inner, State};
use super::reass::{self, Reassembler, Verdict};
use super::urgent;
use super::{Error, Result};
use crate::frame::ethernet::{
    ethertype, Ethernet, ARP_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
};
use crate::frame::ipv4::{Ipv4, PROTO_TCP};
use crate::frame::ipv6::Ipv6;
use crate::frame::tcp::Tcp;
use crate::frame::vnet_hdr::Partial;
use crate::reactor::Reactor;

pub use super::inner::{Counters, ETH_HLEN};

/// One libslirp instance on a [`Reactor`]: a virtual network with a host,
/// a DNS forwarder and a DHCP server, for one guest.
///
/// Frames from the guest go in through [`input`](Stack::input); frames for
/// the guest go to the sink given to [`new`](Stack::new). libslirp's
/// sockets and timers are registered in the reactor and kept in sync by a
/// prepare hook, so the caller only runs the reactor. Methods that take a
/// reactor must be given the one the stack was made with.
///
/// libslirp writes to its sockets with plain `send()`: on Linux, where there
/// is no `SO_NOSIGPIPE`, the process must ignore SIGPIPE (Rust programs do
/// by default).
pub struct Stack {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("open", &self.inner.is_open())
            .field("counters", &self.inner.counters.get())
            .finish()
    }
}

impl Stack {
    /// Makes the libslirp instance for `config` and hooks it into
    /// `reactor`. Frames for the guest are passed to `sink`, on the loop
    /// thread, outside libslirp (so the sink may call [`input`](Stack::input)).
    pub fn new<D: 'static>(
        reactor: &mut Reactor<D>,
        config: Config,
        sink: impl FnMut(&[u8]) + 'static,
    ) -> Result<Stack> {
        let cconfig = config.to_c()?;
        let tcp = (config.tcp == TcpMode::Own)
            .then(|| RefCell::new(crate::tcp::Path::new(tcp_rules(&config))));
        let inner = Rc::new(Inner {
            slirp: Cell::new(std::ptr::null_mut()),
            in_slirp: Cell::new(false),
            closing: Cell::new(false),
            shared: Box::new(Shared::new()),
            _cconfig: cconfig,
            config,
            state: RefCell::new(State::default()),
            reass: RefCell::new(Reassembler::new()),
            sink: RefCell::new(Box::new(sink)),
            counters: Cell::new(Counters::default()),
            tcp,
            link_full: RefCell::new(None),
            offload: RefCell::new(None),
        });
        *inner.shared.detacher.borrow_mut() = Some(reactor.detacher());
        let opaque = &*inner.shared as *const Shared as *mut std::os::raw::c_void;
        // SAFETY: the config (version 4 layout, pinned by the ffi tests)
        // and the pointers in it live in `inner`; CALLBACKS is static and
        // has the full version-4 table; `opaque` is the boxed Shared, which
        // outlives the instance (Inner's Drop cleans up before its fields
        // drop).
        let s = unsafe { ffi::slirp_new(&inner._cconfig.raw, &CALLBACKS, opaque) };
        if s.is_null() {
            return Err(Error::New);
        }
        inner.slirp.set(s);

        let i = Rc::clone(&inner);
        let poll_timer = reactor.add_timer_disarmed(move |r, _, _| i.poll(r));
        let i = Rc::clone(&inner);
        let prepare = reactor.add_prepare(move |r, _| i.prepare(r));
        {
            let mut st = inner.state.borrow_mut();
            st.poll_timer = Some(poll_timer);
            st.prepare = Some(prepare);
        }
        inner.sync(reactor);
        Ok(Stack { inner })
    }

    /// Hands libslirp one Ethernet frame from the guest. Replies it makes
    /// at once (ARP, DHCP) reach the sink before this returns. Runt,
    /// oversize (more than MRU + 14 bytes) and truncated frames are counted
    /// and dropped; IPv4 fragments are held and handed on as one whole
    /// datagram once all have arrived (see [`reass`](super::reass)).
    pub fn input(&self, frame: &[u8]) {
        let inner = &self.inner;
        if frame.len() < ETH_HLEN {
            inner.count(|c| c.dropped_runt += 1);
            return;
        }
        if frame.len() > inner.config.mru + ETH_HLEN {
            inner.count(|c| c.dropped_oversize += 1);
            return;
        }
        if !well_formed(frame) {
            inner.count(|c| c.dropped_malformed += 1);
            return;
        }
        if !reass::is_fragment(frame) {
            return self.deliver(frame);
        }
        inner.count(|c| c.fragments_in += 1);
        let verdict = inner
            .reass
            .borrow_mut()
            .push(frame, std::time::Instant::now());
        match verdict {
            Verdict::Pass => self.deliver(frame),
            Verdict::Held => {}
            Verdict::Complete(whole) => {
                inner.count(|c| c.reassembled += 1);
                self.deliver(&whole);
            }
            Verdict::Dropped(why) => {
                inner.count(|c| c.dropped_fragments += 1);
                log::debug!("slirp: IPv4 fragment dropped: {why}");
            }
        }
    }

    /// Hands libslirp a TCP super-segment from a peer that offloads
    /// segmentation (TSO): one whole TCP datagram of up to 64 KiB, more
    /// than the MRU, which the peer would have cut into segments. A
    /// TCP/IPv4 one (unfragmented) goes in as one segment: one host `send`,
    /// one ACK. libslirp's IPv6 input refuses datagrams over its MTU, so a
    /// TCP/IPv6 one (no extension headers) is cut here into segments of
    /// the MTU (and MRU) ([`segment`](crate::frame::segment::segment)),
    /// which still spares the link its per-frame cost. A frame within the
    /// MRU goes to [`input`](Self::input); one that is neither is counted
    /// and dropped (`dropped_oversize`).
    pub fn input_segment(&self, frame: &[u8]) {
        let inner = &self.inner;
        if frame.len() <= inner.config.mru + ETH_HLEN {
            return self.input(frame);
        }
        if whole_tcp4(frame) {
            inner.count(|c| c.segments_in += 1);
            return self.deliver(frame);
        }
        if ethertype(frame) == Some(ETHERTYPE_IPV6) {
            // libslirp takes an IPv6 payload of at most its MTU, and this
            // stack frames of at most the MRU.
            let mtu = inner.config.mtu.min(inner.config.mru);
            // The pieces carry no urgent data (`segment` leaves it off).
            if urgent::carries(frame) {
                inner.count(|c| c.urgent_cleared += 1);
            }
            let cut = crate::frame::segment::segment(frame, mtu, &mut |seg| self.deliver(seg));
            if cut.is_ok() {
                inner.count(|c| c.segments_in += 1);
                return;
            }
        }
        inner.count(|c| c.dropped_oversize += 1);
    }

    /// [`input_segment`](Self::input_segment) (or [`input`](Self::input))
    /// for a super-segment or frame whose TCP checksum the guest left
    /// partial (`partial`, from
    /// [`unwrap_record_lazily`](crate::frame::vnet_hdr::unwrap_record_lazily)):
    /// the own TCP path takes a whole TCP/IPv4 datagram of its flows as it
    /// is (it does not verify guest checksums), sparing a pass over up to
    /// 64 KiB; anything else gets the checksum finished here first. One
    /// whose checksum field lies outside it is counted and dropped
    /// (`dropped_malformed`).
    pub fn input_partial(&self, frame: &mut [u8], partial: Partial) {
        let inner = &self.inner;
        if whole_tcp4(frame) && self.to_own_path(frame) {
            if frame.len() > inner.config.mru + ETH_HLEN {
                inner.count(|c| c.segments_in += 1);
            }
            return;
        }
        if partial.finish(frame).is_err() {
            inner.count(|c| c.dropped_malformed += 1);
            return;
        }
        self.input_segment(frame);
    }

    /// Whether the own TCP path took `frame` (one of its flows', or a SYN
    /// it answers); counted if so.
    fn to_own_path(&self, frame: &[u8]) -> bool {
        let Some(p) = &self.inner.tcp else {
            return false;
        };
        if !p.try_borrow_mut().is_ok_and(|mut p| p.take(frame)) {
            return false;
        }
        self.inner.count(|c| {
            c.frames_in += 1;
            c.bytes_in += frame.len() as u64;
        });
        true
    }

    /// Hands one checked frame (or a reassembled datagram, or a piece of
    /// a cut super-segment) to libslirp, without TCP urgent data
    /// ([`urgent`](super::urgent)).
    fn deliver(&self, frame: &[u8]) {
        if self.to_own_path(frame) {
            return;
        }
        let cleared = urgent::cleared(frame);
        let frame = match &cleared {
            Some(f) => {
                self.inner.count(|c| c.urgent_cleared += 1);
                f.as_slice()
            }
            None => frame,
        };
        let inner = &self.inner;
        let len = frame.len() as c_int;
        // SAFETY: `s` is the live instance; `frame` is valid for `len`
        // bytes for the call, which does not keep the pointer.
        let done = inner.call(|s| unsafe { ffi::slirp_input(s, frame.as_ptr(), len) });
        if done.is_none() {
            inner.count(|c| c.dropped_closed += 1);
            return;
        }
        inner.count(|c| {
            c.frames_in += 1;
            c.bytes_in += frame.len() as u64;
        });
        inner.shared.dirty.set(true);
        inner.shared.want_poll.set(true);
        inner.drain_frames();
    }

    /// Makes libslirp read the host's resolver configuration now, the way
    /// it will check it later, so DNS forwarding keeps working inside a
    /// sandbox that cannot open files. Call it in open mode before entering.
    ///
    /// libslirp reads `/etc/resolv.conf` on the first query to the DNS
    /// address and caches it; a query more than a second later `stat`s the
    /// file and reads it again unless it is unchanged since the previous
    /// read (the first read records no `stat`). So two queries are fed in,
    /// with the stack's clock moved a little over a second forward between
    /// them (no real waiting): after that only `stat` is needed, which the
    /// Linux sandbox allows in open mode. A change of the file after entry
    /// costs one dropped query and keeps the old resolver. The two queries
    /// (for `localhost.`) go to the host's resolver like a guest's would;
    /// they are not counted. `reactor` is the stack's own.
    pub fn prime_dns<D: 'static>(&self, reactor: &mut Reactor<D>) {
        let inner = &self.inner;
        if inner.config.restricted || !inner.config.dns_enabled || !inner.config.ipv4 {
            return;
        }
        let counters = inner.counters.get();
        let src = inner.config.dhcp_start.octets();
        let dns = inner.config.dns.octets();
        // libslirp reads its clock into the time it compares against only
        // in slirp_pollfds_poll: run a fill and a poll around each query.
        let round = |r: &mut Reactor<D>| {
            inner.shared.dirty.set(true);
            inner.sync(r);
            inner.poll(r);
        };
        round(reactor);
        self.input(&dns_query_frame(src, dns, 53_530));
        inner.shared.skip(std::time::Duration::from_millis(1_100));
        round(reactor);
        self.input(&dns_query_frame(src, dns, 53_531));
        round(reactor);
        inner.counters.set(counters);
    }

    /// Adds a host forward. The host socket is bound at once (so a port in
    /// use fails here) and registered in `reactor` (the stack's own) at
    /// once, so a sandbox plan taken next limits it. With
    /// [`TcpMode::Own`] a TCP forward is the own path's (its connections
    /// get scaled windows); UDP ones stay libslirp's.
    pub fn add_hostfwd<D: 'static>(&self, reactor: &mut Reactor<D>, rule: &Rule) -> Result<()> {
        let inner = &self.inner;
        if rule.proto == Proto::Udp && inner.config.restricted {
            log::warn!(
                "slirp: UDP forward {rule} in restricted mode is one-way: libslirp drops \
                 every datagram from the guest there, replies included"
            );
        }
        let guest = rule.guest_socket_addr(inner.config.dhcp_start);
        let host = rule.host_socket_addr();
        let refuse = |why: &str| {
            Err(Error::Hostfwd {
                rule: rule.to_string(),
                source: std::io::Error::other(why),
            })
        };
        if guest.is_ipv6() && !inner.config.ipv6 {
            return refuse("IPv6 is disabled in the stack's configuration");
        }
        if !guest.is_ipv6() && !inner.config.ipv4 {
            return refuse("IPv4 is disabled in the stack's configuration");
        }
        if host.is_ipv6() != guest.is_ipv6() {
            return refuse(
                "the host and guest addresses are of different families \
                 (libslirp forwards within one; give an IPv6 guest address)",
            );
        }
        if let (Proto::Tcp, Some(p)) = (rule.proto, &inner.tcp) {
            let Ok(mut p) = p.try_borrow_mut() else {
                return refuse("the TCP path is busy");
            };
            return p
                .add_forward(
                    reactor,
                    host,
                    guest,
                    rule.real_source.unwrap_or(inner.config.hostfwd_real_source),
                )
                .map_err(|source| Error::Hostfwd {
                    rule: rule.to_string(),
                    source,
                });
        }
        let h = ffi::SockAddr::new(host);
        let g = ffi::SockAddr::new(guest);
        let ((hp, hl), (gp, gl)) = (h.as_ptr(), g.as_ptr());
        let flags = match rule.proto {
            Proto::Tcp => 0,
            Proto::Udp => ffi::SLIRP_HOSTFWD_UDP,
        };
        let rc = inner.call(|s| {
            // SAFETY: both addresses are valid for their lengths for the
            // call; libslirp copies them.
            let rc = unsafe { ffi::slirp_add_hostxfwd(s, hp, hl, gp, gl, flags) };
            (rc, std::io::Error::last_os_error())
        });
        inner.shared.dirty.set(true);
        inner.sync(reactor);
        match rc {
            Some((0, _)) => Ok(()),
            Some((_, source)) => Err(Error::Hostfwd {
                rule: rule.to_string(),
                source,
            }),
            None => Err(Error::Closed),
        }
    }

    /// Removes a host forward added with [`add_hostfwd`](Stack::add_hostfwd)
    /// and its listener's registration in `reactor`. Connections already
    /// forwarded stay up.
    pub fn remove_hostfwd<D: 'static>(&self, reactor: &mut Reactor<D>, rule: &Rule) -> Result<()> {
        let inner = &self.inner;
        if let (Proto::Tcp, Some(p)) = (rule.proto, &inner.tcp) {
            let removed = p
                .try_borrow_mut()
                .is_ok_and(|mut p| p.remove_forward(reactor, rule.host_socket_addr()));
            return if removed {
                Ok(())
            } else {
                Err(Error::NoSuchHostfwd(rule.to_string()))
            };
        }
        let h = ffi::SockAddr::new(rule.host_socket_addr());
        let (hp, hl) = h.as_ptr();
        let flags = match rule.proto {
            Proto::Tcp => 0,
            Proto::Udp => ffi::SLIRP_HOSTFWD_UDP,
        };
        // SAFETY: the address is valid for its length for the call.
        let rc = inner.call(|s| unsafe { ffi::slirp_remove_hostxfwd(s, hp, hl, flags) });
        inner.shared.dirty.set(true);
        inner.sync(reactor);
        match rc {
            Some(0) => Ok(()),
            Some(_) => Err(Error::NoSuchHostfwd(rule.to_string())),
            None => Err(Error::Closed),
        }
    }

    /// Moves the stack's clock forward by `d`, as if that much time had
    /// passed for libslirp (its UDP expiry, TCP timers), without waiting:
    /// for tests and simulations of its timeouts. The effect shows at the
    /// next reactor round.
    pub fn advance_clock(&self, d: std::time::Duration) {
        self.inner.shared.skip(d);
        // libslirp reads its clock in slirp_pollfds_poll: poll this round.
        self.inner.shared.dirty.set(true);
        self.inner.shared.want_poll.set(true);
    }

    /// What the stack has done so far.
    pub fn counters(&self) -> Counters {
        let mut c = self.inner.counters.get();
        c.guest_errors = self.inner.shared.guest_errors.get();
        c
    }

    /// What the own TCP path has done, if the stack has it
    /// ([`TcpMode::Own`], the default).
    pub fn tcp_counters(&self) -> Option<crate::tcp::TcpCounters> {
        let p = self.inner.tcp.as_ref()?;
        p.try_borrow().ok().map(|p| p.counters)
    }

    /// Tells the own TCP path how to learn whether the link toward the
    /// guest is full (`probe` returns true while frames wait in the
    /// embedder's queue; it may try to flush that queue first). While it
    /// is, the path sends the guest nothing new: its flows keep the bytes
    /// in their own buffers, windows and acknowledgements hold the host
    /// back, and nothing is copied into the embedder's queue; a flow held
    /// back is served again once `probe` says the link has room, which
    /// the embedder learns from the link becoming writable (its own
    /// registration). Without a probe the path sends what its windows
    /// allow and the sink queues what the link cannot take.
    pub fn set_link_full(&self, probe: impl FnMut() -> bool + 'static) {
        *self.inner.link_full.borrow_mut() = Some(Box::new(probe));
    }

    /// Tells the own TCP path that the link toward the guest takes
    /// offloads, as a tap opened with a virtio-net header does, or a
    /// virtio-net guest that accepted `GUEST_TSO4` / `GUEST_TSO6` (`takes`
    /// says for which of IPv4 and IPv6 it does now; it is asked once a
    /// round). Flows of those families opened while it does are built for
    /// it: smoltcp makes segments of up to 64 KiB without their TCP
    /// checksum, and each one longer than the guest's MSS goes to `sink`
    /// with the virtio-net header (10 bytes) that has the guest cut it
    /// (`GSO_TCPV4` or `GSO_TCPV6` at the guest's MSS, `NEEDS_CSUM`), to be
    /// written as it is: no merging copy and no checksum pass on this
    /// side. Such frames made after `takes` stopped saying yes for their
    /// family are cut and checksummed here and go to the plain sink.
    /// Everything else (libslirp's frames, segments within the MSS) goes
    /// to the plain sink as before.
    pub fn set_offload(
        &self,
        takes: impl FnMut() -> (bool, bool) + 'static,
        sink: impl FnMut(&[u8], &[u8]) + 'static,
    ) {
        *self.inner.offload.borrow_mut() = Some(super::inner::Offload {
            takes: Box::new(takes),
            sink: Box::new(sink),
        });
    }

    /// The configuration the stack runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// libslirp's human-readable table of its connections.
    pub fn connection_info(&self) -> Option<String> {
        // SAFETY: `s` is the live instance.
        let p = self
            .inner
            .call(|s| unsafe { ffi::slirp_connection_info(s) })?;
        if p.is_null() {
            return None;
        }
        // SAFETY: libslirp returns a NUL-terminated string it allocated.
        let text = unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the string comes from g_malloc, which has used the system
        // allocator since GLib 2.46 (libslirp 4.7 needs GLib >= 2.56), and
        // it is freed once.
        unsafe { libc::free(p.cast()) };
        Some(text)
    }

    /// Applies at once what libslirp asked for since the stack last saw the
    /// reactor (sockets opened or closed by [`input`](Stack::input) made
    /// outside a reactor callback), instead of at the next round.
    pub fn sync<D: 'static>(&self, reactor: &mut Reactor<D>) {
        self.inner.sync(reactor);
    }

    /// Drops at once the registrations of descriptors libslirp closed since
    /// the stack last saw the reactor (a frame given to
    /// [`input`](Stack::input) outside a callback can end a connection),
    /// so that a descriptor another callback opens this round may reuse the
    /// number. Cheaper than [`sync`](Stack::sync): no poll-set fill.
    pub fn release_closed<D: 'static>(&self, reactor: &mut Reactor<D>) {
        self.inner.apply(reactor);
    }

    /// Destroys the instance and removes its registrations, timers and hook
    /// from `reactor` now. Dropping the stack does the same, but leaves the
    /// reactor side to the reactor's next round.
    pub fn close<D: 'static>(self, reactor: &mut Reactor<D>) {
        self.inner.cleanup();
        self.inner.teardown(reactor);
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Rc<Inner> {
        &self.inner
    }

    /// The version of the libslirp linked in.
    pub fn version() -> &'static str {
        ffi::version()
    }

    /// The number of descriptors the stack has registered in the reactor
    /// (enabled or not): libslirp's, and the own TCP path's host sockets
    /// and forward listeners.
    pub fn registrations(&self) -> usize {
        let path = self
            .inner
            .tcp
            .as_ref()
            .and_then(|p| p.try_borrow().ok())
            .map_or(0, |p| p.registrations());
        self.inner.state.try_borrow().map_or(0, |s| s.regs.len()) + path
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.inner.cleanup();
        self.inner.closing.set(true);
    }
}

/// An Ethernet frame carrying a DNS query for `localhost.` (type A) from
/// `src`:`port` to the DNS forwarder at `dns`, for [`Stack::prime_dns`].
fn dns_query_frame(src: [u8; 4], dns: [u8; 4], port: u16) -> Vec<u8> {
    let mut dnsq = vec![0x63, 0x6c, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dnsq.extend_from_slice(b"\x09localhost\x00");
    dnsq.extend_from_slice(&[0, 1, 0, 1]);
    let udp_len = (8 + dnsq.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dns);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x52, 0x54, 0x00, 0xca, 0x91, 0x00]);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&dnsq);
    f
}

/// Where the own TCP path may take the guest's connections.
fn tcp_rules(c: &Config) -> crate::tcp::Rules {
    crate::tcp::Rules {
        ipv4: c.ipv4,
        network: c.network,
        prefix_len: c.prefix_len,
        host: c.host,
        ipv6: c.ipv6,
        prefix6: c.prefix6,
        prefix6_len: c.prefix6_len,
        host6: c.host6,
        host_loopback: c.host_loopback,
        outbound: c.outbound_addr,
        outbound6: c.outbound_addr6,
        mtu: c.mtu,
        open: !c.restricted,
        idle_timeout: c.tcp_idle_timeout,
        fin_timeout: c.tcp_fin_timeout,
    }
}

/// Whether `frame` is an ARP packet or an IPv4 or IPv6 datagram whose
/// header is whole and whose length field fits the frame (other types
/// pass: libslirp ignores them). libslirp's IPv6 input trusts the payload
/// length, so a datagram claiming more than the frame holds stops here.
fn well_formed(frame: &[u8]) -> bool {
    let Ok(eth) = Ethernet::new_checked(frame) else {
        return false;
    };
    match eth.ethertype() {
        ETHERTYPE_ARP => eth.payload().len() >= ARP_LEN,
        ETHERTYPE_IPV4 => Ipv4::new_checked(eth.payload()).is_ok(),
        ETHERTYPE_IPV6 => Ipv6::new_checked(eth.payload()).is_ok(),
        _ => true,
    }
}

/// Whether `frame` is one unfragmented TCP/IPv4 datagram of at most 64 KiB
/// whose IPv4 total length is the rest of the frame.
fn whole_tcp4(frame: &[u8]) -> bool {
    let Ok(eth) = Ethernet::new_checked(frame) else {
        return false;
    };
    let ip = eth.payload();
    if eth.ethertype() != ETHERTYPE_IPV4 || ip.len() > usize::from(u16::MAX) {
        return false;
    }
    let Ok(v4) = Ipv4::new_checked(ip) else {
        return false;
    };
    v4.protocol() == PROTO_TCP
        && !v4.is_fragment()
        && v4.total_len() == ip.len()
        && Tcp::new_checked(v4.payload()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::whole_tcp4;

    /// An Ethernet frame with a TCP/IPv4 datagram of `len` bytes in all.
    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + len];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(len as u16).to_be_bytes());
        f[14 + 6] = 0x40; // DF
        f[14 + 9] = 6;
        f[14 + 20 + 12] = 5 << 4;
        f
    }

    #[test]
    fn only_one_whole_tcp4_datagram_passes_as_a_segment() {
        assert!(whole_tcp4(&frame(60_000)));
        assert!(whole_tcp4(&frame(65_535)));
        assert!(!whole_tcp4(&frame(39)), "shorter than two headers");
        let mut f = frame(60_000);
        f.pop();
        assert!(!whole_tcp4(&f), "total length is not the frame's");
        let mut f = frame(60_000);
        f[14 + 6] = 0x20;
        assert!(!whole_tcp4(&f), "a fragment");
        let mut f = frame(60_000);
        f[14 + 9] = 17;
        assert!(!whole_tcp4(&f), "UDP");
        let mut f = frame(60_000);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(!whole_tcp4(&f), "IPv6");
        let mut f = frame(60_000);
        f[14] = 0x44;
        assert!(!whole_tcp4(&f), "IHL below 5");
        let mut f = frame(60_000);
        f[14 + 20 + 12] = 4 << 4;
        assert!(!whole_tcp4(&f), "TCP data offset below 20");
        assert!(!whole_tcp4(&[0u8; 10]));
    }
}
