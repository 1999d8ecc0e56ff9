//! Transactions that belong to no call, and the SBC's own timers that are
//! not a call's.
//!
//! - Requests the SBC sends on its own (OPTIONS health probes, REGISTER to
//!   a provider): [`Engine::send_request`](super::Engine::send_request)
//!   runs them through a client transaction; the final response, or the
//!   timeout, comes back as an event with the transaction's [`TxId`].
//!   Their Call-IDs name this shard ([`IdMinter::own_call_id`]), so
//!   responses reach it whatever socket they arrive on; they are matched
//!   by top Via branch and CSeq method (RFC 3261 §17.1.3).
//! - Requests received outside dialogs that the SBC answers itself
//!   (OPTIONS, REGISTER): a server transaction per request (RFC 3261
//!   §17.2.3: branch, sent-by and method), so a retransmission gets the
//!   same answer and is not processed twice.
//! - Alarms: deadlines of the engine's own features (registration
//!   refresh, probe interval), and of the embedding's, reported as events
//!   when due.
//!
//! Identifiers here are their own space: a [`TxId`] is never a call.
//!
//! [`IdMinter::own_call_id`]: super::IdMinter::own_call_id

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use std::sync::Arc;

use super::wheel::Wheel;
use crate::net::{Flow, Outbox};
use crate::sip::{HeaderName, Method};
use crate::transaction::{ClientNonInvite, ResponseAction, ServerNonInvite, TimerConfig, TxEvent};

/// A transaction outside calls, unique for the life of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// A deadline a feature outside calls asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alarm {
    /// A deadline set with `Engine::set_alarm` for the embedding's own
    /// use, reported back as [`Event::Alarm`](super::Event::Alarm).
    Custom(u32),
    /// Send the SBC's next REGISTER to trunk `n`: the refresh at about
    /// half the granted expiry, or the retry after a failure. The engine
    /// plans and consumes these itself (see `upstream/`).
    Register(u16),
    /// A second of the registered phones' keepalives (see
    /// `keepalive/`); consumed by the engine.
    Keepalive,
    /// Send the next health probe (OPTIONS) to trunk `n`. The engine
    /// plans these itself from the trunks' `probe` settings and consumes
    /// them (see `probe/`): they are not reported as events.
    ProbeInterval(u16),
}

/// A request the SBC sends on its own, outside any call.
#[derive(Debug, Clone)]
pub struct OwnRequest {
    /// A non-INVITE method (OPTIONS, REGISTER).
    pub method: Method,
    /// Where it goes.
    pub flow: Flow,
    pub request_uri: Bytes,
    /// From and To values (name-addr or URI); From gets our tag.
    pub from: Bytes,
    pub to: Bytes,
    /// `None`: a fresh Call-ID naming this shard. A registration's
    /// refreshes keep the one it started with (RFC 3261 §10.2.4): one from
    /// `Engine::own_call_id` comes back to this shard whatever socket its
    /// responses arrive on; any other is matched only on the shard its
    /// hash names.
    pub call_id: Option<Bytes>,
    pub cseq: u32,
    /// More headers (Contact, Expires, Authorization...), in order.
    pub headers: Vec<(HeaderName, Bytes)>,
}

/// How a transaction outside calls ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its final response (status and the whole message, to be read by
    /// the feature that sent the request: challenges, Expires, Contact).
    Response { code: u16, message: Bytes },
    /// Timer F: no final response in 64*T1.
    Timeout,
}

#[derive(Debug)]
struct Client {
    method: Method,
    branch: Bytes,
    tx: ClientNonInvite,
    /// The final response was reported.
    done: bool,
}

/// Writes the key of a received request's server transaction (RFC 3261
/// §17.2.3: branch, sent-by and method) into `key`, so a lookup reuses one
/// buffer and allocates nothing.
fn server_key(key: &mut Vec<u8>, branch: &[u8], sent_by: &[u8], method: Method) {
    key.clear();
    key.extend_from_slice(method.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(sent_by);
    key.push(0);
    key.extend_from_slice(branch);
}

/// What a deadline names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Client(TxId),
    Server(ServerRef),
    Alarm(Alarm),
}

/// A server transaction's slot, and the generation it was filled in (a
/// deadline of an earlier occupant finds another generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ServerRef {
    index: u32,
    generation: u32,
}

#[derive(Debug, Default)]
struct ServerSlot {
    generation: u32,
    /// The transaction and its key.
    held: Option<(Arc<[u8]>, ServerNonInvite)>,
}

