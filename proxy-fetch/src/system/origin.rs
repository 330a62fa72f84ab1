//! The origin's side: start a proxied fetch, receive its result, cancel it, and the origin's
//! alarm: the backstop of the direct flow and the last-resort sweep of both.
//!
//! The origin keeps a record per request in its ledger ([`super::ledger`]) from the start
//! until its result was handed to the handler; then the record is deleted. A result for a
//! request with no record (delivered already, or never started here) is dropped as a
//! duplicate. Rows written per request: its share of the row it started in, and the write that
//! removes it (shared with the results that arrive with it), plus an alarm when none is set
//! early enough.

use futures_util::future::join;
use js_sys::Array;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::{Env, State};

use super::batch::{self, Answer};
use super::concurrent;
use super::ledger::{self, row_key, Change, Op, PendingRecord, Row, Start, LEDGER};
use super::options::InvalidOption;
use super::protocol::{
    DeliveryOutcome, ExecutorClient, FetchJob, OrchestratorClient, OriginRef, QueueRef, CALL_BYTES,
    FORBIDDEN, MAX_DELIVERIES_PER_CALL, MAX_JOBS_PER_CALL, RETRY,
};
use super::{
    now_ms, FetchError, FetchErrorKind, FetchResult, Flow, ProxyFetchOptions, ProxyRequest,
    RequestId,
};
use crate::rpc::{log_error, HandlerError, Method, RpcError};

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

/// Why `proxy_fetch` or `cancel` could not do what was asked. When `proxy_fetch` returns one,
/// no handler will run for the request and nothing of it stays stored; only a start whose
/// storage failed after its job went out may have reached the upstream.
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
///
/// Starts made while an earlier one of this Durable Object is being written wait for it, and
/// then share one ledger row and one executor call.
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
    let _starting;
    let id = match &options.request_id {
        Some(id) => {
            // Starting a request again while it is pending (or being started) starts nothing.
            _starting = match Held::take(&STARTING, origin, id) {
                Some(claim) => claim,
                None => return Ok(id.clone()),
            };
            if find(origin, id).await.map_err(storage_error)?.is_some() {
                return Ok(id.clone());
            }
            Some(id.clone())
        }
        None => None,
    };
    let data = serde_json::to_value(&continuation.data).map_err(storage_error)?;
    // Refused here, not when its row is written with others' records (or when its handler
    // would be called): e.g. an integer beyond 2^53, which a JS number cannot hold.
    crate::rpc::to_js_value(&data)
        .map_err(|e| storage_error(format!("the continuation data cannot be stored: {e}")))?;

    let now = now_ms();
    let record = PendingRecord {
        handler: continuation.handler.to_owned(),
        data,
        created_ms: now,
        due_ms: now + due_after(options),
        dispatches: 1,
        handler_runs: 0,
        job: FetchJob {
            // Given in the writer's round, with the orchestrator shard that follows from it.
            id: RequestId::new(),
            token: random_hex(16)?,
            request,
            origin: OriginRef {
                binding: origin_binding,
                id: origin.state().id().to_string(),
            },
            queue: None,
            options: options.clone(),
        },
    };
    let bytes = record.bytes();
    let (reply, answer) = batch::reply();
    let start = Start {
        id,
        record,
        bytes,
        reply,
    };
    write(origin, Op::Start(Box::new(start)), answer)
        .await
        .unwrap_or_else(|| Err(storage_error("the ledger's writer stopped")))
}

/// The record of request `id`, if it is pending here.
async fn find<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
) -> Result<Option<PendingRecord>, worker::Error> {
    ledger::read(origin.state(), &row_key(id), |row| row.get(id).cloned()).await
}

/// Queues `op` for the origin's ledger writer (see [`super::ledger`]) and returns its answer.
async fn write<O: ProxyFetchOrigin, R>(origin: &O, op: Op, answer: Answer<R>) -> Option<R> {
    let object = ledger::instance(origin.state());
    ledger::submit(&object, op, answer, |ops| round(origin, ops)).await
}

/// Changes (`Some`) or deletes (`None`) the record of request `id`.
async fn change<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    record: Option<PendingRecord>,
) -> Result<(), String> {
    let (reply, answer) = batch::reply();
    let change = Change {
        id: id.to_owned(),
        record,
        reply,
    };
    write(origin, Op::Change(Box::new(change)), answer)
        .await
        .unwrap_or_else(|| Err("the ledger's writer stopped".into()))
}

