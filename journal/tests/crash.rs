//! The crash property test: random concurrent appends, a crash at a random disk operation,
//! sector-level tearing; after recovery the log must be a prefix of what was written,
//! contain every acknowledged record, and never be reported corrupt.
//!
//! Cases: `JOURNAL_CRASH_CASES` (default 1000). Replay one: `JOURNAL_CRASH_SEED=<seed>`.
//! The crash point is an exact disk operation, but how appends group into batches depends
//! on thread timing, so a replay usually (not always) takes the same path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use journaldb_journal::disk::{CrashDisk, CrashDiskConfig};
use journaldb_journal::{JournalOptions, Lsn};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{open, read_all, runtime};

#[test]
fn crash_property() {
    let rt = runtime();
    let seeds: Vec<u64> = match std::env::var("JOURNAL_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("JOURNAL_CRASH_SEED is a u64")],
        Err(_) => {
            let cases: u64 = std::env::var("JOURNAL_CRASH_CASES")
                .map(|c| c.parse().expect("JOURNAL_CRASH_CASES is a u64"))
                .unwrap_or(1000);
            (0..cases).collect()
        }
    };
    for seed in seeds {
        if let Err(failure) = run_case(&rt, seed) {
            panic!(
                "crash case failed: {failure}\nseed {seed}; replay with\n  \
                 JOURNAL_CRASH_SEED={seed} cargo nextest run -p journaldb-journal crash_property"
            );
        }
    }
}

/// What the test knows was written: the payload submitted at each Lsn, and which
/// appends were acknowledged.
#[derive(Default)]
struct History {
    written: BTreeMap<Lsn, Bytes>,
    acked: BTreeMap<Lsn, Bytes>,
    truncated_to: Lsn,
}

fn run_case(rt: &tokio::runtime::Runtime, seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sector = [512, 4096][rng.random_range(0..2)];
    // The block size must be at least the sector size (documented on `block_size`).
    let block_size = [sector as u32, 4096][rng.random_range(0..2)];
    let options = JournalOptions {
        segment_bytes: rng.random_range(4..24) * u64::from(block_size),
        block_size,
        max_batch_bytes: rng.random_range(1..16) * 1024,
        max_queued_bytes: rng.random_range(4..64) * 1024,
        preallocate_bytes: rng.random_range(0..4) * u64::from(block_size),
        ..JournalOptions::default()
    };
    let mut disk = CrashDisk::new(CrashDiskConfig {
        sector_size: sector,
    });
    let history = Arc::new(Mutex::new(History {
        truncated_to: Lsn::FIRST,
        ..History::default()
    }));
    let rounds = rng.random_range(1..=3);
    for round in 0..rounds {
        let journal = open(&disk, options.clone())
            .map_err(|e| format!("round {round}: reopen after a crash failed: {e}"))?;
        check_recovered(&history.lock().unwrap(), &journal, round)?;
        forget_lost(&mut history.lock().unwrap(), journal.durable_end());

        disk.freeze_after(rng.random_range(0..60));
        let journal = Arc::new(journal);
        let appenders = rng.random_range(1..=6);
        let per_appender = rng.random_range(1..=12);
        let truncate_at = rng.random_range(0..per_appender * 2);
        let mut tasks = Vec::new();
        for task in 0..appenders {
            let (journal, history) = (journal.clone(), history.clone());
            let mut rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
            tasks.push(rt.spawn(async move {
                for i in 0..per_appender {
                    let len = if rng.random_bool(0.05) {
                        rng.random_range(4_000..20_000)
                    } else {
                        rng.random_range(0..600)
                    };
                    let mut body = vec![0u8; len];
                    rng.fill_bytes(&mut body);
                    let mut payload = format!("{round}/{task}/{i}/").into_bytes();
                    payload.extend_from_slice(&body);
                    let payload = Bytes::from(payload);
                    let Ok(submitted) = journal.submit(payload.clone()).await else {
                        return;
                    };
                    let lsn = submitted.lsn();
                    history.lock().unwrap().written.insert(lsn, payload.clone());
                    let Ok(durable) = submitted.durable().await else {
                        return;
                    };
                    assert_eq!(durable, lsn);
                    history.lock().unwrap().acked.insert(lsn, payload);
                    if task == 0 && i == truncate_at {
                        // A truncation that fails (the disk froze) may still take effect.
                        let target = Lsn::new(lsn.get() / 2).max(Lsn::FIRST);
                        {
                            let mut h = history.lock().unwrap();
                            h.truncated_to = h.truncated_to.max(target);
                        }
                        let _ = journal.truncate_prefix(target);
                    }
                }
            }));
        }
        for task in tasks {
            rt.block_on(task)
                .map_err(|e| format!("appender panicked: {e}"))?;
        }
        drop(journal);
        disk = disk.crash(rng.next_u64());
    }
    let journal = open(&disk, options).map_err(|e| format!("final reopen failed: {e}"))?;
    check_recovered(&history.lock().unwrap(), &journal, rounds)
}

/// The recovered journal is a contiguous run of what was written, from at most the last
/// truncation point, holding every acknowledged record.
fn check_recovered(
    h: &History,
    journal: &journaldb_journal::Journal,
    round: u32,
) -> Result<(), String> {
    let first = journal.first_lsn();
    if first > h.truncated_to {
        return Err(format!(
            "round {round}: journal starts at {first}, but only records below {} were truncated",
            h.truncated_to
        ));
    }
    let records = read_all(journal);
    let mut expect = first;
    for (lsn, payload) in &records {
        if *lsn != expect {
            return Err(format!("round {round}: {lsn} follows {expect}: not dense"));
        }
        match h.written.get(lsn) {
            Some(written) if written == payload => {}
            Some(_) => return Err(format!("round {round}: {lsn} holds another payload")),
            None => return Err(format!("round {round}: {lsn} was never written")),
        }
        expect = lsn.next();
    }
    if expect != journal.durable_end() {
        return Err(format!(
            "round {round}: read ended at {expect}, durable end is {}",
            journal.durable_end()
        ));
    }
    for (lsn, payload) in h.acked.range(h.truncated_to..) {
        let found = records.iter().find(|(l, _)| l == lsn).map(|(_, p)| p);
        if found != Some(payload) {
            return Err(format!(
                "round {round}: acknowledged {lsn} is missing after recovery"
            ));
        }
    }
    journal
        .verify()
        .map_err(|e| format!("round {round}: verify: {e}"))?;
    Ok(())
}

/// Records at or past the recovered end were never acknowledged and are gone; their Lsns
/// will be reused by the next round's appends.
fn forget_lost(h: &mut History, durable_end: Lsn) {
    h.written.split_off(&durable_end);
    let lost_acks = h.acked.split_off(&durable_end);
    assert!(lost_acks.is_empty(), "checked by check_recovered");
}
