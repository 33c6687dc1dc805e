//! The sandbox's rules as plain data, computed from a [`Plan`](super::Plan)
//! and a [`Policy`](super::Policy) on any host and unit-tested there: the
//! Capsicum limits FreeBSD applies, the seccomp filter and the Landlock
//! ruleset Linux applies. The platform files only turn this data into calls.

mod capsicum;
mod landlock;
pub mod linux_abi;
mod seccomp;

pub use capsicum::{capsicum_limits, CapFcntl, CapIoctl, CapLimits, CapRight};
pub use landlock::{landlock_missing, landlock_rules, landlock_rules_for, LandlockRules};
pub use seccomp::{
    seccomp_rules, Cmp, Cond, ProcessFacts, SeccompRules, Sys, SysRule, BASE_SYSCALLS,
    FATAL_SIGNALS, FD_SYSCALLS, SOCKET_OPTIONS,
};
