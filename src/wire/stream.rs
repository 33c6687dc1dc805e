//! QEMU's `-netdev stream` framing (also passt's): every Ethernet frame is
//! preceded by its length as a 4-byte big-endian integer.
//!
//! [`Decoder`] takes bytes as they arrive (a frame split across reads,
//! several frames in one read) and yields whole frames; a length of zero or
//! above the limit is an error, since the stream cannot be resynchronised
//! after it. [`Backlog`] holds what the socket could not take yet, so a
//! partial write never loses or reorders a frame; past its byte cap it
//! refuses new frames with an error (back-pressure the caller sees) instead
//! of dropping them silently.

use std::fmt;

use crate::frame::queue::{FrameQueue, Limits, WhenFull};

/// Bytes before each frame.
pub const HEADER_LEN: usize = 4;

/// The longest frame accepted by default: QEMU's own limit
/// (`NET_BUFSIZE`, 4096 + 65536).
pub const DEFAULT_MAX_FRAME: usize = 4096 + 65536;

/// The most the decoder offers to read at once.
const READ_CHUNK: usize = 64 * 1024;

/// A stream that cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A frame header announced zero bytes.
    #[error("stream frame header at byte {offset} announces length 0 (an empty frame)")]
    Empty {
        /// Stream offset of the header.
        offset: u64,
    },
    /// A frame header announced more than the limit.
    #[error("stream frame header at byte {offset} announces {len} bytes, more than the {max}-byte limit")]
    TooLong {
        /// Stream offset of the header.
        offset: u64,
        /// The announced length.
        len: u32,
        /// The limit.
        max: usize,
    },
}

/// Incremental decoder of length-prefixed frames.
///
/// The buffer grows on demand, to at most one frame and its header plus
/// one read's worth when whole frames are drained after every read, so a
/// large limit costs nothing until a large frame arrives.
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    /// Bytes [`read_buf`](Decoder::read_buf) offers at least.
    chunk: usize,
    /// Stream offset of `buf[start]`, for error messages.
    offset: u64,
    failed: Option<StreamError>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &(self.end - self.start))
            .field("max", &self.max)
            .field("offset", &self.offset)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Decoder {
    /// A decoder accepting frames of 1 to `max_frame` bytes (clamped to
    /// `1..=u32::MAX`).
    pub fn new(max_frame: usize) -> Decoder {
        let max = max_frame.clamp(1, u32::MAX as usize);
        Decoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max,
            chunk: (HEADER_LEN + max).min(READ_CHUNK),
            offset: 0,
            failed: None,
        }
    }

    /// Makes room for at least `want` more bytes after `end`, moving the
    /// buffered bytes to the front first.
    fn reserve(&mut self, want: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
    }

    /// Free space to read into: read from the socket into it, then call
    /// [`filled`](Decoder::filled) with the count. Never empty. Drain whole
    /// frames with [`next_frame`](Decoder::next_frame) before reading again,
    /// or the buffer grows. After an error, what is read is discarded.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.failed.is_some() {
            self.start = 0;
            self.end = 0;
        }
        self.reserve(self.chunk);
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`read_buf`](Decoder::read_buf).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies `bytes` in (for callers that already hold the bytes). After
    /// an error they are discarded.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || bytes.is_empty() {
            return;
        }
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// The length in the buffered header, checked; `None` if fewer than
    /// [`HEADER_LEN`] bytes are buffered.
    fn head(&mut self) -> Result<Option<usize>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.end - self.start < HEADER_LEN {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + HEADER_LEN];
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let err = if len == 0 {
            StreamError::Empty {
                offset: self.offset,
            }
        } else if len as usize > self.max {
            StreamError::TooLong {
                offset: self.offset,
                len,
                max: self.max,
            }
        } else {
            return Ok(Some(len as usize));
        };
        self.failed = Some(err.clone());
        Err(err)
    }

    /// The next whole frame, if one is buffered. An error is final: every
    /// later call returns it again.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, StreamError> {
        let Some(len) = self.head()? else {
            return Ok(None);
        };
        if self.end - self.start < HEADER_LEN + len {
            return Ok(None);
        }
        let from = self.start + HEADER_LEN;
        self.start = from + len;
        self.offset += (HEADER_LEN + len) as u64;
        Ok(Some(&self.buf[from..from + len]))
    }

    /// Bytes buffered that do not yet make a whole frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The frame length limit.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Stream offset of the next frame's header.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The error that stopped decoding, if any.
    pub fn error(&self) -> Option<&StreamError> {
        self.failed.as_ref()
    }
}

