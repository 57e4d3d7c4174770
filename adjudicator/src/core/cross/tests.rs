use bytes::Bytes;
use journaldb_proto::{Epoch, Lsn};

use super::*;
use crate::core::AdjudicatorConfig;
use crate::protocol::CommitRequest;

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn adj(p: u32) -> Adjudicator {
    Adjudicator::new(PartitionId::new(p), AdjudicatorConfig::default(), ts(0))
}

fn prepare_req(id: u128, start: u64, key: &'static str) -> PrepareRequest {
    PrepareRequest {
        txn_id: TxnId::new(id),
        start_ts: ts(start),
        keys: vec![Bytes::from_static(key.as_bytes())],
        coordinator: PartitionId::new(0),
        coordinator_epoch: Epoch::default(),
    }
}

#[test]
fn a_participant_votes_once_and_blocks_other_writers_until_decided() {
    let mut a = adj(1);
    let now = TimeInterval::exact(ts(100));
    let vote = match a.prepare(now, &prepare_req(1, 50, "k")) {
        PrepareDecision::Append { vote_ts, record } => {
            assert_eq!(record.ts(), Some(vote_ts));
            vote_ts
        }
        other => panic!("{other:?}"),
    };
    // Its record was queued at Lsn 5: a retried Prepare gets the vote only once that
    // record is durable (answered from memory, the vote could be lost with it).
    a.queued(TxnId::new(1), Lsn::new(5));
    assert_eq!(
        a.prepare(now, &prepare_req(1, 50, "k")),
        PrepareDecision::Voted {
            vote_ts: vote,
            pending: Some(Lsn::new(5))
        }
    );
    a.observe_durable(Lsn::new(6));
    assert_eq!(
        a.prepare(now, &prepare_req(1, 50, "k")),
        PrepareDecision::Voted {
            vote_ts: vote,
            pending: None
        }
    );

    // Another transaction writing k conflicts while the vote is undecided.
    assert!(matches!(
        a.prepare(now, &prepare_req(2, 90, "k")),
        PrepareDecision::Refused(CommitDecision::Verdict(Verdict::Conflict { .. }))
    ));
    assert!(
        a.decide(now, TxnId::new(1), Some(ts(vote.as_nanos() - 1)))
            .is_err(),
        "a commit τ below the vote is refused"
    );
    assert!(a.is_pending(b"k"), "and changes nothing");
    let decided = a
        .decide(now, TxnId::new(1), Some(ts(120)))
        .unwrap()
        .expect("a Decided record");
    assert!(
        decided.ts() > Some(ts(120)),
        "Decided is after the commit τ it reports"
    );
    assert_eq!(
        a.decide(now, TxnId::new(1), Some(ts(120))),
        Ok(None),
        "idempotent"
    );
    // Now k was written at 120: a snapshot before it conflicts, one after does not.
    assert!(matches!(
        a.prepare(now, &prepare_req(3, 110, "k")),
        PrepareDecision::Refused(_)
    ));
    assert!(matches!(
        a.prepare(now, &prepare_req(4, 120, "k")),
        PrepareDecision::Append { .. }
    ));
}

#[test]
fn a_coordinator_that_answered_aborted_never_commits() {
    let mut c = adj(0);
    let now = TimeInterval::exact(ts(100));
    c.prepare(now, &prepare_req(9, 50, "k"));
    let StatusDecision::Abort(record) = c.status(now, TxnId::new(9), ts(50)) else {
        panic!("an undecided transaction is aborted");
    };
    assert!(record.ts() > Some(ts(50)));
    assert!(!c.is_pending(b"k"), "the abort decides its own vote too");
    assert_eq!(
        c.status(now, TxnId::new(9), ts(50)),
        StatusDecision::Known(TxnStatus::Aborted),
        "a record replayed or never queued counts as durable"
    );
    let decision = c.commit_prepared(
        now,
        TxnId::new(9),
        ts(50),
        &[ts(60)],
        &[Mutation::put("k", "v")],
        &[PartitionId::new(1)],
    );
    assert_eq!(
        decision,
        CommitDecision::Unavailable(Unavailable::AbortedByResolution)
    );
    // Binding for single-partition commits too (hardening defect 2).
    let single = CommitRequest {
        txn_id: TxnId::new(9),
        start_ts: ts(50),
        mutations: vec![Mutation::put("k", "v")],
        retry: true,
    };
    assert_eq!(
        c.commit(now, &single),
        CommitDecision::Unavailable(Unavailable::AbortedByResolution)
    );
}

