//! The way a guest's frames take into the stack, the same for every link:
//! of a flow's pure ACKs in one batch only the last
//! ([`caploop::net::acks`]), a flow's run of TCP segments as one
//! super-segment ([`caploop::net::gro`]), counted.
//!
//! A batch is what one read of the link brought; [`Inbound::end_batch`]
//! hands on what is held, so nothing waits past the callback that read it.

use std::rc::Rc;

use caploop::net::acks::AckThinner;
use caploop::net::gro::Gro;
use caploop::net::offload::Offloaded;
use caploop::slirp::Stack;

use crate::link::{Arrival, LinkCounters};

/// The inbound path of one session.
pub struct Inbound {
    stack: Rc<Stack>,
    acks: AckThinner,
    gro: Gro,
    counts: LinkCounters,
}

impl Inbound {
    /// Into `stack`.
    pub fn new(stack: Rc<Stack>) -> Inbound {
        Inbound {
            stack,
            acks: AckThinner::default(),
            gro: Gro::default(),
            counts: LinkCounters::default(),
        }
    }

    /// Takes one arrival of the batch.
    pub fn take(&mut self, arrival: Arrival<'_>) {
        self.counts.frames_in += 1;
        self.counts.bytes_in += arrival.bytes().len() as u64;
        let (stack, gro) = (&*self.stack, &mut self.gro);
        let mut input = |kind, bytes: &[u8]| into_stack(stack, kind, bytes);
        match arrival {
            Arrival::Frame(frame) => self.acks.push(frame, &mut |f| gro.push(f, &mut input)),
            Arrival::Segment(segment) => {
                // A link's own super-segment: what is held goes first.
                self.counts.offloaded_in += 1;
                self.acks.finish(&mut |f| gro.push(f, &mut input));
                gro.finish(&mut input);
                stack.input_segment(segment);
            }
        }
    }

    /// Ends the batch: what is held goes into the stack.
    pub fn end_batch(&mut self) {
        let (stack, gro) = (&*self.stack, &mut self.gro);
        let mut input = |kind, bytes: &[u8]| into_stack(stack, kind, bytes);
        self.acks.finish(&mut |f| gro.push(f, &mut input));
        gro.finish(&mut input);
        self.counts.merged_in = gro.merged();
        self.counts.acks_thinned_in = self.acks.thinned();
    }

    /// What came in so far (the inbound fields of [`LinkCounters`]).
    pub fn counts(&self) -> LinkCounters {
        self.counts
    }
}

/// A frame, or a super-segment, into the stack.
fn into_stack(stack: &Stack, kind: Offloaded, bytes: &[u8]) {
    match kind {
        Offloaded::Frame => stack.input(bytes),
        Offloaded::TcpSegment => stack.input_segment(bytes),
    }
}
