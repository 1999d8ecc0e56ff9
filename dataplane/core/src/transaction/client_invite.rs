//! INVITE client transaction (RFC 3261 §17.1.1, with the Accepted state of
//! RFC 6026 §7.2), for unreliable transports.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timer::{TimerConfig, TimerName, TimerTable};
use super::{ResponseAction, TxEvent};
use crate::net::{Flow, Outbox};

/// Timer C: "greater than 3 minutes" (RFC 3261 §16.6 step 11).
pub const TIMER_C: Duration = Duration::from_secs(181);

#[derive(Debug)]
enum State {
    /// Request sent, nothing heard; retransmitting (timer A) until timer B.
    Calling {
        request: Bytes,
        interval: Duration,
    },
    /// A provisional response arrived; no more retransmissions.
    Proceeding,
    /// A final non-2xx arrived and was ACKed; absorbing retransmissions.
    Completed {
        ack: Bytes,
    },
    /// A 2xx arrived (RFC 6026): further 2xx are passed to the TU.
    Accepted,
    Terminated,
}

#[derive(Debug)]
pub struct ClientInvite {
    dest: Flow,
    state: State,
    timers: TimerTable<2>,
    /// Set when the TU stopped wanting the outcome (failover moved on).
    abandoned: bool,
    /// T1 of the configuration the transaction started with.
    t1: Duration,
}

fn timers_t1x64(t1: Duration) -> Duration {
    t1 * 64
}

impl ClientInvite {
    /// Sends the INVITE and starts timers A and B (RFC 3261 §17.1.1.2).
    pub fn start(
        now: Instant,
        cfg: &TimerConfig,
        dest: Flow,
        request: Bytes,
        out: &mut Outbox,
    ) -> Self {
        out.push(dest, &request);
        let mut timers = TimerTable::new();
        // RFC 3261 §17.1.1.2: timer A only on an unreliable transport.
        if !dest.transport.is_reliable() {
            timers.set(TimerName::A, now + cfg.t1);
        }
        timers.set(TimerName::B, now + cfg.t1x64());
        ClientInvite {
            dest,
            state: State::Calling {
                request,
                interval: cfg.t1,
            },
            timers,
            abandoned: false,
            t1: cfg.t1,
        }
    }

    pub fn dest(&self) -> Flow {
        self.dest
    }

    /// A response matched this transaction. `ack` builds the ACK for a
    /// non-2xx final response (RFC 3261 §17.1.1.3); it is called at most once.
    pub fn on_response(
        &mut self,
        now: Instant,
        cfg: &TimerConfig,
        code: u16,
        ack: impl FnOnce() -> Bytes,
        out: &mut Outbox,
    ) -> ResponseAction {
        match (&self.state, code) {
            (State::Calling { .. }, 100..=199) => {
                // §17.1.1.2: a provisional response stops retransmissions;
                // Timer B only runs in Calling. Timer C (§16.6 step 11,
                // more than 3 minutes) bounds the wait for a final answer;
                // once the TU gave up, only the 64*T1 a CANCEL is given (§9.1).
                self.timers.clear();
                let wait = if self.abandoned { cfg.t1x64() } else { TIMER_C };
                self.timers.set(TimerName::C, now + wait);
                self.state = State::Proceeding;
                ResponseAction::Deliver
            }
            (State::Proceeding, 100..=199) => {
                // §16.7 step 2: each provisional restarts timer C, unless
                // the TU gave up (then it only waits for the final answer
                // to a CANCEL, for 64*T1 per §9.1).
                if !self.abandoned {
                    self.timers.set(TimerName::C, now + TIMER_C);
                }
                ResponseAction::Deliver
            }
            (State::Calling { .. } | State::Proceeding, 200..=299) => {
                // RFC 6026 §7.2: Accepted, for timer M.
                self.timers.clear();
                self.timers.set(TimerName::M, now + cfg.t1x64());
                self.state = State::Accepted;
                ResponseAction::Deliver
            }
            (State::Calling { .. } | State::Proceeding, _) => {
                // §17.1.1.2: ACK the failure, stay Completed for timer D
                // (at least 32 s for unreliable transports).
                let ack = ack();
                out.push(self.dest, &ack);
                self.timers.clear();
                let d = cfg.timer_d(self.dest.transport);
                self.timers.set(TimerName::D, now + d);
                self.state = State::Completed { ack };
                ResponseAction::Deliver
            }
            (State::Accepted, 200..=299) => ResponseAction::Deliver,
            // A 2xx after the transaction ended (timer B or C): the TU must
            // still ACK and BYE it (RFC 3261 §13.2.2.4).
            (State::Terminated, 200..=299) => ResponseAction::Deliver,
            (State::Completed { ack }, 300..) => {
                // §17.1.1.2: retransmitted final response -> resend the ACK.
                out.push(self.dest, ack);
                ResponseAction::Absorb
            }
            _ => ResponseAction::Absorb,
        }
    }

