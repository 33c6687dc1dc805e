//! Keeping the reactor's registrations in step with libslirp's sockets.
//!
//! Each round the prepare hook calls `slirp_pollfds_fill` (when anything
//! happened since the last fill) and diffs the (fd, events) set against the
//! registrations: new descriptors are added (borrowed), changed interest is
//! set, descriptors libslirp no longer wants events from are disabled, and
//! closed ones (announced by `unregister_poll_fd`) are deleted. Readiness
//! callbacks only record revents and arm the poll timer for "now", which
//! the reactor runs after this round's descriptor callbacks; it answers
//! `slirp_pollfds_poll` from the record. The same timer, armed for the
//! timeout the fill returns, drives libslirp's TCP timers.

use std::os::fd::RawFd;
use std::os::raw::{c_int, c_void};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::ffi;
use super::inner::{Inner, PollCtx, Reg};
use crate::reactor::{Event, Interest, Reactor, Source};
use crate::rights::Rights;

unsafe extern "C" fn add_poll(fd: c_int, events: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the `&mut PollCtx` our sync passed to
    // slirp_pollfds_fill, exclusively ours for the duration of that call.
    let ctx = unsafe { &mut *(opaque as *mut PollCtx) };
    let Ok(idx) = c_int::try_from(ctx.entries.len()) else {
        return -1;
    };
    ctx.entries.push((fd, events));
    idx
}

unsafe extern "C" fn get_revents(idx: c_int, opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the `&mut PollCtx` our poll passed to
    // slirp_pollfds_poll, exclusively ours for the duration of that call.
    let ctx = unsafe { &*(opaque as *const PollCtx) };
    let Some(&(fd, events)) = usize::try_from(idx).ok().and_then(|i| ctx.entries.get(i)) else {
        return 0;
    };
    let mut rev = ctx.revents.get(&fd).copied().unwrap_or(0);
    // As bhyve: the kernel may report a hangup that was not asked for.
    if events & ffi::SLIRP_POLL_HUP == 0 {
        rev &= !ffi::SLIRP_POLL_HUP;
    }
    rev & (events | ffi::SLIRP_POLL_ERR)
}

/// The reactor interest for libslirp's events. Error and hangup need no
/// interest: epoll always reports them.
fn interest_of(events: c_int) -> Interest {
    let mut i = Interest::empty();
    if events & (ffi::SLIRP_POLL_IN | ffi::SLIRP_POLL_PRI) != 0 {
        i |= Interest::READ;
    }
    if events & ffi::SLIRP_POLL_OUT != 0 {
        i |= Interest::WRITE;
    }
    i
}

