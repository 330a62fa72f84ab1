//! What travels between origin, orchestrator and executor, and the RPC methods each role
//! serves. The roles depend on this module, not on each other.

use serde::{Deserialize, Serialize};

use super::{FetchResult, ProxyFetchOptions, ProxyRequest, RequestId};
use crate::entrypoint;
use crate::rpc::HandlerError;

super::strict::strict_serde!(
    OriginRef,
    QueueRef,
    FetchJob,
    Delivery,
    Ticket,
    LongJob,
    ClaimRequest,
    ExecutorTerms,
    Packed
);

/// Where a result goes back to: the origin Durable Object's namespace binding and hex id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct OriginRef {
    /// The origin's Durable Object binding ([`ProxyFetchOptions::origin_binding`], or inferred
    /// from its type name), looked up in the worker that delivers the result.
    pub binding: String,
    /// The origin instance's id in hex, as `state.id().to_string()` gives it.
    pub id: String,
}

/// The orchestrator instance that tracks a request (orchestrated flow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct QueueRef {
    /// The `FetchOrchestrator`'s Durable Object binding
    /// ([`ProxyFetchOptions::orchestrator_binding`]).
    pub binding: String,
    /// The orchestrator instance's name, as [`ProxyFetchOptions::shard_for`] gives it.
    pub shard: String,
}

/// One proxied fetch, from the origin (through the orchestrator) to the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FetchJob {
    /// The request's id.
    pub id: RequestId,
    /// 128 random bits (hex) the origin keeps with its pending record; a delivery must
    /// present it, so a result cannot be forged by whoever can call the origin.
    pub token: String,
    /// The request to make, in the form the origin's start checked it in.
    pub request: ProxyRequest,
    /// Where the result goes back to.
    pub origin: OriginRef,
    /// `None` in the direct flow.
    pub queue: Option<QueueRef>,
    /// The options the request was started with; the executor holds them to its own
    /// [`ExecutorLimits`](super::ExecutorLimits) before fetching.
    pub options: ProxyFetchOptions,
}

impl FetchJob {
    /// About how many bytes the job takes in a call ([`weight`]).
    pub fn weight(&self) -> usize {
        let request = &self.request;
        weight(
            request.body.as_ref().map_or(0, |b| b.len()),
            &request.url,
            &request.headers,
        )
    }

    /// Checks the job as the origin's start checked it (options in range, an http(s) URL, an
    /// HTTP method), in the form the start leaves a request in: wherever a job arrives, what
    /// the start would refuse is refused, whoever sent it.
    pub fn check(&mut self) -> Result<worker::Url, String> {
        self.options.validate().map_err(|e| e.to_string())?;
        self.request.check()
    }

    /// Whether the request may be sent again when its executor was lost: idempotent, or
    /// `retry_non_idempotent` says so.
    pub fn may_resend(&self) -> bool {
        self.request.is_idempotent() || self.options.retry.retry_non_idempotent
    }

    /// The backstop's one rule, in both flows: whether a request with no result, `sent` times
    /// handed to an executor (only the dispatches that were acknowledged count), `age_ms` old,
    /// is dispatched again (a new period of `period_ms` must still fit in its max age); if not,
    /// its handler gets `Backstop`. A request never sent (an executor that was busy) may always
    /// be sent; one that was, only if it [`may_resend`](Self::may_resend), up to
    /// [`MAX_DISPATCHES`].
    pub fn dispatch_again(&self, sent: u32, age_ms: f64, period_ms: f64) -> bool {
        (sent == 0 || (self.may_resend() && sent < MAX_DISPATCHES))
            && age_ms + period_ms < self.options.max_age() as f64
    }

    /// What the backstop tells the handler of a request with no result `age_ms` after `since`.
    pub(crate) fn backstop_message(&self, age_ms: f64, since: &str) -> String {
        let lost = format!(
            "no result {} ms after {since} (executor lost?)",
            age_ms.round()
        );
        if self.may_resend() {
            lost
        } else {
            format!("{lost}; the upstream may have received the request, which is not sent twice")
        }
    }
}

/// The row a request's record (at its origin) and entry (at its orchestrator) are kept in: for
/// an id proxy-fetch gives, `<random>~<n>` (the `n`th request one round of an origin started),
/// the `<random>~` it shares with the others of that round; for a caller's id, which cannot hold
/// `~`, the id itself.
pub(crate) fn row_name(id: &str) -> &str {
    match id.rfind('~') {
        Some(i) => id.get(..=i).unwrap_or(id),
        None => id,
    }
}

