//! The process's sandbox state as the kernel and this module see it, before
//! and after entry (`/proc/thread-self/status` on Linux, `cap_getmode` on
//! FreeBSD).

use std::sync::OnceLock;

use super::{Enforcement, LandlockReport, Mode};

/// The seccomp mode of the calling thread (`Seccomp:` in
/// `/proc/thread-self/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// No seccomp.
    Disabled,
    /// Strict mode (read, write, exit only).
    Strict,
    /// A BPF filter.
    Filter,
}

/// The process's sandbox state, as the kernel and this module see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxStatus {
    /// This module entered the sandbox, in this mode.
    pub entered: Option<Mode>,
    /// FreeBSD: the process is in capability mode (`cap_getmode`).
    pub capability_mode: Option<bool>,
    /// Linux: `NoNewPrivs` of the thread.
    pub no_new_privs: Option<bool>,
    /// Linux: `Seccomp` of the thread.
    pub seccomp: Option<SeccompMode>,
    /// Linux: `Seccomp_filters` of the thread (stacked filters).
    pub seccomp_filters: Option<u32>,
    /// Linux: the Landlock domain this module applied (the kernel does not
    /// show it in `/proc`).
    pub landlock: Option<LandlockReport>,
}

impl SandboxStatus {
    /// Whether any layer is active: capability mode, a seccomp filter, or a
    /// Landlock domain this module applied.
    pub fn is_sandboxed(&self) -> bool {
        self.capability_mode == Some(true)
            || matches!(
                self.seccomp,
                Some(SeccompMode::Filter | SeccompMode::Strict)
            )
            || self
                .landlock
                .as_ref()
                .is_some_and(|l| l.enforcement != Enforcement::None)
    }
}

/// What this module applied, recorded once entered.
#[derive(Debug)]
pub(super) struct Entered {
    pub(super) mode: Mode,
    pub(super) landlock: Option<LandlockReport>,
}

pub(super) static ENTERED: OnceLock<Entered> = OnceLock::new();

/// The sandbox state of the process (on Linux, of the calling thread: seccomp
/// and Landlock are per thread). Works before and after entry.
pub fn status() -> SandboxStatus {
    let mut st = SandboxStatus::default();
    if let Some(e) = ENTERED.get() {
        st.entered = Some(e.mode);
        st.landlock = e.landlock.clone();
    }
    super::sys::fill_status(&mut st);
    st
}

/// Reads `NoNewPrivs`, `Seccomp` and `Seccomp_filters` from the text of a
/// Linux `/proc/<pid>/status` file.
pub fn parse_proc_status(text: &str) -> (Option<bool>, Option<SeccompMode>, Option<u32>) {
    let mut out = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "NoNewPrivs" => out.0 = value.parse::<u32>().ok().map(|v| v != 0),
            "Seccomp" => {
                out.1 = match value {
                    "0" => Some(SeccompMode::Disabled),
                    "1" => Some(SeccompMode::Strict),
                    "2" => Some(SeccompMode::Filter),
                    _ => None,
                }
            }
            "Seccomp_filters" => out.2 = value.parse().ok(),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tx\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(
            parse_proc_status(text),
            (Some(true), Some(SeccompMode::Filter), Some(1))
        );
        let text = "NoNewPrivs:\t0\nSeccomp:\t0\n";
        assert_eq!(
            parse_proc_status(text),
            (Some(false), Some(SeccompMode::Disabled), None)
        );
    }

    #[test]
    fn status_before_entry_is_not_sandboxed() {
        let st = status();
        assert_eq!(st.entered, None);
        #[cfg(target_os = "linux")]
        assert!(st.seccomp.is_some());
    }
}
