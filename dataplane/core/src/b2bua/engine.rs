//! The per-shard B2BUA engine: receives datagrams and timeouts, owns the
//! call table, and queues what to send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::build::LocalParts;
use super::context::{Ctx, Engine};
use super::event::Event;
use super::ids::{IdMinter, Secrets, ShardId};
use super::standalone::Standalone;
use super::table::CallTable;
use crate::media::{Forward, MediaDrop, MediaPorts, PortPlan, PortPool};
use crate::net::{Flow, Outbox, Transmit};
use crate::policy::Policy;
use crate::refusal::Refusal;
use crate::sip::{
    HeaderName, Message, Method, ParseError, Request, RequestError, Response, Writer,
};
use crate::stats::{Discard, ShardStats};
use std::collections::VecDeque;

/// What became of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Processed here.
    Done,
    /// Belongs to a call owned by another shard: hand the bytes over.
    HandOff(ShardId),
}

/// Shortest time between two looks through the calls for peers that are
/// no configured trunk (see [`Engine::handle_unsent`]).
pub const PEER_SCAN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Most peers that are no trunk gathered for one look; more in that time
/// are left to their calls' timers.
pub const UNSENT_PEERS: usize = 64;

impl Engine {
    pub fn new(
        shard: ShardId,
        shards: u16,
        secrets: Secrets,
        policy: Arc<Policy>,
        stats: Arc<ShardStats>,
    ) -> Self {
        let locals = locals_of(&policy);
        let media_policy = policy.media.clone();
        let media = media_policy.as_ref().and_then(|m| {
            let plan = PortPlan::new(m.first_port, m.last_port, shards.max(1))?;
            Some(MediaPorts::new(PortPool::new(plan, shard.0)))
        });
        Engine {
            ctx: Ctx {
                shard,
                shards: shards.max(1),
                ids: IdMinter::new(secrets, shard),
                out: Outbox::default(),
                stats,
                policy,
                locals,
                media,
                media_policy,
                events: VecDeque::new(),
                now: None,
                strangers: Default::default(),
                call_rate: Default::default(),
                admit: 1000,
                location: Default::default(),
                to_shards: VecDeque::new(),
            },
            calls: CallTable::default(),
            standalone: Standalone::default(),
            probes: Default::default(),
            upstreams: Default::default(),
            keepalives: Default::default(),
            registrar: Default::default(),
            peer_scan_at: None,
            unsent_peers: Vec::new(),
        }
    }

    /// Shares the lockout table of the other shards (a source's requests
    /// reach any shard). By default each engine has its own.
    pub fn set_lockout(&mut self, lockout: Arc<crate::registrar::Lockout>) {
        self.registrar.lockout = lockout;
    }

    /// Installs a configuration snapshot (the shard calls it with the one
    /// it starts with too). New calls use it; calls in progress keep the
    /// one they started with. The trunk health probes and the SBC's own
    /// registrations are planned from it.
    pub fn set_policy(&mut self, now: Instant, policy: Arc<Policy>) {
        self.ctx.locals = locals_of(&policy);
        self.ctx.policy = policy;
        self.sync_probes(now);
        self.sync_upstreams(now);
        self.sync_keepalives(now);
        self.sync_bindings();
    }

    /// The share of new calls to admit, per mille (the shard's
    /// [`crate::overload::Governor`] sets it from its load); the rest get
    /// 503 with Retry-After before any call state exists.
    pub fn set_admission(&mut self, permille: u16) {
        self.ctx.admit = permille.min(1000);
        self.ctx.stats.admission.store(
            i64::from(self.ctx.admit),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.ctx.policy
    }

    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.ctx.stats
    }

