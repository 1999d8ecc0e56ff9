//! Media anchoring inside the B2BUA: deciding whether a call's media is
//! relayed, passing the SDP bodies that cross legs through the call's
//! [`MediaSession`], the inactivity timer, and releasing ports.

use super::event::MediaTotals;
use std::time::Instant;

use super::call::{Call, Side};
use super::context::Ctx;
use crate::media::{Context, Leg, MediaError, MediaSession, Role, ShareKey, share_key};
use crate::policy::{MediaMode, Policy, TrunkId};
use crate::sip::{HeaderName, Message};

/// What a message's body is, as far as media goes (one Content-Type
/// lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body, or one that describes no media.
    Other,
    /// `application/sdp`: an RFC 3264 offer or answer.
    Sdp,
    /// A session description inside a body the SBC does not rewrite
    /// (`multipart/*` with an `application/sdp` part, e.g. SIP-I): on an
    /// anchored call it must not cross, or the other side's addresses would.
    NestedSdp,
}

/// The media type of a Content-Type value (`type/subtype`, before any
/// parameter), trimmed.
fn media_type(ct: &[u8]) -> &[u8] {
    let end = ct.iter().position(|b| *b == b';').unwrap_or(ct.len());
    crate::sip::scan::trim(&ct[..end])
}

pub(crate) fn body_kind(msg: &Message<'_>) -> BodyKind {
    let body = msg.body();
    let Some(ct) = msg
        .value(HeaderName::ContentType)
        .filter(|_| !body.is_empty())
    else {
        return BodyKind::Other;
    };
    let t = media_type(ct);
    if t.eq_ignore_ascii_case(b"application/sdp") {
        BodyKind::Sdp
    } else if t.len() > 10
        && t[..10].eq_ignore_ascii_case(b"multipart/")
        && body
            .windows(15)
            .any(|w| w.eq_ignore_ascii_case(b"application/sdp"))
    {
        BodyKind::NestedSdp
    } else {
        BodyKind::Other
    }
}

/// A body that is an SDP (RFC 3264 offer or answer).
pub(crate) fn is_sdp(msg: &Message<'_>) -> bool {
    body_kind(msg) == BodyKind::Sdp
}

/// A session description the SBC cannot rewrite (see [`BodyKind`]).
pub(crate) fn has_nested_sdp(msg: &Message<'_>) -> bool {
    body_kind(msg) == BodyKind::NestedSdp
}

/// A body that describes media: plain SDP or SDP nested in multipart.
pub(crate) fn carries_media(msg: &Message<'_>) -> bool {
    body_kind(msg) != BodyKind::Other
}

/// Media is relayed unless both trunks ask for bypass (and a relay exists).
pub(crate) fn anchored(policy: &Policy, ctx: &Ctx, a: TrunkId, b: TrunkId) -> bool {
    let bypass = |t: TrunkId| {
        policy
            .trunk(t)
            .is_some_and(|t| t.media == MediaMode::Bypass)
    };
    ctx.media.is_some() && !(bypass(a) && bypass(b))
}

fn leg(side: Side) -> Leg {
    match side {
        Side::A => Leg::A,
        Side::B => Leg::B,
    }
}

