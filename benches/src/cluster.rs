//! `journaldb-bench cluster`: commits/s and commit latency of one-key updates through the
//! cluster `Client`, at several numbers of concurrent clients, against a local 3-node
//! cluster started in this process (each node its own gRPC server on 127.0.0.1, its own
//! journals and RocksDB storage; 3 partitions). `--replicas 1,3` measures both layouts in
//! one run: single-replica journals (one partition per node, 2 storage replicas), then
//! replicated ones (every partition's journal a Raft group on all three nodes, every node a
//! storage replica).
//!
//! Budget: a commit is one RPC to the key's adjudicator (group commit of its journal:
//! one fsync per batch) plus commit wait (the bounded-error clock's uncertainty, ~µs
//! here). With many clients each fsync carries many commits, so throughput grows with
//! concurrency until the 2 cores are busy with gRPC and RocksDB work. Replicated, a commit
//! also waits for a follower's fsync (one network round trip and one fsync more), and every
//! node writes every journal: three times the fsyncs and storage writes on the same disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use journaldb::{Client, Error};
use journaldb_node::{ClusterNode, NodeConfig, NodeEntry};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::embedded::Point;
use crate::report::{quantile_us, record};

/// Options of `journaldb-bench cluster`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the nodes' data (on the disk to measure; not tmpfs).
    #[arg(long, default_value = "./data/bench-cluster")]
    dir: std::path::PathBuf,
    /// Seconds to measure each point.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Numbers of concurrent clients (tasks sharing one `Client`).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Keys updated at random.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Layouts to measure, in turn: replicas of each journal, 1 or 3.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replicas: Vec<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.seconds <= 0.0 || args.keys == 0 || args.clients.is_empty() {
        bail!("--seconds must be positive, --keys at least 1, --clients not empty");
    }
    if args.replicas.is_empty() || args.replicas.iter().any(|r| ![1, 3].contains(r)) {
        bail!("--replicas takes 1, 3 or both");
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "cluster benchmark: 3 nodes in one process on 127.0.0.1, 3 partitions, dir {}, {} \
         keys, {:.1} s per point, {} cores",
        args.dir.display(),
        args.keys,
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for &replicas in &args.replicas {
        let dir = args.dir.join(format!("replicas-{replicas}"));
        rt.block_on(layout(&args, &dir, replicas, duration))?;
    }
    Ok(())
}

/// Measures every client count on a fresh cluster whose journals have `replicas` replicas.
async fn layout(
    args: &Args,
    dir: &std::path::Path,
    replicas: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    {
        let (nodes, client) = start(dir, replicas).await?;
        println!();
        match replicas {
            1 => println!("single-replica journals (one partition per node, 2 storage replicas):"),
            _ => println!(
                "replicated journals (each partition a Raft group on all 3 nodes, 3 storage \
                 replicas):"
            ),
        }
        println!("one-key updates (put + commit, durable), conflicts retried by transact:");
        println!(
            "{:>8} {:>12} {:>9} {:>10} {:>10}",
            "clients", "commits/s", "aborts", "p50 µs", "p99 µs"
        );
        let mut at_256 = None;
        for &clients in &args.clients {
            let p = updates(&client, clients, args.keys, duration).await?;
            println!(
                "{clients:>8} {:>12.0} {:>9} {:>10.1} {:>10.1}",
                p.rate(),
                p.aborts,
                quantile_us(&p.latency, 0.5),
                quantile_us(&p.latency, 0.99)
            );
            if clients == 256 {
                at_256 = Some(p.rate());
            }
        }
        for node in nodes {
            node.shutdown().await?;
        }
        if let (Some(rate), 1) = (at_256, replicas) {
            let met = if rate >= 10_000.0 { "met" } else { "MISSED" };
            println!("target {met}: 256 clients: ≥ 10,000 commits/s of one-key updates");
        }
        Ok(())
    }
}

async fn start(
    dir: &std::path::Path,
    replicas: usize,
) -> anyhow::Result<(Vec<ClusterNode>, Client)> {
    let replicated = replicas > 1;
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let entries = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Ok(NodeEntry {
                name: format!("n{i}"),
                listen: l.local_addr()?.to_string(),
                address: None,
                partitions: match replicated {
                    true => vec![0, 1, 2],
                    false => vec![i as u32],
                },
                storage: replicated || i < 2,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let config = NodeConfig {
            node: format!("n{i}"),
            data_dir: dir.join(format!("n{i}")),
            partitions: 3,
            topology_version: 1,
            cluster_id: replicated.then_some(0xbe7c),
            nodes: entries.clone(),
            tls: None,
            vote_timeout_ms: None,
            storage_cache_mib: None,
            max_txn_age_ms: None,
            retention_ms: None,
            checkpoint_interval_ms: None,
        };
        nodes.push(ClusterNode::bootstrap(config, listener).await?);
    }
    let client = Client::connect(&format!("http://{}", nodes[0].addr())).await?;
    // Replicated: until every group has a leader that took its partition over.
    for _ in 0..100 {
        let ready = client
            .transact(async |tx| {
                for p in 0..3 {
                    tx.put(format!("warm-up/{p}"), "1")?;
                }
                Ok(())
            })
            .await;
        if ready.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((nodes, client))
}

async fn updates(
    client: &Client,
    clients: usize,
    keys: u64,
    duration: Duration,
) -> anyhow::Result<Point> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients as u64)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(300 + t);
                let mut p = Point::new();
                while start.elapsed() < duration {
                    let key = format!("user{:08}", rng.random_range(0..keys));
                    let value = format!("{}", rng.random::<u64>());
                    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
                    let counter = attempts.clone();
                    let began = Instant::now();
                    client
                        .transact(async move |tx| {
                            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tx.put(key.clone(), value.clone())
                        })
                        .await?;
                    record(&mut p.latency, began.elapsed());
                    p.aborts += attempts.load(std::sync::atomic::Ordering::Relaxed) - 1;
                    p.ops += 1;
                }
                Ok::<Point, Error>(p)
            })
        })
        .collect();
    let mut points = Vec::new();
    for t in tasks {
        points.push(t.await??);
    }
    Ok(Point::merge(points, start.elapsed()))
}
