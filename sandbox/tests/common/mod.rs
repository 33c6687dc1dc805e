pub mod frames;
pub mod guest;
pub mod helper;
