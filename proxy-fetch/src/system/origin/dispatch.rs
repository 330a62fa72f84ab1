//! Jobs on their way out: to the executor (direct flow), in calls of up to
//! [`MAX_JOBS_PER_CALL`], or to the orchestrator shard that tracks each (orchestrated flow).

use worker::Env;

use super::ledger::PendingRecord;
use crate::rpc::RpcError;
use crate::system::concurrent;
use crate::system::protocol::{
    ExecutorClient, FetchJob, OrchestratorClient, QueueRef, CALL_BYTES, MAX_JOBS_PER_CALL,
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
/// [`MAX_JOBS_PER_CALL`] a call; each orchestrated job alone (the orchestrator takes one).
/// Returns the calls, and for each job (in order) the index of its call.
pub(super) fn batches(jobs: Vec<FetchJob>) -> (Vec<Vec<FetchJob>>, Vec<usize>) {
    let mut calls: Vec<Vec<FetchJob>> = Vec::new();
    let mut call_of = Vec::with_capacity(jobs.len());
    // The call being filled for each executor binding (there are few).
    let mut open: Vec<(String, usize)> = Vec::new();
    for job in jobs {
        let binding = &job.options.executor_binding;
        let slot = open.iter().position(|(b, _)| b == binding);
        let filling = slot.and_then(|s| open.get(s)).map(|&(_, i)| i);
        let call = match (&job.queue, filling) {
            (None, Some(i))
                if calls.get(i).is_some_and(|c| {
                    c.len() < MAX_JOBS_PER_CALL
                        && c.iter().map(FetchJob::weight).sum::<usize>() + job.weight()
                            <= CALL_BYTES
                }) =>
            {
                i
            }
            _ => {
                if job.queue.is_none() {
                    match slot.and_then(|s| open.get_mut(s)) {
                        Some((_, i)) => *i = calls.len(),
                        None => open.push((binding.clone(), calls.len())),
                    }
                }
                calls.push(Vec::new());
                calls.len() - 1
            }
        };
        if let Some(jobs) = calls.get_mut(call) {
            jobs.push(job);
        }
        call_of.push(call);
    }
    (calls, call_of)
}

/// Tells the orchestrator to forget a queued request whose start failed.
pub(super) async fn forget_queued(env: &Env, id: &str, record: Option<&PendingRecord>) {
    let Some(queue) = record.and_then(|r| r.job.queue.as_ref()) else {
        return;
    };
    if let Ok(orchestrator) = OrchestratorClient::from_name(env, &queue.binding, &queue.shard) {
        let _ = orchestrator.forget(id.to_owned()).await;
    }
}

/// How long after a (re)dispatch the origin's sweep looks at a request that has no result.
pub(super) fn due_after(options: &ProxyFetchOptions) -> f64 {
    let backstop = options.backstop_after_ms() as f64;
    match options.flow {
        Flow::Direct => backstop,
        Flow::Orchestrated => backstop * ORCHESTRATED_DUE_FACTOR,
    }
}

/// Hands jobs to the executor (direct flow: one call, all with the same executor binding) or
/// a job to the orchestrator: `Ok` once acknowledged.
pub(super) async fn dispatch_all(env: &Env, jobs: Vec<FetchJob>) -> Result<(), ProxyFetchError> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    let sent = match first.queue.clone() {
        None => {
            let executor = ExecutorClient::from_env(env, &first.options.executor_binding)
                .map_err(ProxyFetchError::Dispatch)?;
            executor.execute_fetches(jobs).await
        }
        Some(queue) => {
            let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
                .map_err(ProxyFetchError::Dispatch)?;
            let enqueued = jobs.into_iter().map(|job| orchestrator.enqueue(job));
            let enqueued = concurrent::all(enqueued, usize::MAX).await;
            enqueued
                .into_iter()
                .collect::<Result<(), _>>()
                .map_err(|e| match e {
                    crate::rpc::CallError::Rpc(e) => e,
                    crate::rpc::CallError::Handler(h) => {
                        RpcError::new(crate::rpc::RpcErrorKind::Remote, "enqueue", h.to_string())
                    }
                })
        }
    };
    sent.map_err(ProxyFetchError::Dispatch)
}
