//! `journaldb-bench cluster`: commits/s and commit latency of one-key updates through the
//! cluster `Client`, at several numbers of concurrent clients, against a local 3-node
//! cluster (each node its own process — this binary re-run as `cluster-node` — with its own
//! gRPC server on 127.0.0.1, journals and RocksDB storage; 3 partitions; `--in-process`
//! runs the nodes inside this process instead). `--replicas 1,3` measures both layouts in
//! one run: single-replica journals (one partition per node, 2 storage replicas), then
//! replicated ones (every partition's journal a Raft group on all three nodes, every node a
//! storage replica), and compares them. `--etcd` adds a 3-member etcd cluster on the same
//! machine doing the same one-key updates (`Put`; [`crate::etcd`]).
//!
//! Budget: a commit is one RPC to the key's adjudicator (group commit of its journal:
//! one fsync per batch) plus commit wait (the bounded-error clock's uncertainty, ~µs
//! here). With many clients each fsync carries many commits, so throughput grows with
//! concurrency until the 2 cores are busy with gRPC and RocksDB work. Replicated, a commit
//! also waits for a follower's fsync (one network round trip and one fsync more), and every
//! node writes every journal: three times the fsyncs and storage writes on the same disk.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use journaldb::Client;
use journaldb_node::{ClusterNode, NodeConfig, NodeEntry};

use crate::embedded::Point;
use crate::load::{free_ports, header, one_key_updates, row};
use crate::report::quantile_us;

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
    /// Run the nodes inside this process instead of one process each.
    #[arg(long)]
    in_process: bool,
    /// Also measure a 3-member etcd cluster (the `etcd` binary: `apt install etcd-server`).
    #[arg(long)]
    etcd: bool,
}

/// Options of the hidden `cluster-node` command: one node of the benchmark's cluster.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The cluster's data directory.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// This node's index (0..3).
    #[arg(long)]
    index: usize,
    /// Replicas of each journal.
    #[arg(long)]
    replicas: usize,
    /// The three nodes' ports on 127.0.0.1.
    #[arg(long, value_delimiter = ',')]
    ports: Vec<u16>,
}

/// One layout's results, by client count.
type Results = Vec<(usize, Point)>;

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
        "cluster benchmark: 3 nodes ({}) on 127.0.0.1, 3 partitions, dir {}, {} keys, {:.1} s \
         per point, {} cores",
        match args.in_process {
            true => "in this process",
            false => "one process each",
        },
        args.dir.display(),
        args.keys,
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut layouts = Vec::new();
    for &replicas in &args.replicas {
        let dir = args.dir.join(format!("replicas-{replicas}"));
        let results = rt.block_on(layout(&args, &dir, replicas, duration))?;
        layouts.push((replicas, results));
    }
    if let (Some((1, single)), Some((3, replicated))) = (layouts.first(), layouts.get(1)) {
        compare(single, replicated);
    }
    if args.etcd {
        let results = rt.block_on(crate::etcd::measure(
            &args.dir.join("etcd"),
            &args.clients,
            args.keys,
            duration,
        ))?;
        if let Some((3, replicated)) = layouts.iter().find(|(r, _)| *r == 3) {
            println!();
            println!("replicated journaldb against etcd (3 members), one-key updates:");
            ratios(replicated, &results, "journaldb/etcd");
        }
    }
    Ok(())
}

/// The issue-14 targets: replicated p50 within 2× of single-replica at every client count,
/// and 256-client throughput at least 0.7× of it.
fn compare(single: &Results, replicated: &Results) {
    println!();
    println!("replicated against single-replica journals:");
    ratios(replicated, single, "replicated/single");
    for ((clients, s), (_, r)) in single.iter().zip(replicated) {
        let p50 = quantile_us(&r.latency, 0.5) / quantile_us(&s.latency, 0.5);
        let met = if p50 <= 2.0 { "met" } else { "MISSED" };
        println!("target {met}: {clients} clients: replicated p50 ≤ 2× ({p50:.2}×)");
        if *clients == 256 {
            let rate = r.rate() / s.rate();
            let met = if rate >= 0.7 { "met" } else { "MISSED" };
            println!("target {met}: 256 clients: replicated throughput ≥ 0.7× ({rate:.2}×)");
        }
    }
}

/// Prints `a` against `b`, point by point: throughput and latency ratios.
pub(crate) fn ratios(a: &Results, b: &Results, label: &str) {
    println!(
        "{:>8} {:>22} {:>16} {:>16}",
        "clients",
        format!("commits/s {label}"),
        "p50 ratio",
        "p99 ratio"
    );
    for ((clients, x), (_, y)) in a.iter().zip(b) {
        println!(
            "{clients:>8} {:>22.2} {:>16.2} {:>16.2}",
            x.rate() / y.rate(),
            quantile_us(&x.latency, 0.5) / quantile_us(&y.latency, 0.5),
            quantile_us(&x.latency, 0.99) / quantile_us(&y.latency, 0.99)
        );
    }
}