/// Passes an SDP body from `from` through the call's media session.
/// Returns the body to send on the other leg: rewritten when the call is
/// anchored, `None` to send it as it is.
pub(crate) fn cross(
    ctx: &mut Ctx,
    call: &mut Call,
    from: Side,
    role: Role,
    body: &[u8],
    now: Instant,
) -> Result<Option<Vec<u8>>, MediaError> {
    if !call.anchored {
        return Ok(None);
    }
    if call.phase() == super::call::Phase::Ended {
        // A late answer or retransmission after the ports were freed:
        // neither anchor it again nor let its addresses through.
        return Err(MediaError::CallEnded);
    }
    let (Some(ports), Some(media_policy)) = (ctx.media.as_mut(), ctx.media_policy.as_ref()) else {
        return Ok(None);
    };
    let policy = &call.policy;
    let (ta, tb) = (policy.trunk(call.a.trunk), policy.trunk(call.b.trunk));
    let restricted =
        ta.is_some_and(|t| t.codecs.is_some()) || tb.is_some_and(|t| t.codecs.is_some());
    let allow = |m: &crate::media::sdp::Media<'_>, f: &[u8]| {
        // Without a codec list nothing is filtered: skip the lookup.
        !restricted
            || match m.encoding(f) {
                Some(e) => ta.is_none_or(|t| t.allows(&e)) && tb.is_none_or(|t| t.allows(&e)),
                // An unnamed format survives only where no codec list applies.
                None => false,
            }
    };
    let peers = [call.a.flow.remote.ip(), call.b.flow.remote.ip()];
    if call.media.is_none() {
        ctx.stats
            .media_sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let session = call
        .media
        .get_or_insert_with(|| Box::new(MediaSession::new(now, peers)));
    let own = own_addresses(policy, media_policy);
    // A phone's (or a registering trunk's) own network is the address it
    // is reached at.
    let phone = |leg: &super::call::Leg| {
        policy
            .reached_by_binding(leg.trunk)
            .then(|| ipnet::IpNet::from(crate::net::canonical(leg.flow.remote.ip())))
    };
    let (pa, pb) = (phone(&call.a), phone(&call.b));
    let per_shard = u32::from(ports.pool.plan().per_shard);
    let mut mctx = Context {
        ports,
        call: call.me,
        advertise: peers.map(|p| media_policy.advertise_for(p)),
        dual_stack: media_policy.dual_stack(),
        peers,
        forbidden: &media_policy.forbidden,
        own: &own,
        home: [home(pa.as_ref(), ta), home(pb.as_ref(), tb)],
        public: [ta.is_some_and(|t| t.public), tb.is_some_and(|t| t.public)],
        strict: [
            ta.is_some_and(|t| t.strict_latch),
            tb.is_some_and(|t| t.strict_latch),
        ],
        share: [ta, tb].map(|t| media_share(t, per_shard)),
        allow: &allow,
    };
    let out = session.process(leg(from), role, body, &mut mctx);
    publish_ports(&ctx.stats, ports);
    out.map(Some)
}

/// The SBC's own addresses: its SIP sockets' and the media relay's.
fn own_addresses(
    policy: &crate::policy::Policy,
    media: &crate::policy::MediaPolicy,
) -> smallvec::SmallVec<[std::net::IpAddr; 4]> {
    let mut own: smallvec::SmallVec<[std::net::IpAddr; 4]> = policy
        .listeners
        .iter()
        .map(|l| crate::net::canonical(l.bind.ip()))
        .collect();
    own.extend([media.bind, media.advertise].map(crate::net::canonical));
    own.extend(
        [media.bind_other, media.advertise_other]
            .into_iter()
            .flatten()
            .map(crate::net::canonical),
    );
    own
}

/// A leg's home networks: where its phone registered from, else its
/// trunk's sources.
fn home<'a>(
    phone: Option<&'a ipnet::IpNet>,
    trunk: Option<&'a crate::policy::Trunk>,
) -> &'a [ipnet::IpNet] {
    match (phone, trunk) {
        (Some(p), _) => std::slice::from_ref(p),
        (None, t) => t.map_or(&[][..], |t| &t.sources[..]),
    }
}

/// A trunk's `media_share` of a shard's `per_shard` port pairs: its share
/// key and the most pairs facing it (none without a share). Each pair
/// facing the trunk has its twin facing the call's other side, so the
/// trunk's calls hold twice what faces it: half the share faces it.
fn media_share(trunk: Option<&crate::policy::Trunk>, per_shard: u32) -> (ShareKey, u32) {
    match trunk.and_then(|t| Some((t, t.media_share?))) {
        Some((t, pct)) => (
            share_key(&t.name),
            // At least one pair, so a small pool still takes a call.
            (per_shard * u32::from(pct) / 200).max(1),
        ),
        None => (0, u32::MAX),
    }
}

/// A re-offer (re-INVITE or UPDATE with SDP) is about to go through the
/// session: keep what it changes revocable until the answer.
pub(crate) fn stage_offer(call: &mut Call) {
    if let Some(session) = call.media.as_mut() {
        session.stage();
    }
}