/// One round of the ledger's writer: the changes, then the starts, each row written once.
async fn round<O: ProxyFetchOrigin>(origin: &O, ops: Vec<Op>) {
    let mut starts = Vec::new();
    let mut changes: Vec<(String, Vec<Change>)> = Vec::new();
    for op in ops {
        match op {
            Op::Start(start) => starts.push(*start),
            Op::Change(change) => add_to_group(&mut changes, row_key(&change.id), *change),
        }
    }
    let changes = changes.into_iter().map(|(key, changes)| async move {
        let edits = changes
            .iter()
            .map(|c| (c.id.as_str(), c.record.as_ref()))
            .collect::<Vec<_>>();
        let done = edit_row(origin, &key, &edits).await;
        for change in changes {
            change.reply.send(done.clone());
        }
    });
    let changed = concurrent::all(changes, usize::MAX);
    join(changed, start_all(origin, starts)).await;
}

/// Adds `item` to the group of `key` in `groups`, which stay sorted by key. (A map would do,
/// but these groups are few and small, and each map type is more code in the Wasm.)
fn add_to_group<K: Ord, T>(groups: &mut Vec<(K, Vec<T>)>, key: K, item: T) {
    match groups.binary_search_by(|(k, _)| k.cmp(&key)) {
        Ok(i) => {
            if let Some((_, items)) = groups.get_mut(i) {
                items.push(item);
            }
        }
        Err(i) => groups.insert(i, (key, vec![item])),
    }
}

/// A change to the record of a request: `Some` replaces it, `None` deletes it.
type Edit<'a> = (&'a str, Option<&'a PendingRecord>);

/// Applies `edits` to row `key`: `Some` replaces a record still there, `None` deletes it.
async fn edit_row<O: ProxyFetchOrigin>(
    origin: &O,
    key: &str,
    edits: &[Edit<'_>],
) -> Result<(), String> {
    ledger::edit(origin.state(), key, |row| {
        let mut changed = false;
        for (id, record) in edits {
            changed |= match record {
                None => row.remove(id).is_some(),
                Some(record) => row
                    .get_mut(id)
                    .map(|slot| *slot = (*record).clone())
                    .is_some(),
            };
        }
        changed
    })
    .await
}

/// Stores new requests, their rows written side by side, and sends their jobs out, the
/// executor's in calls of up to [`MAX_JOBS_PER_CALL`]; then answers each start.
async fn start_all<O: ProxyFetchOrigin>(origin: &O, starts: Vec<Start>) {
    if starts.is_empty() {
        return;
    }
    let rows = ledger::into_rows(starts, || random_hex(16));
    let mut stored: Vec<(String, Row)> = Vec::new();
    let mut jobs: Vec<FetchJob> = Vec::new();
    let mut replies = Vec::new();
    let mut due = f64::INFINITY;
    for (key, members) in rows {
        let mut row = Row::new();
        for (id, start) in members {
            let Start {
                mut record, reply, ..
            } = start;
            name_job(&mut record.job, &id);
            due = due.min(record.due_ms);
            // The direct flow never sends a request twice that may not be resent: its record
            // need not keep the body, which goes with the job uncopied. (The orchestrated flow
            // may queue it again, which the orchestrator ignores unless it lost it unsent.)
            let keep_body = record.job.queue.is_some() || record.job.may_resend();
            let body = if keep_body {
                record.job.request.body.clone()
            } else {
                record.job.request.body.take()
            };
            let mut job = record.job.clone();
            job.request.body = body;
            row.insert(id.clone(), record);
            jobs.push(job);
            replies.push((id, stored.len(), reply));
        }
        stored.push((key, row));
    }
    // Send the jobs while the rows are written: a write holds back every message sent after
    // it until it is on disk (the output gate), and the executor need not wait for that. The
    // rows are in storage before any result can arrive: their writes are issued first, in
    // this same turn, before the Durable Object takes another event.
    let written = async {
        let puts = concurrent::all(
            stored
                .iter()
                .map(|(key, row)| ledger::insert(origin.state(), key, row.clone())),
            usize::MAX,
        )
        .await;
        let armed = arm(origin, due).await;
        (puts, armed)
    };
    let env = origin.env();
    let (calls, call_of) = batches(jobs);
    let sent = calls.into_iter().map(|jobs| dispatch_all(env, jobs));
    let sent = concurrent::all(sent, usize::MAX);
    let ((puts, armed), sent) = join(written, sent).await;
    // How each start went (in the order of `replies`, as `call_of` is). A failed one is
    // forgotten: its record goes, so a result that comes anyway is dropped.
    let outcomes: Vec<Result<(), ProxyFetchError>> = replies
        .iter()
        .zip(&call_of)
        .map(|((_, row, _), &call)| {
            match sent.get(call) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e.clone()),
                None => return Err(storage_error("the job was not sent")),
            }
            match (puts.get(*row), &armed) {
                (Some(Ok(())), Ok(())) => Ok(()),
                (Some(Err(e)), _) => Err(storage_error(e)),
                (Some(Ok(())), Err(e)) => Err(storage_error(e)),
                (None, _) => Err(storage_error("the row was not written")),
            }
        })
        .collect();
    let mut forgotten: Vec<(&str, Vec<Edit>)> = Vec::new();
    for ((id, row, _), outcome) in replies.iter().zip(&outcomes) {
        let written = matches!(puts.get(*row), Some(Ok(())));
        if outcome.is_err() && written {
            if let Some((key, _)) = stored.get(*row) {
                add_to_group(&mut forgotten, key.as_str(), (id.as_str(), None));
            }
        }
    }
    for (key, edits) in forgotten {
        let _ = edit_row(origin, key, &edits).await;
    }
    for (((id, row, reply), outcome), &call) in replies.into_iter().zip(outcomes).zip(&call_of) {
        let answer = match outcome {
            Ok(()) => Ok(id),
            Err(e) => {
                if matches!(sent.get(call), Some(Ok(()))) {
                    // Queued, but its start failed: the orchestrator need not watch it.
                    forget_queued(env, &id, stored.get(row).and_then(|(_, r)| r.get(&id))).await;
                }
                Err(e)
            }
        };
        reply.send(answer);
    }
}

