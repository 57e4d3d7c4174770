//! A cluster's disk under a steady update workload levels off: storage replicas checkpoint
//! and collect versions older than the retention window, and each journal drops the
//! segments every replica has checkpointed (ARCHITECTURE §5 truncation, §6 GC). Then a
//! restart of every node resumes from what is left: the journals' start is gone. A failed
//! maintenance round is retried, not fatal; a start that fails halfway leaves no task
//! running.

use std::path::Path;
use std::time::Duration;

use journaldb::{Client, JournalOptions};
use journaldb_node::{ClusterNode, NodeConfig, NodeEntry, NodeEnv};

use crate::rt;

const KEYS: usize = 32;
const VALUE_BYTES: usize = 1024;

/// Two nodes, a partition and a storage replica each, with windows short enough that a
/// test sees many maintenance rounds, and small journal segments.
fn configs(dir: &Path, addrs: &[std::net::SocketAddr]) -> Vec<NodeConfig> {
    let nodes: Vec<NodeEntry> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| NodeEntry {
            name: format!("n{i}"),
            listen: addr.to_string(),
            address: None,
            partitions: vec![i as u32],
            storage: true,
        })
        .collect();
    (0..addrs.len())
        .map(|i| NodeConfig {
            node: format!("n{i}"),
            data_dir: dir.join(format!("n{i}")),
            partitions: addrs.len() as u32,
            topology_version: 1,
            cluster_id: None,
            nodes: nodes.clone(),
            tls: None,
            vote_timeout_ms: None,
            storage_cache_mib: None,
            max_txn_age_ms: Some(200),
            retention_ms: Some(400),
            checkpoint_interval_ms: Some(100),
        })
        .collect()
}

fn env() -> NodeEnv {
    NodeEnv {
        journal: JournalOptions {
            segment_bytes: 64 * 1024,
            preallocate_bytes: 4096,
            ..JournalOptions::default()
        },
        ..NodeEnv::default()
    }
}

/// Starts one node per config on the listeners.
async fn start(
    configs: &[NodeConfig],
    listeners: Vec<tokio::net::TcpListener>,
) -> Vec<ClusterNode> {
    let mut nodes = Vec::new();
    for (config, listener) in configs.iter().zip(listeners) {
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let node = ClusterNode::start_with(config.clone(), env(), incoming, addr)
            .await
            .unwrap();
        nodes.push(node);
    }
    nodes
}

/// Bytes of every file under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Eight writers overwrite the keys round after round for `period`; returns how many
/// commits they made.
async fn update_for(client: &Client, round: &mut u64, period: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + period;
    let mut commits = 0;
    while tokio::time::Instant::now() < deadline {
        let mut writers = Vec::new();
        for _ in 0..8 {
            *round += 1;
            let r = *round;
            let client = client.clone();
            writers.push(tokio::spawn(async move {
                let value = format!("{r:08}").repeat(VALUE_BYTES / 8);
                let key = format!("key{:02}", r as usize % KEYS);
                client
                    .transact(async move |tx| tx.put(key.clone(), value.clone()))
                    .await
                    .unwrap();
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        commits += 8;
    }
    commits
}

#[test]
fn a_cluster_under_steady_updates_keeps_its_disk_usage_level() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut listeners = Vec::new();
        for _ in 0..2 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let configs = configs(dir.path(), &addrs);
        let nodes = start(&configs, listeners).await;
        let client = Client::connect(&format!("http://{}", addrs[0]))
            .await
            .unwrap();

        let mut round = 0;
        let mut usage = Vec::new();
        let mut written = Vec::new();
        for _ in 0..8 {
            let commits = update_for(&client, &mut round, Duration::from_millis(1_500)).await;
            written.push(commits * VALUE_BYTES as u64);
            usage.push(disk_usage(dir.path()));
        }
        eprintln!("disk usage after each phase: {usage:?}; value bytes written: {written:?}");
        // Without maintenance every phase adds what it wrote — more than a journal block
        // per commit, and each version — so the disk grows by about the same amount each
        // phase (measured: by 1.2 MiB a phase, to 10 MiB). Levelled off: the most it holds
        // in the last four phases is within a quarter of the most in the first four (what
        // it holds between two rounds wobbles: measured 540–630 KiB).
        assert!(
            written.iter().all(|w| *w >= 100 * VALUE_BYTES as u64),
            "too few commits to show anything: {written:?}"
        );
        let (early, late) = usage.split_at(4);
        let (early, late) = (early.iter().max().unwrap(), late.iter().max().unwrap());
        assert!(
            *late < early + early / 4,
            "disk usage keeps growing: {usage:?} (value bytes written {written:?})"
        );

        // Restarted, every node recovers from its truncated journals and checkpoints: the
        // newest value of every key is there.
        for node in nodes {
            node.shutdown().await.unwrap();
        }
        let mut listeners = Vec::new();
        for addr in &addrs {
            listeners.push(tokio::net::TcpListener::bind(addr).await.unwrap());
        }
        let nodes = start(&configs, listeners).await;
        let client = Client::connect(&format!("http://{}", addrs[1]))
            .await
            .unwrap();
        let last = round;
        for r in last + 1 - KEYS as u64..=last {
            let key = format!("key{:02}", r as usize % KEYS);
            let got = client
                .transact(async |tx| tx.get(key.clone()).await)
                .await
                .unwrap();
            let expect = format!("{r:08}").repeat(VALUE_BYTES / 8);
            assert_eq!(got.as_deref(), Some(expect.as_bytes()), "{key}");
        }
        // Commits go on after the restart.
        update_for(&client, &mut round, Duration::from_millis(200)).await;
        for node in nodes {
            node.shutdown().await.unwrap();
        }
    });
}

/// A storage replica whose checkpoint fails (its engine cannot write) reports the error
/// and tries again next round; the node does not stop, and once the engine writes again
/// the rounds succeed and commits go on.
#[test]
fn a_failed_maintenance_round_is_reported_and_retried() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = configs(dir.path(), &[addr]).remove(0);
        let faults = journaldb_storage::WriteFaults::default();
        let env = NodeEnv {
            storage_faults: Some(faults.clone()),
            ..env()
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let node = ClusterNode::start_with(config, env, incoming, addr)
            .await
            .unwrap();
        let client = Client::connect(&format!("http://{addr}")).await.unwrap();
        let mut round = 0;
        update_for(&client, &mut round, Duration::from_millis(200)).await;

        faults.set_failing(true);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let error = node.take_maintenance_error();
        assert!(
            error
                .as_ref()
                .is_some_and(|e| e.to_string().contains("injected")),
            "{error:?}"
        );
        assert!(!node.is_failed(), "a failed round does not stop the node");

        faults.set_failing(false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.take_maintenance_error(); // a round that began before the engine recovered
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            node.take_maintenance_error().is_none(),
            "rounds succeed again"
        );
        assert!(!node.is_failed());
        assert!(update_for(&client, &mut round, Duration::from_millis(200)).await > 0);
        node.shutdown().await.unwrap();
    });
}

