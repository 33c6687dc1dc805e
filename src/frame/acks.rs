//! Fewer pure ACKs toward the guest: within one round of a stack's output,
//! a pure TCP acknowledgement that a later one of the same flow supersedes
//! need not be sent.
//!
//! libslirp acknowledges every segment a guest sends, so a round that
//! feeds it 64 segments of one upload writes 64 ACKs back, each a frame
//! the link carries and the guest's stack processes. [`AckThinner`] holds a
//! flow's latest pure ACK until the round ends (or the flow sends anything
//! else) and drops the ones a larger acknowledgement number replaced: the
//! guest sees what a receiver with delayed ACKs or GRO would send.
//! Duplicate ACKs (the same number again) are never merged: they carry
//! fast retransmit. Frames of other flows, and anything not TCP, pass at
//! once; order within a flow is kept.

use super::ethernet::{Ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::ipv4::{Ipv4, PROTO_TCP};
use super::ipv6::Ipv6;
use super::tcp::{Tcp, ACK};

/// Flows whose ACK one thinner holds at once; more pass unthinned.
const MAX_HELD: usize = 64;

/// A TCP flow as a frame names it: the IP version, both addresses and
/// both ports, packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    bytes: [u8; 36],
    len: u8,
}

/// What a frame is, for thinning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not TCP over IPv4 or IPv6 (or not parseable): passes.
    Other,
    /// A TCP segment that is not a pure ACK.
    Tcp(FlowKey),
    /// A pure ACK: flag ACK alone, no payload, options only NOP and
    /// timestamps.
    PureAck(FlowKey, u32),
}

/// A held ACK: its flow, number and frame (the buffer is reused).
#[derive(Debug, Default, Clone)]
struct Held {
    key: Option<FlowKey>,
    ack: u32,
    frame: Vec<u8>,
}

/// Holds each flow's latest pure ACK of a round; see the module docs.
///
/// ```
/// # use caploop::frame::acks::AckThinner;
/// # fn round(frames: &[Vec<u8>], link: &mut Vec<Vec<u8>>) {
/// let mut thin = AckThinner::default();
/// for f in frames {
///     thin.push(f, &mut |out| link.push(out.to_vec()));
/// }
/// // At the end of the round, before the link is flushed:
/// thin.finish(&mut |out| link.push(out.to_vec()));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct AckThinner {
    held: Vec<Held>,
    live: usize,
    thinned: u64,
}

impl AckThinner {
    /// Takes one frame of the round: hands it (and any ACK it must follow)
    /// to `emit`, or holds it.
    pub fn push(&mut self, frame: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let kind = classify(frame);
        let key = match kind {
            Kind::Other => return emit(frame),
            Kind::Tcp(key) | Kind::PureAck(key, _) => key,
        };
        let at = self.held[..self.live]
            .iter()
            .position(|h| h.key == Some(key));
        match (kind, at) {
            (Kind::PureAck(_, ack), Some(i)) if after(ack, self.held[i].ack) => {
                let h = &mut self.held[i];
                h.ack = ack;
                h.frame.clear();
                h.frame.extend_from_slice(frame);
                self.thinned += 1;
            }
            (Kind::PureAck(_, ack), None) if self.live < MAX_HELD => {
                if self.live == self.held.len() {
                    self.held.push(Held::default());
                }
                let h = &mut self.held[self.live];
                h.key = Some(key);
                h.ack = ack;
                h.frame.clear();
                h.frame.extend_from_slice(frame);
                self.live += 1;
            }
            (_, Some(i)) => {
                // A duplicate ACK, or data: the held ACK goes first.
                self.release(i, emit);
                emit(frame);
            }
            (_, None) => emit(frame),
        }
    }

    /// Ends the round: hands every held ACK to `emit`.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        for h in &mut self.held[..self.live] {
            h.key = None;
            emit(&h.frame);
        }
        self.live = 0;
    }

    /// Pure ACKs dropped so far because a later one superseded them.
    pub fn thinned(&self) -> u64 {
        self.thinned
    }

    /// Whether an ACK is held (the round has not been finished).
    pub fn holding(&self) -> bool {
        self.live > 0
    }

    /// Emits held ACK `i` and forgets it (the last live one takes its
    /// place: order across flows does not matter).
    fn release(&mut self, i: usize, emit: &mut dyn FnMut(&[u8])) {
        emit(&self.held[i].frame);
        self.held[i].key = None;
        self.live -= 1;
        self.held.swap(i, self.live);
    }
}

/// Whether sequence number `a` comes after `b` (RFC 1982 arithmetic).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What `frame` (an Ethernet frame) is; anything short or odd is `Other`.
fn classify(frame: &[u8]) -> Kind {
    classify_opt(frame).unwrap_or(Kind::Other)
}

fn classify_opt(frame: &[u8]) -> Option<Kind> {
    let eth = Ethernet::new_checked(frame).ok()?;
    let ip = eth.payload();
    let mut key = FlowKey {
        bytes: [0; 36],
        len: 0,
    };
    let segment = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let v4 = Ipv4::new_checked(ip).ok()?;
            if v4.protocol() != PROTO_TCP || v4.is_fragment() {
                return Some(Kind::Other);
            }
            key.bytes[..8].copy_from_slice(v4.addrs());
            key.len = 8;
            v4.into_payload()
        }
        ETHERTYPE_IPV6 => {
            let v6 = Ipv6::new_checked(ip).ok()?;
            if v6.next_header() != PROTO_TCP {
                return Some(Kind::Other);
            }
            key.bytes[..32].copy_from_slice(v6.addrs());
            key.len = 32;
            v6.into_payload()
        }
        _ => return Some(Kind::Other),
    };
    let tcp = Tcp::new_checked(segment).ok()?;
    let n = usize::from(key.len);
    key.bytes[n..n + 4].copy_from_slice(tcp.ports());
    key.len += 4;
    // ACK alone (no SYN, FIN, RST, PSH, URG, ECE, CWR), nothing carried.
    let pure = tcp.flags() == ACK && tcp.payload().is_empty() && only_timestamps(tcp.options());
    Some(if pure {
        Kind::PureAck(key, tcp.ack())
    } else {
        Kind::Tcp(key)
    })
}

