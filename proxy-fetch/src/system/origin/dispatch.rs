//! Jobs on their way out: to the executor (direct flow), in calls of up to
//! [`MAX_JOBS_PER_CALL`], or to the orchestrator shard that tracks each (orchestrated flow).

use worker::Env;

use super::ledger::PendingRecord;
use crate::rpc::{log_error, CallError, HandlerError, RpcError, RpcErrorKind};
use crate::system::protocol::{
    into_calls, ExecutorClient, FetchJob, LongJob, LongQueue, OrchestratorClient, QueueRef, Ticket,
    BUSY, MAX_JOBS_PER_CALL, MAX_JOBS_PER_ENQUEUE, MISSING_BINDING,
};
use crate::system::{Flow, ProxyFetchError, ProxyFetchOptions};

/// In the orchestrated flow the origin's sweep acts this many backstop periods after a start
/// (the orchestrator's backstop acts after one): it queues the request again, which the
/// orchestrator ignores when it has it, and recovers it when a crash cut the start short.
const ORCHESTRATED_DUE_FACTOR: f64 = 2.0;

/// Gives a new job its id, and in the orchestrated flow the orchestrator shard that tracks it.
pub(super) fn name_job(job: &mut FetchJob, id: &str) {
    if job.options.flow == Flow::Orchestrated {
        job.queue = Some(QueueRef {
            binding: job.options.orchestrator_binding.clone(),
            shard: job.options.shard_for(id),
        });
    }
    job.id = id.to_owned();
}

/// Groups jobs into calls: the direct flow's by executor binding, up to
/// [`MAX_JOBS_PER_CALL`] a call; the orchestrated flow's by orchestrator shard, up to
/// [`MAX_JOBS_PER_ENQUEUE`], but a request with a caller's id alone (the orchestrator may refuse
/// it as another origin's, which must not fail the others). Returns the calls, and for each job
/// (in order) the index of its call.
pub(super) fn batches(jobs: Vec<FetchJob>) -> (Vec<Vec<FetchJob>>, Vec<usize>) {
    into_calls(jobs, |job| match &job.queue {
        // A long-path job is one queue message.
        None if job.options.is_long() => None,
        None => Some((
            (None, job.options.executor_binding.clone()),
            MAX_JOBS_PER_CALL,
        )),
        Some(_) if job.options.request_id.is_some() => None,
        Some(queue) => Some((
            (Some(queue.binding.clone()), queue.shard.clone()),
            MAX_JOBS_PER_ENQUEUE,
        )),
    })
}

/// Tells the orchestrator that tracks a request to stop watching it (its start failed, or the
/// origin cancelled it). If this fails its backstop finds the request settled and drops it.
pub(super) async fn forget_queued(env: &Env, record: &PendingRecord) {
    let Some(queue) = &record.job.queue else {
        return;
    };
    let forgotten = match OrchestratorClient::from_name(env, &queue.binding, &queue.shard) {
        Ok(orchestrator) => orchestrator
            .forget(Ticket::of(&record.job))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = forgotten {
        log_error(&format!(
            "proxy-fetch {}: the orchestrator was not told to forget it: {e}",
            record.job.id
        ));
    }
}

/// How long after a (re)dispatch the origin's sweep looks at a request that has no result (on
/// the long path: after its time in the queue too; a claim moves it to the claimed window's end).
pub(super) fn due_after(options: &ProxyFetchOptions) -> f64 {
    let backstop = options.backstop_after_ms() as f64;
    match options.flow {
        Flow::Direct if options.is_long() => backstop + options.queue_wait_ms as f64,
        Flow::Direct => backstop,
        Flow::Orchestrated => backstop * ORCHESTRATED_DUE_FACTOR,
    }
}

/// Waits before a call the executor answered `busy` is sent again, in turn (ms); after the
/// last, the call's error stands (the origin's alarm sends the jobs again; a `LostOnCrash`
/// start fails with it).
const BUSY_WAITS_MS: [u64; 4] = [250, 500, 1_000, 2_000];

/// Hands jobs to the executor (direct flow: one call, all with the same executor binding) or
/// a job to the orchestrator: `Ok` once acknowledged. An executor that is busy (its isolate
/// holds its byte budget) is asked again a few times, after [`BUSY_WAITS_MS`]; one whose
/// worker lacks a binding the jobs name answers [`ProxyFetchError::MissingBinding`].
pub(super) async fn dispatch_all(env: &Env, jobs: Vec<FetchJob>) -> Result<(), ProxyFetchError> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    let sent = match first.queue.clone() {
        None if first.options.is_long() => return send_long(env, jobs).await,
        None => {
            let executor = ExecutorClient::from_env(env, &first.options.executor_binding)
                .map_err(ProxyFetchError::Dispatch)?;
            let mut waits = BUSY_WAITS_MS.iter();
            loop {
                match executor.execute_fetches(jobs.clone()).await {
                    Err(CallError::Handler(h)) if h.kind == BUSY => match waits.next() {
                        Some(ms) => {
                            worker::Delay::from(std::time::Duration::from_millis(*ms)).await
                        }
                        None => break Err(refused_by("executeFetches", CallError::Handler(h))),
                    },
                    Err(CallError::Handler(h)) if h.kind == MISSING_BINDING => {
                        return Err(ProxyFetchError::MissingBinding(h.message))
                    }
                    sent => break sent.map_err(|e| refused_by("executeFetches", e)),
                }
            }
        }
        Some(queue) => {
            let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
                .map_err(ProxyFetchError::Dispatch)?;
            match orchestrator.enqueue(jobs).await {
                Err(CallError::Handler(h)) if h.kind == MISSING_BINDING => {
                    return Err(ProxyFetchError::MissingBinding(h.message))
                }
                sent => sent.map_err(|e| refused_by("enqueue", e)),
            }
        }
    };
    sent.map_err(ProxyFetchError::Dispatch)
}

