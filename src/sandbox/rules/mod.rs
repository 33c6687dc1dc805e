//! The sandbox's rules as plain data, computed from a [`Plan`](super::Plan)
//! and a [`Policy`](super::Policy) on any host and unit-tested there: the
//! Capsicum limits FreeBSD applies, the seccomp filter and the Landlock
//! ruleset Linux applies. The platform files only turn this data into calls.

mod capsicum;
mod condition;
mod landlock;
pub mod linux_abi;
mod seccomp;
mod syscalls;
mod tables;

pub use capsicum::{capsicum_limits, CapFcntl, CapIoctl, CapLimits, CapRight};
pub use condition::{Cmp, Cond, SeccompRules, SysRule};
pub use landlock::{landlock_missing, landlock_rules, landlock_rules_for, LandlockRules};
pub use seccomp::{seccomp_rules, ProcessFacts};
pub use syscalls::Sys;
pub use tables::{BASE_SYSCALLS, FATAL_SIGNALS, FD_SYSCALLS, SOCKET_OPTIONS};
