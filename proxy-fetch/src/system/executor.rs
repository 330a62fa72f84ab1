//! FetchExecutor: the Worker entrypoint that does the waiting. The caller's call returns as
//! soon as the job is handed to `ctx.waitUntil`; the fetch, its retries, the delivery to the
//! origin and the completion notice all run after that acknowledgement, within
//! [`INVOCATION_BUDGET_MS`](super::options::INVOCATION_BUDGET_MS) (production cancels
//! background work 30 s after the call returned).

use serde::{Deserialize, Serialize};
use std::rc::Rc;
use std::time::Duration;
use worker::{Context, Env, Url};

use super::batch::{self, Batcher};
use super::concurrent;
use super::http::{attempt, AttemptError};
use super::options::{parse_retry_after, Attempt, FETCH_BUDGET_MS, INVOCATION_BUDGET_MS};
use super::policy::{ExecutorPolicy, POLICY_VAR};
use super::protocol::{
    weight, DeliveryOutcome, FetchJob, OrchestratorClient, OriginClient, OriginRef, CALL_BYTES,
    FORBIDDEN, MAX_JOBS_PER_CALL, RETRY,
};
use super::{now_ms, FetchError, FetchErrorKind, FetchResult, ProxyResponse, RequestId};
use crate::entrypoint;
use crate::rpc::{log_error, CallError, HandlerError, WorkerEntrypoint};

/// A retry of a fetch starts only if at least this much of the budget is left for it.
const MIN_ATTEMPT_MS: f64 = 250.0;
/// The origin's delivery method (`protocol::Origin::deliver`).
const DELIVER: &str = "__proxyFetchDeliver";
/// Deliveries to the origin: tries, and the first backoff (doubling).
const DELIVERY_TRIES: u32 = 5;
const DELIVERY_BACKOFF_MS: u64 = 100;

/// Served as the named entrypoint `FetchExecutorEntrypoint`: bind it with
/// `[[services]] binding = "FETCH_EXECUTOR", service = "<this worker>", entrypoint = "FetchExecutorEntrypoint"`.
/// It fetches only what its worker's `PROXY_FETCH_ALLOW` var allows (see [`ExecutorPolicy`]).
pub struct FetchExecutor {
    env: Env,
}

impl WorkerEntrypoint for FetchExecutor {
    fn new(env: Env, _ctx: Context) -> Self {
        FetchExecutor { env }
    }
}

/// How a delivery to the origin ended.
#[derive(Clone, Copy)]
enum Handed {
    /// The origin has the result (or had one, or refused it for good).
    Done,
    /// Not delivered within the executor's budget.
    Failed,
    /// The origin refused the token: the job was not the request's own.
    Forbidden,
}

/// A result waiting in its call's outbox for a delivery call to its origin.
struct Outgoing {
    id: RequestId,
    origin: OriginRef,
    token: String,
    result: Rc<FetchResult>,
    reply: batch::Reply<Handed>,
}

impl Outgoing {
    /// About how many bytes the result takes in a delivery call.
    fn weight(&self) -> usize {
        match self.result.as_ref() {
            Ok(response) => weight(response.body.len(), &response.url, &response.headers),
            Err(error) => weight(error.message.len(), "", &[]),
        }
    }
}

/// The results of one `execute_fetches` call on their way to their origins.
type Outbox = Batcher<Outgoing>;

/// A [`protocol::Delivery`](super::protocol::Delivery), encoded from borrowed parts.
#[derive(Serialize)]
struct DeliveryRef<'a> {
    result: &'a FetchResult,
    token: &'a str,
}

/// What `health` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutorHealth {
    pub ok: bool,
    pub version: String,
    /// Whether `PROXY_FETCH_ALLOW` is set and readable.
    pub policy: Result<(), String>,
}

impl FetchExecutor {
    fn policy(&self) -> Result<ExecutorPolicy, String> {
        match self.env.var(POLICY_VAR) {
            Ok(spec) => ExecutorPolicy::parse(&spec.to_string()),
            Err(_) => Err(format!(
                "the executor's worker has no `{POLICY_VAR}` var, so it fetches nothing: set it \
                 to the hosts it may fetch, e.g. `api.example.com, *.example.org` (`*` allows any)"
            )),
        }
    }