    /// Calls held by this shard (including ones lingering to absorb
    /// retransmissions).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Of [`Engine::calls`], the ended ones that rest as tombstones until
    /// their 64*T1 is over.
    pub fn resting_calls(&self) -> usize {
        self.calls.resting()
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, origin: Flow, data: &[u8]) -> Disposition {
        self.ctx.now = Some(now);
        if !self.ctx.policy.acl.permits(origin.remote.ip()) {
            // BRIEF §8: denied sources are dropped without an answer.
            self.ctx.stats.refused(Refusal::AclDenied);
            return Disposition::Done;
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(ParseError::Keepalive) => return Disposition::Done,
            Err(e) => {
                self.ctx
                    .stats
                    .parse_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.malformed(data, origin, e.into());
                return Disposition::Done;
            }
        };
        if self.ctx.shards > 1 {
            // A REGISTER goes to the shard that owns its extension's
            // bindings; everything else to the owner of its Call-ID.
            let owner = self.register_owner(&msg).or_else(|| {
                msg.value(HeaderName::CallId)
                    .map(|id| self.ctx.ids.secrets().owner(id, self.ctx.shards))
            });
            if let Some(owner) = owner
                && owner != self.ctx.shard
            {
                return Disposition::HandOff(owner);
            }
        }
        ShardStats::inc(&self.ctx.stats.messages_in);
        if msg.is_request() {
            match Request::parse(msg) {
                Ok(req) => self.on_request(now, req, origin),
                Err(e) => {
                    self.ctx
                        .stats
                        .parse_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.malformed(data, origin, e);
                }
            }
        } else {
            match Response::parse(msg) {
                Ok(resp) => self.on_response(now, resp, origin),
                Err(_) => {
                    self.ctx
                        .stats
                        .parse_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.ctx.stats.discard(Discard::MalformedResponse);
                }
            }
        }
        Disposition::Done
    }

    /// Feeds one media packet received on our port `port` (RTP or RTCP of
    /// a pair this shard owns). Returns where to send it, or `None` when it
    /// is dropped (counted by reason).
    pub fn handle_media(
        &mut self,
        now: Instant,
        port: u16,
        src: SocketAddr,
        data: &[u8],
    ) -> Option<Forward> {
        let ports = self.ctx.media.as_ref()?;
        let stats = &self.ctx.stats;
        let Some((binding, rtcp)) = ports.lookup(port) else {
            stats.media_drop(MediaDrop::UnknownPort);
            return None;
        };
        let Some(session) = self
            .calls
            .get_mut(binding.call)
            .and_then(|c| c.media.as_mut())
        else {
            stats.media_drop(MediaDrop::UnknownPort);
            return None;
        };
        match session.on_packet(now, binding, rtcp, src, data, ports) {
            Ok(forward) => {
                let dir = binding.leg as usize;
                stats.media_packets[dir].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                stats.media_bytes[dir]
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Some(forward)
            }
            Err(drop) => {
                stats.media_drop(drop);
                None
            }
        }
    }

    /// The media ports this shard relays (bound by the I/O layer).
    pub fn media_ports(&self) -> Option<std::ops::Range<u32>> {
        let ports = self.ctx.media.as_ref()?;
        Some(ports.pool.plan().ports_of(self.ctx.shard.0))
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(r) = self.calls.pop_due(now) {
            // Entries of cancelled timers still come due; only run the
            // call's timers when one of them really is.
            if let Some(call) = self.calls.get_mut(r)
                && call.next_deadline().is_some_and(|d| d <= now)
            {
                super::timers::on_timer(&mut self.ctx, call, now);
            }
            self.after(r);
        }
        if self.standalone.next_deadline().is_some_and(|d| d <= now) {
            self.standalone_timeout(now);
        }
        if self.unsent_scan_due().is_some_and(|at| at <= now) {
            self.scan_unsent_peers(now);
        }
    }

    /// When the peers gathered by [`Engine::handle_unsent`] may be looked
    /// for (none gathered: never).
    fn unsent_scan_due(&self) -> Option<Instant> {
        self.peer_scan_at.filter(|_| !self.unsent_peers.is_empty())
    }

