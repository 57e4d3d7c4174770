//! kill -9 of node processes of a replicated cluster (issue 14): `journaldb cluster start
//! --nodes 3` (every partition's journal a Raft group on all three nodes), a steady bank
//! workload through `journaldb shell --json`, and each node in turn killed with SIGKILL —
//! whichever groups it led — then restarted with `journaldb serve`. The bank's total never
//! changes, every acknowledged transfer is present, commits resume within 10 s of each
//! kill, and the restarted node catches up: its own storage replica serves every
//! acknowledged transfer.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use journaldb_node::NodeConfig;
use journaldb_proto::pb;
use journaldb_proto::pb::storage_service_client::StorageServiceClient;
use journaldb_proto::{Clock, SystemClock};
use serde_json::Value;

use crate::rt;

const NODES: usize = 3;
const ACCOUNTS: usize = 6;
const OPENING_BALANCE: u64 = 50;

#[allow(
    clippy::disallowed_methods,
    reason = "a test of real processes measures real time (how soon commits resume)"
)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

fn journaldb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .args(args)
        .output()
        .unwrap()
}

/// `journaldb --cluster URL shell --json`, one command and one JSON answer at a time.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Shell {
    fn connect(url: &str) -> Shell {
        let mut child = Command::new(env!("CARGO_BIN_EXE_journaldb"))
            .args(["--cluster", url, "shell", "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Shell {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, command: &str) -> Value {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{command}: {line:?}: {e}"))
    }

    fn balance(&mut self, i: usize) -> Option<u64> {
        let answer = self.ask(&format!("get account/{i}"));
        answer["value"].as_str()?.parse().ok()
    }

    /// One transfer of 1 between two accounts, recorded under `transfer/ID`. `Some(true)`
    /// if acknowledged, `Some(false)` if it certainly did not commit, `None` if unknown.
    fn transfer(&mut self, from: usize, to: usize, id: &str) -> Option<bool> {
        self.ask("begin");
        let balances = (self.balance(from), self.balance(to));
        let (Some(a), Some(b)) = balances else {
            self.ask("rollback");
            return Some(false);
        };
        if a == 0 {
            self.ask("rollback");
            return Some(false);
        }
        self.ask(&format!("put account/{from} {}", a - 1));
        self.ask(&format!("put account/{to} {}", b + 1));
        self.ask(&format!("put transfer/{id} done"));
        let committed = self.ask("commit");
        match committed["error"].as_str() {
            None => Some(true),
            Some("CommitUnknown") => None,
            Some(_) => Some(false),
        }
    }

    /// The accounts' total in one snapshot, once the cluster answers.
    fn total(&mut self) -> u64 {
        for _ in 0..100 {
            self.ask("begin");
            let balances: Option<Vec<u64>> = (0..ACCOUNTS).map(|i| self.balance(i)).collect();
            self.ask("rollback");
            if let Some(balances) = balances {
                return balances.iter().sum();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the accounts could not be read for 10 s");
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pid(dir: &Path, node: usize) -> String {
    std::fs::read_to_string(dir.join(format!("n{node}.pid")))
        .unwrap()
        .trim()
        .to_owned()
}

/// Nodes this test restarted: its own children, killed and waited for when it ends (a
/// child that exited but was not waited for would look alive to `cluster stop`).
struct Restarted(Vec<Child>);

impl Drop for Restarted {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Restarts node `node` of the cluster in `dir` as the launcher would, recording its pid.
fn restart(dir: &Path, node: usize) -> Child {
    let config: PathBuf = dir.join(format!("n{node}.toml"));
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(format!("n{node}.log")))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(dir.join(format!("n{node}.pid")), child.id().to_string()).unwrap();
    child
}

#[test]
fn killing_any_one_node_of_a_replicated_cluster_loses_nothing_and_stops_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir_arg = dir.to_str().unwrap().to_owned();
    let started = journaldb(&["cluster", "start", "--nodes", "3", "--dir", &dir_arg]);
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = journaldb(&["cluster", "stop", "--dir", &self.0]);
        }
    }
    let _stop = Stop(dir_arg.clone());
    // Dropped before `_stop`: the restarted nodes are gone when `cluster stop` looks.
    let mut restarted = Restarted(Vec::new());
    let text = String::from_utf8_lossy(&started.stdout).into_owned();
    assert!(started.status.success(), "{text}");
    assert!(text.contains("3 replicas of each journal"), "{text}");
    let configs: Vec<NodeConfig> = (0..NODES)
        .map(|i| NodeConfig::load(&dir.join(format!("n{i}.toml"))).unwrap())
        .collect();
    let url = configs[0].me().url();

    let mut shell = Shell::connect(&url);
    for i in 0..ACCOUNTS {
        let put = shell.ask(&format!("put account/{i} {OPENING_BALANCE}"));
        assert_eq!(put["ok"], Value::Bool(true), "{put}");
    }
    let expected = OPENING_BALANCE * ACCOUNTS as u64;

    let (mut acknowledged, mut n) = (Vec::new(), 0usize);
    for victim in 0..NODES {
        let mut run = |shell: &mut Shell, for_how_long: Duration| {
            let until = now() + for_how_long;
            let mut first_ack = None;
            while now() < until {
                let id = format!("{victim}-{n}");
                let (from, to) = (n % ACCOUNTS, (n * 7 + 1) % ACCOUNTS);
                n += 1;
                if from != to && shell.transfer(from, to, &id) == Some(true) {
                    first_ack.get_or_insert_with(now);
                    acknowledged.push(id);
                }
            }
            first_ack
        };
        run(&mut shell, Duration::from_secs(1));
        let killed = now();
        let status = Command::new("kill")
            .args(["-9", &pid(&dir, victim)])
            .status()
            .unwrap();
        assert!(status.success());
        let resumed = run(&mut shell, Duration::from_secs(4))
            .map(|at| at - killed)
            .expect("no transfer was acknowledged in the 4 s after the kill");
        eprintln!("n{victim} killed: commits resumed after {resumed:?}");
        assert!(resumed < Duration::from_secs(10), "{resumed:?}");
        // `admin status` sees the dead node, and every partition led by another.
        let admin = journaldb(&["admin", "status", "--dir", &dir_arg]);
        let report = String::from_utf8_lossy(&admin.stdout).into_owned();
        assert!(!admin.status.success(), "{report}");
        assert!(
            report.contains(&format!("n{victim}: does not answer")),
            "{report}"
        );
        assert!(!report.contains(&format!("leader n{victim} ")), "{report}");
        assert_eq!(shell.total(), expected, "after killing n{victim}");
        restarted.0.push(restart(&dir, victim));
        run(&mut shell, Duration::from_secs(1));
        assert_eq!(shell.total(), expected, "after restarting n{victim}");
    }
    assert!(acknowledged.len() > 20, "{} transfers", acknowledged.len());

    // Every node back: every group has a leader and every replica answers.
    let healthy = (0..100).find_map(|_| {
        let admin = journaldb(&["admin", "status", "--dir", &dir_arg]);
        let report = String::from_utf8_lossy(&admin.stdout).into_owned();
        if admin.status.success() {
            return Some(report);
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    let report = healthy.expect("admin status never reported every node and leader");
    // Every partition's group (3 partitions by default) and the metadata group.
    assert_eq!(report.matches(": leader n").count(), NODES + 1, "{report}");
    assert!(report.contains("metadata group: leader n"), "{report}");
    assert!(!report.contains("unreachable"), "{report}");

    // Every acknowledged transfer is on every node's own storage replica: the killed ones
    // caught up after their restart.
    rt().block_on(async {
        let at = SystemClock::new().now().latest.as_nanos();
        for config in &configs {
            let mut storage = StorageServiceClient::connect(config.me().url()).await;
            for _ in 0..100 {
                if storage.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                storage = StorageServiceClient::connect(config.me().url()).await;
            }
            let mut storage = storage.unwrap();
            for id in &acknowledged {
                let key = Bytes::from(format!("transfer/{id}"));
                let mut found = None;
                for _ in 0..100 {
                    let request = pb::GetRequest {
                        key: key.clone(),
                        at,
                    };
                    if let Ok(reply) = storage.get(request).await {
                        found = Some(reply.into_inner().value.is_some());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert_eq!(
                    found,
                    Some(true),
                    "{}: acknowledged transfer {id}",
                    config.node
                );
            }
        }
    });
}
