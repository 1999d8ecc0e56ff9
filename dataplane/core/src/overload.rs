//! Overload control (BRIEF §8): a shard offered more calls than it can
//! carry refuses the excess early, with 503 and Retry-After, before any
//! call state exists, instead of queueing everything and answering it all
//! late.
//!
//! The load signal is how long requests wait before the shard reads them:
//! the kernel stamps each SIP datagram when it arrives, and the shortest
//! wait over two windows ([`WINDOW`]) is the queue that stays, not a burst
//! that passes (as CoDel reads a queue). The [`Governor`] turns it into the
//! share of new calls admitted (per mille), the way TCP paces itself: a
//! standing queue above [`TARGET`] cuts the share by a fifth each window
//! (by half above four times it), an empty one ([`TARGET`] / 2) lets it
//! grow back by 5 % a window. So the calls the shard takes wait little,
//! however many more are offered. Without stamps (no SIP datagram in the
//! window, or a kernel that gives none) the busy ratio stands in: above
//! [`HIGH`] cut, below [`LOW`] grow. Requests of calls already admitted are
//! never refused.

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
/// The longest standing queue wait before admission is cut.
pub const TARGET: Duration = Duration::from_millis(10);

/// Turns the measured busy time into the share of new calls admitted.
#[derive(Debug, Clone)]
pub struct Governor {
    window_start: Option<Instant>,
    busy: Duration,
    /// The shortest queue wait seen this window, and in the one before.
    min_wait: Option<Duration>,
    last_min: Option<Duration>,
    admit: u16,
}

impl Default for Governor {
    fn default() -> Self {
        Governor {
            window_start: None,
            busy: Duration::ZERO,
            min_wait: None,
            last_min: None,
            admit: 1000,
        }
    }
}

impl Governor {
    /// The share of new calls admitted now, per mille.
    pub fn admit(&self) -> u16 {
        self.admit
    }

    /// A request waited `waited` between its arrival and its reading.
    pub fn queued(&mut self, waited: Duration) {
        self.min_wait = Some(self.min_wait.map_or(waited, |m| m.min(waited)));
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
        // What to keep of the share (numerator, denominator), or grow.
        // A queue stands when it lasted two windows (a burst passes).
        let current = self.min_wait.take();
        let standing = match (current, self.last_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        self.last_min = current;
        let (keep, grow) = match (current, standing) {
            (Some(_), Some(w)) if w > TARGET * 4 => (Some((1, 2)), false),
            (Some(c), s) => (
                Some((4, 5)).filter(|_| s.is_some_and(|w| w > TARGET)),
                c < TARGET / 2,
            ),
            (None, _) => (Some((4, 5)).filter(|_| ratio > HIGH), ratio < LOW),
        };
        if let Some((num, den)) = keep {
            self.admit = (self.admit * num / den).max(FLOOR);
        } else if grow {
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

    #[test]
    fn a_standing_queue_cuts_admission_and_an_empty_one_restores_it() {
        let mut g = Governor::default();
        let mut t = Instant::now();
        g.record(t, Duration::ZERO);
        // Busy but no queue: nothing is cut (the busy ratio is not used
        // while waits are measured).
        t += WINDOW;
        g.queued(Duration::from_millis(1));
        assert_eq!(g.record(t, WINDOW), None);
        // A burst passes (one short wait in the window): no cut.
        t += WINDOW;
        g.queued(Duration::from_millis(30));
        g.queued(Duration::from_millis(2));
        assert_eq!(g.record(t, WINDOW), None);
        // Over the target for one window: a burst, held.
        t += WINDOW;
        g.queued(Duration::from_millis(15));
        assert_eq!(g.record(t, WINDOW), None);
        // For two: a standing queue, cut by a fifth.
        t += WINDOW;
        g.queued(Duration::from_millis(15));
        assert_eq!(g.record(t, WINDOW), Some(800));
        // Far over it for two windows: by half (the first of them still
        // counts the window before, 15 ms: by a fifth).
        t += WINDOW;
        g.queued(TARGET * 5);
        assert_eq!(g.record(t, WINDOW), Some(640));
        t += WINDOW;
        g.queued(TARGET * 5);
        assert_eq!(g.record(t, WINDOW), Some(320));
        // Between half the target and the target: held.
        t += WINDOW;
        g.queued(TARGET * 3 / 4);
        assert_eq!(g.record(t, WINDOW), None);
        // Empty again: grows back.
        t += WINDOW;
        g.queued(Duration::ZERO);
        assert_eq!(g.record(t, WINDOW), Some(370));
        // A window without stamps falls back on the busy ratio.
        t += WINDOW;
        assert_eq!(g.record(t, WINDOW), Some(296));
    }
}
