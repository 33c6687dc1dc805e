//! [`Inbound`]: the way a guest's frames take into a [`Stack`], for every
//! front end alike: of a flow's pure ACKs in one batch only the last
//! ([`AckThinner`], unless [`Inbound::coalescing_only`]), a flow's run of
//! in-order TCP segments as one super-segment ([`Gro`]), so libslirp makes
//! one host `send()` and one ACK per run instead of one per frame.
//!
//! A batch is what the caller took in one go (one read of a link, one
//! reactor round of a device); [`Inbound::end_batch`] hands on what is
//! held, so nothing waits past it.

use crate::frame::acks::AckThinner;
use crate::frame::gro::Gro;
use crate::frame::vnet_hdr::{Offloaded, Partial};

use super::Stack;

/// Guest frames on their way into a stack, held within a batch.
#[derive(Debug, Default)]
pub struct Inbound {
    acks: AckThinner,
    gro: Gro,
    held: bool,
    /// Pure ACKs go straight on ([`Inbound::coalescing_only`]).
    no_thinning: bool,
}

impl Inbound {
    /// Coalescing without ACK thinning: every pure ACK goes on. Measured
    /// better for a device loop that hands frames in one by one from a
    /// plain tap (`benches/netns.sh` peer `inproc`: thinning there cost
    /// 5-10% both ways, its parse a CPU-bound path's time, and libslirp
    /// paced its sends on the ACKs it no longer saw).
    pub fn coalescing_only() -> Inbound {
        Inbound {
            no_thinning: true,
            ..Inbound::default()
        }
    }

    /// Takes one Ethernet frame from the guest: into `stack` now, or held
    /// until a later frame of the batch or [`end_batch`](Self::end_batch).
    pub fn frame(&mut self, stack: &Stack, frame: &[u8]) {
        let gro = &mut self.gro;
        let mut input = |kind, bytes: &[u8]| into_stack(stack, kind, bytes);
        if self.no_thinning {
            gro.push(frame, &mut input);
        } else {
            self.acks.push(frame, &mut |f| gro.push(f, &mut input));
        }
        self.held = true;
    }

    /// Takes a TCP super-segment the guest's side made (TSO): what is held
    /// goes first, so the order holds.
    pub fn segment(&mut self, stack: &Stack, segment: &[u8]) {
        self.end_batch(stack);
        stack.input_segment(segment);
    }

    /// Takes a super-segment or a large frame whose TCP checksum is still
    /// partial ([`Stack::input_partial`]): what is held goes first.
    pub fn partial(&mut self, stack: &Stack, frame: &mut [u8], partial: Partial) {
        self.end_batch(stack);
        stack.input_partial(frame, partial);
    }

    /// Ends the batch: what is held goes into `stack`. Returns whether
    /// anything could have been held.
    pub fn end_batch(&mut self, stack: &Stack) -> bool {
        let gro = &mut self.gro;
        let mut input = |kind, bytes: &[u8]| into_stack(stack, kind, bytes);
        self.acks.finish(&mut |f| gro.push(f, &mut input));
        gro.finish(&mut input);
        std::mem::take(&mut self.held)
    }

    /// Runs of segments merged into one so far.
    pub fn merged(&self) -> u64 {
        self.gro.merged()
    }

    /// Pure ACKs left out so far (a later one of the flow said more).
    pub fn acks_thinned(&self) -> u64 {
        self.acks.thinned()
    }
}

/// A frame, or a super-segment, into the stack.
fn into_stack(stack: &Stack, kind: Offloaded, bytes: &[u8]) {
    match kind {
        Offloaded::Frame => stack.input(bytes),
        Offloaded::TcpSegment => stack.input_segment(bytes),
    }
}
