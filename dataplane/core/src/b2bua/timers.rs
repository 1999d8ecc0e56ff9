//! What a call does when one of its timers fires: transaction timers
//! (retransmissions, timeouts) and the SBC's call timers.

use std::time::Instant;

use smallvec::SmallVec;

use super::call::{Call, ClientTx, Phase, ServerTx, Side};
use super::context::Ctx;
use super::dialog::{ack_relay, send_b_ack};
use super::event::EndReason;
use super::outbound::attempt_timed_out;
use super::teardown::{bye_both, cancel_call, end};
use crate::refusal::Ending;
use crate::sip::Method;
use crate::transaction::{TimerName, TxEvent};

/// Sends 100 Trying to the caller unless a response already went out.
pub(crate) fn send_trying(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    call.timers.cancel(TimerName::Trying);
    if !call.uas.tx.has_responded()
        && let Some(routing) = call.routing()
    {
        let trying = routing.template.simple(100, b"Trying", None);
        call.uas
            .tx
            .respond(now, &call.policy.timers, 100, trying, &mut ctx.out);
    }
}

/// Runs every timer of `call` that is due at `now`: its transactions'
/// (RFC 3261 §17) and its own (Trying, no response, ringing, media).
pub(crate) fn on_timer(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    uas_and_attempt_timers(ctx, call, now);
    relay_timers(ctx, call, now);
    local_timers(ctx, call, now);
    call_timers(ctx, call, now);
}

/// The caller's INVITE transaction and the INVITEs to the trunks.
fn uas_and_attempt_timers(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    let timers = call.policy.timers;
    if call.uas.tx.on_timer(now, &timers, &mut ctx.out) == Some(TxEvent::NoAck)
        && call.phase() == Phase::Answered
    {
        // RFC 3261 §13.3.1.4: the caller never ACKed our 2xx. Complete the
        // callee's INVITE and end the call on both legs.
        send_b_ack(ctx, call, None, now);
        bye_both(ctx, call, now, EndReason::NoAck);
    }

    let wave = call.wave();
    let mut timed_out = false;
    let mut ringing_too_long: SmallVec<[usize; 2]> = SmallVec::new();
    for (i, attempt) in call.attempts.iter_mut().enumerate() {
        let ev = attempt.tx.on_timer(now, &mut ctx.out);
        if let Some(c) = attempt.cancel.as_mut() {
            c.on_timer(now, &timers, &mut ctx.out);
        }
        // Timer B (no answer) or timer C (ringing too long, §16.6 step 11)
        // on an attempt in progress.
        if ev == Some(TxEvent::Timeout) && i >= wave {
            timed_out = true;
            if attempt.tx.heard_back() && attempt.tx.is_pending() {
                ringing_too_long.push(i);
            }
        }
    }
    // RFC 3261 §16.6 step 11: a fork that rang past timer C is CANCELled
    // (it would ring on otherwise), whether or not others still ring.
    for index in ringing_too_long {
        super::teardown::cancel_attempt(ctx, call, index, now);
    }
    if timed_out {
        if call.wave_pending(usize::MAX) {
            // One phone of several went quiet: the others still ring.
            let timeout = super::failure::ending_failure(Ending::TimedOut);
            super::failure::merge_failure(call, timeout);
        } else {
            attempt_timed_out(ctx, call, now);
        }
    }
}