#[derive(Debug, Default)]
pub(crate) struct Standalone {
    next: u64,
    clients: HashMap<TxId, Client>,
    /// Branch of each client transaction.
    branches: HashMap<Bytes, TxId>,
    /// Server transactions in slots reused as they end (no hashing to
    /// reach one from its deadline), found by key through `server_keys`.
    servers: Vec<ServerSlot>,
    free_servers: Vec<u32>,
    server_keys: HashMap<Arc<[u8]>, ServerRef>,
    /// Scratch for building keys to look up.
    key: Vec<u8>,
    /// Deadlines, checked against the entry when they come due (an entry
    /// whose deadline moved just finds nothing to do). A wheel: tens of
    /// thousands of server transactions wait out Timer J at once, and a
    /// heap's pop would walk its depth through cold memory for each.
    due: Wheel<Due>,
}

impl Standalone {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A free slot for a server transaction.
    fn server_slot(&mut self) -> Option<ServerRef> {
        if let Some(index) = self.free_servers.pop() {
            let slot = self.servers.get(usize::try_from(index).ok()?)?;
            return Some(ServerRef {
                index,
                generation: slot.generation,
            });
        }
        let index = u32::try_from(self.servers.len()).ok()?;
        self.servers.push(ServerSlot::default());
        Some(ServerRef {
            index,
            generation: 0,
        })
    }

    fn server_mut(&mut self, r: ServerRef) -> Option<&mut ServerSlot> {
        self.servers
            .get_mut(usize::try_from(r.index).ok()?)
            .filter(|s| s.generation == r.generation && s.held.is_some())
    }

    /// Starts a client transaction for `request` (`method`, top Via
    /// branch `branch`), already built, sent to `flow`.
    pub fn start_client(
        &mut self,
        (now, cfg): (Instant, &TimerConfig),
        (method, branch): (Method, Bytes),
        flow: Flow,
        request: Bytes,
        out: &mut Outbox,
    ) -> TxId {
        let id = TxId(self.id());
        let tx = ClientNonInvite::start(now, cfg, flow, request, out);
        if let Some(d) = tx.next_deadline() {
            self.due.insert(d, Due::Client(id));
        }
        self.branches.insert(branch.clone(), id);
        self.clients.insert(
            id,
            Client {
                method,
                branch,
                tx,
                done: false,
            },
        );
        id
    }

    /// A response whose top Via branch is `branch`: `Some` with the
    /// outcome when it is the final response of one of ours (first time),
    /// `None` when it is not ours, a provisional, or a retransmission.
    pub fn on_response(
        &mut self,
        now: Instant,
        cfg: &TimerConfig,
        branch: &[u8],
        method: Method,
        code: u16,
        message: &[u8],
    ) -> Option<Option<(TxId, Outcome)>> {
        let id = *self.branches.get(branch)?;
        let client = self.clients.get_mut(&id)?;
        if client.method != method {
            return None;
        }
        let action = client.tx.on_response(now, cfg, code);
        if let Some(d) = client.tx.next_deadline() {
            self.due.insert(d, Due::Client(id));
        }
        if action == ResponseAction::Absorb || code < 200 || client.done {
            return Some(None);
        }
        client.done = true;
        let message = Bytes::copy_from_slice(message);
        Some(Some((id, Outcome::Response { code, message })))
    }

    /// Abandons the requests in `in_flight` whose name `keep` no longer
    /// wants, and forgets them.
    pub(crate) fn abandon_unless(&mut self, in_flight: &mut InFlight, keep: impl Fn(&str) -> bool) {
        in_flight.by_tx.retain(|tx, name| {
            let kept = keep(name);
            if !kept {
                self.abandon(*tx);
            }
            kept
        });
        in_flight.by_name.retain(|name, _| keep(name));
    }

    /// Abandons every request in `in_flight`, and forgets them.
    pub(crate) fn abandon_all(&mut self, in_flight: &mut InFlight) {
        self.abandon_unless(in_flight, |_| false);
    }

    /// Drops a client transaction: no more retransmissions, no outcome;
    /// a late response to it is a stray.
    pub fn abandon(&mut self, id: TxId) {
        if let Some(c) = self.clients.remove(&id) {
            self.branches.remove(&c.branch);
        }
    }

    /// A client transaction of ours has this branch.
    pub fn has_branch(&self, branch: &[u8]) -> bool {
        self.branches.contains_key(branch)
    }

    /// The server transaction of a received request, if it is a
    /// retransmission: its last answer is sent again.
    pub fn retransmission(
        &mut self,
        branch: &[u8],
        sent_by: &[u8],
        method: Method,
        out: &mut Outbox,
    ) -> bool {
        server_key(&mut self.key, branch, sent_by, method);
        let Some(&r) = self.server_keys.get(&self.key[..]) else {
            return false;
        };
        if let Some((_, tx)) = self.server_mut(r).and_then(|s| s.held.as_mut()) {
            tx.on_retransmission(out);
        }
        true
    }

