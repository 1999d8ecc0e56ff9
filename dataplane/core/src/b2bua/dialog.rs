//! In-dialog requests relayed from one leg to the other (re-INVITE, UPDATE,
//! INFO, BYE...), their responses, the ACKs, and BYEs the SBC sends itself.

use std::time::Instant;

use bytes::Bytes;

use super::build::{
    Reach, Relayed, RequestParts, contact_uri, invite_sibling, leg_request, next_hop,
    response_dest_on,
};
use super::call::InviteRef;
use super::call::{Call, ClientTx, KeptAck, Leg, LocalAnswer, Phase, Relay, ServerTx, Side, State};
use super::context::Ctx;
use super::event::EndReason;
use super::ids::Branch;
use super::outbound::{Body, sdp_towards};
pub(crate) use super::teardown::bye_both;
use super::teardown::{cancel_call, end};
use super::template::Template;
use crate::media::Role;
use crate::net::Flow;
use crate::refusal::{Ending, Refusal};
use crate::sip::{HeaderName, Method, Request, Response};
use crate::stats::ShardStats;
use crate::transaction::{
    AckKind, ClientInvite, ClientNonInvite, ResponseAction, ServerInvite, ServerNonInvite,
};

/// Target-refresh requests: they carry a Contact and their 2xx may change
/// the remote target (RFC 3261 §12.2, RFC 3311 §5.1, RFC 6665 §4.1, RFC 3515
/// §2.4.1 for REFER's mandatory Contact).
pub(crate) fn is_target_refresh(m: Method) -> bool {
    matches!(
        m,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

/// Answers an in-dialog request here, through a server transaction so its
/// retransmissions get the same answer (RFC 3261 §17.2).
#[allow(clippy::too_many_arguments)]
fn answer_locally(
    ctx: &mut Ctx,
    call: &mut Call,
    side: Side,
    req: &Request<'_>,
    origin: Flow,
    now: Instant,
    answer: Result<(), Refusal>,
) {
    let (code, reason) = match answer {
        Ok(()) => (200, std::borrow::Cow::Borrowed("OK")),
        Err(why) => {
            ctx.stats.refused(why);
            (why.status(), why.reason())
        }
    };
    let reason = reason.as_bytes();
    let timers = call.policy.timers;
    let dest = response_dest_on(req, origin, &call.policy, call.leg(side).trunk);
    let template = Template::new(req, origin.remote, false);
    let mut buf = crate::sip::buffer(template.len() + 64);
    let mut w = template.start(&mut buf, code, reason, Some(call.leg(side).local_tag()));
    if let Err(why) = answer {
        for (name, value) in why.headers() {
            w.header(*name, &[value]);
        }
        if let Some((name, value)) = why.policy_header(&call.policy.call_timers) {
            w.header_u32(name, value);
        }
    }
    w.body(b"");
    let response = crate::sip::seal(buf);
    let tx = if req.method == Method::Invite {
        let mut t = ServerInvite::new(dest);
        t.respond(now, &timers, code, response, &mut ctx.out);
        ServerTx::Invite(t)
    } else {
        let mut t = ServerNonInvite::new(dest);
        t.respond(now, &timers, code, response, &mut ctx.out);
        ServerTx::NonInvite(t)
    };
    ctx.stats.final_sent(code);
    call.extra_mut().local.push(LocalAnswer {
        from: side,
        branch: Bytes::copy_from_slice(req.via.branch().unwrap_or(b"")),
        cseq: req.cseq.seq,
        method: req.method,
        tx,
    });
}

/// A retransmission of a request the call relays or answered itself:
/// its server transaction answers it again (or waits on). True when it was
/// one.
fn absorb_retransmission(ctx: &mut Ctx, call: &mut Call, side: Side, req: &Request<'_>) -> bool {
    let tx = match call
        .relays
        .iter_mut()
        .find(|r| r.matches_request(side, req))
    {
        Some(r) => &mut r.server,
        None => match call
            .extra
            .as_deref_mut()
            .and_then(|e| e.local.iter_mut().find(|l| l.matches_request(side, req)))
        {
            Some(l) => &mut l.tx,
            None => return false,
        },
    };
    ShardStats::inc(&ctx.stats.retransmissions_in);
    match tx {
        ServerTx::Invite(t) => t.on_retransmission(&mut ctx.out),
        ServerTx::NonInvite(t) => t.on_retransmission(&mut ctx.out),
    }
    true
}

/// An in-dialog request from `side`, already matched to the call by
/// Call-ID and tags.
pub(crate) fn on_request(
    ctx: &mut Ctx,
    call: &mut Call,
    side: Side,
    req: &Request<'_>,
    origin: Flow,
    now: Instant,
) {
    if absorb_retransmission(ctx, call, side, req) {
        return;
    }
    let leg = call.leg_mut(side);
    // RFC 3261 §12.2.2: a CSeq lower than the last one is out of order.
    if leg.remote_cseq.is_some_and(|last| req.cseq.seq <= last) {
        answer_locally(ctx, call, side, req, origin, now, Err(Refusal::OutOfOrder));
        return;
    }
    leg.remote_cseq = Some(req.cseq.seq);
    let pending_reinvite = call
        .relays
        .iter()
        .any(|r| r.method == Method::Invite && (r.server.is_pending() || r.client.is_pending()));
    let no_dialog = Err(Refusal::NoDialog);
    let glare = Err(Refusal::Glare);
    match (req.method, call.phase(), side) {
        (Method::Bye, Phase::Routing | Phase::Early, Side::A) => {
            // The caller hangs up before the answer: 200 to the BYE, and the
            // INVITE ends as if cancelled.
            answer_locally(ctx, call, side, req, origin, now, Ok(()));
            if call.uas.tx.is_pending() {
                cancel_call(ctx, call, now, EndReason::Cancelled);
            }
        }
        (Method::Bye, Phase::Routing | Phase::Early, Side::B) => {
            match call.early_fork(req, &origin) {
                Some(index) => early_bye(ctx, call, index, req, origin, now),
                None => answer_locally(ctx, call, side, req, origin, now, no_dialog),
            }
        }
        (Method::Bye, Phase::Answered | Phase::Confirmed, _) => {
            relay(ctx, call, side, req, origin, now)
        }
        // RFC 3261 §14.2: one INVITE transaction at a time per dialog.
        (Method::Invite, Phase::Confirmed, _) if pending_reinvite => {
            answer_locally(ctx, call, side, req, origin, now, glare);
        }
        (Method::Invite, Phase::Confirmed, _) => relay(ctx, call, side, req, origin, now),
        (Method::Invite, _, _) if call.phase() != Phase::Ended => {
            answer_locally(ctx, call, side, req, origin, now, glare);
        }
        (_, Phase::Ended, _) => answer_locally(ctx, call, side, req, origin, now, no_dialog),
        _ if call.leg(side.other()).remote_tag().is_none() => {
            answer_locally(ctx, call, side, req, origin, now, no_dialog);
        }
        _ => relay(ctx, call, side, req, origin, now),
    }
}

/// RFC 3261 §15: a callee must not BYE an early dialog. One that does is
/// taken as giving up: 200 to the BYE and CANCEL to the INVITE of the
/// attempt `index` whose early dialog it is (other forks ring on); that
/// attempt's final answer then decides (failover, or failure if it was
/// the last).
fn early_bye(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    req: &Request<'_>,
    origin: Flow,
    now: Instant,
) {
    answer_locally(ctx, call, Side::B, req, origin, now, Ok(()));
    super::teardown::send_cancel(ctx, call, index, now);
}

/// A request from a phone in the early dialog of attempt `index`, a fork
/// the B leg no longer follows: a BYE ends that fork; anything else is
/// 481, since only the dialog the leg follows is relayed.
pub(crate) fn on_early_fork_request(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    req: &Request<'_>,
    origin: Flow,
    now: Instant,
) {
    if absorb_retransmission(ctx, call, Side::B, req) {
        return;
    }
    match req.method {
        Method::Bye => early_bye(ctx, call, index, req, origin, now),
        _ => answer_locally(ctx, call, Side::B, req, origin, now, Err(Refusal::NoDialog)),
    }
}

/// Requests of one call relayed and not yet answered, and relayed ones
/// held in all (answered ones linger 64*T1 to absorb retransmissions): a
/// peer flooding one dialog cannot make the call hold more.
pub(crate) const MAX_PENDING_RELAYS: usize = 32;
pub(crate) const MAX_HELD_RELAYS: usize = 1024;

fn relay(
    ctx: &mut Ctx,
    call: &mut Call,
    side: Side,
    req: &Request<'_>,
    origin: Flow,
    now: Instant,
) {
    let pending = call
        .relays
        .iter()
        .filter(|r| r.server.is_pending() || r.client.is_pending())
        .count();
    if pending >= MAX_PENDING_RELAYS || call.relays.len() >= MAX_HELD_RELAYS {
        // Stateless: a transaction per refused request would be held too.
        ctx.refuse(req, origin, Refusal::DialogBusy);
        return;
    }
    // RFC 4028 §8.1: a session refresh is held to the SBC's minimum and
    // maximum like the first INVITE.
    let session = if carries_offer(req.method) {
        match super::session::plan_request(&req.msg, &call.policy.call_timers) {
            Ok(plan) => Some(plan),
            Err(why) => {
                answer_locally(ctx, call, side, req, origin, now, Err(why));
                return;
            }
        }
    } else {
        None
    };
    let (body, offer_in_request) = match relayed_body(ctx, call, side, req, now) {
        Ok(b) => b,
        Err(why) => {
            answer_locally(ctx, call, side, req, origin, now, Err(why));
            return;
        }
    };
    let timers = call.policy.timers;
    let dest = response_dest_on(req, origin, &call.policy, call.leg(side).trunk);
    let template = Template::new(req, origin.remote, false);
    refresh_target(call, side, req);
    let server = if req.method == Method::Invite {
        let mut t = ServerInvite::new(dest);
        let trying = template.simple(100, b"Trying", None);
        t.respond(now, &timers, 100, trying, &mut ctx.out);
        ServerTx::Invite(t)
    } else {
        ServerTx::NonInvite(ServerNonInvite::new(dest))
    };
    let (client, client_branch, client_cseq) =
        forward(ctx, call, side.other(), (req, session), &body, now);
    call.relays.push(Relay {
        from: side,
        method: req.method,
        server,
        server_branch: Bytes::copy_from_slice(req.via.branch().unwrap_or(b"")),
        server_cseq: req.cseq.seq,
        template,
        client,
        client_branch,
        client_cseq,
        ack: None,
        offer_in_request,
        final_code: None,
        session: session.and_then(super::session::Plan::asked),
    });
}

/// What a relayed request carries across, and whether it is an SDP
/// offer; the refusal when it cannot cross (no hops left, SDP the relay
/// cannot rewrite or carry).
fn relayed_body(
    ctx: &mut Ctx,
    call: &mut Call,
    side: Side,
    req: &Request<'_>,
    now: Instant,
) -> Result<(Body, bool), Refusal> {
    if req.max_forwards == Some(0) {
        return Err(Refusal::TooManyHops);
    }
    let body_kind = super::media::body_kind(&req.msg);
    if call.anchored && body_kind == super::media::BodyKind::NestedSdp {
        return Err(Refusal::UnsupportedMedia);
    }
    // An offer in a re-INVITE or UPDATE goes through the media session
    // (RFC 3264 §8: hold, resume, new addresses, added streams).
    let offer_in_request = carries_offer(req.method) && body_kind == super::media::BodyKind::Sdp;
    if !offer_in_request {
        return Ok((Body::Same, false));
    }
    if call.phase() == Phase::Confirmed {
        super::media::stage_offer(call);
    }
    match super::media::cross(ctx, call, side, Role::Offer, req.msg.body(), now) {
        Ok(Some(b)) => Ok((Body::Rewritten(b), true)),
        Ok(None) => Ok((Body::Same, true)),
        Err(e) => {
            super::media::settle_offer(ctx, call, false);
            Err(Refusal::Media(e))
        }
    }
}

/// RFC 3261 §12.2.2: a target-refresh request's Contact is the peer's new
/// remote target.
fn refresh_target(call: &mut Call, side: Side, req: &Request<'_>) {
    if is_target_refresh(req.method) {
        retarget(call, side, &req.msg);
    }
}

/// The Contact of `msg` (a target refresh or its 2xx, RFC 3261 §12.2) is
/// `side`'s peer's new remote target.
fn retarget(call: &mut Call, side: Side, msg: &crate::sip::Message<'_>) {
    // A SIPS target the leg's transport cannot reach securely (a 2xx to a
    // re-INVITE over UDP or TCP) is not taken: requests keep going to the
    // target before it (RFC 3261 §26.2.2; such requests are refused).
    if super::build::insecure_sips(call.leg_mut(side).flow.transport, msg, false) {
        return;
    }
    if let Some(contact) = contact_uri(msg) {
        let policy = std::sync::Arc::clone(&call.policy);
        let leg = call.leg_mut(side);
        leg.set_remote_target(contact);
        let reach = Reach {
            policy: &policy,
            trunk: leg.trunk,
        };
        let hop = next_hop(leg.remote_target(), &leg.route_set, leg.flow.remote, reach);
        leg.flow = policy.retarget(leg.flow, hop);
    }
}

/// Sends `req` on in the `to_side` dialog (RFC 3261 §12.2.1.1) with
/// `body`; its client transaction, branch and CSeq.
fn forward(
    ctx: &mut Ctx,
    call: &mut Call,
    to_side: Side,
    (req, session): (&Request<'_>, Option<super::session::Plan>),
    body: &Body,
    now: Instant,
) -> (ClientTx, Branch, u32) {
    let timers = call.policy.timers;
    let parts = ctx.local(call.leg(to_side).flow.local).clone();
    let branch = ctx.ids.branch();
    let leg = call.leg_mut(to_side);
    leg.local_cseq += 1;
    let cseq = leg.local_cseq;
    let bytes = leg_request(
        leg,
        &parts,
        &RequestParts {
            method: req.method_raw,
            cseq,
            branch: &branch,
            max_forwards: req.max_forwards.unwrap_or(70).saturating_sub(1),
            contact: is_target_refresh(req.method),
            relay: body.relayed(&req.msg),
            session: session.and_then(super::session::Plan::rewrite),
        },
    );
    let dest = leg.flow;
    let client = if req.method == Method::Invite {
        ClientTx::Invite(ClientInvite::start(now, &timers, dest, bytes, &mut ctx.out))
    } else {
        ClientTx::NonInvite(ClientNonInvite::start(
            now,
            &timers,
            dest,
            bytes,
            &mut ctx.out,
        ))
    };
    (client, branch, cseq)
}

/// Requests whose SDP is an offer (RFC 3264; RFC 3311 for UPDATE).
fn carries_offer(m: Method) -> bool {
    matches!(m, Method::Invite | Method::Update)
}

/// A response from the far side to a relayed request.
pub(crate) fn on_relay_response(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    resp: &Response<'_>,
    now: Instant,
) {
    let Some(to_side) = relay_transaction(ctx, call, index, resp, now) else {
        return;
    };
    let Some((method, offer_in_request)) = call
        .relays
        .get(index)
        .map(|r| (r.method, r.offer_in_request))
    else {
        return;
    };
    let code = resp.code;
    if offer_in_request && carries_offer(method) && code >= 200 {
        // The far side's verdict on the re-offer.
        super::media::settle_offer(ctx, call, (200..300).contains(&code));
    }
    // The far side's SDP: the answer to the relayed offer, or its own offer
    // when the request had none.
    let body = if carries_offer(method) && (101..300).contains(&code) {
        sdp_towards(ctx, call, to_side, offer_in_request, &resp.msg, now)
    } else if call.anchored && super::media::carries_media(&resp.msg) {
        // SDP in an error answer (e.g. 488 to a re-INVITE): not relayed.
        Body::Dropped
    } else {
        Body::Same
    };
    if carries_offer(method) && (200..300).contains(&code) && matches!(body, Body::Dropped) {
        unanchorable_reanswer(ctx, call, index, now);
        return;
    }
    respond_to_originator(ctx, call, index, resp, &body, now);
    if (200..300).contains(&code) && is_target_refresh(method) {
        retarget(call, to_side, &resp.msg);
    }
    if method == Method::Bye && code >= 200 {
        // RFC 3261 §15.1.2: any final response ends the dialog.
        let by = match to_side {
            Side::A => EndReason::CalleeHangUp,
            Side::B => EndReason::CallerHangUp,
        };
        end(ctx, call, now, by);
    }
}

/// Passes a response to relay `index`'s client transaction (RFC 3261
/// §17.1); the side it came from when it is news for the originator,
/// `None` when the transaction absorbed it or it needs nothing more.
fn relay_transaction(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    resp: &Response<'_>,
    now: Instant,
) -> Option<Side> {
    let timers = call.policy.timers;
    let to_side = call.relays.get(index)?.from.other();
    let local = ctx.local(call.leg(to_side).flow.local).clone();
    let code = resp.code;
    let (leg_a, leg_b) = (&call.a, &call.b);
    let leg = match to_side {
        Side::A => leg_a,
        Side::B => leg_b,
    };
    let relay = call.relays.get_mut(index)?;
    let action = match &mut relay.client {
        ClientTx::Invite(t) => t.on_response(
            now,
            &timers,
            code,
            || {
                invite_sibling(
                    leg,
                    &local,
                    b"ACK",
                    InviteRef {
                        ruri: leg.remote_target(),
                        routes: &leg.route_set,
                        branch: &relay.client_branch,
                        cseq: relay.client_cseq,
                    },
                    leg.remote_party(),
                )
            },
            &mut ctx.out,
        ),
        ClientTx::NonInvite(t) => t.on_response(now, &timers, code),
    };
    if action == ResponseAction::Absorb {
        ShardStats::inc(&ctx.stats.retransmissions_in);
        return None;
    }
    if relay.method == Method::Invite && (200..300).contains(&code) && !relay.server.is_pending() {
        // A retransmitted 2xx to a re-INVITE: ACK again if we already did;
        // the originator gets our own 2xx retransmissions meanwhile.
        if let Some(ack) = relay.ack.clone() {
            ctx.send(leg.flow, &ack);
        }
        return None;
    }
    (code != 100).then_some(to_side)
}

/// Relays the far side's response (with `body`) to the originator of
/// relay `index`, through its server transaction.
fn respond_to_originator(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    resp: &Response<'_>,
    body: &Body,
    now: Instant,
) {
    let timers = call.policy.timers;
    let Some(from) = call.relays.get(index).map(|r| r.from) else {
        return;
    };
    let our_contact = ctx.local(call.leg(from).flow.local).contact.clone();
    let Some(relay) = call.relays.get_mut(index) else {
        return;
    };
    let code = resp.code;
    let min_se = call.policy.call_timers.min_se;
    // RFC 4028: a 2xx to a session refresh settles the interval anew.
    let session = (carries_offer(relay.method) && (200..300).contains(&code))
        .then(|| super::session::settle(&resp.msg, relay.session, min_se));
    let mut buf = crate::sip::buffer(resp.msg.as_bytes().len() + relay.template.len());
    let mut w = relay.template.start(&mut buf, code, resp.reason, None);
    if is_target_refresh(relay.method) && (101..300).contains(&code) {
        w.header(HeaderName::Contact, &[&our_contact]);
    }
    if let Some((Some(interval), true)) = session {
        super::session::write_refresher(&mut w, interval);
    }
    body.write(&mut w, &resp.msg);
    let bytes = crate::sip::seal(buf);
    let sent = relay
        .server
        .respond(now, &timers, code, bytes, &mut ctx.out);
    if sent && code >= 200 {
        ctx.stats.final_sent(code);
        relay.final_code = Some(code);
        // Retransmissions of the request get the stored response.
        relay.template = Template::empty();
    }
    if let Some((interval, _)) = session {
        call.arm_session(interval, now);
    }
}

/// The far side accepted a re-offer (re-INVITE or UPDATE) with SDP the
/// relay cannot carry: the call would be left with media nobody agreed on.
/// The originator hears 488 (its session stays as it was, RFC 3264 §8),
/// the far side's 2xx to a re-INVITE is ACKed (RFC 3261 §13.2.2.4), and
/// the call is ended on both legs.
fn unanchorable_reanswer(ctx: &mut Ctx, call: &mut Call, index: usize, now: Instant) {
    let timers = call.policy.timers;
    let Some(relay) = call.relays.get_mut(index) else {
        return;
    };
    let method = relay.method;
    let (code, reason) = Ending::Unanchorable.answer();
    let bytes = relay.template.simple(code, reason, None);
    let sent = relay
        .server
        .respond(now, &timers, code, bytes, &mut ctx.out);
    if sent {
        ctx.stats.final_sent(code);
        relay.template = Template::empty();
    }
    if method == Method::Invite {
        ack_relay(ctx, call, index, Relayed::Nothing);
    }
    bye_both(ctx, call, now, EndReason::UnusableMedia);
}

/// An ACK from `side`: for the caller's initial INVITE, or for a relayed
/// re-INVITE.
pub(crate) fn on_ack(ctx: &mut Ctx, call: &mut Call, side: Side, req: &Request<'_>, now: Instant) {
    let timers = call.policy.timers;
    if side == Side::A && req.cseq.seq == call.uas.cseq {
        if call.uas.tx.on_ack(now, &timers) == AckKind::Success {
            send_b_ack(ctx, call, Some(req), now);
        }
        return;
    }
    // An ACK for a 491 (or other failure) the SBC answered itself.
    if let Some(l) = call.extra.as_deref_mut().and_then(|e| {
        e.local
            .iter_mut()
            .find(|l| l.from == side && l.method == Method::Invite && l.cseq == req.cseq.seq)
    }) {
        if let ServerTx::Invite(t) = &mut l.tx {
            t.on_ack(now, &timers);
        }
        return;
    }
    let Some(index) = call.relays.iter().position(|r| {
        r.from == side && r.method == Method::Invite && r.server_cseq == req.cseq.seq
    }) else {
        ctx.stats.discard(crate::stats::Discard::StrayAck);
        return;
    };
    let relay = &mut call.relays[index];
    let ServerTx::Invite(t) = &mut relay.server else {
        return;
    };
    if t.on_ack(now, &timers) != AckKind::Success {
        return;
    }
    // Late offer in a re-INVITE: the ACK carries the answer.
    let body = if relay.offer_in_request {
        Body::Same
    } else {
        sdp_towards(ctx, call, side, true, &req.msg, now)
    };
    ack_relay(ctx, call, index, body.relayed(&req.msg));
    if matches!(body, Body::Dropped) {
        // An answer in the ACK that cannot be relayed cannot be refused
        // either: the call is ended.
        bye_both(ctx, call, now, EndReason::UnusableMedia);
    }
}

/// Sends the ACK for the far side's 2xx to the re-INVITE relayed by
/// `call.relays[index]`, and keeps it for that 2xx's retransmissions.
pub(crate) fn ack_relay(ctx: &mut Ctx, call: &mut Call, index: usize, relay: Relayed<'_, '_>) {
    let Some(r) = call.relays.get(index) else {
        return;
    };
    let (to_side, cseq) = (r.from.other(), r.client_cseq);
    let (_, ack) = send_ack(ctx, call.leg(to_side), cseq, relay);
    if let Some(r) = call.relays.get_mut(index) {
        r.ack = Some(ack);
    }
}

/// Sends the ACK for a 2xx in `leg` (RFC 3261 §13.2.2.4: a request of its
/// own in the dialog, CSeq number of the INVITE); its branch and bytes.
fn send_ack(ctx: &mut Ctx, leg: &Leg, cseq: u32, relay: Relayed<'_, '_>) -> (Branch, Bytes) {
    let parts = ctx.local(leg.flow.local).clone();
    let branch = ctx.ids.branch();
    let ack = leg_request(
        leg,
        &parts,
        &RequestParts {
            method: b"ACK",
            cseq,
            branch: &branch,
            max_forwards: 70,
            contact: false,
            relay,
            session: None,
        },
    );
    ctx.send(leg.flow, &ack);
    (branch, ack)
}

/// ACKs the callee's 2xx (RFC 3261 §13.2.2.4), carrying the caller's ACK
/// body when there is one (late offer: the answer comes in the ACK).
pub(crate) fn send_b_ack(
    ctx: &mut Ctx,
    call: &mut Call,
    caller_ack: Option<&Request<'_>>,
    now: Instant,
) {
    // The answered INVITE's CSeq (RFC 3261 §13.2.2.4): of several forks,
    // the one that answered need not be the last one sent.
    let Some(cseq) = call.answered_attempt().map(|a| a.cseq) else {
        return;
    };
    // Late offer (RFC 3261 §13.2.1): the callee offered in its 2xx, the
    // caller answers in the ACK.
    let body = match caller_ack {
        Some(ack) if !call.uas.offer_in_invite => {
            sdp_towards(ctx, call, Side::A, true, &ack.msg, now)
        }
        _ => Body::Same,
    };
    let relay = caller_ack.map_or(Relayed::Nothing, |r| body.relayed(&r.msg));
    let (branch, ack) = send_ack(ctx, &call.b, cseq, relay);
    // ACKed: the call is up. A retransmitted 2xx gets this ACK again: one
    // with a body (the answer to an offer in the 2xx) is kept; one without
    // is built again from the 2xx and this branch.
    let with_body =
        !matches!(body, Body::Dropped) && caller_ack.is_some_and(|r| !r.msg.body().is_empty());
    if let State::Answered(answer) | State::Confirmed { answer, .. } = call.state {
        let b_ack = if with_body {
            KeptAck::Whole(ack)
        } else {
            KeptAck::Branch(branch)
        };
        call.state = State::Confirmed { answer, b_ack };
    }
    if matches!(body, Body::Dropped) {
        // The caller's answer cannot be relayed and an ACK cannot be
        // refused (RFC 3261 §13.2.2.4): the call would have no media, so
        // it is ended on both legs.
        bye_both(ctx, call, now, EndReason::UnusableMedia);
    }
}
