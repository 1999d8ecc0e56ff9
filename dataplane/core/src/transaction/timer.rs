//! Timers are data: every running timer is a `(TimerName, deadline)` entry
//! in a small table; the next deadline is the smallest entry.

use std::time::{Duration, Instant};

use crate::net::Transport;

/// RFC 3261 §17 / Table 4 transaction timers, RFC 6026 timers L and M, and
/// the SBC's own call timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerName {
    /// INVITE request retransmit interval (client, unreliable transport).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Proxy INVITE transaction timeout (RFC 3261 §16.6 step 11): a
    /// client INVITE that has had a provisional but no final response.
    C,
    /// Wait time for response retransmits (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit interval (client).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit interval (server).
    G,
    /// Wait time for ACK receipt (server INVITE, Completed).
    H,
    /// Wait time for ACK retransmits (server INVITE, Confirmed).
    I,
    /// Wait time for non-INVITE request retransmits (server).
    J,
    /// Wait time for response retransmits (client non-INVITE).
    K,
    /// RFC 6026: wait time for accepted INVITE request retransmits (server).
    L,
    /// RFC 6026: wait time for retransmission of 2xx responses (client).
    M,
    /// RFC 3261 §13.3.1.4: 2xx retransmission by the UAS core until ACK.
    Retransmit2xx,
    /// RFC 3261 §17.2.1: 100 Trying when no provisional response went out
    /// within 200 ms.
    Trying,
    /// SBC: no response at all from a trunk in time; try the next one.
    NoResponse,
    /// SBC: ringing too long without an answer.
    MaxRinging,
    /// SBC: no media in either direction for the configured time.
    MediaTimeout,
    /// SBC: the answered call reached its maximum duration.
    MaxDuration,
    /// RFC 4028 §10: no session refresh came within the session interval.
    SessionExpires,
}

/// RFC 3261 Table 4 base values, configurable per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: timers B, F, H, J, L, M (RFC 3261 Table 4, RFC 6026).
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: how long a failed INVITE client transaction absorbs
    /// response retransmissions. RFC 3261 §17.1.1.2: at least 32 s for
    /// unreliable transports, zero for reliable ones.
    pub fn timer_d(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            self.t1x64().max(Duration::from_secs(32))
        }
    }

    /// Timer K (§17.1.2.2) and timer I (§17.2.1): T4 for unreliable
    /// transports, zero for reliable ones.
    pub fn timer_k(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J (§17.2.2): 64*T1 for unreliable transports, zero for
    /// reliable ones.
    pub fn timer_j(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            self.t1x64()
        }
    }
}

/// A fixed-size table of running timers: deadlines and names kept apart,
/// so an entry costs 17 bytes rather than a padded 24 (a call holds one,
/// each of its transactions another).
#[derive(Debug, Clone)]
pub struct TimerTable<const N: usize> {
    /// Each slot's deadline; `None`: free.
    at: [Option<Instant>; N],
    /// Each running slot's timer (meaningless in a free slot).
    names: [TimerName; N],
}

impl<const N: usize> Default for TimerTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TimerTable<N> {
    pub fn new() -> Self {
        TimerTable {
            at: [None; N],
            names: [TimerName::A; N],
        }
    }

    /// The slot running `name`.
    fn slot(&self, name: TimerName) -> Option<usize> {
        (0..N).find(|&i| self.at[i].is_some() && self.names[i] == name)
    }

    /// Starts (or restarts) a timer.
    pub fn set(&mut self, name: TimerName, at: Instant) {
        if let Some(i) = self.slot(name) {
            self.at[i] = Some(at);
            return;
        }
        if let Some(free) = self.at.iter().position(Option::is_none) {
            self.at[free] = Some(at);
            self.names[free] = name;
            return;
        }
        // The tables are sized for the timers each owner runs at once; a
        // full table is a bug, and replacing the latest entry keeps the
        // earlier deadlines intact.
        debug_assert!(false, "timer table full setting {name:?}");
        if let Some(last) = (0..N).max_by_key(|&i| self.at[i]) {
            self.at[last] = Some(at);
            self.names[last] = name;
        }
    }

    pub fn cancel(&mut self, name: TimerName) {
        while let Some(i) = self.slot(name) {
            self.at[i] = None;
        }
    }

    pub fn clear(&mut self) {
        self.at = [None; N];
    }

    pub fn is_set(&self, name: TimerName) -> bool {
        self.slot(name).is_some()
    }

    pub fn deadline(&self, name: TimerName) -> Option<Instant> {
        self.slot(name).and_then(|i| self.at[i])
    }

    /// The smallest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Removes and returns the earliest timer that is due at `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<TimerName> {
        let (idx, _) = self
            .at
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.map(|at| (i, at)))
            .filter(|(_, at)| *at <= now)
            .min_by_key(|(_, at)| *at)?;
        self.at[idx] = None;
        Some(self.names[idx])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_deadline_is_smallest_entry_and_pops_in_order() {
        let t0 = Instant::now();
        let mut t = TimerTable::<3>::new();
        t.set(TimerName::B, t0 + Duration::from_secs(32));
        t.set(TimerName::A, t0 + Duration::from_millis(500));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(t.pop_expired(t0), None);
        assert_eq!(
            t.pop_expired(t0 + Duration::from_secs(40)),
            Some(TimerName::A)
        );
        assert_eq!(
            t.pop_expired(t0 + Duration::from_secs(40)),
            Some(TimerName::B)
        );
        assert_eq!(t.next(), None);
        t.set(TimerName::A, t0);
        t.set(TimerName::A, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        t.cancel(TimerName::A);
        assert!(!t.is_set(TimerName::A));
    }
}
