//! User-space timers: a binary heap of deadlines whose earliest entry bounds
//! the wait. Cancelling or re-arming leaves the old heap entry behind; it is
//! recognised as stale by its sequence number and skipped (and the heap is
//! compacted when stale entries outnumber live ones).
//!
//! Laid out for many timers, since with 100,000 of them the cost is cache
//! misses, not instructions:
//! - A heap entry is 24 bytes: the deadline as nanoseconds from an epoch
//!   (a `u64` key, not a 16-byte `Instant`), the sequence number and the
//!   slot index.
//! - What arming and firing touch of a timer is one 40-byte [`Slot`]:
//!   callback, live sequence number, key, generation, flags. The period and
//!   a deadline outside the key range live in [`Cold`], written only for
//!   periodic timers and such deadlines.
//! - A recycled slot is only written, never read (the free list keeps the
//!   generation the next occupant gets), and no clock is read here.
//!
//! The callback stays in its slot (taken out while it runs), so re-arming
//! never has to find a heap entry, and cancelling drops it at once.

use std::time::{Duration, Instant};

/// A timer's identity: slot index plus generation, so a handle to a
/// cancelled timer never reaches the slot's next occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    pub(crate) index: u32,
    pub(crate) gen: u32,
}

/// `Slot::armed` of a timer with no live heap entry.
const DISARMED: u64 = u64::MAX;
/// One-shot timers made by `add_timer` vanish after they fire unless the
/// callback re-arms them; persistent ones stay until cancelled.
const PERSISTENT: u8 = 1;
/// The timer re-arms itself by `Cold::period` when it fires.
const PERIODIC: u8 = 2;
/// The live deadline is outside the key range: `Cold::exact` has it.
const CLAMPED: u8 = 4;

/// How far before the `Timers` were made their epoch lies: 2^62 ns, about
/// 146 years, which leaves about 438 years after it for keys.
const EPOCH_BACK: Duration = Duration::from_nanos(1 << 62);

/// What arming and firing touch of a timer.
struct Slot<C> {
    /// `None` while the slot is free or the callback runs.
    cb: Option<C>,
    /// Sequence number of the live heap entry, or `DISARMED`.
    armed: u64,
    /// The live deadline's key; meaningful only while armed.
    key: u64,
    gen: u32,
    flags: u8,
}

/// The rest of a timer, written only for periodic timers and for deadlines
/// outside the key range.
#[derive(Clone, Copy)]
struct Cold {
    /// The exact live deadline, when `CLAMPED`.
    exact: Instant,
    period: Duration,
}

/// A heap entry: a timer's deadline key, its sequence number (which
/// breaks ties in arming order and tells live entries from stale ones) and
/// its slot.
#[derive(Clone, Copy)]
struct Entry {
    key: u64,
    seq: u64,
    /// A `u32`, widened so the entry has no padding: a copy of it is then
    /// written and read back whole, and store-to-load forwarding works (a
    /// 4-byte write read back as 8 bytes must wait for every earlier store,
    /// including a cold slot's, to reach the cache).
    index: u64,
}

impl Entry {
    #[inline]
    fn before(&self, other: &Entry) -> bool {
        (self.key, self.seq) < (other.key, other.seq)
    }
}

/// A binary min-heap of entries. `std`'s `BinaryHeap` would do; this one
/// (the same algorithm: pop moves the hole to a leaf, then sifts the last
/// entry up) measured about a quarter faster at popping 100,000 entries,
/// which is most of the cost of firing them.
struct Heap {
    v: Vec<Entry>,
}

impl Heap {
    fn new() -> Self {
        Heap { v: Vec::new() }
    }

    fn len(&self) -> usize {
        self.v.len()
    }

    #[inline]
    fn peek(&self) -> Option<Entry> {
        self.v.first().copied()
    }

    #[inline]
    fn push(&mut self, e: Entry) {
        let mut hole = self.v.len();
        self.v.push(e);
        while hole > 0 {
            let parent = (hole - 1) / 2;
            let p = self.v[parent];
            if !e.before(&p) {
                break;
            }
            self.v[hole] = p;
            hole = parent;
        }
        self.v[hole] = e;
    }

    /// Removes the earliest entry (the one `peek` returned).
    fn pop(&mut self) {
        let Some(last) = self.v.pop() else { return };
        let n = self.v.len();
        if n == 0 {
            return;
        }
        // Move the hole from the root down to a leaf along the earlier
        // children, then sift `last` up from there: it is usually late, so
        // this needs about half the comparisons of sifting it down.
        let mut hole = 0;
        let mut child = 1;
        while child + 1 < n {
            if self.v[child + 1].before(&self.v[child]) {
                child += 1;
            }
            self.v[hole] = self.v[child];
            hole = child;
            child = 2 * hole + 1;
        }
        if child < n {
            self.v[hole] = self.v[child];
            hole = child;
        }
        while hole > 0 {
            let parent = (hole - 1) / 2;
            let p = self.v[parent];
            if !last.before(&p) {
                break;
            }
            self.v[hole] = p;
            hole = parent;
        }
        self.v[hole] = last;
    }

