//! INVITE server transaction (RFC 3261 §17.2.1, with the Accepted state of
//! RFC 6026 §7.1), for unreliable transports. The retransmission of a 2xx
//! until the ACK arrives (RFC 3261 §13.3.1.4, a UAS core duty) lives here
//! too, because the Accepted state already owns that response.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::TxEvent;
use super::timer::{TimerConfig, TimerName, TimerTable};
use crate::net::{Flow, Outbox};

#[derive(Debug)]
enum State {
    Proceeding {
        last: Option<Bytes>,
    },
    Completed {
        response: Bytes,
        interval: Duration,
    },
    Confirmed,
    Accepted {
        response: Bytes,
        interval: Duration,
        acked: bool,
    },
    Terminated,
}

/// What an ACK meant to this transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// ACK for a non-2xx final response: absorbed by the transaction.
    NonSuccess,
    /// First ACK for the 2xx: the TU relays it end to end.
    Success,
    /// Another ACK for the same 2xx.
    Duplicate,
    /// No final response has been sent; nothing to acknowledge.
    Stray,
}

#[derive(Debug)]
pub struct ServerInvite {
    dest: Flow,
    state: State,
    timers: TimerTable<2>,
}

impl ServerInvite {
    pub fn new(dest: Flow) -> Self {
        ServerInvite {
            dest,
            state: State::Proceeding { last: None },
            timers: TimerTable::new(),
        }
    }

    pub fn dest(&self) -> Flow {
        self.dest
    }

    /// The INVITE was received again (§17.2.1): resend the last response.
    pub fn on_retransmission(&mut self, out: &mut Outbox) {
        match &self.state {
            State::Proceeding { last: Some(r) } | State::Completed { response: r, .. } => {
                out.push(self.dest, r);
            }
            // RFC 6026 §7.1: retransmitted INVITEs in Accepted are absorbed;
            // the 2xx is retransmitted on its own schedule.
            _ => {}
        }
    }

    /// Sends a response. Returns false if the state forbids it (a final
    /// response was already sent).
    pub fn respond(
        &mut self,
        now: Instant,
        cfg: &TimerConfig,
        code: u16,
        response: Bytes,
        out: &mut Outbox,
    ) -> bool {
        if !matches!(self.state, State::Proceeding { .. }) {
            return false;
        }
        out.push(self.dest, &response);
        match code {
            100..=199 => {
                self.state = State::Proceeding {
                    last: Some(response),
                }
            }
            200..=299 => {
                self.timers.set(TimerName::Retransmit2xx, now + cfg.t1);
                self.timers.set(TimerName::L, now + cfg.t1x64());
                self.state = State::Accepted {
                    response,
                    interval: cfg.t1,
                    acked: false,
                };
            }
            _ => {
                // RFC 3261 §17.2.1: timer G only on an unreliable transport.
                if !self.dest.transport.is_reliable() {
                    self.timers.set(TimerName::G, now + cfg.t1);
                }
                self.timers.set(TimerName::H, now + cfg.t1x64());
                self.state = State::Completed {
                    response,
                    interval: cfg.t1,
                };
            }
        }
        true
    }

    /// True once any response (provisional or final) has been sent.
    pub fn has_responded(&self) -> bool {
        !matches!(self.state, State::Proceeding { last: None })
    }