/// Measures every client count on a fresh cluster whose journals have `replicas` replicas.
async fn layout(
    args: &Args,
    dir: &std::path::Path,
    replicas: usize,
    duration: Duration,
) -> anyhow::Result<Results> {
    let (nodes, client) = start(dir, replicas, args.in_process).await?;
    println!();
    match replicas {
        1 => println!("single-replica journals (one partition per node, 2 storage replicas):"),
        _ => println!(
            "replicated journals (each partition a Raft group on all 3 nodes, 3 storage \
             replicas):"
        ),
    }
    println!("one-key updates (put + commit, durable), conflicts retried by transact:");
    header();
    let mut results = Vec::new();
    for &clients in &args.clients {
        let p = updates(&client, clients, args.keys, duration).await?;
        row(clients, &p);
        results.push((clients, p));
    }
    nodes.stop().await?;
    if replicas == 1
        && let Some((_, p)) = results.iter().find(|(c, _)| *c == 256)
    {
        let met = if p.rate() >= 10_000.0 {
            "met"
        } else {
            "MISSED"
        };
        println!("target {met}: 256 clients: ≥ 10,000 commits/s of one-key updates");
    }
    Ok(results)
}

/// The nodes of a running benchmark cluster.
enum Nodes {
    InProcess(Vec<ClusterNode>),
    /// Child processes; each stops when its standard input closes.
    Processes(Vec<std::process::Child>),
}

impl Nodes {
    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Nodes::InProcess(nodes) => {
                for node in nodes {
                    node.shutdown().await?;
                }
            }
            Nodes::Processes(children) => {
                for mut child in children {
                    drop(child.stdin.take());
                    let waited = tokio::task::spawn_blocking(move || {
                        let status = child.wait();
                        (child, status)
                    })
                    .await?;
                    waited.1.context("waiting for a node process")?;
                }
            }
        }
        Ok(())
    }
}

/// The configuration of node `i` of the benchmark cluster.
fn node_config(dir: &std::path::Path, i: usize, replicas: usize, ports: &[u16]) -> NodeConfig {
    let replicated = replicas > 1;
    let entries = ports
        .iter()
        .enumerate()
        .map(|(n, port)| NodeEntry {
            name: format!("n{n}"),
            listen: format!("127.0.0.1:{port}"),
            address: None,
            partitions: match replicated {
                true => vec![0, 1, 2],
                false => vec![n as u32],
            },
            storage: replicated || n < 2,
        })
        .collect();
    NodeConfig::new(
        format!("n{i}"),
        dir.join(format!("n{i}")),
        3,
        replicated.then_some(0xbe7c),
        entries,
    )
}

/// `cluster-node`: runs one node of the benchmark's cluster until standard input closes.
pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    if args.ports.len() != 3 || args.index >= 3 {
        bail!("--ports takes the three nodes' ports, --index 0 to 2");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config = node_config(&args.dir, args.index, args.replicas, &args.ports);
        let listener = tokio::net::TcpListener::bind(&config.me().listen).await?;
        let node = ClusterNode::bootstrap(config, listener).await?;
        tokio::task::spawn_blocking(|| {
            let mut buf = [0u8; 64];
            while std::io::Read::read(&mut std::io::stdin(), &mut buf).is_ok_and(|n| n > 0) {}
        })
        .await?;
        node.shutdown().await?;
        Ok(())
    })
}

async fn start(
    dir: &std::path::Path,
    replicas: usize,
    in_process: bool,
) -> anyhow::Result<(Nodes, Client)> {
    let (nodes, url) = if in_process {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
        }
        let ports = listeners
            .iter()
            .map(|l| Ok(l.local_addr()?.port()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = node_config(dir, i, replicas, &ports);
            nodes.push(ClusterNode::bootstrap(config, listener).await?);
        }
        let url = format!("http://{}", nodes[0].addr());
        (Nodes::InProcess(nodes), url)
    } else {
        let ports = free_ports(3)?;
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        std::fs::create_dir_all(dir)?;
        let mut children = Vec::new();
        for i in 0..3 {
            let log = std::fs::File::create(dir.join(format!("n{i}.log")))?;
            let child = std::process::Command::new(std::env::current_exe()?)
                .arg("cluster-node")
                .arg("--dir")
                .arg(dir)
                .args(["--index", &i.to_string()])
                .args(["--replicas", &replicas.to_string()])
                .args(["--ports", &list])
                .stdin(std::process::Stdio::piped())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting a node process")?;
            children.push(child);
        }
        (
            Nodes::Processes(children),
            format!("http://127.0.0.1:{}", ports[0]),
        )
    };
    let mut client = None;
    for _ in 0..100 {
        match Client::connect(&url).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let client = client.with_context(|| format!("no node answers at {url}"))?;
    // Until every partition serves (replicated: its group has a leader that took it over).
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

/// One-key updates through the journaldb `Client`, conflicts retried by `transact`.
async fn updates(
    client: &Client,
    clients: usize,
    keys: u64,
    duration: Duration,
) -> anyhow::Result<Point> {
    let client = client.clone();
    one_key_updates(clients, keys, duration, move |key, value| {
        let client = client.clone();
        async move {
            let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counter = attempts.clone();
            client
                .transact(async move |tx| {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tx.put(key.clone(), value.clone())
                })
                .await?;
            Ok(attempts.load(std::sync::atomic::Ordering::Relaxed) - 1)
        }
    })
    .await
}
