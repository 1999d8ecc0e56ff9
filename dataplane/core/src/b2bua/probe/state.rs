//! What a shard keeps of its trunk probes; `super` drives them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::b2bua::standalone::InFlight;
use crate::policy::Probe;

/// This shard's probes, by trunk name (names survive reloads; indexes may
/// not).
#[derive(Debug, Default)]
pub(crate) struct Probes {
    pub(super) trunks: HashMap<Arc<str>, ProbeState>,
    pub(super) in_flight: InFlight,
}

#[derive(Debug)]
pub(super) struct ProbeState {
    /// When the next probe goes (an alarm due earlier finds nothing to do).
    pub(super) next_at: Instant,
    pub(super) successes: u32,
    pub(super) failures: u32,
    pub(super) cseq: u32,
}

impl ProbeState {
    /// Counts one probe's result; the new state when it changes.
    pub(super) fn record(&mut self, probe: &Probe, down: bool, ok: bool) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (down && self.successes >= probe.up_after).then_some(false)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            (!down && self.failures >= probe.down_after).then_some(true)
        }
    }
}

/// Whether a final answer to a probe says the trunk is alive.
pub(super) fn alive(code: u16) -> bool {
    code < 500 && code != 408
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_failures_in_a_row_and_up_after_successes() {
        let probe = Probe {
            interval: std::time::Duration::from_secs(5),
            down_after: 3,
            up_after: 2,
        };
        let mut s = ProbeState {
            next_at: Instant::now(),
            successes: 0,
            failures: 0,
            cseq: 0,
        };
        // Two failures, a success: the run starts again.
        assert_eq!(s.record(&probe, false, false), None);
        assert_eq!(s.record(&probe, false, false), None);
        assert_eq!(s.record(&probe, false, true), None);
        assert_eq!(s.record(&probe, false, false), None);
        assert_eq!(s.record(&probe, false, false), None);
        assert_eq!(s.record(&probe, false, false), Some(true));
        // Down: one success is not enough, two are.
        assert_eq!(s.record(&probe, true, true), None);
        assert_eq!(s.record(&probe, true, true), Some(false));
    }

    #[test]
    fn what_counts_as_alive() {
        for code in [200, 202, 403, 404, 405, 480, 486] {
            assert!(alive(code), "{code}");
        }
        for code in [408, 500, 503, 504, 600, 603] {
            assert!(!alive(code), "{code}");
        }
    }
}
