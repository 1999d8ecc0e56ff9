//! Answering the caller's INVITE and ending calls: the best failure to
//! the caller, cancelling an attempt, BYE on both legs, and the one place
//! a call is marked over (its gauges and its record as an event).

use std::time::Instant;

use bytes::Bytes;

use super::build::{Relayed, RequestParts, invite_sibling, leg_request};
use super::call::{Call, Own, Phase, Side, State};
use super::context::Ctx;
use super::event::{CallRecord, EndReason, Event};
use crate::refusal::Ending;
use crate::stats::Direction;
use crate::transaction::ClientNonInvite;

/// Answers the caller's INVITE with `response` (status `code`) through
/// its transaction, counting a final answer.
pub(crate) fn respond_to_caller(
    ctx: &mut Ctx,
    call: &mut Call,
    code: u16,
    response: Bytes,
    now: Instant,
) {
    if call
        .uas
        .tx
        .respond(now, &call.policy.timers, code, response, &mut ctx.out)
        && code >= 200
    {
        ctx.stats.final_sent(code);
    }
}

/// Sends the best failure to the caller and ends the call.
pub(crate) fn fail_call(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    let failure = call
        .routing_mut()
        .and_then(|r| r.failure.take())
        .unwrap_or_else(|| super::failure::ending_failure(Ending::TimedOut));
    let (code, reason): (u16, &[u8]) = match failure.code {
        _ if failure.local => (failure.code, &failure.reason),
        // §16.7: a proxy should not forward 503 (it would mean *this* hop
        // is unavailable); 500 instead.
        503 => Ending::Internal.answer(),
        401 | 407 => Ending::ChallengeNotForCaller.answer(),
        c => (c, &failure.reason),
    };
    if let Some(routing) = call.routing() {
        let template = &routing.template;
        let mut buf =
            crate::sip::buffer(template.len() + failure.headers.len() + failure.body.len());
        let mut w = template.start(&mut buf, code, reason, Some(call.a.local_tag()));
        if !matches!(failure.code, 401 | 407) {
            w.raw(&failure.headers);
            w.body(&failure.body);
        } else {
            w.body(b"");
        }
        let response = crate::sip::seal(buf);
        respond_to_caller(ctx, call, code, response, now);
    }
    if let Some(t) = call.policy.trunk(call.a.trunk) {
        t.stats.fail(Direction::Inbound);
    }
    end(ctx, call, now, EndReason::Failed { status: code });
}

/// Ends a call that is not answered yet: `why` is the caller giving up
/// (487, RFC 3261 §9.2) or ringing too long (408, §16.6 step 11): answer
/// the INVITE, CANCEL the attempt in progress.
pub(crate) fn cancel_call(ctx: &mut Ctx, call: &mut Call, now: Instant, why: EndReason) {
    let (code, reason) = match why {
        EndReason::Cancelled => Ending::Cancelled,
        EndReason::RingTimeout => Ending::TimedOut,
        _ => Ending::Internal,
    }
    .answer();
    if let Some(routing) = call.routing() {
        let response = routing
            .template
            .simple(code, reason, Some(call.a.local_tag()));
        respond_to_caller(ctx, call, code, response, now);
    }
    if let Some(t) = call.policy.trunk(call.a.trunk) {
        t.stats.fail(Direction::Inbound);
    }
    cancel_wave(ctx, call, (call.wave(), usize::MAX), now);
    end(ctx, call, now, why);
}

/// CANCELs the attempts still pending from `wave` on, but `except` (the
/// one that answered, when one did): at once when they rang, else as soon
/// as they do (RFC 3261 §9.1; §16.7 step 10 for the forks of an answered
/// call).
pub(crate) fn cancel_wave(
    ctx: &mut Ctx,
    call: &mut Call,
    (wave, except): (usize, usize),
    now: Instant,
) {
    for i in wave..call.attempts.len() {
        if i != except && call.attempts.get(i).is_some_and(|a| a.tx.is_pending()) {
            cancel_attempt(ctx, call, i, now);
        }
    }
}

/// Gives up attempt `index`: CANCEL at once when it rang, else as soon as
/// it does (RFC 3261 §9.1).
pub(crate) fn cancel_attempt(ctx: &mut Ctx, call: &mut Call, index: usize, now: Instant) {
    let Some(a) = call.attempts.get_mut(index) else {
        return;
    };
    a.cancel_wanted = true;
    a.tx.abandon(now, &call.policy.timers);
    if a.tx.heard_back() {
        send_cancel(ctx, call, index, now);
    }
}

