//! The one out-queue every link uses: frames (or records: a header, then a
//! frame) waiting for a peer that cannot take them now, bounded in frames
//! and in bytes.
//!
//! Records sit end to end in one buffer, so a link that writes a byte
//! stream (QEMU's `-netdev stream`) writes all of them at once
//! ([`bytes`](FrameQueue::bytes), [`consume`](FrameQueue::consume)), and a
//! link that writes one record at a time (a datagram, a seqpacket record,
//! a tap frame, a virtio ring buffer) takes them in turn
//! ([`front`](FrameQueue::front), [`pop_front`](FrameQueue::pop_front)).
//! Nothing is allocated per frame once the buffer has grown to the peak.

use std::collections::VecDeque;

/// What a full queue does with one more record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Drops the oldest whole records to make room: the newest frames are
    /// the ones a peer that comes back still wants (TCP resends the rest).
    DropOldest,
    /// Refuses the new record: what is queued is already promised (a
    /// stream must never lose a record it has started), or the embedder
    /// wants to see the refusal.
    RefuseNew,
}

/// The queue's bounds: at most `frames` records and `bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Records at most (at least 1).
    pub frames: usize,
    /// Bytes at most (a longer record is never queued).
    pub bytes: usize,
    /// What happens to a record beyond either bound.
    pub when_full: WhenFull,
}

/// See the module docs.
#[derive(Debug)]
pub struct FrameQueue {
    /// Queued bytes from `head` on; what is before `head` was written.
    buf: Vec<u8>,
    head: usize,
    /// Where in the whole history each queued record ends, counting from
    /// the first byte ever queued (so compacting `buf` changes none).
    ends: VecDeque<u64>,
    /// The history offset of `buf[0]`.
    base: u64,
    /// Where the first record starts in the history.
    front_start: u64,
    /// The first record was queued by [`push_rest`](FrameQueue::push_rest):
    /// its first bytes are with the peer.
    front_partial: bool,
    limits: Limits,
    dropped: u64,
}

impl FrameQueue {
    /// An empty queue with `limits` (zero bounds are taken as 1).
    pub fn new(limits: Limits) -> FrameQueue {
        let mut q = FrameQueue {
            buf: Vec::new(),
            head: 0,
            ends: VecDeque::new(),
            base: 0,
            front_start: 0,
            front_partial: false,
            limits,
            dropped: 0,
        };
        q.set_limits(limits);
        q
    }

