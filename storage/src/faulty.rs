//! [`Faulty`]: an engine whose writes fail while its [`WriteFaults`] switch is on — for
//! tests of what a failed storage write must not do (lose records, move the watermark past
//! them), and for the simulation's `storage-error` fault. Reads pass through untouched.
//! Not for production use: nothing turns the switch on outside tests and simulation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use journaldb_proto::Timestamp;

use crate::error::{Error, Result};
use crate::store::Engine;

/// The switch of a [`Faulty`] engine; clones share it.
#[derive(Debug, Clone, Default)]
pub struct WriteFaults(Arc<AtomicBool>);

impl WriteFaults {
    /// Makes every write (and flush) fail from now on, or stop failing.
    pub fn set_failing(&self, failing: bool) {
        self.0.store(failing, Ordering::Release);
    }

    /// Whether writes fail now.
    pub fn is_failing(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.is_failing() {
            return Err(Error::Io(format!("injected storage fault: {what} failed")));
        }
        Ok(())
    }
}

/// `E` with writes that fail while its switch is on (nothing is written then).
pub struct Faulty<E> {
    inner: E,
    faults: WriteFaults,
}

impl<E> Faulty<E> {
    /// `inner`, failing writes while `faults` is on.
    pub fn new(inner: E, faults: WriteFaults) -> Self {
        Faulty { inner, faults }
    }
}

impl<E: Engine> Engine for Faulty<E> {
    fn seek_ge(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.seek_ge(key)
    }

    fn seek_le(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.seek_le(key)
    }

    fn get_exact(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.inner.get_exact(key)
    }

    fn seek_version(&self, key: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.inner.seek_version(key)
    }

    fn write_atomic(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        self.faults.check("write")?;
        self.inner.write_atomic(pairs)
    }

    fn flush(&self) -> Result<()> {
        self.faults.check("flush")?;
        self.inner.flush()
    }

    fn is_durable(&self) -> bool {
        self.inner.is_durable()
    }

    fn collect_garbage(&self, horizon: Timestamp) -> Result<()> {
        self.inner.collect_garbage(horizon)
    }

    fn compact(&self) -> Result<()> {
        self.faults.check("compaction")?;
        self.inner.compact()
    }

    fn clear_versions(&self) -> Result<()> {
        self.faults.check("write")?;
        self.inner.clear_versions()
    }
}
