//! What the engine reports for others to act on: the life of each call.
//! The shard drains these with [`Engine::poll_event`](super::Engine::poll_event)
//! and logs them; CDRs and the registrar's publishing hang off the same
//! stream. Nothing in the engine logs or writes to a store itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ids::CallRef;
use super::standalone::{Alarm, Outcome, TxId};

/// How the SBC's registration with a trunk went ([`Event::Upstream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Registered {
        expires: std::time::Duration,
    },
    Failed {
        status: Option<u16>,
        retry_in: std::time::Duration,
    },
}

/// One event from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new call was accepted and is being routed.
    CallStarted(CallStarted),
    /// The callee answered (2xx relayed to the caller).
    CallAnswered(CallAnswered),
    /// The call is over: its record (one per call, answered or not).
    CallEnded(Box<CallRecord>),
    /// A request the SBC sent on its own (`Engine::send_request`) got its
    /// final response, or timed out.
    Transaction { tx: TxId, outcome: Outcome },
    /// An alarm set with `Engine::set_alarm` is due.
    Alarm(Alarm),
    /// A trunk's health probes took it down or brought it back up;
    /// `status` is the last probe's answer (`None`: no answer).
    TrunkHealth {
        trunk: Arc<str>,
        up: bool,
        status: Option<u16>,
    },
    /// The SBC's registration with a trunk: now registered for `expires`
    /// (reported when it becomes so), or an attempt failed with `status`
    /// (`None`: no answer) and is retried in `retry_in` (each failure).
    Upstream { trunk: Arc<str>, state: Upstream },
    /// The registrar bound or removed an account's location: for the
    /// control plane to apply, persist and publish.
    Registration(crate::registrar::Change),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStarted {
    pub call: CallRef,
    /// The caller's Call-ID (the A leg's).
    pub call_id: Bytes,
    pub inbound_trunk: Arc<str>,
    pub callee: Arc<str>,
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallAnswered {
    pub call: CallRef,
    pub outbound_trunk: Arc<str>,
    pub at: Instant,
    /// From the INVITE to the answer.
    pub setup: Duration,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    CallerHangUp,
    /// The callee sent BYE.
    CalleeHangUp,
    /// The caller gave up before the answer (CANCEL, or BYE in the early
    /// dialog): 487.
    Cancelled,
    /// No trunk answered: the caller got `status`.
    Failed { status: u16 },
    /// Ringing longer than the configured limit: 408.
    RingTimeout,
    /// BRIEF §6: the media stopped; the SBC sent BYE on both legs.
    MediaTimeout,
    /// An SDP answer the relay could not anchor arrived where it cannot be
    /// refused (ACK, 2xx to a re-offer): the SBC ended the call.
    UnusableMedia,
    /// RFC 3261 §13.3.1.4: a 2xx was never ACKed; the SBC ended the call.
    NoAck,
    /// The answered call reached the configured maximum duration: the
    /// SBC sent BYE on both legs.
    MaxDuration,
    /// RFC 4028: no session refresh came within the negotiated interval:
    /// the SBC sent BYE on both legs.
    SessionExpired,
    /// The SBC ended the call for a reason of its own (a BYE that was
    /// never answered, an internal failure).
    Internal,
}

impl EndReason {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            EndReason::CallerHangUp => "caller_hangup",
            EndReason::CalleeHangUp => "callee_hangup",
            EndReason::Cancelled => "cancelled",
            EndReason::Failed { .. } => "failed",
            EndReason::RingTimeout => "ring_timeout",
            EndReason::MediaTimeout => "media_timeout",
            EndReason::UnusableMedia => "unusable_media",
            EndReason::NoAck => "no_ack",
            EndReason::MaxDuration => "max_duration",
            EndReason::SessionExpired => "session_expired",
            EndReason::Internal => "internal",
        }
    }
}

/// Media relayed for one call, per direction (index 0: from the caller,
/// 1: from the callee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaTotals {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub lost: [u64; 2],
}

/// One call, start to end: what a CDR holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call: CallRef,
    /// The caller's Call-ID (the A leg's).
    pub call_id: Bytes,
    pub inbound_trunk: Arc<str>,
    /// The trunk that answered, or the last one tried.
    pub outbound_trunk: Option<Arc<str>>,
    /// The caller's number (the user part of the A leg's From URI).
    pub caller: String,
    /// The dialled number.
    pub callee: Arc<str>,
    pub started: Instant,
    pub answered: Option<Instant>,
    pub ended: Instant,
    pub reason: EndReason,
    /// Media relayed (anchored calls only).
    pub media: Option<MediaTotals>,
}

impl CallRecord {
    /// Seconds of conversation (zero for an unanswered call).
    pub fn duration(&self) -> Duration {
        self.answered
            .map_or(Duration::ZERO, |a| self.ended.saturating_duration_since(a))
    }
}
