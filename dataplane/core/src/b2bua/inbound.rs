//! Requests arriving at the SBC: new calls, CANCEL, ACK, and the dispatch of
//! in-dialog requests to the leg they belong to.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::build::{
    ALLOW, Reach, contact_uri, next_hop, render_invite_headers, response_dest_for,
    response_dest_on, unsupported_options,
};
use super::call::{Call, DialogText, Leg, Part, Phase, Routing, Side, State, Uas};
use super::context::Engine;
use super::event::{CallStarted, EndReason, Event};
use super::ids::{CALL_ID_LEN, CallRef, IdMinter, TAG_LEN};
use super::table::CallTable;
use super::template::Template;
use super::tomb::TombAnswer;
use crate::net::Flow;
use crate::policy::{Policy, Target, TrunkId};
use crate::refusal::Refusal;
use crate::sip::{CommaList, HeaderName, Method, Request, Scheme, Uri};
use crate::stats::{Direction, Discard, ShardStats};
use crate::transaction::{ServerInvite, TimerTable};

/// RFC 3261 §17.2.1: the 100 Trying is due when the TU has not answered
/// within 200 ms.
pub(crate) const TRYING_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// What admission decided for a new call.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub cref: CallRef,
    number: String,
    targets: SmallVec<[Target; 4]>,
    route_index: usize,
    failover_on_timeout: bool,
    /// A route to an extension: its registered accounts ring.
    extension: Option<Arc<str>>,
    /// The caller's number on the B leg (a phone's extension number),
    /// instead of the user of its From.
    pub caller_id: Option<Arc<str>>,
    /// Session timers of the INVITE (RFC 4028 §8.1).
    session: super::session::Plan,
}

/// The caller's dialog, as the INVITE creates it (RFC 3261 §12.1.1): the
/// SBC is its UAS, with a tag minted here. Its identifiers and header
/// values are copied into one buffer (one allocation for the leg).
fn a_leg(req: &Request<'_>, origin: Flow, reach: Reach<'_>, ids: &mut IdMinter) -> Leg {
    let to = req.msg.value(HeaderName::To).unwrap_or(b"");
    let from = req.msg.value(HeaderName::From).unwrap_or(b"");
    // RFC 3261 §8.1.1.8: the INVITE's Contact is where requests in the
    // dialog go. Without a usable one, the From URI, and failing that the
    // address the INVITE came from.
    let target =
        contact_uri(&req.msg).or_else(|| Uri::parse(req.from.uri).is_ok().then_some(req.from.uri));
    let size = req.call_id.len()
        + 2 * TAG_LEN
        + to.len()
        + b";tag=".len()
        + from.len()
        + req.from_tag().len()
        + target.map_or(64, <[u8]>::len);
    let mut tag = [0u8; TAG_LEN];
    ids.put_tag(&mut &mut tag[..]);
    let text = DialogText::write(
        size,
        true,
        [
            &mut |b| b.put_slice(req.call_id),
            &mut |b| b.put_slice(&tag),
            &mut |b| b.put_slice(req.from_tag()),
            &mut |b| {
                crate::sip::put_unfolded(b, to);
                b.put_slice(b";tag=");
                b.put_slice(&tag);
            },
            &mut |b| crate::sip::put_unfolded(b, from),
            &mut |b| match target {
                Some(t) => b.put_slice(t),
                None => {
                    b.put_slice(b"sip:");
                    crate::sip::put_socket_addr(b, origin.remote);
                }
            },
        ],
    );
    // RFC 3261 §12.1.1: the UAS route set is the Record-Route list in order.
    let route_set: Vec<Bytes> = req
        .msg
        .all(HeaderName::RecordRoute)
        .flat_map(|h| CommaList::new(h.value))
        .map(Bytes::copy_from_slice)
        .collect();
    let peer = next_hop(
        text.get(Part::RemoteTarget),
        &route_set,
        origin.remote,
        reach,
    );
    // In-dialog requests to the caller go by the transport and socket its
    // INVITE came on.
    let mut leg = Leg::new(text, origin.towards(peer), reach.trunk);
    leg.route_set = route_set;
    leg.remote_cseq = Some(req.cseq.seq);
    leg
}

