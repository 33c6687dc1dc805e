//! The way a guest's frames take into the stack, the same for every link:
//! the library's [`caploop::slirp::Inbound`] (of a flow's pure ACKs in one
//! batch only the last, a flow's run of TCP segments as one
//! super-segment), counted for the exit line.
//!
//! A batch is what one read of the link brought; [`Inbound::end_batch`]
//! hands on what is held, so nothing waits past the callback that read it.

use std::rc::Rc;

use caploop::net::offload::Offloaded;
use caploop::slirp::Stack;

use crate::link::{Arrival, LinkCounters};

/// The inbound path of one session.
pub struct Inbound {
    stack: Rc<Stack>,
    path: caploop::slirp::Inbound,
    counts: LinkCounters,
}

impl Inbound {
    /// Into `stack`.
    pub fn new(stack: Rc<Stack>) -> Inbound {
        Inbound {
            stack,
            path: caploop::slirp::Inbound::default(),
            counts: LinkCounters::default(),
        }
    }

    /// Takes one arrival of the batch.
    pub fn take(&mut self, arrival: Arrival<'_>) {
        self.counts.frames_in += 1;
        self.counts.bytes_in += arrival.bytes().len() as u64;
        match arrival {
            Arrival::Frame(frame) => self.path.frame(&self.stack, frame),
            Arrival::Segment(segment) => {
                // A link's own super-segment.
                self.counts.offloaded_in += 1;
                self.path.segment(&self.stack, segment);
            }
            Arrival::Partial(frame, partial, kind) => {
                self.counts.offloaded_in += u64::from(kind == Offloaded::TcpSegment);
                self.path.partial(&self.stack, frame, partial);
            }
        }
    }

    /// Ends the batch: what is held goes into the stack.
    pub fn end_batch(&mut self) {
        self.path.end_batch(&self.stack);
        self.counts.merged_in = self.path.merged();
        self.counts.acks_thinned_in = self.path.acks_thinned();
    }

    /// What came in so far (the inbound fields of [`LinkCounters`]).
    pub fn counts(&self) -> LinkCounters {
        self.counts
    }
}
