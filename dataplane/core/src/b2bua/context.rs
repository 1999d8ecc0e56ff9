//! The state one shard's engine holds: the [`Ctx`] every handler uses
//! (identifiers, outbox, counters, the policy, media ports, events) and
//! the [`Engine`] itself (the context, the call table, the transactions
//! outside calls). Handlers import this module, never `engine`, whose
//! public API calls into them: imports point one way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::build::{LocalParts, response_dest_for};
use super::event::Event;
use super::ids::{IdMinter, ShardId};
use super::standalone::Standalone;
use super::table::CallTable;
use crate::media::MediaPorts;
use crate::net::{Flow, LocalId, Outbox};
use crate::policy::{MediaPolicy, Policy};
use crate::refusal::Refusal;
use crate::sip::{HeaderName, Method, Request};
use crate::stats::ShardStats;

/// Everything call handling needs besides the call itself.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub shard: ShardId,
    pub shards: u16,
    pub ids: IdMinter,
    pub out: Outbox,
    pub stats: Arc<ShardStats>,
    pub policy: Arc<Policy>,
    pub locals: Vec<LocalParts>,
    /// This shard's media ports (`None`: no relay configured).
    pub media: Option<MediaPorts>,
    /// The media settings the ports were set up with.
    pub media_policy: Option<MediaPolicy>,
    /// Events waiting for [`Engine::poll_event`].
    pub events: VecDeque<Event>,
    /// The time of the input being handled (set by `handle_datagram`).
    pub now: Option<Instant>,
    /// How often strangers are answered.
    pub strangers: super::strangers::StrangerLimit,
    /// Share of new calls admitted, per mille ([`crate::overload`]).
    pub admit: u16,
    /// This shard's share of each trunk's `max_cps`, by trunk name and
    /// direction.
    pub call_rate: std::collections::HashMap<Arc<str>, [super::strangers::Bucket; 2]>,
    /// Where the registered accounts this shard owns are (the accounts of
    /// the extensions whose hash names it; see `lookup/`).
    pub location: crate::registrar::Location,
    /// Messages for other shards, waiting for
    /// [`Engine::poll_shard_message`].
    pub to_shards: VecDeque<(ShardId, super::lookup::message::ShardMessage)>,
}

impl Ctx {
    /// The shard that owns the bindings of `extension`.
    pub fn extension_owner(&self, extension: &str) -> ShardId {
        self.ids.secrets().owner(extension.as_bytes(), self.shards)
    }

    pub fn local(&self, id: LocalId) -> &LocalParts {
        // `locals` is never empty (see Engine::new).
        &self.locals[usize::from(id.0).min(self.locals.len() - 1)]
    }

    /// Reports an event (drained by [`Engine::poll_event`]).
    pub fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Queues a message for the I/O layer.
    pub fn send(&mut self, dest: Flow, data: &[u8]) {
        self.out.push(dest, data);
    }

    /// A response to `req` built from the request itself (RFC 3261
    /// §8.2.6): its Via (with received/rport), From, To (with a tag of ours
    /// when it had none), Call-ID and CSeq, then `extra`.
    pub fn response_to(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        status: (u16, &[u8]),
        extra: &[(HeaderName, &[u8])],
    ) -> Bytes {
        crate::sip::seal(self.write_response(req, origin, status, extra))
    }

    /// [`Ctx::response_to`] sent to `dest` once and not kept: written in
    /// the reused buffer, with no allocation of its own.
    pub fn send_response(
        &mut self,
        dest: Flow,
        req: &Request<'_>,
        origin: Flow,
        status: (u16, &[u8]),
        extra: &[(HeaderName, &[u8])],
    ) {
        let buf = self.write_response(req, origin, status, extra);
        self.send(dest, &buf);
        crate::sip::recycle(buf);
    }

    fn write_response(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        (code, reason): (u16, &[u8]),
        extra: &[(HeaderName, &[u8])],
    ) -> BytesMut {
        let mut tag = [0u8; super::ids::TAG_LEN];
        self.ids.put_tag(&mut &mut tag[..]);
        let mut buf = crate::sip::buffer(super::template::repeated_len(req, false) + 192);
        let mut w =
            super::template::respond_once(&mut buf, req, origin.remote, (code, reason), Some(&tag));
        for (name, value) in extra {
            w.header(*name, &[value]);
        }
        w.body(b"");
        buf
    }

