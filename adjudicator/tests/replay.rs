//! Rebuilding an adjudicator from its journal records: failover rebuilds the conflict
//! window, outcomes and pending votes; an embedded reopen sets the horizon to the floor.

use bytes::Bytes;
use journaldb_adjudicator::{
    Adjudicator, AdjudicatorConfig, CommitDecision, CommitRequest, PrepareDecision, PrepareRequest,
    ReplayError, ReplayMode, StatusDecision, TxnStatus, Verdict,
};
use journaldb_proto::{Epoch, Mutation, PartitionId, TimeInterval, Timestamp, TxnId, pb};

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn at(n: u64) -> TimeInterval {
    TimeInterval::exact(ts(n))
}

/// Partition 0 owns keys starting with "a".
fn owns(key: &[u8]) -> bool {
    key.starts_with(b"a")
}

fn commit_req(id: u128, start: u64, keys: &[&str]) -> CommitRequest {
    CommitRequest {
        txn_id: TxnId::new(id),
        start_ts: ts(start),
        mutations: keys
            .iter()
            .map(|k| Mutation::put(k.to_string(), "v"))
            .collect(),
        retry: false,
    }
}

fn append(log: &mut Vec<pb::Record>, decision: CommitDecision) -> Timestamp {
    match decision {
        CommitDecision::Append { commit_ts, record } => {
            log.push(record);
            commit_ts
        }
        other => panic!("{other:?}"),
    }
}

/// A live history on partition 0; returns its records and the live adjudicator.
fn history() -> (Vec<pb::Record>, Adjudicator, Timestamp) {
    let mut live = Adjudicator::new(PartitionId::new(0), AdjudicatorConfig::default(), ts(0));
    let mut log = Vec::new();
    let t1 = append(&mut log, live.commit(at(100), &commit_req(1, 50, &["a1"])));
    live.appended(TxnId::new(1));
    // A cross-partition transaction coordinated here: its Commit holds "b1" too.
    let prepare = |id, key: &str| PrepareRequest {
        txn_id: TxnId::new(id),
        start_ts: ts(120),
        keys: vec![Bytes::from(key.to_string())],
        coordinator: PartitionId::new(0),
        coordinator_epoch: Epoch::default(),
    };
    let PrepareDecision::Append { vote_ts, record } = live.prepare(at(130), &prepare(2, "a2"))
    else {
        panic!("vote");
    };
    log.push(record);
    let decision = live.commit_prepared(
        at(140),
        TxnId::new(2),
        ts(120),
        &[vote_ts, ts(135)],
        &[Mutation::put("a2", "v"), Mutation::put("b1", "v")],
        &[PartitionId::new(0), PartitionId::new(1)],
    );
    let t2 = append(&mut log, decision);
    live.appended(TxnId::new(2));
    log.push(
        live.decide(at(145), TxnId::new(2), Some(t2))
            .unwrap()
            .unwrap(),
    );
    // An undecided vote from another coordinator.
    let undecided = PrepareRequest {
        coordinator: PartitionId::new(1),
        ..prepare(3, "a3")
    };
    let PrepareDecision::Append { record, .. } = live.prepare(at(150), &undecided) else {
        panic!("vote");
    };
    log.push(record);
    log.push(live.heartbeat(at(160)));
    assert!(t1 < t2);
    (log, live, t1)
}

#[test]
fn failover_rebuilds_window_outcomes_and_pending_votes() {
    let (log, live, t1) = history();
    let mut a = Adjudicator::replay(
        PartitionId::new(0),
        AdjudicatorConfig::default(),
        log,
        owns,
        ReplayMode::Failover {
            now: at(200),
            truncated: false,
        },
    )
    .unwrap();
    assert_eq!(a.floor(), live.floor());
    // The window: a snapshot before the write of a1 conflicts.
    assert_eq!(
        a.commit(at(200), &commit_req(10, 60, &["a1"])),
        CommitDecision::Verdict(Verdict::Conflict {
            key: Bytes::from_static(b"a1")
        })
    );
    // Decided records rebuild the window too.
    assert!(matches!(
        a.commit(at(200), &commit_req(11, 125, &["a2"])),
        CommitDecision::Verdict(Verdict::Conflict { .. })
    ));
    // Keys of other partitions in a cross-partition Commit are not ours to track.
    assert!(matches!(
        a.commit(at(200), &commit_req(12, 125, &["b1"])),
        CommitDecision::Append { .. }
    ));
    // Retries get their first outcome.
    let retry = CommitRequest {
        retry: true,
        ..commit_req(1, 50, &["a1"])
    };
    assert_eq!(
        a.commit(at(200), &retry),
        CommitDecision::Verdict(Verdict::Committed { commit_ts: t1 })
    );
    // The undecided vote is pending again and listed for resolution.
    assert!(a.is_pending(b"a3"));
    let undecided: Vec<TxnId> = a.undecided().map(|(id, _)| id).collect();
    assert_eq!(undecided, vec![TxnId::new(3)]);
    assert!(matches!(
        a.commit(at(200), &commit_req(13, 180, &["a3"])),
        CommitDecision::Verdict(Verdict::Conflict { .. })
    ));
}

