//! The shard's call table: a generational slab of calls and the
//! tombstones of ended ones, the A-leg index (keyed by the caller's
//! Call-ID and tag, hashed with a keyed SipHash since callers choose those
//! bytes), and the timer wheel.
//!
//! The index holds slot references and 32 bits of their key's hash (12
//! bytes an entry); the key each one is found by is the `a_key` its call
//! or tombstone keeps. A map from key to reference held a second pointer
//! to the key in every bucket: 24-byte buckets instead of 12, for the
//! 320,000 calls resting at 10,000 calls/s, in a table of up to twice as
//! many buckets as entries. The hash is kept so that growing the index
//! reads no call (without it, rehashing 230,000 entries stalled the shard
//! for tens of milliseconds).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use super::wheel::Wheel;

use super::call::Call;
use super::ids::CallRef;
use super::tomb::Tombstone;

/// Most calls one shard holds (the minted Call-ID has 24 bits of index).
pub const MAX_CALLS_PER_SHARD: usize = 1 << 24;

#[derive(Debug, Default)]
enum Entry {
    #[default]
    Free,
    Call(Box<Call>),
    Tomb(Box<Tombstone>),
}

#[derive(Debug, Default)]
struct Slot {
    generation: u16,
    entry: Entry,
}

/// An entry of the timing wheel: a call's next deadline, or the end of a
/// tombstone's rest. A call's deadlines still in the wheel when it is
/// buried name the same slot and generation as its tombstone; the flag
/// tells them apart (they no longer count: see [`CallTable::pop_due`]).
///
/// The call's slot and generation are spelled out rather than kept as a
/// [`CallRef`], so that the flag fits in its padding: 8 bytes, as many as
/// the wheel held per entry before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    index: u32,
    generation: u16,
    rest_ends: bool,
}

impl Timer {
    fn new(r: CallRef, rest_ends: bool) -> Self {
        Timer {
            index: r.index,
            generation: r.generation,
            rest_ends,
        }
    }

    fn call(self) -> CallRef {
        CallRef {
            index: self.index,
            generation: self.generation,
        }
    }
}

const _: () = assert!(std::mem::size_of::<Timer>() == 8);

#[derive(Debug, Default)]
pub(crate) struct CallTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Calls and tombstones by their `a_key`.
    a_index: hashbrown::HashTable<Indexed>,
    /// Keyed SipHash, a random key per table.
    hasher: std::hash::RandomState,
    timers: Wheel<Timer>,
    live: usize,
    /// Of `live`, the tombstones.
    resting: usize,
    key: Vec<u8>,
}

/// An entry of the A-leg index: a slot and its key's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Indexed {
    index: u32,
    hash: u32,
    generation: u16,
}

impl Indexed {
    fn call(self) -> CallRef {
        CallRef {
            index: self.index,
            generation: self.generation,
        }
    }

    /// The index's 64-bit hash, from the 32 bits kept: both halves (the
    /// table takes a bucket from the low bits and a tag from the top 7).
    fn hash64(self) -> u64 {
        spread(self.hash)
    }
}

const _: () = assert!(std::mem::size_of::<Indexed>() == 12);

fn spread(h: u32) -> u64 {
    (u64::from(h) << 32) | u64::from(h)
}

/// The index key of the call or tombstone `r` names.
fn key_of(slots: &[Slot], r: CallRef) -> Option<&[u8]> {
    let slot = slots
        .get(r.index as usize)
        .filter(|s| s.generation == r.generation)?;
    match &slot.entry {
        Entry::Call(c) => Some(&c.a_key),
        Entry::Tomb(t) => Some(&t.a_key),
        Entry::Free => None,
    }
}

impl CallTable {
    /// 32 bits of the keyed hash of an index key.
    fn hash_of(&self, key: &[u8]) -> u32 {
        let h = self.hasher.hash_one(key);
        (h ^ (h >> 32)) as u32
    }

    /// Reserves a slot; the call is stored with [`CallTable::insert`].
    pub fn reserve(&mut self) -> Option<CallRef> {
        if let Some(index) = self.free.pop() {
            let slot = self.slots.get(usize::try_from(index).ok()?)?;
            return Some(CallRef {
                index,
                generation: slot.generation,
            });
        }
        if self.slots.len() >= MAX_CALLS_PER_SHARD {
            return None;
        }
        let index = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(Slot::default());
        Some(CallRef {
            index,
            generation: 0,
        })
    }

