//! `journaldb-bench embedded`: the embedded database against RocksDB's
//! `OptimisticTransactionDB` (`sync = true`) on the same disk, in the same run.
//!
//! 1. Read-modify-write transactions on `--keys` keys: read 2 random keys, update the first,
//!    commit; conflicts retried (and counted) — journaldb by `transact` (backoff, and a
//!    retry reads at a snapshot that includes the conflicting write), RocksDB at once. At 1, 8 and 64 concurrent tasks (journaldb:
//!    tokio tasks on a 2-worker runtime; RocksDB: OS threads, its API blocks). Latency is one
//!    transaction including its retries.
//! 2. Point reads: journaldb a read-only transaction with one `get`; RocksDB `get`.
//! 3. Reopen after SIGKILL: a child process writes a history of `--history-mb` megabytes
//!    and keeps writing; it is killed with SIGKILL and the time to reopen and serve the
//!    first read is measured, for each history size.
//!
//! Budget (2 cores, fsync ≈ 100–200 µs): journaldb's single-partition commit is one group
//! fsync plus the visibility wait (usually no extra fsync under load), so throughput grows
//! with concurrency as batches fill; RocksDB's WAL group commit does the same with fewer
//! hand-offs, so at 1 task it should win and at 64 the per-fsync batch decides.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use journaldb::{Database, Error, Options};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rocksdb::{
    ErrorKind, MultiThreaded, OptimisticTransactionDB, OptimisticTransactionOptions, ReadOptions,
    WriteBatchWithTransaction, WriteOptions,
};

use crate::report::{histogram, quantile_us, record};

type Rocks = OptimisticTransactionDB<MultiThreaded>;

/// Options of `journaldb-bench embedded`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the benchmark's databases (on the disk to measure; not tmpfs).
    #[arg(long, default_value = "./data/bench-embedded")]
    dir: PathBuf,
    /// Seconds to measure each point.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Numbers of concurrent transactions.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    tasks: Vec<usize>,
    /// Keys loaded before measuring.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// History sizes (MB) for the reopen-after-SIGKILL measurement.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    history_mb: Vec<u64>,
    /// Partitions of the journaldb database.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Measure journaldb only (no RocksDB baseline, no ratios): for profiling.
    #[arg(long)]
    only_journaldb: bool,
    /// Skip the reopen measurement.
    #[arg(long)]
    no_reopen: bool,
}

/// Options of the hidden `embedded-history` child.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The database directory.
    #[arg(long)]
    dir: PathBuf,
    /// Megabytes of values to commit before printing `ready`.
    #[arg(long)]
    mb: u64,
}

/// One measured point.
pub(crate) struct Point {
    pub(crate) ops: u64,
    pub(crate) aborts: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Histogram<u64>,
}