    /// Keeps only the entries `f` accepts.
    fn retain(&mut self, f: impl FnMut(&Entry) -> bool) {
        self.v.retain(f);
        // A sorted array is a heap.
        self.v.sort_unstable_by_key(|e| (e.key, e.seq));
    }
}

/// What [`Timers::pop_due`] may pop: due by `key`, armed before `seq`.
#[derive(Clone, Copy)]
pub(crate) struct DueLimit {
    key: u64,
    seq: u64,
}

/// A timer popped for dispatch, its callback taken out of the table. Hand the
/// callback back with [`Timers::finish`] after it ran.
pub(crate) struct Fired<C> {
    pub handle: TimerHandle,
    pub cb: C,
    /// For a periodic timer: the deadline it was due at, and its period.
    pub periodic: Option<(Instant, Duration)>,
}

/// The timer table and its deadline heap.
pub(crate) struct Timers<C> {
    slots: Vec<Slot<C>>,
    cold: Vec<Cold>,
    /// Free slots with the generation their next occupant gets.
    free: Vec<(u32, u32)>,
    heap: Heap,
    next_seq: u64,
    armed: usize,
    /// Keys are nanoseconds since this instant.
    epoch: Instant,
}

impl<C> Timers<C> {
    pub fn new() -> Self {
        let now = Instant::now();
        Timers {
            slots: Vec::new(),
            cold: Vec::new(),
            free: Vec::new(),
            heap: Heap::new(),
            next_seq: 0,
            armed: 0,
            epoch: now.checked_sub(EPOCH_BACK).unwrap_or(now),
        }
    }

