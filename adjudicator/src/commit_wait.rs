//! Commit wait (ARCHITECTURE §2): a commit at τc is acknowledged only once the clock says
//! τc has passed for certain, `now().earliest > τc`, so every transaction that begins after
//! the acknowledgement, on any clock within the bound, reads at a τs ≥ τc and sees it. The
//! embedded database and the cluster client both wait here before acknowledging.

use std::time::Duration;

use journaldb_proto::{Clock, Timestamp};

/// Returns once `clock.now().earliest > ts`. A wait of microseconds (the embedded clock's
/// τc is at most a few nanoseconds ahead) yields rather than sleeps, since a timer would
/// round it up to its millisecond; but only a few times, then it sleeps: a clock that moves
/// only with tokio's time (the simulation's, paused until every task is idle) must get
/// there too.
pub async fn commit_wait(clock: &dyn Clock, ts: Timestamp) {
    let mut yields = 0;
    loop {
        let now = clock.now().earliest;
        if now > ts {
            return;
        }
        let left = ts.saturating_duration_since(now);
        if left < YIELD_BELOW && yields < MAX_YIELDS {
            yields += 1;
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(left.max(MIN_SLEEP)).await;
        }
    }
}

/// Waits shorter than this yield (at most [`MAX_YIELDS`] times) instead of sleeping.
const YIELD_BELOW: Duration = Duration::from_micros(20);

/// Most yields of one commit wait before it sleeps.
const MAX_YIELDS: u32 = 64;

/// The shortest sleep of a commit wait (tokio's timer rounds it up to its resolution).
const MIN_SLEEP: Duration = Duration::from_micros(50);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use journaldb_proto::ManualClock;

    use super::*;

    #[test]
    fn it_returns_only_once_the_earliest_reading_passes_the_timestamp() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(150)));
        clock.set_error(Duration::from_nanos(50));
        rt.block_on(async {
            let wait = tokio::spawn({
                let clock = clock.clone();
                async move { commit_wait(&*clock, Timestamp::from_nanos(150)).await }
            });
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                assert!(!wait.is_finished(), "earliest 100 is not past 150");
            }
            clock.set(Timestamp::from_nanos(201));
            tokio::time::timeout(Duration::from_secs(1), wait)
                .await
                .expect("earliest 151 is past 150")
                .unwrap();
        });
    }

    #[test]
    fn a_wait_of_nanoseconds_is_waited_out_by_yielding() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(150)));
        rt.block_on(async {
            let wait = tokio::spawn({
                let clock = clock.clone();
                async move { commit_wait(&*clock, Timestamp::from_nanos(150)).await }
            });
            tokio::task::yield_now().await;
            assert!(!wait.is_finished(), "150 is not past 150");
            clock.set(Timestamp::from_nanos(151));
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            assert!(wait.is_finished(), "noticed without a timer");
        });
    }

    /// A zero-width clock that moves only with tokio's (paused) time, as the simulation's
    /// does: yielding alone would keep the runtime busy and time still, for ever.
    #[test]
    fn a_clock_that_moves_with_paused_time_is_waited_out() {
        struct TokioTime(tokio::time::Instant);
        impl Clock for TokioTime {
            fn now(&self) -> journaldb_proto::TimeInterval {
                let t = Timestamp::from_nanos(self.0.elapsed().as_nanos() as u64);
                journaldb_proto::TimeInterval::exact(t)
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let clock = TokioTime(tokio::time::Instant::now());
            let ts = Timestamp::from_nanos(5_000);
            commit_wait(&clock, ts).await;
            assert!(clock.now().earliest > ts);
        });
    }
}
