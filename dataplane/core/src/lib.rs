//! The SBC's protocol core, sans-IO.
//!
//! Everything here is a plain state machine: it never opens a socket and
//! never reads the clock. The I/O layer (`sbc-dataplane`'s shards) feeds it
//! datagrams and the current time and drains what it wants sent; tests do
//! the same with a simulated clock and network.
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
#![forbid(unsafe_code)]

pub mod b2bua;
pub mod hex;
pub mod media;
pub mod net;
pub mod overload;
pub mod policy;
pub mod refusal;
pub mod registrar;
pub mod sip;
pub mod stats;
pub mod transaction;
