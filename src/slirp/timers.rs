//! libslirp's timers as reactor timers.
//!
//! `timer_new_opaque` (or `timer_new`) makes a disarmed, persistent reactor
//! timer; `timer_mod` re-arms it for an absolute time on the stack's clock
//! (milliseconds from `clock_get_ns`); `timer_free` cancels it. When it
//! fires, libslirp's handler runs (`slirp_handle_timer` or the callback)
//! unless the timer was re-armed for later or freed in the meantime.

use std::rc::Rc;

use super::callbacks::{Op, TimerKind};
use super::ffi;
use super::inner::{Inner, SlirpTimer, State};
use crate::reactor::Reactor;

impl Inner {
    /// Applies one timer operation (called by `apply`, state borrowed).
    pub fn apply_timer_op<D: 'static>(self: &Rc<Self>, st: &mut State, r: &mut Reactor<D>, op: Op) {
        match op {
            Op::TimerNew { id, kind } => {
                let inner = Rc::clone(self);
                let handle = r.add_timer_disarmed(move |r, _, _| inner.fire_timer(r, id));
                st.timers.insert(
                    id,
                    SlirpTimer {
                        kind,
                        handle,
                        expire_ms: None,
                    },
                );
            }
            Op::TimerMod { id, expire_ms } => {
                if let Some(t) = st.timers.get_mut(&id) {
                    t.expire_ms = Some(expire_ms);
                    let _ = r.rearm_timer_at(t.handle, self.shared.deadline(expire_ms));
                }
            }
            Op::TimerFree { id } => {
                if let Some(t) = st.timers.remove(&id) {
                    let _ = r.cancel_timer(t.handle);
                }
            }
            Op::Register(_) | Op::Unregister(_) => {}
        }
    }

    /// A libslirp timer's reactor timer fired.
    fn fire_timer<D: 'static>(self: &Rc<Self>, r: &mut Reactor<D>, id: usize) {
        // Operations queued by calls made without the reactor may have
        // re-armed or freed this timer.
        self.apply(r);
        let kind = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return;
            };
            let Some(t) = st.timers.get_mut(&id) else {
                return;
            };
            match t.expire_ms {
                Some(ms) if ms <= self.shared.now_ms() => {
                    t.expire_ms = None;
                    t.kind
                }
                _ => return,
            }
        };
        let _ = self.call(|s| match kind {
            // SAFETY: `s` is the live instance; `id` and `cb_opaque` are
            // what libslirp gave timer_new_opaque for this timer.
            TimerKind::Opaque { id, cb_opaque } => unsafe {
                ffi::slirp_handle_timer(s, id, cb_opaque)
            },
            // SAFETY: `cb` and `cb_opaque` are what libslirp gave timer_new
            // for this timer, which is not freed (it is still in the table).
            TimerKind::Callback { cb, cb_opaque } => unsafe { cb(cb_opaque) },
        });
        self.shared.dirty.set(true);
        self.after_call(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slirp::{Config, Stack};
    use std::cell::Cell;
    use std::os::raw::c_void;
    use std::time::{Duration, Instant};

    unsafe extern "C" fn bump(opaque: *mut c_void) {
        // SAFETY: the test passes a pointer to a Cell<u32> that outlives
        // the timer.
        let c = unsafe { &*(opaque as *const Cell<u32>) };
        c.set(c.get() + 1);
    }

    /// Drives the timer plumbing the way libslirp's callbacks would:
    /// new, mod (absolute ms on the stack clock), re-mod, free.
    #[test]
    fn timer_ops_become_reactor_timers() {
        let mut r: Reactor<()> = Reactor::new().unwrap();
        let stack = Stack::new(&mut r, Config::default(), |_| {}).unwrap();
        let inner = stack.inner().clone();
        let fired = Box::new(Cell::new(0u32));
        let kind = TimerKind::Callback {
            cb: bump,
            cb_opaque: &*fired as *const Cell<u32> as *mut c_void,
        };
        let sh = &inner.shared;
        sh.push_op(Op::TimerNew { id: 9999, kind });
        sh.push_op(Op::TimerMod {
            id: 9999,
            expire_ms: sh.now_ms() + 30,
        });
        let start = Instant::now();
        while fired.get() == 0 && start.elapsed() < Duration::from_secs(2) {
            r.run_once(Some(Duration::from_millis(100)), &mut ())
                .unwrap();
        }
        assert_eq!(fired.get(), 1);
        assert!(start.elapsed() >= Duration::from_millis(29));

        // Re-armed for later, then moved earlier: fires once, at the
        // earlier time.
        sh.push_op(Op::TimerMod {
            id: 9999,
            expire_ms: sh.now_ms() + 10_000,
        });
        sh.push_op(Op::TimerMod {
            id: 9999,
            expire_ms: sh.now_ms() + 10,
        });
        let start = Instant::now();
        while fired.get() == 1 && start.elapsed() < Duration::from_secs(2) {
            r.run_once(Some(Duration::from_millis(100)), &mut ())
                .unwrap();
        }
        assert_eq!(fired.get(), 2);
        assert!(start.elapsed() < Duration::from_secs(5));

        // Armed, then freed: never fires.
        sh.push_op(Op::TimerMod {
            id: 9999,
            expire_ms: sh.now_ms() + 5,
        });
        sh.push_op(Op::TimerFree { id: 9999 });
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            r.run_once(Some(Duration::from_millis(10)), &mut ())
                .unwrap();
        }
        assert_eq!(fired.get(), 2);
        assert!(!inner.state.borrow().timers.contains_key(&9999));
        stack.close(&mut r);
        drop(fired);
    }
}
