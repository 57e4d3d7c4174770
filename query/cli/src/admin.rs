//! `journaldb admin status` and `journaldb admin replace`.
//!
//! `status`: every Raft group of the cluster in DIR as its replicas see
//! it — for the metadata group and each partition, its leader and term, the commit index, the members, and each
//! replica's role, applied index and lag behind the leader (what the leader knows the
//! replica holds, else what the replica says it applied). Exit code 1 if a node does not
//! answer, a partition has no leader, or a group stopped on some node.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use journaldb_node::{NodeConfig, NodeEntry};
use journaldb_proto::pb;
use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
use journaldb_proto::pb::{ReplicaStatus, ReplicasRequest};
use journaldb_proto::status::ErrorKind;

use crate::launcher::{
    alive, config_path, connect, connect_with, free_port, node_names, pid_path, spawn, write_config,
};

/// Prints the groups of the cluster in `dir`; `Ok(false)` if something is unwell.
pub async fn status(dir: &Path) -> anyhow::Result<bool> {
    let mut names = BTreeMap::new();
    // Each node's answer: its replicas, or `None` if it did not answer.
    let mut answers: Vec<(String, Option<Vec<ReplicaStatus>>)> = Vec::new();
    let mut replicated = false;
    for name in node_names(dir)? {
        let config = NodeConfig::load(&config_path(dir, &name))?;
        replicated |= config.is_replicated();
        names.insert(NodeConfig::raft_id_of(&name), name.clone());
        let answer = match connect(&config.me().url()).await {
            Some(channel) => ClusterServiceClient::new(channel)
                .replicas(ReplicasRequest {})
                .await
                .ok()
                .map(|r| r.into_inner().replicas),
            None => None,
        };
        answers.push((name, answer));
    }
    if !replicated {
        println!("single-replica cluster: every journal has one replica (no Raft groups)");
    }
    let name_of = |id: u64| names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"));
    let mut well = true;
    for (name, answer) in &answers {
        if answer.is_none() {
            println!("{name}: does not answer");
            well = false;
        }
    }
    let mut groups: BTreeMap<u64, Vec<(&str, &ReplicaStatus)>> = BTreeMap::new();
    for (name, answer) in &answers {
        for replica in answer.iter().flatten() {
            groups
                .entry(replica.group)
                .or_default()
                .push((name, replica));
        }
    }
    for (group, replicas) in &groups {
        let what = match group.checked_sub(1) {
            Some(p) => format!("partition {p}"),
            None => "metadata group".to_owned(),
        };
        let leader = replicas
            .iter()
            .filter(|(_, r)| r.role == "leader")
            .max_by_key(|(_, r)| r.term)
            .map(|(_, r)| *r);
        let list = |ids: &[u64]| {
            ids.iter()
                .map(|id| name_of(*id))
                .collect::<Vec<_>>()
                .join(",")
        };
        match leader {
            Some(l) => {
                let mut line = format!(
                    "{what}: leader {} term {} commit {} voters {}",
                    name_of(l.leader),
                    l.term,
                    l.commit,
                    list(&l.voters)
                );
                if !l.learners.is_empty() {
                    line += &format!(" learners {}", list(&l.learners));
                }
                if !l.outgoing.is_empty() {
                    line += &format!(" (joint; outgoing {})", list(&l.outgoing));
                }
                println!("{line}");
            }
            None => {
                println!("{what}: no leader");
                well = false;
            }
        }
        for (name, r) in replicas {
            let id = NodeConfig::raft_id_of(name);
            let matched = leader
                .and_then(|l| l.progress.iter().find(|p| p.node == id))
                .map(|p| p.matched);
            let lag = match (leader, matched) {
                (Some(l), Some(m)) => l.commit.saturating_sub(m),
                (Some(l), None) => l.commit.saturating_sub(r.applied),
                (None, _) => r.commit.saturating_sub(r.applied),
            };
            let mut line = format!(
                "  {name:<8} {:<13} term {:<4} applied {:<8} lag {lag:<6} first lsn {}",
                r.role, r.term, r.applied, r.first_lsn
            );
            if !r.failed.is_empty() {
                line += &format!("  STOPPED: {}", r.failed);
                well = false;
            }
            println!("{line}");
        }
        // Members that did not answer, as the leader knows them.
        if let Some(l) = leader {
            let members = l.voters.iter().chain(&l.learners).chain(&l.outgoing);
            for id in members {
                let name = name_of(*id);
                if replicas.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                let matched = l
                    .progress
                    .iter()
                    .find(|p| p.node == *id)
                    .map_or(0, |p| p.matched);
                println!(
                    "  {name:<8} {:<13} {:<9} {:<16} lag {}",
                    "unreachable",
                    "",
                    "",
                    l.commit.saturating_sub(matched)
                );
            }
        }
    }
    Ok(well)
}

