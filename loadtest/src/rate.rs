//! How many calls a caller thread has started by a given time: a fixed
//! rate (`-r`/`-rp`), or one raised by `-rate_increase` every `-fd`
//! seconds up to `-rate_max`, as SIPp does; a rate set while the run goes
//! (SIPp's remote control and keys) starts a new plan where the old one
//! stands.

/// A thread's call rate over time (calls per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePlan {
    pub base: f64,
    /// Added at the end of every period (0: a fixed rate).
    pub increase: f64,
    pub period_us: u64,
    /// The rate stops rising here.
    pub max: Option<f64>,
    /// The plan starts here (µs since the run started): before, nothing
    /// is due beyond `origin_due`.
    pub origin_us: u64,
    /// Calls already due at `origin_us` (under the plans before this one).
    pub origin_due: f64,
}

impl RatePlan {
    pub fn fixed(rate: f64) -> Self {
        RatePlan {
            base: rate,
            increase: 0.0,
            period_us: 1_000_000,
            max: None,
            origin_us: 0,
            origin_due: 0.0,
        }
    }

    /// This plan from `at_us` on at `rate` calls/s (rising and capped as
    /// this one): nothing due so far is lost or added.
    pub fn rebased(&self, at_us: u64, rate: f64) -> Self {
        RatePlan {
            base: rate.max(0.0),
            origin_us: at_us,
            origin_due: self.due(at_us),
            ..*self
        }
    }

    /// This plan with its calls due as if `at_us` had lasted until
    /// `until_us`: a paused run resumes without catching up.
    pub fn resumed(&self, at_us: u64, until_us: u64) -> Self {
        RatePlan {
            origin_us: until_us,
            ..self.rebased(at_us, self.rate_at(at_us))
        }
    }

    /// One thread's share of the plan when `threads` share it.
    pub fn share(&self, threads: usize) -> Self {
        let n = threads.max(1) as f64;
        RatePlan {
            base: self.base / n,
            increase: self.increase / n,
            max: self.max.map(|m| m / n),
            origin_due: self.origin_due / n,
            ..*self
        }
    }

    /// Time within this plan.
    fn since(&self, t: u64) -> u64 {
        t.saturating_sub(self.origin_us)
    }

    /// The rate during period `k` (from 0); the max only caps a rising
    /// rate (SIPp ignores `-rate_max` without `-rate_increase`).
    fn rate_in(&self, k: u64) -> f64 {
        let r = self.base + self.increase * k as f64;
        match self.max {
            Some(m) if self.increase > 0.0 => r.min(m),
            _ => r,
        }
    }

    /// The rate at time `t` (µs since the run started).
    pub fn rate_at(&self, t: u64) -> f64 {
        self.rate_in(self.since(t) / self.period_us.max(1))
    }

    /// Whether the rate has reached `-rate_max` by `t`.
    pub fn at_max(&self, t: u64) -> bool {
        let t = self.since(t);
        self.increase > 0.0
            && self.max.is_some_and(|m| {
                self.base + self.increase * (t / self.period_us.max(1)) as f64 >= m
            })
    }

    /// Calls due by time `t`: the rate integrated from 0 to `t`.
    pub fn due(&self, t: u64) -> f64 {
        self.origin_due + self.due_within(self.since(t))
    }

