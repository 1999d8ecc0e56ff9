//! SBC data plane.
#![deny(unsafe_code)]

pub mod b2bua;
pub mod net;
pub mod policy;
pub mod stats;
pub mod shard;
pub mod sip;
pub mod transaction;
