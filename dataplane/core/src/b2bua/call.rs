//! The call object model: a call has two legs (dialogs); the A leg faces the
//! caller (the SBC is its UAS), the B leg faces the callee (the SBC is its
//! UAC). Transactions in flight hang off the call.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::template::Template;
use crate::net::Flow;
use crate::policy::{Policy, Target, TrunkId};
use crate::sip::{Method, Request};
use crate::transaction::{
    ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, TimerName, TimerTable,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The caller's leg.
    A,
    /// The callee's leg.
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One dialog of the call, with everything needed to send requests in it
/// (RFC 3261 §12: Call-ID, tags, remote target, route set, CSeq).
#[derive(Debug)]
pub(crate) struct Leg {
    /// Call-ID, tags, the From and To values, the remote target.
    text: DialogText,
    /// Route values for requests in this leg, in sending order.
    pub route_set: Vec<Bytes>,
    /// Last CSeq the SBC used in this leg.
    pub local_cseq: u32,
    /// Last CSeq received from the peer (RFC 3261 §12.2.2 ordering).
    pub remote_cseq: Option<u32>,
    /// Next hop for requests in this leg: transport, peer, our socket.
    pub flow: Flow,
    pub trunk: TrunkId,
}

/// A dialog's text, in [`Part`] order in one buffer: one allocation and
/// one reference count for all of it, and a smaller [`Leg`].
#[derive(Debug, Clone)]
pub(crate) struct DialogText {
    buf: Bytes,
    /// Where each part ends in `buf`.
    ends: [u32; PARTS],
    /// The peer's tag is known (it may be known and empty).
    remote_tag: bool,
}

const PARTS: usize = 6;

/// The parts of a [`DialogText`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    CallId,
    LocalTag,
    RemoteTag,
    /// From value of requests the SBC sends in this leg (with our tag).
    LocalParty,
    /// To value of requests the SBC sends in this leg (with the peer's tag).
    RemoteParty,
    RemoteTarget,
}

impl DialogText {
    /// Writes the parts in [`Part`] order, each by its writer, into one
    /// buffer; `size` is what they take at most (more only reallocates).
    pub fn write(
        size: usize,
        remote_tag: bool,
        parts: [&mut dyn FnMut(&mut BytesMut); PARTS],
    ) -> Self {
        let mut buf = BytesMut::with_capacity(size);
        let mut ends = [0u32; PARTS];
        for (end, write) in ends.iter_mut().zip(parts) {
            write(&mut buf);
            *end = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        }
        DialogText {
            buf: buf.freeze(),
            ends,
            remote_tag,
        }
    }

    /// Where part number `i` (in [`Part`] order) lies in `buf`.
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let end = |i: usize| usize::try_from(self.ends[i]).unwrap_or(usize::MAX);
        let start = if i == 0 { 0 } else { end(i - 1) };
        start.min(self.buf.len())..end(i).min(self.buf.len())
    }

    pub fn get(&self, part: Part) -> &[u8] {
        &self.buf[self.range(part as usize)]
    }

    /// A part as its own `Bytes` (sharing the buffer: no copy).
    pub fn bytes(&self, part: Part) -> Bytes {
        self.buf.slice(self.range(part as usize))
    }

    /// The same text with some parts replaced (`Some`), the peer's tag
    /// known or not as `remote_tag` says: one new buffer.
    pub fn with(&self, remote_tag: bool, new: [Option<&[u8]>; PARTS]) -> Self {
        let parts: [&[u8]; PARTS] =
            std::array::from_fn(|i| new[i].unwrap_or_else(|| &self.buf[self.range(i)]));
        let mut buf = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; PARTS];
        for (end, part) in ends.iter_mut().zip(parts) {
            buf.put_slice(part);
            *end = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        }
        DialogText {
            buf: buf.freeze(),
            ends,
            remote_tag,
        }
    }
}

impl Leg {
    pub fn new(text: DialogText, flow: Flow, trunk: TrunkId) -> Self {
        Leg {
            text,
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
            flow,
            trunk,
        }
    }

