//! The fetch itself, as every host runs it (the `waitUntil` executor today): each job checked
//! against the executor's own policy, fetched with retries inside the run's budget and the
//! job's size limit, its result delivered to its origin ([`send`]), and the orchestrator told
//! (orchestrated flow). A host only says when the run started and hands the jobs over.

mod http;
mod send;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::{JsCast, JsValue};
use worker::Env;

use self::http::{attempt, AttemptError};
use self::send::{Expected, Handed, Outbox};
use crate::rpc::{log_error, HandlerError};
use crate::system::batch::{self, Batcher};
use crate::system::concurrent;
use crate::system::options::{parse_retry_after, Attempt, Budget};
use crate::system::policy::{ExecutorLimits, ExecutorPolicy};
use crate::system::protocol::{
    FetchJob, OrchestratorClient, QueueRef, Ticket, BAD_JOB, BUSY, MAX_JOBS_PER_CALL,
    MISSING_BINDING,
};
use crate::system::refusal;
use crate::system::{
    binding_class, now_ms, FetchError, FetchErrorKind, FetchResult, ProxyResponse,
};

pub(crate) use send::{verdicts, Verdict};

/// A retry of a fetch starts only if at least this much of the budget is left for it.
const MIN_ATTEMPT_MS: f64 = 250.0;

/// Bindings named by refused calls that the executor's worker lacks, reported by `health` (at
/// most this many).
const MISSING_KEPT: usize = 16;

thread_local! {
    /// Bytes of bodies held by the jobs running in this isolate (see [`Held`]).
    static IN_FLIGHT: Cell<u64> = const { Cell::new(0) };
    /// Bindings that refused calls named and this worker lacks (or has of another kind).
    static MISSING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The bytes of bodies held in flight in this isolate now.
pub(crate) fn in_flight_bytes() -> u64 {
    IN_FLIGHT.with(Cell::get)
}

/// Bindings that jobs named and this executor's worker lacks (or has of another kind), since
/// the isolate started.
pub(crate) fn missing_bindings() -> Vec<String> {
    MISSING.with(|m| m.borrow().clone())
}

/// One job's share of the isolate's bytes in flight: its request body from the call on, its
/// response body once read; given back when the job ends (delivered, or dropped).
pub(crate) struct Held(u64);

impl Held {
    fn take(bytes: u64) -> Held {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_add(bytes)));
        Held(bytes)
    }

    fn grow(&mut self, bytes: u64) {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_add(bytes)));
        self.0 = self.0.saturating_add(bytes);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(self.0)));
    }
}

/// The names of `env`'s Durable Object namespace bindings.
pub(crate) fn namespaces(env: &Env) -> Vec<String> {
    let env: &JsValue = env.as_ref();
    js_sys::Object::keys(env.unchecked_ref::<js_sys::Object>())
        .iter()
        .filter_map(|name| name.as_string())
        .filter(|name| binding_class(env, name) == "DurableObjectNamespace")
        .collect()
}

/// Why `binding` cannot be a Durable Object namespace in `env`, if it cannot.
fn not_a_namespace(env: &Env, binding: &str) -> Option<String> {
    let env: &JsValue = env.as_ref();
    let bound = js_sys::Reflect::get(env, &JsValue::from_str(binding))
        .is_ok_and(|v| !v.is_undefined() && !v.is_null());
    if !bound {
        return Some(format!("the executor's worker has no binding `{binding}`"));
    }
    let class = binding_class(env, binding);
    (class != "DurableObjectNamespace").then(|| {
        format!(
            "the executor's worker has `{binding}` as a {}, not a Durable Object namespace",
            if class.is_empty() {
                "value of another kind"
            } else {
                &class
            }
        )
    })
}

/// Why a call of `count` jobs is refused, if it is: a job past [`MAX_JOBS_PER_CALL`] would wait
/// for a connection, its budget running.
pub(crate) fn too_many_jobs(count: usize) -> Option<String> {
    (count > MAX_JOBS_PER_CALL)
        .then(|| format!("{count} jobs in one call; at most {MAX_JOBS_PER_CALL}: nothing fetched"))
}

