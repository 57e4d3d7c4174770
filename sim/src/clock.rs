//! [`SimClock`]: a host's bounded-error clock in simulated time (ARCHITECTURE §2, §7).
//!
//! True time is turmoil's (the same for every host). A host's clock reads true time plus
//! an error — an offset and a drift that the `clock` fault changes — and reports an
//! interval of ± the configured bound around its reading. Normally the error is kept
//! inside the bound, so the interval contains true time, as the commit rule assumes. In
//! violation mode (the `clock-bound-violation` fault) the error exceeds the bound while
//! the clock still claims it: real-time order may then break, snapshot isolation must not.
//! Readings never go backwards.

use std::time::Duration;

use journaldb_proto::{Clock, TimeInterval, Timestamp};
use parking_lot::Mutex;

/// A simulated host's clock.
#[derive(Debug)]
pub struct SimClock {
    bound: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Error at `anchor`, in nanoseconds.
    offset: i64,
    /// Error growth, in parts per million of the time since `anchor`.
    drift_ppm: i64,
    anchor: u64,
    /// In violation mode the error is not clamped to the bound.
    violating: bool,
    last: u64,
}

/// True (simulated) time since the Unix epoch, in nanoseconds.
pub fn true_now() -> u64 {
    let since = turmoil::since_epoch().expect("SimClock read outside a simulated host");
    since.as_nanos() as u64
}

impl SimClock {
    /// A clock with error bound `bound` and no error yet.
    pub fn new(bound: Duration) -> Self {
        SimClock {
            bound,
            state: Mutex::new(State::default()),
        }
    }

    /// The bound it reports.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// From `now` (true time) on, the error starts at `offset` ns and grows by
    /// `drift_ppm`; `violating` lets it exceed the bound.
    pub fn set_error(&self, now: u64, offset: i64, drift_ppm: i64, violating: bool) {
        let mut s = self.state.lock();
        s.offset = offset;
        s.drift_ppm = drift_ppm;
        s.anchor = now;
        s.violating = violating;
    }

    fn reading(&self, now: u64) -> u64 {
        let mut s = self.state.lock();
        let elapsed = now.saturating_sub(s.anchor) as i128;
        let mut error = i128::from(s.offset) + elapsed * i128::from(s.drift_ppm) / 1_000_000;
        let bound = self.bound.as_nanos() as i128;
        if !s.violating {
            error = error.clamp(-bound, bound);
        }
        let reading = (i128::from(now) + error).max(0) as u64;
        s.last = s.last.max(reading);
        s.last
    }
}

impl Clock for SimClock {
    fn now(&self) -> TimeInterval {
        let reading = self.reading(true_now());
        let bound = self.bound.as_nanos() as u64;
        TimeInterval {
            earliest: Timestamp::from_nanos(reading.saturating_sub(bound)),
            latest: Timestamp::from_nanos(reading.saturating_add(bound)),
        }
    }
}
