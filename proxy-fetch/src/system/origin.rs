//! The origin's side: start a proxied fetch, receive its result, cancel it, and the origin's
//! alarm: the backstop of the direct flow and the last-resort sweep of both.
//!
//! The origin keeps one ledger row per request (`proxy-fetch:request:<id>`) from the start
//! until its result was handed to the handler; then the row is deleted. A result for a
//! request with no row (delivered already, or never started here) is dropped as a duplicate.
//! Rows written per request: the record and its deletion, plus an alarm when none is set early
//! enough.

use js_sys::Array;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::{Env, State};

use super::options::InvalidOption;
use super::protocol::{
    DeliveryOutcome, ExecutorClient, FetchJob, OrchestratorClient, OriginRef, QueueRef, FORBIDDEN,
    RETRY,
};
use super::{
    now_ms, FetchError, FetchErrorKind, FetchResult, Flow, ProxyFetchOptions, ProxyRequest,
    RequestId,
};
use crate::rpc::{log_error, HandlerError, Method, RpcError};

const LEDGER: &str = "proxy-fetch:request:";
/// The sweep reads the ledger in pages of this many rows.
const PAGE: u32 = 256;
/// An origin dispatches a lost idempotent request again at most this often (direct flow).
const MAX_DISPATCHES: u32 = 3;
/// A handler that keeps crashing its instance gets its result this often, then it is dropped.
const MAX_HANDLER_RUNS: u32 = 5;
/// How long the sweep waits before trying again what it could not do now.
const SWEEP_RETRY_MS: f64 = 5_000.0;
/// In the orchestrated flow the origin's sweep acts this many backstop periods after a start
/// (the orchestrator's backstop acts after one): it queues the request again, which the
/// orchestrator ignores when it has it, and recovers it when a crash cut the start short.
const ORCHESTRATED_DUE_FACTOR: f64 = 2.0;

fn ledger_key(id: &str) -> String {
    format!("{LEDGER}{id}")
}

/// A Durable Object that starts proxied fetches and receives their results.
///
/// Implement it next to `#[entrypoint(durable_object, origin)]` on the same type; the macro
/// adds the RPC method results arrive through, the table of handlers and the alarm.
pub trait ProxyFetchOrigin: crate::__private::OriginHandlers + worker::DurableObject {
    fn state(&self) -> &State;
    fn env(&self) -> &Env;
    /// proxy-fetch uses the Durable Object's alarm as its backstop. Set this to `true` when
    /// the type has an `alarm()` of its own: proxy-fetch then calls it after its own work
    /// whenever the alarm fires (it may fire earlier than you asked: check what is due).
    const OWN_ALARM: bool = false;
}

/// Which handler of origin `O` receives the result, and the data handed to it along with it.
///
/// Built from a handler's typed handle, so a handler that does not exist or does not take
/// `(FetchResult, D)` does not compile:
/// `Continuation::new(WeatherClient::ON_WEATHER, city)`.
pub struct Continuation<O, D> {
    handler: &'static str,
    data: D,
    _origin: PhantomData<fn() -> O>,
}

impl<O, D: Serialize> Continuation<O, D> {
    pub fn new(handler: Method<O, (FetchResult, D)>, data: D) -> Self {
        Continuation {
            handler: handler.js_name(),
            data,
            _origin: PhantomData,
        }
    }
}

/// Why `proxy_fetch` or `cancel` could not do what was asked. Nothing was started (and
/// nothing stored) when `proxy_fetch` returns one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyFetchError {
    /// The URL or method cannot be fetched.
    InvalidRequest(String),
    /// An option is out of range.
    InvalidOptions(InvalidOption),
    /// `allowed_hosts` does not allow the URL's host.
    Rejected(String),
    /// A binding the request needs is missing from env; the message names the option to set.
    MissingBinding(String),
    /// The executor (direct flow) or the orchestrator could not be reached or refused the job.
    Dispatch(RpcError),
    /// The origin's storage failed, or the continuation data could not be serialized.
    Storage(String),
}

impl fmt::Display for ProxyFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyFetchError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            ProxyFetchError::InvalidOptions(e) => write!(f, "invalid options: {e}"),
            ProxyFetchError::Rejected(m) => write!(f, "rejected by policy: {m}"),
            ProxyFetchError::MissingBinding(m) => write!(f, "missing binding: {m}"),
            ProxyFetchError::Dispatch(e) => write!(f, "could not dispatch: {e}"),
            ProxyFetchError::Storage(m) => write!(f, "origin storage: {m}"),
        }
    }
}