/// The callee's dialog before any attempt: the SBC is its UAC, with its
/// own Call-ID and tag, and a From that keeps the caller's display name
/// and user on the SBC's host (`host`), or the number `caller_id` when
/// one is given. One buffer for the three.
fn b_leg(
    req: &Request<'_>,
    origin: Flow,
    trunk: TrunkId,
    (cref, ids): (CallRef, &mut IdMinter),
    host: &[u8],
    caller_id: Option<&str>,
) -> Leg {
    let display = req.from.display;
    let user = caller_id.map(str::as_bytes).unwrap_or_else(|| {
        req.from
            .parsed_uri()
            .ok()
            .and_then(|u| u.user)
            .filter(|u| !u.is_empty())
            .unwrap_or(b"anonymous")
    });
    let size = CALL_ID_LEN
        + 2 * TAG_LEN
        + display.map_or(0, |d| d.len() + 1)
        + b"<sip:@>;tag=".len()
        + user.len()
        + host.len();
    let mut tag = [0u8; TAG_LEN];
    ids.put_tag(&mut &mut tag[..]);
    let text = DialogText::write(
        size,
        false,
        [
            &mut |b| ids.put_call_id(cref, b),
            &mut |b| b.put_slice(&tag),
            &mut |_| {},
            &mut |b| {
                if let Some(d) = display {
                    crate::sip::put_unfolded(b, d);
                    b.put_u8(b' ');
                }
                b.put_slice(b"<sip:");
                b.put_slice(user);
                b.put_u8(b'@');
                b.put_slice(host);
                b.put_slice(b">;tag=");
                b.put_slice(&tag);
            },
            &mut |_| {},
            &mut |_| {},
        ],
    );
    // Set by each attempt (the trunk's address); UDP, from the socket the
    // call came in on.
    Leg::new(text, Flow::udp(origin.remote, origin.local), trunk)
}

impl Engine {
    pub(crate) fn on_request(&mut self, now: Instant, req: Request<'_>, origin: Flow) {
        match req.method {
            // ACKs never get a response (RFC 3261 §17.1.1.3).
            Method::Ack => return self.on_ack(now, &req, origin),
            Method::Cancel => return self.on_cancel(now, &req, origin),
            _ => {}
        }
        // A SIPS Request-URI asks for TLS on every hop (RFC 3261 §26.2.2,
        // RFC 5630): one that came over anything else is refused, whoever
        // sent it, in a dialog or not. (The B leg is a request of the
        // SBC's own.)
        if req.uri.scheme == Scheme::Sips && !origin.transport.is_secure() {
            self.ctx.refuse(&req, origin, Refusal::InsecureSips);
            return;
        }
        // Nor does the SBC take a SIPS Contact (or next-hop Record-Route)
        // it would have to reach over TLS from a peer that did not use it.
        if super::dialog::is_target_refresh(req.method)
            && super::build::insecure_sips(origin.transport, &req.msg, req.to_tag().is_none())
        {
            self.ctx.refuse(&req, origin, Refusal::InsecureSipsTarget);
            return;
        }
        // A request that sets the caller's route set must name routes the
        // SBC can write into its own requests (RFC 3261 §20.30).
        if req.to_tag().is_none()
            && super::dialog::is_target_refresh(req.method)
            && !super::build::routes_usable(&req.msg)
        {
            let bad = crate::sip::RequestError::Invalid("Record-Route");
            self.ctx.refuse(&req, origin, Refusal::Malformed(bad));
            return;
        }
        if req.to_tag().is_some() && req.method != Method::Other {
            return self.on_in_dialog(now, &req, origin);
        }
        // The registrar takes REGISTERs from anywhere: phones are no trunk.
        if req.method == Method::Register && self.ctx.policy.accounts.settings.is_some() {
            if !self.outside_retransmission(&req) {
                self.on_register(now, &req, origin);
            }
            return;
        }
        // BRIEF §8 default deny: a source that is no trunk gets 403.
        let user = req.uri.user;
        let policy = &self.ctx.policy;
        let trunk = policy
            .trunk_for_request(&origin, user)
            .filter(|t| policy.accepts_over(*t, origin.transport));
        let Some(trunk) = trunk else {
            // Unless it is a phone of one of the registrar's accounts: its
            // credentials are asked for (an unknown method gets the 403).
            if self.ctx.policy.accounts.settings.is_some() && req.method != Method::Other {
                return match req.method {
                    Method::Invite => self.on_phone_invite(now, &req, origin),
                    _ => self.on_phone_request(now, &req, origin),
                };
            }
            self.ctx.refuse(&req, origin, Refusal::UnknownSource);
            return;
        };
        // RFC 3261 §17.2.3: a retransmitted OPTIONS or REGISTER gets the
        // answer its server transaction gave.
        if matches!(req.method, Method::Options | Method::Register)
            && self.outside_retransmission(&req)
        {
            return;
        }
        if self.refused_outright(&req, origin) {
            return;
        }
        self.out_of_dialog(now, &req, origin, trunk);
    }

