//! Non-INVITE server transaction (RFC 3261 §17.2.2).

use std::time::Instant;

use bytes::Bytes;

use super::TxEvent;
use super::timer::{TimerConfig, TimerName, TimerTable};
use crate::net::{Flow, Outbox};

#[derive(Debug)]
enum State {
    Trying,
    Proceeding { last: Bytes },
    Completed { response: Bytes },
    Terminated,
}

#[derive(Debug)]
pub struct ServerNonInvite {
    dest: Flow,
    state: State,
    timers: TimerTable<1>,
}

impl ServerNonInvite {
    pub fn new(dest: Flow) -> Self {
        ServerNonInvite {
            dest,
            state: State::Trying,
            timers: TimerTable::new(),
        }
    }

    pub fn dest(&self) -> Flow {
        self.dest
    }

    /// §17.2.2: a retransmitted request gets the last response again
    /// (nothing while Trying).
    pub fn on_retransmission(&mut self, out: &mut Outbox) {
        if let State::Proceeding { last: r } | State::Completed { response: r } = &self.state {
            out.push(self.dest, r);
        }
    }

    pub fn respond(
        &mut self,
        now: Instant,
        cfg: &TimerConfig,
        code: u16,
        response: Bytes,
        out: &mut Outbox,
    ) -> bool {
        if !self.is_pending() {
            return false;
        }
        out.push(self.dest, &response);
        if code < 200 {
            self.state = State::Proceeding { last: response };
        } else {
            // RFC 3261 §17.2.2: timer J, 64*T1 for unreliable transports,
            // zero for reliable ones.
            self.timers
                .set(TimerName::J, now + cfg.timer_j(self.dest.transport));
            self.state = State::Completed { response };
        }
        true
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Trying | State::Proceeding { .. })
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn on_timer(&mut self, now: Instant) -> Option<TxEvent> {
        if self.timers.pop_expired(now) == Some(TimerName::J) {
            self.state = State::Terminated;
            return Some(TxEvent::Terminated);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::LocalId;

    #[test]
    fn absorbs_retransmissions_until_timer_j() {
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut out = Outbox::default();
        let dest = Flow::udp("192.0.2.1:5060".parse().unwrap(), LocalId(0));
        let mut tx = ServerNonInvite::new(dest);
        tx.on_retransmission(&mut out);
        assert!(out.is_empty(), "nothing to resend while Trying");
        assert!(tx.respond(t0, &cfg, 200, Bytes::from_static(b"200"), &mut out));
        assert!(!tx.respond(t0, &cfg, 500, Bytes::from_static(b"500"), &mut out));
        tx.on_retransmission(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(tx.on_timer(t0 + cfg.t1x64()), Some(TxEvent::Terminated));
    }
}
