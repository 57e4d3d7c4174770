//! The [`Disk`] the journal writes through, so that the same journal code runs on a real
//! file system ([`RealDisk`]) and on a disk that can crash ([`CrashDisk`]).
//!
//! The trait is synchronous and positional (`pread`/`pwrite`-style). It covers exactly
//! what the journal needs, including the directory operations whose durability matters:
//! a created, renamed or removed name is durable only after [`Disk::sync_dir`].

use std::any::Any;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

mod crash;
mod real;

pub use crash::{CrashDisk, CrashDiskConfig};
pub use real::RealDisk;

/// A file system, as far as the journal uses one.
pub trait Disk: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file; fails if it exists. The name is durable after `sync_dir`.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes a file. The removal is durable after `sync_dir`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals of entries of `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of `dir`, held until the returned guard drops. Fails with
    /// `ErrorKind::WouldBlock` if anyone (in any process) holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock>;
}

/// An open file.
#[allow(
    clippy::len_without_is_empty,
    reason = "a fallible length; emptiness is never asked"
)]
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// A held directory lock; dropping it releases the lock.
pub struct DirLock(#[allow(dead_code, reason = "held for its Drop")] Box<dyn Any + Send + Sync>);

impl DirLock {
    /// Wraps whatever keeps the lock held.
    pub fn new(guard: impl Any + Send + Sync) -> Self {
        DirLock(Box::new(guard))
    }
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirLock")
    }
}
