//! Elsewhere: no taps.

use super::{Error, TapDevice};

pub(super) fn open(name: &str) -> Result<TapDevice, Error> {
    Err(Error::Unsupported {
        name: name.to_owned(),
        reason: "tap devices are supported on Linux and FreeBSD only",
    })
}

pub(super) fn open_for_backend(name: &str) -> Result<TapDevice, Error> {
    open(name)
}

pub(super) fn prepare_vnet(_dev: &TapDevice, _hdr: usize) -> Result<bool, Error> {
    Ok(false)
}

pub(super) fn apply(_dev: &TapDevice, _f: u64, _before: u64, _len: usize) -> Result<(), Error> {
    Ok(())
}
