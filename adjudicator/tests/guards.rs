//! Guards of the hardening issue that only a precise interleaving reaches, tested on the
//! state machine directly: each assertion fails if its guard is removed.

use std::time::Duration;

use bytes::Bytes;
use journaldb_adjudicator::{
    Adjudicator, AdjudicatorConfig, CommitDecision, CommitRequest, PrepareDecision, PrepareRequest,
    StatusDecision, TxnStatus, Unavailable,
};
use journaldb_proto::{Epoch, Lsn, Mutation, PartitionId, TimeInterval, Timestamp, TxnId};

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn at(n: u64) -> TimeInterval {
    TimeInterval::exact(ts(n))
}

fn adj(p: u32) -> Adjudicator {
    Adjudicator::new(PartitionId::new(p), AdjudicatorConfig::default(), ts(0))
}

fn prepare(id: u128, start: u64, key: &'static str, coordinator: u32) -> PrepareRequest {
    PrepareRequest {
        txn_id: TxnId::new(id),
        start_ts: ts(start),
        keys: vec![Bytes::from_static(key.as_bytes())],
        coordinator: PartitionId::new(coordinator),
        coordinator_epoch: Epoch::default(),
    }
}

fn commit(id: u128, start: u64, key: &'static str, retry: bool) -> CommitRequest {
    CommitRequest {
        txn_id: TxnId::new(id),
        start_ts: ts(start),
        mutations: vec![Mutation::put(key, "v")],
        retry,
    }
}

fn vote(decision: PrepareDecision) -> Timestamp {
    match decision {
        PrepareDecision::Append { vote_ts, .. } => vote_ts,
        other => panic!("expected a vote, got {other:?}"),
    }
}

/// A refusal based on an abort is reported only once the abort is durable: before that,
/// the answer is unknown (a failure could still lose the abort record).
#[test]
fn an_abort_binds_only_once_durable() {
    let mut c = adj(0);
    let StatusDecision::Abort(_) = c.status(at(100), TxnId::new(1), ts(50)) else {
        panic!("an unknown transaction is aborted");
    };
    c.queued(TxnId::new(1), Lsn::new(5));
    c.observe_durable(Lsn::new(5));
    assert_eq!(
        c.commit(at(101), &commit(1, 50, "k", false)),
        CommitDecision::Unknown
    );
    assert_eq!(
        c.status(at(101), TxnId::new(1), ts(50)),
        StatusDecision::Known(TxnStatus::InFlight)
    );
    c.observe_durable(Lsn::new(6));
    assert_eq!(
        c.commit(at(102), &commit(1, 50, "k", false)),
        CommitDecision::Unavailable(Unavailable::AbortedByResolution)
    );
}

/// A participant votes once per transaction, even after deciding: a second vote could
/// never be decided consistently with the first decision.
#[test]
fn a_prepare_repeated_after_the_decision_is_refused() {
    let mut p = adj(1);
    vote(p.prepare(at(100), &prepare(2, 50, "a", 0)));
    p.decide(at(110), TxnId::new(2), None).unwrap().unwrap();
    let again = p.prepare(at(120), &prepare(2, 50, "b", 0));
    assert!(
        matches!(again, PrepareDecision::Refused(CommitDecision::Invalid(_))),
        "{again:?}"
    );
    assert!(!p.is_pending(b"b"), "nothing changed");
}

/// Only a transaction's coordinator answers `Status` about it: a participant asked about
/// another coordinator's transaction would otherwise abort a vote it does not own.
#[test]
fn status_is_refused_for_a_vote_another_partition_coordinates() {
    let mut p = adj(1);
    vote(p.prepare(at(100), &prepare(3, 50, "a", 0)));
    assert!(matches!(
        p.status(at(101), TxnId::new(3), ts(50)),
        StatusDecision::Refused(CommitDecision::Invalid(_))
    ));
    assert!(p.is_pending(b"a"), "the vote stands");
}

