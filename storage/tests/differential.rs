//! Differential property test: random writes, gets and scans on both engines (and RocksDB
//! behind the latest-version cache, large and constantly evicting) and on a
//! model computed from the definition (newest version ≤ τ), with keys that are prefixes of
//! each other, and garbage collection at a rising horizon (with RocksDB flushes and
//! compactions in between): reads at or above the horizon must not notice it. As in a
//! storage node, versions written after a horizon was set lie above it. Cases: `STORAGE_DIFF_CASES` (default 200); one: `STORAGE_DIFF_SEED=<seed>`.

use std::collections::BTreeMap;

use bytes::Bytes;
use journaldb_proto::Timestamp;
use journaldb_storage::{Engine, ScanRange, Version, VersionStore, WriteBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEYS: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x00\xff",
    b"a",
    b"a\x00",
    b"a\x00\x00",
    b"ab",
    b"b",
];

/// The model: every version, answered by definition.
#[derive(Default)]
struct Model(BTreeMap<(Vec<u8>, Timestamp), Option<Bytes>>);

impl Model {
    fn get(&self, key: &[u8], at: Timestamp) -> Option<Bytes> {
        self.0
            .iter()
            .filter(|((k, t), _)| k == key && *t <= at)
            .max_by_key(|((_, t), _)| *t)
            .and_then(|(_, v)| v.clone())
    }

    fn scan(&self, range: &ScanRange, at: Timestamp, reverse: bool) -> Vec<(Bytes, Bytes)> {
        let mut keys: Vec<&Vec<u8>> = self.0.keys().map(|(k, _)| k).collect();
        keys.dedup();
        let mut rows: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                k[..] >= range.start[..] && range.end.as_ref().is_none_or(|e| k[..] < e[..])
            })
            .filter_map(|k| self.get(k, at).map(|v| (Bytes::copy_from_slice(k), v)))
            .collect();
        if reverse {
            rows.reverse();
        }
        rows
    }
}

fn scan_all(
    s: &dyn VersionStore,
    range: &ScanRange,
    at: Timestamp,
    limit: usize,
    reverse: bool,
) -> Vec<(Bytes, Bytes)> {
    let mut rows = Vec::new();
    let mut next = Some(range.clone());
    while let Some(r) = next {
        let page = s.scan(&r, at, limit, reverse).unwrap();
        rows.extend(page.rows);
        next = page.resume;
    }
    rows
}

fn pick(rng: &mut ChaCha8Rng) -> &'static [u8] {
    KEYS[rng.random_range(0..KEYS.len())]
}

fn run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mem, rocks) = (crate::memory(), crate::rocks());
    // Behind the latest-version cache, one that holds everything and one that evicts.
    let (cached, evicting) = (crate::cached_rocks(64 << 20), crate::cached_rocks(64 * 100));
    let stores = [&mem.store, &rocks.store, &cached.store, &evicting.store];
    let mut model = Model::default();
    let mut horizon = 0;
    for _ in 0..60 {
        match rng.random_range(0..4) {
            3 => {
                horizon = rng.random_range(horizon..horizon + 20);
                for s in stores {
                    s.collect_garbage(Timestamp::from_nanos(horizon)).unwrap();
                }
                let compact = rng.random_bool(0.3);
                for s in [&rocks.store, &cached.store, &evicting.store] {
                    s.flush().unwrap();
                    if compact {
                        s.compact().unwrap();
                    }
                }
            }
            0 => {
                let mut versions = Vec::new();
                for _ in 0..rng.random_range(1..4) {
                    let k = pick(&mut rng);
                    let t = Timestamp::from_nanos(rng.random_range(horizon + 1..horizon + 50));
                    let value = rng
                        .random_bool(0.8)
                        .then(|| Bytes::from(format!("{}", rng.random_range(0..1000))));
                    model.0.insert((k.to_vec(), t), value.clone());
                    versions.push(Version {
                        key: Bytes::copy_from_slice(k),
                        ts: t,
                        value,
                    });
                }
                for s in stores {
                    s.write(WriteBatch {
                        versions: versions.clone(),
                        applied: vec![],
                        ..WriteBatch::default()
                    })
                    .unwrap();
                }
            }
            1 => {
                let k = pick(&mut rng);
                let at = Timestamp::from_nanos(rng.random_range(horizon..horizon + 55));
                let expect = model.get(k, at);
                for s in stores {
                    assert_eq!(
                        s.get(k, at).unwrap(),
                        expect,
                        "seed {seed}: get {k:?} at {at}"
                    );
                }
            }
            _ => {
                let (a, b) = (pick(&mut rng), pick(&mut rng));
                let range = if rng.random_bool(0.3) {
                    ScanRange::prefix(a)
                } else {
                    ScanRange {
                        start: Bytes::copy_from_slice(a.min(b)),
                        end: rng
                            .random_bool(0.8)
                            .then(|| Bytes::copy_from_slice(a.max(b))),
                    }
                };
                let at = Timestamp::from_nanos(rng.random_range(horizon..horizon + 55));
                let reverse = rng.random_bool(0.5);
                let limit = rng.random_range(1..5);
                let expect = model.scan(&range, at, reverse);
                for s in stores {
                    assert_eq!(
                        scan_all(s, &range, at, limit, reverse),
                        expect,
                        "seed {seed}: scan {range:?} at {at} reverse {reverse}"
                    );
                }
            }
        }
    }
}

#[test]
fn engines_agree_with_each_other_and_the_model() {
    let seeds: Vec<u64> = match std::env::var("STORAGE_DIFF_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..std::env::var("STORAGE_DIFF_CASES")
            .map(|c| c.parse().unwrap())
            .unwrap_or(200))
            .collect(),
    };
    for seed in seeds {
        run(seed);
    }
}
