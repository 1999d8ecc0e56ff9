//! Wake-up coalescing of a shard loop: once a first completion is ready,
//! how long the loop sleeps on for more before it handles them together.
//!
//! Each wake-up of a shard costs far more than its share of the work (the
//! switch into the thread, caches cold after the other processes ran, and
//! the wake-up of every sleeping peer its sends reach). Signalling tolerates
//! a few milliseconds per message (a transaction's timers are in hundreds of
//! milliseconds); relayed RTP does not, so while a shard relays media it
//! uses the shorter media window.

use std::time::{Duration, Instant};

/// A shard that received a media datagram this recently is relaying media.
pub const MEDIA_RECENT: Duration = Duration::from_secs(1);

/// The two coalescing windows (zero: wake for every completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coalescing {
    /// While the shard relays no media.
    pub signalling: Duration,
    /// While it does; never longer than `signalling`.
    pub media: Duration,
}

impl Coalescing {
    /// The window of a round at `now`, the shard's last media datagram
    /// having arrived at `media_seen`.
    pub fn window(&self, now: Instant, media_seen: Option<Instant>) -> Duration {
        let relaying =
            media_seen.is_some_and(|at| now.saturating_duration_since(at) < MEDIA_RECENT);
        if relaying {
            self.media.min(self.signalling)
        } else {
            self.signalling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Coalescing = Coalescing {
        signalling: Duration::from_micros(4000),
        media: Duration::from_micros(1000),
    };

    #[test]
    fn signalling_alone_takes_the_long_window() {
        let now = Instant::now();
        assert_eq!(C.window(now, None), Duration::from_micros(4000));
    }

    #[test]
    fn recent_media_takes_the_short_window_until_it_goes_quiet() {
        let t0 = Instant::now();
        assert_eq!(C.window(t0, Some(t0)), Duration::from_micros(1000));
        let later = t0 + MEDIA_RECENT - Duration::from_millis(1);
        assert_eq!(C.window(later, Some(t0)), Duration::from_micros(1000));
        assert_eq!(
            C.window(t0 + MEDIA_RECENT, Some(t0)),
            Duration::from_micros(4000)
        );
    }

    #[test]
    fn the_media_window_never_lengthens_the_signalling_one() {
        let c = Coalescing {
            signalling: Duration::from_micros(500),
            media: Duration::from_micros(1000),
        };
        let now = Instant::now();
        assert_eq!(c.window(now, Some(now)), Duration::from_micros(500));
        let off = Coalescing::default();
        assert_eq!(off.window(now, Some(now)), Duration::ZERO);
        assert_eq!(off.window(now, None), Duration::ZERO);
    }
}
