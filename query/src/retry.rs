//! How `transact` retries (ARCHITECTURE §8): exponential backoff with full jitter, bounded
//! attempts, and a shared retry token bucket — a retry takes a token, a success returns a
//! fraction of one, and an empty bucket stops retrying so that an overloaded or
//! contended database is not hammered by retry storms (the AWS SDKs' retry quota).
//!
//! Pure logic with the RNG passed in, so simulation replays it from the seed. It does not
//! sleep or run transactions; `transact` does.

use std::time::Duration;

use journaldb_proto::TxnId;
use parking_lot::Mutex;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Retry settings: `RetryPolicy::default()` and the `with_…` setters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Backoff cap of the first retry (default 1 ms).
    pub base_backoff: Duration,
    /// Largest backoff (default 1 s).
    pub max_backoff: Duration,
    /// Most attempts of one transaction, the first included (default 10).
    pub max_attempts: u32,
    /// Tokens the bucket holds when full (default 100).
    pub bucket_capacity: f64,
    /// Tokens a success returns (default 0.1: sustained, one retry per ten successes).
    pub success_refill: f64,
    /// After `CommitUnknown`, how many times `transact` asks for the outcome (re-sending a
    /// single-partition commit, or asking a cross-partition coordinator's `Status`) before
    /// it returns `CommitUnknown` (default 6).
    pub outcome_attempts: u32,
    /// Pause before the first such question, doubling after each, up to `max_backoff`
    /// (default 20 ms: ~2 s over six questions).
    pub outcome_pause: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_secs(1),
            max_attempts: 10,
            bucket_capacity: 100.0,
            success_refill: 0.1,
            outcome_attempts: 6,
            outcome_pause: Duration::from_millis(20),
        }
    }
}

setters!(RetryPolicy {
    with_base_backoff => base_backoff: (Duration),
    with_max_backoff => max_backoff: (Duration),
    with_max_attempts => max_attempts: (u32),
    with_bucket_capacity => bucket_capacity: (f64),
    with_success_refill => success_refill: (f64),
    with_outcome_attempts => outcome_attempts: (u32),
    with_outcome_pause => outcome_pause: (Duration),
});

impl RetryPolicy {
    /// The pause before outcome question number `attempt` (0 for the first).
    pub fn outcome_pause(&self, attempt: u32) -> Duration {
        self.outcome_pause
            .saturating_mul(1 << attempt.min(20))
            .min(self.max_backoff)
    }

    /// The sleep before retry number `retry` (1 for the first retry): uniform in
    /// `[0, min(max_backoff, base_backoff × 2^(retry−1))]` ("full jitter").
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let cap = self
            .base_backoff
            .saturating_mul(1 << exp)
            .min(self.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

/// The retry token bucket, shared by every transaction of one database handle.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: Mutex<f64>,
    capacity: f64,
    refill: f64,
}

impl RetryBudget {
    /// A full bucket for `policy`.
    pub fn new(policy: &RetryPolicy) -> Self {
        RetryBudget {
            tokens: Mutex::new(policy.bucket_capacity),
            capacity: policy.bucket_capacity,
            refill: policy.success_refill,
        }
    }

    /// Takes a token for a retry; `false` if the bucket is empty (do not retry).
    pub fn try_take(&self) -> bool {
        let mut tokens = self.tokens.lock();
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A transaction succeeded: return a fraction of a token.
    pub fn on_success(&self) {
        let mut tokens = self.tokens.lock();
        *tokens = (*tokens + self.refill).min(self.capacity);
    }

    /// Tokens now in the bucket.
    pub fn tokens(&self) -> f64 {
        *self.tokens.lock()
    }
}

/// What retrying needs, the same for both backends.
pub(crate) struct RetryState {
    pub(crate) policy: RetryPolicy,
    pub(crate) budget: RetryBudget,
    /// Jitter, from the handle's seed.
    pub(crate) rng: Mutex<ChaCha8Rng>,
    /// Transaction ids: from 256 bits of OS entropy drawn when the handle was made (so two
    /// handles, two processes or a restarted one never share a stream, whatever their
    /// seeds), or from an explicit id seed in simulation, where runs must replay.
    ids: Mutex<ChaCha8Rng>,
}

impl RetryState {
    /// Retry state with jitter from `seed`; ids from the OS unless `id_seed` is given.
    pub(crate) fn new(policy: RetryPolicy, seed: u64, id_seed: Option<u64>) -> Result<Self> {
        let ids = match id_seed {
            Some(id_seed) => rand::SeedableRng::seed_from_u64(id_seed),
            None => <ChaCha8Rng as rand::SeedableRng>::try_from_os_rng()
                .map_err(|e| Error::Io(format!("reading OS entropy for transaction ids: {e}")))?,
        };
        Ok(RetryState {
            budget: RetryBudget::new(&policy),
            policy,
            rng: Mutex::new(rand::SeedableRng::seed_from_u64(seed)),
            ids: Mutex::new(ids),
        })
    }

    /// A fresh transaction id.
    pub(crate) fn txn_id(&self) -> TxnId {
        let mut rng = self.ids.lock();
        TxnId::new((u128::from(rng.next_u64()) << 64) | u128::from(rng.random::<u64>()))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn backoff_is_jittered_under_an_exponential_cap() {
        let policy = RetryPolicy::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for retry in 1..=20 {
            let cap = Duration::from_millis(1 << (retry - 1).min(20)).min(Duration::from_secs(1));
            let samples: Vec<Duration> =
                (0..200).map(|_| policy.backoff(retry, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "retry {retry}");
            assert!(
                samples.iter().any(|d| *d < cap / 2),
                "jittered, retry {retry}"
            );
        }
        let again: Vec<_> = {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            (0..5).map(|_| policy.backoff(3, &mut rng)).collect()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            again,
            (0..5)
                .map(|_| policy.backoff(3, &mut rng))
                .collect::<Vec<_>>(),
            "seeded"
        );
    }

    #[test]
    fn an_empty_bucket_stops_retries_until_successes_refill_it() {
        let policy = RetryPolicy {
            bucket_capacity: 3.0,
            success_refill: 0.5,
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::new(&policy);
        assert!(budget.try_take() && budget.try_take() && budget.try_take());
        assert!(!budget.try_take());
        budget.on_success();
        assert!(!budget.try_take(), "half a token is not a retry");
        budget.on_success();
        assert!(budget.try_take());
        for _ in 0..100 {
            budget.on_success();
        }
        assert_eq!(budget.tokens(), 3.0, "capped at capacity");
    }
}