/// Whether TCP options hold nothing but NOPs, timestamps and the end.
fn only_timestamps(mut opts: &[u8]) -> bool {
    while let Some(&kind) = opts.first() {
        match kind {
            0 => return true,
            1 => opts = &opts[1..],
            8 if opts.get(1) == Some(&10) && opts.len() >= 10 => opts = &opts[10..],
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with a TCP segment (IPv4, or IPv6 if `v6`).
    fn seg(v6: bool, port: u16, ack: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[..2].copy_from_slice(&port.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = (((20 + opts.len()) / 4) << 4) as u8;
        tcp[13] = flags;
        tcp.extend_from_slice(opts);
        tcp.extend_from_slice(payload);
        let mut f = vec![0u8; 12];
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&[0xfe; 16]);
            f.extend_from_slice(&[0xfd; 16]);
        } else {
            let total = (20 + tcp.len()) as u16;
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 2, 10, 0, 2, 15]);
        }
        f.extend_from_slice(&tcp);
        f
    }

    fn ack(port: u16, n: u32) -> Vec<u8> {
        seg(false, port, n, 0x10, &[], &[])
    }

    fn run(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, u64) {
        let mut t = AckThinner::default();
        let mut out = Vec::new();
        for f in frames {
            t.push(f, &mut |o| out.push(o.to_vec()));
        }
        t.finish(&mut |o| out.push(o.to_vec()));
        assert!(!t.holding());
        (out, t.thinned())
    }

    #[test]
    fn a_round_of_acks_of_one_flow_becomes_its_last() {
        let frames: Vec<_> = (1..=10).map(|i| ack(1000, i * 1460)).collect();
        let (out, thinned) = run(&frames);
        assert_eq!(out, vec![ack(1000, 14600)]);
        assert_eq!(thinned, 9);
        // The same with timestamps, over IPv6, and across the wrap.
        let ts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let frames: Vec<_> = [u32::MAX - 10, 5, 9]
            .iter()
            .map(|&n| seg(true, 7, n, 0x10, &ts, &[]))
            .collect();
        let (out, thinned) = run(&frames);
        assert_eq!(out, vec![frames[2].clone()]);
        assert_eq!(thinned, 2);
    }

    #[test]
    fn duplicate_acks_data_and_other_flows_are_kept_in_order() {
        // A duplicate: both go, in order.
        let (out, _) = run(&[ack(1, 100), ack(1, 100)]);
        assert_eq!(out, vec![ack(1, 100), ack(1, 100)]);
        // An older number after a newer one (reordered): both go.
        let (out, _) = run(&[ack(1, 200), ack(1, 100)]);
        assert_eq!(out, vec![ack(1, 200), ack(1, 100)]);
        // Data of the flow: the held ACK goes first.
        let data = seg(false, 1, 300, 0x18, &[], b"hello");
        let (out, _) = run(&[ack(1, 200), data.clone(), ack(1, 400)]);
        assert_eq!(out, vec![ack(1, 200), data, ack(1, 400)]);
        // FIN, SYN, RST, ECE are not pure ACKs; SACK options are not thinned.
        for flags in [0x11, 0x12, 0x14, 0x50] {
            let f = seg(false, 1, 500, flags, &[], &[]);
            let (out, _) = run(&[ack(1, 200), f.clone(), ack(1, 600)]);
            assert_eq!(out, vec![ack(1, 200), f, ack(1, 600)], "flags {flags:#x}");
        }
        let sack = seg(
            false,
            1,
            300,
            0x10,
            &[1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
        );
        let (out, _) = run(&[ack(1, 200), sack.clone(), ack(1, 300)]);
        assert_eq!(out, vec![ack(1, 200), sack, ack(1, 300)]);
        // Another flow passes at once; each flow keeps its last.
        let (out, thinned) = run(&[ack(1, 10), ack(2, 10), ack(1, 20), ack(2, 30)]);
        assert_eq!(thinned, 2);
        out.iter()
            .for_each(|f| assert!(*f == ack(1, 20) || *f == ack(2, 30)));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn anything_else_passes_untouched_and_nothing_panics() {
        let arp = {
            let mut f = vec![0u8; 42];
            f[12..14].copy_from_slice(&[0x08, 0x06]);
            f
        };
        let mut fragment = ack(1, 10);
        fragment[20] = 0x20; // more fragments
        let mut short = ack(1, 10);
        short.truncate(40);
        let frames = vec![arp, fragment, short, vec![], vec![0x08], ack(1, 1)];
        let (out, thinned) = run(&frames);
        assert_eq!(out, frames);
        assert_eq!(thinned, 0);
        // Every prefix of a frame, and lying lengths, classify without panic.
        let f = seg(false, 1, 1, 0x10, &[8, 10, 1, 2, 3, 4, 5, 6, 7, 8], &[]);
        for n in 0..f.len() {
            classify(&f[..n]);
        }
        let mut lying = f.clone();
        lying[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(classify(&lying), Kind::Other);
        lying[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(classify(&lying), Kind::Other);
    }

    #[test]
    fn more_flows_than_it_holds_pass_unthinned() {
        let frames: Vec<_> = (0..MAX_HELD as u16 + 5).map(|p| ack(p, 1)).collect();
        let (out, _) = run(&frames);
        assert_eq!(out.len(), frames.len());
    }
}
