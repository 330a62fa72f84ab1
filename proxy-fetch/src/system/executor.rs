//! FetchExecutor: the Worker entrypoint that does the waiting. The caller's call returns as
//! soon as the job is handed to `ctx.waitUntil`; the fetch, its retries, the delivery to the
//! origin and the completion notice all run after that acknowledgement, within
//! [`INVOCATION_BUDGET_MS`](super::options::INVOCATION_BUDGET_MS) (production cancels
//! background work 30 s after the call returned).

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use worker::{Context, Env, Url};

use super::http::{attempt, AttemptError};
use super::options::{parse_retry_after, Attempt, FETCH_BUDGET_MS, INVOCATION_BUDGET_MS};
use super::policy::{ExecutorPolicy, POLICY_VAR};
use super::protocol::{
    DeliveryOutcome, FetchJob, OrchestratorClient, OriginClient, FORBIDDEN, MAX_JOBS_PER_CALL,
    RETRY,
};
use super::{now_ms, FetchError, FetchErrorKind, FetchResult, ProxyResponse};
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
enum Delivery {
    /// The origin has the result (or had one, or refused it for good).
    Done,
    /// Not delivered within the executor's budget.
    Failed,
    /// The origin refused the token: the job was not the request's own.
    Forbidden,
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

    /// Delivers `result` to the origin, trying again (with backoff) while the origin cannot
    /// be reached or its storage fails.
    async fn deliver(&self, job: &FetchJob, result: &FetchResult, started: f64) -> Delivery {
        let origin = match OriginClient::from_id(&self.env, &job.origin.binding, &job.origin.id) {
            Ok(origin) => origin,
            Err(e) => {
                log_error(&format!(
                    "proxy-fetch {}: origin not reachable: {e}",
                    job.id
                ));
                return Delivery::Failed;
            }
        };
        // Encoded once for every try: a large body is not copied again per try.
        let args = match crate::rpc::encode_args([
            crate::rpc::encode_arg(DELIVER, "result", result),
            crate::rpc::encode_arg(DELIVER, "token", &job.token),
        ]) {
            Ok(args) => args,
            Err(e) => {
                log_error(&format!("proxy-fetch {}: result not encoded: {e}", job.id));
                return Delivery::Failed;
            }
        };
        let Some(stub) = origin.stub() else {
            return Delivery::Failed;
        };
        let mut backoff = DELIVERY_BACKOFF_MS;
        for tries in 1..=DELIVERY_TRIES {
            let sent = stub
                .call::<DeliveryOutcome, HandlerError>(DELIVER, args.clone())
                .await;
            let retry = match sent {
                Ok(DeliveryOutcome::Delivered | DeliveryOutcome::Duplicate) => {
                    return Delivery::Done
                }
                Err(CallError::Handler(e)) if e.kind == RETRY => e.to_string(),
                Err(CallError::Handler(e)) if e.kind == FORBIDDEN => {
                    log_error(&format!(
                        "proxy-fetch {}: origin refused the token: {e}",
                        job.id
                    ));
                    return Delivery::Forbidden;
                }
                Err(CallError::Handler(e)) => {
                    log_error(&format!(
                        "proxy-fetch {}: origin refused the result: {e}",
                        job.id
                    ));
                    return Delivery::Done;
                }
                Err(CallError::Rpc(e)) => e.to_string(),
            };
            let left = started + INVOCATION_BUDGET_MS as f64 - now_ms();
            if tries == DELIVERY_TRIES || left < backoff as f64 {
                log_error(&format!(
                    "proxy-fetch {}: result not delivered after {tries} tries ({retry})",
                    job.id
                ));
                return Delivery::Failed;
            }
            worker::Delay::from(Duration::from_millis(backoff)).await;
            backoff *= 2;
        }
        Delivery::Failed
    }

    /// One job: fetch, deliver, settle with the orchestrator.
    async fn execute(&self, job: &FetchJob, started: f64) -> Result<(), HandlerError> {
        let allowed = self.policy().and_then(|policy| {
            let url = Url::parse(&job.request.url).map_err(|e| format!("not a URL: {e}"))?;
            policy.check(&url).map(|()| policy)
        });
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
        match self.deliver(job, &result, started).await {
            Delivery::Done => {
                if let Some(orchestrator) = queue {
                    orchestrator.complete(job.id.clone()).await?;
                }
            }
            Delivery::Failed => match queue {
                // The orchestrator keeps the result and delivers it when the origin is back.
                Some(orchestrator) => orchestrator.undelivered(job.id.clone(), result).await?,
                // Direct flow: the origin's alarm dispatches an idempotent request again, or
                // tells the handler the upstream may have seen it.
                None => log_error(&format!(
                    "proxy-fetch {}: result not delivered; the origin's backstop takes over",
                    job.id
                )),
            },
            // A delivery with the wrong token: not this request's result to settle.
            Delivery::Forbidden => {}
        }
        Ok(())
    }
}

#[entrypoint(name = "FetchExecutorEntrypoint")]
impl FetchExecutor {
    /// Fetches each job's request (with retries), delivers its result to its origin, then
    /// tells the orchestrator (orchestrated flow) the request is done. Acknowledged at once;
    /// runs under `ctx.waitUntil`. The jobs run side by side, at most
    /// [`MAX_JOBS_PER_CALL`] at a time (the connections one invocation may hold open).
    #[wait_until]
    pub async fn execute_fetches(&self, jobs: Vec<FetchJob>) -> Result<(), HandlerError> {
        let started = now_ms();
        futures_util::stream::iter(jobs)
            .for_each_concurrent(MAX_JOBS_PER_CALL, |job| async move {
                if let Err(e) = self.execute(&job, started).await {
                    log_error(&format!("proxy-fetch {}: {e}", job.id));
                }
            })
            .await;
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
