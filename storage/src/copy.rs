//! A new storage replica's start from a copy of another's versions (ARCHITECTURE §5
//! "Truncation", §6): once the journals have dropped a prefix, a replica with an empty
//! store cannot be rebuilt from them, so it copies a live replica's versions and resumes
//! its feeds after the positions the copy covers.
//!
//! [`StorageNode::copy_page`](crate::StorageNode::copy_page) serves the copy a page at a
//! time, from the live store: the first page names the applied positions and watermark,
//! read together; the versions follow in key order. Records applied after those positions
//! may be in the copy too — the new replica applies them again, writing the same
//! versions — and versions the donor collects meanwhile lie below the horizon each page
//! names: the new replica takes the last page's horizon, so it never answers a read the
//! copy may be missing a version for.
//!
//! [`copy_into`] drives it on the new replica and trusts no byte of a reply: a reply of
//! another cluster, a key that is no version key or does not follow the last one, a value
//! that does not decode, or a page that brings nothing and is not the last is refused.
//! It first drops whatever versions a copy cut short left behind (versions of two donors
//! mixed could resurrect a key one of them had deleted and compacted away), and writes the
//! positions, watermark and horizon only once every version is in, then flushes: until
//! then the store has no positions, and the next start copies again.

use std::collections::BTreeMap;
use std::future::Future;

use journaldb_proto::{Lsn, PartitionId, Timestamp, pb};

use crate::encoding::{decode_value_owned, decode_version_key};
use crate::error::{Error, Result};
use crate::store::{Engine, VersionStore, WriteBatch};

/// Version bytes a [`copy_into`] asks for per page.
pub const COPY_PAGE_BYTES: u32 = 4 << 20;

/// What a finished copy covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Each journal's applied position: the feeds resume after it.
    pub applied: BTreeMap<PartitionId, Lsn>,
    /// Every version at or below it is in the store.
    pub watermark: Timestamp,
    /// Reads below it are refused.
    pub gc_horizon: Timestamp,
    /// Versions copied.
    pub versions: u64,
}

/// Fills `store`, which has no applied positions, with a copy of another replica's
/// versions: `fetch` asks that replica for one page (`StorageService.Copy`); `cluster` is
/// this replica's cluster (0: not checked); `floors` is, for each journal, the first
/// record the journals still hold (as far as the caller could learn): a copy whose
/// positions are behind one (a stale donor: one the truncation no longer waited for) is
/// refused, since its feed could never continue. An error leaves the store without
/// positions (copy again, from this replica or another), unless the final flush failed:
/// the store must then be reopened (what it holds unflushed is lost with the process).
pub async fn copy_into<S, F, Fut>(
    store: &S,
    cluster: u64,
    floors: &BTreeMap<PartitionId, Lsn>,
    mut fetch: F,
) -> Result<Copied>
where
    S: Engine,
    F: FnMut(pb::CopyRequest) -> Fut,
    Fut: Future<Output = Result<pb::CopyReply>>,
{
    if !store.applied()?.is_empty() {
        return Err(Error::InvalidArgument(
            "a copy goes only into a store that has applied nothing".into(),
        ));
    }
    store.clear_versions()?;
    let refused = |why: String| Error::InvalidArgument(format!("copy refused: {why}"));
    let mut after = Vec::new();
    let mut first: Option<(BTreeMap<PartitionId, Lsn>, Timestamp)> = None;
    let mut horizon = Timestamp::ZERO;
    let mut versions = 0u64;
    loop {
        let reply = fetch(pb::CopyRequest {
            after: after.clone().into(),
            max_bytes: COPY_PAGE_BYTES,
        })
        .await?;
        if cluster != 0 && reply.cluster != cluster {
            return Err(refused(format!(
                "the replica belongs to cluster {:x}, not {cluster:x}",
                reply.cluster
            )));
        }
        // Every page names the donor's positions now: they only grow while it runs, so
        // one that went back means the donor restarted from an older flush, and the pages
        // read since may lack versions the first page's positions promised.
        let mut applied = BTreeMap::new();
        for position in &reply.applied {
            let p = PartitionId::new(position.partition);
            if applied.insert(p, Lsn::new(position.lsn)).is_some() {
                return Err(refused(format!("{p} is named twice")));
            }
        }
        let watermark = Timestamp::from_nanos(reply.watermark);
        match &first {
            None => {
                for (p, floor) in floors {
                    let next = applied.get(p).copied().unwrap_or(Lsn::ZERO).next();
                    if next < *floor {
                        return Err(refused(format!(
                            "the replica resumes {p} at {next}, but its journal starts at {floor}"
                        )));
                    }
                }
                first = Some((applied, watermark));
            }
            Some((base, base_watermark)) => {
                let behind = base
                    .iter()
                    .any(|(p, lsn)| applied.get(p).is_none_or(|now| now < lsn));
                if behind || watermark < *base_watermark {
                    return Err(refused(
                        "the replica went back to older positions (it restarted)".into(),
                    ));
                }
            }
        }
        horizon = horizon.max(Timestamp::from_nanos(reply.gc_horizon));
        if reply.versions.is_empty() && !reply.done {
            return Err(refused(
                "a page without versions that is not the last".into(),
            ));
        }
        let mut pairs = Vec::with_capacity(reply.versions.len());
        for version in reply.versions {
            if decode_version_key(&version.key).is_none() || version.key[..] <= after[..] {
                return Err(refused(format!(
                    "{:?} is no version key following the last",
                    &version.key[..version.key.len().min(32)]
                )));
            }
            if decode_value_owned(version.value.to_vec()).is_err() {
                return Err(refused("a malformed version value".into()));
            }
            after = version.key.to_vec();
            pairs.push((version.key.to_vec(), version.value.to_vec()));
        }
        versions += pairs.len() as u64;
        store.write_atomic(pairs)?;
        if reply.done {
            break;
        }
    }
    // The versions are durable before the positions that promise them.
    store.flush()?;
    let (applied, watermark) = first.expect("the first page was read");
    store.write_gc_horizon(horizon)?;
    store.write(WriteBatch {
        versions: Vec::new(),
        applied: applied.iter().map(|(p, lsn)| (*p, *lsn)).collect(),
        watermark: Some(watermark),
        in_order: true,
    })?;
    store.flush()?;
    Ok(Copied {
        applied,
        watermark,
        gc_horizon: horizon,
        versions,
    })
}
