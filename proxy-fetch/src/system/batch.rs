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
    /// Submitters waiting for their answer, woken when the batcher is free with work queued
    /// (one of them then runs the next round).
    waiting: RefCell<Vec<Waker>>,
    /// A round that lingers ([`Batcher::linger`]), woken when an item is queued.
    lingering: RefCell<Option<Waker>>,
    /// Holds a finished round left ([`Batcher::hold`]): no round starts while there are any.
    holds: Cell<u32>,
}

/// Marks the batcher free when dropped, however its round ended (a dropped future included),
/// and hands the next round to a waiting submitter if work is queued.
struct Busy<'a, T>(&'a Batcher<T>);

impl<T> Drop for Busy<'_, T> {
    fn drop(&mut self) {
        self.0.busy.set(false);
        self.0.wake_if_ready();
    }
}

/// Keeps the next round from starting until dropped ([`Batcher::hold`]).
pub(crate) struct Hold<T>(Rc<Batcher<T>>);

impl<T> Drop for Hold<T> {
    fn drop(&mut self) {
        self.0.holds.set(self.0.holds.get().saturating_sub(1));
        self.0.wake_if_ready();
    }
}

impl<T> Batcher<T> {
    pub(crate) fn new() -> Self {
        Batcher {
            queue: RefCell::new(Vec::new()),
            busy: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
            lingering: RefCell::new(None),
            holds: Cell::new(0),
        }
    }

    /// For a round about to end: the next round waits until the returned `Hold` is dropped,
    /// while the submitters of this one are answered and go on. (The ledger's writer holds
    /// the next round until this one's writes are on disk: the starts that come meanwhile
    /// share it, without their predecessors waiting for that flush.)
    pub(crate) fn hold(self: &Rc<Self>) -> Hold<T> {
        self.holds.set(self.holds.get() + 1);
        Hold(Rc::clone(self))
    }

    /// Whether a round may start: none under way, none held.
    fn free(&self) -> bool {
        !self.busy.get() && self.holds.get() == 0
    }

    /// Wakes the waiting submitters when a round may start on queued work (one of them runs it).
    fn wake_if_ready(&self) {
        if self.free() && !self.queue.borrow().is_empty() {
            for waker in self.waiting.take() {
                waker.wake();
            }
        }
    }

    /// Queues `item` and returns its answer (`None` if a round dropped it unanswered). With no
    /// round under way the caller runs one, on everything queued; otherwise it waits, and runs
    /// the next round itself if it finds the batcher free with work queued. So nobody runs
    /// more than the rounds its own item waits for, and a caller whose future is dropped
    /// leaves no work stranded.
    pub(crate) async fn submit<R, F, Fut>(&self, item: T, answer: Answer<R>, round: F) -> Option<R>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.queue.borrow_mut().push(item);
        if let Some(round) = self.lingering.take() {
            round.wake();
        }
        let mut answer = answer;
        loop {
            if self.holds.get() == 0 && !self.busy.replace(true) {
                let _busy = Busy(self);
                let items = std::mem::take(&mut *self.queue.borrow_mut());
                if !items.is_empty() {
                    round(items).await;
                }
            }
            match (Next {
                batcher: self,
                answer: &mut answer,
            })
            .await
            {
                Step::Answered(value) => return value,
                Step::Lead => continue,
            }
        }
    }

    /// For the round under way: waits until an item that `wanted` accepts is queued, or until
    /// `timer` ends, and takes every item queued by then into the round. (Group commit's
    /// linger: a round with little to do waits briefly for work it could share a write with.)
    pub(crate) async fn linger(
        &self,
        timer: impl Future<Output = ()>,
        wanted: impl Fn(&T) -> bool,
    ) -> Vec<T> {
        self.linger_until(timer, || self.queue.borrow().iter().any(&wanted))
            .await
    }

    /// For the round under way: waits until `done()` holds (asked again whenever an item is
    /// queued or [`nudge`](Self::nudge) is called), or until `timer` ends, and takes every
    /// item queued by then into the round.
    pub(crate) async fn linger_until(
        &self,
        timer: impl Future<Output = ()>,
        done: impl Fn() -> bool,
    ) -> Vec<T> {
        let mut timer = std::pin::pin!(timer);
        std::future::poll_fn(|cx| {
            if done() || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            *self.lingering.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        self.lingering.take();
        std::mem::take(&mut *self.queue.borrow_mut())
    }

    /// Has a lingering round ask its `done()` again (something it waits for changed).
    pub(crate) fn nudge(&self) {
        if let Some(round) = self.lingering.take() {
            round.wake();
        }
    }

    /// Whether no round runs or is held, and nothing waits for one.
    pub(crate) fn is_idle(&self) -> bool {
        self.free() && self.queue.borrow().is_empty()
    }
}

/// What a submitter does next.
enum Step<R> {
    Answered(Option<R>),
    /// The batcher is free and work is queued: run the next round.
    Lead,
}

struct Next<'a, T, R> {
    batcher: &'a Batcher<T>,
    answer: &'a mut Answer<R>,
}

