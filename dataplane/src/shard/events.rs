//! The shard's consumer of the engine's events: one structured log line
//! per call end (at info; starts and answers at debug). CDR writers and
//! the registrar's publishing will read the same stream.

use sbc_core::b2bua::{EndReason, Event, Outcome, Upstream};
use sbc_core::registrar::Change;

/// Logs one engine event of shard `shard`.
pub(crate) fn log(shard: usize, event: &Event) {
    match event {
        Event::CallStarted(s) => tracing::debug!(
            shard,
            call_id = %String::from_utf8_lossy(&s.call_id),
            trunk = %s.inbound_trunk,
            "call started"
        ),
        Event::CallAnswered(a) => tracing::debug!(
            shard,
            trunk = %a.outbound_trunk,
            setup_ms = a.setup.as_millis() as u64,
            "call answered"
        ),
        Event::CallEnded(r) => {
            let status = match r.reason {
                EndReason::Failed { status } => status,
                _ if r.answered.is_some() => 200,
                EndReason::Cancelled => 487,
                EndReason::RingTimeout => 408,
                _ => 500,
            };
            let media = r.media.unwrap_or_default();
            tracing::info!(
                shard,
                call_id = %String::from_utf8_lossy(&r.call_id),
                inbound_trunk = %r.inbound_trunk,
                outbound_trunk = r.outbound_trunk.as_deref().unwrap_or(""),
                reason = r.reason.label(),
                status,
                answered = r.answered.is_some(),
                duration_ms = r.duration().as_millis() as u64,
                caller_packets = media.packets[0],
                callee_packets = media.packets[1],
                caller_bytes = media.bytes[0],
                callee_bytes = media.bytes[1],
                caller_lost = media.lost[0],
                callee_lost = media.lost[1],
                "call ended"
            );
        }
        // Health probes and the SBC's own registrations are consumed in the
        // engine: these are the embedding's own requests.
        Event::Transaction { tx, outcome } => tracing::debug!(
            shard,
            tx = tx.0,
            status = match outcome {
                Outcome::Response { code, .. } => *code,
                Outcome::Timeout => 408,
            },
            "transaction outside calls ended"
        ),
        Event::Alarm(alarm) => tracing::debug!(shard, ?alarm, "alarm"),
        Event::TrunkHealth {
            trunk,
            up: false,
            status,
        } => tracing::warn!(
            shard,
            trunk = &**trunk,
            last_answer = status.map_or_else(|| "none".to_owned(), |c| c.to_string()),
            "trunk down: health probes failed; calls skip it"
        ),
        Event::TrunkHealth {
            trunk,
            up: true,
            status,
        } => tracing::info!(
            shard,
            trunk = &**trunk,
            last_answer = status.map_or_else(|| "none".to_owned(), |c| c.to_string()),
            "trunk up: health probes answered"
        ),
        Event::Upstream {
            trunk,
            state: Upstream::Registered { expires },
        } => tracing::info!(
            shard,
            trunk = &**trunk,
            expires_s = expires.as_secs(),
            "registered to trunk"
        ),
        Event::Upstream {
            trunk,
            state: Upstream::Failed { status, retry_in },
        } => tracing::warn!(
            shard,
            trunk = &**trunk,
            last_answer = status.map_or_else(|| "none".to_owned(), |c| c.to_string()),
            retry_in_s = retry_in.as_secs(),
            "registration to trunk failed"
        ),
        Event::Registration(Change::Bound(b)) => tracing::debug!(
            shard,
            account = &*b.account,
            extension = &*b.extension,
            source = %b.flow.remote,
            contact = %String::from_utf8_lossy(b.contact()),
            "registered"
        ),
        Event::Registration(Change::Removed { account }) => {
            tracing::debug!(shard, account = &**account, "unregistered")
        }
        Event::Registration(Change::Reachable {
            account,
            reachable: false,
        }) => tracing::info!(
            shard,
            account = &**account,
            "phone unreachable: keepalives unanswered; not rung until it answers or registers"
        ),
        Event::Registration(Change::Reachable {
            account,
            reachable: true,
        }) => tracing::info!(shard, account = &**account, "phone reachable again"),
    }
}
