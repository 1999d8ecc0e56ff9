//! The B2BUA core, sans-IO.
//!
//! One [`Engine`] per shard owns that shard's calls. It never opens a socket
//! and never reads the clock: the shard loop feeds it datagrams and the
//! current time, and drains what it wants to send.
//!
//! ```text
//! loop {
//!     let now = Instant::now();
//!     for (origin, bytes) in received_datagrams() {
//!         match engine.handle_datagram(now, origin, bytes) {
//!             Disposition::Done => {}
//!             Disposition::HandOff(shard) => hand_to(shard, origin, bytes),
//!         }
//!     }
//!     engine.handle_timeout(now);               // due timers
//!     while let Some(t) = engine.poll_transmit(&mut buf) {
//!         send(t.dest, &buf[..t.len]);          // caller-owned buffer
//!     }
//!     while let Some(e) = engine.poll_event() { log_or_publish(e) }
//!     wait_until(engine.poll_timeout());        // or the next datagram
//! }
//! ```
//!
//! A call has an A leg (the caller's dialog; the SBC is its UAS) and a B leg
//! (a dialog the SBC creates towards a trunk, with its own Call-ID, tags,
//! Via and Contact: nothing of the A side crosses over). New calls are
//! routed by the dialled number; trunks are tried in order (failover on
//! timeout, 408 and 5xx by default); in-dialog requests are relayed between
//! the legs.
//!
//! Ownership across shards: the owner of a message is named by its Call-ID
//! ([`Secrets::owner`]): B-leg Call-IDs carry their shard, A-leg Call-IDs
//! hash to one. A shard that receives a message it does not own gets
//! [`Disposition::HandOff`] and passes the bytes on, once.

mod build;
mod call;
mod context;
mod dialog;
mod engine;
mod event;
mod failure;
mod ids;
mod inbound;
mod keepalive;
mod lookup;
mod media;
mod outbound;
mod outside;
mod probe;
mod register;
mod response;
mod session;
mod standalone;
mod strangers;
mod table;
mod teardown;
mod template;
mod timers;
mod tomb;
mod upstream;
mod wheel;

pub use build::reconnect_for_response;
pub use context::Engine;
pub use engine::{Disposition, PEER_SCAN_EVERY, UNSENT_PEERS};
pub use event::{CallAnswered, CallRecord, CallStarted, EndReason, Event, MediaTotals, Upstream};
pub use ids::{CallRef, IdMinter, Secrets, ShardId};
pub use lookup::message::{LOOKUP_TIMEOUT, Located, ShardMessage};
pub use standalone::{Alarm, Outcome, OwnRequest, TxId};
pub use table::MAX_CALLS_PER_SHARD;