/// CANCELs attempt `index` (RFC 3261 §9.1: same Request-URI, Call-ID,
/// From, CSeq number and top Via as its INVITE).
pub(crate) fn send_cancel(ctx: &mut Ctx, call: &mut Call, index: usize, now: Instant) {
    let Some(attempt) = call.attempts.get_mut(index) else {
        return;
    };
    // The INVITE's own listener, so the CANCEL's Via is the INVITE's.
    let local = ctx.local(attempt.tx.dest().local).clone();
    if attempt.cancel.is_some() {
        return;
    }
    let cancel = invite_sibling(
        &call.b,
        &local,
        b"CANCEL",
        attempt.invite_ref(),
        &attempt.initial_to,
    );
    let dest = attempt.tx.dest();
    attempt.cancel = Some(Box::new(ClientNonInvite::start(
        now,
        &call.policy.timers,
        dest,
        cancel,
        &mut ctx.out,
    )));
}

/// The user part of a From value (the caller's number), or empty.
fn caller_of(from: &[u8]) -> String {
    crate::sip::NameAddr::parse(from)
        .ok()
        .and_then(|n| n.parsed_uri().ok()?.user)
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default()
}

/// Marks the call over (once), keeps the gauges right and reports its
/// record.
pub(crate) fn end(ctx: &mut Ctx, call: &mut Call, now: Instant, reason: EndReason) {
    if call.phase() == Phase::Ended {
        return;
    }
    let answered = call.answer();
    // Ending drops what the phase held (the routing data once the caller
    // is answered).
    let routing = call.leave_routing(State::Ended { answered, at: now });
    if let Some(routing) = routing
        && call.uas.tx.is_pending()
    {
        // Whatever ended the call, the caller's INVITE gets a final answer
        // (otherwise its transaction, and the call, would never finish).
        let (code, reason) = Ending::Internal.answer();
        let response = routing
            .template
            .simple(code, reason, Some(call.a.local_tag()));
        respond_to_caller(ctx, call, code, response, now);
    }
    if call.answered_at().is_some() {
        if let Some(t) = call.policy.trunk(call.a.trunk) {
            t.stats.hang_up(Direction::Inbound);
        }
        if let Some(t) = call.policy.trunk(call.b.trunk) {
            t.stats.hang_up(Direction::Outbound);
        }
    }
    // The slots the call held (admission control).
    call.policy.limits.open.close();
    if let Some(t) = call.policy.trunk(call.a.trunk) {
        t.stats.close(Direction::Inbound);
    }
    call.release_b_slot();
    let caller = caller_of(call.a.remote_party());
    call.cancel_call_timers();
    let media = super::media::release(ctx, call);
    ctx.stats
        .calls_active
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let trunk_name = |id| call.policy.trunk(id).map(|t| t.name.clone());
    let record = CallRecord {
        call: call.me,
        call_id: call.a.bytes(super::call::Part::CallId),
        inbound_trunk: trunk_name(call.a.trunk).unwrap_or_default(),
        outbound_trunk: call
            .answered_attempt()
            .or_else(|| call.current())
            .and_then(|a| trunk_name(a.target.trunk)),
        caller,
        callee: std::sync::Arc::clone(&call.number),
        started: call.started,
        answered: answered.map(|a| a.at),
        ended: now,
        reason,
        media,
    };
    ctx.emit(Event::CallEnded(Box::new(record)));
}

/// Ends an established call from the SBC: BYE on both legs.
pub(crate) fn bye_both(ctx: &mut Ctx, call: &mut Call, now: Instant, reason: EndReason) {
    let timers = call.policy.timers;
    for side in [Side::A, Side::B] {
        if call.leg(side).remote_tag().is_none() {
            continue;
        }
        let parts = ctx.local(call.leg(side).flow.local).clone();
        let branch = ctx.ids.branch();
        let leg = call.leg_mut(side);
        leg.local_cseq += 1;
        let bye = leg_request(
            leg,
            &parts,
            &RequestParts {
                method: b"BYE",
                cseq: leg.local_cseq,
                branch: &branch,
                max_forwards: 70,
                contact: false,
                relay: Relayed::Nothing,
                session: None,
            },
        );
        let dest = leg.flow;
        let tx = ClientNonInvite::start(now, &timers, dest, bye, &mut ctx.out);
        call.extra_mut().own.push(Own { side, branch, tx });
    }
    end(ctx, call, now, reason);
}