    /// The TU gave up on this attempt (failover or CANCEL). Responses keep
    /// matching so late answers can be cleaned up; in Calling the INVITE
    /// keeps being retransmitted (so a callee whose provisional was lost
    /// sends it again and can be CANCELled, §9.1).
    pub fn abandon(&mut self, now: Instant, cfg: &TimerConfig) {
        self.abandoned = true;
        if matches!(self.state, State::Proceeding) {
            // §9.1: without a final response within 64*T1 of the CANCEL,
            // the transaction is considered destroyed.
            self.timers.set(TimerName::C, now + cfg.t1x64());
        }
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    /// True once a provisional or final response arrived (RFC 3261 §9.1:
    /// only then may a CANCEL be sent).
    pub fn heard_back(&self) -> bool {
        !matches!(self.state, State::Calling { .. })
    }

    /// True while no final response has been received.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Calling { .. } | State::Proceeding)
    }

    /// Nothing left that needs a stored message: terminated, or a 2xx
    /// arrived (RFC 6026 Accepted: a retransmitted 2xx is ACKed by the TU,
    /// which can build that ACK from the 2xx itself).
    pub fn is_at_rest(&self) -> bool {
        matches!(self.state, State::Terminated | State::Accepted)
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires due timers; returns the events the TU must see.
    pub fn on_timer(&mut self, now: Instant, out: &mut Outbox) -> Option<TxEvent> {
        while let Some(timer) = self.timers.pop_expired(now) {
            match (timer, &mut self.state) {
                (TimerName::A, State::Calling { request, interval }) => {
                    // §17.1.1.2: retransmit, doubling the interval.
                    out.push(self.dest, request);
                    *interval *= 2;
                    self.timers.set(TimerName::A, now + *interval);
                }
                (TimerName::C, State::Proceeding) if !self.abandoned => {
                    // §16.6 step 11: timer C fired. The TU answers the
                    // caller and CANCELs; the CANCEL gets 64*T1 (§9.1).
                    self.abandoned = true;
                    self.timers.set(TimerName::C, now + timers_t1x64(self.t1));
                    return Some(TxEvent::Timeout);
                }
                (TimerName::B, State::Calling { .. }) => {
                    self.state = State::Terminated;
                    self.timers.clear();
                    return Some(TxEvent::Timeout);
                }
                (TimerName::C, State::Proceeding) => {
                    self.state = State::Terminated;
                    self.timers.clear();
                    return Some(TxEvent::Terminated);
                }
                (TimerName::D | TimerName::M, _) => {
                    self.state = State::Terminated;
                    self.timers.clear();
                    return Some(TxEvent::Terminated);
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::LocalId;

    fn setup() -> (Instant, TimerConfig, Flow, Outbox) {
        let dest = Flow::udp("192.0.2.1:5060".parse().unwrap(), LocalId(0));
        (
            Instant::now(),
            TimerConfig::default(),
            dest,
            Outbox::default(),
        )
    }

    fn run_until(
        tx: &mut ClientInvite,
        out: &mut Outbox,
        end: Instant,
    ) -> (usize, Option<TxEvent>) {
        let mut sent = 0;
        while let Some(at) = tx.next_deadline() {
            if at > end {
                break;
            }
            let ev = tx.on_timer(at, out);
            while out.pop().is_some() {
                sent += 1;
            }
            if ev.is_some() {
                return (sent, ev);
            }
        }
        (sent, None)
    }

    #[test]
    fn retransmits_at_t1_doubling_until_timer_b() {
        // RFC 3261 §17.1.1.2: A fires at T1, 2T1, 4T1...; B at 64*T1.
        let (t0, cfg, dest, mut out) = setup();
        let mut tx = ClientInvite::start(t0, &cfg, dest, Bytes::from_static(b"INVITE"), &mut out);
        assert_eq!(out.len(), 1);
        out.pop();
        let (sent, ev) = run_until(&mut tx, &mut out, t0 + Duration::from_secs(60));
        // Retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
        assert_eq!(sent, 6);
        assert_eq!(ev, Some(TxEvent::Timeout));
        assert!(tx.is_terminated());
    }

    #[test]
    fn provisional_stops_retransmission_and_timer_b() {
        let (t0, cfg, dest, mut out) = setup();
        let mut tx = ClientInvite::start(t0, &cfg, dest, Bytes::from_static(b"INVITE"), &mut out);
        out.pop();
        let r = tx.on_response(t0, &cfg, 180, || unreachable!(), &mut out);
        assert_eq!(r, ResponseAction::Deliver);
        assert_eq!(tx.next_deadline(), Some(t0 + TIMER_C), "only timer C runs");
        assert!(tx.heard_back());
        // Abandoned after a provisional (and CANCELled by the TU): gone
        // 64*T1 later at the latest (§9.1).
        tx.abandon(t0, &cfg);
        assert_eq!(
            tx.on_timer(t0 + cfg.t1x64(), &mut out),
            Some(TxEvent::Terminated)
        );
        assert!(out.is_empty());
        // A 2xx after that still reaches the TU, which must ACK and BYE it.
        assert_eq!(
            tx.on_response(t0, &cfg, 200, || unreachable!(), &mut out),
            ResponseAction::Deliver
        );
    }

    #[test]
    fn timer_c_reports_then_waits_for_the_cancel() {
        // RFC 3261 §16.6 step 11: timer C fires -> the TU CANCELs; the
        // transaction then waits 64*T1 for the final answer.
        let (t0, cfg, dest, mut out) = setup();
        let mut tx = ClientInvite::start(t0, &cfg, dest, Bytes::from_static(b"INVITE"), &mut out);
        out.pop();
        tx.on_response(t0, &cfg, 180, || unreachable!(), &mut out);
        assert_eq!(tx.on_timer(t0 + TIMER_C, &mut out), Some(TxEvent::Timeout));
        assert!(tx.is_pending() && tx.heard_back() && tx.is_abandoned());
        assert_eq!(tx.next_deadline(), Some(t0 + TIMER_C + cfg.t1x64()));
        let r = tx.on_response(t0, &cfg, 487, || Bytes::from_static(b"ACK"), &mut out);
        assert_eq!(r, ResponseAction::Deliver);
        assert_eq!(out.pop().unwrap().data, Bytes::from_static(b"ACK"));
    }

    #[test]
    fn abandoned_while_calling_keeps_retransmitting() {
        // So a callee whose 180 was lost sends it again and can be CANCELled.
        let (t0, cfg, dest, mut out) = setup();
        let mut tx = ClientInvite::start(t0, &cfg, dest, Bytes::from_static(b"INVITE"), &mut out);
        out.pop();
        tx.abandon(t0, &cfg);
        assert_eq!(tx.on_timer(t0 + cfg.t1, &mut out), None);
        assert_eq!(out.len(), 1);
        out.pop();
        tx.on_response(t0 + cfg.t1, &cfg, 180, || unreachable!(), &mut out);
        assert_eq!(
            tx.next_deadline(),
            Some(t0 + cfg.t1 + cfg.t1x64()),
            "64*T1, not timer C"
        );
    }

    #[test]
    fn failure_is_acked_and_retransmissions_reacked() {
        // §17.1.1.2: ACK every retransmission of the final response; D ends it.
        let (t0, cfg, dest, mut out) = setup();
        let mut tx = ClientInvite::start(t0, &cfg, dest, Bytes::from_static(b"INVITE"), &mut out);
        out.pop();
        let r = tx.on_response(t0, &cfg, 503, || Bytes::from_static(b"ACK"), &mut out);
        assert_eq!(r, ResponseAction::Deliver);
        assert_eq!(out.pop().unwrap().data, Bytes::from_static(b"ACK"));
        let r = tx.on_response(t0, &cfg, 503, || unreachable!(), &mut out);
        assert_eq!(r, ResponseAction::Absorb);
        assert_eq!(out.pop().unwrap().data, Bytes::from_static(b"ACK"));
        let (_, ev) = run_until(&mut tx, &mut out, t0 + Duration::from_secs(33));
        assert_eq!(ev, Some(TxEvent::Terminated));
    }

    #[test]
    fn accepted_passes_2xx_retransmissions_up() {
        // RFC 6026 §7.2
        let (t0, cfg, dest, mut out) = setup();
        let mut tx = ClientInvite::start(t0, &cfg, dest, Bytes::from_static(b"INVITE"), &mut out);
        out.pop();
        assert_eq!(
            tx.on_response(t0, &cfg, 200, || unreachable!(), &mut out),
            ResponseAction::Deliver
        );
        assert_eq!(
            tx.on_response(t0, &cfg, 200, || unreachable!(), &mut out),
            ResponseAction::Deliver
        );
        assert_eq!(
            tx.on_response(t0, &cfg, 180, || unreachable!(), &mut out),
            ResponseAction::Absorb
        );
        let (_, ev) = run_until(&mut tx, &mut out, t0 + Duration::from_secs(33));
        assert_eq!(ev, Some(TxEvent::Terminated));
    }
}
