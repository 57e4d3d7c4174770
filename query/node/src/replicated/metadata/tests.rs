use super::*;

fn metadata() -> pb::Metadata {
    let node = |name: &str, port: u16| pb::MetadataNode {
        name: name.into(),
        address: format!("http://127.0.0.1:{port}"),
        storage: true,
        groups: vec![0, 1, 2],
    };
    pb::Metadata {
        version: 1,
        cluster_id: 7,
        partitions: 2,
        nodes: vec![node("n0", 7000), node("n1", 7001), node("n2", 7002)],
        origins: Vec::new(),
        retired: Vec::new(),
    }
}

fn replace(old: &str, new: &str, address: &str) -> pb::ReplaceNodeRequest {
    pb::ReplaceNodeRequest {
        old: old.into(),
        new: new.into(),
        address: address.into(),
    }
}

fn command(request: pb::ReplaceNodeRequest) -> pb::MetadataCommand {
    pb::MetadataCommand {
        command: Some(pb::metadata_command::Command::Replace(request)),
    }
}

#[test]
fn a_replacement_moves_the_groups_and_retires_the_name_once() {
    let mut state = Some(metadata());
    let request = replace("n1", "n3", "http://127.0.0.1:7003");
    assert_eq!(check_replace(state.as_ref().unwrap(), &request), Ok(true));
    apply(&mut state, command(request.clone()));
    let m = state.clone().unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(m.retired, vec!["n1".to_owned()]);
    assert_eq!(groups_of(&m, "n3"), Some(&[0, 1, 2][..]));
    assert_eq!(groups_of(&m, "n1"), None);
    assert_eq!(check_replace(&m, &request), Ok(false), "done already");
    apply(&mut state, command(request));
    assert_eq!(state.unwrap(), m, "applying it again changes nothing");
}

#[test]
fn replacements_no_correct_operator_asks_for_are_refused() {
    let m = metadata();
    let refused =
        |old: &str, new: &str, address: &str| check_replace(&m, &replace(old, new, address));
    assert!(refused("n1", "n1", "http://127.0.0.1:7003").is_err());
    assert!(refused("n9", "n3", "http://127.0.0.1:7003").is_err());
    assert!(refused("n1", "n2", "http://127.0.0.1:7003").is_err());
    assert!(refused("n1", "n3", "http://127.0.0.1:7002").is_err());
    assert!(refused("n1", "", "http://127.0.0.1:7003").is_err());
    assert!(refused("n1", "a b", "http://127.0.0.1:7003").is_err());
    let long = "x".repeat(65);
    assert!(refused("n1", &long, "http://127.0.0.1:7003").is_err());
    assert!(
        refused("n1", "n3", "127.0.0.1:7003").is_err(),
        "not normalized"
    );
    // The old node's own address may be reused by its replacement.
    assert_eq!(refused("n1", "n3", "http://127.0.0.1:7001"), Ok(true));

    let mut state = Some(m.clone());
    apply(
        &mut state,
        command(replace("n1", "n3", "http://127.0.0.1:7003")),
    );
    let after = state.unwrap();
    let again = |old, new| check_replace(&after, &replace(old, new, "http://127.0.0.1:7004"));
    assert!(again("n1", "n4").is_err(), "n1 is gone");
    assert!(
        again("n2", "n1").is_err(),
        "a retired name never comes back"
    );
}

#[test]
fn addresses_are_host_and_port_only() {
    assert_eq!(
        normalize_address("127.0.0.1:7003").as_deref(),
        Ok("http://127.0.0.1:7003")
    );
    assert_eq!(
        normalize_address("https://db.example:443/").as_deref(),
        Ok("https://db.example:443")
    );
    for bad in [
        "",
        "127.0.0.1",
        "127.0.0.1:0",
        "ftp://h:1",
        "h:1/path",
        "h:1?q",
        "http://:1",
        &"h".repeat(300),
    ] {
        assert!(normalize_address(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn only_the_first_genesis_applies() {
    let genesis = |version| pb::MetadataCommand {
        command: Some(pb::metadata_command::Command::Genesis(pb::Metadata {
            version,
            ..metadata()
        })),
    };
    let mut state = None;
    apply(
        &mut state,
        command(replace("n1", "n3", "http://127.0.0.1:7003")),
    );
    assert_eq!(state, None, "nothing to replace in");
    apply(&mut state, genesis(1));
    apply(&mut state, genesis(5));
    assert_eq!(state.unwrap().version, 1);
}