    pub fn insert(&mut self, r: CallRef, call: Box<Call>) {
        let key = Arc::clone(&call.a_key);
        let Some(slot) = self.slots.get_mut(r.index as usize) else {
            return;
        };
        slot.entry = Entry::Call(call);
        self.live += 1;
        // The newest call with a key is the one found by it (an older one
        // with the same key is no longer indexed).
        let hash = self.hash_of(&key);
        let entry = Indexed {
            index: r.index,
            hash,
            generation: r.generation,
        };
        let slots = &self.slots;
        match self.a_index.entry(
            spread(hash),
            |x| x.hash == hash && key_of(slots, x.call()) == Some(&key[..]),
            |x| x.hash64(),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = entry,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(entry);
            }
        }
    }

    fn slot_mut(&mut self, r: CallRef) -> Option<&mut Slot> {
        self.slots
            .get_mut(r.index as usize)
            .filter(|s| s.generation == r.generation)
    }

    pub fn get_mut(&mut self, r: CallRef) -> Option<&mut Call> {
        match &mut self.slot_mut(r)?.entry {
            Entry::Call(c) => Some(c),
            _ => None,
        }
    }

    pub fn get(&self, r: CallRef) -> Option<&Call> {
        let slot = self.slots.get(r.index as usize)?;
        match &slot.entry {
            Entry::Call(c) if slot.generation == r.generation => Some(c),
            _ => None,
        }
    }

    /// The live calls (not tombstones) `pick` chooses.
    pub fn calls_where(&self, mut pick: impl FnMut(&Call) -> bool) -> Vec<CallRef> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| match &slot.entry {
                Entry::Call(c) if pick(c) => Some(CallRef {
                    index: u32::try_from(index).ok()?,
                    generation: slot.generation,
                }),
                _ => None,
            })
            .collect()
    }

    /// The tombstone of an ended call in this slot.
    pub fn tomb(&self, r: CallRef) -> Option<&Tombstone> {
        let slot = self.slots.get(r.index as usize)?;
        match &slot.entry {
            Entry::Tomb(t) if slot.generation == r.generation => Some(t),
            _ => None,
        }
    }

    /// Replaces an ended call by its tombstone until `until`: the call and
    /// every message it stored are freed now.
    pub fn bury(&mut self, r: CallRef, until: Instant) {
        if self.get(r).is_none() {
            return;
        }
        self.timers.insert(until, Timer::new(r, true));
        let Some(slot) = self.slot_mut(r) else {
            return;
        };
        if let Entry::Call(call) = &slot.entry {
            let tomb = Tombstone::of(call);
            slot.entry = Entry::Tomb(Box::new(tomb));
            self.resting += 1;
        }
    }

    /// Frees a slot (a call or a tombstone).
    pub fn remove(&mut self, r: CallRef) {
        let Some(slot) = self
            .slots
            .get_mut(r.index as usize)
            .filter(|s| s.generation == r.generation)
        else {
            return;
        };
        let key = match std::mem::take(&mut slot.entry) {
            Entry::Free => return,
            Entry::Call(c) => Arc::clone(&c.a_key),
            Entry::Tomb(t) => {
                self.resting -= 1;
                Arc::clone(&t.a_key)
            }
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(r.index);
        self.live -= 1;
        let hash = spread(self.hash_of(&key));
        if let Ok(e) = self.a_index.find_entry(hash, |x| x.call() == r) {
            e.remove();
        }
    }

    /// Calls, including ended ones still absorbing retransmissions.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Ended calls that rest as tombstones.
    pub fn resting(&self) -> usize {
        self.resting
    }

    /// The A-leg index key: Call-ID, a NUL, the caller's tag.
    pub fn a_key(call_id: &[u8], tag: &[u8]) -> Arc<[u8]> {
        let mut k: SmallVec<[u8; 128]> = SmallVec::with_capacity(call_id.len() + 1 + tag.len());
        k.extend_from_slice(call_id);
        k.push(0);
        k.extend_from_slice(tag);
        // One allocation: the key goes straight into the `Arc`.
        Arc::from(&k[..])
    }

    pub fn find_a(&mut self, call_id: &[u8], tag: &[u8]) -> Option<CallRef> {
        self.key.clear();
        self.key.extend_from_slice(call_id);
        self.key.push(0);
        self.key.extend_from_slice(tag);
        let hash = self.hash_of(&self.key);
        let slots = &self.slots;
        let key = &self.key[..];
        self.a_index
            .find(spread(hash), |x| {
                x.hash == hash && key_of(slots, x.call()) == Some(key)
            })
            .map(|x| x.call())
    }

    /// Makes sure the heap holds an entry no later than the call's next
    /// deadline (see the module docs of `engine` for the invariant).
    pub fn schedule(&mut self, r: CallRef) {
        let Some(Entry::Call(call)) = self.slots.get_mut(r.index as usize).map(|s| &mut s.entry)
        else {
            return;
        };
        let Some(next) = call.next_deadline() else {
            return;
        };
        let next = self.timers.round(next);
        if call.scheduled.is_none_or(|s| next < s) {
            call.scheduled = Some(self.timers.insert(next, Timer::new(r, false)));
        }
    }

    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Pops the next timer entry due at `now` that is still current;
    /// tombstones whose time is up go on the way.
    pub fn pop_due(&mut self, now: Instant) -> Option<CallRef> {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            let r = timer.call();
            if let Some(call) = self.get_mut(r)
                && call.scheduled == Some(at)
            {
                call.scheduled = None;
                return Some(r);
            }
            // One rest-end entry per tombstone (a slot is buried once per
            // generation).
            if timer.rest_ends && self.tomb(r).is_some() {
                self.remove(r);
            }
        }
        None
    }
}