    /// Answers a received request through a new server transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &mut self,
        now: Instant,
        cfg: &TimerConfig,
        (branch, sent_by, method): (&[u8], &[u8], Method),
        dest: Flow,
        code: u16,
        response: Bytes,
        out: &mut Outbox,
    ) {
        server_key(&mut self.key, branch, sent_by, method);
        let key: Arc<[u8]> = self.key.as_slice().into();
        let mut tx = ServerNonInvite::new(dest);
        // The answer is sealed at its own size and the outbox copies it:
        // what stays for 64*T1 is that one allocation.
        tx.respond(now, cfg, code, response, out);
        let Some(r) = self.server_slot() else {
            // More than u32::MAX transactions: answered, not held.
            return;
        };
        if let Some(d) = tx.next_deadline() {
            self.due.insert(d, Due::Server(r));
        }
        if let Some(old) = self.server_keys.insert(Arc::clone(&key), r) {
            // The same key again (a request answered while an earlier
            // transaction of that key lived): the older is dropped, the
            // key now names the new one.
            let _ = self.drop_server(old);
        }
        if let Some(slot) = self.servers.get_mut(r.index as usize) {
            slot.held = Some((key, tx));
        }
    }

    /// Frees a server transaction's slot and returns its key, the
    /// caller's to forget.
    fn drop_server(&mut self, r: ServerRef) -> Option<Arc<[u8]>> {
        let slot = self.server_mut(r)?;
        let (key, _) = slot.held.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free_servers.push(r.index);
        Some(key)
    }

    /// Asks for [`Alarm`] at `at`.
    pub fn set_alarm(&mut self, at: Instant, alarm: Alarm) {
        self.due.insert(at, Due::Alarm(alarm));
    }

    /// The next deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.next()
    }

    /// Runs what is due at `now`; `report` gets the timeouts of client
    /// transactions and the alarms.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Outbox,
        report: &mut dyn FnMut(Timed),
    ) {
        while let Some((_, due)) = self.due.pop_due(now) {
            match due {
                Due::Alarm(a) => report(Timed::Alarm(a)),
                Due::Client(id) => self.client_timer(id, now, cfg, out, report),
                Due::Server(id) => self.server_timer(id, now),
            }
        }
    }

    fn client_timer(
        &mut self,
        id: TxId,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Outbox,
        report: &mut dyn FnMut(Timed),
    ) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let event = client.tx.on_timer(now, cfg, out);
        if event == Some(TxEvent::Timeout) && !client.done {
            client.done = true;
            report(Timed::Outcome(id, Outcome::Timeout));
        }
        if client.tx.is_terminated() {
            if let Some(c) = self.clients.remove(&id) {
                self.branches.remove(&c.branch);
            }
        } else if let Some(d) = client.tx.next_deadline() {
            self.due.insert(d, Due::Client(id));
        }
    }

    fn server_timer(&mut self, r: ServerRef, now: Instant) {
        let Some((_, tx)) = self.server_mut(r).and_then(|s| s.held.as_mut()) else {
            return;
        };
        tx.on_timer(now);
        if tx.is_terminated() {
            if let Some(key) = self.drop_server(r) {
                self.server_keys.remove(&key);
            }
        } else if let Some(d) = tx.next_deadline() {
            self.due.insert(d, Due::Server(r));
        }
    }

    /// Transactions held (clients, servers).
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.server_keys.len())
    }
}

/// What came due in [`Standalone::on_timeout`].
#[derive(Debug)]
pub(crate) enum Timed {
    Outcome(TxId, Outcome),
    Alarm(Alarm),
}

/// One feature's requests outside calls (health probes, the SBC's own
/// registrations, keepalives): at most one in flight per name (a trunk,
/// an account), found by name and by transaction.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    by_tx: HashMap<TxId, Arc<str>>,
    by_name: HashMap<Arc<str>, TxId>,
}

impl InFlight {
    /// `tx` is now `name`'s request in flight.
    pub(crate) fn start(&mut self, name: Arc<str>, tx: TxId) {
        if let Some(old) = self.by_name.insert(Arc::clone(&name), tx) {
            self.by_tx.remove(&old);
        }
        self.by_tx.insert(tx, name);
    }

    /// Whether no request is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_tx.is_empty()
    }

    /// `name`'s request in flight, forgotten (the caller abandons it).
    pub(crate) fn take(&mut self, name: &str) -> Option<TxId> {
        let tx = self.by_name.remove(name)?;
        self.by_tx.remove(&tx);
        Some(tx)
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The outcome of `tx` came: the name it was sent for when it is one
    /// of these requests (then forgotten).
    pub(crate) fn finish(&mut self, tx: TxId) -> Option<Arc<str>> {
        let name = self.by_tx.remove(&tx)?;
        self.by_name.remove(&name);
        Some(name)
    }
}