/// Checks a call before it is answered: at most [`MAX_JOBS_PER_CALL`] jobs ([`BAD_JOB`]), every
/// origin and orchestrator binding they name a Durable Object namespace in the executor's
/// worker ([`MISSING_BINDING`]), and their request bodies within the isolate's byte budget
/// ([`BUSY`]; a call is taken whenever nothing is in flight). A refused call is logged and
/// counted as a call of `method`, and nothing of it is fetched. Returns each job's share of the
/// budget.
pub(crate) fn admit_call(
    env: &Env,
    method: &str,
    jobs: &[FetchJob],
) -> Result<Vec<Held>, HandlerError> {
    let refuse = |kind: &str, why: String| {
        refusal::refused(method, &format!("a call of {} jobs", jobs.len()), &why);
        HandlerError::new(kind, why)
    };
    if let Some(why) = too_many_jobs(jobs.len()) {
        return Err(refuse(BAD_JOB, why));
    }
    for job in jobs {
        let queue = job.queue.as_ref().map(|q| q.binding.as_str());
        for binding in std::iter::once(job.origin.binding.as_str()).chain(queue) {
            if let Some(why) = not_a_namespace(env, binding) {
                MISSING.with(|m| {
                    let mut m = m.borrow_mut();
                    if !m.iter().any(|b| b == binding) && m.len() < MISSING_KEPT {
                        m.push(binding.to_owned());
                    }
                });
                return Err(refuse(
                    MISSING_BINDING,
                    format!(
                        "job {}: {why}: its result could not be delivered; bind it in the \
                         executor's worker (same name, same class): nothing fetched",
                        job.id
                    ),
                ));
            }
        }
    }
    let budget = ExecutorLimits::from_env(env)
        .unwrap_or_default()
        .max_inflight_bytes;
    let wanted: u64 = jobs.iter().map(|j| j.weight() as u64).sum();

    let held = in_flight_bytes();
    if held > 0 && held.saturating_add(wanted) > budget {
        return Err(refuse(
            BUSY,
            format!(
                "the executor holds {held} bytes in flight; {wanted} more would pass its \
                 PROXY_FETCH_MAX_INFLIGHT_BYTES ({budget}): nothing fetched, send it again later"
            ),
        ));
    }
    Ok(shares(jobs))
}

/// Each job's share of the isolate's byte budget, taken whatever the budget holds (the queue
/// consumer's jobs are claimed already: they run).
pub(crate) fn shares(jobs: &[FetchJob]) -> Vec<Held> {
    jobs.iter().map(|j| Held::take(j.weight() as u64)).collect()
}

/// Runs `jobs` side by side (a call [`admit_call`] took, with the shares it gave, or the queue
/// consumer's), begun at `started` (ms), within its host's `budget` (the executor's
/// [`Budget::WAIT_UNTIL`], the queue consumer's [`Budget::QUEUE`]). `host` names the host in
/// the log line of a job it refuses.
pub(crate) async fn run(
    env: &Env,
    host: &str,
    jobs: Vec<FetchJob>,
    held: Vec<Held>,
    started: f64,
    budget: &Budget,
) {
    let outbox = Outbox::new(env, started, budget.total_ms());
    let completions = Completions {
        env,
        batcher: Batcher::new(),
    };
    let (outbox, completions) = (&outbox, &completions);
    // Read once for the run's jobs: the vars do not change within an invocation.
    let rules = &ExecutorLimits::from_env(env)
        .and_then(|limits| Ok((limits, ExecutorPolicy::from_env(env)?)));
    // Every job expected before any runs: the first result to come knows how many are to follow.
    let expected: Vec<_> = jobs.iter().map(|_| outbox.expect()).collect();
    let each = jobs.into_iter().zip(held).zip(expected);
    let each = each.map(|((job, held), expected)| async move {
        let id = job.id.clone();
        let context = (host, started, budget);
        let outboxes = (outbox, completions);
        if let Err(e) = run_one(env, rules, job, expected, held, context, outboxes).await {
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
/// policy and limits (`rules`, from its vars; whatever the job asks for). A refusal is logged
/// as `host`'s.
fn admitted<'r>(
    host: &str,
    rules: &'r Result<(ExecutorLimits, ExecutorPolicy), String>,
    job: &mut FetchJob,
) -> Result<&'r ExecutorPolicy, String> {
    let url = job.check().map_err(|why| {
        refusal::refused(host, &format!("job {}", job.id), &why);
        format!("not fetched: the job is malformed: {why}")
    })?;
    let refused = |why: String| {
        refusal::refused(host, &format!("job {}", job.id), &why);
        why
    };
    let (limits, policy) = rules.as_ref().map_err(|why| refused(why.clone()))?;
    limits.clamp(&mut job.options);
    policy.check(&url).map_err(refused)?;
    Ok(policy)
}

/// One job: fetch, deliver, settle with the orchestrator.
async fn run_one(
    env: &Env,
    rules: &Result<(ExecutorLimits, ExecutorPolicy), String>,
    mut job: FetchJob,
    expected: Expected<'_, '_>,
    mut held: Held,
    (host, started, budget): (&str, f64, &Budget),
    (outbox, completions): (&Outbox<'_>, &Completions<'_>),
) -> Result<(), HandlerError> {
    let result = match admitted(host, rules, &mut job) {
        Ok(policy) => fetch_with_retries(&job, policy, started, budget).await,
        Err(why) => Err(FetchError::new(&job.id, FetchErrorKind::Rejected, why)),
    };
    if let Ok(response) = &result {
        // Held until the result is delivered (or handed over): when this job ends.
        held.grow(response.body.len() as u64);
    }
    let job = &job;
    let result = Rc::new(result);
    match outbox.deliver(job, &result, expected).await {
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
