//! A hashed timing wheel for the shard's call timers: O(1) insert and
//! expiry at 1 ms resolution, with a heap for the rare deadlines beyond
//! the wheel's span (ringing limits, timer C).
//!
//! Deadlines are rounded up to the next tick, so nothing fires early.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Slots in the wheel (a power of two); with 1 ms ticks it spans 65 s,
/// which covers every RFC 3261 timer (64*T1 = 32 s by default).
const SLOTS: usize = 1 << 16;
const TICK: Duration = Duration::from_millis(1);
/// How far before the first deadline ever inserted the wheel's time
/// starts (a whole number of ticks).
const ORIGIN_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Wheel<T> {
    origin: Option<Instant>,
    /// The first tick not yet expired.
    current: u64,
    slots: Vec<Vec<(u64, T)>>,
    /// One bit per slot: set when the slot holds entries.
    occupied: Vec<u64>,
    /// One bit per word of `occupied`: set when that word is not zero, so
    /// finding the next timer in a sparse wheel reads 16 words, not 1024.
    summary: Vec<u64>,
    overflow: BinaryHeap<Reverse<(u64, T)>>,
    len: usize,
    /// Entries due at `current - 1` or earlier, not yet handed out.
    ready: Vec<(u64, T)>,
    /// The earliest tick held, once computed (`Some(None)`: empty);
    /// `None` when it must be looked for again.
    earliest: Cell<Option<Option<u64>>>,
}

impl<T: Copy + Ord> Default for Wheel<T> {
    fn default() -> Self {
        Wheel {
            origin: None,
            current: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOTS / 64],
            summary: vec![0; SLOTS / 64 / 64],
            overflow: BinaryHeap::new(),
            len: 0,
            ready: Vec::new(),
            earliest: Cell::new(Some(None)),
        }
    }
}

