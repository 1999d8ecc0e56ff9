//! The media relay benchmark's pieces.

pub mod minimal;
pub mod setup;
