//! Overload control (BRIEF §8): a shard offered more calls than it can
//! carry refuses the excess early, with 503 and Retry-After, before any
//! call state exists, instead of queueing everything and answering it all
//! late.
//!
//! The load signal is the shard's busy ratio: the share of each window
//! its loop spent working rather than waiting for input. The [`Governor`]
//! turns it into the share of new calls admitted (per mille), the way TCP
//! paces itself: above [`HIGH`] the share is cut by a fifth each window,
//! below [`LOW`] it grows back by 5 % a window. Requests of calls already
//! admitted are never refused.

use std::time::{Duration, Instant};

/// How long the busy ratio is measured over.
pub const WINDOW: Duration = Duration::from_millis(50);
/// Busy ratios (per mille) above which admission shrinks, and below which
/// it grows back.
pub const HIGH: u32 = 800;
pub const LOW: u32 = 650;
/// Admission never falls below this share: enough calls keep flowing to
/// tell when the load eases.
pub const FLOOR: u16 = 20;

/// Turns the measured busy time into the share of new calls admitted.
#[derive(Debug, Clone)]
pub struct Governor {
    window_start: Option<Instant>,
    busy: Duration,
    admit: u16,
}

impl Default for Governor {
    fn default() -> Self {
        Governor {
            window_start: None,
            busy: Duration::ZERO,
            admit: 1000,
        }
    }
}

impl Governor {
    /// The share of new calls admitted now, per mille.
    pub fn admit(&self) -> u16 {
        self.admit
    }

    /// Counts `busy` time worked up to `now`; at the end of each window,
    /// `Some` with the new admitted share when it changed.
    pub fn record(&mut self, now: Instant, busy: Duration) -> Option<u16> {
        let start = *self.window_start.get_or_insert(now);
        self.busy += busy;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return None;
        }
        let ratio = u32::try_from(self.busy.as_micros() * 1000 / elapsed.as_micros().max(1))
            .unwrap_or(u32::MAX);
        self.window_start = Some(now);
        self.busy = Duration::ZERO;
        let before = self.admit;
        if ratio > HIGH {
            self.admit = (self.admit * 4 / 5).max(FLOOR);
        } else if ratio < LOW {
            self.admit = (self.admit + 50).min(1000);
        }
        (self.admit != before).then_some(self.admit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_falls_under_load_and_recovers() {
        let mut g = Governor::default();
        let t0 = Instant::now();
        let mut t = t0;
        assert_eq!(g.record(t, Duration::ZERO), None);
        // Fully busy windows: the share falls to the floor, not below.
        let mut last = 1000;
        for _ in 0..40 {
            t += WINDOW;
            if let Some(a) = g.record(t, WINDOW) {
                assert!(a < last);
                last = a;
            }
        }
        assert_eq!(g.admit(), FLOOR);
        // Between the marks: unchanged.
        t += WINDOW;
        assert_eq!(g.record(t, WINDOW * 8 / 10), None);
        // Idle windows: back to everything, 50 per mille a window.
        for _ in 0..30 {
            t += WINDOW;
            g.record(t, WINDOW / 10);
        }
        assert_eq!(g.admit(), 1000);
        // Idle at full admission: nothing to report.
        t += WINDOW;
        assert_eq!(g.record(t, Duration::ZERO), None);
    }
}