    /// Refuses what no trunk may send (RFC 3261 §8.2.1-§8.2.2): an unknown
    /// method, a scheme we cannot route, options we do not support. True
    /// when it did.
    pub(crate) fn refused_outright(&mut self, req: &Request<'_>, origin: Flow) -> bool {
        if req.method == Method::Other {
            // RFC 3261 §8.2.1: unknown method.
            self.ctx.refuse(req, origin, Refusal::NotImplemented);
            return true;
        }
        // RFC 3261 §8.2.2.1 / §21.4.14: schemes we cannot route.
        if !matches!(req.uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) {
            self.ctx.refuse(req, origin, Refusal::UnsupportedScheme);
            return true;
        }
        // RFC 3261 §8.2.2.3: option tags we do not support -> 420.
        let unsupported = unsupported_options(&req.msg);
        if !unsupported.is_empty() {
            let mut list = BytesMut::new();
            for (i, t) in unsupported.iter().enumerate() {
                if i > 0 {
                    list.put_slice(b", ");
                }
                list.put_slice(t);
            }
            self.ctx.refuse_with(
                req,
                origin,
                Refusal::BadExtension,
                &[(HeaderName::Unsupported, &list)],
            );
            return true;
        }
        false
    }

    /// A request outside any dialog from trunk `trunk`.
    pub(crate) fn out_of_dialog(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        trunk: TrunkId,
    ) {
        match req.method {
            Method::Invite => self.on_initial_invite(now, req, origin, trunk),
            Method::Options => {
                // The SBC itself answers out-of-dialog OPTIONS (keepalives,
                // health probes), whatever the Max-Forwards (RFC 4475 §3.3.11).
                self.answer_outside(
                    req,
                    origin,
                    now,
                    (200, b"OK"),
                    &[
                        (HeaderName::Allow, ALLOW),
                        (HeaderName::Accept, b"application/sdp"),
                        (HeaderName::Supported, b"timer"),
                    ],
                );
            }
            // No registrar yet: a trunk's REGISTER is not allowed here.
            Method::Register => {
                let why = Refusal::MethodNotAllowed;
                self.ctx.stats.refused(why);
                let reason = why.reason();
                self.answer_outside(
                    req,
                    origin,
                    now,
                    (why.status(), reason.as_bytes()),
                    why.headers(),
                );
            }
            // RFC 3261 §15.1.2: BYE outside a dialog.
            Method::Bye => self.ctx.refuse(req, origin, Refusal::NoDialog),
            _ => self.ctx.refuse(req, origin, Refusal::MethodNotAllowed),
        }
    }

    fn on_initial_invite(&mut self, now: Instant, req: &Request<'_>, origin: Flow, trunk: TrunkId) {
        if self.invite_seen(now, req, origin) {
            return;
        }
        match self.admit(req, trunk) {
            Ok(admitted) => self.start_call(now, req, origin, trunk, admitted),
            Err(why) => self.ctx.refuse(req, origin, why),
        }
    }

    /// An INVITE whose Call-ID and From tag are a call's: its
    /// retransmission, or a merged request. True when it was either.
    pub(crate) fn invite_seen(&mut self, now: Instant, req: &Request<'_>, origin: Flow) -> bool {
        let Some(r) = self.calls.find_a(req.call_id, req.from_tag()) else {
            return false;
        };
        if let Some(call) = self.calls.get_mut(r)
            && call.uas.matches(req)
        {
            // RFC 3261 §17.2.1: retransmission -> last response again
            // (or the 100 Trying not sent yet).
            ShardStats::inc(&self.ctx.stats.retransmissions_in);
            if call.uas.tx.has_responded() {
                call.uas.tx.on_retransmission(&mut self.ctx.out);
            } else {
                super::timers::send_trying(&mut self.ctx, call, now);
            }
            self.after(r);
            return true;
        }
        // §8.2.2.2: a merged request (same Call-ID, From tag and CSeq
        // as an INVITE still in progress, another branch) gets 482. A
        // new INVITE reusing the Call-ID of a call that is over (e.g. a
        // retry after 422 or 491, §8.1.3.5) is a new call.
        let over = self.calls.get(r).is_none_or(|c| c.phase() == Phase::Ended);
        if !over {
            self.ctx.refuse(req, origin, Refusal::Merged);
        }
        !over
    }

