//! SBC data plane.
#![deny(unsafe_code)]

pub mod b2bua;
pub mod media;
pub mod net;
pub mod policy;
pub mod shard;
pub mod sip;
pub mod stats;
pub mod transaction;
