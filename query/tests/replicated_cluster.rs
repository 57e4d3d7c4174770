//! A replicated cluster in the test process (issue 14): three nodes on 127.0.0.1, every
//! partition's journal a Raft group on all three, every node a storage replica, and a
//! fourth node that is only a storage replica (it tails the journals from their voters).
//! Under a steady bank workload each replica in turn is shut down and started again: the
//! total never changes, every acknowledged transfer is present — on the fourth node too,
//! whose feeds move to another voter when theirs goes away — commits resume while the node
//! is away, and the node catches up when it is back.
//!
//! (The kill -9 of node processes is the multi-process test's; here a node stops through
//! `shutdown`, which drops what it had in flight as a crash would, but syncs nothing more.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use journaldb::{Client, ClientOptions, Error, Transaction};

use journaldb_node::{ClusterNode, NodeConfig, NodeEntry};
use journaldb_proto::pb;
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::status::LEADER;
use journaldb_proto::{Clock, SystemClock};

use crate::rt;

/// Nodes holding a replica of every journal; one more node is a storage replica only.
const NODES: usize = 3;
const PARTITIONS: u32 = 2;
const ACCOUNTS: usize = 8;
const OPENING_BALANCE: u64 = 100;

fn account(i: usize) -> String {
    format!("account/{i}")
}

fn config(dir: &std::path::Path, entries: &[NodeEntry], i: usize) -> NodeConfig {
    NodeConfig::new(
        format!("n{i}"),
        dir.join(format!("n{i}")),
        PARTITIONS,
        Some(0x7e57),
        entries.to_vec(),
    )
}

async fn start(config: NodeConfig, addr: &str) -> ClusterNode {
    // The port was this node's before; it may take a moment to be free again.
    for _ in 0..100 {
        if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
            return ClusterNode::start(config, listener).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} did not become free");
}

async fn balance(tx: &Transaction, i: usize) -> Result<u64, Error> {
    let value = tx.get(account(i)).await?.expect("every account exists");
    Ok(String::from_utf8_lossy(&value).parse().unwrap())
}

/// Moves 1 from one account to another and records the transfer under its own key, so the
/// end can check that every acknowledged one is there.
async fn transfer(client: &Client, from: usize, to: usize, id: &str) -> Result<(), Error> {
    let marker = format!("transfer/{id}");
    client
        .transact(async move |tx| {
            let (a, b) = (balance(tx, from).await?, balance(tx, to).await?);
            if a == 0 {
                return Ok(());
            }
            tx.put(account(from), (a - 1).to_string())?;
            tx.put(account(to), (b + 1).to_string())?;
            tx.put(marker.clone(), "done")
        })
        .await
        .map(drop)
}

/// The sum of every account, read in one snapshot.
async fn total(client: &Client) -> u64 {
    let tx = client.begin();
    let mut sum = 0;
    for i in 0..ACCOUNTS {
        sum += balance(&tx, i).await.unwrap();
    }
    sum
}

