//! The decision caches (SPD-O, SPD-I, SPD-S and per-flow route selection): direct-mapped,
//! allocated once, and stamped with the policy generation an answer was computed under, so
//! a policy change makes every older answer a miss without sweeping anything.

use alloc::boxed::Box;
use alloc::vec;

/// A key with a cheap, well-spread hash (its slot index).
pub trait CacheKey: Copy + PartialEq {
    /// The hash that picks the slot.
    fn cache_hash(&self) -> u32;
}

#[derive(Debug, Clone, Copy)]
struct Slot<K, V> {
    key: K,
    value: V,
    generation: u64,
}

/// A direct-mapped cache; lookups and inserts never allocate.
#[derive(Debug)]
pub struct GenerationCache<K, V> {
    slots: Box<[Option<Slot<K, V>>]>,
}

impl<K: CacheKey, V: Copy> GenerationCache<K, V> {
    /// A cache of `slots` entries, rounded up to a power of two.
    pub fn new(slots: usize) -> Self {
        GenerationCache {
            slots: vec![None; slots.max(1).next_power_of_two()].into_boxed_slice(),
        }
    }

    fn index(&self, key: &K) -> usize {
        (key.cache_hash() as usize) & (self.slots.len() - 1)
    }

    /// The value cached for `key`, if one of this `generation` is held.
    pub fn get(&self, key: &K, generation: u64) -> Option<V> {
        match self.slots.get(self.index(key)) {
            Some(Some(slot)) if slot.generation == generation && slot.key == *key => {
                Some(slot.value)
            }
            _ => None,
        }
    }

    /// Remembers `value` for `key` (replacing whatever shared its slot).
    pub fn insert(&mut self, key: K, value: V, generation: u64) {
        let i = self.index(&key);
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(Slot {
                key,
                value,
                generation,
            });
        }
    }
}
