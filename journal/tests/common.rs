//! Helpers shared by the journal tests.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use journaldb_journal::disk::{CrashDisk, Disk};
use journaldb_journal::{Journal, JournalOptions, Lsn, Result};

/// A current-thread runtime: the journal's flusher is its own thread, so the appenders
/// need nothing more.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The journal directory used on crash disks.
pub fn dir() -> PathBuf {
    PathBuf::from("/db/journal")
}

/// Small segments and blocks so that a few records exercise rollover.
pub fn small_options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 8 * 1024,
        block_size: 512,
        ..JournalOptions::default()
    }
}

pub fn open(disk: &CrashDisk, options: JournalOptions) -> Result<Journal> {
    Journal::open_on(Arc::new(disk.clone()) as Arc<dyn Disk>, dir(), options)
}

/// Every durable record from the first one held.
pub fn read_all(journal: &Journal) -> Vec<(Lsn, Bytes)> {
    journal
        .read_from(journal.first_lsn())
        .expect("reader")
        .collect::<Result<Vec<_>>>()
        .expect("read the whole journal")
}

/// A payload that says which record it is.
pub fn payload(i: usize, len: usize) -> Bytes {
    let mut p = format!("record-{i}-").into_bytes();
    p.resize(len.max(p.len()), b'a' + (i % 26) as u8);
    Bytes::from(p)
}

/// Appends `n` records one after another (so each is its own batch).
pub fn append_sequentially(rt: &tokio::runtime::Runtime, journal: &Journal, n: usize, len: usize) {
    rt.block_on(async {
        for i in 0..n {
            journal.append(payload(i, len)).await.expect("append");
        }
    });
}
