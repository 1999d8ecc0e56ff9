//! Trunk health probes (BRIEF §2, §3): an OPTIONS to each trunk that asks
//! for them, every `interval`, sent by the shard that owns the trunk (its
//! index modulo the shard count), through a transaction outside calls.
//!
//! A probe fails when no final answer came within the interval (or timer
//! F fired first), or the answer was 408, 5xx or 6xx; any other final
//! answer (even 404 or 405: the peer's SIP stack is alive) succeeds. After
//! `down_after` failures in a row the trunk is down, after `up_after`
//! successes in a row up again; the state is the trunk's
//! [`TrunkStats::down`](crate::stats::TrunkStats::down), which every
//! shard's routing reads, and each change is reported as
//! [`Event::TrunkHealth`]. A trunk starts up: probes only take it out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;

use super::context::Engine;
use super::event::Event;
use super::standalone::{Alarm, Outcome, OwnRequest, TxId};
use crate::policy::Trunk;
pub(crate) mod state;

use state::{ProbeState, Probes, alive};

impl Engine {
    pub(crate) fn owns_trunk(&self, index: usize) -> bool {
        index % usize::from(self.ctx.shards) == usize::from(self.ctx.shard.0)
    }

    /// Plans the probes of the current policy: trunks this shard owns that
    /// ask for probes get one now (a new trunk) or at their planned time;
    /// trunks that no longer ask are up and forgotten.
    pub(crate) fn sync_probes(&mut self, now: Instant) {
        let policy = Arc::clone(&self.ctx.policy);
        let mut keep: Vec<Arc<str>> = Vec::new();
        for (i, trunk) in policy.trunks.iter().enumerate() {
            if !self.owns_trunk(i) {
                continue;
            }
            let Some(_) = trunk.probe else {
                if self.probes.trunks.remove(&trunk.name).is_some() {
                    if let Some(tx) = self.probes.in_flight.take(&trunk.name) {
                        self.standalone.abandon(tx);
                    }
                    trunk.stats.down.store(false, Ordering::Relaxed);
                }
                continue;
            };
            let state = self
                .probes
                .trunks
                .entry(Arc::clone(&trunk.name))
                .or_insert(ProbeState {
                    next_at: now,
                    successes: 0,
                    failures: 0,
                    cseq: 0,
                });
            let at = state.next_at;
            keep.push(Arc::clone(&trunk.name));
            self.standalone.set_alarm(
                at,
                Alarm::ProbeInterval(u16::try_from(i).unwrap_or(u16::MAX)),
            );
        }
        // Trunks gone from the configuration: their probes stop.
        let Probes { trunks, in_flight } = &mut self.probes;
        trunks.retain(|name, _| keep.contains(name));
        self.standalone
            .abandon_unless(in_flight, |name| trunks.contains_key(name));
    }

    /// A probe alarm for the trunk at `index` is due.
    pub(crate) fn probe_due(&mut self, now: Instant, index: u16) {
        let policy = Arc::clone(&self.ctx.policy);
        let Some(trunk) = policy.trunks.get(usize::from(index)) else {
            return;
        };
        let Some(probe) = trunk.probe else {
            return;
        };
        if !self.owns_trunk(usize::from(index)) {
            return;
        }
        let Some(state) = self.probes.trunks.get_mut(&trunk.name) else {
            return;
        };
        if now < state.next_at {
            // A stale alarm (the plan moved).
            return;
        }
        // The last probe had its whole interval: no answer is a failure,
        // and it is not retransmitted any longer.
        if let Some(tx) = self.probes.in_flight.take(&trunk.name) {
            self.standalone.abandon(tx);
            self.probe_result(trunk, None);
        }
        let request = self.probe_request(trunk);
        let tx = self.send_request(now, request);
        if let Some(state) = self.probes.trunks.get_mut(&trunk.name) {
            state.next_at = now + probe.interval;
            self.probes.in_flight.start(Arc::clone(&trunk.name), tx);
            self.standalone
                .set_alarm(state.next_at, Alarm::ProbeInterval(index));
        }
    }

    fn probe_request(&mut self, trunk: &Trunk) -> OwnRequest {
        let cseq = self.probes.trunks.get_mut(&trunk.name).map_or(1, |s| {
            s.cseq = s.cseq.wrapping_add(1).max(1);
            s.cseq
        });
        let target = Bytes::from(format!("sip:{}", trunk.address));
        let flow = self.ctx.policy.trunk_flow(trunk);
        self.options_request(flow, target, cseq)
    }

    /// A transaction outside calls ended: true when it was a probe (then
    /// counted here, not reported).
    pub(crate) fn probe_outcome(&mut self, tx: TxId, outcome: &Outcome) -> bool {
        let Some(name) = self.probes.in_flight.finish(tx) else {
            return false;
        };
        let policy = Arc::clone(&self.ctx.policy);
        if let Some(trunk) = policy.trunks.iter().find(|t| t.name == name) {
            let status = match outcome {
                Outcome::Response { code, .. } => Some(*code),
                Outcome::Timeout => None,
            };
            self.probe_result(trunk, status);
        }
        true
    }

    /// Counts a probe's result for `trunk` (`None`: no answer).
    fn probe_result(&mut self, trunk: &Trunk, status: Option<u16>) {
        let (Some(probe), Some(state)) = (trunk.probe, self.probes.trunks.get_mut(&trunk.name))
        else {
            return;
        };
        let ok = status.is_some_and(alive);
        trunk.stats.probes[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        if let Some(down) = state.record(&probe, trunk.stats.is_down(), ok) {
            trunk.stats.down.store(down, Ordering::Relaxed);
            self.ctx.emit(Event::TrunkHealth {
                trunk: Arc::clone(&trunk.name),
                up: !down,
                status,
            });
        }
    }
}
