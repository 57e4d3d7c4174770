//! `journaldb serve` as separate processes on 127.0.0.1: two nodes start from their
//! configuration files, become healthy, a commit decided on one is read from the other's
//! storage, and SIGTERM shuts each down cleanly (exit 0). A bad configuration is refused
//! before anything binds.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use journaldb::partition::partition_of;
use journaldb_proto::pb::adjudicator_service_client::AdjudicatorServiceClient;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::pb::{self, commit_reply};
use journaldb_proto::{Clock, Mutation, SystemClock, TxnId};

use crate::rt;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the node on drop if a test failed before stopping it.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path) -> NodeProcess {
    NodeProcess(
        Command::new(env!("CARGO_BIN_EXE_journaldb"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

async fn healthy(url: &str) {
    for _ in 0..500 {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let check = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if health.check(check).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never became healthy");
}

#[test]
fn two_node_processes_serve_a_commit_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let nodes = format!(
        "partitions = 2\n[[nodes]]\nname = \"n1\"\nlisten = \"127.0.0.1:{}\"\npartitions = [0]\nstorage = true\n\
         [[nodes]]\nname = \"n2\"\nlisten = \"127.0.0.1:{}\"\npartitions = [1]\nstorage = true\n",
        ports[0], ports[1]
    );
    let mut processes = Vec::new();
    for name in ["n1", "n2"] {
        let path = dir.path().join(format!("{name}.toml"));
        let data = dir.path().join(name);
        std::fs::write(
            &path,
            format!("node = \"{name}\"\ndata_dir = {data:?}\n{nodes}"),
        )
        .unwrap();
        processes.push(start(&path));
    }
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    rt().block_on(async {
        healthy(&url(0)).await;
        healthy(&url(1)).await;
        let key = "order/7";
        let p = partition_of(key.as_bytes(), 2).get() as usize;
        let reply = AdjudicatorServiceClient::connect(url(p))
            .await
            .unwrap()
            .commit(pb::CommitRequest {
                partition: p as u32,
                txn_id: Some(TxnId::new(7).into()),
                start_ts: SystemClock::new().now().latest.as_nanos(),
                mutations: vec![Mutation::put(key.to_owned(), "shipped".to_owned()).into()],
                retry: false,
                topology_version: 1,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(commit_reply::Outcome::CommittedTs(ts)) = reply.outcome else {
            panic!("{reply:?}");
        };
        let other = 1 - p;
        let got = StorageServiceClient::connect(url(other))
            .await
            .unwrap()
            .get(pb::GetRequest {
                key: Bytes::from(key),
                at: ts,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.value.as_deref(), Some(&b"shipped"[..]));
    });
    // The CLI against the cluster: write through one node, read through the other.
    let cli = |url: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_journaldb"))
            .arg("--cluster")
            .arg(url)
            .args(args)
            .output()
            .unwrap()
    };
    let put = cli(&url(0), &["put", "greeting", "hello"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = cli(&url(1), &["get", "greeting"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "hello\n");
    let missing = cli(&url(1), &["get", "nothing"]);
    assert_eq!(missing.status.code(), Some(1));
    let mut shell = Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .args(["--cluster", &url(1), "shell", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        shell.stdin.as_mut().unwrap(),
        b"begin\nget greeting\nput greeting hi\ncommit\nget greeting\n",
    )
    .unwrap();
    let out = shell.wait_with_output().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines[1], r#"{"ok":true,"value":"hello"}"#, "{lines:?}");
    assert!(
        lines[3].starts_with(r#"{"ok":true,"commit_ts":"#),
        "{lines:?}"
    );
    assert_eq!(lines[4], r#"{"ok":true,"value":"hi"}"#, "{lines:?}");
    for mut node in processes {
        let pid = node.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = node.0.wait().unwrap();
        assert!(status.success(), "exit after SIGTERM: {status}");
    }
}

#[test]
fn a_bad_configuration_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!("node = \"n1\"\ndata_dir = \"d\"\npartitions = 2\n[[nodes]]\nname = \"n1\"\nlisten = \"127.0.0.1:{port}\"\npartitions = [0]\nstorage = true\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partition 1 has no node"), "{err}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "nothing was bound"
    );
    assert!(!dir.path().join("d").exists(), "nothing was created");
}

#[test]
fn cluster_start_status_and_stop_run_a_local_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let journaldb = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_journaldb"))
            .args(args)
            .output()
            .unwrap()
    };
    let dir_arg = cluster_dir.to_str().unwrap();
    let started = journaldb(&["cluster", "start", "--nodes", "3", "--dir", dir_arg]);
    let text = String::from_utf8_lossy(&started.stdout).into_owned();
    // Whatever happens next, the nodes must not outlive the test.
    struct Stop<'a>(&'a str);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = Command::new(env!("CARGO_BIN_EXE_journaldb"))
                .args(["cluster", "stop", "--dir", self.0])
                .output();
        }
    }
    let _stop = Stop(dir_arg);
    assert!(
        started.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("client address: "))
        .expect("the client address is printed")
        .to_owned();
    assert!(
        text.contains("3 nodes, 3 partitions (3 replicas of each journal), 3 storage replicas"),
        "{text}"
    );
    let status = journaldb(&["cluster", "status", "--dir", dir_arg]);
    assert!(status.status.success());
    assert_eq!(
        String::from_utf8_lossy(&status.stdout)
            .matches("serving")
            .count(),
        3
    );

    assert!(
        journaldb(&["--cluster", &url, "put", "k", "v"])
            .status
            .success()
    );
    let got = journaldb(&["--cluster", &url, "get", "k"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v\n");
    let again = journaldb(&["cluster", "start", "--nodes", "3", "--dir", dir_arg]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "a running cluster is not started twice"
    );

    let stopped = journaldb(&["cluster", "stop", "--dir", dir_arg]);
    assert!(stopped.status.success());
    assert_eq!(
        String::from_utf8_lossy(&stopped.stdout),
        "stopped 3 nodes\n"
    );
    let status = journaldb(&["cluster", "status", "--dir", dir_arg]);
    assert_eq!(status.status.code(), Some(1));

    // Started again, the replicated journals are recovered from the nodes' disks.
    let restarted = journaldb(&["cluster", "start", "--nodes", "3", "--dir", dir_arg]);
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let got = journaldb(&["--cluster", &url, "get", "k"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v\n");
    let unreplicated = journaldb(&[
        "cluster",
        "start",
        "--nodes",
        "3",
        "--replicas",
        "1",
        "--dir",
        dir_arg,
    ]);
    assert_eq!(
        unreplicated.status.code(),
        Some(1),
        "a cluster's replication is fixed at creation"
    );
}
