//! libslirp user-mode networking on the reactor (in progress).