/// The transactions of requests relayed in the dialogs.
fn relay_timers(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    let timers = call.policy.timers;
    let mut ended_by_bye = None;
    let mut unacked_reinvite = None;
    for (i, relay) in call.relays.iter_mut().enumerate() {
        match &mut relay.server {
            ServerTx::Invite(t) => {
                if t.on_timer(now, &timers, &mut ctx.out) == Some(TxEvent::NoAck) {
                    unacked_reinvite = Some(i);
                }
            }
            ServerTx::NonInvite(t) => {
                t.on_timer(now);
            }
        }
        let ev = match &mut relay.client {
            ClientTx::Invite(t) => t.on_timer(now, &mut ctx.out),
            ClientTx::NonInvite(t) => t.on_timer(now, &timers, &mut ctx.out),
        };
        if ev == Some(TxEvent::Timeout) {
            // The far side never answered: 408 to the originator.
            let (code, reason) = Ending::TimedOut.answer();
            let response = relay.template.simple(code, reason, None);
            let sent = relay
                .server
                .respond(now, &timers, code, response, &mut ctx.out);
            if sent {
                relay.final_code = Some(code);
                ctx.stats.final_sent(code);
            }
            if relay.method == Method::Bye {
                ended_by_bye = Some(relay.from);
            }
        }
    }
    if let Some(i) = unacked_reinvite {
        // §13.3.1.4: the re-INVITE's originator never ACKed the 2xx we
        // relayed. ACK the far side's 2xx ourselves and end the call.
        if call.relays.get(i).is_some_and(|r| r.ack.is_none()) {
            ack_relay(ctx, call, i, super::build::Relayed::Nothing);
        }
        bye_both(ctx, call, now, EndReason::NoAck);
    }
    call.relays.retain(|r| !r.is_done());
    if let Some(from) = ended_by_bye {
        // The BYE's far side never answered; the call is over all the same.
        let by = match from {
            Side::A => EndReason::CallerHangUp,
            Side::B => EndReason::CalleeHangUp,
        };
        end(ctx, call, now, by);
    }
}

/// Requests answered here and the SBC's own BYEs.
fn local_timers(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    let timers = call.policy.timers;
    let Some(extra) = call.extra.as_deref_mut() else {
        return;
    };
    for l in &mut extra.local {
        match &mut l.tx {
            ServerTx::Invite(t) => {
                t.on_timer(now, &timers, &mut ctx.out);
            }
            ServerTx::NonInvite(t) => {
                t.on_timer(now);
            }
        }
    }
    extra.local.retain(|l| !l.tx.is_terminated());

    for own in &mut extra.own {
        own.tx.on_timer(now, &timers, &mut ctx.out);
    }
    extra.own.retain(|o| !o.tx.is_terminated());
    if extra.local.is_empty() && extra.own.is_empty() && extra.strays.is_empty() {
        call.extra = None;
    }
}

/// The call's own timers (timers are data: `call.timers`).
fn call_timers(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    while let Some(timer) = call.timers.pop_expired(now) {
        match timer {
            TimerName::Trying => send_trying(ctx, call, now),
            TimerName::MediaTimeout
                if matches!(call.phase(), Phase::Confirmed | Phase::Answered)
                    && super::media::on_timeout(ctx, call, now) =>
            {
                // BRIEF §6: a call whose media stopped is ended on both legs.
                bye_both(ctx, call, now, EndReason::MediaTimeout);
            }
            TimerName::NoResponse if call.routing_mut().is_some_and(|r| r.awaiting) => {
                // The extension's owner did not answer: nobody to ring.
                super::outbound::on_located(ctx, call, Vec::new(), now);
            }
            TimerName::NoResponse if call.wave_silent() => {
                attempt_timed_out(ctx, call, now);
            }
            TimerName::MaxDuration
                if matches!(call.phase(), Phase::Confirmed | Phase::Answered) =>
            {
                bye_both(ctx, call, now, EndReason::MaxDuration);
            }
            TimerName::SessionExpires
                if matches!(call.phase(), Phase::Confirmed | Phase::Answered) =>
            {
                // RFC 4028 §10: the refresher went quiet; end the call as
                // the ends would.
                bye_both(ctx, call, now, EndReason::SessionExpired);
            }
            TimerName::MaxRinging if call.uas.tx.is_pending() => {
                cancel_call(ctx, call, now, EndReason::RingTimeout);
            }
            _ => {}
        }
    }
}
