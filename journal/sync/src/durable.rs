//! The durable point: how far the log is durable, and who is waiting for it to move.
//!
//! Invariants: `end` never decreases; every sequence number below `end` is durable; once
//! halted, `end` never moves again. A waiter is woken by the first `advance` past its
//! position or by `halt`. Registration re-checks `end` under the waiter lock, and `advance`
//! publishes `end` before taking that lock, so no wake-up is lost (the loom test checks
//! exactly this, and that a variant without the re-check deadlocks).
//! It does not own what is durable: the flusher decides that and reports it here.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::prim::{AtomicBool, AtomicU64, Mutex, Ordering, lock};

/// The end of the durable prefix of a log, with async waiters.
#[derive(Debug)]
pub struct DurablePoint {
    /// Every sequence number `< end` is durable.
    end: AtomicU64,
    halted: AtomicBool,
    waiters: Mutex<Waiters>,
    /// Planted bug for the loom negative control: skip the re-check after registering.
    #[cfg(loom)]
    lost_wakeup_bug: bool,
}

#[derive(Debug, Default)]
struct Waiters {
    /// Keyed by (sequence number waited for, waiter id), so an advance wakes a prefix.
    by_seq: BTreeMap<(u64, u64), Waker>,
    next_id: u64,
}

/// The durable point was halted (after an I/O error, or at close) before reaching the
/// position waited for; it will never get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halted;

impl DurablePoint {
    /// A durable point at which every sequence number `< end` is already durable.
    pub fn new(end: u64) -> Self {
        DurablePoint {
            end: AtomicU64::new(end),
            halted: AtomicBool::new(false),
            waiters: Mutex::new(Waiters::default()),
            #[cfg(loom)]
            lost_wakeup_bug: false,
        }
    }

    /// The loom negative control: a durable point whose waiters do not re-check after
    /// registering, which loses wake-ups. Exists only under `cfg(loom)`.
    #[cfg(loom)]
    pub fn with_lost_wakeup_bug(end: u64) -> Self {
        DurablePoint {
            lost_wakeup_bug: true,
            ..Self::new(end)
        }
    }

    /// Every sequence number below this is durable.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Whether [`DurablePoint::halt`] was called.
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    /// Declares every sequence number below `end` durable and wakes their waiters.
    ///
    /// # Panics
    /// If `end` is below the current end (durability never goes backwards) or the point
    /// was halted: both are bugs in the caller.
    pub fn advance(&self, end: u64) {
        assert!(!self.is_halted(), "advance after halt");
        let prev = self.end.fetch_max(end, Ordering::AcqRel);
        assert!(
            prev <= end,
            "durable point moved backwards: {prev} -> {end}"
        );
        let mut waiters = lock(&self.waiters);
        // Everything keyed below (end, 0) waits for a sequence number < end.
        let still_waiting = waiters.by_seq.split_off(&(end, 0));
        let ready = std::mem::replace(&mut waiters.by_seq, still_waiting);
        drop(waiters);
        for waker in ready.into_values() {
            waker.wake();
        }
    }

    /// Stops the durable point for good and wakes every waiter; those whose position is
    /// not durable get [`Halted`].
    pub fn halt(&self) {
        self.halted.store(true, Ordering::Release);
        let ready = std::mem::take(&mut lock(&self.waiters).by_seq);
        for waker in ready.into_values() {
            waker.wake();
        }
    }

    /// Resolves once sequence number `seq` is durable, or to [`Halted`] if it never will be.
    pub fn wait_durable(&self, seq: u64) -> WaitDurable<'_> {
        WaitDurable {
            point: self,
            seq,
            registered: None,
        }
    }

    fn check(&self, seq: u64) -> Option<Result<(), Halted>> {
        if seq < self.end() {
            Some(Ok(()))
        } else if self.is_halted() {
            // Halting happens after the last advance, so re-read `end` once more.
            Some(if seq < self.end() {
                Ok(())
            } else {
                Err(Halted)
            })
        } else {
            None
        }
    }
}

/// Future returned by [`DurablePoint::wait_durable`]. Dropping it deregisters it.
#[derive(Debug)]
pub struct WaitDurable<'a> {
    point: &'a DurablePoint,
    seq: u64,
    /// Our key in the waiter map once registered.
    registered: Option<(u64, u64)>,
}

impl Future for WaitDurable<'_> {
    type Output = Result<(), Halted>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let point = self.point;
        if let Some(done) = point.check(self.seq) {
            self.deregister();
            return Poll::Ready(done);
        }
        let mut waiters = lock(&point.waiters);
        let key = match self.registered {
            Some(key) => key,
            None => {
                let key = (self.seq, waiters.next_id);
                waiters.next_id += 1;
                key
            }
        };
        // (Re-)insert: an advance may have removed and woken our previous registration.
        waiters.by_seq.insert(key, cx.waker().clone());
        self.registered = Some(key);
        #[cfg(loom)]
        if point.lost_wakeup_bug {
            return Poll::Pending;
        }
        // Re-check with the registration visible: an advance or halt that published before
        // we took the lock is seen here; one that publishes later will find our waker.
        if let Some(done) = point.check(self.seq) {
            waiters.by_seq.remove(&key);
            self.registered = None;
            return Poll::Ready(done);
        }
        Poll::Pending
    }
}

impl WaitDurable<'_> {
    fn deregister(&mut self) {
        if let Some(key) = self.registered.take() {
            lock(&self.point.waiters).by_seq.remove(&key);
        }
    }
}

impl Drop for WaitDurable<'_> {
    fn drop(&mut self) {
        self.deregister();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
    use std::task::{Wake, Waker};

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, StdOrdering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn waiters_resolve_when_their_position_becomes_durable() {
        let p = DurablePoint::new(1);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut w5 = p.wait_durable(5);
        let mut w2 = p.wait_durable(2);
        assert_eq!(
            Pin::new(&mut p.wait_durable(0)).poll(&mut cx),
            Poll::Ready(Ok(()))
        );
        assert!(Pin::new(&mut w5).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut w2).poll(&mut cx).is_pending());
        p.advance(3);
        assert_eq!(
            count.0.load(StdOrdering::SeqCst),
            1,
            "only the waiter for 2 is woken"
        );
        assert_eq!(Pin::new(&mut w2).poll(&mut cx), Poll::Ready(Ok(())));
        assert!(Pin::new(&mut w5).poll(&mut cx).is_pending());
        p.advance(6);
        assert_eq!(Pin::new(&mut w5).poll(&mut cx), Poll::Ready(Ok(())));
    }

    #[test]
    fn halt_fails_pending_waiters_but_not_durable_ones() {
        let p = DurablePoint::new(0);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut w = p.wait_durable(3);
        assert!(Pin::new(&mut w).poll(&mut cx).is_pending());
        p.advance(2);
        p.halt();
        assert_eq!(count.0.load(StdOrdering::SeqCst), 1);
        assert_eq!(Pin::new(&mut w).poll(&mut cx), Poll::Ready(Err(Halted)));
        assert_eq!(
            Pin::new(&mut p.wait_durable(1)).poll(&mut cx),
            Poll::Ready(Ok(()))
        );
    }

    #[test]
    fn a_dropped_waiter_deregisters() {
        let p = DurablePoint::new(0);
        let (_count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut w = p.wait_durable(3);
        assert!(Pin::new(&mut w).poll(&mut cx).is_pending());
        drop(w);
        assert!(lock(&p.waiters).by_seq.is_empty());
    }

    #[test]
    #[should_panic(expected = "backwards")]
    fn advancing_backwards_is_a_bug() {
        let p = DurablePoint::new(5);
        p.advance(4);
    }
}
