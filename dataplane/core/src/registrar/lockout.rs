//! Sources that keep failing authentication are ignored for a while
//! (BRIEF §8: brute force against phone accounts). A fixed table indexed
//! by a keyed hash of the source, so a spoofing attacker cannot grow it;
//! a slot holds one source, the latest to fail.
//!
//! One table serves every shard (a source's requests reach any shard:
//! their Call-IDs pick it), so it is made of atomics: counts are
//! approximate when two shards count the same source at the same instant,
//! never unbounded, and nothing waits.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::LockoutSettings;
use crate::b2bua::Secrets;

const SLOTS: usize = 4096;

#[derive(Debug, Default)]
struct Slot {
    /// The keyed hash of the source the slot holds (0: none).
    key: AtomicU64,
    /// Failures in the current window (high 32 bits) and the second the
    /// window started (low 32 bits).
    window: AtomicU64,
    /// The second the block ends (0: not blocked).
    blocked_until: AtomicU32,
}

/// Failure counts, shared by the shards (`Arc`).
#[derive(Debug)]
pub struct Lockout {
    /// Seconds count from the first `now` it is given (plus one: 0 means
    /// "never"); the core reads no clock of its own.
    base: std::sync::OnceLock<Instant>,
    slots: Box<[Slot]>,
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout {
            base: std::sync::OnceLock::new(),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

fn pack(failures: u32, since: u32) -> u64 {
    (u64::from(failures) << 32) | u64::from(since)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

impl Lockout {
    /// The slot for `ip` and the key it is held under.
    fn slot(&self, ip: IpAddr, secrets: &Secrets) -> (&Slot, u64) {
        let ip = crate::net::canonical(ip);
        let key = secrets.source_slot(ip).max(1);
        let i = usize::try_from(key % SLOTS as u64).unwrap_or(0);
        // SLOTS entries, i < SLOTS.
        (&self.slots[i], key)
    }

    fn second(&self, now: Instant) -> u32 {
        let base = *self.base.get_or_init(|| now);
        let s = now.saturating_duration_since(base).as_secs();
        u32::try_from(s).unwrap_or(u32::MAX - 1).saturating_add(1)
    }

    /// Whether `ip` is blocked at `now`.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant, secrets: &Secrets) -> bool {
        let (slot, key) = self.slot(ip, secrets);
        slot.key.load(Ordering::Relaxed) == key
            && slot.blocked_until.load(Ordering::Relaxed) > self.second(now)
    }

    /// Counts a failed authentication from `ip`; true when it is now
    /// blocked.
    pub fn fail(
        &self,
        ip: IpAddr,
        now: Instant,
        limits: LockoutSettings,
        secrets: &Secrets,
    ) -> bool {
        let (slot, key) = self.slot(ip, secrets);
        let t = self.second(now);
        if slot.key.swap(key, Ordering::Relaxed) != key {
            // Taken over from another source (or empty): a fresh count.
            slot.blocked_until.store(0, Ordering::Relaxed);
            slot.window.store(pack(0, t), Ordering::Relaxed);
        }
        let window = u32::try_from(limits.window.as_secs()).unwrap_or(u32::MAX);
        let mut current = slot.window.load(Ordering::Relaxed);
        let failures = loop {
            let (failures, since) = unpack(current);
            let next = if t.saturating_sub(since) < window {
                pack(failures.saturating_add(1), since)
            } else {
                pack(1, t)
            };
            match slot.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break unpack(next).0,
                Err(seen) => current = seen,
            }
        };
        if failures >= limits.failures {
            let block = u32::try_from(limits.block.as_secs()).unwrap_or(u32::MAX);
            slot.blocked_until
                .store(t.saturating_add(block), Ordering::Relaxed);
            slot.window.store(pack(0, t), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Sources blocked at `now` (for a gauge: looks at every slot).
    pub fn blocked(&self, now: Instant) -> usize {
        let t = self.second(now);
        self.slots
            .iter()
            .filter(|s| s.blocked_until.load(Ordering::Relaxed) > t)
            .count()
    }

    /// A successful authentication clears the source's failures.
    pub fn succeed(&self, ip: IpAddr, secrets: &Secrets) {
        let (slot, key) = self.slot(ip, secrets);
        if slot.key.load(Ordering::Relaxed) == key
            && slot.blocked_until.load(Ordering::Relaxed) == 0
        {
            slot.window.store(pack(0, 0), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn blocks_after_n_failures_in_the_window_then_lets_go() {
        let secrets = Secrets::from_bytes([3; 48]);
        let limits = LockoutSettings {
            failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(600),
        };
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let l = Lockout::default();
        let t0 = Instant::now();
        assert!(!l.fail(ip, t0, limits, &secrets));
        assert!(!l.fail(ip, t0 + Duration::from_secs(1), limits, &secrets));
        assert!(!l.is_blocked(ip, t0, &secrets));
        assert!(l.fail(ip, t0 + Duration::from_secs(2), limits, &secrets));
        assert!(l.is_blocked(ip, t0 + Duration::from_secs(601), &secrets));
        assert!(!l.is_blocked(ip, t0 + Duration::from_secs(603), &secrets));
        // Failures spread wider than the window never block.
        let other: IpAddr = "198.51.100.10".parse().unwrap();
        for i in 0..10 {
            assert!(!l.fail(other, t0 + Duration::from_secs(61 * i), limits, &secrets));
        }
        // Success forgets earlier failures.
        let third: IpAddr = "198.51.100.11".parse().unwrap();
        l.fail(third, t0, limits, &secrets);
        l.fail(third, t0, limits, &secrets);
        l.succeed(third, &secrets);
        assert!(!l.fail(third, t0, limits, &secrets));
    }
}
