//! [`JournalOptions`]: every size and bound of the journal, with the reason for its default.

use crate::error::{Error, Result};

/// Settings of a journal. `JournalOptions::default()` suits production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// A segment is closed and a new one started once it holds this many bytes.
    /// Default 64 MiB: large enough that rollover (a create and two fsyncs) is rare,
    /// small enough that prefix truncation frees space in useful steps.
    pub segment_bytes: u64,
    /// Every batch starts on a multiple of this, so a write never rewrites a block that
    /// holds durable data. Default 4 KiB, the physical sector of current disks.
    /// A power of two from 512 B to 1 MiB.
    pub block_size: u32,
    /// When a batch extends a segment, the segment is extended with zeros to the next
    /// multiple of this, in the same write. Later batches then overwrite allocated blocks,
    /// so their `fdatasync` flushes no metadata: on ext4 this saves a journal commit per
    /// fsync. Default 1 MiB (one extension per 256 batches of 4 KiB); 0 turns it off.
    /// A multiple of `block_size`.
    pub preallocate_bytes: u64,
    /// Most record bytes the flusher writes in one batch (a larger single record still goes
    /// alone). Default 4 MiB: past ~1 MiB a bigger write no longer amortises the fsync.
    pub max_batch_bytes: u64,
    /// Most record bytes waiting for the flusher; further appends wait (backpressure).
    /// Default 64 MiB, sixteen full batches.
    pub max_queued_bytes: u64,
    /// Largest record payload. Default 16 MiB: a maximal 10 MiB transaction plus framing.
    pub max_record_bytes: u64,
    /// Create the directory if it does not exist (default). When false, opening a
    /// directory that does not exist is an error.
    pub create: bool,
    /// Where the flusher runs. Default: its own thread.
    pub flusher: Flusher,
}

/// Where a journal's flusher (its one writer) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flusher {
    /// A dedicated thread (default): the disk's blocking writes and fsyncs never stall an
    /// async runtime.
    #[default]
    Thread,
    /// A task on the tokio runtime that opens the journal. Writes and fsyncs then block
    /// that runtime while they run, so this suits only disks that do not block: the
    /// simulation's, where threads are not allowed (ARCHITECTURE §7). `close` then stops
    /// new appends without waiting for the queued ones; each of those still resolves.
    Task,
}

impl Flusher {
    /// Runs `work` — blocking disk work beside the journal: removing segments, a storage
    /// engine's flush — where this setting puts blocking work: on tokio's blocking pool for
    /// [`Flusher::Thread`] (so it never stalls the runtime's workers), inline for
    /// [`Flusher::Task`] (the simulation's disk does not block, and threads would break
    /// its determinism). A panic in `work` resumes in the caller.
    pub async fn run_blocking<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        match self {
            Flusher::Task => work(),
            #[allow(
                clippy::disallowed_methods,
                reason = "only with the threaded flusher, never in simulation (ARCHITECTURE §7)"
            )]
            Flusher::Thread => match tokio::task::spawn_blocking(work).await {
                Ok(out) => out,
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // The blocking pool refuses work only while the runtime shuts down,
                    // and then this task is being dropped as well.
                    Err(e) => panic!("blocking work was cancelled: {e}"),
                },
            },
        }
    }
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 << 20,
            block_size: 4096,
            preallocate_bytes: 1 << 20,
            max_batch_bytes: 4 << 20,
            max_queued_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            create: true,
            flusher: Flusher::Thread,
        }
    }
}

impl JournalOptions {
    /// Checks that the options are consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidOptions(msg));
        if !self.block_size.is_power_of_two() || !(512..=1 << 20).contains(&self.block_size) {
            return bad(format!(
                "block_size {} is not a power of two from 512 to 1 MiB",
                self.block_size
            ));
        }
        if self.segment_bytes < 2 * u64::from(self.block_size) {
            return bad(format!(
                "segment_bytes {} is less than two blocks of {}",
                self.segment_bytes, self.block_size
            ));
        }
        if !self
            .preallocate_bytes
            .is_multiple_of(u64::from(self.block_size))
        {
            return bad(format!(
                "preallocate_bytes {} is not a multiple of block_size {}",
                self.preallocate_bytes, self.block_size
            ));
        }
        if self.max_batch_bytes == 0 || self.max_queued_bytes == 0 {
            return bad("max_batch_bytes and max_queued_bytes must be positive".into());
        }
        // A batch's byte length is a u32 on disk; one record must fit in it with its frame.
        let frame_limit = u64::from(u32::MAX) - 64;
        if self.max_record_bytes > frame_limit || self.max_batch_bytes > frame_limit {
            return bad(format!(
                "max_record_bytes and max_batch_bytes must be below {frame_limit}"
            ));
        }
        Ok(())
    }
}