/// §5 rule 1: an abort queued but not yet durable is reported as in flight (a failover
/// could lose its record); with the planted `AbortFromMemory` it is reported at once.
#[test]
fn an_abort_is_reported_only_once_its_record_is_durable() {
    for planted in [None, Some(PlantedBug::AbortFromMemory)] {
        let config = AdjudicatorConfig {
            planted_bug: planted,
            ..AdjudicatorConfig::default()
        };
        let mut c = Adjudicator::new(PartitionId::new(0), config, ts(0));
        let now = TimeInterval::exact(ts(100));
        let StatusDecision::Abort(_) = c.status(now, TxnId::new(9), ts(50)) else {
            panic!("an unknown transaction is aborted");
        };
        c.queued(TxnId::new(9), Lsn::new(3));
        let retry = CommitRequest {
            txn_id: TxnId::new(9),
            start_ts: ts(50),
            mutations: vec![Mutation::put("k", "v")],
            retry: true,
        };
        let (status, commit) = (c.status(now, TxnId::new(9), ts(50)), c.commit(now, &retry));
        if planted.is_some() {
            assert_eq!(status, StatusDecision::Known(TxnStatus::Aborted));
            assert_eq!(
                commit,
                CommitDecision::Unavailable(Unavailable::AbortedByResolution)
            );
            continue;
        }
        assert_eq!(status, StatusDecision::Known(TxnStatus::InFlight));
        assert_eq!(commit, CommitDecision::Unknown);
        c.observe_durable(Lsn::new(4));
        assert_eq!(
            c.status(now, TxnId::new(9), ts(50)),
            StatusDecision::Known(TxnStatus::Aborted)
        );
        assert_eq!(
            c.commit(now, &retry),
            CommitDecision::Unavailable(Unavailable::AbortedByResolution)
        );
    }
}

#[test]
fn status_below_the_horizon_is_unknown_not_aborted() {
    let config = AdjudicatorConfig {
        max_txn_age: std::time::Duration::from_nanos(100),
        ..AdjudicatorConfig::default()
    };
    let mut c = Adjudicator::new(PartitionId::new(0), config, ts(0));
    let now = TimeInterval::exact(ts(1_000));
    assert_eq!(
        c.status(now, TxnId::new(3), ts(899)),
        StatusDecision::Known(TxnStatus::TooOld(ts(0)))
    );
    assert!(matches!(
        c.status(now, TxnId::new(3), ts(900)),
        StatusDecision::Abort(_)
    ));
    let far = ts(1_000 + std::time::Duration::from_secs(2).as_nanos() as u64);
    assert!(matches!(
        c.status(now, TxnId::new(4), far),
        StatusDecision::Refused(_)
    ));
}

#[test]
fn commit_prepared_needs_the_coordinators_own_vote_and_sane_votes() {
    let mut c = adj(0);
    let now = TimeInterval::exact(ts(100));
    let commit = |c: &mut Adjudicator, votes: &[Timestamp]| {
        c.commit_prepared(
            now,
            TxnId::new(5),
            ts(50),
            votes,
            &[Mutation::put("a", "1"), Mutation::put("b", "2")],
            &[PartitionId::new(0), PartitionId::new(1)],
        )
    };
    assert!(matches!(
        commit(&mut c, &[ts(60), ts(70)]),
        CommitDecision::Invalid(_)
    ));
    c.prepare(now, &prepare_req(5, 50, "a"));
    assert!(matches!(commit(&mut c, &[]), CommitDecision::Invalid(_)));
    assert!(matches!(
        commit(&mut c, &[ts(60), ts(40)]),
        CommitDecision::Invalid(_)
    ));
    assert_eq!(c.floor(), ts(51), "refusals change nothing");
    assert!(matches!(
        commit(&mut c, &[ts(60), ts(70)]),
        CommitDecision::Append { .. }
    ));
}

#[test]
fn the_commit_ts_is_at_least_every_vote_and_status_reports_it() {
    let mut c = adj(0);
    let now = TimeInterval::exact(ts(100));
    c.prepare(now, &prepare_req(5, 50, "a"));
    let decision = c.commit_prepared(
        now,
        TxnId::new(5),
        ts(50),
        &[ts(70), ts(140)],
        &[Mutation::put("a", "1"), Mutation::put("b", "2")],
        &[PartitionId::new(0), PartitionId::new(1)],
    );
    let CommitDecision::Append { commit_ts, record } = decision else {
        panic!("{decision:?}");
    };
    assert_eq!(commit_ts, ts(140));
    let Some(pb::record::Kind::Commit(commit)) = record.kind else {
        panic!("a Commit record");
    };
    assert_eq!(
        (commit.mutations.len(), commit.participants),
        (2, vec![0, 1])
    );
    assert_eq!(
        c.status(now, TxnId::new(5), ts(50)),
        StatusDecision::Known(TxnStatus::InFlight)
    );
    c.queued(TxnId::new(5), journaldb_proto::Lsn::new(7));
    c.observe_durable(journaldb_proto::Lsn::new(7));
    assert_eq!(
        c.status(now, TxnId::new(5), ts(50)),
        StatusDecision::Known(TxnStatus::InFlight),
        "Lsn 7 is not below the durable end 7"
    );
    // Durable once the journal passes its position, whoever waits for it (defect 5).
    c.observe_durable(journaldb_proto::Lsn::new(8));
    assert_eq!(
        c.status(now, TxnId::new(5), ts(50)),
        StatusDecision::Known(TxnStatus::Committed(ts(140)))
    );
}
