use super::*;

fn parse(text: &str) -> Result<(), Vec<String>> {
    let config: NodeConfig = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    config.check()
}

const GOOD: &str = r#"
    node = "n1"
    data_dir = "/tmp/n1"
    partitions = 2
    [[nodes]]
    name = "n1"
    listen = "127.0.0.1:7001"
    partitions = [0]
    storage = true
    [[nodes]]
    name = "n2"
    listen = "127.0.0.1:7002"
    address = "http://10.0.0.2:7002"
    partitions = [1]
"#;

#[test]
fn a_good_configuration_passes_and_answers_who_runs_what() {
    assert_eq!(parse(GOOD), Ok(()));
    let config: NodeConfig = toml::from_str(GOOD).unwrap();
    assert_eq!(config.me().url(), "http://127.0.0.1:7001");
    assert_eq!(config.owner(1).url(), "http://10.0.0.2:7002");
    assert_eq!(config.topology_version, 1);
}

#[test]
fn the_vote_timeout_is_optional_and_bounded() {
    let with = |ms: u64| {
        GOOD.replacen(
            "partitions = 2",
            &format!("partitions = 2\nvote_timeout_ms = {ms}"),
            1,
        )
    };
    assert_eq!(parse(&with(1_500)), Ok(()));
    let config: NodeConfig = toml::from_str(&with(1_500)).unwrap();
    assert_eq!(config.vote_timeout_ms, Some(1_500));
    for absurd in [0, 5, 400_000] {
        let problems = parse(&with(absurd)).unwrap_err();
        assert!(problems[0].contains("vote_timeout_ms"), "{problems:?}");
    }
}

#[test]
fn the_storage_cache_is_optional_and_bounded() {
    let with = |mib: u64| {
        GOOD.replacen(
            "partitions = 2",
            &format!("partitions = 2\nstorage_cache_mib = {mib}"),
            1,
        )
    };
    let config: NodeConfig = toml::from_str(&with(0)).unwrap();
    assert_eq!(config.latest_cache_bytes(), 0);
    let config: NodeConfig = toml::from_str(GOOD).unwrap();
    assert_eq!(config.latest_cache_bytes(), 64 << 20);
    let problems = parse(&with(1 << 30)).unwrap_err();
    assert!(problems[0].contains("storage_cache_mib"), "{problems:?}");
}

#[test]
fn retention_is_optional_bounded_and_never_shorter_than_a_transaction() {
    let with =
        |lines: &str| GOOD.replacen("partitions = 2", &format!("partitions = 2\n{lines}"), 1);
    let config: NodeConfig = toml::from_str(GOOD).unwrap();
    assert_eq!(
        (
            config.max_txn_age(),
            config.retention(),
            config.checkpoint_interval()
        ),
        (
            Duration::from_secs(300),
            Duration::from_secs(300),
            Duration::from_secs(10)
        )
    );
    let short = with("max_txn_age_ms = 200\nretention_ms = 500\ncheckpoint_interval_ms = 50");
    assert_eq!(parse(&short), Ok(()));
    let config: NodeConfig = toml::from_str(&short).unwrap();
    assert_eq!(config.retention(), Duration::from_millis(500));
    let problems = parse(&with("retention_ms = 1000")).unwrap_err();
    assert!(
        problems[0].contains("shorter than max_txn_age_ms"),
        "{problems:?}"
    );
    for absurd in [
        "checkpoint_interval_ms = 0",
        "retention_ms = 99",
        "max_txn_age_ms = 0",
    ] {
        let problems = parse(&with(absurd)).unwrap_err();
        let name = absurd.split(' ').next().unwrap();
        assert!(problems[0].contains(name), "{problems:?}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let replicated = GOOD
        .replace("partitions = [0]", "partitions = [0, 1]")
        .replace("partitions = [1]", "partitions = [1]\nstorage = true");
    let problems = parse(&replicated).unwrap_err().join("\n");
    assert!(
        problems.contains("1 of 2 partitions are replicated"),
        "{problems}"
    );
    let bad = r#"

        node = "n9"
        data_dir = "/tmp/x"
        partitions = 3
        [[nodes]]
        name = "n1"
        listen = "localhost"
        partitions = [0, 5]
        [[nodes]]
        name = "n1"
        listen = "127.0.0.1:7002"
        address = "10.0.0.2:7002"
        partitions = [0]
    "#;
    let problems = parse(bad).unwrap_err();
    let all = problems.join("\n");
    for expected in [
        "listed twice",
        "not an address",
        "not an http:// URL",
        "partition 5 does not exist",
        "1 of 3 partitions are replicated",
        "partition 1 has no node",
        "partition 2 has no node",
        "no node is a storage replica",
        "\"n9\" (this node) is not in",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn a_replicated_cluster_names_its_replicas_and_ids() {
    let text = r#"
        node = "n2"
        data_dir = "/tmp/n2"
        partitions = 2
        cluster_id = 42
        [[nodes]]
        name = "n1"
        listen = "127.0.0.1:7001"
        partitions = [0, 1]
        storage = true
        [[nodes]]
        name = "n2"
        listen = "127.0.0.1:7002"
        partitions = [0, 1]
        storage = true
        [[nodes]]
        name = "n3"
        listen = "127.0.0.1:7003"
        partitions = [1, 0]
    "#;
    assert_eq!(parse(text), Ok(()));
    let config: NodeConfig = toml::from_str(text).unwrap();
    assert!(config.is_replicated());
    let names = |p| {
        config
            .replicas(p)
            .iter()
            .map(|n| n.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(1), ["n1", "n2", "n3"]);
    let id = NodeConfig::raft_id_of("n3");
    assert_ne!(id, 0);
    assert_ne!(id, NodeConfig::raft_id_of("n2"));
    assert_eq!(config.node_by_raft_id(id).unwrap().name, "n3");
    assert_eq!(config.cluster_id(), 42);
    for (id, problem) in [
        ("", "give the cluster's id"),
        ("cluster_id = 0", "not be 0"),
    ] {
        let problems = parse(&text.replace("cluster_id = 42", id)).unwrap_err();
        assert!(problems.join("\n").contains(problem), "{problems:?}");
    }
    let twice = text.replace("partitions = [1, 0]", "partitions = [1, 1, 0]");
    let problems = parse(&twice).unwrap_err().join("\n");
    assert!(
        problems.contains("partition 1 is listed twice on one node"),
        "{problems}"
    );
}

#[test]
fn with_tls_every_address_must_be_https() {
    let tls = format!(
        "{}\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"ca.pem\"\n",
        GOOD
    );
    let problems = parse(&tls).unwrap_err().join("\n");
    assert!(
        problems.contains("\"n1\": with TLS, give its address"),
        "{problems}"
    );
    assert!(problems.contains("must be an https:// URL"), "{problems}");
}

#[test]
fn unknown_fields_and_missing_fields_are_refused() {
    let unknown = GOOD.replace("partitions = 2", "partitions = 2\nshards = 4");
    assert!(parse(&unknown).unwrap_err()[0].contains("unknown field"));
    let missing = GOOD.replace("data_dir = \"/tmp/n1\"", "");
    assert!(parse(&missing).unwrap_err()[0].contains("data_dir"));
}
