//! Tests of the crash-testing disk's model: what survives a crash, tearing, faults, locks.

use super::*;

fn dir() -> PathBuf {
    PathBuf::from("/j")
}

#[test]
fn synced_data_and_entries_survive_every_crash() {
    for seed in 0..200 {
        let disk = CrashDisk::default();
        disk.create_dir_all(&dir()).unwrap();
        let f = disk.create_new(&dir().join("a")).unwrap();
        f.write_all_at(&[1; 2048], 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(&dir()).unwrap();
        f.write_all_at(&[2; 1024], 2048).unwrap();
        let after = disk.crash(seed);
        let bytes = after
            .read_file(&dir().join("a"))
            .expect("synced create survives");
        assert_eq!(&bytes[..2048], &[1; 2048][..], "seed {seed}");
        assert!(bytes.len() == 2048 || bytes.len() == 3072);
    }
}

#[test]
fn unsynced_writes_tear_by_sector_and_unsynced_creates_may_vanish() {
    let mut outcomes = BTreeSet::new();
    let mut vanished = 0;
    for seed in 0..300 {
        let disk = CrashDisk::default();
        disk.create_dir_all(&dir()).unwrap();
        let f = disk.create_new(&dir().join("a")).unwrap();
        f.write_all_at(&[7; 1024], 0).unwrap();
        match disk.crash(seed).read_file(&dir().join("a")) {
            None => vanished += 1,
            Some(bytes) => {
                for chunk in bytes.chunks(512) {
                    outcomes.insert(match chunk {
                        c if c.iter().all(|&b| b == 7) => "kept",
                        c if c.iter().all(|&b| b == 0) => "dropped",
                        _ => "garbled",
                    });
                }
            }
        }
    }
    assert!(vanished > 0);
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

#[test]
fn a_frozen_disk_fails_everything_and_crash_sees_the_freeze_point() {
    let disk = CrashDisk::default();
    disk.create_dir_all(&dir()).unwrap();
    let f = disk.create_new(&dir().join("a")).unwrap();
    disk.sync_dir(&dir()).unwrap();
    disk.freeze_after(2);
    f.write_all_at(b"x", 0).unwrap();
    f.sync_data().unwrap();
    assert!(f.write_all_at(b"y", 1).is_err());
    assert!(f.sync_data().is_err());
    let after = disk.crash(1);
    assert_eq!(after.read_file(&dir().join("a")).unwrap(), b"x");
    assert!(f.len().is_err(), "old handles die with the old machine");
}

#[test]
fn injected_faults_fail_on_command() {
    let disk = CrashDisk::default();
    disk.create_dir_all(&dir()).unwrap();
    let f = disk.create_new(&dir().join("a")).unwrap();
    disk.fail_next_syncs(1);
    assert!(f.sync_data().is_err());
    assert!(f.sync_data().is_ok());
    disk.fail_writes(true);
    assert!(f.write_all_at(b"x", 0).is_err());
    disk.fail_writes(false);
    assert!(f.write_all_at(b"x", 0).is_ok());
}

#[test]
fn the_directory_lock_is_exclusive_until_dropped() {
    let disk = CrashDisk::default();
    disk.create_dir_all(&dir()).unwrap();
    let held = disk.lock_dir(&dir()).unwrap();
    let err = disk.lock_dir(&dir()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    drop(held);
    disk.lock_dir(&dir()).unwrap();
}