    /// Whether a new call may start, and where it goes: the refusal
    /// otherwise. A slot in the call table is reserved last.
    pub(crate) fn admit(&mut self, req: &Request<'_>, trunk: TrunkId) -> Result<Admitted, Refusal> {
        self.screen(req)?;
        let policy = Arc::clone(&self.ctx.policy);
        // Nothing to dial (e.g. sip:host): no route can match.
        let number = number_dialled(req, policy.trunk(trunk));
        if number.is_empty() {
            return Err(Refusal::NoRoute);
        }
        let session = super::session::plan_request(&req.msg, &policy.call_timers)?;
        // A phone dialling an extension's number calls it (no route).
        if trunk == crate::policy::PHONES && policy.accounts.is_extension(&number) {
            let cref = self.reserve_call(&policy)?;
            return Ok(Admitted {
                cref,
                extension: Some(Arc::from(number.as_str())),
                number,
                targets: smallvec::smallvec![Target {
                    trunk: crate::policy::PHONES,
                    priority: 1,
                    weight: 1,
                }],
                route_index: usize::MAX,
                failover_on_timeout: false,
                caller_id: None,
                session,
            });
        }
        let (route_index, route) = policy
            .route(trunk, &number)
            .and_then(|r| {
                policy
                    .routes
                    .iter()
                    .position(|x| std::ptr::eq(x, r))
                    .map(|i| (i, r))
            })
            .ok_or(Refusal::NoRoute)?;
        let targets = self.route_targets(&policy, route)?;
        self.admission(&policy, trunk)?;
        let cref = self.reserve_call(&policy).inspect_err(|_| {
            if let Some(t) = policy.trunk(trunk) {
                t.stats.close(Direction::Inbound);
            }
        })?;
        Ok(Admitted {
            cref,
            number,
            targets,
            route_index,
            failover_on_timeout: route.failover.on_timeout,
            extension: route.extension.clone(),
            caller_id: None,
            session,
        })
    }

    /// The checks a new call passes before it is routed.
    fn screen(&mut self, req: &Request<'_>) -> Result<(), Refusal> {
        // Overload control: shed the share the shard cannot carry, first.
        if self.ctx.admit < 1000 && self.ctx.ids.random() % 1000 >= u64::from(self.ctx.admit) {
            return Err(Refusal::Overloaded);
        }
        // RFC 3261 §16.3 step 3: Max-Forwards exhausted.
        if req.max_forwards == Some(0) {
            return Err(Refusal::TooManyHops);
        }
        // A Call-ID we minted coming back in as a new call is our own B leg
        // looping through the network (RFC 3261 §16.3 step 4 in spirit).
        if self.ctx.ids.secrets().decode_call_id(req.call_id).is_some() {
            return Err(Refusal::Loop);
        }
        // SDP the relay cannot rewrite (inside multipart, e.g. SIP-I) would
        // carry the caller's addresses across: ask for plain SDP (RFC 3261
        // §21.4.13, 415 with Accept).
        if self.ctx.media.is_some() && super::media::has_nested_sdp(&req.msg) {
            return Err(Refusal::UnsupportedMedia);
        }
        Ok(())
    }

    /// Where a route sends a call: an extension's phones, or its trunks in
    /// the order to try them, those their health probes found down left
    /// out.
    fn route_targets(
        &mut self,
        policy: &Policy,
        route: &crate::policy::Route,
    ) -> Result<SmallVec<[Target; 4]>, Refusal> {
        if route.extension.is_some() {
            // An extension: its accounts registered when the call starts.
            return Ok(smallvec::smallvec![Target {
                trunk: crate::policy::PHONES,
                priority: 1,
                weight: 1,
            }]);
        }
        if route.targets.is_empty() {
            return Err(Refusal::NoRoute);
        }
        let mut targets = order_targets(&route.targets, &mut || self.ctx.ids.random());
        targets.retain(|t| policy.trunk(t.trunk).is_some_and(|x| !x.stats.is_down()));
        if targets.is_empty() {
            return Err(Refusal::TrunksDown);
        }
        Ok(targets)
    }