    pub fn call_id(&self) -> &[u8] {
        self.text.get(Part::CallId)
    }

    pub fn local_tag(&self) -> &[u8] {
        self.text.get(Part::LocalTag)
    }

    /// The peer's tag, once known.
    pub fn remote_tag(&self) -> Option<&[u8]> {
        self.text.remote_tag.then(|| self.text.get(Part::RemoteTag))
    }

    pub fn local_party(&self) -> &[u8] {
        self.text.get(Part::LocalParty)
    }

    pub fn remote_party(&self) -> &[u8] {
        self.text.get(Part::RemoteParty)
    }

    pub fn remote_target(&self) -> &[u8] {
        self.text.get(Part::RemoteTarget)
    }

    /// A part as its own `Bytes` (no copy).
    pub fn bytes(&self, part: Part) -> Bytes {
        self.text.bytes(part)
    }

    /// Replaces the peer's side of the dialog: its tag (`None`: not known
    /// yet), the To value, and the remote target when given.
    pub fn set_remote(&mut self, tag: Option<&[u8]>, party: &[u8], target: Option<&[u8]>) {
        self.text = self.text.with(
            tag.is_some(),
            [
                None,
                None,
                Some(tag.unwrap_or(b"")),
                None,
                Some(party),
                target,
            ],
        );
    }

    pub fn set_remote_target(&mut self, target: &[u8]) {
        self.text = self.text.with(
            self.text.remote_tag,
            [None, None, None, None, None, Some(target)],
        );
    }

    pub fn set_local_party(&mut self, party: &[u8]) {
        self.text = self.text.with(
            self.text.remote_tag,
            [None, None, None, Some(party), None, None],
        );
    }

    /// Whether a message that came on `origin` comes from this leg's
    /// peer: over the leg's transport (a peer held to TLS is not heard
    /// over UDP from its address), from its trunk's sources, or for a leg
    /// facing a registered phone or a trunk that registers
    /// ([`Policy::reached_by_binding`]) from the address it is reached at.
    pub fn is_peer(&self, policy: &Policy, origin: &Flow) -> bool {
        peer_at(&self.flow, self.trunk, policy, origin)
    }

    /// RFC 3261 §12.2.2: a request from `side`'s peer (found by Call-ID,
    /// and on the caller's side by its From tag) belongs to this dialog
    /// only when its To tag is ours and its From tag is the peer's.
    pub fn owns(&self, req: &Request<'_>) -> bool {
        req.to_tag() == Some(self.local_tag()) && self.remote_tag() == Some(req.from_tag())
    }
}

/// Whether `origin` is the peer reached at `flow` for `trunk` (see
/// [`Leg::is_peer`]).
fn peer_at(flow: &Flow, trunk: TrunkId, policy: &Policy, origin: &Flow) -> bool {
    let ip = origin.remote.ip();
    if origin.transport != flow.transport {
        return false;
    }
    let at_flow = crate::net::canonical(ip) == crate::net::canonical(flow.remote.ip());
    if policy.reached_by_binding(trunk) {
        at_flow
    } else {
        policy.is_source_of(trunk, ip)
            || (at_flow && policy.trunk(trunk).is_some_and(|t| t.follow_contact))
    }
}

/// Where the call is, as a plain value for matching (see [`State`] for
/// the data each phase holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Trying trunks; the caller has had 100 Trying only.
    Routing,
    /// A provisional answer was relayed to the caller.
    Early,
    /// The callee answered; waiting for the caller's ACK.
    Answered,
    /// ACKed: the call is up.
    Confirmed,
    /// Over; the call object lingers until its transactions end.
    Ended,
}

