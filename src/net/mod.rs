//! Net back ends with bhyve's API (in progress).