/// A start that fails halfway (the storage engine cannot open, after the partitions and
/// their tasks started) leaves nothing running: the journals' directory locks are
/// released, so the next start on the same directory succeeds.
#[test]
fn a_start_that_fails_halfway_leaves_nothing_running() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = configs(dir.path(), &[addr]).remove(0);
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let in_the_way = config.data_dir.join("storage");
        std::fs::write(&in_the_way, b"not a RocksDB directory").unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let failed = ClusterNode::start_with(config.clone(), env(), incoming, addr).await;
        assert!(failed.is_err(), "RocksDB cannot open a file");

        std::fs::remove_file(&in_the_way).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let node = ClusterNode::start_with(config, env(), incoming, addr)
            .await
            .unwrap();
        node.shutdown().await.unwrap();
    });
}

/// Three nodes holding a replica of every journal and a storage replica each, with short
/// windows (long enough that a test reads every key at one snapshot within it).
fn replicated_configs(dir: &Path, entries: &[NodeEntry]) -> Vec<NodeConfig> {
    (0..entries.len())
        .map(|i| NodeConfig {
            max_txn_age_ms: Some(1_000),
            retention_ms: Some(2_000),
            checkpoint_interval_ms: Some(100),
            ..NodeConfig::new(
                entries[i].name.clone(),
                dir.join(&entries[i].name),
                2,
                Some(0x7e57),
                entries.to_vec(),
            )
        })
        .collect()
}

/// The first Lsn each partition's replica on the node at `url` still holds.
async fn first_lsns(url: &str) -> Option<Vec<u64>> {
    use journaldb_proto::pb;
    use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
    let mut client = ClusterServiceClient::connect(url.to_owned()).await.ok()?;
    let reply = client.replicas(pb::ReplicasRequest {}).await.ok()?;
    Some(
        reply
            .into_inner()
            .replicas
            .iter()
            .filter(|r| r.group > 0)
            .map(|r| r.first_lsn)
            .collect(),
    )
}

/// Every key's newest value as of `at`, in one scan of the storage replica at `url` alone.
async fn stored_at(url: &str, at: u64) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    use journaldb_proto::pb;
    use journaldb_proto::pb::storage_service_client::StorageServiceClient;
    let mut client = StorageServiceClient::connect(url.to_owned()).await.unwrap();
    let request = pb::ScanRequest {
        range: Some(pb::KeyRange {
            start: "key".into(),
            end: Some("kez".into()),
        }),
        at,
        limit: 1_000,
        ..pb::ScanRequest::default()
    };
    let reply = client.scan(request).await.unwrap().into_inner();
    assert!(reply.resume.is_none());
    reply.rows.into_iter().map(|r| (r.key, r.value)).collect()
}

