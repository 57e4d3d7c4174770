//! The `hostile` fault: a rogue host that speaks the gRPC protocol like a client no correct
//! implementation would be — absurd timestamps, keys sent to the wrong partition, unknown
//! partitions and coordinators, commits without votes, decisions below the vote, reads
//! from the end of time, journal reads from nowhere, Raft messages from a stranger. It never writes the workloads' keys
//! (its keys start with `x/` or 0xFF): what it may not do is wedge a key, stall a
//! partition, drag a floor into the future or crash a node — the run's checks, the
//! liveness check among them, see if it did.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journaldb::cluster::Connector;
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::pb::journal_service_client::JournalServiceClient;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::{TxnId, pb};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::transport::{Channel, Endpoint};

use crate::clock::SimClock;
use crate::recorder::{RUN_LENGTH, Shared, sim_now};

/// A timestamp: sane (near `now`), zero, the end of time, or anything.
fn ts(rng: &mut ChaCha8Rng, now: u64) -> u64 {
    match rng.random_range(0..6) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.random(),
        3 => now.saturating_add(3_600_000_000_000), // an hour ahead
        _ => now.saturating_add_signed(rng.random_range(-2_000_000_000..2_000_000_000)),
    }
}

fn key(rng: &mut ChaCha8Rng) -> Bytes {
    match rng.random_range(0..5) {
        0 => Bytes::new(),
        1 => {
            let mut k = vec![0xFF];
            k.extend((0..rng.random_range(0..8000)).map(|_| rng.random::<u8>()));
            Bytes::from(k)
        }
        _ => Bytes::from(format!("x/{}", rng.random_range(0..6))),
    }
}

fn txn(rng: &mut ChaCha8Rng) -> Option<pb::TxnId> {
    // A small id space, so its own prepares, commits, decisions and questions meet.
    (!rng.random_bool(0.05)).then(|| pb::TxnId::from(TxnId::new(rng.random_range(0..32))))
}

fn mutation(rng: &mut ChaCha8Rng) -> pb::Mutation {
    pb::Mutation {
        key: key(rng),
        op: match rng.random_range(0..3) {
            0 => None,
            1 => Some(pb::mutation::Op::Delete(pb::Delete {})),
            _ => Some(pb::mutation::Op::Put(Bytes::from_static(b"hostile"))),
        },
    }
}

fn partition(rng: &mut ChaCha8Rng) -> u32 {
    if rng.random_bool(0.1) {
        rng.random()
    } else {
        rng.random_range(0..5)
    }
}

/// Raft messages from a stranger: another cluster's (or a guess at this one's), between
/// any nodes, for any group, as bytes that are rarely a message at all.
fn raft_request(rng: &mut ChaCha8Rng) -> pb::RaftRequest {
    pb::RaftRequest {
        cluster: if rng.random_bool(0.5) {
            rng.random()
        } else {
            rng.random_range(0..4)
        },
        from_node: rng.random_range(0..6),
        to_node: rng.random_range(0..6),
        envelopes: (0..rng.random_range(0..4))
            .map(|_| pb::RaftEnvelope {
                group: rng.random_range(0..5),
                message: Bytes::from(
                    (0..rng.random_range(0..64))
                        .map(|_| rng.random::<u8>())
                        .collect::<Vec<u8>>(),
                ),
            })
            .collect(),
    }
}

