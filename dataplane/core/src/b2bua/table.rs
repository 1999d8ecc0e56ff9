//! The shard's call table: a generational slab, the A-leg index (keyed by
//! the caller's Call-ID and tag, hashed with a keyed SipHash since callers
//! choose those bytes), and the timer wheel.

use std::collections::HashMap;
use std::time::Instant;

use super::wheel::Wheel;

use super::call::Call;
use super::ids::CallRef;

/// Most calls one shard holds (the minted Call-ID has 24 bits of index).
pub const MAX_CALLS_PER_SHARD: usize = 1 << 24;

#[derive(Debug, Default)]
struct Slot {
    generation: u16,
    call: Option<Box<Call>>,
}

#[derive(Debug, Default)]
pub(crate) struct CallTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    a_index: HashMap<Box<[u8]>, CallRef>,
    timers: Wheel<CallRef>,
    live: usize,
    key: Vec<u8>,
}

impl CallTable {
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
        let key = call.a_key.clone();
        if let Some(slot) = self.slots.get_mut(r.index as usize) {
            slot.call = Some(call);
            self.live += 1;
            self.a_index.insert(key, r);
        }
    }

    pub fn get_mut(&mut self, r: CallRef) -> Option<&mut Call> {
        let slot = self.slots.get_mut(r.index as usize)?;
        if slot.generation != r.generation {
            return None;
        }
        slot.call.as_deref_mut()
    }

    pub fn get(&self, r: CallRef) -> Option<&Call> {
        let slot = self.slots.get(r.index as usize)?;
        if slot.generation != r.generation {
            return None;
        }
        slot.call.as_deref()
    }

    pub fn remove(&mut self, r: CallRef) -> Option<Box<Call>> {
        let slot = self.slots.get_mut(r.index as usize)?;
        if slot.generation != r.generation {
            return None;
        }
        let call = slot.call.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(r.index);
        self.live -= 1;
        if self.a_index.get(&call.a_key) == Some(&r) {
            self.a_index.remove(&call.a_key);
        }
        Some(call)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// The A-leg index key: Call-ID, a NUL, the caller's tag.
    pub fn a_key(call_id: &[u8], tag: &[u8]) -> Box<[u8]> {
        let mut k = Vec::with_capacity(call_id.len() + 1 + tag.len());
        k.extend_from_slice(call_id);
        k.push(0);
        k.extend_from_slice(tag);
        k.into_boxed_slice()
    }

    pub fn find_a(&mut self, call_id: &[u8], tag: &[u8]) -> Option<CallRef> {
        self.key.clear();
        self.key.extend_from_slice(call_id);
        self.key.push(0);
        self.key.extend_from_slice(tag);
        self.a_index.get(&self.key[..]).copied()
    }

    /// Makes sure the heap holds an entry no later than the call's next
    /// deadline (see the module docs of `engine` for the invariant).
    pub fn schedule(&mut self, r: CallRef) {
        let Some(slot) = self.slots.get_mut(r.index as usize) else {
            return;
        };
        let Some(call) = slot.call.as_deref_mut() else {
            return;
        };
        let Some(next) = call.next_deadline() else {
            return;
        };
        let next = self.timers.round(next);
        if call.scheduled.is_none_or(|s| next < s) {
            call.scheduled = Some(self.timers.insert(next, r));
        }
    }

    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Pops the next timer entry due at `now` that is still current.
    pub fn pop_due(&mut self, now: Instant) -> Option<CallRef> {
        while let Some((at, r)) = self.timers.pop_due(now) {
            if let Some(call) = self.get_mut(r)
                && call.scheduled == Some(at)
            {
                call.scheduled = None;
                return Some(r);
            }
        }
        None
    }
}
