//! `journaldb admin status`: every Raft group of the cluster in DIR as its replicas see
//! it — for each partition, its leader and term, the commit index, the members, and each
//! replica's role, applied index and lag behind the leader (what the leader knows the
//! replica holds, else what the replica says it applied). Exit code 1 if a node does not
//! answer, a partition has no leader, or a group stopped on some node.

use std::collections::BTreeMap;
use std::path::Path;

use journaldb_node::NodeConfig;
use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
use journaldb_proto::pb::{ReplicaStatus, ReplicasRequest};

use crate::launcher::{config_path, connect, node_names};

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
    let mut partitions: BTreeMap<u32, Vec<(&str, &ReplicaStatus)>> = BTreeMap::new();
    for (name, answer) in &answers {
        for replica in answer.iter().flatten() {
            partitions
                .entry(replica.partition)
                .or_default()
                .push((name, replica));
        }
    }
    for (partition, replicas) in &partitions {
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
                    "partition {partition}: leader {} term {} commit {} voters {}",
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
                println!("partition {partition}: no leader");
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
                "  {name:<8} {:<13} term {:<4} applied {:<8} lag {lag}",
                r.role, r.term, r.applied
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
