#[path = "../../../tests/common/fragments.rs"]
pub mod fragments;
pub mod frames;
pub mod guest;
pub mod helper;
pub mod link_guest;
#[cfg(target_os = "linux")]
pub mod s4nn;
