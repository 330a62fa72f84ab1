//! The origin's side: start a proxied fetch, receive its result exactly once, cancel it.
//!
//! The origin keeps a durable ledger entry per request (`proxy-fetch:request:<id>`): `Pending`
//! with the handler's name and the user data, until the first result to arrive (response,
//! error, backstop, cancel) turns it into `Done` and runs the handler; any later result finds
//! `Done` and is acknowledged and dropped. `Done` entries are pruned after a day.

use js_sys::Array;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::{Env, State};

use super::messages::{FetchJob, OriginRef};
use super::orchestrator::FetchOrchestratorClient;
use super::{
    now_ms, FetchError, FetchErrorKind, FetchResult, ProxyFetchOptions, ProxyRequest, RequestId,
};
use crate::rpc::{log_error, HandlerError, Method, RpcError};

const LEDGER: &str = "proxy-fetch:request:";
/// `Done` entries older than this are pruned: a duplicate that late is refused as unknown.
const DONE_TTL_MS: f64 = 24.0 * 3600.0 * 1000.0;

fn ledger_key(id: &str) -> String {
    format!("{LEDGER}{id}")
}

/// A Durable Object that starts proxied fetches and receives their results.
///
/// Implement it next to `#[entrypoint(durable_object, origin)]` on the same type; the macro
/// adds the RPC method results arrive through and the table of handlers.
pub trait ProxyFetchOrigin: crate::__private::OriginHandlers {
    fn state(&self) -> &State;
    fn env(&self) -> &Env;
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
    /// `allowed_hosts` does not allow the URL's host.
    Rejected(String),
    /// A binding the request needs is missing from env; the message names the option to set.
    MissingBinding(String),
    /// The orchestrator could not be reached or refused the request.
    Enqueue(RpcError),
    /// The origin's storage failed, or the continuation data could not be serialized.
    Storage(String),
}

impl fmt::Display for ProxyFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyFetchError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            ProxyFetchError::Rejected(m) => write!(f, "rejected by policy: {m}"),
            ProxyFetchError::MissingBinding(m) => write!(f, "missing binding: {m}"),
            ProxyFetchError::Enqueue(e) => write!(f, "could not enqueue: {e}"),
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
        HandlerError::new("proxy_fetch", e.to_string())
    }
}

fn storage_error(e: impl fmt::Display) -> ProxyFetchError {
    ProxyFetchError::Storage(e.to_string())
}

#[derive(Serialize, Deserialize)]
enum Ledger {
    Pending(PendingRecord),
    Done { at_ms: f64 },
}

#[derive(Serialize, Deserialize)]
struct PendingRecord {
    handler: String,
    data: serde_json::Value,
    created_ms: f64,
    orchestrator_binding: String,
    orchestrator_shard: String,
}

/// Result of handing a result to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryOutcome {
    /// First result for this request: the handler ran.
    Delivered,
    /// The request already had its result: this one was dropped.
    Duplicate,
}

fn new_request_id() -> Result<RequestId, ProxyFetchError> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
        .map_err(|_| ProxyFetchError::Storage("no crypto global".into()))?;
    let uuid = js_sys::Reflect::get(&crypto, &JsValue::from_str("randomUUID"))
        .ok()
        .and_then(|f| wasm_bindgen::JsCast::dyn_into::<js_sys::Function>(f).ok())
        .and_then(|f| f.call0(&crypto).ok())
        .and_then(|v| v.as_string());
    uuid.ok_or_else(|| ProxyFetchError::Storage("crypto.randomUUID unavailable".into()))
}

