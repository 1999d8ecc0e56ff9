//! What a shard keeps of its own registrations with trunks; `super`
//! drives them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::b2bua::standalone::InFlight;
use crate::policy::Registration;

/// This shard's registrations, by trunk name (names survive reloads).
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    pub(super) trunks: HashMap<Arc<str>, State>,
    pub(super) in_flight: InFlight,
}

#[derive(Debug)]
pub(super) struct State {
    /// What it was started with: a reload that changes it starts over.
    pub(super) config: Arc<Registration>,
    pub(super) call_id: Bytes,
    pub(super) cseq: u32,
    /// When the next round starts (an alarm due earlier finds nothing).
    pub(super) next_at: Instant,
    /// Challenges answered in this round.
    pub(super) answers: u8,
    /// The expiry asked for (raised by a 423).
    pub(super) expires: u32,
    /// The nonce last answered and its count.
    pub(super) nonce: Vec<u8>,
    pub(super) nc: u32,
    pub(super) failures: u32,
}
