//! The etcd baseline of `journaldb-bench cluster --etcd`: a 3-member etcd cluster on
//! 127.0.0.1 (the `etcd` binary, each member its own process with its own data directory on
//! the measured disk), and the same one-key updates as journaldb's — a `Put` of a random key
//! of the same key space, durable when acknowledged (etcd fsyncs its WAL before it answers).
//! Requests go over one gRPC channel balanced across the three members (a follower forwards
//! to the leader, as a journaldb replica does); the messages are written here by hand, the
//! two fields of etcd's `PutRequest` this needs (etcd's API is stable, `etcdserverpb`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::{Channel, Endpoint};

use crate::embedded::Point;
use crate::load::{free_ports, header, one_key_updates, row};

/// `etcdserverpb.PutRequest`: the key and value (the other fields keep their defaults).
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `etcdserverpb.PutResponse`; its fields are not needed.
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

/// A running etcd cluster: its members stop (SIGKILL, then waited for) when dropped.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts 3 etcd members with their data under `dir`; returns them and their client URLs.
fn start(dir: &std::path::Path) -> anyhow::Result<(Members, Vec<String>)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let free = free_ports(6)?;
    let ports: Vec<(u16, u16)> = free.chunks(2).map(|c| (c[0], c[1])).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Members(Vec::new());
    let mut urls = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("e{i}")))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "journaldb-bench"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (install it: apt install etcd-server)")?;
        members.0.push(child);
        urls.push(client_url);
    }
    Ok((members, urls))
}

/// One `Put` over `channel`.
async fn put(channel: Channel, key: Vec<u8>, value: Vec<u8>) -> anyhow::Result<()> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
    grpc.unary(tonic::Request::new(PutRequest { key, value }), path, codec)
        .await?;
    Ok(())
}

/// Measures one-key updates on a fresh 3-member etcd cluster at each client count.
pub async fn measure(
    dir: &std::path::Path,
    clients: &[usize],
    keys: u64,
    duration: Duration,
) -> anyhow::Result<Vec<(usize, Point)>> {
    let (members, urls) = start(dir)?;
    let endpoints = urls
        .iter()
        .map(|u| Endpoint::from_shared(u.clone()).map(|e| e.timeout(Duration::from_secs(5))))
        .collect::<Result<Vec<_>, _>>()?;
    // Every member serves before the load starts (the balanced channel uses them all).
    for endpoint in &endpoints {
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(channel) = endpoint.connect().await
                && put(channel, b"warm-up".to_vec(), b"1".to_vec())
                    .await
                    .is_ok()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            bail!(
                "etcd at {} did not accept a write within 10 s (logs in {})",
                endpoint.uri(),
                dir.display()
            );
        }
    }
    let channel = Channel::balance_list(endpoints.into_iter());
    println!();
    println!(
        "etcd {}: 3 members, one process each, one-key updates (Put, durable):",
        etcd_version()
    );
    header();
    let mut results = Vec::new();
    for &n in clients {
        let p = updates(&channel, n, keys, duration).await?;
        row(n, &p);
        results.push((n, p));
    }
    drop(members);
    Ok(results)
}

/// One-key updates: a `Put` each.
async fn updates(
    channel: &Channel,
    clients: usize,
    keys: u64,
    duration: Duration,
) -> anyhow::Result<Point> {
    let channel = channel.clone();
    one_key_updates(clients, keys, duration, move |key, value| {
        let channel = channel.clone();
        async move {
            put(channel, key.into_bytes(), value.into_bytes()).await?;
            Ok(0)
        }
    })
    .await
}

/// `etcd --version`'s first line's version, or "(version unknown)".
fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("etcd Version: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "(version unknown)".into())
}
