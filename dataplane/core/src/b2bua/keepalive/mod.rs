//! Keepalives to registered phones (BRIEF §4; RFC 3581 NAT traversal):
//! every `interval`, an OPTIONS (or a bare CRLF CRLF) to each binding, at
//! the address it registered from, so the NAT in front of the phone keeps
//! its mapping open. An OPTIONS that gets any final answer says the phone
//! is alive; `unreachable_after` in a row without one mark it unreachable
//! (it is not rung) until it answers again or registers again.
//!
//! Each account is kept alive by the shard that owns its binding (see
//! `lookup/`); the work is spread over the interval by a hash of the account, a
//! tick a second, so a hundred thousand phones never go out in one burst.
//! The same tick expires bindings; while a shard holds none (and no
//! keepalive is queued or waiting), its ticks rest until one is bound.
//! The accounts wait in a queue by the tick their turn comes, so a tick
//! reads only the accounts due, not every binding.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::context::Engine;
use super::standalone::{Alarm, Outcome, TxId};
use crate::registrar::{Binding, Change, Keepalive, KeepaliveMethod};
pub(crate) mod state;

use state::{Keepalives, TICK, slot_tick};

impl Engine {
    /// Starts or stops the ticks as the policy says: they run while the
    /// registrar is on (expiring bindings), sending keepalives when those
    /// are configured.
    pub(crate) fn sync_keepalives(&mut self, now: Instant) {
        let on = self.ctx.policy.accounts.settings.is_some();
        let running = self.keepalives.next_at.is_some() || self.keepalives.resume_at.is_some();
        match (on, running) {
            (true, false) => {
                self.keepalives.next_at = Some(now + TICK);
                self.standalone.set_alarm(now + TICK, Alarm::Keepalive);
            }
            (false, true) => {
                // Everything goes, next_at and resume_at with it (the
                // ticks stop).
                let Keepalives { mut in_flight, .. } = std::mem::take(&mut self.keepalives);
                self.standalone.abandon_all(&mut in_flight);
            }
            _ => {}
        }
    }

    /// A binding came: resting ticks start again.
    fn resume_keepalives(&mut self) {
        if self.keepalives.next_at.is_none()
            && let Some(at) = self.keepalives.resume_at.take()
        {
            self.keepalives.next_at = Some(at);
            self.standalone.set_alarm(at, Alarm::Keepalive);
        }
    }

    /// Whether a tick would have nothing to do: nothing bound to expire
    /// or keep alive, no keepalive queued or waiting for its answer.
    fn keepalives_idle(&self) -> bool {
        self.ctx.location.is_empty()
            && self.keepalives.queue.is_empty()
            && self.keepalives.in_flight.is_empty()
    }

    fn keepalive_settings(&self) -> Option<Keepalive> {
        self.ctx.policy.accounts.settings.as_ref()?.keepalive
    }

    /// A tick: expired bindings go, and the keepalives whose slot is due
    /// are sent.
    pub(crate) fn keepalive_due(&mut self, now: Instant) {
        let Some(at) = self.keepalives.next_at else {
            return;
        };
        if now < at {
            return;
        }
        self.expire_bindings(now);
        let next = now + TICK;
        if self.keepalives_idle() {
            self.keepalives.next_at = None;
            self.keepalives.resume_at = Some(next);
            return;
        }
        self.keepalives.next_at = Some(next);
        self.standalone.set_alarm(next, Alarm::Keepalive);
        let tick = self.keepalives.tick;
        self.keepalives.tick = tick.wrapping_add(1);
        let Some(settings) = self.keepalive_settings() else {
            // Keepalives turned off by a reload: the queue goes.
            if self.keepalives.primed {
                let k = &mut self.keepalives;
                k.primed = false;
                k.queue = BTreeMap::new();
                k.accounts = HashMap::new();
                self.standalone.abandon_all(&mut k.in_flight);
            }
            return;
        };
        let slots = settings.interval.as_secs().max(1);
        if !self.keepalives.primed {
            self.keepalives.primed = true;
            let bound: Vec<Arc<str>> = self
                .ctx
                .location
                .iter()
                .map(|b| Arc::clone(&b.account))
                .collect();
            for account in &bound {
                self.queue_keepalive(account, tick, slots);
            }
        }
        while let Some(entry) = self.keepalives.queue.first_entry()
            && *entry.key() <= tick
        {
            let (due, accounts) = entry.remove_entry();
            for account in accounts {
                self.keepalive_turn(now, tick, (due, account), settings);
            }
        }
    }

