//! `journaldb cluster start | stop | status`: a local cluster on one machine for trying
//! journaldb out. `start` writes one configuration per node under DIR (by default, for 3
//! to 7 nodes, every partition's journal replicated on every node, each node a storage
//! replica; with `--replicas R` below the node count, every journal on the first R nodes
//! and the others storage replicas only; with `--replicas 1`, partitions spread
//! round-robin and the first two nodes storage replicas), spawns `journaldb serve` for each
//! with its log in DIR, waits until every node answers its health check and every
//! partition's adjudicator answers (its group has a leader), and prints the
//! address to give `--cluster`. `stop` sends SIGTERM to each node and waits for it to exit;
//! `status` checks each node's health.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use journaldb_node::config::MAX_REPLICAS;
use journaldb_node::{NodeConfig, NodeEntry};

/// Storage replicas of a launched cluster (of the whole key space).
const STORAGE_REPLICAS: usize = 2;

pub(crate) fn config_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.toml"))
}

pub(crate) fn pid_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

/// The node names of the cluster in `dir`, from its configuration files.
pub(crate) fn node_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!(
            "{} holds no cluster (no node configuration files)",
            dir.display()
        );
    }
    Ok(names)
}

pub(crate) fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A connection to the node at `url`, with short deadlines; `None` if it does not answer.
pub(crate) async fn connect(url: &str) -> Option<tonic::transport::Channel> {
    connect_with(url, Duration::from_secs(1)).await
}

/// A connection to the node at `url` whose requests may take up to `timeout`; `None` if
/// it does not answer.
pub(crate) async fn connect_with(
    url: &str,
    timeout: Duration,
) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .connect()
        .await
        .ok()
}

