//! What entering the sandbox did, or what stopped it.

use std::os::fd::RawFd;

use super::{landlock_missing, LandlockRules, Mode, Plan, PlannedFd, Policy, Sys};

/// What went wrong while entering the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This platform has no sandbox implementation.
    #[error("sandboxing is not supported on {0}: caploop can enter a sandbox on FreeBSD (Capsicum) and Linux (seccomp + Landlock) only")]
    Unsupported(&'static str),
    /// The process already entered the sandbox.
    #[error("the sandbox was already entered")]
    AlreadyEntered,
    /// A planned descriptor is not open.
    #[error("fd {fd} ({label}) is not open")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// Who planned it.
        label: String,
    },
    /// Limiting a planned descriptor failed.
    #[error("limiting fd {fd} ({label}) with {call}: {source}")]
    Limit {
        /// The descriptor.
        fd: RawFd,
        /// Who planned it.
        label: String,
        /// The call that failed (`cap_rights_limit`...).
        call: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A syscall needed to enter failed.
    #[error("{syscall} failed: {source}")]
    Syscall {
        /// The syscall, with its arguments where that helps.
        syscall: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A [`Plan::before_entry`] hook failed.
    #[error("before-entry hook {name:?} failed: {source}")]
    Hook {
        /// The hook's name.
        name: String,
        /// Its error.
        source: std::io::Error,
    },
    /// Building or applying the Landlock ruleset failed.
    #[error("Landlock: {0}")]
    Landlock(String),
    /// Building or installing the seccomp filter failed.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
}

/// Result of sandbox operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How completely Landlock enforces what caploop relies on it for (see
/// [`landlock_missing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Everything asked for is enforced.
    Full,
    /// Part of it (the kernel's ABI lacks some access rights).
    Partial,
    /// Nothing (Landlock missing or disabled).
    None,
}

/// What Landlock was asked for and what the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockReport {
    /// The ABI used: the lower of the kernel's and the `landlock` crate's
    /// (0: Landlock unavailable).
    pub abi: u32,
    /// How much of `rules` is enforced.
    pub enforcement: Enforcement,
    /// What was asked for.
    pub rules: LandlockRules,
}

impl LandlockReport {
    /// One plain sentence saying what Landlock enforces, for a log line or
    /// a warning.
    pub fn summary(&self) -> String {
        match self.enforcement {
            Enforcement::None => "Landlock is not available on this kernel (not built in, or \
                                  not enabled at boot): the filesystem and TCP rules rest on \
                                  seccomp alone"
                .to_string(),
            Enforcement::Partial => format!(
                "Landlock ABI {} does not enforce {}: that rests on seccomp alone",
                self.abi,
                landlock_missing(self.abi, &self.rules).join(" or ")
            ),
            Enforcement::Full => format!("Landlock ABI {} enforces every rule asked for", self.abi),
        }
    }
}

/// The seccomp filter that was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompReport {
    /// The allowed syscalls (some with argument checks).
    pub syscalls: Vec<Sys>,
    /// Length of the BPF program.
    pub instructions: usize,
    /// Violations are logged rather than refused ([`Policy::audit`]).
    pub audit: bool,
}

/// What [`Plan::apply_and_enter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The mode entered.
    pub mode: Mode,
    /// The descriptors limited, with their rights.
    pub limited: Vec<PlannedFd>,
    /// Open descriptors that were not in the plan. They keep full rights on
    /// FreeBSD; on Linux only the syscall allowlist applies to them.
    pub unplanned_fds: Vec<RawFd>,
    /// FreeBSD: capability mode was entered.
    pub capability_mode: bool,
    /// Linux: `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
    /// Linux: Landlock.
    pub landlock: Option<LandlockReport>,
    /// Linux: the seccomp filter.
    pub seccomp: Option<SeccompReport>,
    /// What is weaker than asked, in words.
    pub warnings: Vec<String>,
}

impl Report {
    pub(super) fn new(plan: &Plan, policy: &Policy) -> Report {
        Report {
            mode: policy.mode,
            limited: plan.fds.clone(),
            unplanned_fds: Vec::new(),
            capability_mode: false,
            no_new_privs: false,
            landlock: None,
            seccomp: None,
            warnings: Vec::new(),
        }
    }
}
