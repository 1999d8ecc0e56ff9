//! The B side of a new call: INVITE attempts to trunks in order, their
//! responses, failover, and the final answer to the caller (RFC 3261 §16.7
//! response selection, applied across serial attempts).

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::build::{
    Reach, Relayed, RequestParts, ack_from_2xx, contact_uri, invite_sibling, leg_request, next_hop,
    uac_route_set,
};
use super::call::{Attempt, Call, KeptAck, Own, Phase, Side, State, Stray};
use super::call::{InviteRef, Part, Routing};
use super::context::Ctx;
use super::event::{CallAnswered, Event};
use super::failure::{local_failure, merge_failure, record_failure};
use super::teardown::{cancel_wave, fail_call, respond_to_caller, send_cancel};
use crate::media::Role;
use crate::refusal::{Ending, Refusal};
use crate::sip::{HeaderName, Response, escape_user};
use crate::stats::{Direction, ShardStats};
use crate::transaction::{ClientInvite, ClientNonInvite, ResponseAction, TimerName};

/// Starts the INVITE to the next target. Returns false when none is left.
pub(crate) fn next_attempt(ctx: &mut Ctx, call: &mut Call, now: Instant) -> bool {
    attempt_next(ctx, call, None, now)
}

/// [`next_attempt`]; `again` marks the same call sent again to the target
/// just tried (after a challenge, or a 422), with these header lines
/// (credentials) added: it takes no second call token.
fn attempt_next(ctx: &mut Ctx, call: &mut Call, again: Option<&[u8]>, now: Instant) -> bool {
    loop {
        let policy = Arc::clone(&call.policy);
        let Some(routing) = call.routing_mut() else {
            return false;
        };
        let Some(target) = routing.targets.get(routing.next_target).copied() else {
            return false;
        };
        routing.next_target += 1;
        let invite = next_invite(routing, again);
        if let Some(t) = policy.trunk(target.trunk).filter(|t| t.dynamic) {
            // A trunk that registers to the SBC: rung where it registered
            // from, like an extension (its account is kept under this key),
            // within its calls a second.
            if again.is_none() && !ctx.call_token(t, Direction::Outbound, now) {
                continue;
            }
            routing.extension = Some(crate::registrar::trunk_account_key(&t.name));
        }
        if policy.reached_by_binding(target.trunk) {
            let extension = routing.extension.clone();
            match fork_to_extension(ctx, call, target, extension, invite, now) {
                Ok(()) => return true,
                Err(Next::Target) => continue,
                Err(Next::Stop) => return false,
            }
        }
        let Some(trunk) = policy.trunk(target.trunk) else {
            continue;
        };
        // The previous attempt's trunk slot goes back; a trunk at its
        // max_calls or max_cps is skipped like one that cannot take the
        // call. The INVITE resent with credentials is the same call: no
        // second token.
        call.release_b_slot();
        if !call.take_b_slot(target.trunk, trunk) {
            continue;
        }
        if again.is_none() && !ctx.call_token(trunk, Direction::Outbound, now) {
            call.release_b_slot();
            continue;
        }
        call.b.trunk = target.trunk;
        call.b.flow = policy.trunk_flow_from(trunk, call.a.flow.local);
        from_leaving_host(ctx, call);
        match offer_towards(ctx, call, target.trunk, invite.body.clone(), now) {
            Ok(body) => {
                let invite = Invite { body, ..invite };
                // `<sip:NUMBER@ADDRESS>`: the To value, the Request-URI inside.
                let to = trunk_to(&call.number, trunk.address);
                let ruri = to.get(1..to.len().saturating_sub(1)).unwrap_or_default();
                let dest = call.b.flow;
                call.start_wave();
                start_attempt(ctx, call, target, (ruri, &to, dest), &invite, now);
                trunk.stats.attempt(Direction::Outbound);
                return true;
            }
            Err(Next::Target) => continue,
            Err(Next::Stop) => return false,
        }
    }
}

/// The INVITE to the next target: the caller's headers, those the SBC
/// adds for session timers (RFC 4028), and with `again` (the same call
/// sent again after a challenge) the credential lines.
fn next_invite(routing: &Routing, again: Option<&[u8]>) -> Invite {
    let headers = match (again, &routing.rewrite) {
        (None, None) => routing.invite_headers.clone(),
        (lines, rewrite) => {
            let lines = lines.unwrap_or_default();
            let mut h = crate::sip::buffer(routing.invite_headers.len() + lines.len() + 64);
            h.put_slice(&routing.invite_headers);
            if let Some(r) = rewrite {
                r.write(&mut crate::sip::Writer::new(&mut h));
            }
            h.put_slice(lines);
            crate::sip::seal(h)
        }
    };
    Invite {
        body: routing.invite_body.clone(),
        headers,
        max_forwards: routing.max_forwards,
    }
}

/// Rings every registered account of `extension` at once (RFC 3261
/// §16.6: parallel forking). This shard knows where they are when it owns
/// the extension's bindings; otherwise it asks the owner and the call
/// waits for the answer ([`on_located`]; see `lookup/`).
fn fork_to_extension(
    ctx: &mut Ctx,
    call: &mut Call,
    target: crate::policy::Target,
    extension: Option<Arc<str>>,
    invite: Invite,
    now: Instant,
) -> Result<(), Next> {
    let Some(extension) = extension else {
        return fork_to(ctx, call, (target, ""), Vec::new(), invite, now);
    };
    let owner = ctx.extension_owner(&extension);
    if owner == ctx.shard {
        let bindings =
            super::lookup::message::located(&call.policy, &ctx.location, &extension, now);
        return fork_to(ctx, call, (target, &extension), bindings, invite, now);
    }
    // The previous attempt's trunk slot goes back while the call waits.
    call.release_b_slot();
    call.start_wave();
    if let Some(routing) = call.routing_mut() {
        routing.awaiting = true;
    }
    ctx.to_shards.push_back((
        owner,
        super::lookup::message::ShardMessage::Lookup {
            from: ctx.shard,
            call: call.me,
            extension,
        },
    ));
    call.timers.set(
        TimerName::NoResponse,
        now + super::lookup::message::LOOKUP_TIMEOUT,
    );
    Ok(())
}