impl std::error::Error for ProxyFetchError {}

impl From<ProxyFetchError> for worker::Error {
    fn from(e: ProxyFetchError) -> Self {
        worker::Error::RustError(e.to_string())
    }
}

impl From<ProxyFetchError> for HandlerError {
    fn from(e: ProxyFetchError) -> Self {
        let code = match &e {
            ProxyFetchError::InvalidRequest(_) => "invalid_request",
            ProxyFetchError::InvalidOptions(_) => "invalid_options",
            ProxyFetchError::Rejected(_) => "rejected",
            ProxyFetchError::MissingBinding(_) => "missing_binding",
            ProxyFetchError::Dispatch(_) => "dispatch",
            ProxyFetchError::Storage(_) => "storage",
        };
        HandlerError::new(code, e.to_string())
    }
}

fn storage_error(e: impl fmt::Display) -> ProxyFetchError {
    ProxyFetchError::Storage(e.to_string())
}

/// A request waiting for its result.
#[derive(Serialize, Deserialize)]
struct PendingRecord {
    handler: String,
    data: serde_json::Value,
    created_ms: f64,
    /// When the origin's alarm acts on the request if no result came.
    due_ms: f64,
    /// Times the job went to an executor (direct flow).
    dispatches: u32,
    /// Times the handler was started for this request without finishing (crashed instance).
    handler_runs: u32,
    /// The job as sent; its body is dropped when the request may not be sent again.
    job: FetchJob,
}

