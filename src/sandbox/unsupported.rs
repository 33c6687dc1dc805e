//! Platforms without a sandbox: entering says so, and the status has
//! nothing to add.

use super::{Error, LandlockReport, Plan, Policy, Report, Result, SandboxStatus};

pub(super) fn apply(
    _plan: &Plan,
    _policy: &Policy,
    _report: &mut Report,
) -> Result<Option<LandlockReport>> {
    Err(Error::Unsupported(std::env::consts::OS))
}

pub(super) fn fill_status(_st: &mut SandboxStatus) {}
