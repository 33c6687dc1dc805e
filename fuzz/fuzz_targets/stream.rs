//! Arbitrary bytes, arbitrarily chunked, into the `-netdev stream` decoder:
//! it never panics, every frame is 1 to max bytes, and re-encoding the
//! frames gives back exactly the bytes consumed. The backlog, fed the same
//! frames and drained in arbitrary amounts, writes the same bytes.
#![no_main]

use caploop::wire::stream::{self, Backlog, Decoder, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // The first bytes choose the limit and the read sizes.
    let max = 1 + usize::from(u16::from_le_bytes([data[0], data[1]]));
    let step = 1 + usize::from(data[2]);
    let wire = &data[3..];

    let mut d = Decoder::new(max);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut failed = false;
    let mut pos = 0;
    let mut turn = 0usize;
    while pos < wire.len() && !failed {
        let n = (step + turn % 7).min(wire.len() - pos);
        turn += 1;
        if turn & 1 == 0 {
            d.feed(&wire[pos..pos + n]);
            pos += n;
        } else {
            let room = d.read_buf();
            assert!(!room.is_empty());
            let n = n.min(room.len());
            room[..n].copy_from_slice(&wire[pos..pos + n]);
            d.filled(n);
            pos += n;
        }
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= max);
                    frames.push(f.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(d.next_frame(), Err(e), "errors are final");
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            // Whatever is left is less than one frame and its header.
            assert!(d.buffered() < HEADER_LEN + max);
        }
    }

    // Re-encoding the frames gives back what the decoder consumed.
    let mut encoded = Vec::new();
    for f in &frames {
        assert!(stream::encode_into(f, &mut encoded));
    }
    assert_eq!(encoded.len() as u64, d.offset());
    assert_eq!(&encoded[..], &wire[..encoded.len()]);

    // The backlog with partial writes of arbitrary sizes.
    let mut b = Backlog::unbounded();
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let take = (step * (i + 1)) % (HEADER_LEN + f.len() + 1);
        if b.is_empty() {
            let h = stream::header(f.len()).unwrap();
            let mut direct = h.to_vec();
            direct.extend_from_slice(f);
            out.extend_from_slice(&direct[..take]);
            b.push_rest(&h, f, take).unwrap();
        } else {
            b.push(f).unwrap();
            let n = take.min(b.len());
            out.extend_from_slice(&b.pending()[..n]);
            b.consume(n);
        }
    }
    out.extend_from_slice(b.pending());
    b.consume(b.len());
    assert!(b.is_empty());
    assert_eq!(out, encoded);
});
