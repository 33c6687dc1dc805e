//! Running the loop: one round is the prepare hooks, one wait, then every
//! ready descriptor, routed signal and due timer, each callback free to
//! change any registration.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::signal::SignalSource;
use super::*;

impl<D> Reactor<D> {
    /// Asks [`run`](Reactor::run) to return after the current round.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Runs rounds until a callback calls [`stop`](Reactor::stop).
    pub fn run(&mut self, data: &mut D) -> Result<()> {
        while !std::mem::take(&mut self.stopped) {
            self.run_once(None, data)?;
        }
        Ok(())
    }

    /// Runs one round: prepare hooks, one wait of at most `timeout` (or
    /// until the next timer; `None` waits for an event), then every ready
    /// descriptor, signal and due timer. Returns how many callbacks ran.
    pub fn run_once(&mut self, timeout: Option<Duration>, data: &mut D) -> Result<usize> {
        if self.dispatching {
            return Err(Error::Reentrant);
        }
        self.dispatching = true;
        let res = self.round(timeout, data);
        self.dispatching = false;
        res
    }

    fn round(&mut self, timeout: Option<Duration>, data: &mut D) -> Result<usize> {
        let mut ran = 0;
        self.apply_removals();
        for i in 0..self.hooks.len() {
            let gen = self.hooks[i].gen;
            if let Some(mut cb) = self.hooks[i].cb.take() {
                cb(self, data);
                self.apply_removals();
                ran += 1;
                let slot = &mut self.hooks[i];
                if slot.gen == gen && slot.live && slot.cb.is_none() {
                    slot.cb = Some(cb);
                }
            }
        }

        let now = Instant::now();
        let mut deadline = timeout.map(|t| now.checked_add(t).unwrap_or(far_future(now)));
        if let Some(t) = self.timers.next_deadline() {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        }
        if self.stopped {
            deadline = Some(now);
        }
        self.waiter
            .wait(&self.poller, deadline)
            .map_err(|e| Error::io("waiting for events", e))?;

        self.pending.clear();
        for i in 0..self.waiter.ready.len() {
            let ev = self.waiter.ready[i];
            if SignalSource::owns_key(ev.key) {
                self.signals.drain(ev.key, &mut self.signals_pending);
                continue;
            }
            if let Some(Some(e)) = self.slots.get(ev.key) {
                self.pending.push(Pending {
                    index: ev.key as u32,
                    gen: e.gen,
                    readable: ev.readable,
                    writable: ev.writable,
                    hangup: ev.hangup,
                    error: ev.error,
                });
            }
        }

        if self.wake_flag.swap(false, Ordering::AcqRel) {
            if let Some(mut cb) = self.on_wake.take() {
                cb(self, data);
                ran += 1;
                if self.on_wake.is_none() {
                    self.on_wake = Some(cb);
                }
            }
        }

        for i in 0..self.pending.len() {
            let p = self.pending[i];
            ran += usize::from(self.dispatch_fd(p, data));
        }

        let mut sigs = std::mem::take(&mut self.signals_pending);
        for &signo in &sigs {
            ran += usize::from(self.dispatch_signal(signo, data));
        }
        sigs.clear();
        self.signals_pending = sigs;

        let now = Instant::now();
        let limit = self.timers.due_limit(now);
        while let Some(fired) = self.timers.pop_due(limit) {
            self.dispatch_timer(fired, now, data);
            ran += 1;
        }
        Ok(ran)
    }

    fn dispatch_fd(&mut self, p: Pending, data: &mut D) -> bool {
        let (mut cb, ev) = match self.slots.get_mut(p.index as usize) {
            Some(Some(e)) if e.gen == p.gen && e.enabled => {
                let readable = p.readable && e.interest.contains(Interest::READ);
                let writable = p.writable && e.interest.contains(Interest::WRITE);
                if !(readable || writable || p.hangup || p.error) {
                    return false;
                }
                let Some(cb) = e.cb.take() else {
                    return false;
                };
                let ev = Event {
                    handle: Handle {
                        index: p.index,
                        gen: p.gen,
                    },
                    fd: e.source.raw(),
                    readable,
                    writable,
                    hangup: p.hangup,
                    error: p.error,
                };
                (cb, ev)
            }
            _ => return false,
        };
        cb(self, data, ev);
        if let Some(Some(e)) = self.slots.get_mut(p.index as usize) {
            if e.gen == p.gen && e.cb.is_none() {
                e.cb = Some(cb);
            }
        }
        self.apply_removals();
        true
    }

    fn dispatch_signal(&mut self, signo: i32, data: &mut D) -> bool {
        let Some(e) = self.signal_cbs.get_mut(&signo) else {
            return false;
        };
        let gen = e.gen;
        let Some(mut cb) = e.cb.take() else {
            return false;
        };
        cb(self, data, signo);
        if let Some(e) = self.signal_cbs.get_mut(&signo) {
            if e.gen == gen && e.cb.is_none() {
                e.cb = Some(cb);
            }
        }
        self.apply_removals();
        true
    }

    fn dispatch_timer(&mut self, fired: timer::Fired<TimerCb<D>>, now: Instant, data: &mut D) {
        let timer::Fired {
            handle: h,
            mut cb,
            periodic,
        } = fired;
        if let Some((due, period)) = periodic {
            self.timers.arm(h, timer::next_period(due, period, now));
        }
        cb(self, data, h);
        self.timers.finish(h, cb);
        self.apply_removals();
    }
}
