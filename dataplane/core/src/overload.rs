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
//! however many more are offered.
//!
//! A queue is cut only while the shard itself works for at least [`OWN`]
//! of the window (its thread's CPU time, not the wall clock): when the
//! machine is busy with other programs, requests wait for the CPU, not for
//! the shard, and refusing calls would not shorten that wait. Without
//! stamps (no SIP datagram in the window, or a kernel that gives none) the
//! CPU share stands in: above [`HIGH`] cut, below [`LOW`] grow. Requests of
//! calls already admitted are never refused.

use std::time::{Duration, Instant};

/// How long the load is measured over.
pub const WINDOW: Duration = Duration::from_millis(50);
/// CPU shares of the window (per mille) above which admission shrinks,
/// and below which it grows back, when no queue wait is measured.
pub const HIGH: u32 = 800;
pub const LOW: u32 = 650;
/// The CPU share (per mille) below which a standing queue is not the
/// shard's own: it is not cut for.
pub const OWN: u32 = 500;
/// Admission never falls below this share: enough calls keep flowing to
/// tell when the load eases.
pub const FLOOR: u16 = 20;
/// The longest standing queue wait before admission is cut.
pub const TARGET: Duration = Duration::from_millis(10);

/// Turns queue waits and CPU time into the share of new calls admitted.
#[derive(Debug, Clone)]
pub struct Governor {
    /// When the window began, and the thread's CPU time then.
    window_start: Option<(Instant, Duration)>,
    /// The shortest queue wait seen this window, and in the one before.
    min_wait: Option<Duration>,
    last_min: Option<Duration>,
    admit: u16,
}

impl Default for Governor {
    fn default() -> Self {
        Governor {
            window_start: None,
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

    /// At the end of each window, `Some` with the new admitted share when
    /// it changed. `cpu` reads the thread's CPU time so far (user and
    /// system); it is called once a window, not each round.
    pub fn record(&mut self, now: Instant, cpu: impl FnOnce() -> Duration) -> Option<u16> {
        let (start, cpu_start) = match self.window_start {
            Some(s) => s,
            None => {
                self.window_start = Some((now, cpu()));
                return None;
            }
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return None;
        }
        let cpu_now = cpu();
        let worked = cpu_now.saturating_sub(cpu_start);
        let ratio = u32::try_from(worked.as_micros() * 1000 / elapsed.as_micros().max(1))
            .unwrap_or(u32::MAX);
        self.window_start = Some((now, cpu_now));
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
            // Waiting for a CPU the machine gives to others: hold.
            (Some(_), Some(w)) if w > TARGET && ratio < OWN => (None, false),
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

    /// A shard's clock and its thread's CPU time, moved a window at a time.
    struct Clock {
        g: Governor,
        t: Instant,
        cpu: Duration,
    }

    impl Clock {
        fn new() -> Self {
            let mut c = Clock {
                g: Governor::default(),
                t: Instant::now(),
                cpu: Duration::ZERO,
            };
            let cpu = c.cpu;
            assert_eq!(c.g.record(c.t, || cpu), None);
            c
        }

        /// One window in which the thread worked `worked`.
        fn window(&mut self, worked: Duration) -> Option<u16> {
            // Mid-window rounds change nothing and do not read the CPU time.
            let mid = self.t + WINDOW / 2;
            assert_eq!(self.g.record(mid, || panic!("read mid-window")), None);
            self.t += WINDOW;
            self.cpu += worked;
            let cpu = self.cpu;
            self.g.record(self.t, || cpu)
        }
    }

    #[test]
    fn admission_falls_under_load_and_recovers() {
        let mut c = Clock::new();
        // Fully busy windows: the share falls to the floor, not below.
        let mut last = 1000;
        for _ in 0..40 {
            if let Some(a) = c.window(WINDOW) {
                assert!(a < last);
                last = a;
            }
        }
        assert_eq!(c.g.admit(), FLOOR);
        // Between the marks: unchanged.
        assert_eq!(c.window(WINDOW * 7 / 10), None);
        // Idle windows: back to everything, 50 per mille a window.
        for _ in 0..30 {
            c.window(WINDOW / 10);
        }
        assert_eq!(c.g.admit(), 1000);
        // Idle at full admission: nothing to report.
        assert_eq!(c.window(Duration::ZERO), None);
    }

    #[test]
    fn a_standing_queue_cuts_admission_and_an_empty_one_restores_it() {
        let mut c = Clock::new();
        // Busy but no queue: nothing is cut (the CPU share is not used
        // while waits are measured).
        c.g.queued(Duration::from_millis(1));
        assert_eq!(c.window(WINDOW), None);
        // A burst passes (one short wait in the window): no cut.
        c.g.queued(Duration::from_millis(30));
        c.g.queued(Duration::from_millis(2));
        assert_eq!(c.window(WINDOW), None);
        // Over the target for one window: a burst, held.
        c.g.queued(Duration::from_millis(15));
        assert_eq!(c.window(WINDOW), None);
        // For two: a standing queue, cut by a fifth.
        c.g.queued(Duration::from_millis(15));
        assert_eq!(c.window(WINDOW), Some(800));
        // Far over it for two windows: by half (the first of them still
        // counts the window before, 15 ms: by a fifth).
        c.g.queued(TARGET * 5);
        assert_eq!(c.window(WINDOW), Some(640));
        c.g.queued(TARGET * 5);
        assert_eq!(c.window(WINDOW), Some(320));
        // Between half the target and the target: held.
        c.g.queued(TARGET * 3 / 4);
        assert_eq!(c.window(WINDOW), None);
        // Empty again: grows back.
        c.g.queued(Duration::ZERO);
        assert_eq!(c.window(WINDOW), Some(370));
        // A window without stamps falls back on the CPU share.
        assert_eq!(c.window(WINDOW), Some(296));
    }

    #[test]
    fn a_queue_while_the_shard_idles_is_not_its_own() {
        let mut c = Clock::new();
        // Requests wait far over the target, but the shard's thread works
        // a tenth of the time: the machine is busy elsewhere. Held.
        for _ in 0..6 {
            c.g.queued(TARGET * 5);
            assert_eq!(c.window(WINDOW / 10), None);
        }
        assert_eq!(c.g.admit(), 1000);
        // The same queue while the shard works most of the window: its
        // own, cut.
        c.g.queued(TARGET * 5);
        assert_eq!(c.window(WINDOW * 6 / 10), Some(500));
        // Back to idling with the queue: held where it is, not grown.
        c.g.queued(TARGET * 5);
        assert_eq!(c.window(WINDOW / 10), None);
        // The queue gone: grows back.
        c.g.queued(Duration::ZERO);
        assert_eq!(c.window(WINDOW / 10), Some(550));
    }
}
