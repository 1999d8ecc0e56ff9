//! The messages shards send each other about where an extension's phones
//! are, and the query of a shard's location that answers them; `super`
//! carries them, the call's routing (`outbound.rs`) asks and rings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::b2bua::ids::{CallRef, ShardId};
use crate::net::Flow;
use crate::policy::Policy;
use crate::registrar::Location;

/// How long a call waits for the owner of an extension to say where its
/// phones are.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A message from one shard to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardMessage {
    /// Where are the reachable phones of `extension`? Asked by shard
    /// `from` for its call `call`.
    Lookup {
        from: ShardId,
        call: CallRef,
        extension: Arc<str>,
    },
    /// The answer to a lookup: where to ring (nothing: nobody).
    Located {
        call: CallRef,
        bindings: Vec<Located>,
    },
}

/// One registered phone to ring: its Contact (the Request-URI) and where
/// its REGISTER came from (where the INVITE goes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub contact: Bytes,
    pub flow: Flow,
}

/// The reachable phones of `extension` in `location`.
pub(crate) fn located(
    policy: &Policy,
    location: &Location,
    extension: &str,
    now: Instant,
) -> Vec<Located> {
    policy
        .accounts
        .extension(extension)
        .filter_map(|a| {
            // A binding made over a transport the account may no longer
            // use (the configuration changed) is not rung.
            location
                .reachable(&a.username, now)
                .filter(|b| a.may_use(b.flow.transport))
        })
        .map(|b| Located {
            contact: Bytes::copy_from_slice(b.contact()),
            flow: b.flow,
        })
        .collect()
}
