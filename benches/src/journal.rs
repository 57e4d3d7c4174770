//! `journaldb-bench journal`: durable appends/s and p50/p99 append latency for several
//! numbers of concurrent appenders and record sizes, and the raw `write + fdatasync` rate
//! and latency of the same disk in the same run.
//!
//! Budget (2-core VM, ~50 µs fdatasync): one appender pays one fsync plus two thread
//! hand-offs (appender → flusher → appender, ~5–15 µs each), so its p50 should stay within
//! 1.5× raw fdatasync. With 64 appenders each fsync carries up to 64 records, so the rate
//! should reach ≥ 10× the raw fdatasync rate; 100 B records are ~0.5 KB/fsync, far from
//! any bandwidth limit.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use journaldb_journal::{Journal, JournalOptions};

use crate::report::{histogram, quantile_us, record};

/// Options of `journaldb-bench journal`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the benchmark's files (on the disk to measure; not tmpfs).
    #[arg(long, default_value = "./data/bench-journal")]
    dir: PathBuf,
    /// Seconds to measure each point.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Numbers of concurrent appenders.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    appenders: Vec<usize>,
    /// Record sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,4096")]
    sizes: Vec<usize>,
}

/// One measured point.
struct Point {
    ops: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    batches: u64,
}

impl Point {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    let duration = Duration::from_secs_f64(args.seconds);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    println!(
        "journal benchmark: dir {}, {:.1} s per point, {} cores",
        args.dir.display(),
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("raw write + fdatasync of one file, one writer (the baselines):");
    println!(
        "{:>10} {:>8} {:>12} {:>10} {:>10}",
        "mode", "size", "syncs/s", "p50 µs", "p99 µs"
    );
    let mut baselines = Vec::new();
    for &size in &args.sizes {
        let append = raw_fdatasync(&args.dir, size, RawMode::Append, duration)?;
        let overwrite = raw_fdatasync(&args.dir, size, RawMode::Overwrite, duration)?;
        for (mode, p) in [(RawMode::Append, &append), (RawMode::Overwrite, &overwrite)] {
            println!(
                "{:>10} {:>8} {:>12.0} {:>10.1} {:>10.1}",
                mode.name(),
                size,
                p.rate(),
                quantile_us(&p.latency, 0.5),
                quantile_us(&p.latency, 0.99)
            );
        }
        baselines.push((size, append, overwrite));
    }
    println!();
    println!("journal append (durable), concurrent appenders on a 2-worker tokio runtime;");
    println!("ratios against the raw append baseline, [against raw overwrite]:");
    println!(
        "{:>9} {:>6} {:>12} {:>10} {:>10} {:>13} {:>16} {:>18}",
        "appenders",
        "size",
        "appends/s",
        "p50 µs",
        "p99 µs",
        "records/fsync",
        "rate/raw",
        "p50/raw p50"
    );
    let mut checks = Vec::new();
    for (size, append, overwrite) in &baselines {
        for &appenders in &args.appenders {
            let p = journal_point(&args.dir, appenders, *size, duration)?;
            let p50 = quantile_us(&p.latency, 0.5);
            let rate = [p.rate() / append.rate(), p.rate() / overwrite.rate()];
            let p50_ratio = [
                p50 / quantile_us(&append.latency, 0.5),
                p50 / quantile_us(&overwrite.latency, 0.5),
            ];
            println!(
                "{:>9} {:>6} {:>12.0} {:>10.1} {:>10.1} {:>13.1} {:>7.1}× [{:>5.1}×] {:>8.2}× [{:>5.2}×]",
                appenders,
                size,
                p.rate(),
                p50,
                quantile_us(&p.latency, 0.99),
                p.ops as f64 / p.batches.max(1) as f64,
                rate[0],
                rate[1],
                p50_ratio[0],
                p50_ratio[1]
            );
            for (i, baseline) in ["append", "overwrite"].iter().enumerate() {
                if appenders == 1 && *size == 100 {
                    checks.push((
                        format!("1 appender, 100 B: p50 ≤ 1.5× raw {baseline} fdatasync p50"),
                        p50_ratio[i] <= 1.5,
                    ));
                }
                if appenders == 64 && *size == 100 {
                    checks.push((
                        format!(
                            "64 appenders, 100 B: appends/s ≥ 10× raw {baseline} fdatasync rate"
                        ),
                        rate[i] >= 10.0,
                    ));
                }
            }
        }
    }
    println!();
    for (target, met) in checks {
        println!("target {}: {target}", if met { "met" } else { "MISSED" });
    }
    Ok(())
}

/// How the raw baseline writes.
#[derive(Clone, Copy)]
enum RawMode {
    /// Each write extends the file (what a naive log does): fdatasync also flushes the
    /// new size and block allocation.
    Append,
    /// Each write overwrites blocks of a file zero-filled and synced beforehand: fdatasync
    /// flushes data only. The best case for any log on this disk.
    Overwrite,
}

impl RawMode {
    fn name(self) -> &'static str {
        match self {
            RawMode::Append => "append",
            RawMode::Overwrite => "overwrite",
        }
    }
}

/// `size`-byte writes to one file, each followed by `fdatasync`, for `duration`.
fn raw_fdatasync(
    dir: &Path,
    size: usize,
    mode: RawMode,
    duration: Duration,
) -> anyhow::Result<Point> {
    let path = dir.join("raw-fdatasync");
    let _ = std::fs::remove_file(&path);
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    const PREFILL: u64 = 256 << 20;
    if let RawMode::Overwrite = mode {
        let zeros = vec![0u8; 1 << 20];
        for chunk in 0..PREFILL >> 20 {
            file.write_all_at(&zeros, chunk << 20)?;
        }
        file.sync_all()?;
    }
    let buf = vec![0xA5u8; size];
    let mut latency = histogram();
    let mut offset = 0u64;
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < duration {
        let t = Instant::now();
        file.write_all_at(&buf, offset)?;
        file.sync_data()?;
        record(&mut latency, t.elapsed());
        offset += size as u64;
        if let RawMode::Overwrite = mode {
            offset %= PREFILL - size as u64;
        }
        ops += 1;
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Point {
        ops,
        elapsed,
        latency,
        batches: ops,
    })
}

/// `appenders` tasks appending `size`-byte records to a fresh journal for `duration`.
fn journal_point(
    dir: &Path,
    appenders: usize,
    size: usize,
    duration: Duration,
) -> anyhow::Result<Point> {
    let path = dir.join(format!("journal-{appenders}-{size}"));
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
    }
    let journal = Arc::new(Journal::open(&path, JournalOptions::default())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let payload = Bytes::from(vec![0x5Au8; size]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (journal, payload) = (journal.clone(), payload.clone());
            runtime.spawn(async move {
                let mut latency = histogram();
                let mut ops = 0u64;
                while start.elapsed() < duration {
                    let t = Instant::now();
                    journal.append(payload.clone()).await?;
                    record(&mut latency, t.elapsed());
                    ops += 1;
                }
                Ok::<_, journaldb_journal::Error>((ops, latency))
            })
        })
        .collect();
    let mut latency = histogram();
    let mut ops = 0;
    for task in tasks {
        let (n, h) = runtime.block_on(task)??;
        ops += n;
        latency.add(&h)?;
    }
    let elapsed = start.elapsed();
    let batches = journal.stats().batches;
    journal.close()?;
    drop(journal);
    std::fs::remove_dir_all(&path)?;
    Ok(Point {
        ops,
        elapsed,
        latency,
        batches,
    })
}