    /// A slot under the SBC's `max_calls` (across shards) and one in this
    /// shard's call table, or the refusal; the call gives both back when
    /// it ends.
    fn reserve_call(&mut self, policy: &Policy) -> Result<CallRef, Refusal> {
        if !policy.limits.open.try_open(policy.limits.max_calls) {
            return Err(Refusal::CallLimit);
        }
        self.calls.reserve().ok_or_else(|| {
            policy.limits.open.close();
            Refusal::CallTableFull
        })
    }

    /// Admission control (BRIEF §2): the calling trunk's calls a second
    /// (this shard's share of `max_cps`) and calls open at once
    /// (`max_calls`, across shards). On success the call holds one of the
    /// trunk's inbound slots until it ends.
    fn admission(&mut self, policy: &Policy, trunk: TrunkId) -> Result<(), Refusal> {
        let Some(t) = policy.trunk(trunk) else {
            return Ok(());
        };
        let Some(now) = self.ctx.now else {
            return Err(Refusal::TrunkLimit);
        };
        if !self.ctx.call_token(t, Direction::Inbound, now) {
            return Err(Refusal::TrunkLimit);
        }
        if !t.stats.try_open(Direction::Inbound, t.max_calls) {
            return Err(Refusal::TrunkLimit);
        }
        Ok(())
    }

