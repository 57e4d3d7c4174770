//! The directory lock refuses a second opener, including another process.

use std::process::Command;

use journaldb_journal::{Error, Journal, JournalOptions};

const CHILD_DIR: &str = "JOURNALDB_LOCK_TEST_DIR";

#[test]
fn a_second_process_is_refused_by_the_directory_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = Journal::open(tmp.path(), JournalOptions::default()).unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock::child_opens_the_journal",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("child saw: Locked"), "{stdout}");

    // In this process too, and the lock is released by close.
    assert!(matches!(
        Journal::open(tmp.path(), JournalOptions::default()),
        Err(Error::Locked { .. })
    ));
    journal.close().unwrap();
    Journal::open(tmp.path(), JournalOptions::default()).unwrap();
}

/// Run by the test above in a child process.
#[test]
#[ignore = "run as a child process by a_second_process_is_refused_by_the_directory_lock"]
fn child_opens_the_journal() {
    let dir = std::env::var(CHILD_DIR).expect("run by the parent test");
    match Journal::open(&dir, JournalOptions::default()) {
        Err(Error::Locked { .. }) => println!("child saw: Locked"),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second process opened a locked journal"),
    }
}
