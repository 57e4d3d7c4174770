use journaldb_proto::Mutation;

use super::*;

fn ts(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}

fn at(n: u64) -> TimeInterval {
    TimeInterval::exact(ts(n))
}

fn req(id: u128, start: u64, keys: &[&'static str]) -> CommitRequest {
    CommitRequest {
        txn_id: TxnId::new(id),
        start_ts: ts(start),
        mutations: keys.iter().map(|k| Mutation::put(*k, "v")).collect(),
        retry: false,
    }
}

fn adj() -> Adjudicator {
    Adjudicator::new(PartitionId::new(0), AdjudicatorConfig::default(), ts(0))
}

fn committed(d: &CommitDecision) -> Timestamp {
    match d {
        CommitDecision::Append { commit_ts, .. } => *commit_ts,
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn a_write_after_the_snapshot_conflicts_and_one_before_does_not() {
    let mut a = adj();
    let t1 = committed(&a.commit(at(100), &req(1, 50, &["x"])));
    assert_eq!(t1, ts(100));
    // Snapshot 90 < τc 100: conflict on x.
    assert_eq!(
        a.commit(at(110), &req(2, 90, &["y", "x"])),
        CommitDecision::Verdict(Verdict::Conflict {
            key: Bytes::from_static(b"x")
        })
    );
    // Snapshot 100 ≥ τc 100: sees it, commits.
    let t3 = committed(&a.commit(at(120), &req(3, 100, &["x"])));
    assert!(t3 > t1);
}

#[test]
fn commit_ts_exceeds_floor_snapshot_and_clock() {
    let mut a = adj();
    let t1 = committed(&a.commit(at(100), &req(1, 10, &["a"])));
    // The clock went backwards: τ still increases.
    let t2 = committed(&a.commit(at(50), &req(2, 10, &["b"])));
    assert_eq!(t2, t1.next());
    // A snapshot ahead of the clock (within the skew guard).
    let t3 = committed(&a.commit(at(200), &req(3, 500, &["c"])));
    assert_eq!(t3, ts(501));
    assert_eq!(a.floor(), t3);
}

#[test]
fn retries_get_the_first_outcome() {
    let mut a = adj();
    let r = req(7, 10, &["k"]);
    let t = committed(&a.commit(at(100), &r));
    let retry = CommitRequest {
        retry: true,
        ..r.clone()
    };
    assert_eq!(
        a.commit(at(101), &retry),
        CommitDecision::InFlight { commit_ts: t }
    );
    a.appended(TxnId::new(7));
    assert_eq!(
        a.commit(at(102), &retry),
        CommitDecision::Verdict(Verdict::Committed { commit_ts: t })
    );
}

#[test]
fn the_skew_guard_refuses_snapshots_from_the_future() {
    let mut a = adj();
    let far = 1_000 + Duration::from_secs(2).as_nanos() as u64;
    assert!(matches!(
        a.commit(at(1_000), &req(1, far, &["k"])),
        CommitDecision::Unavailable(Unavailable::SkewGuard { .. })
    ));
    assert_eq!(a.floor(), ts(0), "nothing changed");
}

#[test]
fn old_snapshots_are_too_old_and_forgotten_retries_unknown() {
    let config = AdjudicatorConfig {
        max_txn_age: Duration::from_nanos(100),
        ..AdjudicatorConfig::default()
    };
    let mut a = Adjudicator::new(PartitionId::new(0), config, ts(0));
    let r = req(1, 10, &["k"]);
    committed(&a.commit(at(20), &r));
    a.appended(TxnId::new(1));
    a.advance_horizon(at(1_000));
    assert_eq!(a.horizon(), ts(900));
    assert_eq!(a.window_len(), 0, "pruned");
    assert_eq!(
        a.commit(at(1_000), &req(2, 899, &["k"])),
        CommitDecision::Verdict(Verdict::TooOld)
    );
    let retry = CommitRequest { retry: true, ..r };
    assert_eq!(a.commit(at(1_000), &retry), CommitDecision::Unknown);
}

#[test]
fn after_a_failed_append_it_steps_down() {
    let mut a = adj();
    committed(&a.commit(at(10), &req(1, 1, &["k"])));
    a.append_failed();
    assert_eq!(
        a.commit(at(11), &req(2, 10, &["j"])),
        CommitDecision::Unavailable(Unavailable::SteppedDown)
    );
}

#[test]
fn heartbeats_and_promises_raise_the_floor() {
    let mut a = adj();
    let hb = a.heartbeat(at(100));
    assert_eq!(hb.ts(), Some(ts(100)));
    assert_eq!(a.heartbeat(at(90)).ts(), Some(ts(101)));
    assert_eq!(a.promise(ts(50)), None);
    assert_eq!(a.promise(ts(500)).and_then(|r| r.ts()), Some(ts(500)));
    assert_eq!(committed(&a.commit(at(200), &req(1, 10, &["k"]))), ts(501));
}

#[test]
fn a_reopened_adjudicator_refuses_snapshots_before_its_floor() {
    let mut a = Adjudicator::new(PartitionId::new(0), AdjudicatorConfig::default(), ts(1_000));
    assert_eq!(
        a.commit(at(2_000), &req(1, 999, &["k"])),
        CommitDecision::Verdict(Verdict::TooOld)
    );
    assert!(committed(&a.commit(at(2_000), &req(2, 1_000, &["k"]))) > ts(1_000));
}
