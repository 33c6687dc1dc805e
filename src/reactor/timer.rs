//! User-space timers: a binary heap of deadlines whose earliest entry bounds
//! the wait. Cancelling or re-arming leaves the old heap entry behind; it is
//! recognised as stale by its sequence number and skipped (and the heap is
//! compacted when stale entries outnumber live ones).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A timer's identity: slot index plus generation, so a handle to a
/// cancelled timer never reaches the slot's next occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    pub(crate) index: u32,
    pub(crate) gen: u32,
}

pub(crate) struct TimerEntry<C> {
    pub gen: u32,
    /// Sequence number of the live heap entry, if armed.
    pub armed: Option<u64>,
    pub deadline: Instant,
    pub period: Option<Duration>,
    /// One-shot timers made by `add_timer` vanish after they fire unless the
    /// callback re-arms them; persistent ones stay until cancelled.
    pub persistent: bool,
    /// Taken out while the callback runs.
    pub cb: Option<C>,
}

/// The timer table and its deadline heap.
pub(crate) struct Timers<C> {
    slots: Vec<Option<TimerEntry<C>>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    next_seq: u64,
    armed: usize,
}

impl<C> Timers<C> {
    pub fn new() -> Self {
        Timers {
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            next_seq: 0,
            armed: 0,
        }
    }

    /// Inserts an unarmed timer.
    pub fn insert(&mut self, period: Option<Duration>, persistent: bool, cb: C) -> TimerHandle {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let gen = self.gens[index as usize];
        self.slots[index as usize] = Some(TimerEntry {
            gen,
            armed: None,
            deadline: Instant::now(),
            period,
            persistent,
            cb: Some(cb),
        });
        TimerHandle { index, gen }
    }

    pub fn get_mut(&mut self, h: TimerHandle) -> Option<&mut TimerEntry<C>> {
        match self.slots.get_mut(h.index as usize) {
            Some(Some(e)) if e.gen == h.gen => Some(e),
            _ => None,
        }
    }

    /// Arms (or re-arms) the timer for `deadline`. Returns false for an
    /// unknown handle.
    pub fn arm(&mut self, h: TimerHandle, deadline: Instant) -> bool {
        let seq = self.next_seq;
        let Some(e) = self.get_mut(h) else {
            return false;
        };
        let was_armed = e.armed.replace(seq).is_some();
        e.deadline = deadline;
        self.next_seq += 1;
        if !was_armed {
            self.armed += 1;
        }
        self.heap.push(Reverse((deadline, seq, h.index)));
        self.maybe_compact();
        true
    }

    /// Disarms the timer, keeping it. Returns false for an unknown handle.
    pub fn disarm(&mut self, h: TimerHandle) -> bool {
        let Some(e) = self.get_mut(h) else {
            return false;
        };
        if e.armed.take().is_some() {
            self.armed -= 1;
        }
        true
    }

    /// Removes the timer. Returns false for an unknown handle.
    pub fn remove(&mut self, h: TimerHandle) -> bool {
        if self.get_mut(h).is_none() {
            return false;
        }
        let e = self.slots[h.index as usize].take().expect("checked above");
        if e.armed.is_some() {
            self.armed -= 1;
        }
        self.gens[h.index as usize] = h.gen.wrapping_add(1);
        self.free.push(h.index);
        true
    }

    /// The sequence number the next arm will get; timers armed from now on
    /// are "new" for the dispatch round that asked.
    pub fn seq_mark(&self) -> u64 {
        self.next_seq
    }

    /// The earliest live deadline, discarding stale heap entries on the way.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, seq, index))) = self.heap.peek() {
            if self.is_live(seq, index) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Pops the next timer due at `now` that was armed before `limit`,
    /// disarming it. Returns its handle and the deadline it was due at.
    pub fn pop_due(&mut self, now: Instant, limit: u64) -> Option<(TimerHandle, Instant)> {
        while let Some(&Reverse((deadline, seq, index))) = self.heap.peek() {
            if !self.is_live(seq, index) {
                self.heap.pop();
                continue;
            }
            if deadline > now || seq >= limit {
                return None;
            }
            self.heap.pop();
            let e = self.slots[index as usize].as_mut().expect("live entry");
            e.armed = None;
            self.armed -= 1;
            return Some((TimerHandle { index, gen: e.gen }, deadline));
        }
        None
    }

    /// Number of timers in the table, armed or not.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn is_live(&self, seq: u64, index: u32) -> bool {
        matches!(self.slots.get(index as usize), Some(Some(e)) if e.armed == Some(seq))
    }

    fn maybe_compact(&mut self) {
        if self.heap.len() > 64 && self.heap.len() > 4 * self.armed {
            let slots = &self.slots;
            self.heap.retain(|Reverse((_, seq, index))| {
                matches!(slots.get(*index as usize), Some(Some(e)) if e.armed == Some(*seq))
            });
        }
    }
}

/// The next deadline of a periodic timer that was due at `due`: one period
/// later, skipping whole periods already missed, so the schedule never drifts
/// from its phase however late the loop runs.
pub(crate) fn next_period(due: Instant, period: Duration, now: Instant) -> Instant {
    let next = due + period;
    if next > now {
        return next;
    }
    let behind = now.duration_since(due).as_nanos();
    let periods = behind / period.as_nanos() + 1;
    let skip = u32::try_from(periods).unwrap_or(u32::MAX);
    due + period.saturating_mul(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_skips_stale() {
        let mut t: Timers<u32> = Timers::new();
        let base = Instant::now();
        let a = t.insert(None, false, 1);
        let b = t.insert(None, false, 2);
        let c = t.insert(None, false, 3);
        t.arm(a, base + Duration::from_millis(30));
        t.arm(b, base + Duration::from_millis(10));
        t.arm(c, base + Duration::from_millis(20));
        t.arm(a, base + Duration::from_millis(5)); // re-arm: old entry stale
        t.disarm(c);
        let limit = t.seq_mark();
        let now = base + Duration::from_millis(100);
        assert_eq!(t.pop_due(now, limit).map(|x| x.0), Some(a));
        assert_eq!(t.pop_due(now, limit).map(|x| x.0), Some(b));
        assert_eq!(t.pop_due(now, limit), None);
        assert!(t.remove(c));
        assert!(!t.remove(c));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn period_keeps_phase() {
        let base = Instant::now();
        let p = Duration::from_millis(10);
        assert_eq!(
            next_period(base, p, base + Duration::from_millis(3)),
            base + p
        );
        // 35 ms late: the 10, 20 and 30 ms ticks are missed, next is 40.
        assert_eq!(
            next_period(base, p, base + Duration::from_millis(35)),
            base + Duration::from_millis(40)
        );
        // Exactly on a tick counts as missed: the next one is strictly later.
        assert_eq!(
            next_period(base, p, base + Duration::from_millis(10)),
            base + Duration::from_millis(20)
        );
    }
}