/// The owner of the extension said where its phones are (or the lookup
/// timed out: `bindings` empty). The waiting call rings them, or goes on
/// to its next target.
pub(crate) fn on_located(
    ctx: &mut Ctx,
    call: &mut Call,
    bindings: Vec<super::lookup::message::Located>,
    now: Instant,
) {
    let Some(routing) = call.routing_mut().filter(|r| r.awaiting) else {
        return;
    };
    routing.awaiting = false;
    let Some(target) = routing
        .next_target
        .checked_sub(1)
        .and_then(|i| routing.targets.get(i))
        .copied()
    else {
        return;
    };
    // The same INVITE a lookup on this shard would have sent.
    let invite = next_invite(routing, None);
    let extension = routing.extension.clone().unwrap_or_else(|| Arc::from(""));
    call.timers.cancel(TimerName::NoResponse);
    match fork_to(ctx, call, (target, &extension), bindings, invite, now) {
        Ok(()) => {}
        Err(Next::Target) if next_attempt(ctx, call, now) => {}
        Err(_) => fail_call(ctx, call, now),
    }
}

/// One INVITE per phone in `bindings`, to the address it registered
/// from, with its Contact as the Request-URI. None (nobody registered, or
/// nobody reachable: keepalives unanswered): 480, and the next target (if
/// any) is tried.
fn fork_to(
    ctx: &mut Ctx,
    call: &mut Call,
    (target, extension): (crate::policy::Target, &str),
    bindings: Vec<super::lookup::message::Located>,
    invite: Invite,
    now: Instant,
) -> Result<(), Next> {
    let policy = Arc::clone(&call.policy);
    let Some(first) = bindings.first() else {
        ctx.stats.refused(Refusal::NotRegistered);
        merge_failure(call, local_failure(Refusal::NotRegistered, true));
        return Err(Next::Target);
    };
    call.release_b_slot();
    // A trunk that registers counts like any trunk (and is skipped at its
    // max_calls); phones count as no trunk.
    if let Some(t) = policy.trunk(target.trunk) {
        if !call.take_b_slot(target.trunk, t) {
            return Err(Next::Target);
        }
        t.stats.attempt(Direction::Outbound);
    }
    // PHONES, or the trunk that registers.
    call.b.trunk = target.trunk;
    // The media peer until an answer says which phone it is.
    call.b.flow = first.flow;
    from_leaving_host(ctx, call);
    let body = offer_towards(ctx, call, target.trunk, invite.body.clone(), now)?;
    let invite = Invite { body, ..invite };
    // A phone is called by its extension at its Contact; a trunk that
    // registers (a gateway) is asked for the dialled number, at the
    // address of its Contact.
    let gateway = policy.trunk(target.trunk).is_some_and(|t| t.dynamic);
    let number = Arc::clone(&call.number);
    let user = if gateway { &*number } else { extension };
    let to_at = |host: &[u8]| {
        let mut to = BytesMut::with_capacity(64);
        to.put_slice(b"<sip:");
        escape_user(user.as_bytes(), &mut to);
        to.put_u8(b'@');
        to.put_slice(host);
        to.put_u8(b'>');
        to.freeze()
    };
    let to = to_at(&ctx.local(first.flow.local).host);
    // Phones of the other address family (a relay on both) get the same
    // offer with the relay's address of their family: its ports are the
    // same on both.
    let v4 =
        |b: &super::lookup::message::Located| crate::net::canonical(b.flow.remote.ip()).is_ipv4();
    let other_family = bindings.iter().find(|b| v4(b) != v4(first)).and_then(|b| {
        let media = policy.media.as_ref()?;
        let body = offer_for_family(
            &invite.body,
            media,
            first.flow.remote.ip(),
            b.flow.remote.ip(),
        )?;
        Some(Invite {
            body,
            headers: invite.headers.clone(),
            max_forwards: invite.max_forwards,
        })
    });
    call.start_wave();
    for b in &bindings {
        let ruri = if gateway {
            with_user(&b.contact, user)
        } else {
            b.contact.clone()
        };
        let (to, offer) = match &other_family {
            Some(other) if v4(b) != v4(first) => (to_at(&ctx.local(b.flow.local).host), other),
            _ => (to.clone(), &invite),
        };
        start_attempt(ctx, call, target, (&ruri, &to, b.flow), offer, now);
    }
    Ok(())
}

/// The SBC's offer `body`, made for a peer at `first`, for a peer at
/// `other` of the other family: the relay's advertised address of that
/// family in place of the first's. `None` when they are the same (one
/// family, or a body that does not name the relay: bypass).
fn offer_for_family(
    body: &Bytes,
    media: &crate::policy::MediaPolicy,
    first: std::net::IpAddr,
    other: std::net::IpAddr,
) -> Option<Bytes> {
    let (from, to) = (media.advertise_for(first), media.advertise_for(other));
    if from == to {
        return None;
    }
    let family = |ip: std::net::IpAddr| if ip.is_ipv4() { "IP4" } else { "IP6" };
    let text = std::str::from_utf8(body).ok()?;
    // Whole values only (o=, c= and a=rtcp lines end with the address).
    let old = format!("IN {} {from}\r\n", family(from));
    if !text.contains(&old) {
        return None;
    }
    Some(Bytes::from(
        text.replace(&old, &format!("IN {} {to}\r\n", family(to))),
    ))
}