/// Asks the orchestrator that tracks `job` whether it holds it, by its ticket alone (the job
/// and its body are not shipped): `false` for a job of the direct flow.
pub(super) async fn held_queued(env: &Env, job: &FetchJob) -> Result<bool, ProxyFetchError> {
    let Some(queue) = &job.queue else {
        return Ok(false);
    };
    let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
        .map_err(ProxyFetchError::Dispatch)?;
    orchestrator
        .holds(Ticket::of(job))
        .await
        .map_err(|e| ProxyFetchError::Dispatch(refused_by("holds", e)))
}

/// Sends long-path jobs to their queue, one message each: `Ok` once the queue has them all.
async fn send_long(env: &Env, jobs: Vec<FetchJob>) -> Result<(), ProxyFetchError> {
    for job in jobs {
        let binding = job.options.queue_binding.clone();
        let Some(queue) = LongQueue::from_env(env, &binding) else {
            return Err(long_path_unavailable(&job.options));
        };
        queue.send(&LongJob::of(job)).await.map_err(|e| {
            ProxyFetchError::Dispatch(RpcError::new(
                RpcErrorKind::Remote,
                "Queue.send",
                format!("queue `{binding}`: {e}"),
            ))
        })?;
    }
    Ok(())
}

/// The error of a long-path request whose worker has no queue binding.
pub(super) fn long_path_unavailable(options: &ProxyFetchOptions) -> ProxyFetchError {
    ProxyFetchError::LongPathUnavailable {
        timeout_ms: options.timeout_ms,
        window_ms: crate::system::FETCH_BUDGET_MS,
        binding: options.queue_binding.clone(),
    }
}

/// Asks the orchestrator that tracks `job` after it (the sweep found no result): `true` if it
/// has it, or queued it again (a start a crash cut short, which may be resent); `false` if it
/// does not, and the job may not be sent again.
pub(super) async fn recover(env: &Env, job: FetchJob) -> Result<bool, ProxyFetchError> {
    let Some(queue) = job.queue.clone() else {
        return Ok(false);
    };
    let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
        .map_err(ProxyFetchError::Dispatch)?;
    orchestrator
        .recover(job)
        .await
        .map_err(|e| ProxyFetchError::Dispatch(refused_by("recover", e)))
}

/// A failed call to the orchestrator as an [`RpcError`]: its handler's error, or the call's.
fn refused_by(method: &'static str, e: CallError<HandlerError>) -> RpcError {
    match e {
        CallError::Rpc(e) => e,
        CallError::Handler(h) => RpcError::new(RpcErrorKind::Remote, method, h.to_string()),
    }
}