    /// Creates the admitted call, reports it, and sends its first INVITE.
    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        trunk: TrunkId,
        admitted: Admitted,
    ) {
        let cref = admitted.cref;
        let policy = Arc::clone(&self.ctx.policy);
        let mut call = Box::new(self.new_call(now, req, origin, trunk, admitted));
        self.ctx.emit(Event::CallStarted(CallStarted {
            call: cref,
            call_id: call.a.bytes(Part::CallId),
            inbound_trunk: policy
                .trunk(trunk)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            callee: Arc::clone(&call.number),
            at: now,
        }));
        ShardStats::inc(&self.ctx.stats.calls_created);
        self.ctx
            .stats
            .calls_active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = policy.trunk(trunk) {
            t.stats.attempt(Direction::Inbound);
        }
        // RFC 3261 §17.2.1: 100 Trying if nothing else goes out within
        // 200 ms (a fast answer makes it unnecessary: one datagram less).
        call.timers
            .set(crate::transaction::TimerName::Trying, now + TRYING_DELAY);
        if !super::outbound::next_attempt(&mut self.ctx, &mut call, now) {
            // No trunk could take the call (codecs, ports): answer now.
            super::teardown::fail_call(&mut self.ctx, &mut call, now);
        }
        self.calls.insert(cref, call);
        self.after(cref);
    }

    fn new_call(
        &mut self,
        now: Instant,
        req: &Request<'_>,
        origin: Flow,
        trunk: TrunkId,
        mut admitted: Admitted,
    ) -> Call {
        let host = self.ctx.local(origin.local).host.clone();
        let ids = &mut self.ctx.ids;
        let reach = Reach {
            policy: &self.ctx.policy,
            trunk,
        };
        let a = a_leg(req, origin, reach, ids);
        let b = b_leg(
            req,
            origin,
            trunk,
            (admitted.cref, ids),
            &host,
            admitted.caller_id.as_deref(),
        );
        // A phone (or a registering trunk) is answered where it sent from
        // (RFC 3581 §4), whatever its Via says.
        let answer_to = response_dest_on(req, origin, &self.ctx.policy, trunk);
        Call {
            me: admitted.cref,
            policy: Arc::clone(&self.ctx.policy),
            a,
            b,
            state: State::Routing(Box::new(start_routing(req, origin, &mut admitted))),
            uas: uas_of(req, answer_to),
            number: Arc::from(admitted.number),
            attempts: SmallVec::new(),
            b_open: None,
            relays: Vec::new(),
            extra: None,
            started: now,
            anchored: false,
            media: None,
            timers: TimerTable::new(),
            scheduled: None,
            a_key: CallTable::a_key(req.call_id, req.from_tag()),
        }
    }

    fn on_cancel(&mut self, now: Instant, req: &Request<'_>, origin: Flow) {
        let found = self.find_dialog(req.call_id, req.from_tag());
        if let Some((r, side)) = found
            && self.at_tomb(r, side, req, origin)
        {
            return;
        }
        let Some((r, side, call)) =
            found.and_then(|(r, side)| Some((r, side, self.calls.get_mut(r)?)))
        else {
            self.refuse_no_dialog(req, origin);
            return;
        };
        // Only the peer of a leg may cancel in it (by the call's own policy).
        if !call.leg(side).is_peer(&call.policy, &origin) {
            self.ctx.refuse(req, origin, Refusal::UnknownSource);
            return;
        };
        // RFC 3261 §9.1: a CANCEL repeats its INVITE's CSeq number.
        if side == Side::B || !call.uas.matches(req) || req.cseq.seq != call.uas.cseq {
            if call.relays.iter().any(|x| x.matches_request(side, req)) {
                // RFC 3261 §9.2: the CANCEL of a re-INVITE is answered; the
                // re-INVITE runs to completion on the other leg.
                self.ctx.respond_stateless(req, origin, 200, b"OK", &[]);
            } else {
                self.ctx.refuse(req, origin, Refusal::NoDialog);
            }
            return;
        }
        // RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE if unanswered.
        let tag = call.a.bytes(Part::LocalTag);
        let template = Template::new(req, origin.remote, false);
        self.ctx.send(
            response_dest_on(req, origin, &call.policy, call.a.trunk),
            &template.simple(200, b"OK", Some(&tag)),
        );
        if call.uas.tx.is_pending() {
            super::teardown::cancel_call(&mut self.ctx, call, now, EndReason::Cancelled);
        }
        self.after(r);
    }

    pub(crate) fn on_ack(&mut self, now: Instant, req: &Request<'_>, origin: Flow) {
        let Some((r, side)) = self.find_dialog(req.call_id, req.from_tag()) else {
            self.ctx.stats.discard(Discard::StrayAck);
            return;
        };
        if self.at_tomb(r, side, req, origin) {
            return;
        }
        if let Some(call) = self.calls.get_mut(r) {
            // Only the peer of a leg may send in it (by the call's own
            // policy), and only with both of the dialog's tags: an ACK
            // with no To tag or a made-up one confirms nothing.
            let leg = call.leg(side);
            if !leg.is_peer(&call.policy, &origin) || !leg.owns(req) {
                self.ctx.stats.discard(Discard::StrayAck);
                return;
            }
            super::dialog::on_ack(&mut self.ctx, call, side, req, now);
        }
        self.after(r);
    }

    /// Finds the call and leg a request with this Call-ID and From tag (or a
    /// response with this Call-ID and To tag) belongs to.
    pub(crate) fn find_dialog(
        &mut self,
        call_id: &[u8],
        remote_tag: &[u8],
    ) -> Option<(CallRef, Side)> {
        if let Some(r) = self.calls.find_a(call_id, remote_tag) {
            return Some((r, Side::A));
        }
        let (_, r) = self.ctx.ids.secrets().decode_call_id(call_id)?;
        if self.calls.tomb(r).is_some() {
            // The MAC'd Call-ID names this slot and generation.
            return Some((r, Side::B));
        }
        let call = self.calls.get(r)?;
        (call.b.call_id() == call_id).then_some((r, Side::B))
    }

    /// A request for a dialog we do not know: 481 for a trunk, 403 for a
    /// stranger (BRIEF §8: it learns nothing of our dialogs).
    fn refuse_no_dialog(&mut self, req: &Request<'_>, origin: Flow) {
        let why = match self.ctx.policy.trunk_on(&origin) {
            None => Refusal::UnknownSource,
            Some(_) => Refusal::NoDialog,
        };
        self.ctx.refuse(req, origin, why);
    }

    /// A request in the dialogs of an ended call that rests: answered from
    /// its tombstone (a retransmitted BYE gets its answer again; anything
    /// else but an ACK gets 481). True when `r` was a tombstone.
    fn at_tomb(&mut self, r: CallRef, side: Side, req: &Request<'_>, origin: Flow) -> bool {
        let Some(tomb) = self.calls.tomb(r) else {
            return false;
        };
        // Only the peer of a leg may send in it, as while the call lived.
        if !tomb.is_peer(side, &self.ctx.policy, &origin) {
            if req.method == Method::Ack {
                self.ctx.stats.discard(Discard::StrayAck);
            } else {
                self.ctx.refuse(req, origin, Refusal::UnknownSource);
            }
            return true;
        }
        match tomb.answer(side, req) {
            TombAnswer::Absorb => ShardStats::inc(&self.ctx.stats.retransmissions_in),
            TombAnswer::Ok => {
                // The answer the BYE's server transaction would resend.
                ShardStats::inc(&self.ctx.stats.retransmissions_in);
                let resp = self.ctx.response_to(req, origin, (200, b"OK"), &[]);
                self.ctx
                    .send(response_dest_for(req, origin, &self.ctx.policy), &resp);
            }
            TombAnswer::NoDialog => self.ctx.refuse(req, origin, Refusal::NoDialog),
        }
        true
    }

    fn on_in_dialog(&mut self, now: Instant, req: &Request<'_>, origin: Flow) {
        let Some((r, side)) = self.find_dialog(req.call_id, req.from_tag()) else {
            self.refuse_no_dialog(req, origin);
            return;
        };
        if self.at_tomb(r, side, req, origin) {
            return;
        }
        let Some(call) = self.calls.get_mut(r) else {
            return;
        };
        let leg = call.leg(side);
        let (peer, owns) = (leg.is_peer(&call.policy, &origin), leg.owns(req));
        // A phone that rang in an early dialog the B leg no longer follows
        // (another fork answered 1xx since) may still end it.
        if side == Side::B
            && !(peer && owns)
            && let Some(index) = call.early_fork(req, &origin)
        {
            super::dialog::on_early_fork_request(&mut self.ctx, call, index, req, origin, now);
            self.after(r);
            return;
        }
        // Only the peer of a leg may send requests in it; the source is
        // checked first, so others learn nothing of which dialogs exist.
        if !peer {
            self.refuse_no_dialog(req, origin);
            return;
        }
        if !owns {
            self.ctx.refuse(req, origin, Refusal::NoDialog);
            return;
        }
        super::dialog::on_request(&mut self.ctx, call, side, req, origin, now);
        self.after(r);
    }
}