impl Point {
    pub(crate) fn new() -> Point {
        Point {
            ops: 0,
            aborts: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn merge(points: Vec<Point>, elapsed: Duration) -> Point {
        let mut out = Point {
            elapsed,
            ..Point::new()
        };
        for p in points {
            out.ops += p.ops;
            out.aborts += p.aborts;
            out.latency.add(&p.latency).expect("same bounds");
        }
        out
    }

    fn line(&self, name: &str, tasks: usize, baseline: Option<&Point>) -> String {
        let ratio = baseline.map_or(String::new(), |b| {
            format!("{:>7.2}×", self.rate() / b.rate())
        });
        format!(
            "{name:>10} {tasks:>6} {:>12.0} {:>9} {:>10.1} {:>10.1} {ratio}",
            self.rate(),
            self.aborts,
            quantile_us(&self.latency, 0.5),
            quantile_us(&self.latency, 0.99),
        )
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("user{i:08}").into_bytes()
}

fn value(rng: &mut ChaCha8Rng, bytes: usize) -> Vec<u8> {
    (0..bytes).map(|_| rng.random_range(b'a'..=b'z')).collect()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.seconds <= 0.0 || args.keys < 2 || args.tasks.is_empty() {
        bail!("--seconds must be positive, --keys at least 2, --tasks not empty");
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    println!(
        "embedded benchmark: dir {}, {} partitions, {} keys, {} B values, {:.1} s per point, {} cores",
        args.dir.display(),
        args.partitions,
        args.keys,
        args.value_bytes,
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let rt = runtime()?;
    let options = Options::default().with_partitions(args.partitions);
    let db = rt.block_on(Database::open_with(args.dir.join("journaldb"), options))?;
    let rocks = Arc::new(open_rocks(&args.dir.join("rocksdb"))?);
    let loaded = Instant::now();
    rt.block_on(load_journaldb(&db, args.keys, args.value_bytes))?;
    let journaldb_load = loaded.elapsed();
    let loaded = Instant::now();
    load_rocks(&rocks, args.keys, args.value_bytes)?;
    println!(
        "loaded: journaldb {:.1} s, RocksDB {:.1} s",
        journaldb_load.as_secs_f64(),
        loaded.elapsed().as_secs_f64()
    );

    println!();
    println!("read 2 keys + update 1, commit (durable); conflicts retried:");
    println!(
        "{:>10} {:>6} {:>12} {:>9} {:>10} {:>10} {:>8}",
        "engine", "tasks", "commits/s", "aborts", "p50 µs", "p99 µs", "ratio"
    );
    let mut checks = Vec::new();
    for &tasks in &args.tasks {
        let ours = rt.block_on(journaldb_rmw(
            &db,
            tasks,
            args.keys,
            args.value_bytes,
            duration,
        ))?;
        if args.only_journaldb {
            let (batches, records) = db
                .stats()
                .journals
                .iter()
                .fold((0, 0), |(b, r), j| (b + j.batches, r + j.records));
            println!(
                "{}  (since open: {records} records in {batches} fsyncs)",
                ours.line("journaldb", tasks, None)
            );
            continue;
        }
        let baseline = rocks_rmw(&rocks, tasks, args.keys, args.value_bytes, duration)?;
        println!("{}", baseline.line("RocksDB", tasks, None));
        println!("{}", ours.line("journaldb", tasks, Some(&baseline)));
        let ratio = ours.rate() / baseline.rate();
        match tasks {
            8 => checks.push(("8 tasks: commits/s ≥ 1.0× RocksDB", ratio >= 1.0)),
            64 => checks.push(("64 tasks: commits/s ≥ 2.0× RocksDB", ratio >= 2.0)),
            _ => {}
        }
    }

    println!();
    println!("point reads (journaldb: a read-only transaction with one get):");
    println!(
        "{:>10} {:>6} {:>12} {:>9} {:>10} {:>10} {:>8}",
        "engine", "tasks", "reads/s", "", "p50 µs", "p99 µs", "ratio"
    );
    for tasks in [1, 8] {
        if args.only_journaldb {
            break;
        }
        let baseline = rocks_reads(&rocks, tasks, args.keys, duration)?;
        let ours = rt.block_on(journaldb_reads(&db, tasks, args.keys, duration))?;
        println!("{}", baseline.line("RocksDB", tasks, None));
        println!("{}", ours.line("journaldb", tasks, Some(&baseline)));
        if tasks == 1 {
            let ratio = ours.rate() / baseline.rate();
            checks.push(("1 task: point reads/s ≥ 0.5× RocksDB get", ratio >= 0.5));
        }
    }
    rt.block_on(db.close())?;
    drop(rocks);

    if !args.no_reopen {
        println!();
        println!("reopen after SIGKILL mid-load (open + first read); after the history is");
        println!(
            "written, {REOPEN_ROUNDS} rounds of: 4 MB more, kill 0.2 s later mid-load, reopen (timed);"
        );
        println!("the median round counts:");
        println!(
            "{:>12} {:>12} {:>12} {:>10} {:>22}",
            "history MB", "journal MB", "storage MB", "reopen ms", "rounds ms"
        );
        let mut reopen = Vec::new();
        for &mb in &args.history_mb {
            let dir = args.dir.join(format!("history-{mb}"));
            let _ = std::fs::remove_dir_all(&dir);
            let mut rounds = Vec::new();
            let (mut journal, mut storage) = (0, 0);
            for round in 0..REOPEN_ROUNDS {
                let write = if round == 0 { mb } else { 4 };
                let (elapsed, j, s) = reopen_after_sigkill(&dir, write)?;
                (journal, storage) = (j, s);
                rounds.push(elapsed.as_secs_f64() * 1e3);
            }
            let mut sorted = rounds.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let rounds: Vec<String> = rounds.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "{mb:>12} {:>12.0} {:>12.0} {median:>10.0} {:>22}",
                journal as f64 / 1e6,
                storage as f64 / 1e6,
                rounds.join(" ")
            );
            reopen.push(median);
        }
        if let (Some(min), Some(max)) = (
            reopen.iter().copied().reduce(f64::min),
            reopen.iter().copied().reduce(f64::max),
        ) {
            checks.push((
                "reopen times of every history size within 20% of each other",
                max <= min * 1.2,
            ));
        }
    }
    println!();
    for (target, met) in checks {
        println!("target {}: {target}", if met { "met" } else { "MISSED" });
    }
    Ok(())
}

fn open_rocks(path: &Path) -> anyhow::Result<Rocks> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    Ok(Rocks::open(&options, path)?)
}

async fn load_journaldb(db: &Database, keys: u64, value_bytes: usize) -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        let mut tx = db.begin();
        for &i in chunk {
            tx.put(key(i), value(&mut rng, value_bytes))?;
        }
        tx.commit().await?;
    }
    Ok(())
}

fn load_rocks(db: &Rocks, keys: u64, value_bytes: usize) -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        let mut batch = WriteBatchWithTransaction::<true>::default();
        for &i in chunk {
            batch.put(key(i), value(&mut rng, value_bytes));
        }
        db.write(batch)?;
    }
    db.flush()?;
    Ok(())
}

