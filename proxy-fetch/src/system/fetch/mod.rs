//! The fetch itself, as every host runs it (the `waitUntil` executor today): each job checked
//! against the executor's own policy, fetched with retries inside the run's budget and the
//! job's size limit, its result delivered to its origin ([`send`]), and the orchestrator told
//! (orchestrated flow). A host only says when the run started and hands the jobs over.

mod http;
mod send;

use std::rc::Rc;
use std::time::Duration;
use worker::Env;

use self::http::{attempt, AttemptError};
use self::send::{Handed, Outbox};
use crate::rpc::{log_error, HandlerError};
use crate::system::batch::{self, Batcher};
use crate::system::concurrent;
use crate::system::options::{parse_retry_after, Attempt, Budget};
use crate::system::policy::{ExecutorLimits, ExecutorPolicy};
use crate::system::protocol::{FetchJob, OrchestratorClient, QueueRef, Ticket, MAX_JOBS_PER_CALL};
use crate::system::refusal;
use crate::system::{now_ms, FetchError, FetchErrorKind, FetchResult, ProxyResponse};

pub(crate) use send::{verdicts, Verdict};

/// A retry of a fetch starts only if at least this much of the budget is left for it.
const MIN_ATTEMPT_MS: f64 = 250.0;

/// Runs `jobs` side by side, begun at `started` (ms), within its host's `budget` (the
/// executor's [`Budget::WAIT_UNTIL`], the queue consumer's [`Budget::QUEUE`]): at most
/// [`MAX_JOBS_PER_CALL`] (the connections one invocation may hold open); any beyond get a
/// `Rejected` error.
pub(crate) async fn run(env: &Env, jobs: Vec<FetchJob>, started: f64, budget: &Budget) {
    let outbox = Outbox::new(env, started, budget.total_ms());
    let completions = Completions {
        env,
        batcher: Batcher::new(),
    };
    let (outbox, completions) = (&outbox, &completions);
    let each = jobs.into_iter().enumerate().map(|(i, job)| async move {
        let id = job.id.clone();
        if let Err(e) = run_one(env, job, (started, budget), (outbox, completions), i).await {
            log_error(&format!("proxy-fetch {id}: {e}"));
        }
    });
    concurrent::all(each, usize::MAX).await;
}

/// A request done at its origin, waiting for a `complete` call to its orchestrator.
struct Completion {
    queue: QueueRef,
    ticket: Ticket,
    reply: batch::Reply<Result<(), String>>,
}

/// The completions of one run: those ready while a `complete` call is under way go together
/// in the next, one call per orchestrator instance.
struct Completions<'a> {
    env: &'a Env,
    batcher: Batcher<Completion>,
}

impl Completions<'_> {
    /// Tells the orchestrator instance `queue` that `job`'s request is done.
    async fn complete(&self, queue: &QueueRef, job: &FetchJob) -> Result<(), String> {
        let (reply, answer) = batch::reply();
        let completion = Completion {
            queue: queue.clone(),
            ticket: Ticket::of(job),
            reply,
        };
        self.batcher
            .submit(completion, answer, |batch| self.send(batch))
            .await
            .unwrap_or_else(|| Err("the completion was not sent".into()))
    }

    /// One `complete` call per orchestrator instance for `batch`.
    async fn send(&self, batch: Vec<Completion>) {
        let mut by_queue: Vec<(QueueRef, Vec<Completion>)> = Vec::new();
        for completion in batch {
            match by_queue.iter_mut().find(|(q, _)| *q == completion.queue) {
                Some((_, group)) => group.push(completion),
                None => by_queue.push((completion.queue.clone(), vec![completion])),
            }
        }
        let calls = by_queue.into_iter().map(|(queue, group)| async move {
            let tickets = group.iter().map(|c| c.ticket.clone()).collect();
            let done = match OrchestratorClient::from_name(self.env, &queue.binding, &queue.shard) {
                Ok(orchestrator) => orchestrator
                    .complete(tickets)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            for completion in group {
                completion.reply.send(done.clone());
            }
        });
        concurrent::all(calls, usize::MAX).await;
    }
}