    /// Delivers `result` to its origin through the call's outbox: results that are ready
    /// while a delivery call is under way go together in the next one.
    async fn deliver(
        &self,
        outbox: &Outbox,
        job: &FetchJob,
        result: &Rc<FetchResult>,
        started: f64,
    ) -> Handed {
        let (reply, answer) = batch::reply();
        let outgoing = Outgoing {
            id: job.id.clone(),
            origin: job.origin.clone(),
            token: job.token.clone(),
            result: result.clone(),
            reply,
        };
        outbox
            .submit(outgoing, answer, |batch| self.send(batch, started))
            .await
            .unwrap_or(Handed::Failed)
    }

    /// One delivery call per origin for `batch`.
    async fn send(&self, batch: Vec<Outgoing>, started: f64) {
        // Calls by origin, each under the RPC size limit.
        let mut by_origin: Vec<(usize, Vec<Outgoing>)> = Vec::new();
        for outgoing in batch {
            let bytes = outgoing.weight();
            match by_origin.iter_mut().find(|(sum, group)| {
                group.first().is_some_and(|o| o.origin == outgoing.origin)
                    && sum + bytes <= CALL_BYTES
            }) {
                Some((sum, group)) => {
                    *sum += bytes;
                    group.push(outgoing);
                }
                None => by_origin.push((bytes, vec![outgoing])),
            }
        }
        let by_origin = by_origin.into_iter().map(|(_, group)| group);
        let sends = by_origin
            .into_iter()
            .map(|group| self.send_to_origin(group, started));
        concurrent::all(sends, usize::MAX).await;
    }

    /// Delivers results to their (one) origin, trying again (with backoff) those it could not
    /// take: the origin unreachable, or its storage failing.
    async fn send_to_origin(&self, group: Vec<Outgoing>, started: f64) {
        let Some(origin) = group.first().map(|o| o.origin.clone()) else {
            return;
        };
        let answer = |outgoing: Outgoing, handed: Handed| {
            outgoing.reply.send(handed);
        };
        let client = OriginClient::from_id(&self.env, &origin.binding, &origin.id);
        if let Err(e) = &client {
            log_error(&format!(
                "proxy-fetch: origin {} not reachable: {e}",
                origin.id
            ));
        }
        let Some(stub) = client.as_ref().ok().and_then(|client| client.stub()) else {
            group.into_iter().for_each(|o| answer(o, Handed::Failed));
            return;
        };
        // Each result encoded once for every try: a large body is not copied again per try.
        let mut pending = Vec::with_capacity(group.len());
        for outgoing in group {
            let delivery = DeliveryRef {
                result: &outgoing.result,
                token: &outgoing.token,
            };
            match crate::rpc::to_js_value(&delivery) {
                Ok(encoded) => pending.push((outgoing, encoded)),
                Err(e) => {
                    log_error(&format!(
                        "proxy-fetch {}: result not encoded: {e}",
                        outgoing.id
                    ));
                    answer(outgoing, Handed::Failed);
                }
            }
        }
        let mut backoff = DELIVERY_BACKOFF_MS;
        for tries in 1..=DELIVERY_TRIES {
            if pending.is_empty() {
                return;
            }
            let deliveries: js_sys::Array = pending.iter().map(|(_, encoded)| encoded).collect();
            let sent = stub
                .call::<Vec<Result<DeliveryOutcome, HandlerError>>, HandlerError>(
                    DELIVER,
                    js_sys::Array::of1(&deliveries),
                )
                .await;
            let mut again = Vec::new();
            let mut why = String::new();
            match sent {
                Ok(outcomes) if outcomes.len() == pending.len() => {
                    for ((outgoing, encoded), outcome) in pending.into_iter().zip(outcomes) {
                        let id = &outgoing.id;
                        match outcome {
                            Ok(DeliveryOutcome::Delivered | DeliveryOutcome::Duplicate) => {
                                answer(outgoing, Handed::Done)
                            }
                            Err(e) if e.kind == RETRY => {
                                why = e.to_string();
                                again.push((outgoing, encoded));
                            }
                            Err(e) if e.kind == FORBIDDEN => {
                                log_error(&format!(
                                    "proxy-fetch {id}: origin refused the token: {e}"
                                ));
                                answer(outgoing, Handed::Forbidden);
                            }
                            Err(e) => {
                                log_error(&format!(
                                    "proxy-fetch {id}: origin refused the result: {e}"
                                ));
                                answer(outgoing, Handed::Done);
                            }
                        }
                    }
                }
                Ok(outcomes) => {
                    why = format!("{} outcomes for {} results", outcomes.len(), pending.len());
                    again = pending;
                }
                Err(CallError::Handler(e)) if e.kind != RETRY => {
                    for (outgoing, _) in pending {
                        log_error(&format!(
                            "proxy-fetch {}: origin refused the result: {e}",
                            outgoing.id
                        ));
                        answer(outgoing, Handed::Done);
                    }
                }
                Err(e) => {
                    why = e.to_string();
                    again = pending;
                }
            }
            pending = again;
            if pending.is_empty() {
                return;
            }
            let left = started + INVOCATION_BUDGET_MS as f64 - now_ms();
            if tries == DELIVERY_TRIES || left < backoff as f64 {
                for (outgoing, _) in pending {
                    log_error(&format!(
                        "proxy-fetch {}: result not delivered after {tries} tries ({why})",
                        outgoing.id
                    ));
                    answer(outgoing, Handed::Failed);
                }
                return;
            }
            worker::Delay::from(Duration::from_millis(backoff)).await;
            backoff *= 2;
        }
    }