/// What a libslirp socket needs: a listener accepts (and on FreeBSD hands
/// its rights to what it accepts); a datagram socket also asks FIONREAD,
/// and when the guest may reach the outside (`open`) it answers with
/// `sendto` to an address, which FreeBSD's `kern_sendit` allows only with
/// `CAP_CONNECT` beside `CAP_SEND`: so CONNECT too (on Linux no rule names
/// these EPHEMERAL numbers; the allowlist decides).
fn rights_for(fd: RawFd, open: bool) -> Rights {
    let get = |opt: c_int| -> Option<c_int> {
        let mut v: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes to `v`; on a bad
        // descriptor it only fails.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    };
    // libslirp closes its sockets when connections end and makes new ones
    // of other kinds, so their numbers come back: EPHEMERAL.
    Rights::EPHEMERAL
        | if get(libc::SO_ACCEPTCONN).unwrap_or(0) != 0 {
            Rights::LISTENER
        } else if get(libc::SO_TYPE) == Some(libc::SOCK_DGRAM) {
            let dgram = Rights::SOCKET | Rights::SETSOCKOPT | Rights::IOCTL_FIONREAD;
            if open {
                dgram | Rights::CONNECT
            } else {
                dgram
            }
        } else {
            Rights::SOCKET
        }
}

fn revents_of(ev: &Event) -> c_int {
    let mut rev = 0;
    if ev.readable {
        rev |= ffi::SLIRP_POLL_IN;
    }
    if ev.writable {
        rev |= ffi::SLIRP_POLL_OUT;
    }
    if ev.hangup {
        rev |= ffi::SLIRP_POLL_HUP;
    }
    if ev.error {
        rev |= ffi::SLIRP_POLL_ERR;
    }
    rev
}

impl Inner {
    /// The prepare hook: tear down after the handle was dropped, else sync.
    pub fn prepare<D: 'static>(self: &Rc<Self>, r: &mut Reactor<D>) {
        if self.closing.get() {
            self.teardown(r);
        } else {
            self.sync(r);
            self.run_tcp(r);
        }
    }

    /// Applies pending operations and, if anything happened since the last
    /// fill, fills and diffs the registrations.
    pub fn sync<D: 'static>(self: &Rc<Self>, r: &mut Reactor<D>) {
        self.apply(r);
        if !self.shared.dirty.replace(false) {
            return;
        }
        let Ok(mut ctx) = self
            .state
            .try_borrow_mut()
            .map(|mut st| std::mem::take(&mut st.poll))
        else {
            return;
        };
        ctx.entries.clear();
        let mut timeout = u32::MAX;
        let p = &mut ctx as *mut PollCtx as *mut c_void;
        // SAFETY: `s` is the live instance; `timeout` and `ctx` outlive the
        // call and are not touched by anything else during it.
        let filled = self
            .call(|s| unsafe { ffi::slirp_pollfds_fill(s, &mut timeout, add_poll, p) })
            .is_some();
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.poll = ctx;
        }
        // A fill may expire UDP and ICMP sockets (closing them).
        self.after_call(r);
        if filled {
            self.diff(r);
            let timeout = if self.shared.want_poll.replace(false) {
                0
            } else {
                timeout
            };
            self.arm_poll_timer(r, timeout);
        }
    }

    fn arm_poll_timer<D: 'static>(&self, r: &mut Reactor<D>, timeout_ms: u32) {
        let Ok(st) = self.state.try_borrow() else {
            return;
        };
        if st.poll_now {
            return;
        }
        if let Some(h) = st.poll_timer {
            let after = Duration::from_millis(u64::from(timeout_ms.min(1000)));
            let _ = r.rearm_timer(h, after);
        }
    }

    /// Brings the registrations in line with the last fill.
    fn diff<D: 'static>(self: &Rc<Self>, r: &mut Reactor<D>) {
        let Ok(mut st) = self.state.try_borrow_mut() else {
            return;
        };
        st.gen += 1;
        let gen = st.gen;
        let entries = std::mem::take(&mut st.poll.entries);
        let mut errors = 0u64;
        for &(fd, events) in &entries {
            let interest = interest_of(events);
            if let Some(reg) = st.regs.get_mut(&fd) {
                if reg.seen == gen {
                    continue;
                }
                reg.seen = gen;
                let mut ok = true;
                if reg.interest != interest {
                    ok &= r.set_interest(reg.handle, interest).is_ok();
                    reg.interest = interest;
                }
                if ok && !reg.enabled {
                    ok &= r.enable(reg.handle).is_ok();
                    reg.enabled = true;
                }
                if ok {
                    continue;
                }
                // The descriptor behind the registration changed under us
                // (closed and reused without unregister_poll_fd): start over.
                log::debug!("slirp: re-registering fd {fd}");
                let h = reg.handle;
                st.regs.remove(&fd);
                let _ = r.delete(h);
            }
            let inner = Rc::clone(self);
            // SAFETY: libslirp owns the socket and says when it closes it
            // (unregister_poll_fd, applied before the next reactor call),
            // or closes it only inside a libslirp call after which the
            // stack applies its closes before the reactor does anything
            // else; the registration is deleted then.
            let source = unsafe { Source::borrow_raw(fd) };
            let open = !self.config.restricted;
            let added = r.add(source, interest, rights_for(fd, open), move |r, _, ev| {
                inner.on_ready(r, ev)
            });
            match added {
                Ok(handle) => {
                    st.regs.insert(
                        fd,
                        Reg {
                            handle,
                            interest,
                            enabled: true,
                            seen: gen,
                        },
                    );
                }
                Err(e) => {
                    // That connection would hang: never silent. Said once
                    // per descriptor (libslirp asks again every round),
                    // counted in `reactor_errors`.
                    errors += 1;
                    if st.refused.insert(fd) {
                        log::error!(
                            "slirp: the reactor refused libslirp's socket {fd}: {e}; \
                             its connection cannot make progress"
                        );
                    }
                }
            }
        }
        for reg in st.regs.values_mut() {
            if reg.seen != gen && reg.enabled {
                // libslirp wants nothing from it for now (a full buffer
                // towards the guest, nothing to send): stop level-triggered
                // events until it does.
                let _ = r.disable(reg.handle);
                reg.enabled = false;
            }
        }
        st.poll.entries = entries;
        drop(st);
        if errors > 0 {
            self.count(|c| c.reactor_errors += errors);
        }
    }

    /// A libslirp descriptor is ready: record it, poll at the end of the round.
    fn on_ready<D: 'static>(&self, r: &mut Reactor<D>, ev: Event) {
        let Ok(mut st) = self.state.try_borrow_mut() else {
            return;
        };
        *st.poll.revents.entry(ev.fd).or_insert(0) |= revents_of(&ev);
        if !st.poll_now {
            st.poll_now = true;
            if let Some(h) = st.poll_timer {
                let _ = r.rearm_timer_at(h, Instant::now());
            }
        }
    }

    /// The poll timer: answers `slirp_pollfds_poll` from the recorded
    /// readiness (none when it fired for libslirp's timeout).
    pub fn poll<D: 'static>(self: &Rc<Self>, r: &mut Reactor<D>) {
        self.apply(r);
        let Ok(mut ctx) = self.state.try_borrow_mut().map(|mut st| {
            st.poll_now = false;
            std::mem::take(&mut st.poll)
        }) else {
            return;
        };
        let p = &mut ctx as *mut PollCtx as *mut c_void;
        // SAFETY: `s` is the live instance, and a fill has run since it was
        // made (Stack::new syncs), so libslirp's indexes refer to `ctx`,
        // which outlives the call.
        let _ = self.call(|s| unsafe { ffi::slirp_pollfds_poll(s, 0, get_revents, p) });
        ctx.revents.clear();
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.poll = ctx;
        }
        self.shared.dirty.set(true);
        self.after_call(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_mapping() {
        assert_eq!(
            interest_of(ffi::SLIRP_POLL_IN | ffi::SLIRP_POLL_HUP | ffi::SLIRP_POLL_ERR),
            Interest::READ
        );
        assert_eq!(
            interest_of(ffi::SLIRP_POLL_OUT | ffi::SLIRP_POLL_ERR),
            Interest::WRITE
        );
        assert_eq!(interest_of(ffi::SLIRP_POLL_ERR), Interest::empty());
    }

    #[test]
    fn revents_are_masked() {
        let mut ctx = PollCtx::default();
        ctx.entries
            .push((5, ffi::SLIRP_POLL_OUT | ffi::SLIRP_POLL_ERR));
        ctx.revents.insert(
            5,
            ffi::SLIRP_POLL_OUT | ffi::SLIRP_POLL_HUP | ffi::SLIRP_POLL_ERR,
        );
        let p = &mut ctx as *mut PollCtx as *mut c_void;
        // SAFETY: `p` points to a live PollCtx for the calls.
        let (a, b) = unsafe { (get_revents(0, p), get_revents(7, p)) };
        assert_eq!(a, ffi::SLIRP_POLL_OUT | ffi::SLIRP_POLL_ERR);
        assert_eq!(b, 0);
    }

    #[test]
    fn listener_rights() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        for open in [false, true] {
            assert_eq!(
                rights_for(l.as_raw_fd(), open),
                Rights::LISTENER | Rights::EPHEMERAL
            );
        }
        let udp = rights_for(u.as_raw_fd(), false);
        assert!(udp.contains(Rights::IOCTL_FIONREAD | Rights::SETSOCKOPT | Rights::EPHEMERAL));
        assert!(
            !udp.contains(Rights::CONNECT),
            "restricted: no sendto to an address"
        );
    }

    #[test]
    fn an_open_datagram_socket_may_send_to_an_address_on_freebsd() {
        use std::os::fd::AsRawFd;
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // kern_sendit: a destination needs CAP_SEND and CAP_CONNECT, which
        // these rights become (sandbox::capsicum_limits, tested there).
        assert!(rights_for(u.as_raw_fd(), true).contains(Rights::CONNECT | Rights::SEND));
        assert!(!rights_for(u.as_raw_fd(), false).contains(Rights::CONNECT));
    }
}
