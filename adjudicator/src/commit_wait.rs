//! Commit wait (ARCHITECTURE §3): a commit at τc is acknowledged only once the clock says
//! τc has passed for certain, `now().earliest > τc`, so every transaction that begins after
//! the acknowledgement, on any clock within the bound, reads at a τs ≥ τc and sees it. The
//! embedded database and the cluster client both wait here before acknowledging.

use std::time::Duration;

use journaldb_proto::{Clock, Timestamp};

/// Returns once `clock.now().earliest > ts`. A zero-width clock (the embedded one: τc is at
/// most a few nanoseconds ahead) is waited out by yielding, since a timer would round the
/// wait up to its millisecond; a clock with an error bound (about 2ε to wait) sleeps.
pub async fn commit_wait(clock: &dyn Clock, ts: Timestamp) {
    loop {
        let now = clock.now();
        if now.earliest > ts {
            return;
        }
        if now.earliest == now.latest {
            tokio::task::yield_now().await;
        } else {
            let left = ts.saturating_duration_since(now.earliest);
            tokio::time::sleep(left.max(MIN_SLEEP)).await;
        }
    }
}

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
            .start_paused(true)
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
    fn a_zero_width_clock_is_waited_out_by_yielding() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
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
            // No timer involved: the paused clock never moves, yet the wait ends.
            wait.await.unwrap();
        });
    }
}
