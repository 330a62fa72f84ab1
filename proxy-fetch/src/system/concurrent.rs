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
