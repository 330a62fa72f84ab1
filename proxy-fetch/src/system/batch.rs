//! Group commit: what is asked for while a round of work runs waits for the next round, which
//! does all of it together. Used by the origin's ledger writer (one row write for the starts
//! and results that arrive together) and by the executor's deliveries (one call to an origin
//! for the results that are ready together).

use std::cell::{Cell, RefCell};
use std::future::Future;

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
}