/// A result on its way back to its origin, with the token of its request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Delivery {
    /// The response, or why there is none; its request id names the request.
    pub result: FetchResult,
    /// The request's [`token`](FetchJob::token): the origin refuses a delivery whose token
    /// does not match.
    pub token: String,
    /// The sender delivers this result again after a call that got no answer (the origin's
    /// instance may have died running the handler): the origin counts the handler's run
    /// before it starts it, so a handler that keeps crashing its instance is stopped.
    #[serde(default)]
    pub again: bool,
    /// The request was started [`Durability::LostOnCrash`](super::Durability): an origin that
    /// does not hold it in memory logs the result as lost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost_on_crash: bool,
}

/// A request named with the proof that its holder may act on it: the request's token, which
/// only the origin, the executor and the orchestrator that carry its job know (`stats` never
/// shows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Ticket {
    /// The request's id.
    pub id: RequestId,
    /// The request's [`token`](FetchJob::token).
    pub token: String,
}

impl Ticket {
    /// The ticket of `job`'s request.
    pub fn of(job: &FetchJob) -> Ticket {
        Ticket {
            id: job.id.clone(),
            token: job.token.clone(),
        }
    }

    /// Whether this ticket proves the right to act on `job` (compared in full, whatever differs).
    pub fn admits(&self, job: &FetchJob) -> bool {
        self.id == job.id && same_secret(&self.token, &job.token)
    }
}

/// Compares two secrets without stopping at the first difference.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// One job or result in a packed call (`executeFetchesPacked`, `__proxyFetchDeliverPacked`):
/// the JSON text of everything but its body, and the body beside it (`system/wire.rs` encodes
/// and decodes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Packed {
    /// The job or result as JSON text, without its body.
    pub json: String,
    /// The request's or response's body.
    pub body: Option<serde_bytes::ByteBuf>,
}

/// The origin's delivery method: `__proxyFetchDeliverPacked`, or the earlier
/// `__proxyFetchDeliver` (its deliveries as JS objects, field by field).
pub(crate) fn deliver_method(packed: bool) -> &'static str {
    if packed {
        OriginClient::DELIVER_PACKED.js_name()
    } else {
        OriginClient::DELIVER.js_name()
    }
}

/// Results per delivery call: an origin refuses a call with more.
pub const MAX_DELIVERIES_PER_CALL: usize = 64;

/// Result of handing a result to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryOutcome {
    /// First result for this request: the handler ran.
    Delivered,
    /// The request had its result already (or was never started here): this one was dropped.
    Duplicate,
}

/// Jobs per `execute_fetches` call: the connections one Workers invocation may hold open at
/// once, so every job of a call fetches at once.
pub const MAX_JOBS_PER_CALL: usize = 6;

/// Bytes of jobs or results one call carries at most (by [`weight`]): the runtime refuses an
/// RPC call over 32 MiB. One job or result always fits alone (bodies are at most
/// [`MAX_BODY_LIMIT`](super::MAX_BODY_LIMIT)), so a call of several is split to stay under.
pub const CALL_BYTES: usize = 31 * 1024 * 1024;

/// Jobs per `enqueue` call: an orchestrator refuses a call with more.
pub const MAX_JOBS_PER_ENQUEUE: usize = 32;

/// Groups jobs into calls: jobs whose `key` is the same `Some((k, max))` go together, up to
/// `max` jobs and [`CALL_BYTES`] a call; a job whose key is `None` goes alone. Returns the calls
/// and, for each job in order, the index of its call.
pub(crate) fn into_calls<K: PartialEq>(
    jobs: Vec<FetchJob>,
    key: impl Fn(&FetchJob) -> Option<(K, usize)>,
) -> (Vec<Vec<FetchJob>>, Vec<usize>) {
    let mut calls: Vec<Vec<FetchJob>> = Vec::new();
    let mut call_of = Vec::with_capacity(jobs.len());
    // The call being filled for each key (there are few), and its bytes so far.
    let mut open: Vec<(K, usize, usize)> = Vec::new();
    for job in jobs {
        let bytes = job.weight();
        let call = match key(&job) {
            None => None,
            Some((k, max)) => match open.iter_mut().find(|(o, _, _)| *o == k) {
                Some((_, i, sum))
                    if calls.get(*i).is_some_and(|c| c.len() < max)
                        && *sum + bytes <= CALL_BYTES =>
                {
                    *sum += bytes;
                    Some(*i)
                }
                Some(slot) => {
                    *slot = (k, calls.len(), bytes);
                    None
                }
                None => {
                    open.push((k, calls.len(), bytes));
                    None
                }
            },
        };
        let call = call.unwrap_or_else(|| {
            calls.push(Vec::new());
            calls.len() - 1
        });
        if let Some(jobs) = calls.get_mut(call) {
            jobs.push(job);
        }
        call_of.push(call);
    }
    (calls, call_of)
}

