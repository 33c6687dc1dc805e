//! caploop: a single-threaded, capability-sandboxed reactor for hypervisor
//! device back ends.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod net;
pub mod reactor;
pub mod rights;
pub mod sandbox;
pub mod slirp;
pub mod wire;

pub use reactor::{Event, Handle, Interest, Reactor, Source, TimerHandle, Waker};
pub use rights::Rights;
