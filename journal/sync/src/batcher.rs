//! The group-commit batcher: a bounded queue from many appenders to one flusher.
//!
//! Invariants (all under one mutex): items are numbered densely in push order; the queue
//! holds exactly the items numbered `head_seq .. next_seq`; `queued_bytes` is the sum of
//! their sizes; once closed, no push succeeds, but queued items are still taken.
//! It does not own durability: the flusher reports that through [`crate::DurablePoint`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::prim::{Condvar, Mutex, lock, wait};

/// A bounded multi-producer, single-consumer queue that hands its consumer everything
/// queued at once, numbering items densely in push order.
#[derive(Debug)]
pub struct Batcher<T> {
    state: Mutex<State<T>>,
    /// Signalled when work arrives or the batcher closes, for a flusher thread.
    work: Condvar,
    max_queued_bytes: u64,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<(T, u64)>,
    queued_bytes: u64,
    head_seq: u64,
    next_seq: u64,
    closed: bool,
    /// A flusher thread is blocked in `take_blocking` (so a push must signal `work`).
    flusher_parked: bool,
    /// A flusher task is waiting in `poll_take`.
    flusher_waker: Option<Waker>,
    /// Appenders waiting for room in a full queue.
    space_waiters: Vec<Waker>,
}

/// Items taken from a [`Batcher`] at once: `items[i]` has sequence number `first_seq + i`.
#[derive(Debug)]
pub struct Batch<T> {
    /// Sequence number of the first item.
    pub first_seq: u64,
    /// The items, in sequence order.
    pub items: Vec<T>,
    /// Sum of the items' sizes.
    pub bytes: u64,
}

impl<T> Batch<T> {
    /// The sequence number after the last item.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.items.len() as u64
    }
}

/// The batcher is closed; the item was not queued and is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

/// Why [`Batcher::try_push`] did not queue an item (which it hands back).
#[derive(Debug, PartialEq, Eq)]
pub enum TryPushError<T> {
    /// The queue is at its byte limit; retry after the flusher takes a batch.
    Full(T),
    /// The batcher is closed.
    Closed(T),
}