/// Two distinct random keys.
fn two_keys(rng: &mut ChaCha8Rng, keys: u64) -> (Vec<u8>, Vec<u8>) {
    let a = rng.random_range(0..keys);
    let b = (a + rng.random_range(1..keys)) % keys;
    (key(a), key(b))
}

/// Runs `op` in a loop on `tasks` tokio tasks for `duration`. Each call does one
/// operation, timed, with the task's RNG (passed by value: an async closure that borrowed
/// it would not be `Send`) and returns the RNG and how many attempts were aborted.
async fn on_tasks<F, Fut>(
    tasks: usize,
    duration: Duration,
    seed: u64,
    op: F,
) -> anyhow::Result<Point>
where
    F: Fn(ChaCha8Rng) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(ChaCha8Rng, u64), Error>> + Send,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks as u64)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(seed + t);
                let mut p = Point::new();
                while start.elapsed() < duration {
                    let began = Instant::now();
                    let (next, aborts) = op(rng).await?;
                    rng = next;
                    record(&mut p.latency, began.elapsed());
                    p.aborts += aborts;
                    p.ops += 1;
                }
                Ok::<Point, Error>(p)
            })
        })
        .collect();
    let mut points = Vec::new();
    for h in handles {
        points.push(h.await??);
    }
    Ok(Point::merge(points, start.elapsed()))
}

/// [`on_tasks`] on OS threads, for RocksDB's blocking API.
fn on_threads<F>(tasks: usize, duration: Duration, seed: u64, op: F) -> anyhow::Result<Point>
where
    F: Fn(&mut ChaCha8Rng) -> anyhow::Result<u64> + Clone + Send + 'static,
{
    let start = Instant::now();
    let threads: Vec<_> = (0..tasks as u64)
        .map(|t| {
            let op = op.clone();
            std::thread::spawn(move || -> anyhow::Result<Point> {
                let mut rng = ChaCha8Rng::seed_from_u64(seed + t);
                let mut p = Point::new();
                while start.elapsed() < duration {
                    let began = Instant::now();
                    p.aborts += op(&mut rng)?;
                    record(&mut p.latency, began.elapsed());
                    p.ops += 1;
                }
                Ok(p)
            })
        })
        .collect();
    let mut points = Vec::new();
    for t in threads {
        points.push(
            t.join()
                .map_err(|_| anyhow::anyhow!("a RocksDB thread panicked"))??,
        );
    }
    Ok(Point::merge(points, start.elapsed()))
}

async fn journaldb_rmw(
    db: &Database,
    tasks: usize,
    keys: u64,
    value_bytes: usize,
    duration: Duration,
) -> anyhow::Result<Point> {
    let db = db.clone();
    on_tasks(tasks, duration, 100, move |mut rng| {
        let db = db.clone();
        async move {
            let (a, b) = two_keys(&mut rng, keys);
            let v = value(&mut rng, value_bytes);
            let attempts = Arc::new(AtomicU64::new(0));
            let counter = attempts.clone();
            db.transact(async move |tx| {
                counter.fetch_add(1, Ordering::Relaxed);
                let _x = tx.get(&a).await?;
                let _y = tx.get(&b).await?;
                tx.put(a.clone(), v.clone())
            })
            .await?;
            Ok((rng, attempts.load(Ordering::Relaxed) - 1))
        }
    })
    .await
}