/// `contact` with `user` as its user part (its scheme, host, port and
/// parameters kept); `contact` itself when it does not parse.
fn with_user(contact: &Bytes, user: &str) -> Bytes {
    let Ok(uri) = crate::sip::Uri::parse(contact) else {
        return contact.clone();
    };
    let mut out = BytesMut::with_capacity(contact.len() + user.len());
    out.put_slice(uri.scheme_raw);
    out.put_u8(b':');
    escape_user(user.as_bytes(), &mut out);
    out.put_u8(b'@');
    out.put_slice(uri.host);
    if let Some(port) = uri.port {
        out.put_u8(b':');
        out.put_slice(itoa::Buffer::new().format(port).as_bytes());
    }
    out.put_slice(uri.params);
    out.freeze()
}

/// `<sip:NUMBER@ADDRESS>`: the To value of an INVITE to a trunk, its
/// Request-URI inside the brackets.
fn trunk_to(number: &str, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut to = Vec::with_capacity(72 + number.len());
    to.put_slice(b"<sip:");
    escape_user(number.as_bytes(), &mut to);
    to.put_u8(b'@');
    crate::sip::put_socket_addr(&mut to, addr);
    to.put_u8(b'>');
    to
}

/// `<URI>`.
pub(crate) fn angle(uri: &[u8]) -> Bytes {
    let mut to = BytesMut::with_capacity(uri.len() + 2);
    to.put_u8(b'<');
    to.put_slice(uri);
    to.put_u8(b'>');
    to.freeze()
}

/// The caller's INVITE as each attempt repeats it.
#[derive(Debug)]
struct Invite {
    body: Bytes,
    headers: Bytes,
    max_forwards: u32,
}

/// What to do when an attempt cannot start.
#[derive(Debug)]
enum Next {
    /// Try the next target (no codec this trunk may carry).
    Target,
    /// Give up: the failure is recorded.
    Stop,
}

/// The caller's offer as it goes to `trunk`: relayed unless both trunks
/// bypass, rewritten (and its codecs filtered) for this trunk.
fn offer_towards(
    ctx: &mut Ctx,
    call: &mut Call,
    trunk: crate::policy::TrunkId,
    offer: Bytes,
    now: Instant,
) -> Result<Bytes, Next> {
    let policy = std::sync::Arc::clone(&call.policy);
    call.anchored = super::media::anchored(&policy, ctx, call.a.trunk, trunk);
    if !call.anchored {
        let _ = super::media::release(ctx, call);
    } else {
        super::media::reset_callee(ctx, call);
    }
    if !call.uas.offer_in_invite {
        return Ok(offer);
    }
    match super::media::cross(ctx, call, Side::A, Role::Offer, &offer, now) {
        Ok(Some(rewritten)) => Ok(Bytes::from(rewritten)),
        Ok(None) => Ok(offer),
        Err(e) => {
            let why = Refusal::Media(e);
            if why.may_fail_over() {
                merge_failure(call, local_failure(why, false));
                return Err(Next::Target);
            }
            ctx.stats.refused(why);
            merge_failure(call, local_failure(why, true));
            Err(Next::Stop)
        }
    }
}

/// Sends the INVITE of a new attempt (Request-URI, To, where it goes) in a
/// fresh B dialog (RFC 3261 §16.6: serial forking across trunks, parallel
/// across an extension's phones) and starts its transaction.
fn start_attempt(
    ctx: &mut Ctx,
    call: &mut Call,
    target: crate::policy::Target,
    (ruri, to, dest): (&[u8], &[u8], crate::net::Flow),
    invite: &Invite,
    now: Instant,
) {
    let local = ctx.local(dest.local).clone();
    let b = &mut call.b;
    b.set_remote(None, to, Some(ruri));
    let (ruri, to) = (b.bytes(Part::RemoteTarget), b.bytes(Part::RemoteParty));
    b.remote_cseq = None;
    b.route_set.clear();
    b.local_cseq += 1;
    let cseq = b.local_cseq;
    let branch = ctx.ids.branch();
    let request = leg_request(
        b,
        &local,
        &RequestParts {
            method: b"INVITE",
            cseq,
            branch: &branch,
            max_forwards: invite.max_forwards,
            contact: true,
            relay: Relayed::Rendered {
                headers: &invite.headers,
                body: &invite.body,
            },
            session: None,
        },
    );
    let timers = call.policy.timers;
    let tx = ClientInvite::start(now, &timers, dest, request, &mut ctx.out);
    call.attempts.push(Attempt {
        target,
        tx,
        branch,
        ruri,
        cseq,
        initial_to: to,
        cancel: None,
        cancel_wanted: false,
        authorized: false,
        remote_tag: SmallVec::new(),
    });
    let no_response = call.policy.call_timers.no_response;
    call.timers.set(TimerName::NoResponse, now + no_response);
}