/// The call's state: each variant holds only the data valid in it, and a
/// transition drops what the old state held (the routing data, with the
/// template that answers the caller's INVITE, goes when the callee
/// answers or the call ends).
#[derive(Debug)]
pub(crate) enum State {
    /// Trying trunks, in order; the caller has had 100 Trying only.
    Routing(Box<Routing>),
    /// Still routing, and a provisional answer reached the caller (the
    /// next targets may still be tried: RFC 3261 §16.7).
    Early(Box<Routing>),
    /// The callee answered; waiting for the caller's ACK.
    Answered(Answer),
    /// ACKed: the call is up. `b_ack` is what it takes to send the ACK to
    /// the callee again when its 2xx is retransmitted.
    Confirmed { answer: Answer, b_ack: KeptAck },
    /// Over (at `at`); the call lingers until its transactions end.
    Ended {
        answered: Option<Answer>,
        at: Instant,
    },
}

/// The answer that took the call out of routing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    /// When the 2xx arrived.
    pub at: Instant,
    /// The attempt it answered (its 2xx retransmissions are ACKed again).
    pub attempt: u16,
}

/// The ACK of the callee's 2xx, as kept for 2xx retransmissions (RFC 3261
/// §13.2.2.4: the same ACK each time).
#[derive(Debug)]
pub(crate) enum KeptAck {
    /// It carried a body (the answer to an offer in the 2xx): kept whole.
    Whole(Bytes),
    /// No body: built again, byte for byte, from the 2xx and its branch
    /// (`build::ack_from_2xx`), so most calls keep 23 bytes, not ~450.
    Branch(super::ids::Branch),
}

/// What routing a call needs until it is answered or fails.
#[derive(Debug)]
pub(crate) struct Routing {
    /// Answers the caller's INVITE until it has its final response (the
    /// server transaction keeps what it sent).
    pub template: Template,
    /// Targets in the order they are tried.
    pub targets: SmallVec<[Target; 4]>,
    pub next_target: usize,
    pub failover_on_timeout: bool,
    pub route_index: usize,
    /// The best failure so far (RFC 3261 §16.7).
    pub failure: Option<Failure>,
    /// End-to-end headers and body of the caller's INVITE (for every
    /// attempt).
    pub invite_headers: Bytes,
    pub invite_body: Bytes,
    pub max_forwards: u32,
    /// The extension a [`crate::policy::PHONES`] target rings.
    pub extension: Option<Arc<str>>,
    /// Waiting for the extension's owner to say where its phones are.
    pub awaiting: bool,
    /// The attempts from this index on are the ones in progress: one
    /// INVITE to a trunk, or one to each registered account of an
    /// extension (parallel forking, RFC 3261 §16.6).
    pub wave: u16,
    /// The attempt whose SDP the media relay's callee side last took.
    pub media_fork: Option<u16>,
    /// What the INVITE asked for of session timers (RFC 4028), as it
    /// goes to the callee.
    pub session: Option<super::session::Asked>,
    /// Session-Expires and Min-SE the SBC writes into each attempt (then
    /// `invite_headers` has none of the caller's).
    pub rewrite: Option<super::session::Rewrite>,
}

/// The caller's initial INVITE and its server transaction.
#[derive(Debug)]
pub(crate) struct Uas {
    pub tx: ServerInvite,
    /// It carried an SDP offer (else the offer comes in the 2xx and the
    /// answer in the ACK).
    pub offer_in_invite: bool,
    /// Top Via branch, or empty for an RFC 2543 request.
    pub branch: Bytes,
    pub cseq: u32,
}

impl Uas {
    /// RFC 3261 §17.2.3 (and its RFC 2543 fallback on CSeq): does this
    /// request (INVITE retransmission, CANCEL, ACK) belong to the INVITE?
    pub fn matches(&self, req: &Request<'_>) -> bool {
        if req.via.has_rfc3261_branch() {
            req.via.branch().is_some_and(|b| b == &self.branch[..])
        } else {
            self.branch.is_empty() && req.cseq.seq == self.cseq
        }
    }
}

/// The parts of an INVITE its CANCEL and non-2xx ACK repeat.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InviteRef<'b> {
    pub ruri: &'b [u8],
    pub routes: &'b [Bytes],
    pub branch: &'b [u8],
    pub cseq: u32,
}

