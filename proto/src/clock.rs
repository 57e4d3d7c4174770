//! Time with a bounded error (ARCHITECTURE §2).
//!
//! A [`Clock`] answers with a [`TimeInterval`] that contains true time, ClockBound-style.
//! Commit timestamps are taken from `latest`, and a commit is acknowledged only once
//! `earliest` has passed it (commit wait). [`SystemClock`] is the production clock and the
//! only code in journaldb that reads the system's clocks; [`ManualClock`] is driven by hand
//! in tests. The simulated clock lives in `journaldb-sim`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::Timestamp;
use crate::ids::duration_nanos;

/// An interval that contains true time: `earliest ≤ true time ≤ latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInterval {
    /// No earlier than this.
    pub earliest: Timestamp,
    /// No later than this.
    pub latest: Timestamp,
}

impl TimeInterval {
    /// An interval of zero width: a clock that is exactly right.
    pub const fn exact(ts: Timestamp) -> Self {
        TimeInterval {
            earliest: ts,
            latest: ts,
        }
    }

    /// `latest - earliest`.
    pub fn width(&self) -> Duration {
        self.latest.saturating_duration_since(self.earliest)
    }
}

/// A source of bounded-error time. Every read of time in journaldb goes through one.
pub trait Clock: Send + Sync + 'static {
    /// The current time, as an interval that contains true time.
    fn now(&self) -> TimeInterval;
}

/// Settings of a [`SystemClock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemClockConfig {
    /// How far the system time may be from true time (NTP's bound on this host).
    /// Default 1 ms, as ARCHITECTURE §2 says.
    pub base_error: Duration,
    /// How fast the monotonic clock may drift from true time, in parts per million.
    /// Default 200 ppm: ten times the ±20 ppm of a typical crystal, since `CLOCK_MONOTONIC`
    /// is slewed by NTP as well.
    pub drift_ppm: u64,
    /// How often the clock re-reads the system time, which resets the drift term.
    /// Default 1 s, which keeps the drift term under 0.2 ms at the default drift.
    pub reanchor_interval: Duration,
}

impl Default for SystemClockConfig {
    fn default() -> Self {
        SystemClockConfig {
            base_error: Duration::from_millis(1),
            drift_ppm: 200,
            reanchor_interval: Duration::from_secs(1),
        }
    }
}

/// The production clock: the system time read at an anchor, advanced by the monotonic
/// clock, with an error bound of `base_error + drift_ppm × time since the anchor`.
///
/// It re-anchors to the system time every `reanchor_interval`. Each anchor's interval
/// contains true time (given NTP keeps the system time within `base_error`), so every
/// answer is valid; and because the bounds of successive answers are clamped to never
/// decrease, a step of the system clock backwards never moves `earliest` or `latest`
/// backwards either (clamping only narrows a valid `earliest` toward a value that was
/// valid earlier, and widens `latest`).
#[derive(Debug)]
pub struct SystemClock {
    config: SystemClockConfig,
    anchor: Mutex<Anchor>,
    last_earliest: AtomicU64,
    last_latest: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    system: Timestamp,
    instant: Instant,
}

impl Anchor {
    #[allow(
        clippy::disallowed_methods,
        reason = "SystemClock is the one place that reads the system's clocks"
    )]
    fn read() -> Anchor {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_nanos)
            .unwrap_or(0);
        Anchor {
            system: Timestamp::from_nanos(system),
            instant: Instant::now(),
        }
    }
}

impl SystemClock {
    /// A clock with the default settings.
    pub fn new() -> Self {
        Self::with_config(SystemClockConfig::default())
    }

    /// A clock with explicit settings.
    pub fn with_config(config: SystemClockConfig) -> Self {
        SystemClock {
            config,
            anchor: Mutex::new(Anchor::read()),
            last_earliest: AtomicU64::new(0),
            last_latest: AtomicU64::new(0),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A shared clock is a clock (one clock for several roles of a process).
impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> TimeInterval {
        (**self).now()
    }
}

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "SystemClock is the one place that reads the system's clocks"
    )]
    fn now(&self) -> TimeInterval {
        let now = Instant::now();
        let anchor = {
            let mut anchor = self.anchor.lock();
            if now.saturating_duration_since(anchor.instant) >= self.config.reanchor_interval {
                *anchor = Anchor::read();
            }
            *anchor
        };
        let elapsed = now.saturating_duration_since(anchor.instant);
        let drift = duration_nanos(elapsed).saturating_mul(self.config.drift_ppm) / 1_000_000;
        let error = duration_nanos(self.config.base_error).saturating_add(drift);
        let mid = anchor
            .system
            .as_nanos()
            .saturating_add(duration_nanos(elapsed));
        // Both bounds are valid on their own; clamping to the largest values handed out
        // before keeps them valid (those bounds held earlier, so hold now) and monotone.
        let earliest = mid.saturating_sub(error);
        let latest = mid.saturating_add(error);
        let earliest = earliest.max(self.last_earliest.fetch_max(earliest, Ordering::AcqRel));
        let latest = latest.max(self.last_latest.fetch_max(latest, Ordering::AcqRel));
        TimeInterval {
            earliest: Timestamp::from_nanos(earliest),
            latest: Timestamp::from_nanos(latest),
        }
    }
}

