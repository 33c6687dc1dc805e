//! The serve loop's side of the link contract ([`crate::source`]): where a
//! link's sources hand what they read, and how they end the session. One
//! per session, cloned into every source's callbacks.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use caploop::reactor::Reactor;
use caploop::slirp::Stack;

use crate::error::ServeError;
use crate::inbound::Inbound;
use crate::link::{peer_gone, Arrival, Tx};

/// Why the loop ended, when it ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer closed its end (or the exit descriptor fired).
    PeerHungUp,
    /// SIGTERM or SIGINT.
    Terminated,
}

/// How the session ended, once it did.
pub type Ending = Rc<Cell<Option<Result<Outcome, ServeError>>>>;

/// See the module docs.
#[derive(Clone)]
pub struct Core {
    pub(crate) stack: Rc<Stack>,
    pub(crate) inbound: Rc<RefCell<Inbound>>,
    pub(crate) tx: Rc<RefCell<Box<dyn Tx>>>,
    pub(crate) ending: Ending,
}

impl Core {
    /// Hands one arrival to the inbound path (it may wait there for the
    /// end of the batch).
    pub fn deliver(&self, arrival: Arrival<'_>) {
        self.inbound.borrow_mut().take(arrival);
    }

    /// Ends a batch (everything one read brought): hands on what the
    /// inbound path holds, then releases the descriptors of connections
    /// the frames ended, before another callback this round (an API
    /// accept) gets their numbers.
    pub fn settle(&self, r: &mut Reactor<()>) {
        self.inbound.borrow_mut().end_batch();
        self.stack.release_closed(r);
    }

    /// The link's descriptor became writable: writes what waits. `false`
    /// if that ended the session (the peer is gone, or an error).
    pub fn flush_now(&self, r: &mut Reactor<()>) -> bool {
        let Err(e) = self.tx.borrow_mut().flush() else {
            return true;
        };
        // A peer that closed while frames were on their way hung up.
        let why = if peer_gone(&e) {
            Ok(Outcome::PeerHungUp)
        } else {
            Err(ServeError::Link {
                what: "writing to the link".into(),
                source: e,
            })
        };
        self.end(r, why);
        false
    }

    /// The peer hung up: the session ends well.
    pub fn hung_up(&self, r: &mut Reactor<()>) {
        self.end(r, Ok(Outcome::PeerHungUp));
    }

    /// Ends the session (the first reason given stands).
    pub fn end(&self, r: &mut Reactor<()>, why: Result<Outcome, ServeError>) {
        end(r, &self.ending, why);
    }
}

/// Ends the session with `why` unless it already ended.
pub fn end(r: &mut Reactor<()>, ending: &Ending, why: Result<Outcome, ServeError>) {
    let first = ending.take();
    ending.set(Some(first.unwrap_or(why)));
    r.stop();
}