    /// What this shard sent to `remote` over the stream transport
    /// `transport` never left: the connection could not be opened, or its
    /// TLS handshake failed (RFC 3261 §18.4: a transport error). Calls
    /// whose INVITE went there and heard nothing back take it as a
    /// failure now, not at their no-response timer: a 503 for a trunk
    /// (RFC 3261 §8.1.3.1), and the call fails over where its route says
    /// so; a 480 for a phone, whose extension's other phones still ring.
    ///
    /// This looks through every call. For a configured trunk's address
    /// that happens at once: a trunk's connection failing is rare. Anyone
    /// can make an answer of ours undeliverable, though, so other peers
    /// are gathered (up to [`UNSENT_PEERS`]) and looked for together at
    /// the next [`Engine::handle_timeout`] that is due
    /// ([`Engine::poll_timeout`] says when: now, or [`PEER_SCAN_EVERY`]
    /// after the last look).
    pub fn handle_unsent(
        &mut self,
        now: Instant,
        transport: crate::net::Transport,
        remote: std::net::SocketAddr,
    ) {
        let to = (transport, remote);
        if self.is_trunk(transport, remote) {
            return self.fail_unsent(now, &[to]);
        }
        if !self.unsent_peers.contains(&to) && self.unsent_peers.len() < UNSENT_PEERS {
            self.unsent_peers.push(to);
        }
        if self.peer_scan_at.is_none_or(|at| at < now) {
            self.peer_scan_at = Some(now);
        }
    }

    /// Looks for the calls waiting on the peers gathered by
    /// [`Engine::handle_unsent`], and allows the next look no sooner than
    /// [`PEER_SCAN_EVERY`] from now.
    fn scan_unsent_peers(&mut self, now: Instant) {
        let peers = std::mem::take(&mut self.unsent_peers);
        self.peer_scan_at = Some(now + PEER_SCAN_EVERY);
        self.fail_unsent(now, &peers);
        self.unreachable_bindings(&peers);
    }

    /// Phones (and gateways) bound over a stream connection to one of
    /// `peers` are unreachable until they register again: that connection
    /// is gone and none can be opened to them (behind a NAT, or over
    /// WebSocket), so a flow that failed (RFC 5626 §4.4) is not rung. A
    /// CRLF keepalive that cannot be sent finds such phones as an OPTIONS
    /// one does.
    fn unreachable_bindings(&mut self, peers: &[(crate::net::Transport, std::net::SocketAddr)]) {
        let gone: Vec<Arc<str>> = self
            .ctx
            .location
            .iter()
            .filter(|b| {
                b.reachable
                    && b.flow.transport.is_reliable()
                    && peers.contains(&(b.flow.transport, b.flow.remote))
            })
            .map(|b| Arc::clone(&b.account))
            .collect();
        for account in gone {
            self.record(crate::registrar::Change::Reachable {
                account,
                reachable: false,
            });
        }
    }

    /// The calls with an attempt to one of `peers` that never heard back
    /// take that attempt as failed.
    fn fail_unsent(
        &mut self,
        now: Instant,
        peers: &[(crate::net::Transport, std::net::SocketAddr)],
    ) {
        let waiting = self.calls.calls_where(|c| {
            c.attempts.iter().any(|a| {
                let d = a.tx.dest();
                peers.contains(&(d.transport, d.remote)) && !a.tx.heard_back()
            })
        });
        for r in waiting {
            if let Some(call) = self.calls.get_mut(r) {
                super::outbound::attempts_unsent(&mut self.ctx, call, peers, now);
            }
            self.after(r);
        }
    }