impl<T, R> Future for Next<'_, T, R> {
    type Output = Step<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Step<R>> {
        if let Poll::Ready(value) = Pin::new(&mut *self.answer).poll(cx) {
            return Poll::Ready(Step::Answered(value));
        }
        let batcher = self.batcher;
        if batcher.free() && !batcher.queue.borrow().is_empty() {
            return Poll::Ready(Step::Lead);
        }
        batcher.waiting.borrow_mut().push(cx.waker().clone());
        Poll::Pending
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

/// Adds `item` to the group of `key` in `groups`, which stay sorted by key. (A map would do,
/// but these groups are few and small, and each map type is more code in the Wasm.)
pub(crate) fn add_to_group<K: Ord, T>(groups: &mut Vec<(K, Vec<T>)>, key: K, item: T) {
    match groups.binary_search_by(|(k, _)| k.cmp(&key)) {
        Ok(i) => {
            if let Some((_, items)) = groups.get_mut(i) {
                items.push(item);
            }
        }
        Err(i) => groups.insert(i, (key, vec![item])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    /// Pending at its first poll, ready at the next: a round's await on I/O.
    fn io() -> impl Future<Output = ()> {
        let mut waited = false;
        std::future::poll_fn(move |_| {
            if std::mem::replace(&mut waited, true) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn poll<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    type Item = (i32, Reply<i32>);

    /// Submits `n`, answered with `10 * n` by a round that records what it got.
    fn submitted<'a>(
        batcher: &'a Batcher<Item>,
        rounds: &'a RefCell<Vec<Vec<i32>>>,
        n: i32,
    ) -> impl Future<Output = Option<i32>> + 'a {
        let (reply, answer) = reply();
        batcher.submit((n, reply), answer, move |items: Vec<Item>| async move {
            rounds
                .borrow_mut()
                .push(items.iter().map(|(n, _)| *n).collect());
            io().await;
            for (n, reply) in items {
                reply.send(10 * n);
            }
        })
    }

    #[test]
    fn items_queued_during_a_round_go_together_in_the_next_run_by_one_of_their_submitters() {
        let batcher = Batcher::new();
        let rounds = RefCell::new(Vec::new());
        let mut first = pin!(submitted(&batcher, &rounds, 0));
        assert!(poll(first.as_mut()).is_pending(), "its round awaits I/O");
        let mut later: Vec<_> = (1..=3)
            .map(|n| Box::pin(submitted(&batcher, &rounds, n)))
            .collect();
        for f in &mut later {
            assert!(
                poll(f.as_mut()).is_pending(),
                "a round is under way: they queue"
            );
        }
        assert_eq!(
            poll(first.as_mut()),
            Poll::Ready(Some(0)),
            "the first caller runs one round"
        );
        assert!(
            poll(later[0].as_mut()).is_pending(),
            "it runs the next round, which awaits I/O"
        );
        assert!(
            poll(later[1].as_mut()).is_pending(),
            "its item is in that round"
        );
        assert_eq!(poll(later[0].as_mut()), Poll::Ready(Some(10)));
        assert_eq!(poll(later[1].as_mut()), Poll::Ready(Some(20)));
        assert_eq!(poll(later[2].as_mut()), Poll::Ready(Some(30)));
        assert_eq!(*rounds.borrow(), vec![vec![0], vec![1, 2, 3]]);
        assert!(batcher.is_idle());
    }

    #[test]
    fn a_held_batcher_answers_its_round_and_starts_the_next_only_once_the_hold_ends() {
        let batcher: Rc<Batcher<Item>> = Rc::new(Batcher::new());
        let rounds: RefCell<Vec<Vec<i32>>> = RefCell::new(Vec::new());
        let hold: RefCell<Option<Hold<Item>>> = RefCell::new(None);
        let submit = |n: i32| {
            let (reply, answer) = reply();
            let (batcher, rounds, hold) = (&batcher, &rounds, &hold);
            batcher.submit((n, reply), answer, move |items: Vec<Item>| async move {
                rounds
                    .borrow_mut()
                    .push(items.iter().map(|(n, _)| *n).collect());
                for (n, reply) in items {
                    reply.send(10 * n);
                }
                *hold.borrow_mut() = Some(batcher.hold());
            })
        };
        let mut first = Box::pin(submit(0));
        assert_eq!(
            poll(first.as_mut()),
            Poll::Ready(Some(0)),
            "its submitter is answered, though the round holds the next"
        );
        assert!(!batcher.is_idle(), "held");
        let mut second = Box::pin(submit(1));
        let mut third = Box::pin(submit(2));
        let wakes = std::sync::Arc::new(Wakes(0.into()));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "no round while held"
        );
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert_eq!(rounds.borrow().len(), 1);
        let ended = hold.borrow_mut().take();
        drop(ended);
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the end of the hold wakes the waiting submitters"
        );
        assert_eq!(poll(second.as_mut()), Poll::Ready(Some(10)));
        assert_eq!(poll(third.as_mut()), Poll::Ready(Some(20)));
        assert_eq!(*rounds.borrow(), vec![vec![0], vec![1, 2]]);
        drop(hold.borrow_mut().take());
        assert!(batcher.is_idle());
    }

    #[test]
    fn a_dropped_round_leaves_no_work_stranded() {
        let batcher = Batcher::new();
        let rounds = RefCell::new(Vec::new());
        let mut first = Box::pin(submitted(&batcher, &rounds, 0));
        assert!(poll(first.as_mut()).is_pending());
        let mut second = pin!(submitted(&batcher, &rounds, 1));
        assert!(poll(second.as_mut()).is_pending());
        drop(first);
        // The second submitter finds the batcher free with its item queued: it runs the round.
        assert!(poll(second.as_mut()).is_pending());
        assert_eq!(poll(second.as_mut()), Poll::Ready(Some(10)));
        assert_eq!(*rounds.borrow(), vec![vec![0], vec![1]]);
        assert!(batcher.is_idle());
    }

    #[test]
    fn a_lingering_round_takes_in_what_is_queued_once_a_wanted_item_comes() {
        let batcher: Batcher<i32> = Batcher::new();
        let never = std::future::pending::<()>();
        let mut lingering = pin!(batcher.linger(never, |n| *n > 10));
        assert!(poll(lingering.as_mut()).is_pending());
        batcher.queue.borrow_mut().push(1);
        assert!(poll(lingering.as_mut()).is_pending(), "1 is not wanted");
        batcher.queue.borrow_mut().push(11);
        assert_eq!(poll(lingering.as_mut()), Poll::Ready(vec![1, 11]));
        assert!(batcher.queue.borrow().is_empty());
        // Its timer ends a linger with nothing wanted queued.
        batcher.queue.borrow_mut().push(2);
        assert_eq!(
            poll(pin!(batcher.linger(std::future::ready(()), |n| *n > 10))),
            Poll::Ready(vec![2])
        );
    }

    #[test]
    fn a_round_lingering_until_a_condition_is_woken_by_a_nudge_and_takes_what_was_queued() {
        let batcher: Batcher<i32> = Batcher::new();
        let expected = Cell::new(2);
        let wakes = std::sync::Arc::new(Wakes(0.into()));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut lingering =
            pin!(batcher.linger_until(std::future::pending(), || expected.get() == 0));
        assert!(lingering.as_mut().poll(&mut cx).is_pending());
        batcher.queue.borrow_mut().push(1);
        expected.set(1);
        batcher.nudge();
        assert_eq!(woken(), 1, "a nudge wakes the lingering round");
        assert!(
            lingering.as_mut().poll(&mut cx).is_pending(),
            "one is still expected"
        );
        expected.set(0);
        batcher.nudge();
        assert_eq!(woken(), 2);
        assert_eq!(lingering.as_mut().poll(&mut cx), Poll::Ready(vec![1]));
        batcher.nudge();
        assert_eq!(woken(), 2, "no round lingers: a nudge wakes nobody");
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