    /// A response to `req` that needs no transaction (RFC 3261 §8.2.6,
    /// §16.7: errors before any state exists). `extra` adds headers.
    pub fn respond_stateless(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        code: u16,
        reason: &[u8],
        extra: &[(HeaderName, &[u8])],
    ) {
        self.send_response(
            response_dest_for(req, origin, &self.policy),
            req,
            origin,
            (code, reason),
            extra,
        );
        if code >= 200 {
            self.stats.final_sent(code);
        }
    }

    /// Whether a source that matches no trunk may get an answer now (its
    /// rate and the shard's, [`crate::policy::StrangerAnswers`]); when it
    /// may not, the drop is counted.
    pub fn may_answer_stranger(&mut self, origin: Flow) -> bool {
        let Some(now) = self.now else {
            return true;
        };
        let limits = self.policy.acl.strangers;
        let secrets = *self.ids.secrets();
        if self
            .strangers
            .allow(now, origin.remote.ip(), limits, &secrets)
        {
            return true;
        }
        self.stats.discard(crate::stats::Discard::StrangerLimited);
        false
    }

    /// One new call with `trunk` in direction `d` under its `max_cps`
    /// (this shard's share of it, a token bucket per direction): false
    /// when the trunk is at its rate.
    pub fn call_token(
        &mut self,
        trunk: &crate::policy::Trunk,
        d: crate::stats::Direction,
        now: std::time::Instant,
    ) -> bool {
        let Some(cps) = trunk.max_cps else {
            return true;
        };
        let share = u64::from(cps) * 1000 / u64::from(self.shards.max(1));
        // The trunk's name is cloned once, when its buckets are made.
        if !self.call_rate.contains_key(&trunk.name) {
            self.call_rate
                .insert(Arc::clone(&trunk.name), Default::default());
        }
        self.call_rate
            .get_mut(&trunk.name)
            .and_then(|b| b.get_mut(d as usize))
            .is_some_and(|b| b.take_milli(now, share))
    }

    /// Refuses a request that has no transaction yet: counted under its
    /// label, answered as the refusal says (never an ACK, RFC 3261
    /// §17.1.1.3, nor what the ACL drops).
    pub fn refuse(&mut self, req: &Request<'_>, origin: Flow, why: Refusal) {
        self.refuse_with(req, origin, why, &[]);
    }

    /// [`Ctx::refuse`] with headers of the request's own (420's
    /// Unsupported).
    pub fn refuse_with(
        &mut self,
        req: &Request<'_>,
        origin: Flow,
        why: Refusal,
        extra: &[(HeaderName, &[u8])],
    ) {
        self.stats.refused(why);
        if req.method == Method::Ack || !why.is_answered() {
            return;
        }
        let from_stranger = why == Refusal::UnknownSource
            || (matches!(why, Refusal::InsecureSips | Refusal::InsecureSipsTarget)
                && self.policy.trunk_on(&origin).is_none());
        if from_stranger && !self.may_answer_stranger(origin) {
            return;
        }
        let mut n = itoa::Buffer::new();
        let mut headers: SmallVec<[(HeaderName, &[u8]); 4]> = SmallVec::new();
        headers.extend_from_slice(why.headers());
        headers.extend_from_slice(extra);
        if let Some((name, value)) = why.policy_header(&self.policy.call_timers) {
            headers.push((name, n.format(value).as_bytes()));
        }
        self.respond_stateless(req, origin, why.status(), why.reason().as_bytes(), &headers);
    }
}

/// One shard's B2BUA. See the [module documentation](super) for the loop
/// that drives it.
#[derive(Debug)]
pub struct Engine {
    pub(crate) ctx: Ctx,
    pub(crate) calls: CallTable,
    /// Transactions outside calls, and alarms.
    pub(crate) standalone: Standalone,
    /// The trunk health probes this shard sends.
    pub(crate) probes: super::probe::state::Probes,
    /// The SBC's registrations with the trunks this shard owns.
    pub(crate) upstreams: super::upstream::state::Upstreams,
    /// Keepalives to the registered phones this shard looks after.
    pub(crate) keepalives: super::keepalive::state::Keepalives,
    /// The registrar's nonces and lockout table.
    pub(crate) registrar: crate::registrar::RegistrarState,
    /// When the engine may next look through its calls for peers that
    /// are no trunk and could not be sent to.
    pub(crate) peer_scan_at: Option<Instant>,
    /// Those peers, gathered until then.
    pub(crate) unsent_peers: Vec<(crate::net::Transport, std::net::SocketAddr)>,
}