impl<T> Batcher<T> {
    /// A batcher whose first item gets sequence number `first_seq`, holding at most
    /// `max_queued_bytes` of items (a single larger item is still admitted into an empty
    /// queue, so no item can wait forever).
    pub fn new(first_seq: u64, max_queued_bytes: u64) -> Self {
        Batcher {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                head_seq: first_seq,
                next_seq: first_seq,
                closed: false,
                flusher_parked: false,
                flusher_waker: None,
                space_waiters: Vec::new(),
            }),
            work: Condvar::new(),
            max_queued_bytes,
        }
    }

    /// Queues `item` (counted as `size` bytes) and returns its sequence number, or hands it
    /// back if the queue is full or the batcher closed.
    pub fn try_push(&self, item: T, size: u64) -> Result<u64, TryPushError<T>> {
        let state = lock(&self.state);
        if state.closed {
            return Err(TryPushError::Closed(item));
        }
        if !self.fits(&state, size) {
            return Err(TryPushError::Full(item));
        }
        Ok(self.push_locked(state, item, size))
    }

    /// Queues `item` even if that takes the queue past its byte limit, and returns its
    /// sequence number (or hands it back if the batcher is closed). For callers that cannot
    /// wait at the moment they push — one holding a synchronous lock to keep pushes in the
    /// order of its decisions — and that first waited for [`Batcher::room`], so the
    /// overshoot is bounded by what such callers push between that wait and the push.
    pub fn push_now(&self, item: T, size: u64) -> Result<u64, Closed<T>> {
        let state = lock(&self.state);
        if state.closed {
            return Err(Closed(item));
        }
        Ok(self.push_locked(state, item, size))
    }

    /// Resolves once an item of `size` bytes would be queued without waiting (the queue is
    /// empty or has room for it), or the batcher is closed.
    pub fn room(&self, size: u64) -> Room<'_, T> {
        Room {
            batcher: self,
            size,
        }
    }

    fn fits(&self, state: &State<T>, size: u64) -> bool {
        state.queue.is_empty() || state.queued_bytes + size <= self.max_queued_bytes
    }

    fn push_locked(
        &self,
        mut state: crate::prim::MutexGuard<'_, State<T>>,
        item: T,
        size: u64,
    ) -> u64 {
        let seq = state.next_seq;
        state.next_seq += 1;
        state.queued_bytes += size;
        state.queue.push_back((item, size));
        let signal_thread = std::mem::take(&mut state.flusher_parked);
        let waker = state.flusher_waker.take();
        drop(state);
        if signal_thread {
            self.work.notify_one();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        seq
    }

    /// Queues `item`, waiting while the queue is full. Resolves to its sequence number,
    /// or hands the item back if the batcher is (or becomes) closed.
    pub fn push(&self, item: T, size: u64) -> Push<'_, T> {
        Push {
            batcher: self,
            item: Some(item),
            size,
        }
    }

    /// Blocks until items are queued and takes them (at least one, then more while their
    /// total stays within `max_bytes`). Returns `None` once the batcher is closed and empty.
    pub fn take_blocking(&self, max_bytes: u64) -> Option<Batch<T>> {
        let mut state = lock(&self.state);
        loop {
            if !state.queue.is_empty() {
                return Some(self.take_locked(state, max_bytes));
            }
            if state.closed {
                return None;
            }
            state.flusher_parked = true;
            state = wait(&self.work, state);
        }
    }

    /// The async form of [`Batcher::take_blocking`], for a flusher that runs as a task.
    pub fn poll_take(&self, cx: &mut Context<'_>, max_bytes: u64) -> Poll<Option<Batch<T>>> {
        let mut state = lock(&self.state);
        if !state.queue.is_empty() {
            return Poll::Ready(Some(self.take_locked(state, max_bytes)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.flusher_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn take_locked(
        &self,
        mut state: crate::prim::MutexGuard<'_, State<T>>,
        max_bytes: u64,
    ) -> Batch<T> {
        let first_seq = state.head_seq;
        let mut items = Vec::new();
        let mut bytes = 0u64;
        while let Some((_, size)) = state.queue.front() {
            if !items.is_empty() && bytes + size > max_bytes {
                break;
            }
            let Some((item, size)) = state.queue.pop_front() else {
                break;
            };
            bytes += size;
            items.push(item);
        }
        state.head_seq += items.len() as u64;
        state.queued_bytes -= bytes;
        debug_assert_eq!(state.head_seq + state.queue.len() as u64, state.next_seq);
        let space_waiters = std::mem::take(&mut state.space_waiters);
        drop(state);
        for waker in space_waiters {
            waker.wake();
        }
        Batch {
            first_seq,
            items,
            bytes,
        }
    }

    /// Closes the batcher: later pushes fail with [`Closed`]; queued items are still taken,
    /// after which the flusher's take returns `None`.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        let signal_thread = std::mem::take(&mut state.flusher_parked);
        let waker = state.flusher_waker.take();
        let space_waiters = std::mem::take(&mut state.space_waiters);
        drop(state);
        if signal_thread {
            self.work.notify_one();
        }
        for waker in waker.into_iter().chain(space_waiters) {
            waker.wake();
        }
    }

    /// Whether [`Batcher::close`] was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// The sequence number the next pushed item will get.
    pub fn next_seq(&self) -> u64 {
        lock(&self.state).next_seq
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> u64 {
        lock(&self.state).queued_bytes
    }
}

/// Future returned by [`Batcher::push`].
#[derive(Debug)]
pub struct Push<'a, T> {
    batcher: &'a Batcher<T>,
    item: Option<T>,
    size: u64,
}

impl<T> Unpin for Push<'_, T> {}

impl<T> Future for Push<'_, T> {
    type Output = Result<u64, Closed<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(item) = self.item.take() else {
            panic!("Push polled after it completed");
        };
        match self.batcher.try_push(item, self.size) {
            Ok(seq) => Poll::Ready(Ok(seq)),
            Err(TryPushError::Closed(item)) => Poll::Ready(Err(Closed(item))),
            Err(TryPushError::Full(item)) => {
                // Register, then re-check under the same lock, so a take that ran between
                // the failed try and the registration cannot be missed.
                let mut state = lock(&self.batcher.state);
                if self.batcher.fits(&state, self.size) || state.closed {
                    drop(state);
                    self.item = Some(item);
                    cx.waker().wake_by_ref();
                } else {
                    state.space_waiters.push(cx.waker().clone());
                    drop(state);
                    self.item = Some(item);
                }
                Poll::Pending
            }
        }
    }
}

/// Future returned by [`Batcher::room`].
#[derive(Debug)]
pub struct Room<'a, T> {
    batcher: &'a Batcher<T>,
    size: u64,
}