    /// The key of `deadline`: nanoseconds since the epoch, or `None` when
    /// that does not fit (then the deadline is clamped to the range, and
    /// among clamped deadlines arming order decides).
    fn key(&self, deadline: Instant) -> Option<u64> {
        let d = deadline.checked_duration_since(self.epoch)?;
        // Nanoseconds below 2^64 need fewer than 2^64 / 10^9 seconds.
        if d.as_secs() >= u64::MAX / 1_000_000_000 {
            return None;
        }
        Some(d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos()))
    }

    fn clamp(&self, deadline: Instant) -> u64 {
        if deadline < self.epoch {
            0
        } else {
            u64::MAX
        }
    }

    fn instant(&self, key: u64) -> Instant {
        self.epoch + Duration::from_nanos(key)
    }

    /// Inserts an unarmed timer.
    pub fn insert(&mut self, period: Option<Duration>, persistent: bool, cb: C) -> TimerHandle {
        self.insert_at(period, persistent, cb, None)
    }

    /// Inserts a timer armed for `deadline` (one step, so the new slot is
    /// only written, never read).
    pub fn insert_armed(
        &mut self,
        period: Option<Duration>,
        persistent: bool,
        cb: C,
        deadline: Instant,
    ) -> TimerHandle {
        self.insert_at(period, persistent, cb, Some(deadline))
    }

    fn insert_at(
        &mut self,
        period: Option<Duration>,
        persistent: bool,
        cb: C,
        deadline: Option<Instant>,
    ) -> TimerHandle {
        let mut flags = 0;
        if persistent {
            flags |= PERSISTENT;
        }
        if period.is_some() {
            flags |= PERIODIC;
        }
        let (armed, key) = match deadline {
            Some(d) => match self.key(d) {
                Some(key) => (self.next_seq, key),
                None => {
                    flags |= CLAMPED;
                    (self.next_seq, self.clamp(d))
                }
            },
            None => (DISARMED, 0),
        };
        let slot = Slot {
            cb: Some(cb),
            armed,
            key,
            gen: 0,
            flags,
        };
        let (index, gen) = match self.free.pop() {
            Some((index, gen)) => {
                // A free slot's callback is `None` (see `remove`): forgetting
                // the old value instead of dropping it saves reading the
                // slot, which is usually out of cache.
                let old = std::mem::replace(&mut self.slots[index as usize], Slot { gen, ..slot });
                debug_assert!(old.cb.is_none());
                std::mem::forget(old);
                (index, gen)
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 timers");
                self.slots.push(slot);
                self.cold.push(Cold {
                    exact: self.epoch,
                    period: Duration::ZERO,
                });
                (index, 0)
            }
        };
        if flags & (PERIODIC | CLAMPED) != 0 {
            self.cold[index as usize] = Cold {
                exact: deadline.unwrap_or(self.epoch),
                period: period.unwrap_or(Duration::ZERO),
            };
        }
        if deadline.is_some() {
            self.push(key, index);
        }
        // Not read back from the slot: that load would wait for the store.
        TimerHandle { index, gen }
    }

    fn slot_mut(slots: &mut [Slot<C>], h: TimerHandle) -> Option<&mut Slot<C>> {
        match slots.get_mut(h.index as usize) {
            Some(s) if s.gen == h.gen => Some(s),
            _ => None,
        }
    }

    /// The timer's deadline if armed; `None` for an unknown handle.
    pub fn deadline(&self, h: TimerHandle) -> Option<Option<Instant>> {
        let s = self.slots.get(h.index as usize)?;
        if s.gen != h.gen {
            return None;
        }
        if s.armed == DISARMED {
            return Some(None);
        }
        Some(Some(self.exact(h.index, s)))
    }

    fn exact(&self, index: u32, s: &Slot<C>) -> Instant {
        if s.flags & CLAMPED != 0 {
            self.cold[index as usize].exact
        } else {
            self.instant(s.key)
        }
    }

    /// Arms (or re-arms) the timer for `deadline`. Returns false for an
    /// unknown handle.
    pub fn arm(&mut self, h: TimerHandle, deadline: Instant) -> bool {
        let seq = self.next_seq;
        let key = self.key(deadline);
        let clamped = self.clamp(deadline);
        let Some(s) = Self::slot_mut(&mut self.slots, h) else {
            return false;
        };
        if std::mem::replace(&mut s.armed, seq) != DISARMED {
            // The old heap entry is now stale.
            self.armed -= 1;
        }
        let key = match key {
            Some(key) => {
                s.flags &= !CLAMPED;
                key
            }
            None => {
                s.flags |= CLAMPED;
                self.cold[h.index as usize].exact = deadline;
                clamped
            }
        };
        s.key = key;
        self.push(key, h.index);
        self.maybe_compact();
        true
    }

    /// Pushes the live entry of a timer whose slot already records
    /// `self.next_seq` as armed.
    fn push(&mut self, key: u64, index: u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.armed += 1;
        self.heap.push(Entry {
            key,
            seq,
            index: u64::from(index),
        });
    }

    /// Disarms the timer, keeping it. Returns false for an unknown handle.
    pub fn disarm(&mut self, h: TimerHandle) -> bool {
        let Some(s) = Self::slot_mut(&mut self.slots, h) else {
            return false;
        };
        if std::mem::replace(&mut s.armed, DISARMED) != DISARMED {
            self.armed -= 1;
        }
        true
    }

    /// Removes the timer, dropping its callback now (or, if the callback is
    /// running, when it returns). Returns false for an unknown handle.
    pub fn remove(&mut self, h: TimerHandle) -> bool {
        let Some(s) = Self::slot_mut(&mut self.slots, h) else {
            return false;
        };
        let cb = s.cb.take();
        if std::mem::replace(&mut s.armed, DISARMED) != DISARMED {
            self.armed -= 1;
        }
        let gen = h.gen.wrapping_add(1);
        s.gen = gen;
        self.free.push((h.index, gen));
        drop(cb);
        true
    }

    /// The limit for one dispatch round at `now`: timers due by then and
    /// armed before this call (those armed from now on are "new").
    pub fn due_limit(&self, now: Instant) -> DueLimit {
        DueLimit {
            key: self.key(now).unwrap_or_else(|| self.clamp(now)),
            seq: self.next_seq,
        }
    }

    /// The earliest live deadline, discarding stale heap entries on the way.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(e) = self.heap.peek() {
            let s = &self.slots[e.index as usize];
            if s.armed == e.seq {
                return Some(self.exact(e.index as u32, s));
            }
            self.heap.pop();
        }
        None
    }

    /// Pops the next timer due within `limit`, disarming it and taking its
    /// callback out.
    pub fn pop_due(&mut self, limit: DueLimit) -> Option<Fired<C>> {
        while let Some(e) = self.heap.peek() {
            let s = &mut self.slots[e.index as usize];
            if s.armed != e.seq {
                self.heap.pop();
                continue;
            }
            if e.key > limit.key || e.seq >= limit.seq {
                return None;
            }
            self.heap.pop();
            s.armed = DISARMED;
            self.armed -= 1;
            let Some(cb) = s.cb.take() else {
                // Its callback is running (cannot happen: rounds do not
                // nest); count it as fired.
                continue;
            };
            let handle = TimerHandle {
                index: e.index as u32,
                gen: s.gen,
            };
            let periodic = if s.flags & PERIODIC != 0 {
                let s = &self.slots[e.index as usize];
                Some((
                    self.exact(e.index as u32, s),
                    self.cold[e.index as usize].period,
                ))
            } else {
                None
            };
            return Some(Fired {
                handle,
                cb,
                periodic,
            });
        }
        None
    }

    /// Takes back the callback of a fired timer after it ran. A one-shot
    /// timer that did not re-arm itself is removed; the callback of a timer
    /// cancelled meanwhile is dropped.
    pub fn finish(&mut self, h: TimerHandle, cb: C) {
        let Some(s) = Self::slot_mut(&mut self.slots, h) else {
            return;
        };
        if s.flags & PERSISTENT == 0 && s.armed == DISARMED {
            // Gone: like `remove`, with the callback already out.
            let gen = h.gen.wrapping_add(1);
            s.gen = gen;
            self.free.push((h.index, gen));
            return;
        }
        if s.cb.is_none() {
            s.cb = Some(cb);
        }
    }

    /// Number of timers in the table, armed or not.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn maybe_compact(&mut self) {
        if self.heap.len() > 64 && self.heap.len() > 4 * self.armed {
            let slots = &self.slots;
            self.heap.retain(|e| slots[e.index as usize].armed == e.seq);
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
        let limit = t.due_limit(base + Duration::from_millis(100));
        assert_eq!(t.pop_due(limit).map(|f| f.handle), Some(a));
        assert_eq!(t.pop_due(limit).map(|f| f.handle), Some(b));
        assert!(t.pop_due(limit).is_none());
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
    #[test]
    fn heap_pops_in_key_then_sequence_order() {
        let mut h = Heap::new();
        let mut reference = std::collections::BTreeSet::new();
        let mut x: u64 = 12345;
        for seq in 0..5000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 500; // many ties
            h.push(Entry {
                key,
                seq,
                index: seq,
            });
            reference.insert((key, seq));
            if x.is_multiple_of(3) {
                let top = h.peek().expect("non-empty");
                assert_eq!(Some((top.key, top.seq)), reference.pop_first());
                h.pop();
            }
        }
        while let Some(top) = h.peek() {
            assert_eq!(Some((top.key, top.seq)), reference.pop_first());
            h.pop();
        }
        assert!(reference.is_empty());
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn deadlines_outside_the_key_range_stay_exact() {
        let mut t: Timers<u32> = Timers::new();
        let now = Instant::now();
        let years = |n: u64| Duration::from_secs(n * 365 * 86_400);
        let Some(past) = now.checked_sub(years(200)) else {
            return; // the platform's Instant cannot go that far back
        };
        let future = now + years(500);
        let a = t.insert(None, true, 1);
        let b = t.insert(None, true, 2);
        let c = t.insert_armed(None, true, 3, now);
        assert!(t.arm(a, future));
        assert!(t.arm(b, past));
        assert_eq!(t.deadline(a), Some(Some(future)));
        assert_eq!(t.deadline(b), Some(Some(past)));
        assert_eq!(t.deadline(c), Some(Some(now)));
        assert_eq!(t.next_deadline(), Some(past));
        let limit = t.due_limit(now + Duration::from_secs(1));
        assert_eq!(t.pop_due(limit).map(|f| f.handle), Some(b));
        assert_eq!(t.pop_due(limit).map(|f| f.handle), Some(c));
        assert!(t.pop_due(limit).is_none());
        assert_eq!(t.next_deadline(), Some(future));
        // Back inside the range.
        assert!(t.arm(a, now));
        assert_eq!(t.deadline(a), Some(Some(now)));
    }

    #[test]
    fn removing_drops_the_callback_at_once_and_recycles_the_slot() {
        let token = std::rc::Rc::new(());
        let mut t: Timers<std::rc::Rc<()>> = Timers::new();
        let h = t.insert_armed(None, false, token.clone(), Instant::now());
        assert_eq!(std::rc::Rc::strong_count(&token), 2);
        assert!(t.remove(h));
        assert_eq!(std::rc::Rc::strong_count(&token), 1, "dropped by remove");
        let h2 = t.insert(None, true, token.clone());
        assert_eq!(h2.index, h.index);
        assert_ne!(h2.gen, h.gen);
        assert!(!t.arm(h, Instant::now()), "stale handle");
        assert_eq!(t.deadline(h2), Some(None));
        assert!(t.next_deadline().is_none(), "the old entry is stale");
    }
}
