//! What a shard keeps of its phones' keepalives; `super` drives them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::b2bua::standalone::InFlight;

pub(super) const TICK: Duration = Duration::from_secs(1);

/// This shard's keepalive state.
#[derive(Debug, Default)]
pub(crate) struct Keepalives {
    /// Ticks so far: the next tick to run.
    pub(super) tick: u64,
    /// When the next tick is due (`None`: keepalives are off, or resting).
    pub(super) next_at: Option<Instant>,
    /// While the ticks rest (the registrar is on, but nothing is bound,
    /// queued or waiting for an answer): when the next tick would have
    /// come. The first binding wakes them for then (at once if that has
    /// passed), so an idle shard does not wake every second for nothing.
    pub(super) resume_at: Option<Instant>,
    /// Every bound account has its turn in `queue` (keepalives are
    /// configured and the first tick since has queued the bindings then
    /// held; accounts bound later are queued as they bind).
    pub(super) primed: bool,
    /// Accounts by the tick of their next keepalive. An entry is live
    /// when the tick is its account's `State::due`; others (the account
    /// forgotten, or queued again) are passed over.
    pub(super) queue: BTreeMap<u64, Vec<Arc<str>>>,
    /// The queued accounts.
    pub(super) accounts: HashMap<Arc<str>, State>,
    pub(super) in_flight: InFlight,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) misses: u32,
    pub(super) cseq: u32,
    /// The tick of its live entry in the queue.
    pub(super) due: u64,
}

/// The first tick at or after `from` in the slot `spread` names among
/// `slots` (one slot per second of the interval).
pub(super) fn slot_tick(from: u64, spread: u64, slots: u64) -> u64 {
    let slot = spread % slots;
    from + (slot + slots - from % slots) % slots
}

#[cfg(test)]
mod tests {
    use super::slot_tick;

    proptest::proptest! {
        #[test]
        fn a_slots_tick_is_the_first_of_that_slot_from_then(
            from in 0u64..1 << 40,
            spread: u64,
            slots in 1u64..3600,
        ) {
            let t = slot_tick(from, spread, slots);
            proptest::prop_assert!(t >= from && t < from + slots);
            proptest::prop_assert_eq!(t % slots, spread % slots);
        }
    }
}
