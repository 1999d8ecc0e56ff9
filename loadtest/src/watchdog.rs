//! SIPp's watchdog, per load thread: it should run every `interval`; a
//! thread that comes back to it later than the minor or major threshold
//! was held up (an overloaded machine), and is warned about; too many
//! such trips end the run, as they end SIPp's. Trip counts start again
//! after `reset` without one. Sans-IO: times are given (ms).

/// The `-watchdog_*` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Between runs of the watchdog (`-watchdog_interval`; 0: none).
    pub interval_ms: u64,
    /// Trip counts start again after this long without a trip.
    pub reset_ms: u64,
    pub minor_ms: u64,
    pub major_ms: u64,
    /// Trips allowed (negative: any number).
    pub minor_max: i64,
    pub major_max: i64,
}

impl Default for Limits {
    /// SIPp's defaults.
    fn default() -> Self {
        Limits {
            interval_ms: 400,
            reset_ms: 600_000,
            minor_ms: 500,
            major_ms: 3000,
            minor_max: 120,
            major_max: 10,
        }
    }
}

/// What one run of the watchdog found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A major (`true`) or minor trip: the warning.
    Tripped { major: bool, warning: String },
    /// The trip counts started again: the warning.
    Reset(String),
    /// Too many trips: the run ends with this error.
    Overload(String),
}

#[derive(Debug, Clone)]
pub struct Watchdog {
    limits: Limits,
    last_fire: u64,
    last_trigger: u64,
    minor: i64,
    major: i64,
}

impl Watchdog {
    /// A watchdog started at `now` (ms); none with a zero interval.
    pub fn new(limits: Limits, now: u64) -> Option<Self> {
        (limits.interval_ms > 0).then_some(Watchdog {
            limits,
            last_fire: now,
            last_trigger: now,
            minor: 0,
            major: 0,
        })
    }

    /// When it runs next (ms).
    pub fn due(&self) -> u64 {
        self.last_fire.saturating_add(self.limits.interval_ms)
    }

    /// Runs it at `now` (ms), as SIPp's does: a trip is a run later than
    /// a threshold after the last one.
    pub fn fire(&mut self, now: u64) -> Vec<Event> {
        let l = self.limits;
        let gap = now.saturating_sub(self.last_fire);
        let mut events = Vec::new();
        let tripped = if gap > l.major_ms {
            self.major += 1;
            Some((true, l.major_ms, l.major_max - self.major))
        } else if gap > l.minor_ms {
            self.minor += 1;
            Some((false, l.minor_ms, l.minor_max - self.minor))
        } else {
            None
        };
        if let Some((major, threshold, left)) = tripped {
            self.last_trigger = now;
            events.push(Event::Tripped {
                major,
                warning: format!(
                    "overload warning: the {} watchdog timer {threshold}ms has been tripped ({gap}), {left} trips remaining",
                    if major { "major" } else { "minor" }
                ),
            });
        }
        let over = |count: i64, max: i64| max >= 0 && count > max;
        if over(self.major, l.major_max) {
            events.push(Event::Overload(format!(
                "overload error: the watchdog timer has tripped the major threshold of {}ms too many times ({} out of {} allowed) ({} out of {} minor {}ms timeouts tripped)",
                l.major_ms, self.major, l.major_max, self.minor, l.minor_max, l.minor_ms
            )));
        } else if over(self.minor, l.minor_max) {
            events.push(Event::Overload(format!(
                "overload error: the watchdog timer has tripped the minor threshold of {}ms too many times ({} out of {} allowed) ({} out of {} major {}ms timeouts tripped)",
                l.minor_ms, self.minor, l.minor_max, self.major, l.major_max, l.major_ms
            )));
        }
        if l.reset_ms > 0
            && (self.major > 0 || self.minor > 0)
            && now > self.last_trigger.saturating_add(l.reset_ms)
        {
            events.push(Event::Reset(format!(
                "resetting watchdog timer trigger counts, as it has not been triggered in over {}ms",
                now - self.last_trigger
            )));
            self.major = 0;
            self.minor = 0;
        }
        self.last_fire = now;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            interval_ms: 100,
            reset_ms: 10_000,
            minor_ms: 150,
            major_ms: 1000,
            minor_max: 2,
            major_max: 1,
        }
    }

    fn kinds(e: &[Event]) -> Vec<&'static str> {
        e.iter()
            .map(|e| match e {
                Event::Tripped { major: true, .. } => "major",
                Event::Tripped { major: false, .. } => "minor",
                Event::Reset(_) => "reset",
                Event::Overload(_) => "overload",
            })
            .collect()
    }

    #[test]
    fn on_time_runs_are_quiet_and_late_ones_trip() {
        let mut w = Watchdog::new(limits(), 0).unwrap();
        assert_eq!(w.due(), 100);
        assert!(w.fire(100).is_empty());
        assert!(w.fire(250).is_empty(), "150 ms is not past 150");
        let e = w.fire(401);
        assert_eq!(kinds(&e), ["minor"]);
        match &e[0] {
            Event::Tripped { warning, .. } => {
                assert!(warning.contains("minor watchdog timer 150ms"), "{warning}");
                assert!(warning.contains("(151), 1 trips remaining"), "{warning}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(kinds(&w.fire(2000)), ["major"]);
        assert_eq!(w.due(), 2100);
    }

    #[test]
    fn too_many_trips_end_the_run() {
        let mut w = Watchdog::new(limits(), 0).unwrap();
        let mut t = 0;
        let mut late = |w: &mut Watchdog| {
            t += 200;
            kinds(&w.fire(t))
        };
        assert_eq!(late(&mut w), ["minor"]);
        assert_eq!(late(&mut w), ["minor"]);
        // Past the two allowed.
        assert_eq!(late(&mut w), ["minor", "overload"]);
        let mut w = Watchdog::new(limits(), 0).unwrap();
        assert_eq!(kinds(&w.fire(1500)), ["major"]);
        let e = w.fire(3000);
        assert_eq!(kinds(&e), ["major", "overload"]);
        match &e[1] {
            Event::Overload(m) => assert!(m.contains("major threshold of 1000ms"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A negative maximum allows any number.
        let mut w = Watchdog::new(
            Limits {
                minor_max: -1,
                ..limits()
            },
            0,
        )
        .unwrap();
        for k in 1..50 {
            assert_eq!(kinds(&w.fire(k * 200)), ["minor"]);
        }
    }

    #[test]
    fn counts_start_again_after_a_quiet_spell() {
        let mut w = Watchdog::new(limits(), 0).unwrap();
        assert_eq!(kinds(&w.fire(200)), ["minor"]);
        assert_eq!(kinds(&w.fire(400)), ["minor"]);
        let mut t = 400;
        while t < 10_400 {
            t += 100;
            assert!(w.fire(t).is_empty(), "{t}");
        }
        assert_eq!(kinds(&w.fire(10_500)), ["reset"]);
        // Two more minor trips are allowed again.
        assert_eq!(kinds(&w.fire(10_700)), ["minor"]);
        assert_eq!(kinds(&w.fire(10_900)), ["minor"]);
        assert!(
            Watchdog::new(
                Limits {
                    interval_ms: 0,
                    ..limits()
                },
                0
            )
            .is_none()
        );
    }
}