/// About how many bytes a request or response takes in a call: body, URL, headers, framing.
pub fn weight(body: usize, url: &str, headers: &[(String, String)]) -> usize {
    1024 + body
        + url.len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// A request whose executor was lost is dispatched again at most this often (counting the
/// first), by the origin's sweep (direct flow) or the orchestrator's backstop.
pub const MAX_DISPATCHES: u32 = 3;

/// The version of [`LongJob`] this build writes and reads: queue messages outlive deploys
/// (4 days' retention by default), so a consumer reads only the version it knows.
pub const LONG_JOB_VERSION: u32 = 1;

/// A long-path message carries its request body inline while the job's [`weight`] stays under
/// this; a larger body stays in the origin's record and the consumer gets it with its claim.
/// One 64 KB billing unit, far under the 128 KB message limit.
pub const LONG_MESSAGE_BYTES: usize = 60_000;

/// One long-path job as it travels through the queue (the long path's producer sends it, the
/// consumer reads it; strict, like every hop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct LongJob {
    /// [`LONG_JOB_VERSION`] of the producer.
    pub v: u32,
    /// The job as the executor would get it; its `request.body` is `None` when
    /// `body_at_origin` is set.
    pub job: FetchJob,
    /// The length of a body left in the origin's record: the consumer gets it from its claim.
    pub body_at_origin: Option<u64>,
}

impl LongJob {
    /// The message for `job`: its body inline when the job fits [`LONG_MESSAGE_BYTES`], else
    /// left at the origin.
    pub fn of(mut job: FetchJob) -> LongJob {
        let body_at_origin = if job.weight() > LONG_MESSAGE_BYTES {
            job.request.body.take().map(|b| b.len() as u64)
        } else {
            None
        };
        LongJob {
            v: LONG_JOB_VERSION,
            job,
            body_at_origin,
        }
    }
}

/// The long path's queue, as a producer sees it: it takes [`LongJob`]s only.
pub struct LongQueue(worker::Queue);

impl LongQueue {
    /// The queue producer binding `binding` of `env`; `None` when env has none.
    pub fn from_env(env: &worker::Env, binding: &str) -> Option<LongQueue> {
        let value = js_sys::Reflect::get(env, &wasm_bindgen::JsValue::from_str(binding)).ok()?;
        // A queue producer binding is the one binding with `send` and `sendBatch`.
        let has = |name: &str| {
            js_sys::Reflect::get(&value, &wasm_bindgen::JsValue::from_str(name))
                .is_ok_and(|f| f.is_function())
        };
        if value.is_undefined() || !has("send") || !has("sendBatch") {
            return None;
        }
        // Not `env.queue()`, which also wants the class's name to be `WorkerQueue`.
        Some(LongQueue(wasm_bindgen::JsCast::unchecked_into(value)))
    }

    /// Sends one job (structured clone, `v8` content type: the body stays binary). `Ok` once
    /// the queue has it.
    pub async fn send(&self, job: &LongJob) -> Result<(), String> {
        let encoded = crate::rpc::to_js_value(job)?;
        let message = worker::RawMessageBuilder::new(encoded)
            .build_with_content_type(worker::QueueContentType::V8);
        self.0.send_raw(message).await.map_err(|e| e.to_string())
    }
}

/// A consumer's claim on a long-path request before it fetches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ClaimRequest {
    /// The request's id.
    pub id: RequestId,
    /// The request's [`token`](FetchJob::token): a claim without it is refused.
    pub token: String,
    /// How often the queue delivered this message (1 the first time).
    pub attempts: u32,
    /// The message left the body at the origin: the answer carries it.
    #[serde(default)]
    pub want_body: bool,
}