fn rocks_rmw(
    db: &Arc<Rocks>,
    tasks: usize,
    keys: u64,
    value_bytes: usize,
    duration: Duration,
) -> anyhow::Result<Point> {
    let db = db.clone();
    on_threads(tasks, duration, 100, move |rng| {
        let mut write = WriteOptions::default();
        write.set_sync(true);
        let mut txn_options = OptimisticTransactionOptions::default();
        txn_options.set_snapshot(true);
        let (a, b) = two_keys(rng, keys);
        let v = value(rng, value_bytes);
        let mut aborts = 0;
        loop {
            let txn = db.transaction_opt(&write, &txn_options);
            let snapshot = txn.snapshot();
            let mut read = ReadOptions::default();
            read.set_snapshot(&snapshot);
            let _x = txn.get_opt(&a, &read)?;
            let _y = txn.get_opt(&b, &read)?;
            txn.put(&a, &v)?;
            drop(read);
            drop(snapshot);
            match txn.commit() {
                Ok(()) => return Ok(aborts),
                Err(e) if matches!(e.kind(), ErrorKind::Busy | ErrorKind::TryAgain) => aborts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    })
}

async fn journaldb_reads(
    db: &Database,
    tasks: usize,
    keys: u64,
    duration: Duration,
) -> anyhow::Result<Point> {
    // Not `on_tasks`: a read is ~3 µs, so the loop stays free of per-read clones.
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks as u64)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(200 + t);
                let mut p = Point::new();
                while start.elapsed() < duration {
                    let k = key(rng.random_range(0..keys));
                    let began = Instant::now();
                    let got = db.begin().get(&k).await?;
                    record(&mut p.latency, began.elapsed());
                    if got.is_none() {
                        return Err(Error::InvalidArgument("a loaded key is missing".into()));
                    }
                    p.ops += 1;
                }
                Ok::<Point, Error>(p)
            })
        })
        .collect();
    let mut points = Vec::new();
    for h in handles {
        points.push(h.await??);
    }
    Ok(Point::merge(points, start.elapsed()))
}

fn rocks_reads(
    db: &Arc<Rocks>,
    tasks: usize,
    keys: u64,
    duration: Duration,
) -> anyhow::Result<Point> {
    let db = db.clone();
    on_threads(tasks, duration, 200, move |rng| {
        let k = key(rng.random_range(0..keys));
        match db.get(&k)? {
            Some(_) => Ok(0),
            None => bail!("a loaded key is missing"),
        }
    })
}

/// Bytes of the files under `dir` whose path contains `part`.
fn bytes_under(dir: &Path, part: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                bytes_under(&path, part)
            } else if path.to_string_lossy().contains(part) {
                e.metadata().map_or(0, |m| m.len())
            } else {
                0
            }
        })
        .sum()
}

/// Reopen measurements per history size.
const REOPEN_ROUNDS: usize = 15;

/// Spawns the history writer on `dir`, kills it with SIGKILL once it wrote `mb` MB more
/// (plus a moment of further load), and times the reopen. Returns (reopen time, journal
/// bytes, storage bytes).
fn reopen_after_sigkill(dir: &Path, mb: u64) -> anyhow::Result<(Duration, u64, u64)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("embedded-history")
        .arg("--dir")
        .arg(dir)
        .arg("--mb")
        .arg(mb.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the history writer")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "ready" => break,
            Some(Ok(_)) => {}
            _ => bail!("the history writer stopped before writing {mb} MB"),
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill()?; // SIGKILL
    child.wait()?;
    let journal = bytes_under(dir, "journal-");
    let storage = bytes_under(&dir.join("storage"), "");
    let rt = runtime()?;
    let started = Instant::now();
    rt.block_on(async {
        let db = Database::open(dir).await?;
        db.begin().get(key(0)).await?;
        let elapsed = started.elapsed();
        db.close().await?;
        Ok::<_, Error>((elapsed, journal, storage))
    })
    .map_err(Into::into)
}

/// The child: commits 4 KiB values to random keys from 64 tasks; prints `ready` once `mb`
/// MB were committed, then goes on until killed.
pub fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let db = Database::open_with(&args.dir, Options::default()).await?;
        let written = Arc::new(AtomicU64::new(0));
        let target = args.mb * 1_000_000;
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let (db, written) = (db.clone(), written.clone());
                tokio::spawn(async move {
                    let mut rng = ChaCha8Rng::seed_from_u64(t);
                    let v = Bytes::from(value(&mut rng, 4096));
                    loop {
                        let mut tx = db.begin();
                        tx.put(key(rng.random_range(0..100_000)), v.clone())?;
                        match tx.commit().await {
                            Ok(_) => {
                                let before = written.fetch_add(4096, Ordering::Relaxed);
                                if before < target && before + 4096 >= target {
                                    println!("ready");
                                }
                            }
                            Err(e) if e.is_retryable() => {}
                            Err(e) => return Err::<(), Error>(e),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        Ok(())
    })
}