/// Sends one random request to the node behind `channel`; the answer is ignored (any
/// typed refusal is fine; the checks judge the cluster afterwards).
pub(crate) async fn send_one(rng: &mut ChaCha8Rng, channel: Channel, now: u64) -> String {
    let mut adj = AdjudicatorServiceClient::new(channel.clone());
    let n = |rng: &mut ChaCha8Rng| rng.random_range(0..4usize);
    let answer = match rng.random_range(0..11) {
        0 => {
            let request = pb::CommitRequest {
                partition: partition(rng),
                txn_id: txn(rng),
                start_ts: ts(rng, now),
                mutations: (0..n(rng)).map(|_| mutation(rng)).collect(),
                retry: rng.random(),
                topology_version: rng.random_range(0..3),
            };
            format!(
                "commit: {:?}",
                adj.commit(request).await.map(|r| r.into_inner())
            )
        }
        1 => {
            let request = pb::PrepareRequest {
                partition: partition(rng),
                txn_id: txn(rng),
                start_ts: ts(rng, now),
                keys: (0..n(rng)).map(|_| key(rng)).collect(),
                coordinator: partition(rng),
                coordinator_epoch: None,
                topology_version: rng.random_range(0..3),
            };
            format!(
                "prepare: {:?}",
                adj.prepare(request).await.map(|r| r.into_inner())
            )
        }
        2 => {
            let request = pb::CommitPreparedRequest {
                partition: partition(rng),
                txn_id: txn(rng),
                start_ts: ts(rng, now),
                votes: (0..n(rng)).map(|_| ts(rng, now)).collect(),
                mutations: (0..n(rng)).map(|_| mutation(rng)).collect(),
                participants: (0..n(rng)).map(|_| partition(rng)).collect(),
                topology_version: rng.random_range(0..3),
            };
            let reply = adj.commit_prepared(request).await;
            format!("commit-prepared: {:?}", reply.map(|r| r.into_inner()))
        }
        3 => {
            let request = pb::DecideRequest {
                partition: partition(rng),
                txn_id: txn(rng),
                outcome: match rng.random_range(0..3) {
                    0 => None,
                    1 => Some(pb::decide_request::Outcome::Aborted(pb::Aborted {})),
                    _ => Some(pb::decide_request::Outcome::CommittedTs(ts(rng, now))),
                },
            };
            format!(
                "decide: {:?}",
                adj.decide(request).await.map(|r| r.into_inner())
            )
        }
        4 => {
            let request = pb::StatusRequest {
                partition: partition(rng),
                txn_id: txn(rng),
                start_ts: ts(rng, now),
            };
            format!(
                "status: {:?}",
                adj.status(request).await.map(|r| r.into_inner())
            )
        }
        5 => {
            let request = pb::PromiseRequest {
                partition: partition(rng),
                ts: ts(rng, now),
            };
            format!(
                "promise: {:?}",
                adj.promise(request).await.map(|r| r.into_inner())
            )
        }
        6 => {
            let request = pb::GetRequest {
                key: key(rng),
                at: ts(rng, now),
            };
            let reply = StorageServiceClient::new(channel).get(request).await;
            format!("get: {:?}", reply.map(|r| r.into_inner()))
        }
        7 => {
            let request = pb::ScanRequest {
                range: rng.random_bool(0.8).then(|| pb::KeyRange {
                    start: key(rng),
                    end: rng.random_bool(0.5).then(|| key(rng)),
                }),
                at: ts(rng, now),
                limit: rng.random(),
                reverse: rng.random(),
                keys_only: rng.random(),
                count_only: rng.random(),
            };
            let reply = StorageServiceClient::new(channel).scan(request).await;
            format!("scan: {:?}", reply.map(|r| r.into_inner().rows.len()))
        }
        9 => {
            let reply = JournalServiceClient::new(channel)
                .raft(raft_request(rng))
                .await;
            format!("raft: {:?}", reply.map(|r| r.into_inner()))
        }
        10 => {
            let requests: Vec<_> = (0..rng.random_range(0..4))
                .map(|_| raft_request(rng))
                .collect();
            let reply = JournalServiceClient::new(channel)
                .raft_stream(tokio_stream::iter(requests))
                .await;
            format!("raft stream: {:?}", reply.map(|r| r.into_inner()))
        }
        _ => {
            let request = pb::ReadRequest {
                partition: partition(rng),
                from_lsn: rng.random(),
                max_records: rng.random(),
                max_bytes: rng.random(),
                cluster: match rng.random_range(0..4) {
                    0 => rng.random(),
                    _ => 0,
                },
            };
            let reply = JournalServiceClient::new(channel).read(request).await;
            format!(
                "journal read: {:?}",
                reply.map(|r| r.into_inner().records.len())
            )
        }
    };
    // Only the kind of answer goes to the trace (the messages hold no randomness, but
    // keep the trace short).
    answer.chars().take(160).collect()
}

/// A lazily connecting channel from the rogue host to `url`.
pub(crate) fn channel(url: &str, connector: &Connector) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .expect("node URLs are valid")
        .timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1));
    connector.channel(&endpoint)
}

/// The rogue host of the `hostile` fault: while a window is open, random requests to
/// random nodes every few milliseconds.
pub(crate) async fn rogue_main(
    urls: Vec<String>,
    mut rng: ChaCha8Rng,
    clock: Arc<SimClock>,
    shared: Arc<Shared>,
) {
    use journaldb_proto::Clock as _;
    let connector = crate::net::connector();
    let channels: Vec<_> = urls.iter().map(|url| channel(url, &connector)).collect();
    while sim_now() < RUN_LENGTH {
        if *shared.hostile.lock() > 0 {
            // Requests do not wait for each other: a slow answer (a read from the end of
            // time waits out its deadline) must not slow the attack.
            let node = rng.random_range(0..channels.len());
            let now = clock.now().latest.as_nanos();
            let mut request_rng = ChaCha8Rng::seed_from_u64(rng.random());
            let (channel, shared) = (channels[node].clone(), shared.clone());
            tokio::spawn(async move {
                let answer = send_one(&mut request_rng, channel, now).await;
                shared.event(sim_now(), "rogue", format_args!("n{} {answer}", node + 1));
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(1..=5))).await;
    }
}