/// The number a new call from `trunk` dials: its Request-URI's user,
/// except for a call to the Contact the SBC registered with that trunk
/// (`sip:contact-user@sbc`). That Request-URI names the registration, not
/// a number, and providers that deliver calls to a registration put the
/// number called in the To header (RFC 3261 §8.1.1.2: the To is the
/// request's logical recipient), so the To's user is dialled instead.
fn number_dialled(req: &Request<'_>, trunk: Option<&crate::policy::Trunk>) -> String {
    let number = dialled_number(&req.uri);
    let to_registration = trunk
        .and_then(|t| t.registration.as_ref())
        .zip(req.uri.user)
        .is_some_and(|(r, user)| r.names(user));
    if to_registration {
        let to = req.to.parsed_uri().ok().map(|u| dialled_number(&u));
        if let Some(to) = to.filter(|n| !n.is_empty()) {
            return to;
        }
    }
    number
}

/// The number a request dials: the user part of a SIP URI or the number of a
/// tel URI, percent-decoded, telephone numbers without visual separators.
pub(crate) fn dialled_number(uri: &Uri<'_>) -> String {
    let raw = uri.user.unwrap_or(b"");
    let raw = match uri.scheme {
        // "user;params" in a sip URI user part: the number ends at ';'.
        Scheme::Sip | Scheme::Sips => raw.split(|b| *b == b';').next().unwrap_or(raw),
        _ => raw,
    };
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' && i + 2 < raw.len() {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                if v.is_ascii_graphic() {
                    out.push(char::from(v));
                }
                i += 3;
                continue;
            }
        }
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        }
        i += 1;
    }
    // A telephone number: drop its visual separators (RFC 3966 §5.1.1);
    // any other user part is kept as written.
    let phone = out.bytes().any(|b| b.is_ascii_digit())
        && out
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'(' | b')'));
    if phone {
        out.retain(|c| !matches!(c, '-' | '.' | '(' | ')'));
    }
    out
}