    /// True while no final response has been sent.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Proceeding { .. })
    }

    pub fn on_ack(&mut self, now: Instant, cfg: &TimerConfig) -> AckKind {
        match &mut self.state {
            State::Completed { .. } => {
                // §17.2.1: Confirmed; timer I absorbs ACK retransmissions.
                self.timers.clear();
                self.timers
                    .set(TimerName::I, now + cfg.timer_k(self.dest.transport));
                self.state = State::Confirmed;
                AckKind::NonSuccess
            }
            State::Confirmed => AckKind::NonSuccess,
            State::Accepted {
                acked, response, ..
            } => {
                self.timers.cancel(TimerName::Retransmit2xx);
                // No more retransmissions: the 2xx need not be kept.
                *response = Bytes::new();
                if *acked {
                    AckKind::Duplicate
                } else {
                    *acked = true;
                    AckKind::Success
                }
            }
            _ => AckKind::Stray,
        }
    }

    /// Nothing left but absorbing: terminated, or the final answer was
    /// acknowledged (an ACK retransmission needs no answer). What is left
    /// of it needs no stored message.
    pub fn is_at_rest(&self) -> bool {
        matches!(
            self.state,
            State::Terminated | State::Confirmed | State::Accepted { acked: true, .. }
        )
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
                (TimerName::G, State::Completed { response, interval }) => {
                    // §17.2.1: retransmit, doubling up to T2.
                    out.push(self.dest, response);
                    *interval = (*interval * 2).min(cfg.t2);
                    self.timers.set(TimerName::G, now + *interval);
                }
                (
                    TimerName::Retransmit2xx,
                    State::Accepted {
                        response,
                        interval,
                        acked: false,
                    },
                ) => {
                    // §13.3.1.4: T1, doubling up to T2.
                    out.push(self.dest, response);
                    *interval = (*interval * 2).min(cfg.t2);
                    self.timers.set(TimerName::Retransmit2xx, now + *interval);
                }
                (TimerName::H, State::Completed { .. }) => {
                    self.state = State::Terminated;
                    self.timers.clear();
                    return Some(TxEvent::Timeout);
                }
                (TimerName::L, State::Accepted { acked, .. }) => {
                    let acked = *acked;
                    self.state = State::Terminated;
                    self.timers.clear();
                    // §13.3.1.4: no ACK within 64*T1 -> the TU ends the dialog.
                    return Some(if acked {
                        TxEvent::Terminated
                    } else {
                        TxEvent::NoAck
                    });
                }
                (TimerName::I, _) => {
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

    fn dest() -> Flow {
        Flow::udp("192.0.2.1:5060".parse().unwrap(), LocalId(0))
    }

    #[test]
    fn final_response_retransmitted_until_ack() {
        // RFC 3261 §17.2.1: G at T1 doubling to T2 while waiting for the ACK.
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut out = Outbox::default();
        let mut tx = ServerInvite::new(dest());
        assert!(tx.respond(t0, &cfg, 486, Bytes::from_static(b"486"), &mut out));
        out.pop();
        assert_eq!(tx.on_timer(t0 + cfg.t1, &cfg, &mut out), None);
        assert_eq!(out.len(), 1);
        out.pop();
        // Retransmitted INVITE -> the final response again.
        tx.on_retransmission(&mut out);
        assert_eq!(out.len(), 1);
        out.pop();
        assert_eq!(tx.on_ack(t0 + cfg.t1, &cfg), AckKind::NonSuccess);
        assert_eq!(tx.next_deadline(), Some(t0 + cfg.t1 + cfg.t4));
        assert_eq!(
            tx.on_timer(t0 + cfg.t1 + cfg.t4, &cfg, &mut out),
            Some(TxEvent::Terminated)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn no_ack_for_failure_times_out_at_h() {
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut out = Outbox::default();
        let mut tx = ServerInvite::new(dest());
        tx.respond(t0, &cfg, 486, Bytes::from_static(b"486"), &mut out);
        let mut ev = None;
        while let Some(at) = tx.next_deadline() {
            ev = tx.on_timer(at, &cfg, &mut out);
            if ev.is_some() {
                break;
            }
        }
        assert_eq!(ev, Some(TxEvent::Timeout));
        // 1 + retransmissions at 0.5,1.5,3.5,7.5,11.5,...,31.5
        assert_eq!(out.len(), 1 + 10);
    }

    #[test]
    fn success_retransmitted_until_ack_then_absorbed() {
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut out = Outbox::default();
        let mut tx = ServerInvite::new(dest());
        tx.respond(t0, &cfg, 200, Bytes::from_static(b"200"), &mut out);
        out.pop();
        tx.on_timer(t0 + cfg.t1, &cfg, &mut out);
        assert_eq!(out.len(), 1);
        out.pop();
        tx.on_retransmission(&mut out);
        assert!(
            out.is_empty(),
            "RFC 6026: INVITE retransmissions absorbed in Accepted"
        );
        assert_eq!(tx.on_ack(t0 + cfg.t1, &cfg), AckKind::Success);
        assert_eq!(tx.on_ack(t0 + cfg.t1, &cfg), AckKind::Duplicate);
        assert_eq!(
            tx.on_timer(t0 + cfg.t1x64(), &cfg, &mut out),
            Some(TxEvent::Terminated)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn success_without_ack_reports_no_ack() {
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut out = Outbox::default();
        let mut tx = ServerInvite::new(dest());
        tx.respond(t0, &cfg, 200, Bytes::from_static(b"200"), &mut out);
        let mut ev = None;
        while let Some(at) = tx.next_deadline() {
            ev = tx.on_timer(at, &cfg, &mut out);
            if ev.is_some() {
                break;
            }
        }
        assert_eq!(ev, Some(TxEvent::NoAck));
    }
}