impl<T: Copy + Ord> Wheel<T> {
    fn tick_of(&mut self, at: Instant) -> u64 {
        // The origin is set a margin before the first deadline, so that a
        // deadline set later but due earlier (a short timer after a long
        // one) is not pushed back to it.
        let mut origin = *self
            .origin
            .get_or_insert_with(|| at.checked_sub(ORIGIN_MARGIN).unwrap_or(at));
        if at < origin && self.current == 0 {
            // Earlier still, before time ever moved: the origin moves back.
            origin = self.rebase(origin, at.checked_sub(ORIGIN_MARGIN).unwrap_or(at));
        }
        let d = at.saturating_duration_since(origin);
        // Round up: a deadline never fires before its time.
        let ticks = d.as_nanos().div_ceil(TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Moves the origin back from `old` to `to` or a little before (a
    /// whole number of ticks before `old`, so every deadline held keeps its
    /// instant), before time has moved (`current` is 0). Returns the new
    /// origin.
    fn rebase(&mut self, old: Instant, to: Instant) -> Instant {
        let back = old.saturating_duration_since(to);
        let ticks = u64::try_from(back.as_nanos().div_ceil(TICK.as_nanos())).unwrap_or(u64::MAX);
        let Some(new) = u32::try_from(ticks)
            .ok()
            .and_then(|t| old.checked_sub(TICK * t))
        else {
            return old;
        };
        let mut held: Vec<(u64, T)> = Vec::with_capacity(self.len);
        for slot in &mut self.slots {
            held.append(slot);
        }
        held.extend(self.overflow.drain().map(|Reverse(e)| e));
        held.append(&mut self.ready);
        self.occupied.fill(0);
        self.summary.fill(0);
        self.origin = Some(new);
        for (t, item) in held {
            let t = t + ticks;
            if t - self.current < SLOTS as u64 {
                self.put(t, item);
            } else {
                self.overflow.push(Reverse((t, item)));
            }
        }
        self.earliest.set(None);
        new
    }

    fn instant_of(&self, tick: u64) -> Option<Instant> {
        let origin = self.origin?;
        // TICK is 1 ms: tick counts milliseconds since the origin.
        origin.checked_add(Duration::from_millis(tick))
    }

    /// The deadline `at` will actually fire at (rounded up to a tick).
    pub fn round(&self, at: Instant) -> Instant {
        let Some(origin) = self.origin else {
            return at;
        };
        if at < origin && self.current == 0 {
            // Inserting it moves the origin back on the same grid.
            let back = origin.saturating_duration_since(at);
            let ticks = back.as_nanos() / TICK.as_nanos();
            return u32::try_from(ticks)
                .ok()
                .and_then(|t| origin.checked_sub(TICK * t))
                .unwrap_or(at);
        }
        let d = at.saturating_duration_since(origin);
        let ticks = u64::try_from(d.as_nanos().div_ceil(TICK.as_nanos())).unwrap_or(u64::MAX);
        self.instant_of(ticks.max(self.current)).unwrap_or(at)
    }

    /// Adds an entry; returns the (rounded) deadline it will fire at.
    pub fn insert(&mut self, at: Instant, item: T) -> Instant {
        let tick = self.tick_of(at).max(self.current);
        self.len += 1;
        if let Some(known) = self.earliest.get() {
            self.earliest
                .set(Some(Some(known.map_or(tick, |k| k.min(tick)))));
        }
        if tick - self.current < SLOTS as u64 {
            self.put(tick, item);
        } else {
            self.overflow.push(Reverse((tick, item)));
        }
        self.instant_of(tick).unwrap_or(at)
    }

    fn put(&mut self, tick: u64, item: T) {
        let slot = (tick as usize) & (SLOTS - 1);
        self.slots[slot].push((tick, item));
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.summary[slot / 4096] |= 1 << ((slot / 64) % 64);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The earliest deadline held.
    pub fn next(&self) -> Option<Instant> {
        if let Some((tick, _)) = self.ready.first() {
            return self.instant_of(*tick);
        }
        if let Some(known) = self.earliest.get() {
            return known.and_then(|t| self.instant_of(t));
        }
        let found = self.scan_next();
        self.earliest.set(Some(found));
        found.and_then(|t| self.instant_of(t))
    }

    /// Finds the earliest tick in the wheel and the overflow heap.
    fn scan_next(&self) -> Option<u64> {
        let in_wheel = self.next_occupied().map(|slot| {
            let base = self.current & !(SLOTS as u64 - 1);
            let tick = base + slot as u64;
            if tick < self.current {
                tick + SLOTS as u64
            } else {
                tick
            }
        });
        let in_overflow = self.overflow.peek().map(|Reverse((t, _))| *t);
        match (in_wheel, in_overflow) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first occupied slot at or after `current`, circularly.
    fn next_occupied(&self) -> Option<usize> {
        let start = (self.current as usize) & (SLOTS - 1);
        let first_word = start / 64;
        // The start word, masked to bits at or after `start`.
        let masked = self.occupied[first_word] & (!0u64 << (start % 64));
        if masked != 0 {
            return Some(first_word * 64 + masked.trailing_zeros() as usize);
        }
        // The next non-empty word after it, circularly, found through the
        // summary; then the start word's bits before `start` (a full turn).
        let w = self.next_word(first_word + 1).filter(|w| *w != first_word);
        if let Some(w) = w {
            return Some(w * 64 + self.occupied[w].trailing_zeros() as usize);
        }
        let before = self.occupied[first_word] & !(!0u64 << (start % 64));
        (before != 0).then(|| first_word * 64 + before.trailing_zeros() as usize)
    }

    /// The first non-empty word of `occupied` at or after `from`, wrapping.
    fn next_word(&self, from: usize) -> Option<usize> {
        let words = self.occupied.len();
        let from = from % words;
        let groups = self.summary.len();
        let g0 = from / 64;
        let masked = self.summary[g0] & (!0u64 << (from % 64));
        if masked != 0 {
            return Some(g0 * 64 + masked.trailing_zeros() as usize);
        }
        for i in 1..=groups {
            let g = (g0 + i) % groups;
            let bits = if g == g0 {
                self.summary[g] & !(!0u64 << (from % 64))
            } else {
                self.summary[g]
            };
            if bits != 0 {
                return Some(g * 64 + bits.trailing_zeros() as usize);
            }
        }
        None
    }

    /// Removes and returns one entry due at `now` (with its rounded
    /// deadline), or `None`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        let origin = self.origin?;
        // Due means the deadline has passed: ticks at or before `now`,
        // rounded down (deadlines were rounded up). Before the origin (a
        // margin before the first deadline ever inserted) nothing is due.
        let since = now.checked_duration_since(origin)?;
        let now_tick = u64::try_from(since.as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX);
        loop {
            if let Some((tick, item)) = self.ready.pop() {
                self.len -= 1;
                self.earliest.set(None);
                return Some((self.instant_of(tick)?, item));
            }
            if self.current > now_tick {
                return None;
            }
            // Jump over empty slots.
            let Some(slot) = self.next_occupied() else {
                // Only overflow entries (or nothing): move time forward.
                match self.overflow.peek() {
                    Some(Reverse((t, _))) if *t <= now_tick => {
                        self.current = (*t).max(self.current)
                    }
                    _ => {
                        self.current = now_tick + 1;
                        self.refill();
                        continue;
                    }
                }
                self.refill();
                continue;
            };
            let base = self.current & !(SLOTS as u64 - 1);
            let mut tick = base + slot as u64;
            if tick < self.current {
                tick += SLOTS as u64;
            }
            if tick > now_tick {
                self.current = now_tick + 1;
                self.refill();
                continue;
            }
            let entries = &mut self.slots[slot];
            self.ready
                .extend(entries.extract_if(.., |(t, _)| *t <= tick));
            if entries.is_empty() {
                // An emptied slot gives its buffer back: kept, every slot
                // of the 65 s turn held the most timers one tick ever saw
                // (at 10,000 calls/s, 25 MB for the 6 MB of entries that
                // are live). Refilled, it costs a few allocations a tick.
                *entries = Vec::new();
                self.occupied[slot / 64] &= !(1 << (slot % 64));
                if self.occupied[slot / 64] == 0 {
                    self.summary[slot / 4096] &= !(1 << ((slot / 64) % 64));
                }
            }
            self.current = tick + 1;
            self.refill();
        }
    }

    /// Moves overflow entries that now fit in the wheel's span into it.
    fn refill(&mut self) {
        while let Some(Reverse((t, _))) = self.overflow.peek() {
            if *t >= self.current + SLOTS as u64 {
                break;
            }
            if let Some(Reverse((t, item))) = self.overflow.pop() {
                if t < self.current {
                    self.ready.push((t, item));
                } else {
                    self.put(t, item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_never_early() {
        let t0 = Instant::now();
        let mut w = Wheel::<u32>::default();
        w.insert(t0, 0);
        w.insert(t0 + Duration::from_micros(1500), 2);
        w.insert(t0 + Duration::from_millis(1), 1);
        w.insert(t0 + Duration::from_secs(100), 9);
        assert_eq!(w.len(), 4);
        assert_eq!(w.pop_due(t0).map(|(_, v)| v), Some(0));
        assert_eq!(w.pop_due(t0), None);
        assert_eq!(w.next(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(
            w.pop_due(t0 + Duration::from_millis(1)).map(|(_, v)| v),
            Some(1)
        );
        assert_eq!(
            w.pop_due(t0 + Duration::from_millis(1)),
            None,
            "1.5 ms rounds up to 2 ms"
        );
        assert_eq!(
            w.pop_due(t0 + Duration::from_millis(2)).map(|(_, v)| v),
            Some(2)
        );
        assert_eq!(w.next(), Some(t0 + Duration::from_secs(100)));
        assert_eq!(w.pop_due(t0 + Duration::from_secs(99)), None);
        let (at, v) = w.pop_due(t0 + Duration::from_secs(101)).unwrap();
        assert_eq!((at, v), (t0 + Duration::from_secs(100), 9));
        assert_eq!(w.len(), 0);
        assert_eq!(w.next(), None);
    }

    #[test]
    fn a_deadline_before_the_first_one_is_not_delayed() {
        let t0 = Instant::now();
        let mut w = Wheel::<u32>::default();
        w.insert(t0 + Duration::from_secs(30), 30);
        w.insert(t0 + Duration::from_secs(10), 10);
        assert_eq!(w.next(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(w.pop_due(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            w.pop_due(t0 + Duration::from_secs(10)).map(|(_, v)| v),
            Some(10)
        );
        assert_eq!(w.pop_due(t0 + Duration::from_secs(10)), None);
        assert_eq!(
            w.pop_due(t0 + Duration::from_secs(30)).map(|(_, v)| v),
            Some(30)
        );
    }

    #[test]
    fn a_deadline_long_before_the_first_one_is_not_delayed() {
        // A long timer first (timer C, a registration refresh), then a
        // short one: the origin moves back, the long one keeps its time.
        let t0 = Instant::now();
        let mut w = Wheel::<u32>::default();
        let long = w.insert(t0 + Duration::from_secs(1800), 1800);
        assert_eq!(long, t0 + Duration::from_secs(1800));
        let half = t0 + Duration::from_micros(500_300);
        let rounded = w.round(half);
        assert_eq!(w.insert(half, 1), rounded);
        assert!(rounded >= half && rounded < half + TICK, "{rounded:?}");
        w.insert(t0 + Duration::from_secs(180), 180);
        assert_eq!(w.next(), Some(rounded));
        assert_eq!(w.pop_due(rounded).map(|(_, v)| v), Some(1));
        assert_eq!(w.next(), Some(t0 + Duration::from_secs(180)));
        assert_eq!(
            w.pop_due(t0 + Duration::from_secs(1799)).map(|(_, v)| v),
            Some(180)
        );
        assert_eq!(w.pop_due(t0 + Duration::from_secs(1799)), None);
        assert_eq!(
            w.pop_due(t0 + Duration::from_secs(1800)),
            Some((t0 + Duration::from_secs(1800), 1800))
        );
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn deadlines_past_49_days_of_uptime() {
        // 2^32 ms after the first timer: deadlines must not saturate.
        let t0 = Instant::now();
        let mut w = Wheel::<u32>::default();
        w.insert(t0, 0);
        w.pop_due(t0);
        let later = t0 + Duration::from_millis((1u64 << 32) + 5_000);
        w.pop_due(later - Duration::from_secs(1));
        let at = w.insert(later, 1);
        assert_eq!(at, later);
        assert_eq!(w.next(), Some(later));
        assert_eq!(w.pop_due(later - Duration::from_millis(1)), None);
        assert_eq!(w.pop_due(later), Some((later, 1)));
    }

    #[test]
    fn wraps_around_the_wheel_many_times() {
        let t0 = Instant::now();
        let mut w = Wheel::<u64>::default();
        w.insert(t0, u64::MAX);
        w.pop_due(t0);
        let mut now = t0;
        let mut expected = Vec::new();
        let mut fired = Vec::new();
        for i in 0..2000u64 {
            // Deadlines 0..90 s ahead, crossing the 65 s span.
            let at = now + Duration::from_millis((i * 7919) % 90_000);
            let at_q = w.insert(at, i);
            assert!(at_q >= at);
            expected.push((at_q, i));
            now += Duration::from_millis(97);
            while let Some((at, v)) = w.pop_due(now) {
                assert!(at <= now);
                fired.push((at, v));
            }
        }
        now += Duration::from_secs(200);
        while let Some(e) = w.pop_due(now) {
            fired.push(e);
        }
        expected.sort();
        let mut got = fired.clone();
        got.sort();
        assert_eq!(got, expected);
        // Fired in deadline order.
        assert!(fired.windows(2).all(|p| p[0].0 <= p[1].0));
    }

    /// Memory follows the timers held: a slot emptied by expiry keeps no
    /// buffer (a full turn of slots each keeping its busiest tick's
    /// capacity was most of a shard's memory at 10,000 calls/s).
    #[test]
    fn an_emptied_slot_keeps_no_buffer() {
        let t0 = Instant::now();
        let mut w = Wheel::<u32>::default();
        for i in 0..100 {
            w.insert(t0 + Duration::from_millis(5), i);
        }
        let held: usize = w.slots.iter().map(Vec::capacity).sum();
        assert!(held >= 100, "{held}");
        let mut fired = 0;
        while w.pop_due(t0 + Duration::from_millis(5)).is_some() {
            fired += 1;
        }
        assert_eq!(fired, 100);
        assert_eq!(w.slots.iter().map(Vec::capacity).sum::<usize>(), 0);
    }

    proptest::proptest! {
        /// Against a model (a sorted list): `next()` is always the
        /// earliest deadline held, and everything fires, in order, never
        /// early, however sparse the wheel and however far time jumps.
        #[test]
        fn next_is_the_earliest_held(ops in proptest::collection::vec((0u64..200_000, 0u64..120_000, proptest::bool::ANY), 1..200)) {
            let t0 = Instant::now();
            let mut w = Wheel::<u64>::default();
            let mut model: Vec<(Instant, u64)> = Vec::new();
            let mut now = t0;
            for (i, (ahead, step, insert)) in ops.into_iter().enumerate() {
                if insert {
                    let at = w.insert(now + Duration::from_millis(ahead), i as u64);
                    model.push((at, i as u64));
                } else {
                    now += Duration::from_millis(step);
                    while let Some((at, v)) = w.pop_due(now) {
                        proptest::prop_assert!(at <= now);
                        let pos = model.iter().position(|e| *e == (at, v));
                        proptest::prop_assert!(pos.is_some(), "fired something not held");
                        if let Some(p) = pos {
                            model.remove(p);
                        }
                    }
                    proptest::prop_assert!(model.iter().all(|(at, _)| *at > now), "nothing due is left");
                }
                let earliest = model.iter().map(|(at, _)| *at).min();
                proptest::prop_assert_eq!(w.next(), earliest);
            }
        }
    }
}