#[test]
fn a_truncated_journal_knows_outcomes_only_from_its_first_record() {
    let (log, _, _) = history();
    // The first record, t1's Commit, was dropped by truncation.
    let replay = |truncated| {
        Adjudicator::replay(
            PartitionId::new(0),
            AdjudicatorConfig::default(),
            log[1..].to_vec(),
            owns,
            ReplayMode::Failover {
                now: at(200),
                truncated,
            },
        )
        .unwrap()
    };
    let mut a = replay(true);
    // Asked about txn 1 (τs 50 < t1): it may have committed in what was dropped.
    assert!(matches!(
        a.status(at(200), TxnId::new(1), ts(50)),
        StatusDecision::Known(TxnStatus::TooOld(_))
    ));
    // From the first replayed record on, "not found" still means "not committed".
    assert!(matches!(
        a.status(at(200), TxnId::new(9), ts(170)),
        StatusDecision::Abort(_)
    ));
    // A replay that took the rest for the whole journal would abort t1's commit.
    assert!(matches!(
        replay(false).status(at(200), TxnId::new(1), ts(50)),
        StatusDecision::Abort(_)
    ));
}

/// Failover on a journal whose kept records start at τ 1000, far above now − max_txn_age.
fn replay_kept_from_1000(extra: Vec<pb::Record>) -> Adjudicator {
    let config = AdjudicatorConfig {
        max_txn_age: std::time::Duration::from_nanos(500),
        ..AdjudicatorConfig::default()
    };
    let epoch_start = pb::Record {
        kind: Some(pb::record::Kind::EpochStart(pb::EpochStart { epoch: None })),
    };
    let mut records = vec![epoch_start, pb::Record::heartbeat(ts(1_000))];
    records.extend(extra);
    Adjudicator::replay(
        PartitionId::new(0),
        config,
        records,
        owns,
        ReplayMode::Failover {
            now: at(1_100),
            truncated: true,
        },
    )
    .unwrap()
}

#[test]
fn a_truncated_replay_refuses_commits_it_cannot_answer_status_for() {
    let mut a = replay_kept_from_1000(Vec::new());
    // τs 700 is above now − max_txn_age (600), but a commit at 800 may have been dropped:
    // `Status` answers "too old" for it, so a commit must be refused too.
    assert!(matches!(
        a.status(at(1_100), TxnId::new(5), ts(700)),
        StatusDecision::Known(TxnStatus::TooOld(_))
    ));
    assert_eq!(
        a.commit(at(1_100), &commit_req(6, 700, &["a1"])),
        CommitDecision::Verdict(Verdict::TooOld)
    );
    let prepare = PrepareRequest {
        txn_id: TxnId::new(7),
        start_ts: ts(700),
        keys: vec![Bytes::from_static(b"a1")],
        coordinator: PartitionId::new(1),
        coordinator_epoch: Epoch::default(),
    };
    assert!(matches!(
        a.prepare(at(1_100), &prepare),
        PrepareDecision::Refused(CommitDecision::Verdict(Verdict::TooOld))
    ));
    // From the first kept record on, everything is known.
    assert!(matches!(
        a.commit(at(1_100), &commit_req(8, 999, &["a1"])),
        CommitDecision::Append { .. }
    ));
}

#[test]
fn a_truncated_replay_starts_the_window_after_a_commit_whose_vote_was_dropped() {
    // A vote cast before τ 1000 (dropped), decided committed at 1050 in a kept record: its
    // keys are unknown, so no snapshot before 1050 can be checked.
    let decided = pb::Record::decided(TxnId::new(3), ts(1_060), Some(ts(1_050)));
    let mut a = replay_kept_from_1000(vec![decided]);
    assert_eq!(
        a.commit(at(1_100), &commit_req(9, 1_020, &["a1"])),
        CommitDecision::Verdict(Verdict::TooOld)
    );
    assert!(matches!(
        a.commit(at(1_100), &commit_req(10, 1_050, &["a1"])),
        CommitDecision::Append { .. }
    ));
}