    /// An account's turn came at `tick`: its keepalive goes (and its next
    /// turn is queued), or it is forgotten when no longer bound.
    fn keepalive_turn(
        &mut self,
        now: Instant,
        tick: u64,
        (due, account): (u64, Arc<str>),
        settings: Keepalive,
    ) {
        if self.keepalives.accounts.get(&account).map(|s| s.due) != Some(due) {
            return;
        }
        let Some(b) = self.ctx.location.latest(&account) else {
            // No longer bound (expired, unregistered, reloaded away):
            // forgotten, with its keepalive in flight.
            self.keepalives.accounts.remove(&account);
            if let Some(tx) = self.keepalives.in_flight.take(&account) {
                self.standalone.abandon(tx);
            }
            return;
        };
        match settings.method {
            KeepaliveMethod::Crlf => {
                let flow = b.flow;
                self.ctx.send(flow, b"\r\n\r\n");
            }
            KeepaliveMethod::Options => {
                let b = b.clone();
                self.send_keepalive(now, &b, settings);
            }
        }
        let slots = settings.interval.as_secs().max(1);
        self.queue_keepalive(&account, tick.wrapping_add(1), slots);
    }

    /// A binding was made or refreshed: its account is queued for its
    /// keepalives (once; a new binding counts its misses afresh).
    pub(crate) fn keepalive_bound(&mut self, account: &Arc<str>, fresh: bool) {
        self.resume_keepalives();
        if !self.keepalives.primed {
            // The first tick queues whatever is bound then.
            return;
        }
        if let Some(state) = self.keepalives.accounts.get_mut(account) {
            if fresh {
                state.misses = 0;
            }
            return;
        }
        let Some(settings) = self.keepalive_settings() else {
            return;
        };
        let slots = settings.interval.as_secs().max(1);
        self.queue_keepalive(account, self.keepalives.tick, slots);
    }

    /// Queues `account` for the first tick of its slot at or after `from`.
    fn queue_keepalive(&mut self, account: &Arc<str>, from: u64, slots: u64) {
        let spread = self.ctx.ids.secrets().spread(account.as_bytes());
        let due = slot_tick(from, spread, slots);
        self.keepalives
            .accounts
            .entry(Arc::clone(account))
            .or_default()
            .due = due;
        self.keepalives
            .queue
            .entry(due)
            .or_default()
            .push(Arc::clone(account));
    }

    fn send_keepalive(&mut self, now: Instant, b: &Binding, settings: Keepalive) {
        // The last one had its whole interval: no answer is a miss.
        if let Some(tx) = self.keepalives.in_flight.take(&b.account) {
            self.standalone.abandon(tx);
            self.keepalive_result(b, false, settings);
        }
        let state = self
            .keepalives
            .accounts
            .entry(Arc::clone(&b.account))
            .or_default();
        state.cseq = state.cseq.wrapping_add(1).max(1);
        let cseq = state.cseq;
        let request = self.options_request(b.flow, Bytes::copy_from_slice(b.contact()), cseq);
        let tx = self.send_request(now, request);
        self.keepalives.in_flight.start(Arc::clone(&b.account), tx);
    }

    /// A transaction outside calls ended: true when it was a keepalive.
    pub(crate) fn keepalive_outcome(&mut self, tx: TxId, outcome: &Outcome) -> bool {
        let Some(account) = self.keepalives.in_flight.finish(tx) else {
            return false;
        };
        let (Some(settings), Some(b)) = (
            self.keepalive_settings(),
            self.ctx.location.latest(&account).cloned(),
        ) else {
            return true;
        };
        let alive = matches!(outcome, Outcome::Response { .. });
        self.keepalive_result(&b, alive, settings);
        true
    }

    /// Counts one keepalive's result; reports a change of reachability.
    fn keepalive_result(&mut self, b: &Binding, alive: bool, settings: Keepalive) {
        let Some(state) = self.keepalives.accounts.get_mut(&b.account) else {
            return;
        };
        if b.reachable && state.misses >= settings.unreachable_after {
            // Registered again since it was marked: a fresh count.
            state.misses = 0;
        }
        state.misses = if alive {
            0
        } else {
            state.misses.saturating_add(1)
        };
        let reachable = state.misses < settings.unreachable_after;
        if reachable != b.reachable {
            self.record(Change::Reachable {
                account: Arc::clone(&b.account),
                reachable,
            });
        }
    }
}
