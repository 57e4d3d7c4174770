//! After a failed write or fsync the journal is poisoned: it never retries and pretends.

use journaldb_journal::disk::CrashDisk;
use journaldb_journal::{Error, Lsn};

use crate::common::{append_sequentially, open, payload, read_all, runtime, small_options};

#[test]
fn an_fsync_error_poisons_the_journal() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    append_sequentially(&rt, &journal, 3, 50);

    disk.fail_next_syncs(1);
    let err = rt.block_on(journal.append(payload(3, 50))).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("injected sync failure"), "{err}");
    assert!(journal.is_poisoned());
    // The disk works again, but the journal must not: the failed fsync may have dropped data.
    let again = rt.block_on(journal.append(payload(4, 50))).unwrap_err();
    assert!(matches!(again, Error::Poisoned { .. }));
    assert!(!again.is_retryable());
    assert!(matches!(journal.close(), Err(Error::Poisoned { .. })));
    drop(journal);

    let journal = open(&disk, small_options()).unwrap();
    let records = read_all(&journal);
    assert!(records.len() >= 3, "acknowledged records survive");
    assert_eq!(records[2], (Lsn::new(3), payload(2, 50)));
}

#[test]
fn a_write_error_poisons_the_journal_and_fails_queued_appends() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    disk.fail_writes(true);
    let results = rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..10 {
            pending.push(journal.append(payload(i, 10)));
        }
        let mut results = Vec::new();
        for p in pending {
            results.push(p.await);
        }
        results
    });
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::Poisoned { .. }))),
        "{results:?}"
    );
    disk.fail_writes(false);
    assert!(matches!(
        rt.block_on(journal.append(payload(0, 1))),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn appends_after_close_fail_and_tails_end() {
    let rt = runtime();
    let disk = CrashDisk::default();
    let journal = open(&disk, small_options()).unwrap();
    append_sequentially(&rt, &journal, 2, 10);
    let mut tail = journal.tail(Lsn::FIRST).unwrap();
    journal.close().unwrap();
    assert!(matches!(
        rt.block_on(journal.append(payload(0, 1))),
        Err(Error::Closed)
    ));
    rt.block_on(async {
        assert_eq!(tail.next().await.unwrap().unwrap().0, Lsn::new(1));
        assert_eq!(tail.next().await.unwrap().unwrap().0, Lsn::new(2));
        assert!(tail.next().await.unwrap().is_none());
    });
    // close released the lock even though the tail is still alive.
    open(&disk, small_options()).unwrap();
}
