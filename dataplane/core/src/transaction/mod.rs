//! RFC 3261 §17 transactions as sans-IO state machines.
//!
//! A transaction never touches a socket or a clock: it is handed `now`, pushes
//! what must be (re)sent into an [`Outbox`](crate::net::Outbox), and reports
//! its next deadline through `next_deadline()`. Its owner calls `on_timer(now)`
//! when that deadline passes. Each state holds only the data valid in it
//! (the request while retransmitting, the ACK while Completed...).

mod client_invite;
mod client_non_invite;
mod server_invite;
mod server_non_invite;
mod timer;

pub use client_invite::ClientInvite;
pub use client_non_invite::ClientNonInvite;
pub use server_invite::{AckKind, ServerInvite};
pub use server_non_invite::ServerNonInvite;
pub use timer::{TimerConfig, TimerName, TimerTable};

/// What the transaction user should do with a response that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// Pass it up (relay it, act on it).
    Deliver,
    /// A retransmission the transaction handled itself.
    Absorb,
}

/// Timer outcomes the transaction user must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxEvent {
    /// Timer B, C, F or H: the peer never answered.
    Timeout,
    /// Timer L fired and the 2xx was never ACKed (RFC 3261 §13.3.1.4: the
    /// UAS should end the dialog).
    NoAck,
    /// The transaction ended normally and can be dropped.
    Terminated,
}

#[cfg(test)]
mod reliable_tests;
