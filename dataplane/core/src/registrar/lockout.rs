//! Sources that keep failing authentication are ignored for a while
//! (BRIEF §8: brute force against phone accounts). A fixed table indexed
//! by a keyed hash of the source, so a spoofing attacker cannot grow it;
//! a slot holds one source, the latest to fail.

use std::net::IpAddr;
use std::time::Instant;

use super::LockoutSettings;
use crate::b2bua::Secrets;

const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Slot {
    ip: IpAddr,
    /// Failures in the window that started at `since`.
    failures: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

/// One shard's failure counts.
#[derive(Debug)]
pub struct Lockout {
    slots: Box<[Option<Slot>]>,
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout {
            slots: vec![None; SLOTS].into_boxed_slice(),
        }
    }
}

impl Lockout {
    fn slot(&mut self, ip: IpAddr, secrets: &Secrets) -> &mut Option<Slot> {
        let i = usize::try_from(secrets.source_slot(ip) % SLOTS as u64).unwrap_or(0);
        // SLOTS entries, i < SLOTS.
        &mut self.slots[i]
    }

    /// Whether `ip` is blocked at `now`.
    pub fn is_blocked(&mut self, ip: IpAddr, now: Instant, secrets: &Secrets) -> bool {
        let ip = crate::net::canonical(ip);
        match self.slot(ip, secrets) {
            Some(s) if s.ip == ip => s.blocked_until.is_some_and(|t| t > now),
            _ => false,
        }
    }

    /// Counts a failed authentication from `ip`; true when it is now
    /// blocked.
    pub fn fail(
        &mut self,
        ip: IpAddr,
        now: Instant,
        limits: LockoutSettings,
        secrets: &Secrets,
    ) -> bool {
        let ip = crate::net::canonical(ip);
        let slot = self.slot(ip, secrets);
        let s = match slot {
            Some(s) if s.ip == ip && now.saturating_duration_since(s.since) < limits.window => s,
            _ => slot.insert(Slot {
                ip,
                failures: 0,
                since: now,
                blocked_until: None,
            }),
        };
        s.failures = s.failures.saturating_add(1);
        if s.failures >= limits.failures {
            s.blocked_until = Some(now + limits.block);
            s.failures = 0;
            s.since = now;
            return true;
        }
        false
    }

    /// A successful authentication clears the source's failures.
    pub fn succeed(&mut self, ip: IpAddr, secrets: &Secrets) {
        let ip = crate::net::canonical(ip);
        let slot = self.slot(ip, secrets);
        if slot.is_some_and(|s| s.ip == ip && s.blocked_until.is_none()) {
            *slot = None;
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
        let mut l = Lockout::default();
        let t0 = Instant::now();
        assert!(!l.fail(ip, t0, limits, &secrets));
        assert!(!l.fail(ip, t0 + Duration::from_secs(1), limits, &secrets));
        assert!(!l.is_blocked(ip, t0, &secrets));
        assert!(l.fail(ip, t0 + Duration::from_secs(2), limits, &secrets));
        assert!(l.is_blocked(ip, t0 + Duration::from_secs(601), &secrets));
        assert!(!l.is_blocked(ip, t0 + Duration::from_secs(602), &secrets));
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
