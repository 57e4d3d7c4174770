//! [`CrashDisk`]: an in-memory disk that keeps written bytes apart from durable bytes, for
//! crash testing (in the manner of redb's `CrashBackend` and turmoil's fs).
//!
//! Model. Each file has *written* bytes (what reads see) and *durable* bytes (what the last
//! `sync_data` made safe). Directory entries (create, remove) are durable only after
//! `sync_dir` of their directory; until then they are queued, in order. At a crash:
//! - a random prefix of the queued entry operations survives (a journaling file system
//!   commits metadata in order), so an unsynced create or removal may vanish;
//! - each sector where written and durable bytes differ is, independently, kept (the new
//!   bytes reached the platter), dropped (the old bytes remain; zeros past the old end) or
//!   garbled (random bytes: a torn sector); the file length is either the written or the
//!   durable length.
//!
//! It can also fail writes and syncs on command, and *freeze* after a chosen number of
//! mutating operations — the moment of power loss — so a test can crash at an exact point
//! regardless of thread timing. Directories themselves are durable at once (a simplification:
//! the journal creates its directory before anything that matters happens in it).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{DirLock, Disk, DiskFile};

/// Settings of a [`CrashDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashDiskConfig {
    /// The unit a crash tears writes at. Default 512 bytes, the smallest sector real disks
    /// expose; the journal's 4 KiB blocks then tear into eight independent pieces.
    pub sector_size: usize,
}

impl Default for CrashDiskConfig {
    fn default() -> Self {
        CrashDiskConfig { sector_size: 512 }
    }
}

/// An in-memory disk that can crash. Clones share the same disk.
#[derive(Debug, Clone)]
pub struct CrashDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    sector_size: usize,
    dirs: BTreeSet<PathBuf>,
    /// Names as reads see them.
    names: BTreeMap<PathBuf, u64>,
    /// Names as they would be after a crash with no queued entry operation surviving.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Entry operations not yet made durable by `sync_dir`, oldest first.
    queued: Vec<EntryOp>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    locks: BTreeSet<PathBuf>,
    fail_writes: bool,
    failing_syncs: u64,
    freeze_at: Option<u64>,
    mutating_ops: u64,
    /// Set when the disk froze or crashed: every operation fails from then on.
    dead: bool,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Clone)]
enum EntryOp {
    Create(PathBuf, u64),
    Remove(PathBuf),
}

impl EntryOp {
    fn path(&self) -> &Path {
        match self {
            EntryOp::Create(p, _) | EntryOp::Remove(p) => p,
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            EntryOp::Create(p, ino) => {
                names.insert(p.clone(), *ino);
            }
            EntryOp::Remove(p) => {
                names.remove(p);
            }
        }
    }
}

fn crashed() -> io::Error {
    io::Error::other("crash disk: the machine has crashed")
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("crash disk: injected {what} failure"))
}

impl State {
    /// A disk just booted: everything it holds is durable, nothing is queued or failing.
    fn fresh(
        sector_size: usize,
        dirs: BTreeSet<PathBuf>,
        names: BTreeMap<PathBuf, u64>,
        inodes: BTreeMap<u64, Inode>,
        next_inode: u64,
    ) -> Self {
        State {
            sector_size,
            dirs,
            durable_names: names.clone(),
            names,
            queued: Vec::new(),
            inodes,
            next_inode,
            locks: BTreeSet::new(),
            fail_writes: false,
            failing_syncs: 0,
            freeze_at: None,
            mutating_ops: 0,
            dead: false,
        }
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead { Err(crashed()) } else { Ok(()) }
    }

    /// Counts a mutating operation; freezes the disk (and fails the operation) at the
    /// chosen freeze point.
    fn mutate(&mut self) -> io::Result<()> {
        self.alive()?;
        if self.freeze_at == Some(self.mutating_ops) {
            self.dead = true;
            return Err(crashed());
        }
        self.mutating_ops += 1;
        Ok(())
    }

    fn sync_fault(&mut self) -> io::Result<()> {
        if self.failing_syncs > 0 {
            self.failing_syncs -= 1;
            return Err(injected("sync"));
        }
        Ok(())
    }

    fn inode(&mut self, ino: u64) -> &mut Inode {
        self.inodes.entry(ino).or_default()
    }
}

impl Default for CrashDisk {
    fn default() -> Self {
        Self::new(CrashDiskConfig::default())
    }
}

impl CrashDisk {
    /// An empty disk.
    pub fn new(config: CrashDiskConfig) -> Self {
        assert!(config.sector_size > 0, "sector size must be positive");
        let root = BTreeSet::from([PathBuf::from("/")]);
        CrashDisk::from_state(State::fresh(
            config.sector_size,
            root,
            BTreeMap::new(),
            BTreeMap::new(),
            1,
        ))
    }

    fn from_state(state: State) -> Self {
        CrashDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// While `on`, every write and length change fails with an I/O error.
    pub fn fail_writes(&self, on: bool) {
        self.state.lock().fail_writes = on;
    }

    /// The next `n` file or directory syncs fail with an I/O error (and make nothing durable).
    pub fn fail_next_syncs(&self, n: u64) {
        self.state.lock().failing_syncs = n;
    }

    /// Freezes the disk once `n` more mutating operations (create, remove, write, set_len,
    /// sync) have been performed: the next one fails, as does everything after it. This
    /// is the moment of power loss; [`CrashDisk::crash`] then shows what survived it.
    pub fn freeze_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.freeze_at = Some(s.mutating_ops + n);
    }

    /// Mutating operations performed so far.
    pub fn mutating_ops(&self) -> u64 {
        self.state.lock().mutating_ops
    }