    /// Whether `remote` over `transport` is a configured trunk's address
    /// (not one that registers to the SBC).
    pub fn is_trunk(&self, transport: crate::net::Transport, remote: std::net::SocketAddr) -> bool {
        self.ctx
            .policy
            .trunks
            .iter()
            .any(|t| !t.dynamic && t.transport == transport && t.address == remote)
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.calls.next_timer(),
            self.standalone.next_deadline(),
            self.unsent_scan_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Copies the next datagram to send into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            match self.ctx.out.poll_transmit(buf)? {
                Ok(t) => {
                    ShardStats::inc(&self.ctx.stats.messages_out);
                    return Some(t);
                }
                Err(_too_big) => self.ctx.stats.discard(Discard::Oversized),
            }
        }
    }

    /// Where the next message to send goes, without taking it.
    pub fn peek_transmit(&self) -> Option<Flow> {
        self.ctx.out.front()
    }

    /// The next message to send, as it is (for stream transports, which
    /// queue it on a connection rather than copy it into a datagram).
    pub fn poll_outgoing(&mut self) -> Option<crate::net::Outgoing> {
        let o = self.ctx.out.pop()?;
        ShardStats::inc(&self.ctx.stats.messages_out);
        Some(o)
    }

    /// The next event (call started, answered, ended), in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.ctx.events.pop_front()
    }

    /// Datagrams waiting in the outbox.
    pub fn pending_transmits(&self) -> usize {
        self.ctx.out.len()
    }

    /// Reschedules a call after an event; drops it when it is over, or
    /// leaves its tombstone when all that is left is absorbing.
    pub(crate) fn after(&mut self, r: super::ids::CallRef) {
        let Some(call) = self.calls.get(r) else {
            return;
        };
        if call.is_finished() {
            self.calls.remove(r);
        } else if let (true, Some(ended)) = (call.can_rest(), call.ended_at()) {
            // RFC 3261 §17: what is left absorbs retransmissions for 64*T1.
            let until = ended + call.policy.timers.t1x64();
            self.calls.bury(r, until);
        } else {
            self.calls.schedule(r);
        }
    }

    /// 400/505 for a request that failed parsing; responses are dropped.
    fn malformed(&mut self, data: &[u8], origin: Flow, err: RequestError) {
        let Some(msg) = Message::salvage(data) else {
            self.ctx.stats.discard(if data.starts_with(b"SIP/") {
                Discard::MalformedResponse
            } else {
                Discard::Unanswerable
            });
            return;
        };
        let method = msg.request_line().map(|l| l.method);
        if method == Some(Method::Ack) {
            self.ctx.stats.discard(Discard::Unanswerable);
            return;
        }
        if self.ctx.policy.trunk_on(&origin).is_none() && !self.ctx.may_answer_stranger(origin) {
            return;
        }
        let Some(resp) = stateless_error(&msg, err, &mut self.ctx.ids) else {
            self.ctx.stats.discard(Discard::Unanswerable);
            return;
        };
        self.ctx.stats.refused(Refusal::Malformed(err));
        self.ctx.stats.final_sent(err.status());
        // Never to an address the broken message names: back where it came from.
        self.ctx.send(origin, &resp);
    }
}

fn locals_of(policy: &Policy) -> Vec<LocalParts> {
    let mut v: Vec<LocalParts> = policy
        .listeners
        .iter()
        .map(|l| LocalParts::new(&l.advertise, l.transport))
        .collect();
    if v.is_empty() {
        v.push(LocalParts::new(
            "127.0.0.1:5060",
            crate::net::Transport::Udp,
        ));
    }
    v
}

/// An error response built from whatever headers of a broken request can be
/// found, copied verbatim; `None` when Via, From, To, Call-ID or CSeq is
/// missing. Sent to the source address (never to an address the message
/// names, so a forged Via cannot aim it elsewhere).
fn stateless_error(msg: &Message<'_>, err: RequestError, ids: &mut IdMinter) -> Option<Bytes> {
    let mut buf = crate::sip::buffer(msg.as_bytes().len().min(2048) + 128);
    let mut w = Writer::new(&mut buf);
    w.status_line(err.status(), err.reason().as_bytes());
    let mut have_via = false;
    for h in msg.all(HeaderName::Via) {
        w.copy(h);
        have_via = true;
    }
    if !have_via {
        return None;
    }
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        let h = msg.header(name)?;
        if name == HeaderName::To && !h.value.windows(4).any(|w| w.eq_ignore_ascii_case(b"tag=")) {
            let tag = ids.tag();
            w.header(HeaderName::To, &[h.value, b";tag=", &tag]);
        } else {
            w.copy(h);
        }
    }
    w.body(b"");
    Some(crate::sip::seal(buf))
}
