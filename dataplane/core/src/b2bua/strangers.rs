//! Answers to strangers, rate-limited so the SBC is no reflector (BRIEF
//! §8): a source that matches no trunk gets at most
//! [`StrangerAnswers::per_source`] answers a second (403s, 400s to its
//! malformed requests), and all strangers together at most
//! [`StrangerAnswers::total`] a second on this shard; everything else from
//! them is dropped silently. Zero means never answer.
//!
//! Sources are tracked in a fixed table indexed by a keyed hash of the
//! address: a source that lands on a taken slot takes it over (the oldest
//! is forgotten), so the table never grows however many addresses a flood
//! spoofs, and an attacker cannot aim collisions at a chosen source.

use std::net::IpAddr;
use std::time::Instant;

use super::ids::Secrets;
use crate::policy::StrangerAnswers;

/// Sources tracked per shard.
const SLOTS: usize = 4096;

/// A token bucket: `rate` tokens a second, at most `rate` held (a burst
/// of one second's worth). Tokens are counted in millionths.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    micro_tokens: u64,
    last: Option<Instant>,
}

impl Bucket {
    pub fn take(&mut self, now: Instant, rate: u32) -> bool {
        self.take_milli(now, u64::from(rate) * 1000)
    }

    /// [`Bucket::take`] at `milli_rate` thousandths of a token a second
    /// (a share of a rate); it holds at least one token.
    pub fn take_milli(&mut self, now: Instant, milli_rate: u64) -> bool {
        let cap = milli_rate.saturating_mul(1000).max(1_000_000);
        self.micro_tokens = match self.last {
            // A new bucket starts full.
            None => cap,
            Some(last) => {
                let us = u64::try_from(now.saturating_duration_since(last).as_micros())
                    .unwrap_or(u64::MAX);
                // micro-tokens per µs = tokens per s = milli_rate / 1000.
                self.micro_tokens
                    .saturating_add(us.saturating_mul(milli_rate) / 1000)
                    .min(cap)
            }
        };
        self.last = Some(now);
        if self.micro_tokens >= 1_000_000 {
            self.micro_tokens -= 1_000_000;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    source: Option<IpAddr>,
    bucket: Bucket,
}

#[derive(Debug)]
pub(crate) struct StrangerLimit {
    slots: Box<[Slot]>,
    total: Bucket,
}

impl Default for StrangerLimit {
    fn default() -> Self {
        StrangerLimit {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            total: Bucket::default(),
        }
    }
}

impl StrangerLimit {
    /// Whether a stranger at `source` may be answered now (and counts the
    /// answer when it may).
    pub fn allow(
        &mut self,
        now: Instant,
        source: IpAddr,
        limits: StrangerAnswers,
        secrets: &Secrets,
    ) -> bool {
        if limits.per_source == 0 || limits.total == 0 {
            return false;
        }
        let index = usize::try_from(secrets.source_slot(source) % SLOTS as u64).unwrap_or(0);
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        if slot.source != Some(source) {
            *slot = Slot {
                source: Some(source),
                bucket: Bucket::default(),
            };
        }
        // The source's own budget first: a source over it does not use up
        // what the others share.
        slot.bucket.take(now, limits.per_source) && self.total.take(now, limits.total)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_bytes([3; 48])
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xcb00_7100 + n))
    }

    #[test]
    fn one_source_gets_its_rate_and_no_more() {
        let limits = StrangerAnswers {
            per_source: 2,
            total: 100,
        };
        let (s, t0) = (secrets(), Instant::now());
        let mut l = StrangerLimit::default();
        let answered: usize = (0..1000).filter(|_| l.allow(t0, ip(1), limits, &s)).count();
        assert_eq!(answered, 2, "a burst of one second's worth");
        // Half a second later: one more token.
        let t1 = t0 + Duration::from_millis(500);
        let answered: usize = (0..100).filter(|_| l.allow(t1, ip(1), limits, &s)).count();
        assert_eq!(answered, 1);
        // Another source has its own budget.
        assert!(l.allow(t1, ip(2), limits, &s));
    }

    #[test]
    fn many_sources_share_the_total() {
        let limits = StrangerAnswers {
            per_source: 2,
            total: 50,
        };
        let (s, t0) = (secrets(), Instant::now());
        let mut l = StrangerLimit::default();
        // 100,000 spoofed sources within one second: at most the total
        // (plus what refills meanwhile).
        let mut answered = 0;
        for n in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(n) * 10);
            answered += usize::from(l.allow(now, ip(n), limits, &s));
        }
        assert!((50..=100).contains(&answered), "{answered}");
    }

    #[test]
    fn zero_means_silent() {
        let (s, t0) = (secrets(), Instant::now());
        let mut l = StrangerLimit::default();
        for limits in [
            StrangerAnswers {
                per_source: 0,
                total: 10,
            },
            StrangerAnswers {
                per_source: 10,
                total: 0,
            },
        ] {
            assert!(!l.allow(t0, ip(9), limits, &s));
        }
    }
}
