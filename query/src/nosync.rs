//! [`NoSync`]: the real disk with fsyncs turned off, for `SyncMode::None`.

use std::path::Path;
use std::sync::Arc;

use journaldb_journal::disk::{DirLock, Disk, DiskFile, RealDisk};

/// A disk whose fsyncs do nothing ([`SyncMode::None`]).
#[derive(Debug)]
pub(crate) struct NoSync(pub(crate) RealDisk);

impl Disk for NoSync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.0.list_dir(dir)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(NoSyncFile(self.0.create_new(path)?)))
    }
    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(NoSyncFile(self.0.open(path)?)))
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove_file(path)
    }
    fn sync_dir(&self, _dir: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn lock_dir(&self, dir: &Path) -> std::io::Result<DirLock> {
        self.0.lock_dir(dir)
    }
}

#[derive(Debug)]
struct NoSyncFile(Arc<dyn DiskFile>);

impl DiskFile for NoSyncFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
}
