//! Media anchoring: SDP rewriting, per-shard port pools, and the relay
//! state of each call's streams (latching, counters), all sans-IO.

pub mod frame;
pub mod ports;
pub mod rtp;
pub mod sdp;
pub mod session;

pub use ports::{PortPlan, PortPool};
pub use session::{
    Binding, Context, Forward, Leg, MediaDrop, MediaError, MediaPorts, MediaSession, Role,
    ShareKey, share_key,
};