/// The header for a frame of `len` bytes, or `None` if `len` cannot be
/// framed (zero, or more than `u32::MAX`).
pub fn header(len: usize) -> Option<[u8; HEADER_LEN]> {
    match u32::try_from(len) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n.to_be_bytes()),
    }
}

/// Appends `frame` with its header to `out`; `false` (and nothing
/// appended) if the frame cannot be framed (empty, or longer than
/// `u32::MAX`).
pub fn encode_into(frame: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(h) = header(frame.len()) else {
        return false;
    };
    out.reserve(HEADER_LEN + frame.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(frame);
    true
}

/// A frame the [`Backlog`] did not queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BacklogError {
    /// The backlog is at its byte cap: back-pressure, the frame was not
    /// queued.
    #[error(
        "backlog full: {queued} bytes queued, a {frame}-byte frame does not fit the {cap}-byte cap"
    )]
    Full {
        /// Bytes already queued.
        queued: usize,
        /// The frame that did not fit.
        frame: usize,
        /// The cap.
        cap: usize,
    },
    /// The frame cannot be framed (empty, or longer than `u32::MAX`).
    #[error("a {len}-byte frame cannot be framed (1 to 4294967295 bytes)")]
    Unframable {
        /// Its length.
        len: usize,
    },
}

/// Encoded bytes waiting for the socket, in order: the one out-queue
/// ([`FrameQueue`]) holding each frame behind its header.
///
/// Write [`pending`](Backlog::pending) to the socket, then
/// [`consume`](Backlog::consume) what it took; the rest stays at the front.
#[derive(Debug)]
pub struct Backlog {
    queue: FrameQueue,
}

impl Default for Backlog {
    fn default() -> Backlog {
        Backlog::unbounded()
    }
}

impl Backlog {
    /// An empty backlog that queues at most `cap` bytes of new frames.
    pub fn new(cap: usize) -> Backlog {
        Backlog {
            queue: FrameQueue::new(Limits {
                frames: usize::MAX,
                bytes: cap,
                when_full: WhenFull::RefuseNew,
            }),
        }
    }

    /// An empty backlog with no cap.
    pub fn unbounded() -> Backlog {
        Backlog::new(usize::MAX)
    }

    /// The byte cap.
    pub fn cap(&self) -> usize {
        self.queue.limits().bytes
    }

    /// Queues a whole frame with its header, or refuses it (nothing
    /// queued) if it cannot be framed or would take the backlog past its
    /// cap.
    pub fn push(&mut self, frame: &[u8]) -> Result<(), BacklogError> {
        let h = header(frame.len()).ok_or(BacklogError::Unframable { len: frame.len() })?;
        let queued = self.len();
        if self.queue.push(&[&h, frame]) {
            Ok(())
        } else {
            Err(BacklogError::Full {
                queued,
                frame: frame.len(),
                cap: self.cap(),
            })
        }
    }

    /// Queues what is left of `header` + `frame` after the first `written`
    /// bytes went out (a partial write of a frame sent directly). A frame
    /// already partly on the wire is always queued, whatever the cap, or
    /// the stream would be corrupt.
    pub fn push_rest(
        &mut self,
        header: &[u8; HEADER_LEN],
        frame: &[u8],
        written: usize,
    ) -> Result<(), BacklogError> {
        if written == 0 {
            return self.push(frame);
        }
        self.queue.push_rest(&[header, frame], written);
        Ok(())
    }

    /// The bytes to write next.
    pub fn pending(&self) -> &[u8] {
        self.queue.bytes()
    }

