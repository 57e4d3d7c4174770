//! Property test of the crossbar feeding a store: journals with strictly increasing τ are
//! pushed in random interleavings and drained at random moments. After every drain, a read
//! at any τ ≤ watermark must see exactly the versions ≤ τ of every journal — including
//! records pushed later from other journals, which must never have τ ≤ that watermark.
//! Cases: `CROSSBAR_CASES` (default 300).

use std::collections::BTreeMap;

use bytes::Bytes;
use journaldb_proto::{Lsn, Mutation, PartitionId, Timestamp, TxnId, pb};
use journaldb_storage::{Crossbar, VersionStore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A generated journal record: its τ, the record, and the (key, value) it writes if any.
type Generated = (u64, pb::Record, Option<(String, String)>);

fn record(rng: &mut ChaCha8Rng, ts: u64) -> (pb::Record, Option<(String, String)>) {
    if rng.random_bool(0.3) {
        let hb = pb::Heartbeat { ts };
        return (
            pb::Record {
                kind: Some(pb::record::Kind::Heartbeat(hb)),
            },
            None,
        );
    }
    let key = format!("k{}", rng.random_range(0..5));
    let value = format!("v{ts}");
    let commit = pb::Commit {
        txn_id: Some(TxnId::new(u128::from(ts)).into()),
        commit_ts: ts,
        mutations: vec![Mutation::put(key.clone(), value.clone()).into()],
        participants: vec![],
    };
    (
        pb::Record {
            kind: Some(pb::record::Kind::Commit(commit)),
        },
        Some((key, value)),
    )
}

fn run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let journals: Vec<PartitionId> = (0..rng.random_range(1..=4)).map(PartitionId::new).collect();
    // Every journal's records, generated up front: strictly increasing τ, unique across
    // journals (as adjudicators guarantee for writes of one key).
    let mut streams: BTreeMap<PartitionId, Vec<Generated>> = BTreeMap::new();
    let mut ts = 0u64;
    for _ in 0..rng.random_range(5..60) {
        ts += rng.random_range(1..5);
        let j = journals[rng.random_range(0..journals.len())];
        let (r, write) = record(&mut rng, ts);
        streams.entry(j).or_default().push((ts, r, write));
    }
    let store = journaldb_storage::MemoryEngine::new();
    let mut crossbar = Crossbar::new(journals.iter().map(|&j| (j, Lsn::ZERO)), Timestamp::ZERO);
    let mut cursor: BTreeMap<PartitionId, usize> = journals.iter().map(|&j| (j, 0)).collect();
    // The model: key -> [(τ, value)] of every record of every journal, pushed or not yet.
    let mut model: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (t, _, write) in streams.values().flatten() {
        if let Some((k, v)) = write {
            model.entry(k.clone()).or_default().push((*t, v.clone()));
        }
    }
    loop {
        let live: Vec<PartitionId> = journals
            .iter()
            .copied()
            .filter(|j| cursor[j] < streams.get(j).map_or(0, Vec::len))
            .collect();
        if live.is_empty() {
            break;
        }
        let j = live[rng.random_range(0..live.len())];
        let i = cursor[&j];
        let (_, r, _) = &streams[&j][i];
        crossbar.push(j, Lsn::new(i as u64 + 1), r).unwrap();
        cursor.insert(j, i + 1);
        if rng.random_bool(0.4) {
            if let Some((batch, release)) = crossbar.batch() {
                if rng.random_bool(0.25) {
                    // The store's write failed: nothing released; a later batch retries.
                    drop(batch);
                    continue;
                }
                store.write(batch).unwrap();
                crossbar.released(release);
            }
            let watermark = crossbar.watermark().as_nanos();
            for at in [watermark / 2, watermark] {
                for (k, versions) in &model {
                    let expect = versions
                        .iter()
                        .filter(|(t, _)| *t <= at)
                        .max_by_key(|(t, _)| *t)
                        .map(|(_, v)| Bytes::from(v.clone()));
                    let got = store.get(k.as_bytes(), Timestamp::from_nanos(at)).unwrap();
                    assert_eq!(
                        got, expect,
                        "seed {seed}: {k} at {at} (watermark {watermark})"
                    );
                }
            }
        }
    }
    if let Some((batch, release)) = crossbar.batch() {
        store.write(batch).unwrap();
        crossbar.released(release);
    }
    let applied = store.applied().unwrap();
    for j in &journals {
        let released = applied.get(j).copied().unwrap_or(Lsn::ZERO);
        assert!(released.get() <= streams.get(j).map_or(0, Vec::len) as u64);
    }
}

#[test]
fn reads_at_or_below_the_watermark_are_complete() {
    let cases = std::env::var("CROSSBAR_CASES")
        .map(|c| c.parse().unwrap())
        .unwrap_or(300);
    for seed in 0..cases {
        run(seed);
    }
}
