//! The start-up acknowledgement caploop's own `slirp-helper` back end asks
//! for in bhyve's configuration record ([`ACK_KEY`]): one record, before
//! any frame, saying whether the configuration was applied (host forwards
//! bound) or what stopped the helper. bhyve never asks, so bhyve's side of
//! the protocol never sees one.
//!
//! The record goes out on a duplicate of bhyve's socket, taken when the
//! key is read and closed once the answer is sent, before the sandbox is
//! entered: the serve loop's plan never sees it.
//!
//! [`ACK_KEY`]: caploop::wire::nvlist::ACK_KEY

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use caploop::wire::nvlist::ack_record;

static OWED: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// An acknowledgement is owed on `sock` (bhyve's socket).
pub fn owe(sock: &OwnedFd) -> std::io::Result<()> {
    let dup = sock.try_clone()?;
    *OWED.lock().unwrap_or_else(|e| e.into_inner()) = Some(dup);
    Ok(())
}

/// Says "applied", if owed.
pub fn ok() {
    send(Ok(()));
}

/// Says what stopped the helper, if an acknowledgement is owed.
pub fn fail(why: &str) {
    send(Err(why));
}

fn send(result: Result<(), &str>) {
    let Some(sock) = OWED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let rec = ack_record(result);
    if let Err(e) = nix::sys::socket::send(
        sock.as_raw_fd(),
        &rec,
        nix::sys::socket::MsgFlags::MSG_EOR | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    ) {
        log::warn!("sending the start-up acknowledgement: {e}");
    }
}