/// What the executor allows `job`: checked as the start checks it, held to the executor's own
/// policy and limits (whatever the job asks for), and within the jobs one call may carry.
fn admitted(env: &Env, job: &mut FetchJob, in_call: usize) -> Result<ExecutorPolicy, String> {
    if in_call >= MAX_JOBS_PER_CALL {
        // It would wait for a connection, its budget running: not fetched at all.
        return Err(format!(
            "not fetched: more than {MAX_JOBS_PER_CALL} jobs in one executeFetches call"
        ));
    }
    let url = job.check().map_err(|why| {
        refusal::refused(
            "FetchExecutor.executeFetches",
            &format!("job {}", job.id),
            &why,
        );
        format!("not fetched: the job is malformed: {why}")
    })?;
    let refused = |why: String| {
        refusal::refused(
            "FetchExecutor.executeFetches",
            &format!("job {}", job.id),
            &why,
        );
        why
    };
    ExecutorLimits::from_env(env)
        .map_err(refused)?
        .clamp(&mut job.options);
    let policy = ExecutorPolicy::from_env(env).map_err(refused)?;
    policy.check(&url).map_err(refused)?;
    Ok(policy)
}

/// One job: fetch, deliver, settle with the orchestrator.
async fn run_one(
    env: &Env,
    mut job: FetchJob,
    (started, budget): (f64, &Budget),
    (outbox, completions): (&Outbox<'_>, &Completions<'_>),
    in_call: usize,
) -> Result<(), HandlerError> {
    let result = match admitted(env, &mut job, in_call) {
        Ok(policy) => fetch_with_retries(&job, &policy, started, budget).await,
        Err(why) => Err(FetchError::new(&job.id, FetchErrorKind::Rejected, why)),
    };
    let job = &job;
    let result = Rc::new(result);
    match outbox.deliver(job, &result).await {
        Handed::Done => {
            if let Some(queue) = &job.queue {
                completions
                    .complete(queue, job)
                    .await
                    .map_err(|e| HandlerError::new("complete", e))?;
            }
        }
        Handed::Failed => match &job.queue {
            // The orchestrator keeps the result and delivers it when the origin is back.
            Some(queue) => {
                let orchestrator =
                    OrchestratorClient::from_name(env, &queue.binding, &queue.shard)?;
                let result = Rc::try_unwrap(result).unwrap_or_else(|shared| (*shared).clone());
                orchestrator.undelivered(Ticket::of(job), result).await?
            }
            // Direct flow: the origin's alarm dispatches an idempotent request again, or
            // tells the handler the upstream may have seen it.
            None => log_error(&format!(
                "proxy-fetch {}: result not delivered; the origin's backstop takes over",
                job.id
            )),
        },
        // A delivery with the wrong token: not this request's result to settle.
        Handed::Forbidden => {}
    }
    Ok(())
}

async fn fetch_with_retries(
    job: &FetchJob,
    policy: &ExecutorPolicy,
    started: f64,
    budget: &Budget,
) -> FetchResult {
    let options = &job.options;
    let idempotent = job.request.is_idempotent();
    let deadline = started + budget.fetch_ms as f64;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let timeout = (options.timeout_ms as f64)
            .min(deadline - now_ms())
            .max(1.0) as u64;
        let outcome = attempt(&job.request, options, policy, timeout).await;
        let seen = match &outcome {
            Ok(f) => Attempt::Status {
                status: f.status,
                retry_after_ms: f
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| parse_retry_after(v, now_ms())),
            },
            Err(AttemptError::Network(_)) => Attempt::NetworkError,
            Err(AttemptError::Timeout) => Attempt::Timeout,
            Err(AttemptError::TooLarge(_) | AttemptError::Refused(_)) => Attempt::Refused,
        };
        let delay = options
            .retry
            .next_delay(attempts, seen, idempotent, js_sys::Math::random())
            // A retry that could not finish inside the budget is not started.
            .filter(|delay| now_ms() + *delay as f64 + MIN_ATTEMPT_MS < deadline);
        if let Some(delay) = delay {
            worker::Delay::from(Duration::from_millis(delay)).await;
            continue;
        }
        let error = |kind, message: String| {
            Err(FetchError {
                request_id: job.id.clone(),
                kind,
                message,
                attempts,
            })
        };
        return match outcome {
            Ok(f) => Ok(ProxyResponse {
                request_id: job.id.clone(),
                status: f.status,
                status_text: f.status_text,
                headers: f.headers,
                body: serde_bytes::ByteBuf::from(f.body),
                url: f.url,
                attempts,
                duration_ms: now_ms() - started,
            }),
            Err(AttemptError::Network(m)) => error(FetchErrorKind::Network, m),
            Err(AttemptError::Timeout) => error(
                FetchErrorKind::Timeout,
                format!("no complete response within {timeout} ms"),
            ),
            Err(AttemptError::Refused(m)) => error(FetchErrorKind::Rejected, m),
            Err(AttemptError::TooLarge(limit)) => error(
                FetchErrorKind::Rejected,
                format!("response body larger than max_body_bytes ({limit} bytes)"),
            ),
        };
    }
}
