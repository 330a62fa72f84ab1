//! Futures run side by side. In place of futures-util's `join_all` and `for_each_concurrent`,
//! whose `FuturesUnordered` (and `FuturesOrdered`'s heap) is compiled once per future type:
//! here the futures are boxed, so one copy serves every future with the same output. A wake-up
//! polls only the futures woken since the last poll.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs `futures` side by side, at most `limit` of them at a time (started in order), and
/// returns their outputs in the order of `futures`.
pub(super) async fn all<'a, F>(futures: impl IntoIterator<Item = F>, limit: usize) -> Vec<F::Output>
where
    F: Future + 'a,
{
    let tasks = futures
        .into_iter()
        .map(|f| Box::pin(f) as Task<'a, F::Output>)
        .collect();
    run(tasks, limit).await
}

/// What the wakers of one `all` share: the tasks woken since its last poll, and its own waker.
#[derive(Default)]
struct Woken {
    tasks: Mutex<Vec<usize>>,
    waker: Mutex<Option<Waker>>,
}

/// The waker of task `index`.
struct TaskWaker {
    index: usize,
    woken: Arc<Woken>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut tasks) = self.woken.tasks.lock() {
            tasks.push(self.index);
        }
        if let Ok(waker) = self.woken.waker.lock() {
            if let Some(waker) = waker.as_ref() {
                waker.wake_by_ref();
            }
        }
    }
}

async fn run<T>(tasks: Vec<Task<'_, T>>, limit: usize) -> Vec<T> {
    let limit = limit.max(1);
    let woken = Arc::new(Woken::default());
    // Each task: still to run (`Err`, with its waker) or its output (`Ok`).
    let mut slots: Vec<Result<T, (Task<'_, T>, Waker)>> = tasks
        .into_iter()
        .enumerate()
        .map(|(index, task)| {
            let woken = woken.clone();
            Err((task, Waker::from(Arc::new(TaskWaker { index, woken }))))
        })
        .collect();
    // Tasks before `started` were polled at least once; `running` of them are not done.
    let (mut started, mut running) = (0, 0);
    poll_fn(|cx: &mut Context<'_>| {
        if let Ok(mut waker) = woken.waker.lock() {
            *waker = Some(cx.waker().clone());
        }
        let mut due = woken
            .tasks
            .lock()
            .map(|mut tasks| std::mem::take(&mut *tasks))
            .unwrap_or_default();
        loop {
            while running < limit && started < slots.len() {
                due.push(started);
                started += 1;
                running += 1;
            }
            if due.is_empty() {
                break;
            }
            for index in std::mem::take(&mut due) {
                let Some(slot) = slots.get_mut(index) else {
                    continue;
                };
                if let Err((task, waker)) = slot {
                    let poll = task.as_mut().poll(&mut Context::from_waker(waker));
                    if let Poll::Ready(output) = poll {
                        *slot = Ok(output);
                        running -= 1;
                    }
                }
            }
        }
        if running > 0 {
            return Poll::Pending;
        }
        Poll::Ready(())
    })
    .await;
    slots.into_iter().filter_map(Result::ok).collect()
}

/// `future`'s output, or `None` when `ms` milliseconds passed first (it is then dropped).
pub(super) async fn within<F: Future>(future: F, ms: u64) -> Option<F::Output> {
    let mut future = Box::pin(future);
    let mut timer = Box::pin(worker::Delay::from(std::time::Duration::from_millis(ms)));
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::all;
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Counts kept by the jobs of a test.
    #[derive(Default)]
    struct Counts {
        running: Cell<usize>,
        most: Cell<usize>,
        polls: Cell<usize>,
    }

    /// Pending (and waking itself) `pending` times, then ready with `n`.
    async fn job(n: usize, pending: usize, counts: &Counts) -> usize {
        let Counts {
            running,
            most,
            polls,
        } = counts;
        running.set(running.get() + 1);
        most.set(most.get().max(running.get()));
        let mut left = pending;
        std::future::poll_fn(|cx| {
            polls.set(polls.get() + 1);
            if left == 0 {
                return Poll::Ready(());
            }
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
        running.set(running.get() - 1);
        n
    }

    /// Polls `future` until it is ready, at most `max_polls` times.
    fn run<T>(future: impl Future<Output = T>, max_polls: usize) -> Option<T> {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        (0..max_polls).find_map(|_| match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    }

    #[test]
    fn all_returns_outputs_in_order_runs_at_most_limit_at_once_and_polls_only_when_woken() {
        // Jobs ready at their first poll included: each frees its place at once.
        for pending in [
            [3, 1, 5, 1, 2, 1, 4, 1, 1, 2],
            [3, 0, 5, 1, 2, 0, 4, 1, 0, 2],
        ] {
            for limit in [1, 2, 6, usize::MAX] {
                let counts = Counts::default();
                let jobs = pending.iter().enumerate().map(|(n, &p)| job(n, p, &counts));
                let outputs = run(all(jobs, limit), 100);
                assert_eq!(outputs, Some((0..pending.len()).collect::<Vec<_>>()));
                let most = counts.most.get();
                assert!(most <= limit, "limit {limit}: {most} at once");
                if !pending.contains(&0) {
                    assert_eq!(most, limit.min(pending.len()), "limit {limit}");
                }
                assert_eq!(counts.running.get(), 0);
                // Each job polled once more than it was pending: once a wake-up.
                let polls: usize = pending.iter().map(|p| p + 1).sum();
                assert_eq!(counts.polls.get(), polls, "limit {limit}");
            }
        }
    }

    #[test]
    fn all_of_nothing_is_ready_at_once() {
        let none: Vec<std::future::Ready<()>> = Vec::new();
        assert_eq!(run(all(none, 6), 1), Some(Vec::new()));
    }
}