#[test]
fn a_replicated_cluster_loses_no_commit_and_keeps_serving_while_any_one_node_is_down() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut listeners = Vec::new();
        for _ in 0..=NODES {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let entries: Vec<NodeEntry> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| NodeEntry {
                name: format!("n{i}"),
                listen: l.local_addr().unwrap().to_string(),
                address: None,
                partitions: match i < NODES {
                    true => (0..PARTITIONS).collect(),
                    false => Vec::new(),
                },
                storage: true,
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let node = ClusterNode::bootstrap(config(dir.path(), &entries, i), listener).await;
            nodes.push(Some(node.unwrap()));
        }
        let options = ClientOptions::default().with_request_timeout(Duration::from_secs(3));
        let client = Client::connect_with(&entries[0].url(), options)
            .await
            .unwrap();

        // The first commit may wait for the groups' first elections.
        let mut opened = false;
        for _ in 0..100 {
            let opening = client.transact(async |tx| {
                for i in 0..ACCOUNTS {
                    tx.put(account(i), OPENING_BALANCE.to_string())?;
                }
                Ok(())
            });
            match opening.await {
                Ok(()) => {
                    opened = true;
                    break;
                }
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("opening the accounts: {e}"),
            }
        }
        assert!(opened, "no leader for the accounts within 10 s");

        let mut acknowledged = Vec::new();
        for victim in 0..NODES {
            // Transfers run throughout: before, while and after the victim is down.
            let running = Arc::new(AtomicBool::new(true));
            let workers: Vec<_> = (0..2)
                .map(|w| {
                    let (client, running) = (client.clone(), running.clone());
                    tokio::spawn(async move {
                        let (mut done, mut n) = (Vec::new(), 0);
                        while running.load(Ordering::Relaxed) {
                            let id = format!("{victim}-{w}-{n}");
                            let (from, to) = ((n * 3 + w) % ACCOUNTS, (n * 5 + w + 1) % ACCOUNTS);
                            n += 1;
                            let begun = tokio::time::Instant::now();
                            if from != to && transfer(&client, from, to, &id).await.is_ok() {
                                done.push((id, begun, tokio::time::Instant::now()));
                            }
                        }
                        done
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let down_at = tokio::time::Instant::now();
            nodes[victim].take().unwrap().shutdown().await.unwrap();
            // The storage-only node serves what is committed while the victim is away:
            // its feeds that tailed the victim moved to another voter.
            let key = format!("while n{victim} is down");
            let written = tokio::time::Instant::now();
            client
                .transact(async |tx| tx.put(key.clone(), "here"))
                .await
                .unwrap();
            let at = SystemClock::new().now().latest.as_nanos();
            let mut storage = StorageServiceClient::connect(entries[NODES].url())
                .await
                .unwrap();
            let value = tokio::time::timeout(Duration::from_secs(2), read(&mut storage, key, at))
                .await
                .expect("the storage-only node serves fresh reads while a voter is down");
            assert_eq!(value.as_deref(), Some(&b"here"[..]));
            tokio::time::sleep(Duration::from_secs(3).saturating_sub(written.elapsed())).await;
            nodes[victim] = Some(
                start(
                    config(dir.path(), &entries, victim),
                    &entries[victim].listen,
                )
                .await,
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            running.store(false, Ordering::Relaxed);
            // How long after the node went down the first transfer that began afterwards
            // was acknowledged: a new leader, where the node led, within the election.
            let mut resumed = None;
            for worker in workers {
                for (id, begun, done) in worker.await.unwrap() {
                    if begun > down_at {
                        let after = done - down_at;
                        resumed = Some(resumed.map_or(after, |r: Duration| r.min(after)));
                    }
                    acknowledged.push(id);
                }
            }
            eprintln!(
                "n{victim} down: commits resumed after {resumed:?}; {} acknowledged so far",
                acknowledged.len()
            );
            let resumed = resumed.expect("no transfer committed while a node was down");
            assert!(
                resumed < Duration::from_secs(10),
                "commits resumed after {resumed:?}"
            );
            assert_eq!(total(&client).await, OPENING_BALANCE * ACCOUNTS as u64);
        }

        // Every acknowledged transfer is there, read from each node's own storage replica:
        // the restarted ones caught up, and the storage-only one followed every voter.
        let at = SystemClock::new().now().latest.as_nanos();
        for entry in &entries {
            let mut storage = StorageServiceClient::connect(entry.url()).await.unwrap();
            let mut sum = 0;
            for i in 0..ACCOUNTS {
                let value = read(&mut storage, account(i), at).await;
                sum += String::from_utf8_lossy(&value.unwrap())
                    .parse::<u64>()
                    .unwrap();
            }
            assert_eq!(sum, OPENING_BALANCE * ACCOUNTS as u64, "{}", entry.name);
            for id in &acknowledged {
                let marker = read(&mut storage, format!("transfer/{id}"), at).await;
                assert!(
                    marker.is_some(),
                    "{}: acknowledged transfer {id} is missing",
                    entry.name
                );
            }
        }
        assert!(acknowledged.len() > 10, "{} transfers", acknowledged.len());
        assert_one_leader_named_by_the_others(&entries[..NODES]).await;
        for node in nodes.into_iter().flatten() {
            node.shutdown().await.unwrap();
        }
    });
}

/// `key` at `at` from one storage replica, retrying while it catches up.
async fn read(
    storage: &mut StorageServiceClient<tonic::transport::Channel>,
    key: String,
    at: u64,
) -> Option<Bytes> {
    for _ in 0..100 {
        let request = pb::GetRequest {
            key: Bytes::from(key.clone()),
            at,
        };
        match storage.get(request).await {
            Ok(reply) => return reply.into_inner().value,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{key} could not be read at {at}");
}

#[test]
fn a_replicated_node_never_starts_on_replica_logs_it_cannot_trust() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let listener = async || tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let entries: Vec<NodeEntry> = (0..NODES)
            .map(|i| NodeEntry {
                name: format!("n{i}"),
                listen: format!("127.0.0.1:{}", 7100 + i),
                address: None,
                partitions: (0..PARTITIONS).collect(),
                storage: true,
            })
            .collect();
        let n0 = config(dir.path(), &entries, 0);
        let refused = async |config: NodeConfig| {
            ClusterNode::start(config, listener().await)
                .await
                .unwrap_err()
                .to_string()
        };

        // A first start creates replica logs only when told to.
        let error = refused(n0.clone()).await;
        assert!(error.contains("--bootstrap"), "{error}");
        let node = ClusterNode::bootstrap(n0.clone(), listener().await).await;
        node.unwrap().shutdown().await.unwrap();
        let node = ClusterNode::start(n0.clone(), listener().await).await;
        node.unwrap().shutdown().await.unwrap();

        // A node is not renamed in the configuration: its logs are its old name's (a new
        // name is a new node, which joins through `journaldb admin replace`).
        let mut renamed = entries.clone();
        renamed[0].name = "n9".into();
        let mut n9 = config(dir.path(), &renamed, 0);
        n9.node = "n9".into();
        n9.data_dir = n0.data_dir.clone();
        let error = refused(n9).await;
        assert!(error.contains("belongs to"), "{error}");

        // Nor is the kind of journal.
        let mut single = entries.clone();
        for (i, e) in single.iter_mut().enumerate() {
            e.partitions = (0..PARTITIONS)
                .filter(|p| *p as usize % NODES == i)
                .collect();
        }
        let error = refused(NodeConfig {
            cluster_id: None,
            ..config(dir.path(), &single, 0)
        })
        .await;
        assert!(error.contains("of the other kind"), "{error}");

        // A replica log lost from a node that ran before: never recreated, even when told
        // to bootstrap (its votes were lost with it).
        std::fs::remove_dir_all(n0.data_dir.join("raft-1")).unwrap();
        let error = refused(n0.clone()).await;
        assert!(error.contains("must not rejoin"), "{error}");
        let error = ClusterNode::bootstrap(n0.clone(), listener().await)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("must not rejoin"), "{error}");
    });
}

/// Every replica answers a request for partition 0: the leader itself, the others by
/// forwarding it there, naming it (`journaldb-leader`) so a client goes there next.
async fn assert_one_leader_named_by_the_others(entries: &[NodeEntry]) {
    let mut last = Vec::new();
    // Leadership may move while the replicas are asked: ask again.
    for _ in 0..20 {
        let mut named = Vec::new();
        for entry in entries {
            let mut replica = AdjudicatorServiceClient::connect(entry.url())
                .await
                .unwrap();
            let reply = replica
                .promise(pb::PromiseRequest {
                    partition: 0,
                    ts: 0,
                })
                .await
                .unwrap();
            let leader = reply
                .metadata()
                .get(LEADER)
                .map(|v| v.to_str().unwrap().to_owned());
            named.push(leader.unwrap_or_else(|| entry.url()));
        }
        if named.iter().all(|n| *n == named[0]) {
            return;
        }
        last = named;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replicas disagree on who leads partition 0: {last:?}");
}