#[test]
fn a_coordinators_own_decision_after_a_kept_commit_is_no_orphan() {
    // The coordinator's vote (before τ 1000) was dropped, but its `Commit` at 1050 was
    // kept: the keys are known, so the window needs no wider start.
    let commit = pb::Record::commit(
        TxnId::new(3),
        ts(1_050),
        [Mutation::put("a1", "v")],
        &[PartitionId::new(0), PartitionId::new(1)],
    );
    let decided = pb::Record::decided(TxnId::new(3), ts(1_060), Some(ts(1_050)));
    let mut a = replay_kept_from_1000(vec![commit, decided]);
    assert!(matches!(
        a.commit(at(1_100), &commit_req(9, 1_020, &["a2"])),
        CommitDecision::Append { .. }
    ));
    assert!(matches!(
        a.commit(at(1_100), &commit_req(10, 1_020, &["a1"])),
        CommitDecision::Verdict(Verdict::Conflict { .. })
    ));
}

#[test]
fn a_truncated_replay_with_no_timestamp_knows_nothing_before_now() {
    let epoch_start = pb::Record {
        kind: Some(pb::record::Kind::EpochStart(pb::EpochStart { epoch: None })),
    };
    let mut a = Adjudicator::replay(
        PartitionId::new(0),
        AdjudicatorConfig::default(),
        vec![epoch_start],
        owns,
        ReplayMode::Failover {
            now: at(1_100),
            truncated: true,
        },
    )
    .unwrap();
    assert!(matches!(
        a.status(at(1_100), TxnId::new(5), ts(1_050)),
        StatusDecision::Known(TxnStatus::TooOld(_))
    ));
    assert_eq!(
        a.commit(at(1_100), &commit_req(6, 1_050, &["a1"])),
        CommitDecision::Verdict(Verdict::TooOld)
    );
}

#[test]
fn an_embedded_reopen_sets_the_horizon_to_the_floor() {
    let (log, live, _) = history();
    let mut a = Adjudicator::replay(
        PartitionId::new(0),
        AdjudicatorConfig::default(),
        log,
        owns,
        ReplayMode::Embedded {
            checkpoint_ts: Timestamp::ZERO,
        },
    )
    .unwrap();
    assert_eq!((a.floor(), a.horizon()), (live.floor(), live.floor()));
    assert_eq!(a.window_len(), 0, "the window is not rebuilt");
    assert!(a.is_pending(b"a3"), "undecided votes are still resolved");
    assert_eq!(
        a.commit(
            at(300),
            &commit_req(20, live.floor().as_nanos() - 1, &["z"])
        ),
        CommitDecision::Verdict(Verdict::TooOld)
    );
    let t = match a.commit(at(300), &commit_req(21, live.floor().as_nanos(), &["z"])) {
        CommitDecision::Append { commit_ts, .. } => commit_ts,
        other => panic!("{other:?}"),
    };
    assert!(t > live.floor());
}

#[test]
fn a_journal_out_of_order_or_malformed_is_refused() {
    let (mut log, _, _) = history();
    log.swap(0, 1);
    assert!(matches!(
        Adjudicator::replay(
            PartitionId::new(0),
            AdjudicatorConfig::default(),
            log,
            owns,
            ReplayMode::Embedded {
                checkpoint_ts: Timestamp::ZERO
            }
        ),
        Err(ReplayError::TimestampOrder { index: 1, .. })
    ));
    let bad = vec![pb::Record {
        kind: Some(pb::record::Kind::Commit(pb::Commit {
            txn_id: None,
            commit_ts: 5,
            mutations: vec![],
            participants: vec![],
        })),
    }];
    assert!(matches!(
        Adjudicator::replay(
            PartitionId::new(0),
            AdjudicatorConfig::default(),
            bad,
            owns,
            ReplayMode::Failover {
                now: at(10),
                truncated: false,
            }
        ),
        Err(ReplayError::Malformed { index: 0, .. })
    ));
}

#[test]
fn an_embedded_reopen_never_starts_below_the_storage_checkpoint() {
    let mut a = Adjudicator::replay(
        PartitionId::new(0),
        AdjudicatorConfig::default(),
        Vec::new(),
        owns,
        ReplayMode::Embedded {
            checkpoint_ts: ts(5_000),
        },
    )
    .unwrap();
    assert_eq!((a.floor(), a.horizon()), (ts(5_000), ts(5_000)));
    assert_eq!(
        a.commit(at(6_000), &commit_req(1, 4_999, &["a"])),
        CommitDecision::Verdict(Verdict::TooOld)
    );
}
