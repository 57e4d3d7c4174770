//! The `journaldb` binary end to end: spawn it, check output and exit codes, including
//! bad input (oversized key or value, unknown flag, `--data` naming a file, a locked
//! directory, a corrupt journal).

use std::path::Path;
use std::process::{Command, Output};

fn journaldb(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run journaldb")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn put_get_del_and_scan_work_across_invocations() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let put = journaldb(&data, &["put", "user/1", "ada"]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(stdout(&put).starts_with("committed at "));
    assert!(
        journaldb(&data, &["put", "user/2", "grace"])
            .status
            .success()
    );
    assert!(journaldb(&data, &["put", "zzz", "other"]).status.success());

    let get = journaldb(&data, &["get", "user/1"]);
    assert_eq!(
        (get.status.code(), stdout(&get)),
        (Some(0), "ada\n".to_string())
    );

    let scan = journaldb(&data, &["scan", "--prefix", "user/"]);
    assert_eq!(stdout(&scan), "user/1\tada\nuser/2\tgrace\n");
    let rev = journaldb(
        &data,
        &["scan", "--prefix", "user/", "--reverse", "--limit", "1"],
    );
    assert_eq!(stdout(&rev), "user/2\tgrace\n");

    // Time travel: as of the first commit, only user/1 existed.
    let first_ts = stdout(&put).trim().rsplit(' ').next().unwrap().to_string();
    let old = journaldb(&data, &["scan", "--prefix", "user/", "--as-of", &first_ts]);
    assert_eq!(stdout(&old), "user/1\tada\n");

    assert!(journaldb(&data, &["del", "user/1"]).status.success());
    let gone = journaldb(&data, &["get", "user/1"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("not found"));
    let stats = journaldb(&data, &["stats"]);
    let stats = stdout(&stats);
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(lines[0], "partitions\t1");
    assert!(lines[1].starts_with("watermark\t"), "{stats}");
    assert_eq!(
        lines[2], "gc_horizon\t0",
        "nothing is older than the retention window"
    );
    assert_eq!(lines.len(), 3 + 1, "one line per journal: {stats}");
    assert!(
        lines[3].starts_with("journal-0\tfirst_lsn 1\tend_lsn "),
        "{stats}"
    );
}

#[test]
fn bad_input_is_one_readable_line_and_a_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let big_key = "k".repeat(5000);
    let o = journaldb(&data, &["put", &big_key, "v"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("key size (bytes) limit exceeded: 5000 > 4096"),
        "{}",
        stderr(&o)
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .arg("--data")
        .arg(&data)
        .args(["put", "k", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &vec![b'v'; (1 << 20) + 1]).unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("value size"), "{}", stderr(&o));
    assert_eq!(
        journaldb(&data, &["get", "k"]).status.code(),
        Some(1),
        "nothing was written"
    );

    let o = journaldb(&data, &["get", "k", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--bogus"));

    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let o = journaldb(&file, &["get", "k"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is a file"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn a_locked_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert!(journaldb(&data, &["put", "k", "v"]).status.success());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(journaldb::Database::open(&data)).unwrap();
    let o = journaldb(&data, &["get", "k"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    rt.block_on(db.close()).unwrap();
}

#[test]
fn a_corrupt_journal_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for i in 0..6 {
        assert!(
            journaldb(&data, &["put", &format!("k{i}"), "v"])
                .status
                .success()
        );
    }
    // Damage an early batch in every journal that has more than one: mid-log corruption.
    let mut damaged = 0;
    let journals = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("journal-")
        });
    for dir in journals {
        let seg = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "jseg"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        // Batches are 4 KiB blocks after the 4 KiB header; the second batch must be valid.
        if bytes.len() > 3 * 4096 && bytes[2 * 4096..2 * 4096 + 4] == *b"JBAT" {
            bytes[4096 + 40] ^= 0xff;
            std::fs::write(&seg, &bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "some journal has two batches");
    let o = journaldb(&data, &["get", "k0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("corrupt") && err.contains("offset 4096"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one readable line: {err}");
}

fn shell(data: &Path, args: &[&str], script: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_journaldb"))
        .arg("--data")
        .arg(data)
        .arg("shell")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn shell_json_answers_every_command_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let big_key = "k".repeat(5000);
    let script = format!(
        "put a 1\nbegin\nget a\nput a 2\nget a\nscan a\ncommit\nget missing\nput {big_key} v\nbogus\ncommit\nrollback\n"
    );
    let o = shell(&data, &["--json"], &script);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 12, "one line per command");
    assert!(
        stdout(&o)
            .lines()
            .next()
            .unwrap()
            .starts_with("{\"ok\":true,\"commit_ts\":")
    );
    assert!(lines[0]["commit_ts"].as_u64().is_some());
    assert_eq!(lines[1], serde_json::json!({"ok": true}));
    assert_eq!(lines[2], serde_json::json!({"ok": true, "value": "1"}));
    assert_eq!(
        lines[4],
        serde_json::json!({"ok": true, "value": "2"}),
        "read your writes"
    );
    assert_eq!(
        lines[5]["rows"][0],
        serde_json::json!({"key": "a", "value": "2"})
    );
    assert!(lines[6]["commit_ts"].as_u64().unwrap() > lines[0]["commit_ts"].as_u64().unwrap());
    assert_eq!(lines[7], serde_json::json!({"ok": true, "value": null}));
    assert_eq!(
        (&lines[8]["error"], &lines[8]["retryable"]),
        (
            &serde_json::json!("LimitExceeded"),
            &serde_json::json!(false)
        )
    );
    for l in &lines[9..] {
        assert_eq!(l["ok"], serde_json::json!(false), "{l}");
    }
}

#[test]
fn shell_text_mode_reports_errors_and_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = shell(
        &data,
        &[],
        "put x hello world\nget x\nbegin\nbegin\ndel x\ncommit\nget x\n",
    );
    assert!(o.status.success());
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("committed at "));
    assert_eq!(lines[1], "hello world");
    assert_eq!(lines[2], "ok");
    assert!(lines[3].starts_with("error: a transaction is already open"));
    assert_eq!(lines[4], "ok");
    assert!(lines[5].starts_with("committed at "));
    assert_eq!(lines[6], "(nil)");
}