fn check_request(
    request: &ProxyRequest,
    options: &ProxyFetchOptions,
) -> Result<(), ProxyFetchError> {
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
    Ok(())
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

/// Starts a proxied fetch: the orchestrator queues it and the executor fetches it while this
/// Durable Object is free to do other work. Returns the request id as soon as the request is
/// queued; the result arrives later, exactly once, at the continuation's handler.
pub async fn proxy_fetch<O: ProxyFetchOrigin, D: Serialize>(
    origin: &O,
    request: impl Into<ProxyRequest>,
    continuation: Continuation<O, D>,
    options: &ProxyFetchOptions,
) -> Result<RequestId, ProxyFetchError> {
    let request = request.into();
    check_request(&request, options)?;
    let env = origin.env();
    let origin_binding = options
        .origin_binding
        .clone()
        .unwrap_or_else(|| O::INFERRED_BINDING.to_owned());
    require_binding(env, &origin_binding, "origin_binding")?;
    require_binding(env, &options.orchestrator_binding, "orchestrator_binding")?;

    let id = new_request_id()?;
    let shard = options.shard_for(&id);
    let data = serde_json::to_value(&continuation.data).map_err(storage_error)?;
    let storage = origin.state().storage();
    let key = ledger_key(&id);
    let record = Ledger::Pending(PendingRecord {
        handler: continuation.handler.to_owned(),
        data,
        created_ms: now_ms(),
        orchestrator_binding: options.orchestrator_binding.clone(),
        orchestrator_shard: shard.clone(),
    });
    let job = FetchJob {
        id: id.clone(),
        request,
        origin: OriginRef {
            binding: origin_binding,
            id: origin.state().id().to_string(),
        },
        shard: shard.clone(),
        options: options.clone(),
    };
    let orchestrator =
        FetchOrchestratorClient::from_name(env, &options.orchestrator_binding, &shard)
            .map_err(ProxyFetchError::Enqueue)?;
    // Send the job before writing the record: a write holds back every message sent after it
    // until it is on disk (the output gate), and the orchestrator need not wait for that. The
    // record is still in storage before any result can arrive: the write is issued in this
    // same turn, before the Durable Object takes another event.
    let enqueued = orchestrator.enqueue(job);
    let written = storage.put(&key, &record);
    let (enqueued, written) = futures_util::future::join(enqueued, written).await;
    if let Err(e) = enqueued {
        // Nothing will ever answer this request: forget it, so no handler waits for it.
        let _ = storage.delete(&key).await;
        return Err(ProxyFetchError::Enqueue(e));
    }
    if let Err(e) = written {
        // Without its record the result would be refused: stop the request instead.
        let _ = orchestrator.forget(id.clone()).await;
        return Err(storage_error(e));
    }
    Ok(id)
}

thread_local! {
    /// Ids being delivered right now in this isolate: a second delivery racing the first one
    /// sees the claim before either touches storage.
    static CLAIMED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

struct Claim(String);

impl Claim {
    fn take(id: &str) -> Option<Claim> {
        CLAIMED
            .with(|c| c.borrow_mut().insert(id.to_owned()))
            .then(|| Claim(id.to_owned()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.with(|c| c.borrow_mut().remove(&self.0));
    }
}

/// A `FetchResult` as the delivery checks it: every field but the body decoded.
#[derive(Deserialize)]
struct ResponseShape {
    request_id: RequestId,
    #[allow(dead_code)]
    status: u16,
    #[allow(dead_code)]
    status_text: String,
    #[allow(dead_code)]
    headers: Vec<(String, String)>,
    #[allow(dead_code)]
    url: String,
    #[allow(dead_code)]
    attempts: u32,
    #[allow(dead_code)]
    duration_ms: f64,
}

/// Checks argument 0 of a delivery as a `FetchResult` (the body only for being bytes) and
/// returns its request id.
pub(crate) fn checked_request_id(
    method: &'static str,
    args: &crate::rpc::Args,
) -> Result<RequestId, RpcError> {
    let result: Result<ResponseShape, FetchError> = args.get(0, "result")?;
    match result {
        Err(e) => Ok(e.request_id),
        Ok(shape) => {
            let ok = js_sys::Reflect::get(&args.raw(0), &JsValue::from_str("Ok"))
                .unwrap_or(JsValue::UNDEFINED);
            let body =
                js_sys::Reflect::get(&ok, &JsValue::from_str("body")).unwrap_or(JsValue::UNDEFINED);
            if wasm_bindgen::JsCast::is_instance_of::<js_sys::Uint8Array>(&body) {
                Ok(shape.request_id)
            } else {
                Err(RpcError::new(
                    crate::rpc::RpcErrorKind::BadArgument,
                    method,
                    "argument `result`: field `Ok.body`: expected a Uint8Array",
                ))
            }
        }
    }
}

/// The first result for a request runs its handler; later ones are dropped. `result` is the
/// encoded `FetchResult` for request `id`, handed to the handler as it came (a 10 MiB body is
/// not decoded and encoded again on the way).
pub(crate) async fn deliver<O: ProxyFetchOrigin>(
    origin: &O,
    ctx: JsValue,
    id: &str,
    result: JsValue,
) -> Result<DeliveryOutcome, HandlerError> {
    let Some(_claim) = Claim::take(id) else {
        return Ok(DeliveryOutcome::Duplicate);
    };
    let storage = origin.state().storage();
    let key = ledger_key(id);
    let record = match storage.get::<Ledger>(&key).await? {
        Some(Ledger::Pending(record)) => record,
        Some(Ledger::Done { .. }) => return Ok(DeliveryOutcome::Duplicate),
        None => {
            return Err(HandlerError::new(
                "unknown_request",
                format!("no proxy fetch {id} is pending here"),
            ))
        }
    };
    // Settle the ledger before the handler runs: should the handler crash the instance, the
    // result is not delivered a second time.
    storage.put(&key, Ledger::Done { at_ms: now_ms() }).await?;
    run_handler(origin, ctx, id, &record, result).await;
    prune_done(origin).await;
    Ok(DeliveryOutcome::Delivered)
}

/// The ledger's entries, decoded.
async fn ledger<O: ProxyFetchOrigin>(origin: &O) -> Result<Vec<(String, Ledger)>, ProxyFetchError> {
    let map = origin
        .state()
        .storage()
        .list_with_options(worker::ListOptions::new().prefix(LEDGER))
        .await
        .map_err(storage_error)?;
    Ok(map
        .entries()
        .into_iter()
        .filter_map(|entry| {
            let pair: Array = entry.ok()?.into();
            let id = pair.get(0).as_string()?.strip_prefix(LEDGER)?.to_owned();
            Some((id, serde_wasm_bindgen::from_value(pair.get(1)).ok()?))
        })
        .collect())
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

async fn prune_done<O: ProxyFetchOrigin>(origin: &O) {
    // A sweep lists the ledger: once every 256 deliveries is plenty.
    thread_local!(static DELIVERIES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    if DELIVERIES.with(|d| d.replace(d.get().wrapping_add(1))) % 256 != 255 {
        return;
    }
    let Ok(entries) = ledger(origin).await else {
        return;
    };
    let cutoff = now_ms() - DONE_TTL_MS;
    let old: Vec<String> = entries
        .into_iter()
        .filter(|(_, entry)| matches!(entry, Ledger::Done { at_ms } if *at_ms < cutoff))
        .map(|(id, _)| ledger_key(&id))
        .collect();
    if !old.is_empty() {
        let _ = origin.state().storage().delete_multiple(old).await;
    }
}

/// Cancels a pending request: its handler receives `FetchErrorKind::Cancelled` now, exactly
/// once, and a response that arrives later is dropped. Returns `false` if the request already
/// had its result (or never existed here).
pub async fn cancel<O: ProxyFetchOrigin>(
    origin: &O,
    request_id: &str,
) -> Result<bool, ProxyFetchError> {
    let entry: Option<Ledger> = origin
        .state()
        .storage()
        .get(&ledger_key(request_id))
        .await
        .map_err(storage_error)?;
    let Some(Ledger::Pending(record)) = entry else {
        return Ok(false);
    };
    let cancelled: FetchResult = Err(FetchError::new(
        request_id,
        FetchErrorKind::Cancelled,
        "cancelled by the origin",
    ));
    let cancelled = crate::rpc::to_js_value(&cancelled).map_err(storage_error)?;
    let delivered = deliver(origin, JsValue::UNDEFINED, request_id, cancelled).await;
    if delivered != Ok(DeliveryOutcome::Delivered) {
        return Ok(false);
    }
    // The orchestrator no longer needs to watch it; if this fails its backstop is dropped here.
    if let Ok(orchestrator) = FetchOrchestratorClient::from_name(
        origin.env(),
        &record.orchestrator_binding,
        &record.orchestrator_shard,
    ) {
        if let Err(e) = orchestrator.forget(request_id.to_owned()).await {
            log_error(&format!(
                "proxy-fetch {request_id}: cancelled, but the orchestrator was not told: {e}"
            ));
        }
    }
    Ok(true)
}

/// Requests of this origin still waiting for their result.
pub async fn pending<O: ProxyFetchOrigin>(origin: &O) -> Result<Vec<RequestId>, ProxyFetchError> {
    let entries = ledger(origin).await?;
    Ok(entries
        .into_iter()
        .filter(|(_, entry)| matches!(entry, Ledger::Pending(_)))
        .map(|(id, _)| id)
        .collect())
}