    /// Changes the bounds; records already queued stay.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Limits {
            frames: limits.frames.max(1),
            bytes: limits.bytes.max(1),
            ..limits
        };
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Queues one record made of `parts` (a header, then a frame) unless
    /// the bounds refuse it. Returns whether it was queued; every record
    /// refused or dropped to make room counts in
    /// [`dropped`](FrameQueue::dropped).
    pub fn push(&mut self, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !self.make_room(len) {
            self.dropped += 1;
            return false;
        }
        self.append(parts);
        true
    }

    /// Queues the rest of a record of which `written` bytes already went
    /// out (a partial write of a record sent directly, which a link does
    /// only while nothing is queued). Always queued, whatever the bounds:
    /// the peer holds its first bytes, and a stream without the rest would
    /// be corrupt.
    pub fn push_rest(&mut self, parts: &[&[u8]], mut written: usize) {
        let mut rest: Vec<&[u8]> = Vec::with_capacity(parts.len());
        for p in parts {
            if written >= p.len() {
                written -= p.len();
            } else {
                rest.push(&p[written..]);
                written = 0;
            }
        }
        if rest.iter().all(|p| p.is_empty()) {
            return;
        }
        self.front_partial |= self.is_empty();
        self.append(&rest);
    }

    fn append(&mut self, parts: &[&[u8]]) {
        // Drop what was written once it is most of the buffer: amortised
        // O(1) per byte.
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.base += self.head as u64;
            self.head = 0;
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.ends.push_back(self.base + self.buf.len() as u64);
    }

    /// Whether a `len`-byte record may be queued now, dropping the oldest
    /// whole records first if the queue drops them. A record partly
    /// written is never dropped.
    fn make_room(&mut self, len: usize) -> bool {
        if len > self.limits.bytes {
            return false;
        }
        loop {
            let fits_frames = self.ends.len() < self.limits.frames;
            let fits_bytes = self.byte_len().saturating_add(len) <= self.limits.bytes;
            if fits_frames && fits_bytes {
                return true;
            }
            if self.is_empty()
                || self.limits.when_full == WhenFull::RefuseNew
                || self.front_started()
            {
                return false;
            }
            self.pop_front();
            self.dropped += 1;
        }
    }

    /// Whether the first record's first bytes were written already.
    fn front_started(&self) -> bool {
        self.front_partial || self.base + self.head as u64 > self.front_start
    }

    /// The first record is gone, up to history offset `end`.
    fn retire_front(&mut self, end: u64) {
        self.front_start = end;
        self.front_partial = false;
        if self.ends.is_empty() {
            // Nothing left: start the buffer over.
            self.buf.clear();
            self.base = end;
            self.head = 0;
        } else {
            self.head = (end - self.base) as usize;
        }
    }

    /// The first record (what is left of it), if any.
    pub fn front(&self) -> Option<&[u8]> {
        let end = *self.ends.front()?;
        Some(&self.buf[self.head..(end - self.base) as usize])
    }

    /// Removes the first record (or what is left of it).
    pub fn pop_front(&mut self) {
        if let Some(end) = self.ends.pop_front() {
            self.retire_front(end);
        }
    }

    /// Every queued byte, in order, for a byte stream.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Records that the first `n` bytes of [`bytes`](FrameQueue::bytes)
    /// were written; records wholly written leave the queue.
    pub fn consume(&mut self, n: usize) {
        let at = self.base + (self.head + n.min(self.byte_len())) as u64;
        while let Some(&end) = self.ends.front().filter(|&&end| end <= at) {
            self.ends.pop_front();
            self.retire_front(end);
        }
        self.head = (at - self.base) as usize;
    }

    /// Records queued (one partly written counts).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes queued.
    pub fn byte_len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Records refused or dropped for room so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Forgets everything queued.
    pub fn clear(&mut self) {
        let at = self.base + self.buf.len() as u64;
        self.buf.clear();
        self.ends.clear();
        self.base = at;
        self.head = 0;
        self.front_start = at;
        self.front_partial = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(frames: usize, bytes: usize, when_full: WhenFull) -> FrameQueue {
        FrameQueue::new(Limits {
            frames,
            bytes,
            when_full,
        })
    }

    #[test]
    fn records_come_out_whole_and_in_order() {
        let mut q = q(8, 1 << 20, WhenFull::RefuseNew);
        assert!(q.push(&[b"hd", b"one"]));
        assert!(q.push(&[b"two"]));
        assert_eq!(q.front(), Some(&b"hdone"[..]));
        q.pop_front();
        assert_eq!(q.front(), Some(&b"two"[..]));
        q.pop_front();
        assert_eq!(q.front(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let mut q = q(2, 1 << 20, WhenFull::DropOldest);
        for f in [&b"a"[..], b"b", b"c"] {
            assert!(q.push(&[f]));
        }
        assert_eq!((q.len(), q.dropped()), (2, 1));
        assert_eq!(q.bytes(), b"bc");
    }

    #[test]
    fn refuse_new_keeps_what_is_queued_and_counts() {
        let mut q = q(100, 4, WhenFull::RefuseNew);
        assert!(q.push(&[b"abc"]));
        assert!(!q.push(&[b"de"]));
        assert_eq!((q.bytes(), q.dropped()), (&b"abc"[..], 1));
        // A record longer than the byte bound never fits.
        q.pop_front();
        assert!(!q.push(&[b"0123456789"]));
        let mut oldest = super::FrameQueue::new(Limits {
            frames: 100,
            bytes: 4,
            when_full: WhenFull::DropOldest,
        });
        assert!(oldest.push(&[b"abc"]));
        assert!(!oldest.push(&[b"0123456789"]));
        assert_eq!(oldest.dropped(), 1, "nothing dropped to make room in vain");
        assert_eq!(oldest.bytes(), b"abc");
    }

    #[test]
    fn a_record_partly_written_is_never_dropped() {
        let mut q = q(1, 1 << 20, WhenFull::DropOldest);
        q.push_rest(&[b"head", b"frame"], 3);
        assert_eq!(q.bytes(), b"dframe");
        assert!(!q.push(&[b"x"]), "the partial record stays");
        q.consume(2);
        assert!(!q.push(&[b"x"]));
        q.consume(4);
        assert!(q.is_empty());
        assert!(q.push(&[b"x"]));
    }

    #[test]
    fn consume_retires_records_it_passes() {
        let mut q = q(8, 1 << 20, WhenFull::RefuseNew);
        q.push(&[b"aaaa"]);
        q.push(&[b"bb"]);
        q.push(&[b"c"]);
        q.consume(5);
        assert_eq!((q.len(), q.bytes()), (2, &b"bc"[..]));
        assert_eq!(q.front(), Some(&b"b"[..]));
        q.consume(2);
        assert!(q.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<u8>),
        Pop,
        Consume(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Push),
            1 => Just(Op::Pop),
            1 => (0usize..60).prop_map(Op::Consume),
        ]
    }

    proptest! {
        /// Against a plain list of records: the same bytes, records and
        /// drops, whatever the order of pushes, pops and partial writes.
        #[test]
        fn behaves_like_a_list_of_records(
            ops in proptest::collection::vec(op(), 0..200),
            frames in 1usize..8,
            bytes in 1usize..120,
            oldest in any::<bool>(),
        ) {
            let when_full = if oldest { WhenFull::DropOldest } else { WhenFull::RefuseNew };
            let mut q = q(frames, bytes, when_full);
            // The model: records, and bytes of the first already written.
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut done = 0usize;
            let mut dropped = 0u64;
            for op in ops {
                match op {
                    Op::Push(f) => {
                        let total = |m: &VecDeque<Vec<u8>>, done: usize| {
                            m.iter().map(Vec::len).sum::<usize>() - done
                        };
                        loop {
                            let fits = model.len() < frames
                                && total(&model, done) + f.len() <= bytes;
                            if fits {
                                model.push_back(f.clone());
                                prop_assert!(q.push(&[&f]));
                                break;
                            }
                            if !oldest || done > 0 || f.len() > bytes {
                                dropped += 1;
                                prop_assert!(!q.push(&[&f]));
                                break;
                            }
                            model.pop_front();
                            dropped += 1;
                        }
                    }
                    Op::Pop => {
                        model.pop_front();
                        done = 0;
                        q.pop_front();
                    }
                    Op::Consume(n) => {
                        let mut n = n.min(model.iter().map(Vec::len).sum::<usize>() - done);
                        q.consume(n);
                        while n > 0 || model.front().is_some_and(|f| f.len() == done) {
                            let left = model[0].len() - done;
                            if n >= left {
                                n -= left;
                                model.pop_front();
                                done = 0;
                            } else {
                                done += n;
                                n = 0;
                            }
                        }
                    }
                }
                let flat: Vec<u8> = model.iter().flatten().copied().skip(done).collect();
                prop_assert_eq!(q.bytes(), &flat[..]);
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.dropped(), dropped);
                prop_assert_eq!(q.front(), model.front().map(|f| &f[done..]));
            }
        }
    }
}