/// The clock of an embedded database (ARCHITECTURE §2): one process, one clock for every
/// role, so its error is zero. It starts at max(system time, `floor` + 1) — `floor` being
/// the largest τ in the journals — and then advances with the monotonic clock, so after a
/// restart it never runs behind an acknowledged commit, even if the system clock stepped
/// back. Commit wait under it is a wait for the next nanosecond.
#[derive(Debug)]
pub struct EmbeddedClock {
    start: Timestamp,
    anchor: Instant,
}

impl EmbeddedClock {
    /// A clock that will never answer `floor` or anything before it.
    #[allow(
        clippy::disallowed_methods,
        reason = "the embedded clock reads the system's clocks once, at its start"
    )]
    pub fn new(floor: Timestamp) -> Self {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_nanos)
            .unwrap_or(0);
        EmbeddedClock {
            start: Timestamp::from_nanos(system).max(floor.next()),
            anchor: Instant::now(),
        }
    }
}

impl Clock for EmbeddedClock {
    fn now(&self) -> TimeInterval {
        // `Instant` is monotonic, so this never goes backwards.
        TimeInterval::exact(self.start.saturating_add(self.anchor.elapsed()))
    }
}

/// A clock driven by hand, for tests: it answers `[t − error, t + error]` for the `t` and
/// `error` last set, and never moves unless told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    state: Mutex<(Timestamp, Duration)>,
}

impl ManualClock {
    /// A clock at `t` with zero error.
    pub fn new(t: Timestamp) -> Self {
        ManualClock {
            state: Mutex::new((t, Duration::ZERO)),
        }
    }

    /// Sets the current time. Tests may move it backwards on purpose.
    pub fn set(&self, t: Timestamp) {
        self.state.lock().0 = t;
    }

    /// Advances the current time by `d`.
    pub fn advance(&self, d: Duration) {
        let mut s = self.state.lock();
        s.0 = s.0.saturating_add(d);
    }

    /// Sets the error bound on each side of the current time.
    pub fn set_error(&self, error: Duration) {
        self.state.lock().1 = error;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> TimeInterval {
        let (t, error) = *self.state.lock();
        TimeInterval {
            earliest: t.saturating_sub(error),
            latest: t.saturating_add(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_monotone_and_contains_system_time() {
        let clock = SystemClock::with_config(SystemClockConfig {
            base_error: Duration::from_millis(5),
            drift_ppm: 200,
            reanchor_interval: Duration::from_millis(1),
        });
        let mut prev = clock.now();
        for _ in 0..10_000 {
            let now = clock.now();
            assert!(now.earliest >= prev.earliest && now.latest >= prev.latest);
            assert!(now.earliest <= now.latest);
            prev = now;
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "the test compares with system time"
        )]
        let sys = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let sys = Timestamp::from_nanos(duration_nanos(sys));
        let now = clock.now();
        // The system clock is our reference here; it does not step during a unit test.
        assert!(now.earliest <= sys.saturating_add(Duration::from_millis(5)));
        assert!(now.latest >= sys.saturating_sub(Duration::from_millis(5)));
        assert!(now.width() >= Duration::from_millis(10));
    }

    #[test]
    fn the_embedded_clock_starts_after_the_floor_and_never_goes_back() {
        let far_future = Timestamp::from_nanos(u64::MAX / 2);
        let clock = EmbeddedClock::new(far_future);
        let first = clock.now();
        assert_eq!(first.width(), Duration::ZERO);
        assert!(
            first.earliest > far_future,
            "a restart never runs behind the journal"
        );
        let mut prev = first;
        for _ in 0..1_000 {
            let now = clock.now();
            assert!(now.latest >= prev.latest);
            prev = now;
        }
        let fresh = EmbeddedClock::new(Timestamp::ZERO).now();
        assert!(
            fresh.latest < far_future,
            "an empty journal starts at system time"
        );
    }

    #[test]
    fn manual_clock_answers_what_it_was_told() {
        let clock = ManualClock::new(Timestamp::from_nanos(1_000));
        assert_eq!(
            clock.now(),
            TimeInterval::exact(Timestamp::from_nanos(1_000))
        );
        clock.advance(Duration::from_nanos(500));
        clock.set_error(Duration::from_nanos(100));
        assert_eq!(
            clock.now(),
            TimeInterval {
                earliest: Timestamp::from_nanos(1_400),
                latest: Timestamp::from_nanos(1_600)
            }
        );
        clock.set(Timestamp::from_nanos(10));
        assert_eq!(clock.now().earliest, Timestamp::ZERO);
    }
}
