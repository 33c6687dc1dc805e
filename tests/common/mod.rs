//! Shared test support. Each test binary uses only part of it.
#![allow(dead_code)]

pub mod child;
pub mod fragments;
#[cfg(feature = "slirp")]
pub mod guest;
#[cfg(target_os = "linux")]
pub mod netns;