/// The routing phase a new call starts in: what was admitted (its
/// targets, route and session timer plan), and the INVITE's parts every
/// attempt sends again.
fn start_routing(req: &Request<'_>, origin: Flow, admitted: &mut Admitted) -> Routing {
    let rewrite = admitted.session.rewrite();
    Routing {
        template: Template::new(req, origin.remote, true),
        targets: std::mem::take(&mut admitted.targets),
        next_target: 0,
        failover_on_timeout: admitted.failover_on_timeout,
        route_index: admitted.route_index,
        failure: None,
        invite_headers: render_invite_headers(&req.msg, rewrite.is_some()),
        invite_body: Bytes::copy_from_slice(req.msg.body()),
        max_forwards: req.max_forwards.unwrap_or(70).saturating_sub(1),
        extension: admitted.extension.take(),
        awaiting: false,
        wave: 0,
        media_fork: None,
        session: admitted.session.asked(),
        rewrite: rewrite.map(|(se, min_se)| super::session::Rewrite {
            se,
            min_se,
            params: Bytes::copy_from_slice(super::session::params_of(&req.msg)),
            raised: false,
        }),
    }
}

/// The caller's INVITE server transaction, answered at `answer_to`.
fn uas_of(req: &Request<'_>, answer_to: Flow) -> Uas {
    Uas {
        tx: ServerInvite::new(answer_to),
        offer_in_invite: super::media::is_sdp(&req.msg),
        branch: if req.via.has_rfc3261_branch() {
            Bytes::copy_from_slice(req.via.branch().unwrap_or(b""))
        } else {
            Bytes::new()
        },
        cseq: req.cseq.seq,
    }
}

/// Orders targets by priority; among equal priorities, a weighted random
/// order (BRIEF §3).
fn order_targets(targets: &[Target], random: &mut dyn FnMut() -> u64) -> SmallVec<[Target; 4]> {
    let mut sorted: SmallVec<[Target; 4]> = targets.iter().copied().collect();
    sorted.sort_by_key(|t| t.priority);
    let mut out: SmallVec<[Target; 4]> = SmallVec::new();
    let mut i = 0;
    while i < sorted.len() {
        let prio = sorted[i].priority;
        let end = sorted[i..]
            .iter()
            .position(|t| t.priority != prio)
            .map_or(sorted.len(), |p| i + p);
        let mut group: SmallVec<[Target; 4]> = sorted[i..end].iter().copied().collect();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|t| u64::from(t.weight.max(1))).sum();
            let mut pick = random() % total.max(1);
            let mut idx = 0;
            for (j, t) in group.iter().enumerate() {
                let w = u64::from(t.weight.max(1));
                if pick < w {
                    idx = j;
                    break;
                }
                pick -= w;
            }
            out.push(group.remove(idx));
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialled_number_from_uris() {
        let n = |s: &[u8]| dialled_number(&Uri::parse(s).unwrap());
        assert_eq!(n(b"sip:+39061234@host"), "+39061234");
        assert_eq!(n(b"tel:+1-201-555-0123"), "+12015550123");
        assert_eq!(n(b"sip:%2B3906@host"), "+3906");
        assert_eq!(n(b"sip:user;par=x@host"), "user");
        assert_eq!(n(b"sip:host"), "");
        assert_eq!(n(b"sip:alice.smith@host"), "alice.smith");
        assert_eq!(n(b"sip:+1-(201)-555.0123@host"), "+12015550123");
    }

    #[test]
    fn targets_by_priority_then_weight() {
        use crate::policy::TrunkId;
        let t = |id, priority, weight| Target {
            trunk: TrunkId(id),
            priority,
            weight,
        };
        let targets = [t(2, 2, 1), t(0, 1, 1), t(1, 1, 3)];
        let mut counts = [0u32; 2];
        let mut seed = 0u64;
        for _ in 0..4000 {
            let mut rnd = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                seed >> 33
            };
            let order = order_targets(&targets, &mut rnd);
            assert_eq!(order[2].trunk, TrunkId(2));
            counts[usize::from(order[0].trunk.0)] += 1;
        }
        // weight 3 vs 1: about 75% first.
        assert!((2700..3300).contains(&counts[1]), "{counts:?}");
    }
}