impl<T> Future for Room<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Check and register under one lock, so a take in between cannot be missed.
        let mut state = lock(&self.batcher.state);
        if self.batcher.fits(&state, self.size) || state.closed {
            return Poll::Ready(());
        }
        state.space_waiters.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        (f.clone(), Waker::from(f))
    }

    #[test]
    fn numbers_items_densely_and_takes_them_in_order() {
        let b = Batcher::new(7, 1 << 20);
        assert_eq!(b.try_push("a", 1), Ok(7));
        assert_eq!(b.try_push("b", 1), Ok(8));
        let batch = b.take_blocking(100).unwrap();
        assert_eq!(
            (batch.first_seq, batch.items, batch.bytes),
            (7, vec!["a", "b"], 2)
        );
        assert_eq!(b.try_push("c", 1), Ok(9));
        assert_eq!(b.take_blocking(100).unwrap().first_seq, 9);
    }

    #[test]
    fn a_batch_stops_at_max_bytes_but_takes_at_least_one_item() {
        let b = Batcher::new(0, 1 << 20);
        for i in 0..4 {
            b.try_push(i, 10).unwrap();
        }
        assert_eq!(b.take_blocking(25).unwrap().items, vec![0, 1]);
        assert_eq!(b.take_blocking(5).unwrap().items, vec![2]);
        assert_eq!(b.take_blocking(5).unwrap().items, vec![3]);
    }

    #[test]
    fn a_full_queue_pushes_back_until_a_take_makes_room() {
        let b = Batcher::new(0, 10);
        b.try_push(0, 6).unwrap();
        assert_eq!(b.try_push(1, 6), Err(TryPushError::Full(1)));
        let (woken, waker) = flag();
        let mut push = b.push(1, 6);
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut push).poll(&mut cx).is_pending());
        b.take_blocking(100).unwrap();
        assert!(woken.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(Pin::new(&mut push).poll(&mut cx), Poll::Ready(Ok(1)));
        // One oversized item is admitted into an empty queue.
        b.take_blocking(100).unwrap();
        assert_eq!(b.try_push(2, 1_000), Ok(2));
    }

    #[test]
    fn push_now_goes_past_the_limit_and_room_waits_until_a_take_makes_room() {
        let b = Batcher::new(0, 10);
        b.try_push(0, 6).unwrap();
        assert_eq!(b.push_now(1, 6), Ok(1), "past the limit");
        assert_eq!(b.queued_bytes(), 12);
        let (woken, waker) = flag();
        let mut cx = Context::from_waker(&waker);
        let mut room = b.room(1);
        assert!(Pin::new(&mut room).poll(&mut cx).is_pending());
        b.take_blocking(100).unwrap();
        assert!(woken.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(Pin::new(&mut room).poll(&mut cx), Poll::Ready(()));
        b.close();
        assert_eq!(b.push_now(2, 1), Err(Closed(2)));
    }

    #[test]
    fn close_refuses_pushes_but_drains_the_queue() {
        let b = Batcher::new(0, 100);
        b.try_push(1, 1).unwrap();
        b.close();
        assert_eq!(b.try_push(2, 1), Err(TryPushError::Closed(2)));
        assert_eq!(b.take_blocking(100).unwrap().items, vec![1]);
        assert!(b.take_blocking(100).is_none());
    }

    #[test]
    fn a_task_flusher_is_woken_by_a_push() {
        let b = Batcher::<u32>::new(0, 100);
        let (woken, waker) = flag();
        let mut cx = Context::from_waker(&waker);
        assert!(b.poll_take(&mut cx, 100).is_pending());
        b.try_push(5, 1).unwrap();
        assert!(woken.0.load(std::sync::atomic::Ordering::SeqCst));
        match b.poll_take(&mut cx, 100) {
            Poll::Ready(Some(batch)) => assert_eq!(batch.items, vec![5]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_thread_flusher_is_woken_by_a_push() {
        let b = Arc::new(Batcher::new(0, 100));
        let flusher = {
            let b = b.clone();
            #[allow(
                clippy::disallowed_methods,
                reason = "the test plays the flusher thread"
            )]
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(batch) = b.take_blocking(100) {
                    got.extend(batch.items);
                }
                got
            })
        };
        for i in 0..100 {
            b.try_push(i, 1).unwrap();
        }
        b.close();
        assert_eq!(flusher.join().unwrap(), (0..100).collect::<Vec<_>>());
    }
}