/// Waits until the storage replica at `url` has every version at or below `at`.
async fn caught_up(url: &str, at: u64) {
    use journaldb_proto::pb;
    use journaldb_proto::pb::storage_service_client::StorageServiceClient;
    let mut client = StorageServiceClient::connect(url.to_owned()).await.unwrap();
    for _ in 0..600 {
        let reply = client.watermark(pb::WatermarkRequest {}).await;
        if reply.is_ok_and(|r| r.into_inner().watermark >= at) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not catch up with {at} in 60 s");
}

/// Waits until `client` commits (the groups have leaders).
async fn settle(client: &Client) {
    for _ in 0..200 {
        let put = client.transact(async |tx| tx.put("settle", "yes"));
        if put.await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no commit for 10 s");
}

/// Replicated journals are truncated too — on every replica, by a point their leader
/// proposes in the log — and a node that replaces a lost one then cannot rebuild its
/// storage from the journals: it starts from a copy of another storage replica's
/// versions, and serves what the others serve.
#[test]
fn replicated_journals_are_truncated_and_a_replacement_starts_from_a_storage_copy() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut listeners = Vec::new();
        for _ in 0..4 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let entries: Vec<NodeEntry> = (0..3)
            .map(|i| NodeEntry {
                name: format!("n{i}"),
                listen: addrs[i].to_string(),
                address: None,
                partitions: vec![0, 1],
                storage: true,
            })
            .collect();
        let configs = replicated_configs(dir.path(), &entries);
        let mut nodes = Vec::new();
        let spare = listeners.pop().unwrap();
        for (config, listener) in configs.iter().zip(listeners) {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let env = NodeEnv {
                bootstrap: true,
                ..env()
            };
            let addr = config.me().listen.parse().unwrap();
            nodes.push(
                ClusterNode::start_with(config.clone(), env, incoming, addr)
                    .await
                    .unwrap(),
            );
        }
        let client = Client::connect(&entries[0].url()).await.unwrap();
        settle(&client).await;
        let mut round = 0;
        let mut truncated = false;
        for _ in 0..20 {
            update_for(&client, &mut round, Duration::from_millis(500)).await;
            let mut firsts = Vec::new();
            for e in &entries {
                firsts.extend(first_lsns(&e.url()).await.unwrap());
            }
            if firsts.iter().all(|f| *f > 1) {
                truncated = true;
                break;
            }
        }
        assert!(
            truncated,
            "every replica of every journal drops its first records"
        );

        // n2 is lost with its disk; n3 replaces it.
        let lost = nodes.pop().unwrap();
        lost.shutdown().await.unwrap();
        std::fs::remove_dir_all(dir.path().join("n2")).unwrap();
        let mut metadata = None;
        for _ in 0..100 {
            use journaldb_proto::pb;
            use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
            let Ok(mut c) = ClusterServiceClient::connect(entries[0].url()).await else {
                continue;
            };
            let request = pb::ReplaceNodeRequest {
                old: "n2".into(),
                new: "n3".into(),
                address: addrs[3].to_string(),
            };
            match c.replace_node(request).await {
                Ok(reply) => {
                    metadata = Some(reply.into_inner());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(metadata.is_some(), "the replacement is recorded");
        let mut entries = entries;
        entries[2] = NodeEntry {
            name: "n3".into(),
            listen: addrs[3].to_string(),
            ..entries[2].clone()
        };
        let n3 = replicated_configs(dir.path(), &entries).remove(2);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(spare);
        let joining = NodeEnv {
            join: true,
            ..env()
        };
        nodes.push(
            ClusterNode::start_with(n3, joining, incoming, addrs[3])
                .await
                .unwrap(),
        );

        // Writes go on; then n3's storage alone answers what n0's answers.
        settle(&client).await;
        update_for(&client, &mut round, Duration::from_millis(300)).await;
        let clock = journaldb_proto::SystemClock::new();
        let now = || journaldb_proto::Clock::now(&clock).latest.as_nanos();
        let n3_url = entries[2].url();
        caught_up(&n3_url, now()).await;
        let at = now();
        assert_eq!(
            stored_at(&n3_url, at).await,
            stored_at(&entries[0].url(), at).await
        );
        let newest = stored_at(&n3_url, at).await;
        let expected: Vec<(bytes::Bytes, bytes::Bytes)> = (round + 1 - KEYS as u64..=round)
            .map(|r| {
                let key = format!("key{:02}", r as usize % KEYS);
                let value = format!("{r:08}").repeat(VALUE_BYTES / 8);
                (key.into(), value.into())
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        assert_eq!(newest, expected);

        // n0 loses its storage alone (its replica logs survive): restarted, it copies
        // again — its own replicas no longer hold the journals' first records.
        let n0 = nodes.remove(0);
        n0.shutdown().await.unwrap();
        std::fs::remove_dir_all(dir.path().join("n0").join("storage")).unwrap();
        let config = replicated_configs(dir.path(), &entries).remove(0);
        let listener = tokio::net::TcpListener::bind(addrs[0]).await.unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        nodes.push(
            ClusterNode::start_with(config, env(), incoming, addrs[0])
                .await
                .unwrap(),
        );
        caught_up(&entries[0].url(), now()).await;
        let at = now();
        assert_eq!(stored_at(&entries[0].url(), at).await, expected);
        for node in nodes {
            node.shutdown().await.unwrap();
        }
    });
}