    /// One job: fetch, deliver, settle with the orchestrator.
    async fn execute(
        &self,
        job: &FetchJob,
        started: f64,
        outbox: &Outbox,
        in_call: usize,
    ) -> Result<(), HandlerError> {
        let allowed = if in_call < MAX_JOBS_PER_CALL {
            self.policy().and_then(|policy| {
                let url = Url::parse(&job.request.url).map_err(|e| format!("not a URL: {e}"))?;
                policy.check(&url).map(|()| policy)
            })
        } else {
            // It would wait for a connection, its budget running: not fetched at all.
            Err(format!(
                "not fetched: more than {MAX_JOBS_PER_CALL} jobs in one executeFetches call"
            ))
        };
        let result = match allowed {
            Ok(policy) => fetch_with_retries(job, &policy, started).await,
            Err(why) => Err(FetchError::new(&job.id, FetchErrorKind::Rejected, why)),
        };
        let queue = match &job.queue {
            Some(queue) => Some(OrchestratorClient::from_name(
                &self.env,
                &queue.binding,
                &queue.shard,
            )?),
            None => None,
        };
        let result = Rc::new(result);
        match self.deliver(outbox, job, &result, started).await {
            Handed::Done => {
                if let Some(orchestrator) = queue {
                    orchestrator.complete(job.id.clone()).await?;
                }
            }
            Handed::Failed => match queue {
                // The orchestrator keeps the result and delivers it when the origin is back.
                Some(orchestrator) => {
                    let result = Rc::try_unwrap(result).unwrap_or_else(|shared| (*shared).clone());
                    orchestrator.undelivered(job.id.clone(), result).await?
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
}

#[entrypoint(name = "FetchExecutorEntrypoint")]
impl FetchExecutor {
    /// Fetches each job's request (with retries), delivers its result to its origin, then
    /// tells the orchestrator (orchestrated flow) the request is done. Acknowledged at once;
    /// runs under `ctx.waitUntil`. The jobs run side by side: at most [`MAX_JOBS_PER_CALL`]
    /// (the connections one invocation may hold open); any beyond get a `Rejected` error.
    #[wait_until]
    pub async fn execute_fetches(&self, jobs: Vec<FetchJob>) -> Result<(), HandlerError> {
        let started = now_ms();
        let outbox = Outbox::new();
        let outbox = &outbox;
        let each = jobs.into_iter().enumerate().map(|(i, job)| async move {
            if let Err(e) = self.execute(&job, started, outbox, i).await {
                log_error(&format!("proxy-fetch {}: {e}", job.id));
            }
        });
        concurrent::all(each, usize::MAX).await;
        Ok(())
    }

    /// Answers at once: for checking the binding and the policy.
    pub async fn health(&self) -> Result<ExecutorHealth, HandlerError> {
        Ok(ExecutorHealth {
            ok: true,
            version: env!("CARGO_PKG_VERSION").into(),
            policy: self.policy().map(|_| ()),
        })
    }
}

async fn fetch_with_retries(job: &FetchJob, policy: &ExecutorPolicy, started: f64) -> FetchResult {
    let options = &job.options;
    let idempotent = job.request.is_idempotent();
    let deadline = started + FETCH_BUDGET_MS as f64;
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