    /// Records that `n` bytes of [`pending`](Backlog::pending) were written.
    pub fn consume(&mut self, n: usize) {
        self.queue.consume(n);
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.queue.byte_len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(d: &mut Decoder) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f.to_vec());
        }
        Ok(out)
    }

    fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            assert!(encode_into(f, &mut out));
        }
        out
    }

    #[test]
    fn split_and_joined_frames() {
        let frames = vec![vec![1u8; 60], vec![2u8; 1514], vec![3u8; 1]];
        let wire = encode(&frames);
        assert_eq!(&wire[..4], &[0, 0, 0, 60]);
        assert_eq!(&wire[64..68], &[0, 0, 0x05, 0xea]);
        // One byte at a time.
        let mut d = Decoder::new(2048);
        let mut got = Vec::new();
        for b in &wire {
            d.feed(std::slice::from_ref(b));
            got.extend(frames_of(&mut d).unwrap());
        }
        assert_eq!(got, frames);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.offset(), wire.len() as u64);
        // All at once.
        let mut d = Decoder::new(2048);
        d.feed(&wire);
        assert_eq!(frames_of(&mut d).unwrap(), frames);
    }

    #[test]
    fn bad_lengths_are_errors_naming_the_length() {
        let mut d = Decoder::new(1514);
        d.feed(&[0, 0, 0, 60]);
        d.feed(&[7u8; 60]);
        d.feed(&[0, 0, 0x10, 0]);
        assert_eq!(d.next_frame().unwrap().map(<[u8]>::len), Some(60));
        let e = d.next_frame().unwrap_err();
        assert_eq!(
            e,
            StreamError::TooLong {
                offset: 64,
                len: 4096,
                max: 1514
            }
        );
        assert!(e.to_string().contains("4096"));
        // The stream stays failed, and later bytes are discarded.
        d.feed(&[0, 0, 0, 1, 9]);
        assert_eq!(d.next_frame().unwrap_err(), e);
        assert_eq!(d.error(), Some(&e));

        let mut d = Decoder::new(1514);
        d.feed(&[0, 0, 0, 0]);
        let e = d.next_frame().unwrap_err();
        assert_eq!(e, StreamError::Empty { offset: 0 });
        assert!(e.to_string().contains("length 0"));
        let mut d = Decoder::new(1514);
        d.feed(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.next_frame(),
            Err(StreamError::TooLong { len: u32::MAX, .. })
        ));
        // The largest accepted frame and one byte more.
        let mut d = Decoder::new(100);
        d.feed(&encode(&[vec![5; 100]]));
        assert_eq!(frames_of(&mut d).unwrap(), vec![vec![5; 100]]);
        d.feed(&[0, 0, 0, 101]);
        assert!(matches!(
            d.next_frame(),
            Err(StreamError::TooLong { len: 101, .. })
        ));
    }

    #[test]
    fn a_huge_limit_allocates_nothing_up_front() {
        let mut d = Decoder::new(usize::MAX);
        assert_eq!(d.max_frame(), u32::MAX as usize);
        assert!(d.read_buf().len() <= READ_CHUNK);
        // A header announcing 4 GiB - 1 buffers only what arrives.
        d.feed(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert!(d.read_buf().len() <= 2 * READ_CHUNK);
    }

    #[test]
    fn reading_through_read_buf() {
        let frames: Vec<Vec<u8>> = (1..=40u8).map(|i| vec![i; 100 + i as usize * 37]).collect();
        let wire = encode(&frames);
        let mut d = Decoder::new(2000);
        let mut got = Vec::new();
        let mut pos = 0;
        while pos < wire.len() {
            let room = d.read_buf();
            assert!(!room.is_empty());
            let n = room.len().min(wire.len() - pos).min(777);
            room[..n].copy_from_slice(&wire[pos..pos + n]);
            d.filled(n);
            pos += n;
            got.extend(frames_of(&mut d).unwrap());
        }
        assert_eq!(got, frames);
        // Draining after every read keeps the buffer within a frame, its
        // header and a read.
        assert!(d.buf.len() <= 2 * (2000 + HEADER_LEN));
    }

    #[test]
    fn backlog_keeps_order_across_partial_writes() {
        let mut b = Backlog::new(10_000);
        let f1 = vec![0xaau8; 100];
        let h1 = header(f1.len()).unwrap();
        // 2 header bytes went out directly; the rest is queued.
        b.push_rest(&h1, &f1, 2).unwrap();
        b.push(&[0xbb; 50]).unwrap();
        // 10 frame bytes went out directly.
        b.push_rest(&header(20).unwrap(), &[0xcc; 20], 14).unwrap();
        let mut wire = h1[..2].to_vec();
        let mut tail = Vec::new();
        while !b.is_empty() {
            let chunk = b.pending()[..b.len().min(33)].to_vec();
            tail.extend_from_slice(&chunk);
            b.consume(chunk.len());
        }
        // The third frame's first 14 bytes went out between the others in
        // real use; splice them where the socket would have put them.
        let split = tail.len() - 10;
        wire.extend_from_slice(&tail[..split]);
        wire.extend_from_slice(&header(20).unwrap());
        wire.extend_from_slice(&[0xcc; 10]);
        wire.extend_from_slice(&tail[split..]);
        let mut d = Decoder::new(2048);
        d.feed(&wire);
        assert_eq!(
            frames_of(&mut d).unwrap(),
            vec![f1, vec![0xbb; 50], vec![0xcc; 20]]
        );
    }

    #[test]
    fn backlog_cap_is_back_pressure_not_loss() {
        let mut b = Backlog::new(100);
        b.push(&[1; 90]).unwrap();
        let e = b.push(&[2; 60]).unwrap_err();
        assert_eq!(
            e,
            BacklogError::Full {
                queued: 94,
                frame: 60,
                cap: 100
            }
        );
        assert!(e.to_string().contains("60"));
        assert_eq!(b.len(), 94, "a refused frame leaves the backlog as it was");
        // A frame already partly written is queued past the cap.
        b.push_rest(&header(60).unwrap(), &[2; 60], 1).unwrap();
        assert_eq!(b.len(), 94 + 63);
        assert_eq!(b.push(&[]), Err(BacklogError::Unframable { len: 0 }));
        assert_eq!(header(0), None);
        // Writing everything makes room again.
        b.consume(usize::MAX);
        assert!(b.is_empty());
        b.push(&[3; 96]).unwrap();
        assert_eq!(Backlog::default().cap(), usize::MAX);
    }

    proptest! {
        #[test]
        fn any_frames_any_chunking_round_trip(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..3000), 0..20),
            chunks in proptest::collection::vec(1usize..5000, 1..50),
        ) {
            let wire = encode(&frames);
            let mut d = Decoder::new(3000);
            let mut got = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < wire.len() {
                let n = chunks[i % chunks.len()].min(wire.len() - pos);
                i += 1;
                if i % 2 == 0 {
                    d.feed(&wire[pos..pos + n]);
                    pos += n;
                } else {
                    let room = d.read_buf();
                    let n = n.min(room.len());
                    room[..n].copy_from_slice(&wire[pos..pos + n]);
                    d.filled(n);
                    pos += n;
                }
                got.extend(frames_of(&mut d).unwrap());
            }
            prop_assert_eq!(d.buffered(), 0);
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn backlog_with_any_partial_writes_round_trip(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..500), 0..20),
            takes in proptest::collection::vec(0usize..700, 1..30),
        ) {
            let mut b = Backlog::unbounded();
            let mut wire = Vec::new();
            let mut i = 0;
            let mut socket = |avail: usize| { i += 1; takes[i % takes.len()].min(avail) };
            for f in &frames {
                let h = header(f.len()).unwrap();
                if b.is_empty() {
                    // Write directly; queue the rest.
                    let mut direct = h.to_vec();
                    direct.extend_from_slice(f);
                    let n = socket(direct.len());
                    wire.extend_from_slice(&direct[..n]);
                    b.push_rest(&h, f, n).unwrap();
                } else {
                    b.push(f).unwrap();
                    let n = socket(b.len());
                    wire.extend_from_slice(&b.pending()[..n]);
                    b.consume(n);
                }
            }
            wire.extend_from_slice(b.pending());
            b.consume(b.len());
            prop_assert!(b.is_empty());
            prop_assert_eq!(wire, encode(&frames));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000), max in 1usize..5000) {
            let mut d = Decoder::new(max);
            for piece in bytes.chunks(1000) {
                d.feed(piece);
                while let Ok(Some(f)) = d.next_frame() {
                    prop_assert!(!f.is_empty() && f.len() <= max);
                }
            }
        }
    }
}
