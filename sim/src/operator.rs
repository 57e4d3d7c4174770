//! The operator host of the `disk-wiped` schedule: what `journaldb admin replace` does,
//! through the cluster's `ClusterService`, for each replacement the schedule asks for —
//! `ReplaceNode` in the metadata group, then `ReplaceReplica` for every group of the new
//! node, each retried on any node until it is done. A replacement that is not done within
//! [`PATIENCE`] of the end of the fault phase fails the run (liveness: once faults heal, a
//! replacement finishes).

use std::sync::Arc;
use std::time::Duration;

use journaldb::cluster::transport::Connector;
use journaldb_proto::pb;
use journaldb_proto::pb::cluster_service_client::ClusterServiceClient;
use journaldb_proto::status::ErrorKind;
use tonic::transport::{Channel, Endpoint};

use crate::recorder::{FAULT_PHASE, Replacement, Shared, sim_now};

/// How long after the fault phase a replacement may still take.
const PATIENCE: Duration = Duration::from_secs(30);

fn channel(url: &str, connector: &Connector) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .expect("node URLs are valid")
        // A group's leader answers once the new node caught up (up to 20 s).
        .timeout(Duration::from_secs(40))
        .connect_timeout(Duration::from_secs(1));
    connector.channel(&endpoint)
}

/// Runs until the fault phase is over and no replacement is pending.
pub(crate) async fn operator_main(urls: Vec<String>, shared: Arc<Shared>) {
    let connector = crate::net::connector();
    let clients: Vec<_> = urls
        .iter()
        .map(|u| ClusterServiceClient::new(channel(u, &connector)))
        .collect();
    loop {
        let next = shared.replacements.lock().pop_front();
        match next {
            Some(replacement) => replace(&clients, &replacement, &shared).await,
            None if sim_now() >= FAULT_PHASE => return,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Calls `call` on each node in turn until one answers, or one refuses with a definite
/// error (the run then fails), or the deadline passes.
async fn ask<T, F, Fut>(
    clients: &[ClusterServiceClient<Channel>],
    what: &str,
    shared: &Shared,
    call: F,
) -> Option<T>
where
    F: Fn(ClusterServiceClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = FAULT_PHASE + PATIENCE;
    let mut last = String::new();
    loop {
        for client in clients {
            match call(client.clone()).await {
                Ok(reply) => return Some(reply.into_inner()),
                Err(status) if ErrorKind::of(&status) == Some(ErrorKind::InvalidArgument) => {
                    shared.fail(format!("{what}: refused: {}", status.message()));
                    return None;
                }
                Err(status) => last = status.message().chars().take(160).collect(),
            }
        }
        if sim_now() >= deadline {
            shared.fail(format!(
                "{what}: not done {PATIENCE:?} after the faults healed: {last}"
            ));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn replace(
    clients: &[ClusterServiceClient<Channel>],
    replacement: &Replacement,
    shared: &Shared,
) {
    let Replacement { old, new, address } = replacement;
    shared.event(sim_now(), "op", format_args!("replace {old} by {new}"));
    let request = pb::ReplaceNodeRequest {
        old: old.clone(),
        new: new.clone(),
        address: address.clone(),
    };
    let what = format!("recording that {new} replaces {old}");
    let Some(metadata) = ask(clients, &what, shared, |mut c| {
        let request = request.clone();
        async move { c.replace_node(request).await }
    })
    .await
    else {
        return;
    };
    shared.event(
        sim_now(),
        "op",
        format_args!("recorded: topology version {}", metadata.version),
    );
    let groups = metadata
        .nodes
        .iter()
        .find(|n| n.name == *new)
        .map(|n| n.groups.clone())
        .unwrap_or_default();
    for group in groups {
        let request = pb::ReplaceReplicaRequest {
            group,
            old: old.clone(),
            new: new.clone(),
        };
        let what = format!("replacing {old} by {new} in group {group}");
        let Some(reply) = ask(clients, &what, shared, |mut c| {
            let request = request.clone();
            async move { c.replace_replica(request).await }
        })
        .await
        else {
            return;
        };
        shared.event(
            sim_now(),
            "op",
            format_args!("group {group}: voters {:?}", reply.voters),
        );
    }
    shared.event(sim_now(), "op", format_args!("{new} replaced {old}"));
}