/// What the origin answers a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Claim {
    /// Fetch it: with this body, when the body was left at the origin.
    Fetch {
        /// The request's body, when the message did not carry it.
        body: Option<serde_bytes::ByteBuf>,
    },
    /// No record: delivered, cancelled, or never started here. Nothing to do.
    Done,
    /// A live claim holds it (a duplicate message): nothing to do.
    InFlight,
    /// A request that may not be sent twice, claimed before by a consumer that is gone: not
    /// fetched again; the origin delivered `Backstop` to its handler.
    Refused,
}

/// Claims per `__proxyFetchClaim` call: an origin refuses a call with more.
pub const MAX_CLAIMS_PER_CALL: usize = 64;

/// Handler error codes of a delivery the sender must not retry: the token did not match.
pub const FORBIDDEN: &str = "forbidden";
/// Handler error code of a delivery that failed on the origin's side (its storage): retry.
pub const RETRY: &str = "retry";
/// Handler error code of an `execute_fetches` call refused because the executor's isolate
/// holds its byte budget in flight (`PROXY_FETCH_MAX_INFLIGHT_BYTES`): nothing was fetched;
/// send it again later.
pub const BUSY: &str = "busy";
/// Handler error code of an `execute_fetches` call naming an origin or orchestrator binding
/// the executor's worker lacks, or has of another kind: nothing was fetched.
pub const MISSING_BINDING: &str = "missing_binding";
/// Handler error code of a call that breaks the protocol's limits or carries a malformed job.
pub const BAD_JOB: &str = "bad_job";

/// The RPC method every origin Durable Object serves (generated by
/// `#[entrypoint(durable_object, origin)]`).
#[entrypoint(durable_object)]
pub trait Origin {
    /// Hands each result to its request's handler; one outcome per delivery, in order. A
    /// delivery whose origin storage failed gets a [`RETRY`] error, one with the wrong token a
    /// [`FORBIDDEN`] one.
    #[rpc(name = "__proxyFetchDeliver")]
    async fn deliver(
        &self,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<Result<DeliveryOutcome, HandlerError>>, HandlerError>;

    /// [`deliver`](Self::deliver) with each delivery [`Packed`]: its JSON text, and a
    /// response's body beside it.
    #[rpc(name = "__proxyFetchDeliverPacked")]
    async fn deliver_packed(
        &self,
        deliveries: Vec<Packed>,
    ) -> Result<Vec<Result<DeliveryOutcome, HandlerError>>, HandlerError>;

    /// The long path's consumer claims each request before it fetches it (at most
    /// [`MAX_CLAIMS_PER_CALL`]); one answer per claim, in order. A claim with the wrong token
    /// gets a [`FORBIDDEN`] error, one whose origin storage failed a [`RETRY`] one.
    #[rpc(name = "__proxyFetchClaim")]
    async fn claim(
        &self,
        claims: Vec<ClaimRequest>,
    ) -> Result<Vec<Result<Claim, HandlerError>>, HandlerError>;
}

/// What `FetchOrchestrator` serves to origins and executors.
#[entrypoint(durable_object)]
pub trait Orchestrator {
    /// Queues `jobs` (at most [`MAX_JOBS_PER_ENQUEUE`]); answered once their entries are
    /// stored and the executor acknowledged them. A job already queued is left as it is.
    async fn enqueue(&self, jobs: Vec<FetchJob>) -> Result<(), HandlerError>;
    /// Whether the orchestrator holds the request `ticket` names (the origin's sweep asks this
    /// first, and ships the job, with its body, to [`recover`](Self::recover) only when not).
    async fn holds(&self, ticket: Ticket) -> Result<bool, HandlerError>;
    /// The origin's sweep asks after a request it has had no result for: `true` if the
    /// orchestrator has it (or queued it now: a start a crash cut short, resendable), `false`
    /// if it does not and the job may not be sent again (the origin then tells the handler).
    async fn recover(&self, job: FetchJob) -> Result<bool, HandlerError>;
    /// The results reached their origins: the requests are done. Every method that changes
    /// a request's state takes its [`Ticket`]; a wrong one is refused with [`FORBIDDEN`] (the
    /// others of the call are still done).
    async fn complete(&self, tickets: Vec<Ticket>) -> Result<(), HandlerError>;
    /// Stops watching a request (cancelled at the origin). Whether it was queued.
    async fn forget(&self, ticket: Ticket) -> Result<bool, HandlerError>;
    /// The executor could not deliver `result`: the orchestrator keeps it and delivers it
    /// itself, with backoff, until the request's max age.
    async fn undelivered(&self, ticket: Ticket, result: FetchResult) -> Result<(), HandlerError>;
}

/// What `FetchExecutorEntrypoint` serves.
#[entrypoint(name = "FetchExecutorEntrypoint")]
pub trait Executor {
    /// Fetches each job, delivers its result to its origin, tells the orchestrator (if any).
    /// Answered once the call is checked; the work runs under `ctx.waitUntil`. A call of more
    /// than [`MAX_JOBS_PER_CALL`] jobs is refused ([`BAD_JOB`]), one naming a binding the
    /// executor's worker lacks too ([`MISSING_BINDING`]), and one that does not fit the
    /// isolate's byte budget now gets [`BUSY`]: nothing of a refused call is fetched.
    async fn execute_fetches(&self, jobs: Vec<FetchJob>) -> Result<(), HandlerError>;
    /// [`execute_fetches`](Self::execute_fetches) with each job [`Packed`]: its JSON text, and
    /// its request's body beside it. Answered and refused alike.
    async fn execute_fetches_packed(&self, jobs: Vec<Packed>) -> Result<(), HandlerError>;
    /// What the executor takes ([`ExecutorTerms`]), so that an origin can refuse at the start
    /// what the executor would refuse, without waiting for the executor (which checks every
    /// job all the same). A [`NO_POLICY`] error when its `PROXY_FETCH_ALLOW` is missing.
    async fn terms(&self) -> Result<ExecutorTerms, HandlerError>;
}

/// Handler error code of `terms` when the executor has no policy (it fetches nothing).
pub const NO_POLICY: &str = "no_policy";

/// What an executor takes, as its worker's configuration says: the URLs its policy allows and
/// the Durable Object bindings it can deliver to (a job's origin and orchestrator bindings
/// must be among them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ExecutorTerms {
    /// Its worker's `PROXY_FETCH_ALLOW`.
    pub allow: String,
    /// The names of its worker's Durable Object namespace bindings.
    pub namespaces: Vec<String>,
}

