//! Property test: random interleavings of begin / commit / retry / clock movement against
//! an adjudicator, with every verdict judged by an oracle computed from the definition of
//! snapshot isolation over the history — never from the adjudicator's state:
//!
//! - a commit at τc is legal iff no transaction that committed earlier wrote one of its
//!   keys at a τ in (τs, τc]; commit timestamps of one journal strictly increase, τc > τs;
//! - a `Conflict{key}` is legal iff an earlier committed writer of `key` has τc > τs
//!   (no spurious aborts);
//! - `TooOld` / `Unknown` are legal iff τs is below `max(now.latest) − max_txn_age`;
//! - a skew refusal is legal iff τs, or the τc it would need, is past `now.latest + max_skew`;
//! - a retry of a committed transaction gets the same τc (or `Unknown` once forgotten).
//!
//! A planted skipped conflict check must be caught. Cases: `ADJ_ORACLE_CASES` (default
//! 500); replay one with `ADJ_ORACLE_SEED=<seed>`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use journaldb_adjudicator::{
    Adjudicator, AdjudicatorConfig, CommitDecision, CommitRequest, PlantedBug, Unavailable, Verdict,
};
use journaldb_proto::{Mutation, PartitionId, TimeInterval, Timestamp, TxnId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEYS: u64 = 6;

struct Txn {
    start_ts: Timestamp,
    keys: Vec<Bytes>,
}

/// What the oracle knows: the committed transactions, in decision order.
#[derive(Default)]
struct History {
    committed: BTreeMap<TxnId, (Timestamp, Vec<Bytes>, Timestamp)>,
    last_commit_ts: Timestamp,
    max_latest: Timestamp,
}

fn run(seed: u64, config: AdjudicatorConfig) -> Result<usize, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let max_txn_age = config.max_txn_age;
    let max_skew = config.max_skew;
    let mut adj = Adjudicator::new(PartitionId::new(0), config, Timestamp::ZERO);
    let mut true_time = 1_000_000u64;
    let mut open: BTreeMap<TxnId, Txn> = BTreeMap::new();
    let mut h = History::default();
    let mut next_id = 0u128;
    let mut commits = 0;

    for step in 0..300 {
        true_time += rng.random_range(0..2_000);
        // The adjudicator's clock: within an error bound, sometimes stepping backwards.
        let err = rng.random_range(0..500);
        let wobble = rng.random_range(0..1_000);
        let mid = true_time.saturating_sub(wobble);
        let now = TimeInterval {
            earliest: Timestamp::from_nanos(mid - err),
            latest: Timestamp::from_nanos(mid + err),
        };
        match rng.random_range(0..10) {
            0..=3 => {
                // Begin: a client whose clock may run ahead (rarely far past the guard).
                let ahead = if rng.random_bool(0.02) {
                    5_000_000
                } else {
                    rng.random_range(0..800)
                };
                next_id += 1;
                let n = rng.random_range(1..=3);
                let keys = (0..n)
                    .map(|_| Bytes::from(format!("k{}", rng.random_range(0..KEYS))))
                    .collect();
                // Sometimes a snapshot exactly at the last commit: the boundary of (τs, τc].
                let start_ts = if rng.random_bool(0.2) && h.last_commit_ts > Timestamp::ZERO {
                    h.last_commit_ts
                } else {
                    Timestamp::from_nanos(true_time + ahead)
                };
                open.insert(TxnId::new(next_id), Txn { start_ts, keys });
            }
            4..=7 => {
                // Often the newest transaction (short-lived ones hit the (τs, τc] boundary),
                // otherwise any open one (long-lived ones conflict and age out).
                let newest = open.keys().next_back().copied();
                let any = pick(&mut rng, open.keys()).copied();
                let Some(id) = (if rng.random_bool(0.3) { newest } else { any }) else {
                    continue;
                };
                let txn = open.remove(&id).expect("picked");
                let req = request(id, &txn, false);
                let decision = adj.commit(now, &req);
                h.max_latest = h.max_latest.max(now.latest);
                judge(&h, &txn, &decision, now, max_txn_age, max_skew)
                    .map_err(|e| format!("step {step}: {id}: {e}"))?;
                if let CommitDecision::Append { commit_ts, .. } = decision {
                    h.committed
                        .insert(id, (txn.start_ts, txn.keys.clone(), commit_ts));
                    h.last_commit_ts = commit_ts;
                    commits += 1;
                    if rng.random_bool(0.8) {
                        adj.appended(id);
                    }
                }
            }
            8 => {
                // Retry a committed transaction.
                let Some(&id) = pick(&mut rng, h.committed.keys()) else {
                    continue;
                };
                let (start_ts, keys, commit_ts) = h.committed[&id].clone();
                let txn = Txn { start_ts, keys };
                let decision = adj.commit(now, &request(id, &txn, true));
                h.max_latest = h.max_latest.max(now.latest);
                let forgotten_ok = start_ts < horizon(&h, max_txn_age);
                let ok = match decision {
                    CommitDecision::Verdict(Verdict::Committed { commit_ts: t })
                    | CommitDecision::InFlight { commit_ts: t } => t == commit_ts,
                    CommitDecision::Unknown => forgotten_ok,
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "step {step}: retry of {id} (τc {commit_ts}) got {decision:?}"
                    ));
                }
            }
            _ => {
                adj.advance_horizon(now);
                h.max_latest = h.max_latest.max(now.latest);
            }
        }
    }
    Ok(commits)
}