/// A response to one of the call's INVITE attempts (or to its CANCEL).
pub(crate) fn on_attempt_response(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    (resp, origin): (&Response<'_>, crate::net::Flow),
    now: Instant,
) {
    let policy = std::sync::Arc::clone(&call.policy);
    // Once routing is over no wave is in progress.
    let current = call.in_wave(index);
    // The attempt's own listener (its Via): forks and failover may leave
    // from others.
    let own_local = call
        .attempts
        .get(index)
        .map_or(call.b.flow.local, |a| a.tx.dest().local);
    let local = ctx.local(own_local).clone();
    let Some(attempt) = call.attempts.get_mut(index) else {
        return;
    };
    if resp.cseq.method == crate::sip::Method::Cancel {
        if let Some(c) = attempt.cancel.as_mut() {
            c.on_response(now, &policy.timers, resp.code);
        }
        return;
    }
    if resp.cseq.seq != attempt.cseq {
        return;
    }
    let code = resp.code;
    let b = &call.b;
    let invite = InviteRef {
        ruri: &attempt.ruri,
        routes: &[],
        branch: &attempt.branch,
        cseq: attempt.cseq,
    };
    let action = attempt.tx.on_response(
        now,
        &policy.timers,
        code,
        || {
            // RFC 3261 §17.1.1.3: the ACK takes To from the response.
            let mut to = BytesMut::new();
            crate::sip::put_unfolded(&mut to, resp.msg.value(HeaderName::To).unwrap_or(b""));
            invite_sibling(b, &local, b"ACK", invite, &to)
        },
        &mut ctx.out,
    );
    if action == ResponseAction::Absorb {
        ShardStats::inc(&ctx.stats.retransmissions_in);
        return;
    }
    let live = current && !attempt.tx.is_abandoned();
    if live && code >= 200 {
        // Counted once per transaction: retransmissions were absorbed above.
        ctx.stats.final_received(code);
    }
    if !live {
        late_response(ctx, call, index, (resp, origin), now);
        return;
    }
    let dest = attempt.tx.dest();
    follow_fork(call, dest, resp, origin);
    on_live_response(ctx, call, index, resp, now);
}

/// A live response from the fork reached at `dest`: what the call keeps
/// watching, and which fork the B leg follows.
fn follow_fork(
    call: &mut Call,
    dest: crate::net::Flow,
    resp: &Response<'_>,
    origin: crate::net::Flow,
) {
    // The no-response timer watches the forks of the wave that have not
    // answered at all: one phone's answer leaves it running for another
    // that stays silent (RFC 3261 §16.7: each branch on its own).
    if !call.wave_silent() {
        call.timers.cancel(TimerName::NoResponse);
    }
    // The B leg's peer is the fork whose dialog it follows: one that
    // answers, or rings with a tag (a 100, or another fork's failure, does
    // not move it). Over a stream, the dialog keeps the connection the
    // answer came on: the SBC's later requests (ACK, BYE, re-INVITE) go
    // over it, whatever port the callee's Contact names (often one
    // nothing listens on, as behind a TLS front end).
    if resp.code < 300 && resp.to_tag().is_some() {
        call.b.flow = dest;
        if call.b.flow.transport.is_reliable() && origin.conn.is_some() {
            call.b.flow.conn = origin.conn;
        }
    }
}

/// A response (first of its kind, not a retransmission) to attempt
/// `index` of a call still routing, that attempt being of the current
/// wave: the call moves on by its code.
fn on_live_response(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    resp: &Response<'_>,
    now: Instant,
) {
    match resp.code {
        100 => {}
        101..=199 => {
            if call.attempts.get(index).is_some_and(|a| a.cancel_wanted) {
                send_cancel(ctx, call, index, now);
                return;
            }
            on_provisional(ctx, call, index, resp, now);
        }
        200..=299 => on_answer(ctx, call, index, resp, now),
        401 | 407 if answer_challenge(ctx, call, index, resp, now) => {}
        422 if !call.wave_pending(index) && raise_interval(ctx, call, resp, now) => {}
        600..=699 if call.wave_pending(index) => {
            // RFC 3261 §16.7 step 5: a 6xx ends the wave. The phones
            // still ringing are cancelled, and the call goes on as after
            // any final failure: the caller hears it now, unless the
            // route is set to fail over on that code.
            cancel_wave(ctx, call, (call.wave(), index), now);
            on_failure(ctx, call, resp, now);
        }
        _ if call.wave_pending(index) => {
            // Other phones still ring: the best failure waits for them
            // (RFC 3261 §16.7).
            record_failure(call, resp.code, resp);
        }
        _ => on_failure(ctx, call, resp, now),
    }
}

/// A trunk the SBC holds credentials for challenged attempt `index`: the
/// INVITE goes again to the same trunk, CSeq one up, with the answer
/// (RFC 3261 §22.2), once. False (the challenge is a failure like any
/// other) when there is nothing to answer with.
fn answer_challenge(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    resp: &Response<'_>,
    now: Instant,
) -> bool {
    let policy = Arc::clone(&call.policy);
    let Some(attempt) = call.attempts.get(index) else {
        return false;
    };
    let Some(registration) = policy
        .trunk(attempt.target.trunk)
        .and_then(|t| t.registration.as_ref())
    else {
        return false;
    };
    if attempt.authorized {
        return false;
    }
    let (asked, answer) = if resp.code == 401 {
        (HeaderName::WwwAuthenticate, "Authorization")
    } else {
        (HeaderName::ProxyAuthenticate, "Proxy-Authorization")
    };
    let realm = registration.realm.as_deref().map(str::as_bytes);
    let Some(challenge) = resp
        .msg
        .all(asked)
        .filter_map(|h| crate::sip::digest::Challenge::parse(h.value).ok())
        .find(|c| realm.is_none_or(|r| r == c.realm.as_slice()))
    else {
        return false;
    };
    let cnonce = ctx.ids.tag();
    let Some(value) = super::upstream::authorization(
        registration,
        &challenge,
        b"INVITE",
        &attempt.ruri,
        &cnonce,
        1,
    ) else {
        return false;
    };
    let mut line = Vec::with_capacity(value.len() + 24);
    line.extend_from_slice(answer.as_bytes());
    line.extend_from_slice(b": ");
    line.extend_from_slice(&value);
    line.extend_from_slice(b"\r\n");
    // The same target again.
    if let Some(routing) = call.routing_mut() {
        routing.next_target = routing.next_target.saturating_sub(1);
    }
    if !attempt_next(ctx, call, Some(&line), now) {
        return false;
    }
    if let Some(a) = call.attempts.last_mut() {
        a.authorized = true;
    }
    true
}

/// A callee answered 422 (RFC 4028 §6) to an interval the SBC wrote (the
/// caller asked for none, or another): as the B leg's UAC, the SBC sends
/// the INVITE again to the same target with the 422's Min-SE, once
/// (§7.3). False (the 422 is a failure like any other, relayed when the
/// caller asked for that interval itself) otherwise.
fn raise_interval(ctx: &mut Ctx, call: &mut Call, resp: &Response<'_>, now: Instant) -> bool {
    let Some(routing) = call.routing_mut() else {
        return false;
    };
    let Some(rewrite) = routing.rewrite.as_mut() else {
        return false;
    };
    if !rewrite.raise_for(&resp.msg, routing.session.as_mut()) {
        return false;
    }
    routing.next_target = routing.next_target.saturating_sub(1);
    attempt_next(ctx, call, Some(b""), now)
}

/// A provisional answer of the attempt in progress: the call is early.
fn on_provisional(ctx: &mut Ctx, call: &mut Call, index: usize, resp: &Response<'_>, now: Instant) {
    remember_peer(call, index, resp, false);
    if !call.timers.is_set(TimerName::MaxRinging) {
        let max = call.policy.call_timers.max_ringing;
        call.timers.set(TimerName::MaxRinging, now + max);
    }
    call.become_early(now);
    sdp_from_fork(call, index, resp);
    relay_to_caller(ctx, call, resp, now);
}

/// An SDP from attempt `index`'s callee: when the relay's callee side
/// last took SDP from another fork (another phone's early media), that
/// phone's latched media is dropped and refused from now on.
fn sdp_from_fork(call: &mut Call, index: usize, resp: &Response<'_>) {
    if resp.msg.body().is_empty() {
        return;
    }
    let fork = u16::try_from(index).unwrap_or(u16::MAX);
    let Some(routing) = call.routing_mut() else {
        return;
    };
    if routing
        .media_fork
        .replace(fork)
        .is_some_and(|was| was != fork)
        && let Some(session) = call.media.as_mut()
    {
        session.another_peer(crate::media::Leg::B);
    }
}

/// The callee answered: the call leaves routing (dropping its data), the
/// 2xx goes to the caller, and the other forks of the wave are cancelled.
fn on_answer(ctx: &mut Ctx, call: &mut Call, index: usize, resp: &Response<'_>, now: Instant) {
    if call.routing().is_none() {
        return;
    }
    let policy = std::sync::Arc::clone(&call.policy);
    sdp_from_fork(call, index, resp);
    let body = sdp_towards(ctx, call, Side::B, call.uas.offer_in_invite, &resp.msg, now);
    if matches!(body, Body::Dropped) {
        unanchorable_answer(ctx, call, index, resp, now);
        return;
    }
    remember_peer(call, index, resp, true);
    call.cancel_call_timers();
    if let Some(max) = policy.call_timers.max_duration {
        call.timers.set(TimerName::MaxDuration, now + max);
    }
    let answer = super::call::Answer {
        at: now,
        attempt: u16::try_from(index).unwrap_or(u16::MAX),
    };
    let wave = call.wave();
    // Leaving routing drops its data (targets, failures, the caller's
    // INVITE headers and body, and once the 2xx is built, the template).
    let Some(routing) = call.leave_routing(State::Answered(answer)) else {
        return;
    };
    // RFC 4028: the interval the 2xx settles holds from now.
    let (interval, insert) =
        super::session::settle(&resp.msg, routing.session, policy.call_timers.min_se);
    call.arm_session(interval, now);
    ctx.emit(Event::CallAnswered(CallAnswered {
        call: call.me,
        outbound_trunk: policy
            .trunk(call.b.trunk)
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        at: now,
        setup: now.saturating_duration_since(call.started),
    }));
    if let Some(t) = policy.trunk(call.b.trunk) {
        t.stats.answer(Direction::Outbound);
    }
    if let Some(t) = policy.trunk(call.a.trunk) {
        t.stats.answer(Direction::Inbound);
    }
    let session = interval.filter(|_| insert);
    let response = caller_response(ctx, call, &routing.template, (resp, &body), session);
    respond_to_caller(ctx, call, resp.code, response, now);
    super::media::arm_timeout(ctx, call, now);
    cancel_wave(ctx, call, (wave, index), now);
}

/// A final failure of the attempt in progress: the next target when the
/// route fails over on it (BRIEF §3), else the best failure to the caller.
fn on_failure(ctx: &mut Ctx, call: &mut Call, resp: &Response<'_>, now: Instant) {
    let policy = std::sync::Arc::clone(&call.policy);
    let code = resp.code;
    if let Some(t) = policy.trunk(call.b.trunk) {
        t.stats.fail(Direction::Outbound);
    }
    record_failure(call, code, resp);
    fail_over_on(ctx, call, code, now);
}

/// The attempt failed with `code`: the next target when the call's route
/// fails over on it, else the best failure goes to the caller.
fn fail_over_on(ctx: &mut Ctx, call: &mut Call, code: u16, now: Instant) {
    let policy = Arc::clone(&call.policy);
    let route_failover = policy
        .routes
        .get(call.routing_mut().map_or(usize::MAX, |r| r.route_index))
        .is_some_and(|r| r.failover.on_code(code));
    if route_failover && next_attempt(ctx, call, now) {
        ShardStats::inc(&ctx.stats.failovers);
    } else {
        fail_call(ctx, call, now);
    }
}

/// The callee answered with SDP the relay cannot carry (RFC 3261
/// §13.2.2.4): its 2xx is ACKed and hung up, and the caller hears 488 as if
/// the callee had refused (failing over where the route says so), so no
/// call is ever up without media.
fn unanchorable_answer(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    resp: &Response<'_>,
    now: Instant,
) {
    let policy = Arc::clone(&call.policy);
    // The B leg's flow is this attempt's: where its INVITE went, over the
    // connection its answer came on.
    let flow = call.b.flow;
    hang_up_stray_answer(ctx, call, index, resp, flow, now);
    // This answer is done with: its retransmissions are only ACKed again
    // (`late_response`), never taken for an answer.
    if let Some(attempt) = call.attempts.get_mut(index) {
        attempt.tx.abandon(now, &policy.timers);
    }
    ctx.stats.refused(Refusal::UnusableAnswer);
    merge_failure(call, local_failure(Refusal::UnusableAnswer, true));
    if call.wave_pending(index) {
        // Other phones of the wave still ring: the best failure waits for
        // them (RFC 3261 §16.7), as after any failed fork.
        return;
    }
    if let Some(t) = policy.trunk(call.b.trunk) {
        t.stats.fail(Direction::Outbound);
    }
    fail_over_on(ctx, call, 488, now);
}

/// The current attempt never answered (timer B, or the SBC's no-response
/// timer): count it as 408 and fail over when the route says so.
pub(crate) fn attempt_timed_out(ctx: &mut Ctx, call: &mut Call, now: Instant) {
    if !matches!(call.phase(), Phase::Routing | Phase::Early) {
        return;
    }
    if call.attempts.is_empty() {
        return;
    }
    // The forks that never answered are given up; those that ring go on.
    let timers = call.policy.timers;
    let wave = call.wave();
    for attempt in call.attempts.iter_mut().skip(wave) {
        if attempt.tx.is_pending() && !attempt.tx.heard_back() {
            attempt.tx.abandon(now, &timers);
        }
    }
    merge_failure(call, super::failure::ending_failure(Ending::TimedOut));
    call.timers.cancel(TimerName::NoResponse);
    if call.wave_pending(usize::MAX) {
        // Other phones of the wave still ring: their answers decide.
        return;
    }
    if let Some(t) = call.policy.trunk(call.b.trunk) {
        t.stats.fail(Direction::Outbound);
    }
    if call.routing_mut().is_some_and(|r| r.failover_on_timeout) && next_attempt(ctx, call, now) {
        ShardStats::inc(&ctx.stats.failovers);
    } else {
        fail_call(ctx, call, now);
    }
}

/// Attempts of the wave in progress that wait on one of `peers` (a
/// transport and an address) and never heard back: their INVITE never
/// left, its connection refused or lost before it was written (RFC 3261
/// §8.1.3.1: a transport error is treated as 503; a phone that cannot be
/// reached is 480). They are abandoned and count as that; once no other
/// attempt of the wave is pending, the call fails over where its route
/// says so, at once rather than at its no-response timer.
pub(crate) fn attempts_unsent(
    ctx: &mut Ctx,
    call: &mut Call,
    peers: &[(crate::net::Transport, std::net::SocketAddr)],
    now: Instant,
) {
    if !matches!(call.phase(), Phase::Routing | Phase::Early) {
        return;
    }
    let timers = call.policy.timers;
    let mut unsent = false;
    for index in call.wave()..call.attempts.len() {
        let Some(attempt) = call.attempts.get_mut(index) else {
            continue;
        };
        let dest = attempt.tx.dest();
        if !peers.contains(&(dest.transport, dest.remote))
            || attempt.tx.heard_back()
            || !attempt.tx.is_pending()
            || attempt.tx.is_abandoned()
        {
            continue;
        }
        attempt.tx.abandon(now, &timers);
        unsent = true;
    }
    if !unsent {
        return;
    }
    // A trunk (one that registers to the SBC too) could not be reached:
    // the 503 of trunks that are down, which fails over. One of an
    // extension's phones: unavailable, as one not registered is.
    let failure = if call.policy.trunk(call.b.trunk).is_some() {
        local_failure(Refusal::TrunksDown, true)
    } else {
        local_failure(Refusal::NotRegistered, true)
    };
    let code = failure.code;
    merge_failure(call, failure);
    if call.wave_pending(usize::MAX) {
        // Other phones of the wave still ring.
        return;
    }
    if let Some(t) = call.policy.trunk(call.b.trunk) {
        t.stats.fail(Direction::Outbound);
    }
    call.timers.cancel(TimerName::NoResponse);
    fail_over_on(ctx, call, code, now);
}

/// Relays a provisional response from the callee to the caller.
fn relay_to_caller(ctx: &mut Ctx, call: &mut Call, resp: &Response<'_>, now: Instant) {
    // The callee's SDP: the answer to the caller's offer, or (late offer,
    // RFC 3261 §13.2.1) an offer the caller answers in its ACK.
    let answer = call.uas.offer_in_invite;
    let body = sdp_towards(ctx, call, Side::B, answer, &resp.msg, now);
    let Some(routing) = call.routing() else {
        return;
    };
    let response = caller_response(ctx, call, &routing.template, (resp, &body), None);
    respond_to_caller(ctx, call, resp.code, response, now);
}

/// The caller's copy of a response from the callee, with `body` (from
/// [`sdp_towards`]), naming the caller the refresher of `session` seconds
/// when the callee took no part in session timers
/// ([`super::session::settle`]).
fn caller_response(
    ctx: &Ctx,
    call: &Call,
    template: &super::template::Template,
    (resp, body): (&Response<'_>, &Body),
    session: Option<u32>,
) -> Bytes {
    let local = ctx.local(call.a.flow.local);
    let mut buf = crate::sip::buffer(resp.msg.as_bytes().len() + template.len() + 64);
    let mut w = template.start(&mut buf, resp.code, resp.reason, Some(call.a.local_tag()));
    w.header(HeaderName::Contact, &[&local.contact]);
    if let Some(interval) = session {
        super::session::write_refresher(&mut w, interval);
    }
    body.write(&mut w, &resp.msg);
    crate::sip::seal(buf)
}

/// What becomes of a message body crossing legs.
#[derive(Debug)]
pub(crate) enum Body {
    /// Not SDP, or not anchored: as it is.
    Same,
    Rewritten(Vec<u8>),
    /// SDP that could not be anchored (malformed): not passed on, so no
    /// address crosses.
    Dropped,
}

impl Body {
    /// Copies `msg`'s end-to-end headers and this body into a message
    /// being written (without the body's headers when it is dropped).
    pub(crate) fn write(&self, w: &mut crate::sip::Writer<'_>, msg: &crate::sip::Message<'_>) {
        super::build::copy_end_to_end_with(w, msg, !matches!(self, Body::Dropped));
        w.body(match self {
            Body::Same => msg.body(),
            Body::Rewritten(b) => b,
            Body::Dropped => b"",
        });
    }

    pub(crate) fn relayed<'m, 'a>(&'m self, msg: &'m crate::sip::Message<'a>) -> Relayed<'m, 'a> {
        match self {
            Body::Same => Relayed::Message(msg),
            Body::Rewritten(b) => Relayed::MessageBody(msg, Some(b)),
            Body::Dropped => Relayed::MessageBody(msg, None),
        }
    }
}

/// Passes the SDP of a message from `from` through the media session:
/// `answer` says whether it answers an offer already made.
pub(crate) fn sdp_towards(
    ctx: &mut Ctx,
    call: &mut Call,
    from: Side,
    answer: bool,
    msg: &crate::sip::Message<'_>,
    now: Instant,
) -> Body {
    if !call.anchored {
        return Body::Same;
    }
    match super::media::body_kind(msg) {
        super::media::BodyKind::Sdp => {}
        super::media::BodyKind::NestedSdp => {
            // Cannot be rewritten: dropped rather than leak addresses.
            return Body::Dropped;
        }
        super::media::BodyKind::Other => return Body::Same,
    }
    let role = if answer { Role::Answer } else { Role::Offer };
    match super::media::cross(ctx, call, from, role, msg.body(), now) {
        Ok(Some(b)) => Body::Rewritten(b),
        Ok(None) => Body::Same,
        // Not relayed; what follows (488, or the call ended) says why.
        Err(_) => Body::Dropped,
    }
}

/// Takes the callee's tag, target and route set from a response that
/// creates or confirms the B dialog (RFC 3261 §12.1.2).
fn remember_peer(call: &mut Call, index: usize, resp: &Response<'_>, confirmed: bool) {
    let Some(tag) = resp.to_tag() else {
        return;
    };
    if let Some(a) = call.attempts.get_mut(index)
        && a.remote_tag[..] != *tag
    {
        a.remote_tag = SmallVec::from_slice(tag);
    }
    let attempt_ruri = call.attempts.get(index).map(|a| &a.ruri);
    let b = &mut call.b;
    let fresh = b.remote_tag() != Some(tag);
    if fresh {
        // Another early dialog (fork): its CSeq space starts afresh.
        b.remote_cseq = None;
    }
    let to = resp.msg.value(HeaderName::To).unwrap_or(b"");
    let unfolded;
    let to = if memchr::memchr2(b'\r', b'\n', to).is_some() {
        let mut v = Vec::with_capacity(to.len());
        crate::sip::put_unfolded(&mut v, to);
        unfolded = v;
        &unfolded[..]
    } else {
        to
    };
    // A SIPS Contact or route over a transport that is not TLS is not
    // taken (requests to it would need TLS on every hop, RFC 3261
    // §26.2.2): the dialog's requests go to the attempt's Request-URI (or
    // the target this early dialog already had), with no route set, on
    // the transport the callee answered over.
    let insecure = super::build::insecure_sips(b.flow.transport, &resp.msg, true);
    let target = match (insecure, fresh) {
        (false, _) => contact_uri(&resp.msg),
        (true, true) => attempt_ruri.map(|r| &r[..]),
        (true, false) => None,
    };
    b.set_remote(Some(tag), to, target);
    let routes = uac_route_set(&resp.msg);
    if insecure {
        if fresh {
            b.route_set.clear();
        }
    } else if confirmed || fresh || !routes.is_empty() {
        b.route_set = routes;
    }
    let fallback = call.policy.fixed_address(b.trunk).unwrap_or(b.flow.remote);
    let reach = Reach {
        policy: &call.policy,
        trunk: b.trunk,
    };
    let hop = next_hop(b.remote_target(), &b.route_set, fallback, reach);
    b.flow = call.policy.retarget(b.flow, hop);
}

/// A response to an attempt the call no longer wants: clean up the callee
/// side (CANCEL what rings, ACK and BYE what answered).
fn late_response(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    (resp, origin): (&Response<'_>, crate::net::Flow),
    now: Instant,
) {
    match resp.code {
        100..=199 if call.attempts.get(index).is_some_and(|a| a.tx.is_pending()) => {
            send_cancel(ctx, call, index, now);
        }
        200..=299 => {
            let same_dialog = resp.to_tag().is_some() && resp.to_tag() == call.b.remote_tag();
            let answered = call.answer().map(|a| usize::from(a.attempt));
            if same_dialog && answered == Some(index) {
                // A retransmitted 2xx of the answered attempt: ACK again if
                // the caller already ACKed (or the call is over), otherwise
                // wait for that ACK (RFC 3261 §13.2.2.4).
                let branch = match &call.state {
                    State::Confirmed {
                        b_ack: KeptAck::Whole(ack),
                        ..
                    } => return ctx.send(call.b.flow, ack),
                    State::Confirmed {
                        b_ack: KeptAck::Branch(b),
                        ..
                    } => *b,
                    State::Ended { .. } => ctx.ids.branch(),
                    _ => return,
                };
                let local = ctx.local(call.b.flow.local).clone();
                let reach = Reach {
                    policy: &call.policy,
                    trunk: call.b.trunk,
                };
                if let Some((dest, ack)) = ack_from_2xx(resp, &local, &branch, call.b.flow, reach) {
                    ctx.send(dest, &ack);
                }
                return;
            }
            // Hung up where this attempt's INVITE went, over the
            // connection its answer came on (the B leg's flow is the
            // winner's).
            let Some(mut flow) = call.attempts.get(index).map(|a| a.tx.dest()) else {
                return;
            };
            if flow.transport.is_reliable() && origin.conn.is_some() {
                flow.conn = origin.conn;
            }
            hang_up_stray_answer(ctx, call, index, resp, flow, now);
        }
        _ => {}
    }
}

/// RFC 3261 §13.2.2.4: a 2xx nobody wants is ACKed and then BYEd, towards
/// the answering peer on `flow` (where attempt `index`'s INVITE went, over
/// the connection the answer came on).
fn hang_up_stray_answer(
    ctx: &mut Ctx,
    call: &mut Call,
    index: usize,
    resp: &Response<'_>,
    flow: crate::net::Flow,
    now: Instant,
) {
    let Some(tag) = resp.to_tag() else {
        return;
    };
    if let Some(stray) = call
        .extra
        .as_deref()
        .and_then(|e| e.strays.iter().find(|s| s.tag == tag))
    {
        // A retransmission of a 2xx already hung up: ACK it again, once.
        ctx.send(stray.dest, &stray.ack);
        return;
    }
    let local = ctx.local(flow.local).clone();
    let Some(attempt) = call.attempts.get(index) else {
        return;
    };
    let mut to = BytesMut::new();
    crate::sip::put_unfolded(&mut to, resp.msg.value(HeaderName::To).unwrap_or(b""));
    let to = to.freeze();
    // A SIPS target or route this hop cannot reach securely is not
    // followed (RFC 3261 §26.2.2): the attempt's Request-URI, no routes.
    let insecure = super::build::insecure_sips(flow.transport, &resp.msg, true);
    let target = contact_uri(&resp.msg)
        .filter(|_| !insecure)
        .map_or_else(|| attempt.ruri.clone(), Bytes::copy_from_slice);
    let routes = if insecure {
        Vec::new()
    } else {
        uac_route_set(&resp.msg)
    };
    let fallback = call
        .policy
        .fixed_address(attempt.target.trunk)
        .unwrap_or(flow.remote);
    let reach = Reach {
        policy: &call.policy,
        trunk: attempt.target.trunk,
    };
    let dest = flow.towards(next_hop(&target, &routes, fallback, reach));
    let ack_branch = ctx.ids.branch();
    let ack_ref = InviteRef {
        ruri: &target,
        routes: &routes,
        branch: &ack_branch,
        cseq: attempt.cseq,
    };
    let ack = invite_sibling(&call.b, &local, b"ACK", ack_ref, &to);
    ctx.send(dest, &ack);
    let bye_branch = ctx.ids.branch();
    let bye_ref = InviteRef {
        ruri: &target,
        routes: &routes,
        branch: &bye_branch,
        cseq: attempt.cseq + 1,
    };
    let bye = invite_sibling(&call.b, &local, b"BYE", bye_ref, &to);
    let tx = ClientNonInvite::start(now, &call.policy.timers, dest, bye, &mut ctx.out);
    let extra = call.extra_mut();
    extra.own.push(Own {
        side: Side::B,
        branch: bye_branch,
        tx,
    });
    extra.strays.push(Stray {
        tag: Bytes::copy_from_slice(tag),
        ack,
        dest,
    });
}

/// The B leg's From names the SBC on the listener the leg leaves from
/// (which may not be the one the call came in on: another transport or
/// address family), so the callee never sees the caller's side.
fn from_leaving_host(ctx: &Ctx, call: &mut Call) {
    let host = &ctx.local(call.b.flow.local).host;
    if let Some(party) = with_host(call.b.local_party(), host) {
        call.b.set_local_party(&party);
    }
}

/// `<sip:user@HOST>;tag=...` with `host` in place of HOST; `None` when it
/// is already there (or the party is not of that form). Found from the
/// end: the caller's display name (copied as sent) may hold anything.
fn with_host(party: &[u8], host: &[u8]) -> Option<Bytes> {
    let end = party.windows(6).rposition(|w| w == b">;tag=")?;
    let start = party.get(..end)?.windows(5).rposition(|w| w == b"<sip:")? + 5;
    let at = start + party.get(start..end)?.iter().position(|b| *b == b'@')? + 1;
    if party.get(at..end)? == host {
        return None;
    }
    let mut out = BytesMut::with_capacity(party.len() + host.len());
    out.put_slice(party.get(..at)?);
    out.put_slice(host);
    out.put_slice(party.get(end..)?);
    Some(out.freeze())
}

#[cfg(test)]
mod from_host_tests {
    use super::with_host;

    #[test]
    fn the_from_host_is_replaced_only_when_it_differs() {
        let party = b"\"Alice\" <sip:100@[::1]:5060>;tag=abc";
        assert_eq!(
            with_host(party, b"192.0.2.1:5060").as_deref(),
            Some(&b"\"Alice\" <sip:100@192.0.2.1:5060>;tag=abc"[..])
        );
        assert_eq!(with_host(party, b"[::1]:5060"), None);
        assert_eq!(with_host(b"garbage", b"192.0.2.1"), None);
        // A display name that looks like a URI is left alone.
        let tricky = b"\"<sip:x@evil>;tag=\" <sip:100@[::1]:5060>;tag=abc";
        assert_eq!(
            with_host(tricky, b"192.0.2.1:5060").as_deref(),
            Some(&b"\"<sip:x@evil>;tag=\" <sip:100@192.0.2.1:5060>;tag=abc"[..])
        );
    }
}