impl ExecutorTerms {
    /// The first of `bindings` the executor could not deliver to, as its refusal says it.
    pub(crate) fn lacking(&self, bindings: &[&str]) -> Option<String> {
        bindings
            .iter()
            .find(|b| !self.namespaces.iter().any(|n| n == *b))
            .map(|b| {
                format!(
                    "the executor's worker has no binding `{b}` to a Durable Object namespace: \
                     no result could be delivered; bind it in the executor's worker (same name, \
                     same class)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::{ProxyFetchOptions, ProxyRequest};

    fn job(id: &str, key: &str, body: usize) -> FetchJob {
        let mut request = ProxyRequest::get("http://127.0.0.1/");
        request.body = Some(serde_bytes::ByteBuf::from(vec![0u8; body]));
        FetchJob {
            id: id.into(),
            token: key.into(),
            request,
            origin: OriginRef {
                binding: "O".into(),
                id: "0".into(),
            },
            queue: None,
            options: ProxyFetchOptions::default(),
        }
    }

    #[test]
    fn jobs_of_one_key_share_calls_up_to_the_limit_and_unkeyed_ones_go_alone() {
        let jobs = vec![
            job("a1", "a", 0),
            job("b1", "b", 0),
            job("a2", "a", 0),
            job("alone", "", 0),
            job("a3", "a", 0),
            job("big", "a", CALL_BYTES - 2048),
            job("a4", "a", 0),
        ];
        let (calls, call_of) = into_calls(jobs, |j| {
            (!j.token.is_empty()).then(|| (j.token.clone(), 2))
        });
        let ids: Vec<Vec<&str>> = calls
            .iter()
            .map(|c| c.iter().map(|j| j.id.as_str()).collect())
            .collect();
        assert_eq!(
            ids,
            vec![
                vec!["a1", "a2"],
                vec!["b1"],
                vec!["alone"],
                vec!["a3"],
                vec!["big"],
                vec!["a4"]
            ]
        );
        assert_eq!(call_of, vec![0, 1, 0, 2, 3, 4, 5]);
    }
}
