//! [`ElectionTiming`]: election timeouts and tick intervals drawn from a seeded RNG, so a
//! group's trace is a function of the seed (ARCHITECTURE §5 "Determinism", §7).

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Per-replica election timing from one seed.
#[derive(Debug)]
pub struct ElectionTiming {
    rng: ChaCha8Rng,
    /// The nominal tick interval.
    tick: Duration,
    /// Each tick lies within ± this share of `tick`, in per mille.
    jitter_per_mille: u32,
}

impl ElectionTiming {
    /// Timing drawn from `seed`, around a nominal `tick` jittered by ± `jitter_per_mille`‰.
    pub fn new(seed: u64, tick: Duration, jitter_per_mille: u32) -> Self {
        ElectionTiming {
            rng: ChaCha8Rng::seed_from_u64(seed),
            tick,
            jitter_per_mille: jitter_per_mille.min(999),
        }
    }

    /// Election timeouts for `voters` replicas, in ticks, each in `[base, 2·base)` and all
    /// distinct (`voters` ≤ `base`; a group has 3 or 5 voters and `base` is about 10):
    /// equal timeouts can split the vote for ever when replicas tick in lock-step.
    pub fn timeouts(&mut self, base: usize, voters: usize) -> Vec<usize> {
        assert!(
            voters <= base,
            "{voters} distinct timeouts do not fit in [{base}, {})",
            2 * base
        );
        let mut pool: Vec<usize> = (base..2 * base).collect();
        (0..voters)
            .map(|_| pool.swap_remove(self.rng.random_range(0..pool.len())))
            .collect()
    }

    /// The interval before the next tick: the nominal tick, jittered, so effective
    /// election timeouts vary from one election to the next.
    pub fn next_tick(&mut self) -> Duration {
        let spread = i64::from(self.jitter_per_mille);
        let per_mille = 1000 + self.rng.random_range(-spread..=spread);
        self.tick * per_mille as u32 / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_distinct_in_range_and_a_function_of_the_seed() {
        for seed in 0..200 {
            let draw = || ElectionTiming::new(seed, Duration::from_millis(10), 200).timeouts(10, 5);
            let t = draw();
            assert_eq!(t, draw(), "seed {seed}");
            assert!(t.iter().all(|x| (10..20).contains(x)), "{t:?}");
            let mut sorted = t.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 5, "distinct: {t:?}");
        }
        let firsts: std::collections::BTreeSet<_> = (0..50)
            .map(|s| ElectionTiming::new(s, Duration::from_millis(10), 200).timeouts(10, 3))
            .collect();
        assert!(firsts.len() > 10, "seeds differ");
    }

    #[test]
    fn ticks_stay_within_the_jitter() {
        let mut t = ElectionTiming::new(7, Duration::from_millis(10), 200);
        for _ in 0..1000 {
            let d = t.next_tick();
            assert!(
                d >= Duration::from_millis(8) && d <= Duration::from_millis(12),
                "{d:?}"
            );
        }
    }
}