/// The final answer to a re-offer: a 2xx keeps the new state, anything
/// else puts the session back as it was (RFC 3264 §8).
pub(crate) fn settle_offer(ctx: &mut Ctx, call: &mut Call, accepted: bool) {
    let (Some(session), Some(ports)) = (call.media.as_mut(), ctx.media.as_mut()) else {
        return;
    };
    if accepted {
        session.commit(ports);
    } else {
        session.rollback(ports);
    }
    publish_ports(&ctx.stats, ports);
}

/// The ports-in-use gauge (two per pair).
fn publish_ports(stats: &crate::stats::ShardStats, ports: &crate::media::MediaPorts) {
    stats.media_ports_in_use.store(
        i64::try_from(ports.pool.in_use() * 2).unwrap_or(i64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// A new callee is tried (failover): the previous one's side of the media
/// is forgotten and gets fresh ports.
pub(crate) fn reset_callee(ctx: &mut Ctx, call: &mut Call) {
    if let (Some(session), Some(ports)) = (call.media.as_mut(), ctx.media.as_mut()) {
        session.reset_leg(Leg::B, ports);
        publish_ports(&ctx.stats, ports);
    }
}

/// Frees the call's ports and says what its media did.
pub(crate) fn release(ctx: &mut Ctx, call: &mut Call) -> Option<MediaTotals> {
    let mut session = call.media.take()?;
    let ports = ctx.media.as_mut()?;
    session.release(ports);
    let stats = &ctx.stats;
    stats
        .media_sessions
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    publish_ports(stats, ports);
    let (a_pk, a_bytes, a_lost) = session.totals(Leg::A);
    let (b_pk, b_bytes, b_lost) = session.totals(Leg::B);
    stats.media_lost[0].fetch_add(a_lost, std::sync::atomic::Ordering::Relaxed);
    stats.media_lost[1].fetch_add(b_lost, std::sync::atomic::Ordering::Relaxed);
    Some(MediaTotals {
        packets: [a_pk, b_pk],
        bytes: [a_bytes, b_bytes],
        lost: [a_lost, b_lost],
    })
}

/// Starts the inactivity timer once the call is answered.
pub(crate) fn arm_timeout(ctx: &Ctx, call: &mut Call, now: Instant) {
    if let (Some(p), Some(session)) = (ctx.media_policy.as_ref(), call.media.as_mut()) {
        session.last_activity = now;
        call.timers
            .set(crate::transaction::TimerName::MediaTimeout, now + p.timeout);
    }
}

/// The inactivity timer fired: end the call if nothing flowed for the
/// whole timeout, otherwise look again when it could expire.
pub(crate) fn on_timeout(ctx: &mut Ctx, call: &mut Call, now: Instant) -> bool {
    let (Some(p), Some(session)) = (ctx.media_policy.as_ref(), call.media.as_ref()) else {
        return false;
    };
    if session.on_hold() {
        // Silence on hold is expected (RFC 3264 §8.4): look again later.
        call.timers
            .set(crate::transaction::TimerName::MediaTimeout, now + p.timeout);
        return false;
    }
    let idle_until = session.last_activity + p.timeout;
    if idle_until > now {
        call.timers
            .set(crate::transaction::TimerName::MediaTimeout, idle_until);
        return false;
    }
    ctx.stats
        .media_timeouts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    true
}

#[cfg(test)]
mod nested_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn multipart_with_sdp_is_seen() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: multipart/mixed;boundary=b1\r\nContent-Length: 52\r\n\r\n--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b1--\r\n";
        let msg = Message::parse(m).unwrap();
        assert!(
            has_nested_sdp(&msg),
            "{:?}",
            String::from_utf8_lossy(msg.body())
        );
        assert!(carries_media(&msg));
    }

    fn with_type(ct: &str) -> Vec<u8> {
        format!("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: {ct}\r\nContent-Length: 5\r\n\r\nv=0\r\n").into_bytes()
    }

    #[test]
    fn the_media_type_is_matched_whole() {
        for (ct, kind) in [
            ("application/sdp", BodyKind::Sdp),
            ("Application/SDP ; charset=utf-8", BodyKind::Sdp),
            ("application/sdpx", BodyKind::Other),
            ("application/sdp-foo;x=1", BodyKind::Other),
            ("text/plain", BodyKind::Other),
        ] {
            let m = with_type(ct);
            assert_eq!(body_kind(&Message::parse(&m).unwrap()), kind, "{ct}");
        }
    }
}
