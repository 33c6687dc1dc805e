//! Pure codecs for the harness protocols: bytes in, values or errors out,
//! no I/O, so each is unit-tested, property-tested and fuzzed directly.
//!
//! - [`nvlist`]: FreeBSD's packed nvlist, the configuration record bhyve
//!   sends its slirp helper (`hostfwd`, `open`, `vmname`), decoded with
//!   every length checked before use, and encoded for tests that play
//!   bhyve.
//! - [`stream`]: QEMU's `-netdev stream` framing (a 4-byte big-endian
//!   length before each frame): an incremental decoder for arbitrary reads
//!   and a backlog that keeps partial writes in order.
//! - `api` (feature `api`): the slirp4netns JSON API (`add_hostfwd`, `list_hostfwd`,
//!   `remove_hostfwd`) with slirp4netns's exact replies and error strings,
//!   so rootlesskit and Podman see no difference.

#[cfg(feature = "api")]
#[cfg_attr(docsrs, doc(cfg(feature = "api")))]
pub mod api;
pub mod nvlist;
pub mod stream;

#[cfg(feature = "api")]
#[cfg_attr(docsrs, doc(cfg(feature = "api")))]
pub use api::{parse_request, request_complete, ApiError, Proto, Reply, Request};
pub use nvlist::{ConfigError, HelperConfig, NvError, NvList};
pub use stream::{Backlog, BacklogError, Decoder, StreamError};