    /// The machine crashes now (or at the freeze point, if the disk froze): returns the
    /// disk as it is found after reboot, torn as the module docs describe, using `seed` for
    /// every random choice. This disk, and every file open on it, fails from now on.
    pub fn crash(&self, seed: u64) -> CrashDisk {
        let mut rng = SplitMix64(seed);
        let mut old = self.state.lock();
        old.dead = true;
        let mut names = old.durable_names.clone();
        let surviving = rng.below(old.queued.len() as u64 + 1) as usize;
        for op in &old.queued[..surviving] {
            op.apply(&mut names);
        }
        let sector = old.sector_size;
        let mut inodes = BTreeMap::new();
        for &ino in names.values() {
            if let Some(inode) = old.inodes.get(&ino) {
                let bytes = tear(inode, sector, &mut rng);
                inodes.insert(
                    ino,
                    Inode {
                        written: bytes.clone(),
                        durable: bytes,
                    },
                );
            }
        }
        CrashDisk::from_state(State::fresh(
            sector,
            old.dirs.clone(),
            names,
            inodes,
            old.next_inode,
        ))
    }

    /// The bytes of the file at `path` as reads see them, if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.names.get(path)?;
        Some(
            s.inodes
                .get(ino)
                .map(|i| i.written.clone())
                .unwrap_or_default(),
        )
    }

    /// Damages the file at `path` durably (bit rot): XORs `mask` into the byte at `offset`.
    /// Returns `false` if there is no such file or byte.
    pub fn flip_byte(&self, path: &Path, offset: usize, mask: u8) -> bool {
        let mut s = self.state.lock();
        let Some(&ino) = s.names.get(path) else {
            return false;
        };
        let inode = s.inode(ino);
        let (Some(w), Some(d)) = (inode.written.get_mut(offset), inode.durable.get_mut(offset))
        else {
            return false;
        };
        *w ^= mask;
        *d ^= mask;
        true
    }

    /// Paths of every file that exists, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().names.keys().cloned().collect()
    }
}

/// What one file holds after a crash: see the module docs.
fn tear(inode: &Inode, sector: usize, rng: &mut SplitMix64) -> Vec<u8> {
    let (w, d) = (&inode.written, &inode.durable);
    let len = if rng.below(2) == 0 { w.len() } else { d.len() };
    let mut out = vec![0u8; len];
    let mut start = 0;
    while start < len {
        let end = (start + sector).min(len);
        let new = w.get(start..end.min(w.len())).unwrap_or(&[]);
        let old = d.get(start..end.min(d.len())).unwrap_or(&[]);
        let chosen: Vec<u8> = if new == old {
            new.to_vec()
        } else {
            match rng.below(3) {
                0 => new.to_vec(),
                1 => old.to_vec(),
                _ => (start..end).map(|_| rng.next() as u8).collect(),
            }
        };
        out[start..start + chosen.len()].copy_from_slice(&chosen);
        start = end;
    }
    out
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Disk for CrashDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.alive()?;
        if s.names.contains_key(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is a file", dir.display()),
            ));
        }
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                s.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        s.alive()?;
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let files = s.names.keys();
        let subdirs = s.dirs.iter().filter(|d| d.as_path() != dir);
        let mut out: Vec<String> = files
            .chain(subdirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        out.sort();
        Ok(out)
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let mut s = self.state.lock();
        s.alive()?;
        if !s.dirs.contains(&parent(path)) {
            return Err(io::ErrorKind::NotFound.into());
        }
        if s.names.contains_key(path) || s.dirs.contains(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        s.mutate()?;
        let ino = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(ino, Inode::default());
        s.names.insert(path.to_path_buf(), ino);
        s.queued.push(EntryOp::Create(path.to_path_buf(), ino));
        Ok(Arc::new(CrashFile {
            state: self.state.clone(),
            ino,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let s = self.state.lock();
        s.alive()?;
        let Some(&ino) = s.names.get(path) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        Ok(Arc::new(CrashFile {
            state: self.state.clone(),
            ino,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.alive()?;
        if !s.names.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.mutate()?;
        s.names.remove(path);
        s.queued.push(EntryOp::Remove(path.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate()?;
        s.sync_fault()?;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut s.queued)
            .into_iter()
            .partition(|op| op.path().parent() == Some(dir));
        for op in &now {
            op.apply(&mut s.durable_names);
        }
        s.queued = later;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let mut s = self.state.lock();
        s.alive()?;
        if !s.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        if !s.locks.insert(dir.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(DirLock::new(CrashLock {
            state: self.state.clone(),
            dir: dir.to_path_buf(),
        }))
    }
}

#[derive(Debug)]
struct CrashLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

impl Drop for CrashLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.dir);
    }
}

#[derive(Debug)]
struct CrashFile {
    state: Arc<Mutex<State>>,
    ino: u64,
}

impl DiskFile for CrashFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.alive()?;
        let data = &s.inode(self.ino).written;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let Some(src) = data.get(start..start + buf.len()) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate()?;
        if s.fail_writes {
            return Err(injected("write"));
        }
        let start = offset as usize;
        let data = &mut s.inode(self.ino).written;
        if data.len() < start + buf.len() {
            data.resize(start + buf.len(), 0);
        }
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut s = self.state.lock();
        s.alive()?;
        Ok(s.inode(self.ino).written.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate()?;
        if s.fail_writes {
            return Err(injected("write"));
        }
        s.inode(self.ino).written.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.mutate()?;
        s.sync_fault()?;
        let inode = s.inode(self.ino);
        inode.durable = inode.written.clone();
        Ok(())
    }
}

/// A tiny seeded generator (SplitMix64) so crashes replay from their seed without a
/// dependency on `rand`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[cfg(test)]
mod tests;