async fn healthy(url: &str) -> bool {
    let Some(channel) = connect(url).await else {
        return false;
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    client.check(check).await.is_ok_and(|r| {
        r.into_inner().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    })
}

/// Whether every partition's adjudicator answers, asked through the node at `url` (with
/// replicated journals: whether every group has a leader that took its partition over).
/// Asks for a promise at τ 0, which changes nothing.
async fn serves_every_partition(url: &str, partitions: u32) -> bool {
    use journaldb_proto::pb::{
        PromiseRequest, adjudicator_service_client::AdjudicatorServiceClient,
    };
    let Some(channel) = connect(url).await else {
        return false;
    };
    let mut client = AdjudicatorServiceClient::new(channel);
    for partition in 0..partitions {
        if client
            .promise(PromiseRequest { partition, ts: 0 })
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `cluster start`: a fresh cluster, or the stopped one in `dir` again (with its own map:
/// its data is laid out by it).
pub async fn start(
    nodes: usize,
    partitions: Option<u32>,
    replicas: Option<usize>,
    dir: &Path,
) -> anyhow::Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let replicas = replicas.unwrap_or(match nodes {
        3..=MAX_REPLICAS => nodes,
        n if n > MAX_REPLICAS => 3,
        _ => 1,
    });
    if replicas == 0 || replicas > nodes {
        bail!("--replicas {replicas}: between 1 and the node count ({nodes})");
    }
    if replicas > MAX_REPLICAS {
        bail!("--replicas {replicas}: at most {MAX_REPLICAS}");
    }
    let partitions = partitions.unwrap_or(nodes as u32);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let existing = node_names(dir).ok();
    if let Some(names) = &existing {
        for name in names {
            if let Ok(pid) = std::fs::read_to_string(pid_path(dir, name))
                && alive(pid.trim())
            {
                bail!(
                    "{} already runs a cluster (node {name}, pid {})",
                    dir.display(),
                    pid.trim()
                );
            }
        }
    }
    // Only a new cluster's nodes create their replica logs.
    let bootstrap = existing.is_none();
    let (entries, cluster_id) = match existing {
        Some(names) => {
            let first = NodeConfig::load(&config_path(dir, &names[0]))?;
            let had = first.replicas(0).len();
            if first.nodes.len() != nodes || first.partitions != partitions || had != replicas {
                bail!(
                    "{} holds a cluster of {} nodes, {} partitions and {had} replicas; start it \
                     with those, or use another --dir",
                    dir.display(),
                    first.nodes.len(),
                    first.partitions
                );
            }
            (first.nodes.clone(), first.cluster_id())
        }
        None => (fresh_map(nodes, partitions, replicas)?, new_cluster_id()?),
    };
    for e in &entries {
        write_config(dir, partitions, cluster_id, e, &entries)?;
        spawn(dir, &e.name, bootstrap.then_some("--bootstrap"))?;
    }
    for _ in 0..300 {
        let mut up = 0;
        for e in &entries {
            if healthy(&e.url()).await {
                up += 1;
            }
        }
        if up == entries.len() && serves_every_partition(&entries[0].url(), partitions).await {
            let storage = entries.iter().filter(|e| e.storage).count();
            println!(
                "cluster of {nodes} nodes, {partitions} partitions ({replicas} replicas of \
                 each journal), {storage} storage replicas is up in {}",
                dir.display()
            );
            for e in &entries {
                let storage = if e.storage { "  storage" } else { "" };
                println!(
                    "  {}  {}  partitions {:?}{storage}",
                    e.name,
                    e.url(),
                    e.partitions
                );
            }
            println!("client address: {}", entries[0].url());
            println!(
                "try: journaldb --cluster {} put hello world",
                entries[0].url()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the cluster did not become healthy within 30 s; see the logs in {}",
        dir.display()
    )
}

/// A new map: `nodes` nodes on free ports. Replicated (`replicas` = `nodes`): every
/// partition on every node, every node a storage replica. Otherwise partitions
/// round-robin, the first [`STORAGE_REPLICAS`] nodes storage replicas.
/// Every journal on the first `replicas` nodes if replicated (the others storage replicas
/// only), else partition `p` on node `p mod nodes`.
fn fresh_map(nodes: usize, partitions: u32, replicas: usize) -> anyhow::Result<Vec<NodeEntry>> {
    let replicated = replicas > 1;
    (0..nodes)
        .map(|i| {
            Ok(NodeEntry {
                name: format!("n{i}"),
                listen: format!("127.0.0.1:{}", free_port()?),
                address: None,
                partitions: (0..partitions)
                    .filter(|p| match replicated {
                        true => i < replicas,
                        false => *p as usize % nodes == i,
                    })
                    .collect(),
                storage: replicated || i < STORAGE_REPLICAS.min(nodes),
            })
        })
        .collect()
}

/// A random cluster id (from the OS: the launcher runs real processes, never in a
/// simulation), 63 bits, as TOML integers are signed.
fn new_cluster_id() -> anyhow::Result<u64> {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the cluster id")?;
    Ok(u64::from_le_bytes(bytes) >> 1)
}

/// Writes node `e`'s configuration in a cluster of `entries` (its data in DIR/NAME).
pub(crate) fn write_config(
    dir: &Path,
    partitions: u32,
    cluster_id: u64,
    e: &NodeEntry,
    entries: &[NodeEntry],
) -> anyhow::Result<()> {
    let config = NodeConfig::new(
        e.name.clone(),
        PathBuf::from(&e.name),
        partitions,
        Some(cluster_id),
        entries.to_vec(),
    );
    config
        .check()
        .map_err(|p| anyhow::anyhow!("generated configuration: {}", p.join("; ")))?;
    std::fs::write(config_path(dir, &e.name), render(&config))?;
    Ok(())
}

/// Starts `journaldb serve` on node `name`'s configuration in DIR (with `flag`, if given),
/// logging to DIR/NAME.log.
pub(crate) fn spawn(dir: &Path, name: &str, flag: Option<&str>) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(config_path(dir, name))
        .args(flag)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting node {name}"))?;
    std::fs::write(pid_path(dir, name), child.id().to_string())?;
    Ok(())
}

/// A configuration as TOML.
fn render(config: &NodeConfig) -> String {
    let mut out = format!(
        "node = {:?}\ndata_dir = {:?}\npartitions = {}\ntopology_version = {}\n",
        config.node,
        config.data_dir.display().to_string(),
        config.partitions,
        config.topology_version
    );
    if let Some(id) = config.cluster_id {
        out.push_str(&format!("cluster_id = {id}\n"));
    }

    for n in &config.nodes {
        out.push_str(&format!(
            "\n[[nodes]]\nname = {:?}\nlisten = {:?}\npartitions = {:?}\nstorage = {}\n",
            n.name, n.listen, n.partitions, n.storage
        ));
    }
    out
}

/// `cluster stop`.
pub async fn stop(dir: &Path) -> anyhow::Result<()> {
    let mut stopped = 0;
    for name in node_names(dir)? {
        let Ok(pid) = std::fs::read_to_string(pid_path(dir, &name)) else {
            continue;
        };
        let pid = pid.trim().to_owned();
        if alive(&pid) {
            Command::new("kill").args(["-TERM", &pid]).status()?;
            let mut waited = 0;
            while alive(&pid) {
                if waited == 200 {
                    bail!("node {name} (pid {pid}) did not stop within 20 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                waited += 1;
            }
            stopped += 1;
        }
        std::fs::remove_file(pid_path(dir, &name))?;
    }
    println!("stopped {stopped} nodes");
    Ok(())
}

/// `cluster status`; exit code 1 if any node is down.
pub async fn status(dir: &Path) -> anyhow::Result<bool> {
    let mut all_up = true;
    for name in node_names(dir)? {
        let config = NodeConfig::load(&config_path(dir, &name))?;
        let url = config.me().url();
        let up = healthy(&url).await;
        all_up &= up;
        println!("{name}\t{url}\t{}", if up { "serving" } else { "down" });
    }
    Ok(all_up)
}
