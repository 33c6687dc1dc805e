//! The sandbox: limit every descriptor, then give up ambient authority.
//!
//! A device back end reads untrusted input (guest frames, a peer's
//! records). Before it does, it should be unable to do anything but what
//! its loop does: read and write the descriptors it was given, with the
//! operations each one needs. This module is how a hypervisor (or the
//! `caploop-sandbox` harness) gets there.
//!
//! # Using it
//!
//! ```no_run
//! use caploop::sandbox::{Plan, Policy};
//! use caploop::{Reactor, Rights};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut reactor: Reactor<()> = Reactor::new()?;
//! // ... register every descriptor, with the Rights it needs; add host
//! // forwards and open every file you will need ...
//! let mut plan = Plan::from_reactor(&reactor);
//! plan.add(&std::io::stderr(), Rights::WRITE_ONLY, "stderr");
//! plan.before_entry("resolv.conf", || {
//!     // Read now what a library would read lazily after entry.
//!     std::fs::read("/etc/resolv.conf").map(drop)
//! });
//! let report = plan.apply_and_enter(&Policy::restricted())?;
//! log::info!("sandboxed: {report:?}");
//! reactor.run(&mut ())?;
//! # Ok(()) }
//! ```
//!
//! 1. Set up everything first: sockets, listeners (host forwards), the tap
//!    device, files. After entry nothing can be opened by name.
//! 2. Collect the [`Plan`]: [`Plan::from_reactor`] takes every registration
//!    with the [`Rights`](crate::Rights) it was registered with, plus the
//!    reactor's own event queue and signal descriptor. Add what the loop
//!    does not poll but still uses ([`Plan::add`]). A descriptor planned
//!    twice keeps the union of its rights.
//! 3. Say what must be read before entry ([`Plan::before_entry`]).
//! 4. Choose the [`Policy`] and call [`Plan::apply_and_enter`]. It returns a
//!    [`Report`] of what was applied, or an [`Error`] naming the descriptor
//!    or syscall that failed. Check [`status`] at any time.
//!
//! What each layer enforces and what it does not, what open mode gives up,
//! how the platforms differ, what has been checked on FreeBSD and how,
//! and what libraries inside the sandbox need: [the threat
//! model](threat_model).

mod enter;
mod plan;
mod report;
mod rules;
mod status;

#[cfg(target_os = "freebsd")]
mod capsicum;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod unsupported;

// The platform's half, chosen once (as polling chooses its poller).
#[cfg(target_os = "freebsd")]
use capsicum as sys;
#[cfg(target_os = "linux")]
use linux as sys;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
use unsupported as sys;

#[doc = include_str!("threat_model.md")]
pub mod threat_model {}

pub use enter::enter;
pub use plan::{Mode, Plan, PlannedFd, Policy};
pub use report::{Enforcement, Error, LandlockReport, Report, Result, SeccompReport};
pub use rules::{
    capsicum_limits, landlock_missing, landlock_rules, landlock_rules_for, linux_abi,
    seccomp_rules, CapFcntl, CapIoctl, CapLimits, CapRight, Cmp, Cond, LandlockRules, ProcessFacts,
    SeccompRules, Sys, SysRule, BASE_SYSCALLS, FATAL_SIGNALS, FD_SYSCALLS, SOCKET_OPTIONS,
};
pub use status::{parse_proc_status, status, SandboxStatus, SeccompMode};
