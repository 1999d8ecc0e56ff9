//! Non-INVITE client transaction (RFC 3261 §17.1.2).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timer::{TimerConfig, TimerName, TimerTable};
use super::{ResponseAction, TxEvent};
use crate::net::{Flow, Outbox};

#[derive(Debug)]
enum State {
    Trying { request: Bytes, interval: Duration },
    Proceeding { request: Bytes },
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ClientNonInvite {
    dest: Flow,
    state: State,
    timers: TimerTable<2>,
}

impl ClientNonInvite {
    /// Sends the request; timer E at T1, timer F at 64*T1 (§17.1.2.2).
    pub fn start(
        now: Instant,
        cfg: &TimerConfig,
        dest: Flow,
        request: Bytes,
        out: &mut Outbox,
    ) -> Self {
        out.push(dest, &request);
        let mut timers = TimerTable::new();
        // RFC 3261 §17.1.2.2: timer E only on an unreliable transport.
        if !dest.transport.is_reliable() {
            timers.set(TimerName::E, now + cfg.t1);
        }
        timers.set(TimerName::F, now + cfg.t1x64());
        ClientNonInvite {
            dest,
            state: State::Trying {
                request,
                interval: cfg.t1,
            },
            timers,
        }
    }

    pub fn dest(&self) -> Flow {
        self.dest
    }

    pub fn on_response(&mut self, now: Instant, cfg: &TimerConfig, code: u16) -> ResponseAction {
        match (&mut self.state, code) {
            (State::Trying { request, .. }, 100..=199) => {
                // §17.1.2.2: in Proceeding, E fires every T2.
                let request = request.clone();
                if !self.dest.transport.is_reliable() {
                    self.timers.set(TimerName::E, now + cfg.t2);
                }
                self.state = State::Proceeding { request };
                ResponseAction::Deliver
            }
            (State::Proceeding { .. }, 100..=199) => ResponseAction::Deliver,
            (State::Trying { .. } | State::Proceeding { .. }, _) => {
                // Completed: absorb response retransmissions for T4.
                self.timers.clear();
                self.timers
                    .set(TimerName::K, now + cfg.timer_k(self.dest.transport));
                self.state = State::Completed;
                ResponseAction::Deliver
            }
            _ => ResponseAction::Absorb,
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Trying { .. } | State::Proceeding { .. })
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn on_timer(
        &mut self,
        now: Instant,
        cfg: &TimerConfig,
        out: &mut Outbox,
    ) -> Option<TxEvent> {
        while let Some(timer) = self.timers.pop_expired(now) {
            match (timer, &mut self.state) {
                (TimerName::E, State::Trying { request, interval }) => {
                    out.push(self.dest, request);
                    *interval = (*interval * 2).min(cfg.t2);
                    self.timers.set(TimerName::E, now + *interval);
                }
                (TimerName::E, State::Proceeding { request }) => {
                    out.push(self.dest, request);
                    self.timers.set(TimerName::E, now + cfg.t2);
                }
                (TimerName::F, State::Trying { .. } | State::Proceeding { .. }) => {
                    self.state = State::Terminated;
                    self.timers.clear();
                    return Some(TxEvent::Timeout);
                }
                (TimerName::K, _) => {
                    self.state = State::Terminated;
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

    #[test]
    fn retransmits_capped_at_t2_until_timer_f() {
        // RFC 3261 §17.1.2.2: E doubles up to T2; F at 64*T1.
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let dest = Flow::udp("192.0.2.1:5060".parse().unwrap(), LocalId(0));
        let mut out = Outbox::default();
        let mut tx = ClientNonInvite::start(t0, &cfg, dest, Bytes::from_static(b"BYE"), &mut out);
        let mut sends = vec![];
        out.pop();
        let mut ev = None;
        while let Some(at) = tx.next_deadline() {
            ev = tx.on_timer(at, &cfg, &mut out);
            while out.pop().is_some() {
                sends.push(at.duration_since(t0).as_millis());
            }
            if ev.is_some() {
                break;
            }
        }
        assert_eq!(ev, Some(TxEvent::Timeout));
        assert_eq!(&sends[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(sends.len(), 10);
    }

    #[test]
    fn final_response_completes_then_k_terminates() {
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let dest = Flow::udp("192.0.2.1:5060".parse().unwrap(), LocalId(0));
        let mut out = Outbox::default();
        let mut tx = ClientNonInvite::start(t0, &cfg, dest, Bytes::from_static(b"BYE"), &mut out);
        assert_eq!(tx.on_response(t0, &cfg, 200), ResponseAction::Deliver);
        assert_eq!(tx.on_response(t0, &cfg, 200), ResponseAction::Absorb);
        assert_eq!(tx.next_deadline(), Some(t0 + cfg.t4));
        assert_eq!(
            tx.on_timer(t0 + cfg.t4, &cfg, &mut out),
            Some(TxEvent::Terminated)
        );
    }
}
