//! How many calls a caller thread has started by a given time: a fixed
//! rate (`-r`/`-rp`), or one raised by `-rate_increase` every `-fd`
//! seconds up to `-rate_max`, as SIPp does.

/// A thread's call rate over time (calls per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePlan {
    pub base: f64,
    /// Added at the end of every period (0: a fixed rate).
    pub increase: f64,
    pub period_us: u64,
    /// The rate stops rising here.
    pub max: Option<f64>,
}

impl RatePlan {
    pub fn fixed(rate: f64) -> Self {
        RatePlan {
            base: rate,
            increase: 0.0,
            period_us: 1_000_000,
            max: None,
        }
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
        self.rate_in(t / self.period_us.max(1))
    }

    /// Whether the rate has reached `-rate_max` by `t`.
    pub fn at_max(&self, t: u64) -> bool {
        self.increase > 0.0
            && self.max.is_some_and(|m| {
                self.base + self.increase * (t / self.period_us.max(1)) as f64 >= m
            })
    }

    /// Calls due by time `t`: the rate integrated from 0 to `t`.
    pub fn due(&self, t: u64) -> f64 {
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
}