fn pick<'a, T: 'a>(
    rng: &mut ChaCha8Rng,
    items: impl ExactSizeIterator<Item = &'a T>,
) -> Option<&'a T> {
    let n = items.len();
    if n == 0 {
        return None;
    }
    let i = rng.random_range(0..n);
    items.into_iter().nth(i)
}

fn request(id: TxnId, txn: &Txn, retry: bool) -> CommitRequest {
    CommitRequest {
        txn_id: id,
        start_ts: txn.start_ts,
        mutations: txn
            .keys
            .iter()
            .map(|k| Mutation::put(k.clone(), "v"))
            .collect(),
        retry,
    }
}

fn horizon(h: &History, max_txn_age: Duration) -> Timestamp {
    h.max_latest.saturating_sub(max_txn_age)
}

/// Judges one first-attempt decision from the history alone.
fn judge(
    h: &History,
    txn: &Txn,
    decision: &CommitDecision,
    now: TimeInterval,
    max_txn_age: Duration,
    max_skew: Duration,
) -> Result<(), String> {
    // The τc of an earlier committed writer of `key` after this snapshot, if any.
    let writer_after = |key: &Bytes| {
        h.committed
            .values()
            .find(|(_, keys, tc)| *tc > txn.start_ts && keys.contains(key))
            .map(|(_, _, tc)| *tc)
    };
    match decision {
        CommitDecision::Append { commit_ts, .. } => {
            if *commit_ts <= txn.start_ts || *commit_ts <= h.last_commit_ts {
                return Err(format!(
                    "τc {commit_ts} not after τs {} and the previous τc {}",
                    txn.start_ts, h.last_commit_ts
                ));
            }
            for key in &txn.keys {
                if let Some(tc) = writer_after(key) {
                    return Err(format!(
                        "committed at {commit_ts} with snapshot {}, but {key:?} was written at {tc}: SI violated",
                        txn.start_ts
                    ));
                }
            }
            Ok(())
        }
        CommitDecision::Verdict(Verdict::Conflict { key }) => {
            if txn.keys.contains(key) && writer_after(key).is_some() {
                Ok(())
            } else {
                Err(format!("spurious conflict on {key:?}"))
            }
        }
        CommitDecision::Verdict(Verdict::TooOld) | CommitDecision::Unknown => {
            if txn.start_ts < horizon(h, max_txn_age) {
                Ok(())
            } else {
                Err(format!(
                    "{decision:?} for τs {} inside the window",
                    txn.start_ts
                ))
            }
        }
        CommitDecision::Unavailable(Unavailable::SkewGuard { .. }) => {
            let limit = now.latest.saturating_add(max_skew);
            let needed = txn.start_ts.next().max(h.last_commit_ts.next());
            if txn.start_ts > limit || needed > limit {
                Ok(())
            } else {
                Err(format!(
                    "skew refusal of τs {} within the guard {limit}",
                    txn.start_ts
                ))
            }
        }
        other => Err(format!("unexpected decision {other:?}")),
    }
}

fn config(max_txn_age_nanos: u64) -> AdjudicatorConfig {
    AdjudicatorConfig {
        max_txn_age: Duration::from_nanos(max_txn_age_nanos),
        max_skew: Duration::from_micros(100),
        vote_timeout: Duration::from_secs(3),
        planted_bug: None,
    }
}

fn seeds(default_cases: u64) -> Vec<u64> {
    match std::env::var("ADJ_ORACLE_SEED") {
        Ok(s) => vec![s.parse().expect("ADJ_ORACLE_SEED is a u64")],
        Err(_) => {
            let cases = std::env::var("ADJ_ORACLE_CASES")
                .map(|c| c.parse().expect("ADJ_ORACLE_CASES is a u64"))
                .unwrap_or(default_cases);
            (0..cases).collect()
        }
    }
}

#[test]
fn every_verdict_agrees_with_the_si_oracle() {
    let mut commits = 0;
    for seed in seeds(500) {
        // Windows from "prunes constantly" to "never prunes" across seeds.
        let age = [20_000, 100_000, 1_000_000_000][(seed % 3) as usize];
        match run(seed, config(age)) {
            Ok(n) => commits += n,
            Err(e) => panic!(
                "{e}\nseed {seed}; replay with\n  ADJ_ORACLE_SEED={seed} cargo nextest run -p journaldb-adjudicator every_verdict"
            ),
        }
    }
    assert!(commits > 1_000, "the workload must commit: {commits}");
}

#[test]
fn the_oracle_catches_a_skipped_conflict_check() {
    let caught = seeds(100).into_iter().filter(|&seed| {
        let config = AdjudicatorConfig {
            planted_bug: Some(PlantedBug::SkipConflictCheck),
            ..config(1_000_000_000)
        };
        run(seed, config).is_err_and(|e| e.contains("SI violated"))
    });
    assert!(caught.count() > 0, "no seed caught the planted bug");
}
