//! A new replica's start from a copy of another's versions (`journaldb_storage::copy`):
//! the copy answers every read the donor answers, at and above the donor's horizon, and
//! resumes its feeds after the donor's positions; a reply no correct replica sends is
//! refused with the store left without positions; a copy cut short leaves nothing that
//! a later copy from another replica keeps.

use std::collections::BTreeMap;

use journaldb_proto::{Lsn, Mutation, PartitionId, Timestamp, TxnId, pb};
use journaldb_storage::copy::copy_into;
use journaldb_storage::{Engine, Error, MemoryEngine, StorageNode, VersionStore};

use crate::{memory, rocks};

const A: PartitionId = PartitionId::new(0);
const B: PartitionId = PartitionId::new(1);

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn record(t: u64, mutation: Mutation) -> pb::Record {
    pb::Record::commit(TxnId::new(u128::from(t)), ts(t), [mutation], &[])
}

/// A donor over `store`: keys k0..k49 written at τ 1..=50 on journal A (k7 deleted at
/// 60), then again at τ 101..=150 on B, with heartbeats so that the watermark passes
/// 150; checkpointed at `horizon`.
fn donor<S: Engine>(store: S, horizon: u64) -> StorageNode<S> {
    donor_of(store, horizon, true)
}

/// [`donor`], with or without the delete.
fn donor_of<S: Engine>(store: S, horizon: u64, delete: bool) -> StorageNode<S> {
    let node = StorageNode::open(store, &[A, B]).unwrap();
    let mut lsn = (Lsn::ZERO, Lsn::ZERO);
    for i in 0..50u64 {
        lsn.0 = lsn.0.next();
        let put = Mutation::put(format!("k{i}"), format!("a{i}"));
        node.ingest(A, lsn.0, &record(i + 1, put)).unwrap();
    }
    lsn.0 = lsn.0.next();
    let k7 = match delete {
        true => Mutation::delete("k7"),
        false => Mutation::put("k8", "a8 again"),
    };
    node.ingest(A, lsn.0, &record(60, k7)).unwrap();
    for i in 0..50u64 {
        lsn.1 = lsn.1.next();
        let put = Mutation::put(format!("k{i}"), format!("b{i}"));
        node.ingest(B, lsn.1, &record(i + 101, put)).unwrap();
    }
    node.ingest(A, lsn.0.next(), &pb::Record::heartbeat(ts(200)))
        .unwrap();
    node.ingest(B, lsn.1.next(), &pb::Record::heartbeat(ts(200)))
        .unwrap();
    node.checkpoint(ts(horizon)).unwrap();
    node
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Copies `from` into `into`, pages of `page` bytes, through a reply `tamper` may change.
fn copy<S: Engine, T: Engine>(
    from: &StorageNode<S>,
    into: &T,
    cluster: u64,
    page: usize,
    floors: &BTreeMap<PartitionId, Lsn>,
    mut tamper: impl FnMut(usize, &mut pb::CopyReply) -> Result<(), Error>,
) -> Result<journaldb_storage::copy::Copied, Error> {
    let mut n = 0;
    runtime().block_on(copy_into(into, 9, floors, |request| {
        let reply = from.copy_page(&request.after, page).map(|mut reply| {
            reply.cluster = cluster;
            reply
        });
        n += 1;
        let reply = reply.and_then(|mut reply| tamper(n, &mut reply).map(|()| reply));
        std::future::ready(reply)
    }))
}

fn reads<S: Engine>(node: &StorageNode<S>, at: u64) -> Vec<Option<bytes::Bytes>> {
    (0..50)
        .map(|i| {
            node.read_at(ts(at), |s| s.get(format!("k{i}").as_bytes(), ts(at)))
                .unwrap()
        })
        .collect()
}

#[test]
fn a_copy_answers_what_its_donor_answers_and_resumes_after_its_positions() {
    let from = donor(MemoryEngine::new(), 30);
    let into = rocks();
    let copied = copy(&from, &into.store, 9, 300, &BTreeMap::new(), |_, _| Ok(())).unwrap();
    assert_eq!(copied.applied, from.store().applied().unwrap());
    assert_eq!(copied.watermark, ts(200));
    assert_eq!(copied.gc_horizon, ts(30));
    assert!(copied.versions > 50, "{copied:?}");
    let node = StorageNode::open(into.store, &[A, B]).unwrap();
    assert_eq!(node.watermark(), ts(200));
    assert_eq!(node.next_lsn(A), Some(Lsn::new(53)));
    assert_eq!(node.next_lsn(B), Some(Lsn::new(52)));
    for at in [30, 45, 60, 120, 200] {
        assert_eq!(reads(&node, at), reads(&from, at), "as of {at}");
    }
    assert!(matches!(
        node.read_at(ts(29), |_| Ok(())),
        Err(Error::SnapshotTooOld { .. })
    ));
}

#[test]
fn replies_no_replica_sends_are_refused_and_leave_no_positions() {
    let from = donor(MemoryEngine::new(), 0);
    type Tamper = Box<dyn FnMut(usize, &mut pb::CopyReply) -> Result<(), Error>>;
    let cases: Vec<(&str, u64, Tamper)> = vec![
        ("another cluster", 8, Box::new(|_, _| Ok(()))),
        (
            "a metadata key",
            9,
            Box::new(|n, r: &mut pb::CopyReply| {
                if n == 2 {
                    r.versions[0].key = b"\x00applied/x".to_vec().into();
                }
                Ok(())
            }),
        ),
        (
            "keys out of order",
            9,
            Box::new(|_, r: &mut pb::CopyReply| {
                r.versions.reverse();
                Ok(())
            }),
        ),
        (
            "a page again",
            9,
            Box::new({
                let mut first = None;
                move |n, r: &mut pb::CopyReply| {
                    if n == 1 {
                        first = Some(r.versions.clone());
                    } else if n == 3 {
                        r.versions = first.clone().unwrap();
                    }
                    Ok(())
                }
            }),
        ),
        (
            "a malformed value",
            9,
            Box::new(|_, r: &mut pb::CopyReply| {
                r.versions[0].value = b"\x07".to_vec().into();
                Ok(())
            }),
        ),
        (
            "an empty page that is not the last",
            9,
            Box::new(|n, r: &mut pb::CopyReply| {
                if n == 2 {
                    r.versions.clear();
                    r.done = false;
                }
                Ok(())
            }),
        ),
        (
            "a partition named twice",
            9,
            Box::new(|_, r: &mut pb::CopyReply| {
                let again = r.applied.first().cloned();
                r.applied.extend(again);
                Ok(())
            }),
        ),
    ];
    for (case, cluster, tamper) in cases {
        let into = MemoryEngine::new();
        let refused = copy(&from, &into, cluster, 200, &BTreeMap::new(), tamper);
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{case}: {refused:?}"
        );
        assert!(into.applied().unwrap().is_empty(), "{case}");
    }
}