/// One INVITE sent to one trunk (serial forking = failover).
#[derive(Debug)]
pub(crate) struct Attempt {
    pub target: Target,
    pub tx: ClientInvite,
    pub branch: super::ids::Branch,
    pub ruri: Bytes,
    pub cseq: u32,
    /// To value as sent (no tag), for CANCEL.
    pub initial_to: Bytes,
    /// Boxed: most attempts are never cancelled.
    pub cancel: Option<Box<ClientNonInvite>>,
    /// CANCEL as soon as a provisional response arrives (RFC 3261 §9.1).
    pub cancel_wanted: bool,
    /// It carried credentials answering the trunk's challenge: another
    /// 401/407 is a failure, not a second retry.
    pub authorized: bool,
    /// The To tag of the last response with one (empty: none yet): the
    /// callee's side of this attempt's (early) dialog, so a BYE in it
    /// finds its attempt. Inline: no allocation per call for usual tags.
    pub remote_tag: SmallVec<[u8; 24]>,
}

impl Attempt {
    pub fn invite_ref(&self) -> InviteRef<'_> {
        InviteRef {
            ruri: &self.ruri,
            routes: &[],
            branch: &self.branch,
            cseq: self.cseq,
        }
    }

    pub fn is_done(&self) -> bool {
        self.tx.is_terminated() && self.cancel.as_ref().is_none_or(|c| c.is_terminated())
    }
}

#[derive(Debug)]
pub(crate) enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

impl ServerTx {
    pub fn is_pending(&self) -> bool {
        match self {
            ServerTx::Invite(t) => t.is_pending(),
            ServerTx::NonInvite(t) => t.is_pending(),
        }
    }

