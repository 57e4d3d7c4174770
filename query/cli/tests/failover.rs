//! Failures of whole node processes (kill -9) on 127.0.0.1. Three nodes: n0 runs
//! partition 0, n1 is a storage replica only, n2 runs partition 1 and a storage replica.
//! - Killing the storage replica that served the last read: reads go on through the other;
//!   restarted, it catches up from the journals and serves again.
//! - Killing the node of an adjudicator: its transactions fail with retryable errors or
//!   `CommitUnknown` (never a wrong answer); restarted, they succeed, and no acknowledged
//!   commit is lost.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use journaldb::partition::partition_of;
use journaldb::{Client, Error};
use journaldb_proto::pb;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;

use crate::rt;

struct Node {
    config: std::path::PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_journaldb"))
                .args(["serve", "--config"])
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A key owned by partition `p` of 2.
fn key_in(p: u32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| partition_of(k.as_bytes(), 2).get() == p)
        .unwrap()
}

async fn put(client: &Client, key: &str, value: &str) -> Result<(), Error> {
    let mut tx = client.begin();
    tx.put(key.to_owned(), value.to_owned())?;
    tx.commit().await.map(|_| ())
}

/// Retries `f` for up to 20 s until it succeeds.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Result<T, Error>) -> T {
    let mut last = None;
    for _ in 0..200 {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: still failing: {last:?}");
}

#[test]
fn killed_nodes_fail_safe_and_recover_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let map = format!(
        "partitions = 2\n\
         [[nodes]]\nname = \"n0\"\nlisten = \"127.0.0.1:{}\"\npartitions = [0]\n\
         [[nodes]]\nname = \"n1\"\nlisten = \"127.0.0.1:{}\"\nstorage = true\n\
         [[nodes]]\nname = \"n2\"\nlisten = \"127.0.0.1:{}\"\npartitions = [1]\nstorage = true\n",
        ports[0], ports[1], ports[2]
    );
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let config = dir.path().join(format!("n{i}.toml"));
            std::fs::write(
                &config,
                format!("node = \"n{i}\"\ndata_dir = \"n{i}\"\n{map}"),
            )
            .unwrap();
            let mut node = Node {
                config,
                child: None,
            };
            node.start();
            node
        })
        .collect();
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    rt().block_on(async {
        let client = eventually("connect", async || Client::connect(&url(2)).await).await;
        let mut acked = Vec::new();
        for i in 0..10 {
            let key = format!("before{i}");
            eventually("commit", async || put(&client, &key, "1").await).await;
            acked.push(key);
        }

        // Storage failover. The client reads from the first replica of the topology, n1
        // (storage only). Kill it: reads go on through n2, at fresh snapshots too.
        let got = client.begin().get("before0").await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"1"[..]));
        nodes[1].kill();
        for key in &acked {
            let got = client.begin().get(key).await.unwrap();
            assert_eq!(
                got.as_deref(),
                Some(&b"1"[..]),
                "{key} through the other replica"
            );
        }
        put(&client, "while-n1-was-down", "1").await.unwrap();
        acked.push("while-n1-was-down".to_owned());
        nodes[1].start();

        // Adjudicator failure. Kill n0: partition 0's transactions fail retryably or with
        // an unknown outcome, never with a wrong answer.
        let k0 = key_in(0, "during");
        nodes[0].kill();
        let err = put(&client, &k0, "x").await.unwrap_err();
        assert!(err.is_retryable() || err.maybe_committed(), "{err}");
        nodes[0].start();
        eventually("commit after the restart", async || {
            put(&client, &k0, "y").await
        })
        .await;
        acked.push(k0.clone());

        // Every acknowledged commit is there, read through the client...
        for key in &acked {
            let got = eventually("read", async || client.begin().get(key).await).await;
            assert!(got.is_some(), "{key} was lost");
        }
        // ...and through each storage replica directly: the restarted n1 caught up.
        let at = client.begin().start_ts();
        for replica in [1, 2] {
            let mut storage = eventually("connect to a replica", async || {
                StorageServiceClient::connect(url(replica))
                    .await
                    .map_err(|e| Error::Unavailable {
                        reason: e.to_string(),
                        retry_after: None,
                    })
            })
            .await;
            for (key, value) in [(k0.as_str(), "y"), ("while-n1-was-down", "1")] {
                let got = eventually("replica read", async || {
                    storage
                        .get(pb::GetRequest {
                            key: Bytes::copy_from_slice(key.as_bytes()),
                            at: at.as_nanos(),
                        })
                        .await
                        .map_err(|s| Error::Unavailable {
                            reason: s.to_string(),
                            retry_after: None,
                        })
                })
                .await
                .into_inner();
                assert_eq!(
                    got.value.as_deref(),
                    Some(value.as_bytes()),
                    "{key} on n{replica}"
                );
            }
        }
    });
    for node in &mut nodes {
        node.kill();
    }
}