    /// Calls due `t` µs into this plan.
    fn due_within(&self, t: u64) -> f64 {
        let p = self.period_us.max(1);
        let (k, rest) = (t / p, t % p);
        let secs = p as f64 / 1e6;
        // Whole periods: while rising, an arithmetic series; then at max.
        let rising = match self.max {
            Some(m) if self.increase > 0.0 => {
                let n = ((m - self.base) / self.increase).ceil();
                if n.is_finite() && n > 0.0 {
                    (n as u64).min(k)
                } else {
                    0
                }
            }
            _ => k,
        };
        let kf = rising as f64;
        let mut calls = (kf * self.base + self.increase * kf * (kf - 1.0) / 2.0) * secs;
        if k > rising {
            calls += (k - rising) as f64 * self.rate_in(rising) * secs;
        }
        calls + self.rate_in(k) * rest as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_rate_is_linear() {
        let r = RatePlan::fixed(100.0);
        assert_eq!(r.due(0), 0.0);
        assert!((r.due(2_500_000) - 250.0).abs() < 1e-9);
        assert!(!r.at_max(10_000_000));
        // -rate_max without -rate_increase changes nothing (SIPp).
        let r = RatePlan {
            max: Some(50.0),
            ..RatePlan::fixed(100.0)
        };
        assert_eq!(r.rate_at(5_000_000), 100.0);
        assert!((r.due(2_500_000) - 250.0).abs() < 1e-9);
    }

    #[test]
    fn a_rising_rate_climbs_each_period_up_to_its_max() {
        // 10 calls/s, +10 every second, at most 35.
        let r = RatePlan {
            base: 10.0,
            increase: 10.0,
            period_us: 1_000_000,
            max: Some(35.0),
            ..RatePlan::fixed(0.0)
        };
        assert_eq!(r.rate_at(0), 10.0);
        assert_eq!(r.rate_at(1_500_000), 20.0);
        assert_eq!(r.rate_at(3_000_000), 35.0);
        assert_eq!(r.rate_at(9_000_000), 35.0);
        // 10 + 20 + 30 in the first three seconds, then 35 a second.
        assert!((r.due(3_000_000) - 60.0).abs() < 1e-9);
        assert!((r.due(5_500_000) - (60.0 + 35.0 * 2.5)).abs() < 1e-9);
        assert!(!r.at_max(2_999_999));
        assert!(r.at_max(3_000_000));
        // Brute force agrees, µs by µs integrated per 1 ms.
        let mut sum = 0.0;
        for ms in 0..7000u64 {
            sum += r.rate_at(ms * 1000) / 1000.0;
        }
        assert!((r.due(7_000_000) - sum).abs() < 1e-6);
    }

    #[test]
    fn a_rate_set_midway_starts_where_the_old_plan_stands() {
        let r = RatePlan::fixed(100.0);
        // At 2 s, 200 calls are due; then 10 calls/s.
        let s = r.rebased(2_000_000, 10.0);
        assert!((s.due(2_000_000) - 200.0).abs() < 1e-9);
        assert!((s.due(4_000_000) - 220.0).abs() < 1e-9);
        assert_eq!(s.rate_at(3_000_000), 10.0);
        // A negative rate is none.
        let z = r.rebased(1_000_000, -5.0);
        assert!((z.due(9_000_000) - 100.0).abs() < 1e-9);
        // A rising plan keeps rising from its new base, periods counted
        // from the change.
        let rising = RatePlan {
            increase: 10.0,
            max: Some(45.0),
            ..RatePlan::fixed(10.0)
        };
        let s = rising.rebased(1_500_000, 30.0);
        assert!((s.due(1_500_000) - 20.0).abs() < 1e-9);
        assert_eq!(s.rate_at(2_400_000), 30.0);
        assert_eq!(s.rate_at(2_500_000), 40.0);
        assert_eq!(s.rate_at(3_500_000), 45.0);
        assert!(s.at_max(3_500_000) && !s.at_max(2_400_000));
    }

    #[test]
    fn a_paused_plan_resumes_without_catching_up() {
        let r = RatePlan::fixed(50.0);
        // Paused at 1 s (50 due), resumed at 5 s: 50 due then, 75 at 5.5 s.
        let s = r.resumed(1_000_000, 5_000_000);
        assert!((s.due(5_000_000) - 50.0).abs() < 1e-9);
        assert!((s.due(5_500_000) - 75.0).abs() < 1e-9);
        assert_eq!(s.rate_at(5_000_000), 50.0);
    }

    #[test]
    fn shares_add_up_to_the_plan() {
        let r = RatePlan {
            increase: 7.0,
            max: Some(40.0),
            ..RatePlan::fixed(9.0)
        }
        .rebased(1_300_000, 13.0);
        let part = r.share(3);
        for t in [1_300_000, 2_000_000, 4_700_000, 9_000_000] {
            assert!((3.0 * part.due(t) - r.due(t)).abs() < 1e-9, "{t}");
        }
    }
}
