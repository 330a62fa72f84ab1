//! Group commit: what is asked for while a round of work runs waits for the next round, which
//! does all of it together. Used by the origin's ledger writer (one row write for the starts
//! and results that arrive together) and by the executor's deliveries (one call to an origin
//! for the results that are ready together).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

pub(crate) struct Batcher<T> {
    queue: RefCell<Vec<T>>,
    busy: Cell<bool>,
}

/// Marks the batcher idle when dropped, however its round ended.
struct Busy<'a>(&'a Cell<bool>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl<T> Batcher<T> {
    pub(crate) fn new() -> Self {
        Batcher {
            queue: RefCell::new(Vec::new()),
            busy: Cell::new(false),
        }
    }

    /// Queues `item`. With no round under way, the caller runs `round` on what is queued (its
    /// own item first) until nothing is, and `submit` returns `true`; otherwise it returns
    /// `false` at once. Either way an item's answer travels through a channel of its own.
    pub(crate) async fn submit<F, Fut>(&self, item: T, round: F) -> bool
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.queue.borrow_mut().push(item);
        if self.busy.replace(true) {
            return false;
        }
        let _busy = Busy(&self.busy);
        loop {
            let items = std::mem::take(&mut *self.queue.borrow_mut());
            if items.is_empty() {
                return true;
            }
            round(items).await;
        }
    }

    /// Whether no round runs and nothing waits for one.
    pub(crate) fn is_idle(&self) -> bool {
        !self.busy.get() && self.queue.borrow().is_empty()
    }
}

/// Where a round answers an item: a one-shot channel for the one thread the Wasm runs on
/// (futures-channel's, made for threads, is more code).
pub(crate) struct Reply<T>(Rc<RefCell<Answered<T>>>);

/// What the one who queued an item awaits: the answer, or `None` if the round dropped the
/// item unanswered.
pub(crate) struct Answer<T>(Rc<RefCell<Answered<T>>>);

struct Answered<T> {
    value: Option<T>,
    /// The reply was sent or dropped.
    closed: bool,
    waker: Option<Waker>,
}

/// A reply and the answer it sends.
pub(crate) fn reply<T>() -> (Reply<T>, Answer<T>) {
    let answered = Rc::new(RefCell::new(Answered {
        value: None,
        closed: false,
        waker: None,
    }));
    (Reply(answered.clone()), Answer(answered))
}

impl<T> Reply<T> {
    pub(crate) fn send(self, value: T) {
        self.0.borrow_mut().value = Some(value);
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let waker = {
            let mut answered = self.0.borrow_mut();
            answered.closed = true;
            answered.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Answer<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut answered = self.0.borrow_mut();
        if let Some(value) = answered.value.take() {
            return Poll::Ready(Some(value));
        }
        if answered.closed {
            return Poll::Ready(None);
        }
        answered.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn items_queued_during_a_round_are_done_together_in_the_next() {
        let batcher = Batcher::new();
        let rounds = RefCell::new(Vec::new());
        let inner = RefCell::new(Vec::new());
        // The first round, while it runs, sees three more items submitted.
        let led = batcher
            .submit(0, |items: Vec<i32>| {
                if items == [0] {
                    for i in 1..=3 {
                        inner
                            .borrow_mut()
                            .push(batcher.submit(i, |_| async {}).now_or_never());
                    }
                }
                rounds.borrow_mut().push(items);
                async {}
            })
            .now_or_never();
        assert_eq!(led, Some(true));
        assert_eq!(
            inner.into_inner(),
            vec![Some(false); 3],
            "a round is under way: they only queue"
        );
        assert_eq!(rounds.into_inner(), vec![vec![0], vec![1, 2, 3]]);
        assert!(batcher.is_idle());
    }

    /// Counts its wake-ups.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn answer_is_what_was_sent_or_none_once_the_reply_is_dropped_and_either_wakes_it() {
        let wakes = std::sync::Arc::new(Wakes(0.into()));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);

        let (sent, mut answer) = reply::<u32>();
        assert_eq!(Pin::new(&mut answer).poll(&mut cx), Poll::Pending);
        sent.send(7);
        assert_eq!(woken(), 1);
        assert_eq!(Pin::new(&mut answer).poll(&mut cx), Poll::Ready(Some(7)));

        let (dropped, mut answer) = reply::<u32>();
        assert_eq!(Pin::new(&mut answer).poll(&mut cx), Poll::Pending);
        drop(dropped);
        assert_eq!(woken(), 2);
        assert_eq!(Pin::new(&mut answer).poll(&mut cx), Poll::Ready(None));

        // Answered before anyone waited.
        let (sent, mut answer) = reply::<u32>();
        sent.send(8);
        assert_eq!(Pin::new(&mut answer).poll(&mut cx), Poll::Ready(Some(8)));
    }
}
