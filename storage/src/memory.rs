//! [`MemoryEngine`]: the in-memory engine, for simulation and tests (a `BTreeMap`).

use std::collections::BTreeMap;
use std::ops::Bound;

use journaldb_proto::Timestamp;
use parking_lot::RwLock;

use crate::error::Result;
use crate::gc::GcPass;
use crate::store::Engine;

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

    /// Entries stored (versions and metadata), to observe garbage collection.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
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

    fn is_durable(&self) -> bool {
        false
    }

    fn clear_versions(&self) -> Result<()> {
        self.map
            .write()
            .retain(|k, _| k.first() == Some(&crate::encoding::META_PREFIX));
        Ok(())
    }

    /// One complete pass over the whole map (it sees every version of every key).
    fn collect_garbage(&self, horizon: Timestamp) -> Result<()> {
        let mut pass = GcPass::new(horizon, true);
        self.map.write().retain(|k, v| pass.keep(k, v));
        Ok(())
    }
}