/// Gives a new job its id, and in the orchestrated flow the orchestrator shard that tracks it.
fn name_job(job: &mut FetchJob, id: &str) {
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
fn batches(jobs: Vec<FetchJob>) -> (Vec<Vec<FetchJob>>, Vec<usize>) {
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
async fn forget_queued(env: &Env, id: &str, record: Option<&PendingRecord>) {
    let Some(queue) = record.and_then(|r| r.job.queue.as_ref()) else {
        return;
    };
    if let Ok(orchestrator) = OrchestratorClient::from_name(env, &queue.binding, &queue.shard) {
        let _ = orchestrator.forget(id.to_owned()).await;
    }
}

/// How long after a (re)dispatch the origin's sweep looks at a request that has no result.
fn due_after(options: &ProxyFetchOptions) -> f64 {
    let backstop = options.backstop_after_ms() as f64;
    match options.flow {
        Flow::Direct => backstop,
        Flow::Orchestrated => backstop * ORCHESTRATED_DUE_FACTOR,
    }
}

/// Hands jobs to the executor (direct flow: one call, all with the same executor binding) or
/// a job to the orchestrator: `Ok` once acknowledged.
async fn dispatch_all(env: &Env, jobs: Vec<FetchJob>) -> Result<(), ProxyFetchError> {
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

thread_local! {
    /// Requests being delivered right now, by instance and id: a second delivery racing the
    /// first one sees the claim before either touches storage.
    static CLAIMED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Caller-chosen ids being started right now, by instance and id.
    static STARTING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// An id held in one of the sets above while its holder works on it.
struct Held(
    &'static std::thread::LocalKey<RefCell<HashSet<String>>>,
    String,
);

impl Held {
    /// Holds request `id` of this instance of `origin` (ids are per object: two objects may
    /// use the same caller id; a claim of a reset instance does not hold its successor's).
    fn take<O: ProxyFetchOrigin>(
        set: &'static std::thread::LocalKey<RefCell<HashSet<String>>>,
        origin: &O,
        id: &str,
    ) -> Option<Held> {
        let key = format!("{}\n{id}", ledger::instance(origin.state()));
        set.with(|s| s.borrow_mut().insert(key.clone()))
            .then(|| Held(set, key))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.with(|s| s.borrow_mut().remove(&self.1));
    }
}

/// Makes sure the origin's alarm fires no later than `at`.
async fn arm<O: ProxyFetchOrigin>(origin: &O, at: f64) -> worker::Result<()> {
    let object = ledger::instance(origin.state());
    let cached = ledger::alarm(&object);
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
    ledger::set_alarm(&object, Some(at));
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

/// A delivery as the origin checks it before any handler runs.
#[derive(Deserialize)]
struct DeliveryShape {
    result: Result<ResponseShape, FetchError>,
    token: String,
}

/// Checks the deliveries of a `__proxyFetchDeliver` call (each result but its body decoded,
/// the body only for being bytes); returns each one's request id, token and result as it came.
pub(crate) fn checked_deliveries(
    args: &crate::rpc::Args,
) -> Result<Vec<(RequestId, String, JsValue)>, RpcError> {
    let refuse = |message: String| {
        RpcError::new(
            crate::rpc::RpcErrorKind::BadArgument,
            "__proxyFetchDeliver",
            format!("argument `deliveries`: {message}"),
        )
    };
    // Counted before anything is decoded.
    let raw = args.raw(0);
    let raw: Array = match raw.dyn_into::<Array>() {
        Ok(raw) if raw.length() as usize > MAX_DELIVERIES_PER_CALL => {
            return Err(refuse(format!(
                "{} results in one call; at most {MAX_DELIVERIES_PER_CALL}",
                raw.length()
            )))
        }
        Ok(raw) => raw,
        Err(_) => Array::new(),
    };
    let shapes: Vec<DeliveryShape> = args.get(0, "deliveries")?;
    let field = |value: &JsValue, name: &str| {
        js_sys::Reflect::get(value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
    };
    let mut checked = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.into_iter().enumerate() {
        let result = field(&raw.get(i as u32), "result");
        let id = match shape.result {
            Err(e) => e.request_id,
            Ok(response) => {
                let body = field(&field(&result, "Ok"), "body");
                if !body.is_instance_of::<js_sys::Uint8Array>() {
                    return Err(refuse(format!(
                        "field `[{i}].result.Ok.body`: expected a Uint8Array"
                    )));
                }
                response.request_id
            }
        };
        checked.push((id, shape.token, result));
    }
    Ok(checked)
}

/// Hands each checked delivery to [`deliver`], side by side: one outcome per delivery.
pub(crate) async fn deliver_all<O: ProxyFetchOrigin>(
    origin: &O,
    ctx: JsValue,
    deliveries: Vec<(RequestId, String, JsValue)>,
) -> Result<Vec<Result<DeliveryOutcome, HandlerError>>, HandlerError> {
    let each = deliveries.into_iter().map(|(id, token, result)| {
        let ctx = ctx.clone();
        async move { deliver(origin, ctx, &id, Some(&token), result, false).await }
    });
    Ok(concurrent::all(each, usize::MAX).await)
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
    let Some(_claim) = Held::take(&CLAIMED, origin, id) else {
        return Ok(DeliveryOutcome::Duplicate);
    };
    let retry = |e: String| HandlerError::new(RETRY, format!("origin storage: {e}"));
    let found = find(origin, id).await.map_err(|e| retry(e.to_string()))?;
    let Some(mut record) = found else {
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
        change(origin, id, None).await.map_err(retry)?;
        return Ok(DeliveryOutcome::Delivered);
    }
    if count_run {
        // Deliveries the origin makes itself (its alarm) count their runs, so a handler that
        // crashes its instance every time is not run forever.
        record.handler_runs += 1;
        change(origin, id, Some(record.clone()))
            .await
            .map_err(retry)?;
    }
    run_handler(origin, ctx, id, &record, result).await;
    if let Err(e) = change(origin, id, None).await {
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

/// One page of the ledger's rows from key `after` on: each row's key and its records.
async fn ledger_page<O: ProxyFetchOrigin>(
    origin: &O,
    after: Option<&str>,
) -> Result<Vec<(String, Option<Row>)>, ProxyFetchError> {
    let mut options = worker::ListOptions::new()
        .prefix(LEDGER)
        .limit(PAGE as usize);
    let start;
    if let Some(after) = after {
        // `start` is inclusive: begin just past `after`.
        start = format!("{after}\u{0}");
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
            let key = pair.get(0).as_string()?;
            Some((key, serde_wasm_bindgen::from_value(pair.get(1)).ok()))
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
    let Some(record) = find(origin, request_id).await.map_err(storage_error)? else {
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
    let mut after: Option<String> = None;
    loop {
        let page = ledger_page(origin, after.as_deref()).await?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|(key, _)| key.clone());
        for (key, row) in page {
            match row {
                Some(row) => ids.extend(row.into_keys()),
                None => log_error(&format!(
                    "proxy-fetch: unreadable ledger row {key} left alone"
                )),
            }
        }
        if !full {
            return Ok(ids);
        }
    }
}

/// The origin's alarm: requests past their due time are dispatched again (direct flow,
/// idempotent, within their max age) or get a final `Backstop` error; then, for an origin
/// with an alarm of its own, that alarm runs.
pub async fn alarm<O: ProxyFetchOrigin>(origin: &O) -> worker::Result<()> {
    let object = ledger::instance(origin.state());
    ledger::set_alarm(&object, None);
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
        after = page.last().map(|(key, _)| key.clone());
        for (key, row) in page {
            let Some(row) = row else {
                log_error(&format!(
                    "proxy-fetch: unreadable ledger row {key} left alone"
                ));
                continue;
            };
            for (id, record) in row {
                if record.due_ms > now {
                    later(record.due_ms);
                    continue;
                }
                if let Some(due) = overdue(origin, &id, record, now).await {
                    later(due);
                }
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
        let job = record.job.clone();
        if let Err(e) = change(origin, id, Some(record)).await {
            log_error(&format!("proxy-fetch {id}: not dispatched again: {e}"));
            return Some(now + SWEEP_RETRY_MS);
        }
        return match dispatch_all(origin.env(), vec![job]).await {
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