    pub fn is_terminated(&self) -> bool {
        match self {
            ServerTx::Invite(t) => t.is_terminated(),
            ServerTx::NonInvite(t) => t.is_terminated(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            ServerTx::Invite(t) => t.next_deadline(),
            ServerTx::NonInvite(t) => t.next_deadline(),
        }
    }

    /// Sends a response through the transaction; false when it no longer
    /// takes one.
    pub fn respond(
        &mut self,
        now: Instant,
        timers: &crate::transaction::TimerConfig,
        code: u16,
        response: Bytes,
        out: &mut crate::net::Outbox,
    ) -> bool {
        match self {
            ServerTx::Invite(t) => t.respond(now, timers, code, response, out),
            ServerTx::NonInvite(t) => t.respond(now, timers, code, response, out),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ClientTx {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

impl ClientTx {
    pub fn is_pending(&self) -> bool {
        match self {
            ClientTx::Invite(t) => t.is_pending(),
            ClientTx::NonInvite(t) => t.is_pending(),
        }
    }

    pub fn is_terminated(&self) -> bool {
        match self {
            ClientTx::Invite(t) => t.is_terminated(),
            ClientTx::NonInvite(t) => t.is_terminated(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            ClientTx::Invite(t) => t.next_deadline(),
            ClientTx::NonInvite(t) => t.next_deadline(),
        }
    }
}

/// An in-dialog request received on one leg and relayed on the other.
#[derive(Debug)]
pub(crate) struct Relay {
    /// The side the request came from.
    pub from: Side,
    pub method: Method,
    pub server: ServerTx,
    pub server_branch: Bytes,
    pub server_cseq: u32,
    pub template: Template,
    pub client: ClientTx,
    pub client_branch: super::ids::Branch,
    pub client_cseq: u32,
    /// ACK relayed for a 2xx to a re-INVITE, resent on 2xx retransmissions.
    pub ack: Option<Bytes>,
    /// The request carried an SDP offer (so the response carries the
    /// answer; otherwise the 2xx offers and the ACK answers).
    pub offer_in_request: bool,
    /// The final status the originator was answered with.
    pub final_code: Option<u16>,
    /// A session refresh (RFC 4028): what it asked for.
    pub session: Option<super::session::Asked>,
}

impl Relay {
    pub fn is_done(&self) -> bool {
        self.server.is_terminated() && self.client.is_terminated()
    }

    pub fn matches_request(&self, side: Side, req: &Request<'_>) -> bool {
        if self.from != side {
            return false;
        }
        if req.via.has_rfc3261_branch() {
            req.via
                .branch()
                .is_some_and(|b| b == &self.server_branch[..])
        } else {
            req.cseq.seq == self.server_cseq
        }
    }
}

/// An in-dialog request the SBC answered itself (491, 481, 500, or 200 to
/// an early BYE): its server transaction answers retransmissions.
#[derive(Debug)]
pub(crate) struct LocalAnswer {
    pub from: Side,
    pub branch: Bytes,
    pub cseq: u32,
    pub method: Method,
    pub tx: ServerTx,
}

impl LocalAnswer {
    pub fn matches_request(&self, side: Side, req: &Request<'_>) -> bool {
        if self.from != side {
            return false;
        }
        if req.via.has_rfc3261_branch() {
            req.via.branch().is_some_and(|b| b == &self.branch[..])
        } else {
            req.cseq.seq == self.cseq
        }
    }
}

/// A 2xx from a callee the call no longer wanted (a late answer after
/// failover, a second fork): ACKed and BYEd once; its retransmissions get
/// the same ACK.
#[derive(Debug)]
pub(crate) struct Stray {
    pub tag: Bytes,
    pub ack: Bytes,
    pub dest: crate::net::Flow,
}

/// A request the SBC originates itself (BYE when ending a call).
#[derive(Debug)]
pub(crate) struct Own {
    pub side: Side,
    pub branch: super::ids::Branch,
    pub tx: ClientNonInvite,
}

/// The best failure seen so far (RFC 3261 §16.7), ready to be relayed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: u16,
    pub reason: Bytes,
    pub headers: Bytes,
    pub body: Bytes,
    /// The SBC's own answer (e.g. 503 when out of media ports), not a
    /// trunk's: relayed as it is.
    pub local: bool,
}

#[derive(Debug)]
pub(crate) struct Call {
    /// This call's own slot (media ports point back to it).
    pub me: super::ids::CallRef,
    /// The configuration this call started with.
    pub policy: Arc<Policy>,
    pub a: Leg,
    pub b: Leg,
    pub state: State,
    pub uas: Uas,
    /// The dialled number, as routed.
    pub number: std::sync::Arc<str>,
    /// The INVITEs sent to trunks and phones. Their transactions outlive
    /// routing: a cancelled fork runs until its 487 is ACKed, and the
    /// answered one absorbs its 2xx retransmissions.
    pub attempts: SmallVec<[Attempt; 1]>,
    /// The trunk whose outbound slot the callee side holds (the current
    /// attempt's, then the answered call's): given back when the next
    /// attempt starts or the call ends.
    pub b_open: Option<TrunkId>,
    pub relays: Vec<Relay>,
    /// What few calls need (boxed: a smaller call for the rest).
    pub extra: Option<Box<Extra>>,
    /// When the caller's INVITE arrived.
    pub started: Instant,
    /// The SBC relays the media: of the attempt in progress while
    /// routing, of the call once answered.
    pub anchored: bool,
    pub media: Option<Box<crate::media::MediaSession>>,
    pub timers: TimerTable<4>,
    /// Deadline of this call's earliest entry in the shard's timer heap.
    pub scheduled: Option<Instant>,
    /// Key of this call in the A-leg index.
    pub a_key: std::sync::Arc<[u8]>,
}

/// The rarer transactions of a call: requests the SBC answers itself,
/// requests it sends on its own (a BYE after a late 2xx, on session
/// expiry), and the 2xx of forks it hung up.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub local: Vec<LocalAnswer>,
    pub own: Vec<Own>,
    pub strays: Vec<Stray>,
}

impl Call {
    /// The requests answered here.
    pub fn local(&self) -> &[LocalAnswer] {
        self.extra.as_deref().map_or(&[], |e| &e.local)
    }

    /// The SBC's own requests.
    pub fn own(&self) -> &[Own] {
        self.extra.as_deref().map_or(&[], |e| &e.own)
    }

    /// The call's [`Extra`], made when first needed.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Gives back the outbound slot of the trunk the callee side holds
    /// (admission control), if it holds one.
    pub fn release_b_slot(&mut self) {
        if let Some(held) = self.b_open.take()
            && let Some(t) = self.policy.trunk(held)
        {
            t.stats.close(crate::stats::Direction::Outbound);
        }
    }

    /// Takes an outbound slot of `trunk` (`id`) for the callee side; false
    /// when the trunk is at its `max_calls`.
    pub fn take_b_slot(&mut self, id: TrunkId, trunk: &crate::policy::Trunk) -> bool {
        if !trunk
            .stats
            .try_open(crate::stats::Direction::Outbound, trunk.max_calls)
        {
            return false;
        }
        self.b_open = Some(id);
        true
    }

    pub fn leg(&self, side: Side) -> &Leg {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    pub fn leg_mut(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// The phase the state is in.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Routing(_) => Phase::Routing,
            State::Early(_) => Phase::Early,
            State::Answered(_) => Phase::Answered,
            State::Confirmed { .. } => Phase::Confirmed,
            State::Ended { .. } => Phase::Ended,
        }
    }

    /// Before the answer, the attempt whose early dialog a request from
    /// the callee's side is in: our tag in its To, its From tag the one
    /// that attempt's provisional answer carried (RFC 3261 §12.1.2), sent
    /// from where that attempt went. One of several forks ringing may be
    /// another than the one the B leg last heard from.
    pub fn early_fork(&self, req: &Request<'_>, origin: &Flow) -> Option<usize> {
        if !matches!(self.phase(), Phase::Routing | Phase::Early)
            || req.to_tag() != Some(self.b.local_tag())
        {
            return None;
        }
        let tag = req.from_tag();
        self.attempts.iter().position(|a| {
            a.tx.is_pending()
                && a.tx.heard_back()
                && !tag.is_empty()
                && a.remote_tag[..] == *tag
                && peer_at(&a.tx.dest(), a.target.trunk, &self.policy, origin)
        })
    }

    /// The answer that took the call out of routing, if one did.
    pub fn answer(&self) -> Option<Answer> {
        match &self.state {
            State::Routing(_) | State::Early(_) => None,
            State::Answered(answer) | State::Confirmed { answer, .. } => Some(*answer),
            State::Ended { answered, .. } => *answered,
        }
    }

    /// When the callee answered, if it did.
    pub fn answered_at(&self) -> Option<Instant> {
        self.answer().map(|a| a.at)
    }

    /// When the call ended, if it did.
    pub fn ended_at(&self) -> Option<Instant> {
        match &self.state {
            State::Ended { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// The routing data, while the call is being routed.
    pub fn routing(&self) -> Option<&Routing> {
        match &self.state {
            State::Routing(r) | State::Early(r) => Some(r),
            _ => None,
        }
    }

    /// The routing data, while the call is being routed.
    pub fn routing_mut(&mut self) -> Option<&mut Routing> {
        match &mut self.state {
            State::Routing(r) | State::Early(r) => Some(r),
            _ => None,
        }
    }

    /// Moves to `next`, giving back the routing data when the call was
    /// being routed (to answer the caller with its template before it is
    /// dropped).
    pub fn leave_routing(&mut self, next: State) -> Option<Box<Routing>> {
        match std::mem::replace(&mut self.state, next) {
            State::Routing(r) | State::Early(r) => Some(r),
            _ => None,
        }
    }

    /// A provisional answer reached the caller: routing goes on, early.
    pub fn become_early(&mut self, now: Instant) {
        if let State::Routing(_) = self.state {
            let passing = State::Ended {
                answered: None,
                at: now,
            };
            if let Some(r) = self.leave_routing(passing) {
                self.state = State::Early(r);
            }
        }
    }

    /// The attempt in progress (the last one started).
    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The attempt whose 2xx answered the call, once one did.
    pub fn answered_attempt(&self) -> Option<&Attempt> {
        self.attempts.get(usize::from(self.answer()?.attempt))
    }

    /// Index of the first attempt of the wave in progress: past the last
    /// attempt once routing is over.
    pub fn wave(&self) -> usize {
        self.routing()
            .map_or(self.attempts.len(), |r| usize::from(r.wave))
    }

    /// Makes the attempts started from now on the wave in progress.
    pub fn start_wave(&mut self) {
        let next = u16::try_from(self.attempts.len()).unwrap_or(u16::MAX);
        if let Some(r) = self.routing_mut() {
            r.wave = next;
        }
    }

    /// Whether attempt `index` belongs to the wave in progress (none once
    /// routing is over).
    pub fn in_wave(&self, index: usize) -> bool {
        index >= self.wave() && index < self.attempts.len()
    }

    /// Whether a fork of the wave in progress waits and has not answered
    /// at all yet (the no-response timer watches these).
    pub fn wave_silent(&self) -> bool {
        self.attempts
            .iter()
            .skip(self.wave())
            .any(|a| a.tx.is_pending() && !a.tx.heard_back() && !a.tx.is_abandoned())
    }

    /// Whether an attempt of the wave in progress other than `except` is
    /// still waiting for its final answer.
    pub fn wave_pending(&self, except: usize) -> bool {
        self.attempts
            .iter()
            .enumerate()
            .skip(self.wave())
            .any(|(i, a)| i != except && a.tx.is_pending() && !a.tx.is_abandoned())
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.timers.next();
        let mut take = |d: Option<Instant>| {
            if let Some(d) = d {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        };
        take(self.uas.tx.next_deadline());
        for a in &self.attempts {
            take(a.tx.next_deadline());
            take(a.cancel.as_ref().and_then(|c| c.next_deadline()));
        }
        for r in &self.relays {
            take(r.server.next_deadline());
            take(r.client.next_deadline());
        }
        for o in self.own() {
            take(o.tx.next_deadline());
        }
        for l in self.local() {
            take(l.tx.next_deadline());
        }
        next
    }

    /// The call is over and what is left of it is absorbing
    /// retransmissions a tombstone (`tomb.rs`) can absorb
    /// as well: answered final responses that were acknowledged, 2xx
    /// retransmissions (their ACK can be rebuilt from them), and BYEs whose
    /// answer is known.
    pub fn can_rest(&self) -> bool {
        let bye_answered = |r: &Relay| {
            r.method == Method::Bye
                && r.final_code.is_some()
                && !r.server.is_pending()
                && !r.client.is_pending()
        };
        matches!(self.state, State::Ended { .. })
            && self.uas.tx.is_at_rest()
            && self
                .attempts
                .iter()
                .all(|a| a.tx.is_at_rest() && a.cancel.as_ref().is_none_or(|c| !c.is_pending()))
            && self.relays.iter().all(|r| r.is_done() || bye_answered(r))
            && self.relays.iter().filter(|r| !r.is_done()).count() <= 1
            && self.local().iter().all(|l| l.tx.is_terminated())
            && self.own().iter().all(|o| !o.tx.is_pending())
    }

    /// The status a retransmitted BYE gets again once the call rests.
    pub fn bye_answer(&self) -> Option<u16> {
        self.relays
            .iter()
            .find(|r| r.method == Method::Bye && !r.is_done())
            .and_then(|r| r.final_code)
    }

    /// The call is over and nothing is left to absorb retransmissions.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Ended { .. })
            && self.uas.tx.is_terminated()
            && self.attempts.iter().all(Attempt::is_done)
            && self.relays.is_empty()
            && self.local().is_empty()
            && self.own().is_empty()
    }

    /// Holds the call to what a 2xx settled (RFC 4028): the refresh must
    /// come before the deadline, or there is no session timer any more.
    pub fn arm_session(&mut self, interval: Option<u32>, now: Instant) {
        match interval {
            Some(i) if i > 0 => self
                .timers
                .set(TimerName::SessionExpires, super::session::deadline(now, i)),
            _ => self.timers.cancel(TimerName::SessionExpires),
        }
    }

    pub fn cancel_call_timers(&mut self) {
        self.timers.cancel(TimerName::MediaTimeout);
        self.timers.cancel(TimerName::Trying);
        self.timers.cancel(TimerName::NoResponse);
        self.timers.cancel(TimerName::MaxRinging);
        self.timers.cancel(TimerName::MaxDuration);
        self.timers.cancel(TimerName::SessionExpires);
    }
}

#[cfg(test)]
mod size_tests {
    /// Calls linger ~64*T1 after they end to absorb retransmissions, so
    /// their size is memory per call per second of load: keep it in check.
    #[test]
    fn call_and_parsed_message_sizes_stay_bounded() {
        assert!(
            std::mem::size_of::<super::Call>() <= 1448,
            "{}",
            std::mem::size_of::<super::Call>()
        );
        assert!(std::mem::size_of::<crate::sip::Message<'_>>() <= 512);
    }
}

#[cfg(test)]
mod dialog_text_tests {
    use super::*;

    fn text() -> DialogText {
        DialogText::write(
            8,
            false,
            [
                &mut |b| b.put_slice(b"cid@x"),
                &mut |b| b.put_slice(b"ours"),
                &mut |_| {},
                &mut |b| b.put_slice(b"<sip:a@sbc>;tag=ours"),
                &mut |_| {},
                &mut |_| {},
            ],
        )
    }

    #[test]
    fn parts_read_back_as_written_and_replacing_keeps_the_rest() {
        let t = text();
        assert_eq!(t.get(Part::CallId), b"cid@x");
        assert_eq!(t.get(Part::LocalTag), b"ours");
        assert_eq!(t.get(Part::RemoteTag), b"");
        assert_eq!(t.get(Part::LocalParty), b"<sip:a@sbc>;tag=ours");
        assert_eq!(t.get(Part::RemoteTarget), b"");
        let flow = Flow::udp("192.0.2.9:5060".parse().unwrap(), crate::net::LocalId(0));
        let mut leg = Leg::new(t, flow, TrunkId(0));
        assert_eq!(leg.remote_tag(), None, "not known yet");
        leg.set_remote(
            Some(b"theirs"),
            b"<sip:b@peer>;tag=theirs",
            Some(b"sip:b@192.0.2.9"),
        );
        assert_eq!(leg.remote_tag(), Some(&b"theirs"[..]));
        assert_eq!(leg.remote_party(), b"<sip:b@peer>;tag=theirs");
        assert_eq!(leg.remote_target(), b"sip:b@192.0.2.9");
        assert_eq!(leg.call_id(), b"cid@x");
        assert_eq!(leg.local_party(), b"<sip:a@sbc>;tag=ours");
        // A known but empty tag (RFC 2543 peers send none) is still known.
        leg.set_remote(Some(b""), b"<sip:b@peer>", None);
        assert_eq!(leg.remote_tag(), Some(&b""[..]));
        assert_eq!(
            leg.remote_target(),
            b"sip:b@192.0.2.9",
            "kept when not given"
        );
        leg.set_remote_target(b"sip:b@198.51.100.7");
        assert_eq!(leg.remote_tag(), Some(&b""[..]));
        assert_eq!(leg.remote_target(), b"sip:b@198.51.100.7");
        leg.set_local_party(b"<sip:a@other>;tag=ours");
        assert_eq!(leg.local_party(), b"<sip:a@other>;tag=ours");
        assert_eq!(leg.local_tag(), b"ours");
        assert_eq!(&leg.bytes(Part::RemoteParty)[..], b"<sip:b@peer>");
        leg.set_remote(None, b"", None);
        assert_eq!(leg.remote_tag(), None);
    }
}
