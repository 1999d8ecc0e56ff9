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

/// Receives one wake-up aims to gather: past that the per-wake cost is
/// spread thin, and a longer window would only add delay.
pub const TARGET_RECEIVES: u64 = 64;

/// How long the receive rate is measured over.
pub const RATE_PERIOD: Duration = Duration::from_millis(100);

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

/// The window a loop sleeps with: long enough to gather about
/// `TARGET_RECEIVES` at the receive rate of the last `RATE_PERIOD`,
/// never longer than its [`Coalescing`] window. At a low rate that is the
/// configured window; at a high one a fraction of it.
#[derive(Debug, Clone)]
pub struct Pacer {
    coalescing: Coalescing,
    period_start: Instant,
    count: u64,
    /// Receives in the last whole period, and that period's length.
    last: Option<(u64, Duration)>,
}

impl Pacer {
    pub fn new(coalescing: Coalescing, now: Instant) -> Self {
        Pacer {
            coalescing,
            period_start: now,
            count: 0,
            last: None,
        }
    }

    /// A round at `now` took `received` messages: datagrams (SIP and
    /// media, from sockets, AF_XDP and other shards) and messages framed
    /// out of stream connections.
    pub fn received(&mut self, now: Instant, received: u64) {
        self.count += received;
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed >= RATE_PERIOD {
            self.last = Some((self.count, elapsed));
            self.count = 0;
            self.period_start = now;
        }
    }

    /// The window of the wait that follows a round at `now`.
    pub fn window(&self, now: Instant, media_seen: Option<Instant>) -> Duration {
        let cap = self.coalescing.window(now, media_seen);
        match self.last {
            // TARGET_RECEIVES at the last period's rate: period × target /
            // count.
            Some((count, period)) if count > TARGET_RECEIVES => {
                let nanos = period.as_nanos() * u128::from(TARGET_RECEIVES) / u128::from(count);
                cap.min(Duration::from_nanos(
                    u64::try_from(nanos).unwrap_or(u64::MAX),
                ))
            }
            _ => cap,
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

    /// `n` receives spread over one rate period from `t`, in rounds of
    /// `per_round`.
    fn feed(p: &mut Pacer, t: Instant, n: u64, per_round: u64) -> Instant {
        let rounds = n / per_round;
        let step = RATE_PERIOD / u32::try_from(rounds).unwrap();
        let mut now = t;
        for _ in 0..rounds {
            p.received(now, per_round);
            now += step;
        }
        // The period closes with the next round.
        let end = t + RATE_PERIOD;
        p.received(end, 0);
        end
    }

    #[test]
    fn the_window_shortens_only_past_the_rate_that_fills_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(C, t0);
        assert_eq!(p.window(t0, None), Duration::from_micros(4000));
        // 64 receives in 4 ms is 1,600 in a period: below that the
        // configured window stays, above it the window shortens.
        let now = feed(&mut p, t0, 1500, 10);
        assert_eq!(p.window(now, None), Duration::from_micros(4000));
        let now = feed(&mut p, now, 1700, 10);
        let w = p.window(now, None);
        assert!(
            w < Duration::from_micros(4000) && w > Duration::from_micros(3700),
            "{w:?}"
        );
    }

    #[test]
    fn a_high_rate_shortens_the_window_to_gather_the_target() {
        let t0 = Instant::now();
        let mut p = Pacer::new(C, t0);
        // 52,000 receives a second (8,000 calls/s): 5,200 in a period.
        let now = feed(&mut p, t0, 5200, 40);
        let w = p.window(now, None);
        // 64 at 52/ms: about 1.23 ms.
        assert!(
            w > Duration::from_micros(1200) && w < Duration::from_micros(1260),
            "{w:?}"
        );
        // Media caps it at its own window.
        assert_eq!(p.window(now, Some(now)), Duration::from_micros(1000));
        // The rate falls: the next period lengthens the window again.
        let later = feed(&mut p, now, 100, 10);
        assert_eq!(p.window(later, None), Duration::from_micros(4000));
    }

    #[test]
    fn a_period_without_rounds_counts_as_its_length() {
        let t0 = Instant::now();
        let mut p = Pacer::new(C, t0);
        let end = feed(&mut p, t0, 5200, 40);
        // A second with one round at its end taking 5,200: 5,200 a second,
        // not in 100 ms, so the configured window.
        let much_later = end + Duration::from_secs(1);
        p.received(much_later, 5200);
        assert_eq!(p.window(much_later, None), Duration::from_micros(4000));
        // The same 5,200 in a 100 ms period shortens it.
        p.received(much_later + RATE_PERIOD, 5200);
        assert!(p.window(much_later + RATE_PERIOD, None) < Duration::from_micros(1300));
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