/// The coordinator commits only with its own vote, naming it and covering its keys.
#[test]
fn commit_prepared_needs_an_own_vote_covering_its_keys() {
    let participants = [PartitionId::new(0), PartitionId::new(1)];
    let mut c = adj(0);
    let own = vote(c.prepare(at(100), &prepare(4, 50, "a", 0)));
    let without_own_key = [Mutation::put("other", "1"), Mutation::put("b", "2")];
    assert!(matches!(
        c.commit_prepared(
            at(101),
            TxnId::new(4),
            ts(50),
            &[own, ts(70)],
            &without_own_key,
            &participants
        ),
        CommitDecision::Invalid(_)
    ));
    // A vote cast naming another coordinator is not the coordinator's own.
    let mut c = adj(0);
    let foreign = vote(c.prepare(at(100), &prepare(5, 50, "a", 1)));
    let mutations = [Mutation::put("a", "1"), Mutation::put("b", "2")];
    assert!(matches!(
        c.commit_prepared(
            at(101),
            TxnId::new(5),
            ts(50),
            &[foreign, ts(70)],
            &mutations,
            &participants
        ),
        CommitDecision::Invalid(_)
    ));
}

/// The coordinator's own answer is never refused: a τc below the vote (a client
/// under-reported it) is raised to the vote, and the keys are freed.
#[test]
fn a_resolved_decision_below_the_vote_is_raised_not_refused() {
    let mut p = adj(1);
    let v = vote(p.prepare(at(100), &prepare(6, 50, "a", 0)));
    let below = ts(v.as_nanos() - 1);
    assert!(p.decide(at(110), TxnId::new(6), Some(below)).is_err());
    assert!(
        p.decide_resolved(at(110), TxnId::new(6), Some(below))
            .is_some()
    );
    assert!(!p.is_pending(b"a"));
    // The window holds the write at the vote: a snapshot before it conflicts.
    assert!(matches!(
        p.commit(at(120), &commit(7, v.as_nanos() - 1, "a", false)),
        CommitDecision::Verdict(_)
    ));
}

/// A retry whose original may still be on its way gets only binding answers: refused by
/// the skew guard or a step-down, it is unknown (a first attempt is refused outright).
#[test]
fn a_retry_refused_for_now_is_unknown() {
    let mut a = adj(0);
    let far = 1_000 + Duration::from_secs(2).as_nanos() as u64;
    assert_eq!(
        a.commit(at(1_000), &commit(8, far, "k", true)),
        CommitDecision::Unknown
    );
    assert!(matches!(
        a.commit(at(1_000), &commit(8, far, "k", false)),
        CommitDecision::Unavailable(Unavailable::SkewGuard { .. })
    ));
    a.append_failed();
    assert_eq!(
        a.commit(at(1_001), &commit(9, 900, "k", true)),
        CommitDecision::Unknown
    );
    assert_eq!(
        a.commit(at(1_001), &commit(9, 900, "k", false)),
        CommitDecision::Unavailable(Unavailable::SteppedDown)
    );
}

/// An outcome committed exactly at the horizon is still known: a participant whose vote
/// equals that τc must hear "committed", never "aborted".
#[test]
fn an_outcome_at_the_horizon_is_still_known() {
    let config = AdjudicatorConfig {
        max_txn_age: Duration::from_nanos(100),
        ..AdjudicatorConfig::default()
    };
    let mut c = Adjudicator::new(PartitionId::new(0), config, ts(0));
    let CommitDecision::Append { commit_ts, .. } = c.commit(at(500), &commit(10, 450, "k", false))
    else {
        panic!("a commit");
    };
    c.appended(TxnId::new(10));
    // Now the horizon is exactly τc.
    let now = at(commit_ts.as_nanos() + 100);
    assert_eq!(
        c.status(now, TxnId::new(10), commit_ts),
        StatusDecision::Known(TxnStatus::Committed(commit_ts))
    );
}
