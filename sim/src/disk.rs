//! [`SimDisk`]: the journal's [`Disk`] on turmoil's simulated file system. Each host has
//! its own file system; a crash of the host (`Sim::crash`) drops every write and every
//! created or removed name not yet made durable by `fsync`/directory sync, and with torn
//! writes enabled keeps a random subset of the unsynced blocks. On top of it, the harness
//! can make a host's disk fail every write and sync for a while ([`DiskFaults`]): the
//! journal is poisoned and its node must be restarted, as `journaldb serve` is.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use journaldb_journal::disk::{DirLock, Disk, DiskFile};
use turmoil::fs::shim::std::fs as simfs;

/// A switch the harness flips to make a host's disk fail.
#[derive(Debug, Default)]
pub struct DiskFaults {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl DiskFaults {
    /// Makes every write, truncation, creation and sync fail (`on`) or work again.
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::Relaxed);
    }

    /// Whether the disk currently fails.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Operations that failed because of this switch.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn check(&self, what: &str) -> io::Result<()> {
        if self.failing.load(Ordering::Relaxed) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other(format!("simulated disk error on {what}")));
        }
        Ok(())
    }
}

/// The current simulated host's file system. Must be used inside a simulated host.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    faults: Arc<DiskFaults>,
}

impl SimDisk {
    /// A disk whose failures `faults` switches.
    pub fn new(faults: Arc<DiskFaults>) -> Self {
        SimDisk { faults }
    }
}

#[derive(Debug)]
struct SimFile {
    file: simfs::File,
    faults: Arc<DiskFaults>,
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        simfs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in simfs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        self.faults.check("create")?;
        let file = simfs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(SimFile {
            file,
            faults: self.faults.clone(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let file = simfs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Arc::new(SimFile {
            file,
            faults: self.faults.clone(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.faults.check("remove")?;
        simfs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.check("directory sync")?;
        simfs::sync_dir(dir)
    }

    /// A simulated host is one process: nothing else can open its directories.
    fn lock_dir(&self, _dir: &Path) -> io::Result<DirLock> {
        Ok(DirLock::new(()))
    }
}

impl DiskFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.faults.check("write")?;
        FileExt::write_all_at(&self.file, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check("truncate")?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check("fsync")?;
        self.file.sync_data()
    }
}