/// A copy from a donor that dies half-way leaves versions behind; the next copy, from a
/// replica that deleted k7 (which the first did not have yet) and collected the delete,
/// must not let the first one's k7 come back.
#[test]
fn a_copy_cut_short_leaves_nothing_the_next_one_keeps() {
    for subject in [memory(), rocks()] {
        let into = subject.store;
        let behind = donor_of(MemoryEngine::new(), 0, false);
        // It goes away just before the last page.
        let cut = copy(&behind, &into, 9, 200, &BTreeMap::new(), |_, r| {
            match r.done {
                true => Err(Error::Io("the donor went away".into())),
                false => Ok(()),
            }
        });
        assert!(matches!(cut, Err(Error::Io(_))), "{cut:?}");
        assert!(into.applied().unwrap().is_empty());
        assert!(
            into.seek_ge(b"\x01").unwrap().is_some(),
            "pages were written"
        );
        // The second donor collected below 80: k7's older versions and its tombstone are
        // gone.
        let collected = donor(MemoryEngine::new(), 80);
        collected.store().compact().unwrap();
        copy(&collected, &into, 9, 200, &BTreeMap::new(), |_, _| Ok(())).unwrap();
        let node = StorageNode::open(into, &[A, B]).unwrap();
        assert_eq!(reads(&node, 80), reads(&collected, 80));
        assert_eq!(reads(&node, 80)[7], None, "k7 stays deleted");
    }
}

/// A donor behind the journals' first records (one the truncation stopped waiting for)
/// is refused before anything is written; one that restarts mid-copy from an older flush
/// (its positions go back) is refused too.
#[test]
fn a_stale_or_restarted_donor_is_refused() {
    let from = donor(MemoryEngine::new(), 0);
    let into = MemoryEngine::new();
    let floors = BTreeMap::from([(A, Lsn::new(40)), (B, Lsn::new(60))]);
    let refused = copy(&from, &into, 9, 200, &floors, |_, _| Ok(()));
    assert!(
        matches!(refused, Err(Error::InvalidArgument(ref e)) if e.contains("starts at")),
        "{refused:?}"
    );
    assert!(into.seek_ge(b"\x01").unwrap().is_none(), "nothing written");
    let floors = BTreeMap::from([(A, Lsn::new(53)), (B, Lsn::new(52))]);
    copy(&from, &into, 9, 200, &floors, |_, _| Ok(())).unwrap();

    let into = MemoryEngine::new();
    let went_back = copy(&from, &into, 9, 200, &BTreeMap::new(), |n, r| {
        if n == 3 {
            r.applied[0].lsn -= 1;
        }
        Ok(())
    });
    assert!(
        matches!(went_back, Err(Error::InvalidArgument(ref e)) if e.contains("went back")),
        "{went_back:?}"
    );
    assert!(into.applied().unwrap().is_empty());
}

#[test]
fn only_an_empty_store_takes_a_copy() {
    let from = donor(MemoryEngine::new(), 0);
    let into = donor(MemoryEngine::new(), 0);
    let refused = copy(&from, into.store(), 9, 200, &BTreeMap::new(), |_, _| Ok(()));
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
}