fn random_hex(bytes: usize) -> Result<String, ProxyFetchError> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
        .map_err(|_| ProxyFetchError::Storage("no crypto global".into()))?;
    let buffer = js_sys::Uint8Array::new_with_length(bytes as u32);
    let filled = js_sys::Reflect::get(&crypto, &JsValue::from_str("getRandomValues"))
        .ok()
        .and_then(|f| wasm_bindgen::JsCast::dyn_into::<js_sys::Function>(f).ok())
        .map(|f| f.call1(&crypto, &buffer).is_ok())
        .unwrap_or(false);
    if !filled {
        return Err(ProxyFetchError::Storage(
            "crypto.getRandomValues unavailable".into(),
        ));
    }
    Ok(buffer.to_vec().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks the request and returns it with its URL in the one form both the origin's and the
/// executor's checks see.
fn checked_request(
    mut request: ProxyRequest,
    options: &ProxyFetchOptions,
) -> Result<ProxyRequest, ProxyFetchError> {
    let url = worker::Url::parse(&request.url).map_err(|e| {
        ProxyFetchError::InvalidRequest(format!("`{}` is not a URL: {e}", request.url))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ProxyFetchError::InvalidRequest(format!(
            "`{}`: only http and https can be fetched",
            request.url
        )));
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if request.method.is_empty() || !request.method.chars().all(token) {
        return Err(ProxyFetchError::InvalidRequest(format!(
            "`{}` is not an HTTP method",
            request.method
        )));
    }
    let host = url.host_str().unwrap_or_default();
    if !options.host_allowed(host) {
        return Err(ProxyFetchError::Rejected(format!(
            "host `{host}` is not in allowed_hosts"
        )));
    }
    request.url = url.to_string();
    Ok(request)
}

fn require_binding(env: &Env, name: &str, option: &str) -> Result<(), ProxyFetchError> {
    let present = js_sys::Reflect::get(env, &JsValue::from_str(name))
        .map(|v| !v.is_undefined())
        .unwrap_or(false);
    if present {
        Ok(())
    } else {
        Err(ProxyFetchError::MissingBinding(format!(
            "`{name}` is not in env; add it to wrangler.toml or set ProxyFetchOptions::{option}"
        )))
    }
}

/// Starts a proxied fetch: the executor fetches it while this Durable Object is free to do
/// other work. Returns the request id once the request is on its way (direct flow: the
/// executor acknowledged it; orchestrated: the orchestrator stored it); the result arrives
/// later at the continuation's handler.
pub async fn proxy_fetch<O: ProxyFetchOrigin, D: Serialize>(
    origin: &O,
    request: impl Into<ProxyRequest>,
    continuation: Continuation<O, D>,
    options: &ProxyFetchOptions,
) -> Result<RequestId, ProxyFetchError> {
    options
        .validate()
        .map_err(ProxyFetchError::InvalidOptions)?;
    let request = checked_request(request.into(), options)?;
    let env = origin.env();
    let origin_binding = options
        .origin_binding
        .clone()
        .unwrap_or_else(|| O::INFERRED_BINDING.to_owned());
    require_binding(env, &origin_binding, "origin_binding")?;
    match options.flow {
        Flow::Direct => require_binding(env, &options.executor_binding, "executor_binding")?,
        Flow::Orchestrated => {
            require_binding(env, &options.orchestrator_binding, "orchestrator_binding")?
        }
    }
    let storage = origin.state().storage();

    let _starting;
    let id = match &options.request_id {
        Some(id) => {
            // Starting a request again while it is pending (or being started) starts nothing.
            _starting = match Held::take(&STARTING, id) {
                Some(claim) => claim,
                None => return Ok(id.clone()),
            };
            let known = storage
                .get::<PendingRecord>(&ledger_key(id))
                .await
                .map_err(storage_error)?;
            if known.is_some() {
                return Ok(id.clone());
            }
            id.clone()
        }
        None => random_hex(16)?,
    };
    let queue = (options.flow == Flow::Orchestrated).then(|| QueueRef {
        binding: options.orchestrator_binding.clone(),
        shard: options.shard_for(&id),
    });
    let job = FetchJob {
        id: id.clone(),
        token: random_hex(16)?,
        request,
        origin: OriginRef {
            binding: origin_binding,
            id: origin.state().id().to_string(),
        },
        queue,
        options: options.clone(),
    };
    let now = now_ms();
    let due_ms = now + due_after(options);
    let mut record = PendingRecord {
        handler: continuation.handler.to_owned(),
        data: serde_json::to_value(&continuation.data).map_err(storage_error)?,
        created_ms: now,
        due_ms,
        dispatches: 1,
        handler_runs: 0,
        job: job.clone(),
    };
    if record.job.queue.is_none() && !record.job.may_resend() {
        // The direct flow never sends it twice: no need to keep its body. (The orchestrated
        // one may queue it again, which the orchestrator ignores unless it lost it unsent.)
        record.job.request.body = None;
    }
    // Send the job while the record is written: a write holds back every message sent after
    // it until it is on disk (the output gate), and the executor need not wait for that. The
    // record is in storage before any result can arrive: the write is issued in this same
    // turn, before the Durable Object takes another event.
    let key = ledger_key(&id);
    let written = async {
        storage.put(&key, &record).await?;
        arm(origin, due_ms).await
    };
    let (sent, written) = futures_util::future::join(dispatch(env, &job), written).await;
    if let Err(e) = sent {
        // Nothing will answer this request: forget it, so no handler waits for it.
        let _ = storage.delete(&key).await;
        return Err(e);
    }
    if let Err(e) = written {
        // Without its record the result would be dropped: stop the request instead.
        if let Some(queue) = &job.queue {
            if let Ok(orchestrator) =
                OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
            {
                let _ = orchestrator.forget(id.clone()).await;
            }
        }
        return Err(storage_error(e));
    }
    Ok(id)
}

/// How long after a (re)dispatch the origin's sweep looks at a request that has no result.
fn due_after(options: &ProxyFetchOptions) -> f64 {
    let backstop = options.backstop_after_ms() as f64;
    match options.flow {
        Flow::Direct => backstop,
        Flow::Orchestrated => backstop * ORCHESTRATED_DUE_FACTOR,
    }
}

/// Hands the job to the executor (direct) or the orchestrator: `Ok` once it acknowledged.
async fn dispatch(env: &Env, job: &FetchJob) -> Result<(), ProxyFetchError> {
    let sent = match &job.queue {
        None => {
            let executor = ExecutorClient::from_env(env, &job.options.executor_binding)
                .map_err(ProxyFetchError::Dispatch)?;
            executor.execute_fetch(job.clone()).await
        }
        Some(queue) => {
            let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
                .map_err(ProxyFetchError::Dispatch)?;
            orchestrator
                .enqueue(job.clone())
                .await
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

thread_local! {
    /// Ids being delivered right now in this isolate: a second delivery racing the first one
    /// sees the claim before either touches storage.
    static CLAIMED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Caller-chosen ids being started right now in this isolate.
    static STARTING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// The alarm time each origin in this isolate last set or read (by Durable Object id), so
    /// most starts need not read it.
    static ALARMS: RefCell<HashMap<String, f64>> = RefCell::new(HashMap::new());
}

/// An id held in one of the sets above while its holder works on it.
struct Held(
    &'static std::thread::LocalKey<RefCell<HashSet<String>>>,
    String,
);

impl Held {
    fn take(
        set: &'static std::thread::LocalKey<RefCell<HashSet<String>>>,
        id: &str,
    ) -> Option<Held> {
        set.with(|s| s.borrow_mut().insert(id.to_owned()))
            .then(|| Held(set, id.to_owned()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.with(|s| s.borrow_mut().remove(&self.1));
    }
}

/// Makes sure the origin's alarm fires no later than `at`.
async fn arm<O: ProxyFetchOrigin>(origin: &O, at: f64) -> worker::Result<()> {
    let object = origin.state().id().to_string();
    let cached = ALARMS.with(|a| a.borrow().get(&object).copied());
    let storage = origin.state().storage();
    // With an alarm of its own the origin may move its alarm at any time: read it.
    let current = match cached {
        Some(t) if !O::OWN_ALARM => Some(t),
        _ => storage.get_alarm().await?.map(|t| t as f64),
    };
    let at = match current {
        Some(t) if t <= at => t,
        _ => {
            // An integer is an offset from now for workers-rs, not a timestamp.
            storage.set_alarm((at - now_ms()).max(0.0) as i64).await?;
            at
        }
    };
    ALARMS.with(|a| a.borrow_mut().insert(object, at));
    Ok(())
}

/// A `FetchResult` as the delivery checks it: every field but the body decoded (a 10 MiB body
/// is not copied into Wasm memory only to be checked; the handler decodes it once).
#[derive(Deserialize)]
#[allow(dead_code)]
struct ResponseShape {
    request_id: RequestId,
    status: u16,
    status_text: String,
    headers: Vec<(String, String)>,
    url: String,
    attempts: u32,
    duration_ms: f64,
}

/// Checks argument 0 of a delivery as a `FetchResult` (the body only for being bytes) and
/// returns its request id.
pub(crate) fn checked_request_id(args: &crate::rpc::Args) -> Result<RequestId, RpcError> {
    let result: Result<ResponseShape, FetchError> = args.get(0, "result")?;
    let shape = match result {
        Ok(shape) => shape,
        Err(e) => return Ok(e.request_id),
    };
    let body = js_sys::Reflect::get(&args.raw(0), &JsValue::from_str("Ok"))
        .and_then(|ok| js_sys::Reflect::get(&ok, &JsValue::from_str("body")))
        .unwrap_or(JsValue::UNDEFINED);
    if body.is_instance_of::<js_sys::Uint8Array>() {
        Ok(shape.request_id)
    } else {
        Err(RpcError::new(
            crate::rpc::RpcErrorKind::BadArgument,
            "__proxyFetchDeliver",
            "argument `result`: field `Ok.body`: expected a Uint8Array",
        ))
    }
}

/// Runs the handler of request `id` with `result` (the encoded `FetchResult`, handed on as it
/// came), then deletes the request's record. `token` must be the request's (`None`: the
/// origin delivers to itself).
///
/// Handlers run at least once: the record goes only after the handler returned, so if the
/// instance dies while the handler runs, the sender (executor, orchestrator, or this origin's
/// alarm) delivers the result again, and the handler can tell by the request id.
pub(crate) async fn deliver<O: ProxyFetchOrigin>(
    origin: &O,
    ctx: JsValue,
    id: &str,
    token: Option<&str>,
    result: JsValue,
    count_run: bool,
) -> Result<DeliveryOutcome, HandlerError> {
    let Some(_claim) = Held::take(&CLAIMED, id) else {
        return Ok(DeliveryOutcome::Duplicate);
    };
    let storage = origin.state().storage();
    let key = ledger_key(id);
    let retry = |e: worker::Error| HandlerError::new(RETRY, format!("origin storage: {e}"));
    let Some(mut record) = storage.get::<PendingRecord>(&key).await.map_err(retry)? else {
        return Ok(DeliveryOutcome::Duplicate);
    };
    if token.is_some_and(|t| t != record.job.token) {
        return Err(HandlerError::new(
            FORBIDDEN,
            format!("the delivery for request {id} does not carry its token"),
        ));
    }
    if record.handler_runs >= MAX_HANDLER_RUNS {
        log_error(&format!(
            "proxy-fetch {id}: handler `{}` was started {} times without finishing (its \
             instance crashed?); result dropped",
            record.handler, record.handler_runs
        ));
        storage.delete(&key).await.map_err(retry)?;
        return Ok(DeliveryOutcome::Delivered);
    }
    if count_run {
        // Deliveries the origin makes itself (its alarm) count their runs, so a handler that
        // crashes its instance every time is not run forever.
        record.handler_runs += 1;
        storage.put(&key, &record).await.map_err(retry)?;
    }
    run_handler(origin, ctx, id, &record, result).await;
    if let Err(e) = storage.delete(&key).await {
        log_error(&format!(
            "proxy-fetch {id}: handler ran, but its record could not be removed: {e}"
        ));
    }
    Ok(DeliveryOutcome::Delivered)
}

async fn run_handler<O: ProxyFetchOrigin>(
    origin: &O,
    ctx: JsValue,
    id: &str,
    record: &PendingRecord,
    result: JsValue,
) {
    let Ok(data) = crate::rpc::to_js_value(&record.data) else {
        log_error(&format!(
            "proxy-fetch {id}: the data for `{}` could not be encoded",
            record.handler
        ));
        return;
    };
    let Some(promise) = origin.dispatch(&record.handler, ctx, Array::of2(&result, &data).into())
    else {
        log_error(&format!(
            "proxy-fetch {id}: the origin has no handler `{}` (renamed since the request started?)",
            record.handler
        ));
        return;
    };
    if let Err(e) = JsFuture::from(promise).await {
        let message = js_sys::Reflect::get(&e, &JsValue::from_str("message"))
            .ok()
            .and_then(|m| m.as_string());
        log_error(&format!(
            "proxy-fetch {id}: handler `{}` failed: {}",
            record.handler,
            message.unwrap_or_else(|| format!("{e:?}"))
        ));
    }
}

/// Delivers an error made here (cancel, backstop) to the request's own handler.
async fn deliver_error<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    kind: FetchErrorKind,
    message: String,
    count_run: bool,
) -> Result<DeliveryOutcome, ProxyFetchError> {
    let error: FetchResult = Err(FetchError::new(id, kind, message));
    let error = crate::rpc::to_js_value(&error).map_err(storage_error)?;
    deliver(origin, JsValue::UNDEFINED, id, None, error, count_run)
        .await
        .map_err(|e| storage_error(e.message))
}

/// One page of the ledger from `after` on: ids and records.
async fn ledger_page<O: ProxyFetchOrigin>(
    origin: &O,
    after: Option<&str>,
) -> Result<Vec<(String, Option<PendingRecord>)>, ProxyFetchError> {
    let mut options = worker::ListOptions::new()
        .prefix(LEDGER)
        .limit(PAGE as usize);
    let start;
    if let Some(after) = after {
        // `start` is inclusive: begin just past `after`.
        start = format!("{}\u{0}", ledger_key(after));
        options = options.start(&start);
    }
    let map = origin
        .state()
        .storage()
        .list_with_options(options)
        .await
        .map_err(storage_error)?;
    Ok(map
        .entries()
        .into_iter()
        .filter_map(|entry| {
            let pair: Array = entry.ok()?.into();
            let id = pair.get(0).as_string()?.strip_prefix(LEDGER)?.to_owned();
            Some((id, serde_wasm_bindgen::from_value(pair.get(1)).ok()))
        })
        .collect())
}

/// Cancels a pending request: its handler receives `FetchErrorKind::Cancelled` now, and a
/// response that arrives later is dropped. Returns `false` if the request already had its
/// result (or never existed here).
pub async fn cancel<O: ProxyFetchOrigin>(
    origin: &O,
    request_id: &str,
) -> Result<bool, ProxyFetchError> {
    let record: Option<PendingRecord> = origin
        .state()
        .storage()
        .get(&ledger_key(request_id))
        .await
        .map_err(storage_error)?;
    let Some(record) = record else {
        return Ok(false);
    };
    let delivered = deliver_error(
        origin,
        request_id,
        FetchErrorKind::Cancelled,
        "cancelled by the origin".into(),
        false,
    )
    .await?;
    if delivered != DeliveryOutcome::Delivered {
        return Ok(false);
    }
    // The orchestrator no longer needs to watch it; if this fails its backstop finds the
    // request settled and drops it.
    if let Some(queue) = &record.job.queue {
        if let Ok(orchestrator) =
            OrchestratorClient::from_name(origin.env(), &queue.binding, &queue.shard)
        {
            if let Err(e) = orchestrator.forget(request_id.to_owned()).await {
                log_error(&format!(
                    "proxy-fetch {request_id}: cancelled, but the orchestrator was not told: {e}"
                ));
            }
        }
    }
    Ok(true)
}

/// Requests of this origin still waiting for their result.
pub async fn pending<O: ProxyFetchOrigin>(origin: &O) -> Result<Vec<RequestId>, ProxyFetchError> {
    let mut ids = Vec::new();
    loop {
        let page = ledger_page(origin, ids.last().map(String::as_str)).await?;
        let full = page.len() == PAGE as usize;
        ids.extend(page.into_iter().map(|(id, _)| id));
        if !full {
            return Ok(ids);
        }
    }
}

/// The origin's alarm: requests past their due time are dispatched again (direct flow,
/// idempotent, within their max age) or get a final `Backstop` error; then, for an origin
/// with an alarm of its own, that alarm runs.
pub async fn alarm<O: ProxyFetchOrigin>(origin: &O) -> worker::Result<()> {
    let object = origin.state().id().to_string();
    ALARMS.with(|a| a.borrow_mut().remove(&object));
    let swept = sweep(origin).await;
    let own = if O::OWN_ALARM {
        Some(worker::DurableObject::alarm(origin).await)
    } else {
        None
    };
    match swept {
        Ok(Some(next)) => arm(origin, next).await?,
        Ok(None) => {}
        Err(e) => {
            log_error(&format!("proxy-fetch: the origin's sweep failed: {e}"));
            arm(origin, now_ms() + SWEEP_RETRY_MS).await?;
        }
    }
    match own {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Acts on every overdue request; returns the next due time, if any request is left.
async fn sweep<O: ProxyFetchOrigin>(origin: &O) -> Result<Option<f64>, ProxyFetchError> {
    let now = now_ms();
    let mut next: Option<f64> = None;
    let mut later = |t: f64| next = Some(next.map_or(t, |n: f64| n.min(t)));
    let mut after: Option<String> = None;
    loop {
        let page = ledger_page(origin, after.as_deref()).await?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|(id, _)| id.clone());
        for (id, record) in page {
            let Some(record) = record else {
                log_error(&format!(
                    "proxy-fetch {id}: unreadable ledger record left alone"
                ));
                continue;
            };
            if record.due_ms > now {
                later(record.due_ms);
                continue;
            }
            if let Some(due) = overdue(origin, &id, record, now).await {
                later(due);
            }
        }
        if !full {
            return Ok(next);
        }
    }
}

/// Acts on one overdue request; returns when to look at it again, if it stays.
async fn overdue<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    mut record: PendingRecord,
    now: f64,
) -> Option<f64> {
    let options = &record.job.options;
    let age = now - record.created_ms;
    let budget = due_after(options);
    let within_age = age + budget < options.max_age_ms as f64;
    let redispatch = match record.job.queue {
        // Its executor was lost.
        None => record.job.may_resend() && record.dispatches < MAX_DISPATCHES && within_age,
        // The orchestrator retries and re-dispatches; asking it again costs nothing when it
        // has the request, and recovers a start a crash cut short (its own retries included).
        Some(_) => within_age,
    };
    if redispatch {
        // Send it again, with the same id and token.
        record.dispatches += 1;
        record.due_ms = now + budget;
        let due = record.due_ms;
        let storage = origin.state().storage();
        if let Err(e) = storage.put(&ledger_key(id), &record).await {
            log_error(&format!("proxy-fetch {id}: not dispatched again: {e}"));
            return Some(now + SWEEP_RETRY_MS);
        }
        return match dispatch(origin.env(), &record.job).await {
            Ok(()) => Some(due),
            Err(e) => {
                log_error(&format!("proxy-fetch {id}: dispatch again failed: {e}"));
                Some(now + SWEEP_RETRY_MS)
            }
        };
    }
    let message = record.job.backstop_message(age, "the start");
    match deliver_error(origin, id, FetchErrorKind::Backstop, message, true).await {
        Ok(_) => None,
        Err(e) => {
            log_error(&format!("proxy-fetch {id}: backstop not delivered: {e}"));
            Some(now + SWEEP_RETRY_MS)
        }
    }
}
