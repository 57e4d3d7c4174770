//! [`LookupMap`]: a hash map for point lookups only, with a fixed hash function.
//!
//! The hot maps of the commit path (the conflict window's last writes, commit outcomes by
//! transaction id, storage's cache of newest versions) are looked up by key on every
//! transaction; an ordered map pays a key comparison per tree level for that, a hash map
//! one hash. `std::collections::HashMap` is banned in this workspace because its iteration
//! order is random per process (ARCHITECTURE §7): this map has no iteration at all, and its
//! hash function is fixed, so nothing about it differs between two runs of a seed. Where
//! order matters, keep an ordered index beside it.

use std::borrow::Borrow;
use std::hash::Hash;

/// A map from `K` to `V` with lookup, insertion and removal, and no iteration.
#[derive(Debug, Clone)]
pub struct LookupMap<K, V> {
    map: hashbrown::HashMap<K, V, foldhash::fast::FixedState>,
}

impl<K, V> Default for LookupMap<K, V> {
    fn default() -> Self {
        LookupMap {
            map: hashbrown::HashMap::with_hasher(foldhash::fast::FixedState::default()),
        }
    }
}

impl<K: Hash + Eq, V> LookupMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    /// The value of `key`, mutably, if any.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(key)
    }

    /// Sets the value of `key`, returning the previous one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.map.insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes every entry (keeping the allocation).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_inserts_and_removes_by_borrowed_keys() {
        let mut m: LookupMap<Vec<u8>, u32> = LookupMap::new();
        assert!(m.is_empty());
        assert_eq!(m.insert(b"a".to_vec(), 1), None);
        assert_eq!(m.insert(b"a".to_vec(), 2), Some(1));
        m.insert(b"b".to_vec(), 3);
        assert_eq!(m.get(&b"a"[..]), Some(&2));
        *m.get_mut(&b"b"[..]).unwrap() += 1;
        assert_eq!(m.get(&b"b"[..]), Some(&4));
        assert!(m.contains_key(&b"b"[..]) && !m.contains_key(&b"c"[..]));
        assert_eq!(m.remove(&b"a"[..]), Some(2));
        assert_eq!(m.len(), 1);
        m.clear();
        assert!(m.is_empty());
    }
}
