//! The data directory's `MANIFEST`: what a database was created with and must be reopened
//! with. Written once, at creation, before anything else, and never rewritten.
//!
//! ```text
//! MANIFEST = magic "JDBMANIF" (8) ‖ version u32 = 1 ‖ partitions u32 ‖ crc32 of the previous 16
//! ```
//! A directory with other files but no manifest is not a journaldb directory and is refused
//! (pointing `--data` at the wrong directory loses nothing). A manifest that does not decode
//! in an otherwise empty directory is a creation a crash interrupted, and is redone.

use std::path::Path;

use journaldb_journal::disk::Disk;

use crate::error::{Error, Result};

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"JDBMANIF";
const VERSION: u32 = 1;
const LEN: usize = 20;
/// Files a fresh directory may hold besides the manifest (the directory lock).
const HARMLESS: &[&str] = &["LOCK", MANIFEST];

/// What a database was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// The partition count, fixed for the database's life.
    pub partitions: u32,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.partitions.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// `Ok(None)` if the bytes are not a complete manifest (a torn creation).
    fn decode(b: &[u8], path: &Path) -> Result<Option<Manifest>> {
        if b.len() != LEN || &b[..8] != MAGIC {
            return Ok(None);
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::Corruption(format!(
                "{} has format version {version}; this build reads version {VERSION}",
                path.display()
            )));
        }
        if crc32fast::hash(&b[..16]) != u32_at(16) {
            return Ok(None);
        }
        Ok(Some(Manifest {
            partitions: u32_at(12),
        }))
    }

    /// Loads the manifest of `dir`, or creates it with `partitions` in a new directory.
    /// `requested` is the partition count the caller asked for, if any: reopening with a
    /// different one is [`Error::InvalidArgument`].
    pub fn load_or_create(
        disk: &dyn Disk,
        dir: &Path,
        requested: Option<u32>,
        default_partitions: u32,
    ) -> Result<Manifest> {
        Self::load_or_create_in(disk, dir, requested, default_partitions, false)
    }

    /// [`Manifest::load_or_create`] for a cluster node's data directory, which records the
    /// cluster's partition count at creation and refuses to start with another one (a
    /// config edited to a new count would re-hash keys onto adjudicators without their
    /// history). A directory written by a build before the manifest (journals but no
    /// manifest) is adopted with the configured count: the one case not checked.
    pub fn load_or_adopt(disk: &dyn Disk, dir: &Path, partitions: u32) -> Result<Manifest> {
        Self::load_or_create_in(disk, dir, Some(partitions), partitions, true)
    }

    fn load_or_create_in(
        disk: &dyn Disk,
        dir: &Path,
        requested: Option<u32>,
        default_partitions: u32,
        adopt: bool,
    ) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let io =
            |what: &str, e: std::io::Error| Error::Io(format!("{what} {}: {e}", path.display()));
        let names = disk
            .list_dir(dir)
            .map_err(|e| io("listing the directory of", e))?;
        let others: Vec<&String> = names
            .iter()
            .filter(|n| !HARMLESS.contains(&n.as_str()))
            .collect();
        if names.iter().any(|n| n == MANIFEST) {
            let file = disk.open(&path).map_err(|e| io("opening", e))?;
            let len = file.len().map_err(|e| io("reading", e))?;
            let mut bytes = vec![0u8; len.min(4096) as usize];
            file.read_exact_at(&mut bytes, 0)
                .map_err(|e| io("reading", e))?;
            match Manifest::decode(&bytes, &path)? {
                Some(m) => {
                    if let Some(n) = requested.filter(|&n| n != m.partitions) {
                        return Err(Error::InvalidArgument(format!(
                            "the database in {} was created with {} partitions; it cannot be opened with {n}",
                            dir.display(),
                            m.partitions
                        )));
                    }
                    return Ok(m);
                }
                None if others.is_empty() || adopt => {
                    // The creation was torn before anything else was written: redo it.
                    disk.remove_file(&path)
                        .map_err(|e| io("removing the torn", e))?;
                }
                None => {
                    return Err(Error::Corruption(format!("{} is damaged", path.display())));
                }
            }
        } else if !others.is_empty() && !adopt {
            return Err(Error::InvalidArgument(format!(
                "{} is not a journaldb data directory: it holds files ({}) but no {MANIFEST}",
                dir.display(),
                others
                    .iter()
                    .take(3)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let partitions = requested.unwrap_or(default_partitions);
        if partitions == 0 {
            return Err(Error::InvalidArgument(
                "a database needs at least one partition".into(),
            ));
        }
        let manifest = Manifest { partitions };
        let file = disk.create_new(&path).map_err(|e| io("creating", e))?;
        file.write_all_at(&manifest.encode(), 0)
            .map_err(|e| io("writing", e))?;
        file.sync_data().map_err(|e| io("syncing", e))?;
        disk.sync_dir(dir)
            .map_err(|e| io("syncing the directory of", e))?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use journaldb_journal::disk::CrashDisk;

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/data")
    }

    fn disk() -> CrashDisk {
        let d = CrashDisk::default();
        d.create_dir_all(&dir()).unwrap();
        d
    }

    #[test]
    fn the_partition_count_is_fixed_at_creation() {
        let d = disk();
        assert_eq!(
            Manifest::load_or_create(&d, &dir(), None, 4)
                .unwrap()
                .partitions,
            4
        );
        assert_eq!(
            Manifest::load_or_create(&d, &dir(), None, 8)
                .unwrap()
                .partitions,
            4
        );
        assert_eq!(
            Manifest::load_or_create(&d, &dir(), Some(4), 8)
                .unwrap()
                .partitions,
            4
        );
        let err = Manifest::load_or_create(&d, &dir(), Some(2), 8).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("created with 4 partitions"));
        assert!(matches!(
            Manifest::load_or_create(&disk(), &dir(), Some(0), 1),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn a_torn_creation_is_redone_and_synced_creation_survives_crashes() {
        let mut redone = 0;
        for seed in 0..50 {
            let d = disk();
            d.sync_dir(&dir()).unwrap();
            d.freeze_after(2); // the create and the write happen; the syncs do not
            assert!(Manifest::load_or_create(&d, &dir(), Some(3), 1).is_err());
            let after = d.crash(seed);
            let path = dir().join(MANIFEST);
            let intact = after
                .read_file(&path)
                .is_some_and(|b| Manifest::decode(&b, &path).ok().flatten().is_some());
            redone += usize::from(!intact);
            // Intact or torn or vanished, opening with the same request gives the same database.
            assert_eq!(
                Manifest::load_or_create(&after, &dir(), Some(3), 1)
                    .unwrap()
                    .partitions,
                3
            );
            let again = after.crash(seed + 1000);
            assert_eq!(
                Manifest::load_or_create(&again, &dir(), None, 1)
                    .unwrap()
                    .partitions,
                3
            );
        }
        assert!(
            redone > 0,
            "some crash must have torn or dropped the manifest"
        );
    }

    #[test]
    fn foreign_directories_and_unknown_versions_are_refused_untouched() {
        let d = disk();
        d.create_new(&dir().join("photo.jpg")).unwrap();
        let err = Manifest::load_or_create(&d, &dir(), None, 1).unwrap_err();
        assert!(
            err.to_string().contains("not a journaldb data directory"),
            "{err}"
        );
        assert!(
            d.read_file(&dir().join(MANIFEST)).is_none(),
            "nothing was written"
        );

        let d = disk();
        Manifest::load_or_create(&d, &dir(), None, 2).unwrap();
        assert!(d.flip_byte(&dir().join(MANIFEST), 8, 0x02)); // version 1 -> 3
        let err = Manifest::load_or_create(&d, &dir(), None, 2).unwrap_err();
        assert!(
            matches!(err, Error::Corruption(_)) && err.to_string().contains("version 3"),
            "{err}"
        );
    }
}
