//! libslirp user-mode networking on the reactor.
//!
//! A [`Stack`] owns one C libslirp instance (config version 4, through our
//! own [`ffi`] declarations) and keeps its sockets and timers registered in
//! a [`Reactor`](crate::reactor::Reactor): one thread, no mutex, no wakeup
//! pipe, and persistent kernel registrations changed only where libslirp's
//! poll set changed (see the `poll` module for the round).
//!
//! Ownership: the stack's state lives in an `Rc` shared by the [`Stack`]
//! handle and the closures it puts in the reactor (a prepare hook, a poll
//! timer, one callback per socket, one timer per libslirp timer); those
//! closures get `&mut Reactor` from the reactor itself. libslirp's C
//! callbacks, which run inside our calls into libslirp while Rust up the
//! stack may hold `&mut Reactor`, touch only a separate boxed record of
//! cells (outgoing frames, socket and timer operations, a dirty flag). The
//! stack drains that record right after each libslirp call, applying the
//! operations to the reactor and handing the frames to the caller's sink
//! outside libslirp, so the sink may feed frames back in. Calls made
//! without the reactor at hand ([`Stack::input`] outside a callback) leave
//! their operations queued for the next round (or [`Stack::sync`]).
//!
//! Guest frames are checked before libslirp sees them: runts, oversize
//! frames and headers too short for their type are dropped, and IPv4
//! fragments are reassembled here ([`reass`]) so that libslirp 4.7's own
//! reassembly, which one crafted fragment crashes, is never reached.
//!
//! Configuration ([`Config`]) has bhyve's defaults; host forwarding rules
//! ([`Rule`]) use bhyve's syntax, `tcp:127.0.0.1:2222-:22;udp::5353-:53`,
//! with IPv6 addresses in brackets.
//!
//! Needs the `slirp` feature (on by default), which links the C libslirp
//! (4.7 or newer) found through pkg-config.

mod callbacks;
pub mod config;
pub mod ffi;
pub mod hostfwd;
mod inbound;
mod inner;
mod poll;
pub mod reass;
mod stack;
mod timers;
mod urgent;

pub use config::{Config, ConfigError, TcpMode, MTU_MAX, MTU_MIN};
pub use hostfwd::{parse_rules, Proto, Rule, RuleError};
pub use inbound::Inbound;
pub use stack::{Counters, Stack, ETH_HLEN};

/// What went wrong in the slirp stack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid slirp configuration: {0}")]
    Config(#[from] ConfigError),
    /// A host forwarding rule does not parse.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// `slirp_new` refused the configuration.
    #[error("libslirp refused the configuration (slirp_new returned NULL)")]
    New,
    /// libslirp could not set up a host forward (the port is in use, the
    /// address is not local, ...).
    #[error("host forward {rule}: {source}")]
    Hostfwd {
        /// The rule, in bhyve syntax.
        rule: String,
        /// Why, as libslirp's errno says.
        #[source]
        source: std::io::Error,
    },
    /// No host forward matches the rule to remove.
    #[error("host forward {0}: no such forward")]
    NoSuchHostfwd(String),
    /// The stack was closed.
    #[error("the slirp stack is closed")]
    Closed,
}

/// The slirp module's result type.
pub type Result<T> = std::result::Result<T, Error>;
