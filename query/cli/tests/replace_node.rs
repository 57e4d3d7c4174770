//! Replacing a lost node of a replicated cluster (issue 14): `journaldb cluster start
//! --nodes 3`, some keys written, one node killed with SIGKILL and its data directory
//! deleted (a lost disk), then `journaldb admin replace` under a new name. The new node
//! joins every Raft group, the metadata group included, and counts: with another original
//! node killed too, the cluster still commits and still serves every key written before.
//! The lost node's name never comes back, and running the replacement again changes
//! nothing.

use std::path::Path;
use std::time::Duration;

use journaldb_node::NodeConfig;

fn journaldb(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// SIGKILL to node `name`, and waits until the process is gone (its port is free).
fn kill9(dir: &Path, name: &str) {
    let pid = std::fs::read_to_string(dir.join(format!("{name}.pid"))).unwrap();
    let kill = |signal: &str| {
        std::process::Command::new("kill")
            .args([signal, pid.trim()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(kill("-9"));
    for _ in 0..100 {
        if !kill("-0") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} (pid {}) outlived SIGKILL by 5 s", pid.trim());
}

/// Runs `journaldb ARGS` expecting it to exit non-zero within 20 s; returns its output.
/// A node that starts instead is killed and fails the test.
fn serve_briefly(args: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(!status.success(), "{args:?} succeeded: {}", text(&out));
            return text(&out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("{args:?} started a node: {}", text(&out));
}

/// Runs `journaldb --cluster URL ARGS` until it succeeds, for at most 20 s.
fn eventually(url: &str, args: &[&str]) -> String {
    let mut last = String::new();
    for _ in 0..40 {
        let out = journaldb(&[&["--cluster", url], args].concat());
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        last = text(&out);
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{args:?} never succeeded: {last}");
}

/// A 3-node `journaldb cluster start` cluster in a temporary directory, stopped on drop.
struct LocalCluster {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    dir_arg: String,
}

impl LocalCluster {
    fn start() -> LocalCluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let dir_arg = dir.to_str().unwrap().to_owned();
        let started = journaldb(&["cluster", "start", "--nodes", "3", "--dir", &dir_arg]);
        let cluster = LocalCluster {
            _tmp: tmp,
            dir,
            dir_arg,
        };
        assert!(started.status.success(), "{}", text(&started));
        cluster
    }

    /// The address of node `name`, from its configuration.
    fn url(&self, name: &str) -> String {
        NodeConfig::load(&self.dir.join(format!("{name}.toml")))
            .unwrap()
            .me()
            .url()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = journaldb(&["cluster", "stop", "--dir", &self.dir_arg]);
    }
}

#[test]
fn a_lost_node_is_replaced_under_a_new_name_and_the_new_one_counts() {
    let cluster = LocalCluster::start();
    let (dir, dir_arg) = (cluster.dir.clone(), cluster.dir_arg.clone());
    let url = |name: &str| cluster.url(name);
    let first = url("n0");
    for i in 0..20 {
        eventually(&first, &["put", &format!("key/{i}"), &format!("value {i}")]);
    }

    // A node that runs is not replaced (nor retired by a stray request).
    let live = journaldb(&[
        "admin", "replace", "--dir", &dir_arg, "--old", "n2", "--new", "n9",
    ]);
    assert!(!live.status.success(), "{}", text(&live));
    assert!(text(&live).contains("n2 runs"), "{}", text(&live));
    assert!(!dir.join("n9.toml").exists(), "nothing was rewritten");

    // n1's machine is lost: its process and its disk.
    kill9(&dir, "n1");
    std::fs::remove_dir_all(dir.join("n1")).unwrap();
    let replace = [
        "admin", "replace", "--dir", &dir_arg, "--old", "n1", "--new", "n3",
    ];
    let out = journaldb(&replace);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("n3 replaced n1 in every group"),
        "{}",
        text(&out)
    );
    let status = journaldb(&["admin", "status", "--dir", &dir_arg]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(!text(&status).contains("n1"), "{}", text(&status));

    // Running it again finds it done.
    let again = journaldb(&replace);
    assert!(again.status.success(), "{}", text(&again));

    // The lost node never comes back under its name: not with an empty disk, not joining.
    let old_config = dir.join("n1.toml.replaced");
    let old_config = old_config.to_str().unwrap();
    let lost = dir.join("n1");
    for (flags, wipe, why) in [
        (&["--join"][..], true, "was one of group 0's first voters"),
        (&[][..], true, "holds no replicated journals yet"),
        (&["--bootstrap"][..], true, "replaced n1"),
        // On the logs that bootstrap left: a restart is refused the same way.
        (&[][..], false, "replaced n1"),
    ] {
        if wipe && lost.exists() {
            std::fs::remove_dir_all(&lost).unwrap();
        }
        let back = serve_briefly(&[&["serve", "--config", old_config], flags].concat());
        assert!(back.contains(why), "{flags:?}: {back}");
    }
    // A name the cluster had is refused as a replacement too.
    let reuse = journaldb(&[
        "admin", "replace", "--dir", &dir_arg, "--old", "n2", "--new", "n1",
    ]);
    assert!(!reuse.status.success(), "{}", text(&reuse));

    // n3 counts: with n0 gone as well, {n2, n3} is every group's majority.
    kill9(&dir, "n0");
    let n3 = url("n3");
    eventually(&n3, &["put", "after", "the replacement"]);
    assert_eq!(eventually(&n3, &["get", "after"]), "the replacement");
    for i in 0..20 {
        assert_eq!(
            eventually(&n3, &["get", &format!("key/{i}")]),
            format!("value {i}")
        );
    }

    // n3, a voter now, loses its disk: it does not join again under its name.
    kill9(&dir, "n3");
    std::fs::remove_dir_all(dir.join("n3")).unwrap();
    let n3_config = dir.join("n3.toml");
    let back = serve_briefly(&["serve", "--config", n3_config.to_str().unwrap(), "--join"]);
    assert!(back.contains("is a voter of group"), "{back}");
}

/// The operator records the replacement and starts the new node, then goes away
/// (`--no-wait`): each group's leader finishes the swap by itself once the new node has
/// caught up, and the new node then counts.
#[test]
fn the_leaders_finish_a_replacement_the_operator_left() {
    let cluster = LocalCluster::start();
    let (dir, dir_arg) = (cluster.dir.clone(), cluster.dir_arg.clone());
    let url = |name: &str| cluster.url(name);
    eventually(&url("n0"), &["put", "before", "the loss"]);

    kill9(&dir, "n2");
    std::fs::remove_dir_all(dir.join("n2")).unwrap();
    let out = journaldb(&[
        "admin",
        "replace",
        "--dir",
        &dir_arg,
        "--old",
        "n2",
        "--new",
        "n5",
        "--no-wait",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("replaced n2 in every group"),
        "{}",
        text(&out)
    );

    // Every group (3 partitions and the metadata group) gets n5 as a voter, n2 out.
    let mut report = String::new();
    for _ in 0..120 {
        let status = journaldb(&["admin", "status", "--dir", &dir_arg]);
        report = text(&status);
        let swapped = report
            .lines()
            .filter(|l| l.contains(": leader n") && l.contains("n5") && !l.contains("n2"))
            .count();
        if status.status.success() && swapped == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let swapped = report
        .lines()
        .filter(|l| l.contains(": leader n") && l.contains("n5") && !l.contains("n2"))
        .count();
    assert_eq!(swapped, 4, "{report}");

    kill9(&dir, "n0");
    let n5 = url("n5");
    eventually(&n5, &["put", "after", "the swap"]);
    assert_eq!(eventually(&n5, &["get", "before"]), "the loss");
}
