//! [`MemoryEngine`]: the in-memory engine, for simulation and tests (a `BTreeMap`).

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use crate::store::{Engine, Result};

/// An ordered map in memory. Nothing survives the process; in simulation it is rebuilt
/// from the journal after a crash.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for MemoryEngine {
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.read();
        let mut range = map.range::<[u8], _>((Bound::Included(key), Bound::Unbounded));
        Ok(range.next().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.read();
        let mut range = map.range::<[u8], _>((Bound::Unbounded, Bound::Included(key)));
        Ok(range.next_back().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let mut map = self.map.write();
        map.extend(pairs);
        Ok(())
    }
}
