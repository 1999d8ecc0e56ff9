//! Keepalives to registered phones (BRIEF §4; RFC 3581 NAT traversal):
//! every `interval`, an OPTIONS (or a bare CRLF CRLF) to each binding, at
//! the address it registered from, so the NAT in front of the phone keeps
//! its mapping open. An OPTIONS that gets any final answer says the phone
//! is alive; `unreachable_after` in a row without one mark it unreachable
//! (it is not rung) until it answers again or registers again.
//!
//! Each account is kept alive by the shard that owns its binding (see
//! `lookup.rs`); the work is spread over the interval by a hash of the account, a
//! tick a second, so a hundred thousand phones never go out in one burst.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::context::Engine;
use super::standalone::{Alarm, InFlight, Outcome, TxId};
use crate::registrar::{Binding, Change, Keepalive, KeepaliveMethod};

const TICK: Duration = Duration::from_secs(1);

/// This shard's keepalive state.
#[derive(Debug, Default)]
pub(crate) struct Keepalives {
    /// Ticks so far: the slot of the interval now due.
    tick: u64,
    /// When the next tick is due (`None`: keepalives are off).
    next_at: Option<Instant>,
    accounts: HashMap<Arc<str>, State>,
    in_flight: InFlight,
}

#[derive(Debug, Default)]
struct State {
    misses: u32,
    cseq: u32,
}

impl Engine {
    /// Starts or stops the ticks as the policy says: they run while the
    /// registrar is on (expiring bindings), sending keepalives when those
    /// are configured.
    pub(crate) fn sync_keepalives(&mut self, now: Instant) {
        let on = self.ctx.policy.accounts.settings.is_some();
        match (on, self.keepalives.next_at) {
            (true, None) => {
                self.keepalives.next_at = Some(now + TICK);
                self.standalone.set_alarm(now + TICK, Alarm::Keepalive);
            }
            (false, Some(_)) => {
                // Everything goes, next_at with it (the ticks stop).
                let Keepalives { mut in_flight, .. } = std::mem::take(&mut self.keepalives);
                self.standalone.abandon_all(&mut in_flight);
            }
            _ => {}
        }
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
        let next = now + TICK;
        self.keepalives.next_at = Some(next);
        self.standalone.set_alarm(next, Alarm::Keepalive);
        self.expire_bindings(now);
        let Some(settings) = self.keepalive_settings() else {
            return;
        };
        let slots = settings.interval.as_secs().max(1);
        let slot = self.keepalives.tick % slots;
        self.keepalives.tick = self.keepalives.tick.wrapping_add(1);
        let secrets = *self.ctx.ids.secrets();
        let due: Vec<Binding> = self
            .ctx
            .location
            .iter()
            .filter(|b| secrets.spread(b.account.as_bytes()) % slots == slot)
            .cloned()
            .collect();
        for b in &due {
            match settings.method {
                KeepaliveMethod::Crlf => self.ctx.send(b.flow, b"\r\n\r\n"),
                KeepaliveMethod::Options => self.send_keepalive(now, b, settings),
            }
        }
        // Accounts no longer bound are forgotten.
        let location = &self.ctx.location;
        let Keepalives {
            accounts,
            in_flight,
            ..
        } = &mut self.keepalives;
        accounts.retain(|account, _| location.latest(account).is_some());
        self.standalone
            .abandon_unless(in_flight, |account| accounts.contains_key(account));
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