/// `journaldb admin replace`: node `new` (at `address`, else a free local port) replaces
/// the lost node `old` of the local cluster in `dir` (see the subcommand's help). Each step
/// is idempotent, so a run cut short is finished by running it again. With `wait` `None`,
/// returns once the replacement is recorded and the new node started: the groups' leaders
/// finish it.
pub async fn replace(
    dir: &Path,
    old: &str,
    new: &str,
    address: Option<&str>,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let (wait, finish) = match wait {
        Some(wait) => (wait, true),
        None => (Duration::from_secs(30), false),
    };
    let names = node_names(dir)?;
    let template = match names.iter().find(|n| *n == old || *n == new) {
        Some(name) => NodeConfig::load(&config_path(dir, name))?,
        None => bail!("{} holds no configuration of {old} or {new}", dir.display()),
    };
    if !template.is_replicated() {
        bail!("a single-replica cluster's nodes cannot be replaced (each journal has one copy)");
    }
    let listen = match (address, template.nodes.iter().find(|n| n.name == new)) {
        (Some(a), _) => a.to_owned(),
        (None, Some(entry)) => entry.listen.clone(),
        (None, None) => format!("127.0.0.1:{}", free_port()?),
    };
    // 1. The record in the metadata group, through any node that answers.
    let peers: Vec<String> = template
        .nodes
        .iter()
        .filter(|n| n.name != old && n.name != new)
        .map(|n| n.url())
        .collect();
    let request = pb::ReplaceNodeRequest {
        old: old.to_owned(),
        new: new.to_owned(),
        address: listen.clone(),
    };
    let metadata = ask_any(&peers, wait, "record the replacement", |mut c| {
        let request = request.clone();
        async move { c.replace_node(request).await }
    })
    .await?;
    println!(
        "recorded: {new} ({listen}) replaces {old} (topology version {})",
        metadata.version
    );

    // 2. The local cluster's configurations: `new` where `old` was, in every file.
    let entries: Vec<NodeEntry> = template
        .nodes
        .iter()
        .map(|n| match n.name == old {
            true => NodeEntry {
                name: new.to_owned(),
                listen: listen.clone(),
                address: None,
                ..n.clone()
            },
            false => n.clone(),
        })
        .collect();
    let cluster_id = template.cluster_id();
    for e in &entries {
        write_config(dir, template.partitions, cluster_id, e, &entries)?;
    }
    let old_config = config_path(dir, old);
    if old_config.exists() {
        std::fs::rename(&old_config, dir.join(format!("{old}.toml.replaced")))?;
    }
    let _ = std::fs::remove_file(pid_path(dir, old));

    // 3. The new node, unless it runs already.
    let running = std::fs::read_to_string(pid_path(dir, new)).is_ok_and(|pid| alive(pid.trim()));
    if !running {
        spawn(dir, new, Some("--join"))?;
        println!(
            "started {new}: journaldb serve --config {} --join",
            config_path(dir, new).display()
        );
    }

    if !finish {
        println!(
            "each group's leader swaps {new} in once it has caught up: see `journaldb admin \
             status --dir {}`",
            dir.display()
        );
        return Ok(());
    }

    // 4. Every group of the new node: the old voter out, the new one in, on its leader.
    let groups = metadata
        .nodes
        .iter()
        .find(|n| n.name == new)
        .map(|n| n.groups.clone())
        .unwrap_or_default();
    let members: Vec<String> = entries.iter().map(NodeEntry::url).collect();
    for group in groups {
        let what = match group {
            0 => "the metadata group".to_owned(),
            g => format!("partition {}", g - 1),
        };
        let request = pb::ReplaceReplicaRequest {
            group,
            old: old.to_owned(),
            new: new.to_owned(),
        };
        let reply = ask_any(&members, wait, &what, |mut c| {
            let request = request.clone();
            async move { c.replace_replica(request).await }
        })
        .await?;
        println!("{what}: {} voters, {new} among them", reply.voters.len());
    }
    println!("{new} replaced {old} in every group");
    Ok(())
}

/// Asks the nodes at `urls` in turn, again and again, until one answers `call` or an error
/// that is not worth retrying comes back, for at most `wait`.
async fn ask_any<T, F, Fut>(
    urls: &[String],
    wait: Duration,
    what: &str,
    call: F,
) -> anyhow::Result<T>
where
    F: Fn(ClusterServiceClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = String::from("no node answered");
    loop {
        for url in urls {
            // A group's leader answers a replacement once the new node caught up (up to
            // 20 s), after forwarding it perhaps (up to 30 s).
            let Some(channel) = connect_with(url, Duration::from_secs(40)).await else {
                last = format!("{url} does not answer");
                continue;
            };
            match call(ClusterServiceClient::new(channel)).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) => {
                    let kind = ErrorKind::of(&status);
                    if kind == Some(ErrorKind::InvalidArgument) {
                        bail!("{what}: {}", status.message());
                    }
                    last = format!("{url}: {}", status.message());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: not done within {wait:?} (run the command again to go on): {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
