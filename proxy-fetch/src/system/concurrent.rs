//! Futures run side by side. In place of futures-util's `join_all` and `for_each_concurrent`,
//! whose `FuturesUnordered` (and `FuturesOrdered`'s heap) is compiled once per future type:
//! here the futures are boxed, so one copy serves every future with the same output, and
//! every future still pending is polled on each wake-up (the sets are small: the rows of a
//! round, the jobs of a call).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

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

async fn run<T>(tasks: Vec<Task<'_, T>>, limit: usize) -> Vec<T> {
    let limit = limit.max(1);
    // Each task: still to run (`Err`) or its output (`Ok`).
    let mut slots: Vec<Result<T, Task<'_, T>>> = tasks.into_iter().map(Err).collect();
    // The tasks before `started` were polled at least once.
    let mut started = 0;
    poll_fn(|cx| {
        let mut running = 0;
        for (i, slot) in slots.iter_mut().enumerate() {
            if i >= started {
                if running >= limit {
                    break;
                }
                started = i + 1;
            }
            if let Err(task) = slot {
                match task.as_mut().poll(cx) {
                    Poll::Ready(output) => *slot = Ok(output),
                    Poll::Pending => running += 1,
                }
            }
        }
        if running > 0 || started < slots.len() {
            return Poll::Pending;
        }
        Poll::Ready(())
    })
    .await;
    slots.into_iter().filter_map(Result::ok).collect()
}

#[cfg(test)]
mod tests {
    use super::all;
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Ready after `polls` polls; counts how many of its kind run at once.
    async fn job(n: usize, polls: usize, running: &Cell<usize>, most: &Cell<usize>) -> usize {
        running.set(running.get() + 1);
        most.set(most.get().max(running.get()));
        let mut left = polls;
        std::future::poll_fn(|_| {
            if left == 0 {
                return Poll::Ready(());
            }
            left -= 1;
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
    fn all_returns_outputs_in_order_and_runs_at_most_limit_at_once() {
        // Jobs ready at their first poll included: each frees its place at once.
        for polls in [
            [3, 1, 5, 1, 2, 1, 4, 1, 1, 2],
            [3, 0, 5, 1, 2, 0, 4, 1, 0, 2],
        ] {
            for limit in [1, 2, 6, usize::MAX] {
                let (running, most) = (Cell::new(0), Cell::new(0));
                let jobs = polls
                    .iter()
                    .enumerate()
                    .map(|(n, &p)| job(n, p, &running, &most));
                let outputs = run(all(jobs, limit), 100);
                assert_eq!(outputs, Some((0..polls.len()).collect::<Vec<_>>()));
                assert!(most.get() <= limit, "limit {limit}: {} at once", most.get());
                if !polls.contains(&0) {
                    assert_eq!(most.get(), limit.min(polls.len()), "limit {limit}");
                }
                assert_eq!(running.get(), 0);
            }
        }
    }

    #[test]
    fn all_of_nothing_is_ready_at_once() {
        let none: Vec<std::future::Ready<()>> = Vec::new();
        assert_eq!(run(all(none, 6), 1), Some(Vec::new()));
    }
}
