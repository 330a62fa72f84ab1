//! FetchOrchestrator: the durable queue of the orchestrated flow. It stores each request,
//! hands it to the executor, and keeps an alarm as the backstop: a request whose result has
//! not come back by its due time is dispatched again (idempotent, within its max age) or gets
//! a `Backstop` error at its origin, so no handler waits forever and no entry stays behind.

// workers-rs's `#[durable_object]` adds the class's wasm-bindgen glue (`new`, `fetch`, `alarm`,
// `websocket_*`, `connect`) as public methods without docs, in an impl no attribute here can
// reach; `missing_docs` is therefore off for this file only. Everything written in it is
// documented all the same: without the attribute below, only that glue is reported.
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};
use std::cell::Cell;
use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::concurrent;
use super::fetch::{verdicts, Verdict};
use super::protocol::{
    into_calls, Delivery, ExecutorClient, FetchJob, OriginClient, Ticket, BAD_JOB, BUSY, FORBIDDEN,
    MAX_JOBS_PER_CALL, MAX_JOBS_PER_ENQUEUE, MISSING_BINDING,
};
use super::refusal;
use super::storage::{self, Pages};
use super::{now_ms, FetchError, FetchErrorKind, FetchResult, RequestId};
use crate::entrypoint;
use crate::rpc::{log_error, CallError, HandlerError};

const QUEUE: &str = "q:";
/// A request body over [`INLINE_BODY`] bytes is stored under this prefix, not in its entry,
/// so that listing the queue (`stats`, the backstop) never loads it.
const BODY: &str = "qb:";
/// A result the executor could not deliver is kept under this prefix, not in its entry.
const HELD: &str = "qr:";
/// Request bodies up to this size stay in their entry.
const INLINE_BODY: usize = 16 * 1024;
/// Origins the backstop tells at once: one slow or unreachable origin holds one of these, not
/// the round.
const TELL_AT_ONCE: usize = 8;
/// How long the backstop waits for an origin to answer a delivery before it tries again later.
const TELL_WITHIN_MS: u64 = 10_000;
/// `stats` lists at most this many entries (it counts them all).
const STATS_ITEMS: usize = 100;
/// First wait before a failed backstop delivery is tried again; it doubles up to the cap.
const RETRY_BASE_MS: f64 = 1_000.0;
const RETRY_CAP_MS: f64 = 60_000.0;

/// The Durable Object queue of the orchestrated flow
/// ([`Flow::Orchestrated`](super::Flow::Orchestrated)): it stores each request, hands it to the
/// executor, and from its alarm dispatches a late request again or delivers its
/// [`Backstop`](FetchErrorKind::Backstop) error. A worker serves the class with
/// [`serve_system!`](crate::serve_system); origins find it by the `orchestrator_binding`
/// option (default `FETCH_ORCHESTRATOR`). A `GET` answers its [`QueueStats`] as JSON.
#[durable_object]
pub struct FetchOrchestrator {
    state: State,
    env: Env,
    /// The alarm time this instance last set (ms), so most enqueues need not read it.
    alarm_at: Cell<Option<f64>>,
}

// Built with `panic = "unwind"` (docs/panics.md), wasm-bindgen requires every exported class to
// be `RefUnwindSafe`. The orchestrator's only interior mutability is `alarm_at`, a
// `Cell<Option<f64>>` caching the alarm it last set: a caught panic cannot leave it half-written.
#[cfg(all(target_arch = "wasm32", panic = "unwind"))]
impl std::panic::RefUnwindSafe for FetchOrchestrator {}

/// One request the orchestrator is waiting on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct QueueEntry {
    job: FetchJob,
    enqueued_ms: f64,
    due_ms: f64,
    dispatches: u32,
    /// Backstop deliveries that failed to reach the origin.
    delivery_tries: u32,
    /// A result kept in the entry (entries written before results were kept apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<FetchResult>,
    /// The job's body is stored under [`BODY`], not in `job`.
    #[serde(default)]
    body_apart: bool,
    /// A result the executor could not deliver is kept under [`HELD`], to be delivered from here.
    #[serde(default)]
    held: bool,
}

impl QueueEntry {
    /// A new entry for `job`, and the body to store apart from it, if it is kept apart.
    fn new(
        mut job: FetchJob,
        now: f64,
        dispatches: u32,
    ) -> (QueueEntry, Option<serde_bytes::ByteBuf>) {
        let apart = job
            .request
            .body
            .as_ref()
            .is_some_and(|b| b.len() > INLINE_BODY);
        let body = if apart { job.request.body.take() } else { None };
        let entry = QueueEntry {
            enqueued_ms: now,
            due_ms: now + job.options.backstop_after_ms() as f64,
            dispatches,
            delivery_tries: 0,
            result: None,
            body_apart: apart,
            held: false,
            job,
        };
        (entry, body)
    }

    /// Whether a result is kept for it.
    fn has_result(&self) -> bool {
        self.held || self.result.is_some()
    }
}

/// Every key a request's entry uses.
fn keys(id: &str) -> [String; 3] {
    [key(id), format!("{BODY}{id}"), format!("{HELD}{id}")]
}

/// Why a job was not handed to its executor.
enum NotSent {
    /// The executor's isolate holds its byte budget: nothing was fetched; send it later.
    Busy(String),
    /// The executor's worker lacks a binding the job names: it never will be fetched there.
    MissingBinding(String),
    /// The executor was not reached, or refused the call.
    Failed(String),
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotSent::Busy(m) | NotSent::MissingBinding(m) | NotSent::Failed(m) => f.write_str(m),
        }
    }
}

/// One queued request as `stats` shows it.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    /// The request's id.
    pub id: RequestId,
    /// The request's HTTP method.
    pub method: String,
    /// Without its query string unless `stats_with_queries` was asked (queries may hold keys).
    pub url: String,
    /// The Durable Object binding of the origin the result goes back to.
    pub origin_binding: String,
    /// The origin instance's id, in hex.
    pub origin_id: String,
    /// When the request was queued (ms since the epoch).
    pub enqueued_ms: f64,
    /// When the backstop next acts on it, unless the request is done first (ms since the
    /// epoch).
    pub due_ms: f64,
    /// Times it was handed to an executor, the first included (at most
    /// [`MAX_DISPATCHES`](super::protocol::MAX_DISPATCHES)).
    pub dispatches: u32,
    /// Backstop deliveries that failed to reach the origin (tried again with backoff, 1 s
    /// doubling up to 60 s).
    pub delivery_tries: u32,
}

/// What `stats` reports.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Requests in the queue: `in_flight` plus `overdue`.
    pub pending: u32,
    /// Age of the oldest pending request (ms), 0 when none.
    pub oldest_age_ms: f64,
    /// Requests waiting for their result (no backstop delivery has failed for them).
    pub in_flight: u32,
    /// Requests past their due time whose backstop could not reach the origin yet.
    pub overdue: u32,
    /// The oldest entries, at most 100.
    pub items: Vec<QueueItem>,
    /// Calls refused in this isolate since it started (a wrong token, another origin's
    /// request, a malformed job); each is also logged.
    pub refused: u32,
}

impl DurableObject for FetchOrchestrator {
    fn new(state: State, env: Env) -> Self {
        FetchOrchestrator {
            state,
            env,
            alarm_at: Cell::new(None),
        }
    }

    /// `GET` on the orchestrator answers its stats as JSON (queries redacted).
    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        let stats = self
            .stats()
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        Response::from_json(&stats)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm_at.set(None);
        let next = self.backstop().await?;
        if let Some(at) = next {
            self.arm(at).await?;
        }
        Response::ok("")
    }
}

/// [`keys`] as a `Vec`.
fn keys_of(id: &str) -> Vec<String> {
    keys(id).into()
}

fn key(id: &str) -> String {
    format!("{QUEUE}{id}")
}

fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

impl FetchOrchestrator {
    /// Calls `f` on every entry, a page at a time.
    async fn each(&self, mut f: impl FnMut(QueueEntry)) -> worker::Result<()> {
        let storage = self.state.storage();
        let mut pages = Pages::new(QUEUE);
        while let Some(page) = pages.next(&storage).await? {
            for (_, value) in page {
                match serde_wasm_bindgen::from_value::<QueueEntry>(value) {
                    Ok(e) => f(e),
                    Err(e) => log_error(&format!("proxy-fetch: unreadable queue entry: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Makes sure the alarm fires no later than `at`.
    async fn arm(&self, at: f64) -> worker::Result<()> {
        let set = storage::arm(&self.state.storage(), self.alarm_at.get(), at).await?;
        self.alarm_at.set(Some(set));
        Ok(())
    }

    /// Hands `jobs` to their executors, in calls of up to [`MAX_JOBS_PER_CALL`] per executor
    /// binding; `Ok` once every call was acknowledged.
    async fn send(&self, jobs: Vec<FetchJob>) -> Result<(), NotSent> {
        let (calls, _) = into_calls(jobs, |job| {
            Some((job.options.executor_binding.clone(), MAX_JOBS_PER_CALL))
        });
        let sends = calls.into_iter().map(|jobs| async move {
            let binding = jobs
                .first()
                .map(|j| j.options.executor_binding.clone())
                .unwrap_or_default();
            let executor = ExecutorClient::from_env(&self.env, &binding)
                .map_err(|e| NotSent::Failed(e.to_string()))?;
            executor.execute_fetches(jobs).await.map_err(|e| match e {
                CallError::Handler(h) if h.kind == BUSY => NotSent::Busy(h.message),
                CallError::Handler(h) if h.kind == MISSING_BINDING => {
                    NotSent::MissingBinding(h.message)
                }
                e => NotSent::Failed(format!("executor `{binding}` not reached: {e}")),
            })
        });
        concurrent::all(sends, usize::MAX)
            .await
            .into_iter()
            .collect()
    }

    /// Delivers `result` to the entry's origin: `true` when the origin has its result now (or
    /// had one already, or refused it for good), `false` when it could not be reached.
    async fn tell_origin(&self, job: &FetchJob, result: FetchResult) -> bool {
        let kind = match &result {
            Ok(_) => "its result".to_owned(),
            Err(e) => format!("{:?}", e.kind),
        };
        let origin = match OriginClient::from_id(&self.env, &job.origin.binding, &job.origin.id) {
            Ok(origin) => origin,
            Err(e) => {
                log_error(&format!("proxy-fetch {}: origin unreachable: {e}", job.id));
                return false;
            }
        };
        // Every delivery from here follows one that did not get through.
        let delivery = Delivery {
            result,
            token: job.token.clone(),
            again: true,
            lost_on_crash: false,
        };
        let Some(answer) = concurrent::within(origin.deliver(vec![delivery]), TELL_WITHIN_MS).await
        else {
            log_error(&format!(
                "proxy-fetch {}: the origin did not answer the delivery of {kind} within {TELL_WITHIN_MS} ms",
                job.id
            ));
            return false;
        };
        match verdicts(&[job.id.as_str()], answer).pop() {
            Some(Verdict::Done | Verdict::Forbidden) => true,
            Some(Verdict::Again { why, .. }) => {
                log_error(&format!(
                    "proxy-fetch {}: could not deliver {kind} to the origin: {why}",
                    job.id
                ));
                false
            }
            None => false,
        }
    }

    /// Acts on every overdue entry; returns the next due time, if any entry is left.
    async fn backstop(&self) -> worker::Result<Option<f64>> {
        let now = now_ms();
        let mut overdue = Vec::new();
        let mut next: Option<f64> = None;
        self.each(|entry| {
            if entry.due_ms > now {
                next = Some(next.map_or(entry.due_ms, |n: f64| n.min(entry.due_ms)));
            } else {
                overdue.push(entry);
            }
        })
        .await?;
        // Up to TELL_AT_ONCE entries are acted on side by side: an origin that is slow to
        // answer (or never does) holds one of them, not the round.
        let steps = overdue.into_iter().map(|entry| async move {
            let id = entry.job.id.clone();
            // One entry's failure (its storage write) does not end the round: the others are
            // still acted on, and the alarm is still set for the next.
            match self.overdue(entry, now).await {
                Ok(due) => due,
                Err(e) => {
                    log_error(&format!(
                        "proxy-fetch {id}: backstop failed, tried again: {e}"
                    ));
                    Some(now + RETRY_BASE_MS)
                }
            }
        });
        for due in concurrent::all(steps, TELL_AT_ONCE)
            .await
            .into_iter()
            .flatten()
        {
            next = Some(next.map_or(due, |n: f64| n.min(due)));
        }
        Ok(next)
    }

    /// Acts on one overdue entry; returns when to look at it again, if it stays.
    async fn overdue(&self, mut entry: QueueEntry, now: f64) -> worker::Result<Option<f64>> {
        let storage = self.state.storage();
        let id = entry.job.id.clone();
        let options = &entry.job.options;
        let age = now - entry.enqueued_ms;
        let budget = options.backstop_after_ms() as f64;
        let max_age = options.max_age_ms as f64;
        let mut missing = None;
        if !entry.has_result()
            && entry.delivery_tries == 0
            && entry.job.dispatch_again(entry.dispatches, age, budget)
        {
            // Its executor was lost (or was busy): send it again, with the same id and token.
            // The entry is stored first, so a completion racing the send finds it.
            let mut job = entry.job.clone();
            if entry.body_apart {
                // The one place a body kept apart is read: the job goes out again with it.
                match storage
                    .get::<serde_bytes::ByteBuf>(&format!("{BODY}{id}"))
                    .await?
                {
                    Some(body) => job.request.body = Some(body),
                    None => missing = Some("its request body is missing from storage"),
                }
            }
            if missing.is_none() {
                entry.dispatches += 1;
                entry.due_ms = now + budget;
                storage.put(&key(&id), &entry).await?;
                if let Err(e) = self.send(vec![job]).await {
                    // Only a dispatch the executor acknowledged counts.
                    entry.dispatches -= 1;
                    entry.due_ms = now + RETRY_BASE_MS;
                    match e {
                        NotSent::Busy(why) => log_error(&format!(
                            "proxy-fetch {id}: executor busy, sent later: {why}"
                        )),
                        e => log_error(&format!("proxy-fetch {id}: dispatch again failed: {e}")),
                    }
                    storage.put(&key(&id), &entry).await?;
                }
                return Ok(Some(entry.due_ms));
            }
        }
        // A result the executor handed over, else the backstop's error.
        let held = if entry.held {
            let kept = storage.get::<FetchResult>(&format!("{HELD}{id}")).await?;
            if kept.is_none() {
                missing = Some("the result kept for it is missing from storage");
            }
            kept
        } else {
            entry.result.clone()
        };
        let result = held.unwrap_or_else(|| {
            let mut message = entry.job.backstop_message(age, "it was queued");
            if let Some(why) = missing {
                log_error(&format!(
                    "proxy-fetch {id}: {why}; its handler gets Backstop"
                ));
                message = format!("{message}; {why}");
            }
            Err(FetchError::new(&id, FetchErrorKind::Backstop, message))
        });
        if self.tell_origin(&entry.job, result).await {
            storage.delete_multiple(keys_of(&id)).await?;
            return Ok(None);
        }
        if age >= max_age + RETRY_CAP_MS {
            // The origin's own sweep delivers the final error when it can.
            log_error(&format!(
                "proxy-fetch {id}: origin unreachable past the max age; left to the origin's sweep"
            ));
            storage.delete_multiple(keys_of(&id)).await?;
            return Ok(None);
        }
        let wait =
            (RETRY_BASE_MS * 2f64.powi(entry.delivery_tries.min(16) as i32)).min(RETRY_CAP_MS);
        entry.delivery_tries += 1;
        entry.due_ms = now + wait;
        storage.put(&key(&id), &entry).await?;
        Ok(Some(entry.due_ms))
    }

    async fn collect_stats(&self, queries: bool) -> worker::Result<QueueStats> {
        let now = now_ms();
        let mut stats = QueueStats {
            pending: 0,
            oldest_age_ms: 0.0,
            in_flight: 0,
            overdue: 0,
            items: Vec::new(),
            refused: refusal::count(),
        };
        self.each(|e| {
            stats.pending += 1;
            if e.delivery_tries > 0 {
                stats.overdue += 1;
            } else {
                stats.in_flight += 1;
            }
            stats.oldest_age_ms = stats.oldest_age_ms.max(now - e.enqueued_ms);
            stats.items.push(QueueItem {
                id: e.job.id,
                method: e.job.request.method,
                url: if queries {
                    e.job.request.url
                } else {
                    redact(&e.job.request.url)
                },
                origin_binding: e.job.origin.binding,
                origin_id: e.job.origin.id,
                enqueued_ms: e.enqueued_ms,
                due_ms: e.due_ms,
                dispatches: e.dispatches,
                delivery_tries: e.delivery_tries,
            });
            if stats.items.len() > STATS_ITEMS {
                // Keep the oldest.
                stats
                    .items
                    .sort_by(|a, b| a.enqueued_ms.total_cmp(&b.enqueued_ms));
                stats.items.truncate(STATS_ITEMS);
            }
        })
        .await?;
        Ok(stats)
    }
}

/// Refuses a call on a request: logged (within the rate) and counted, answered with `kind`.
fn refuse(kind: &str, method: &str, id: &str, why: &str) -> HandlerError {
    refusal::refused(
        &format!("FetchOrchestrator.{method}"),
        &format!("request {id}"),
        why,
    );
    HandlerError::new(kind, format!("request {id}: {why}"))
}

/// Refuses a call on a request: logged (within the rate) and counted, answered `forbidden`.
fn forbidden(method: &str, id: &str, why: &str) -> HandlerError {
    refuse(FORBIDDEN, method, id, why)
}

impl FetchOrchestrator {
    /// The entry `ticket` names, if it proves the right to act on it: `Ok(None)` when there is
    /// no such entry (settled already; nothing to do), a `forbidden` error when the token is
    /// not the request's.
    async fn entry(
        &self,
        method: &str,
        ticket: &Ticket,
    ) -> Result<Option<QueueEntry>, HandlerError> {
        let Some(entry) = self
            .state
            .storage()
            .get::<QueueEntry>(&key(&ticket.id))
            .await?
        else {
            return Ok(None);
        };
        if !ticket.admits(&entry.job) {
            return Err(forbidden(
                method,
                &ticket.id,
                "the ticket does not carry the request's token",
            ));
        }
        Ok(Some(entry))
    }

    /// Checks a job as the origin's start checked it: a job the start would refuse is refused.
    fn checked(method: &str, mut job: FetchJob) -> Result<FetchJob, HandlerError> {
        match job.check() {
            Ok(_) => Ok(job),
            Err(why) => Err(refuse(BAD_JOB, method, &job.id, &why)),
        }
    }
}

#[entrypoint(durable_object)]
impl FetchOrchestrator {
    /// Stores `jobs`, then hands them to the executor. Answered once both happened: the
    /// origin knows the requests are durably queued, or gets the error (and none is queued). A
    /// job already queued is left as it is (an origin whose start was cut short asks again).
    pub async fn enqueue(&self, jobs: Vec<FetchJob>) -> Result<(), HandlerError> {
        if jobs.len() > MAX_JOBS_PER_ENQUEUE {
            let why = format!(
                "{} jobs in one call; at most {MAX_JOBS_PER_ENQUEUE}",
                jobs.len()
            );
            refusal::refused("FetchOrchestrator.enqueue", "a call", &why);
            return Err(HandlerError::new(BAD_JOB, why));
        }
        let jobs = jobs
            .into_iter()
            .map(|job| Self::checked("enqueue", job))
            .collect::<Result<Vec<_>, _>>()?;
        let storage = self.state.storage();
        let now = now_ms();
        let mut fresh = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Some(known) = storage.get::<QueueEntry>(&key(&job.id)).await? {
                // The same request queued again (its origin's sweep): nothing to do. Another
                // origin's request under the same id: refused, as this queue knows requests
                // by id.
                if Ticket::of(&job).admits(&known.job) && known.job.origin == job.origin {
                    continue;
                }
                refusal::refused(
                    "FetchOrchestrator.enqueue",
                    &format!("request {}", job.id),
                    "already queued for another origin or with another token",
                );
                return Err(HandlerError::new(
                    "conflict",
                    format!(
                        "request id `{}` is already queued here for another origin: an id must \
                         be unique among the origins that share an orchestrator instance",
                        job.id
                    ),
                ));
            }
            fresh.push(job);
        }
        // Entries, and the bodies kept apart from them (the jobs keep theirs, to be sent now).
        let mut entries = Vec::with_capacity(fresh.len());
        let mut bodies = Vec::new();
        for job in &fresh {
            let (entry, body) = QueueEntry::new(job.clone(), now, 1);
            if let Some(body) = body {
                bodies.push((format!("{BODY}{}", job.id), body));
            }
            entries.push(entry);
        }
        let Some(due) = entries.iter().map(|e| e.due_ms).reduce(f64::min) else {
            return Ok(());
        };
        // The executor's call leaves only once these writes are on disk (the output gate), so
        // an executor never works on a request the queue could lose.
        let keys: Vec<String> = entries.iter().map(|e| key(&e.job.id)).collect();
        let puts = keys.iter().zip(&entries).map(|(k, e)| storage.put(k, e));
        let body_puts = bodies.iter().map(|(k, b)| storage.put(k, b));
        let (puts, body_puts) = futures_util::future::join(
            concurrent::all(puts, usize::MAX),
            concurrent::all(body_puts, usize::MAX),
        )
        .await;
        puts.into_iter()
            .chain(body_puts)
            .collect::<Result<(), _>>()?;
        self.arm(due).await?;
        match self.send(fresh).await {
            Ok(()) => Ok(()),
            Err(NotSent::Busy(why)) => {
                // Not fetched: kept, with no dispatch counted, and sent again by the backstop
                // soon (it may be sent whatever its method, as the upstream never saw it).
                log_error(&format!(
                    "proxy-fetch: executor busy, {} request(s) sent later: {why}",
                    entries.len()
                ));
                let retry = now + RETRY_BASE_MS;
                for mut entry in entries {
                    entry.dispatches = 0;
                    entry.due_ms = retry;
                    storage.put(&key(&entry.job.id), &entry).await?;
                }
                self.arm(retry).await?;
                Ok(())
            }
            Err(e) => {
                let all: Vec<String> = entries.iter().flat_map(|e| keys_of(&e.job.id)).collect();
                storage.delete_multiple(all).await?;
                Err(match e {
                    NotSent::MissingBinding(why) => HandlerError::new(MISSING_BINDING, why),
                    e => HandlerError::new("dispatch", e.to_string()),
                })
            }
        }
    }

    /// Whether a request is queued here: the origin's sweep asks with its ticket before it
    /// ships the job again. A ticket that is not its request's is refused.
    pub async fn holds(&self, ticket: Ticket) -> Result<bool, HandlerError> {
        Ok(self.entry("holds", &ticket).await?.is_some())
    }

    /// The origin's sweep asks after a request it has had no result for. `true`: queued here
    /// (now, if a crash cut its start short and it may be sent again); `false`: not here, and
    /// not sent again, because it may not be (the upstream may have seen it).
    pub async fn recover(&self, job: FetchJob) -> Result<bool, HandlerError> {
        let job = Self::checked("recover", job)?;
        if self.entry("recover", &Ticket::of(&job)).await?.is_some() {
            return Ok(true);
        }
        if !job.may_resend() {
            return Ok(false);
        }
        self.enqueue(vec![job]).await.map(|()| true)
    }

    /// The results reached their origins: the requests are done. A ticket that is not its
    /// request's is refused (the call answers `forbidden`), the others are still done.
    pub async fn complete(&self, tickets: Vec<Ticket>) -> Result<(), HandlerError> {
        let mut done = Vec::with_capacity(tickets.len());
        let mut refused = None;
        for ticket in &tickets {
            match self.entry("complete", ticket).await {
                Ok(Some(_)) => done.extend(keys(&ticket.id)),
                Ok(None) => {}
                Err(e) => refused = Some(e),
            }
        }
        if !done.is_empty() {
            self.state.storage().delete_multiple(done).await?;
        }
        refused.map_or(Ok(()), Err)
    }

    /// Stops watching a request (the origin cancelled it). Returns whether it was queued.
    pub async fn forget(&self, ticket: Ticket) -> Result<bool, HandlerError> {
        if self.entry("forget", &ticket).await?.is_none() {
            return Ok(false);
        }
        self.state
            .storage()
            .delete_multiple(keys_of(&ticket.id))
            .await?;
        Ok(true)
    }

    /// The executor could not deliver `result`: keep it and deliver it from the backstop, with
    /// backoff, until the request's max age.
    pub async fn undelivered(
        &self,
        ticket: Ticket,
        result: FetchResult,
    ) -> Result<(), HandlerError> {
        let result_id = match &result {
            Ok(response) => &response.request_id,
            Err(error) => &error.request_id,
        };
        if *result_id != ticket.id {
            return Err(forbidden(
                "undelivered",
                &ticket.id,
                "the result is another request's",
            ));
        }
        let Some(mut entry) = self.entry("undelivered", &ticket).await? else {
            return Ok(());
        };
        let now = now_ms();
        // Kept apart from the entry, so listing the queue never loads it.
        let storage = self.state.storage();
        storage
            .put(&format!("{HELD}{}", ticket.id), &result)
            .await?;
        entry.held = true;
        entry.result = None;
        entry.due_ms = now + RETRY_BASE_MS;
        storage.put(&key(&ticket.id), &entry).await?;
        self.arm(entry.due_ms).await?;
        Ok(())
    }

    /// Pending count, age of the oldest, counts per state, and the oldest entries, with the
    /// query strings of their URLs redacted.
    pub async fn stats(&self) -> Result<QueueStats, HandlerError> {
        Ok(self.collect_stats(false).await?)
    }

    /// `stats` with the URLs' query strings, for whoever holds the orchestrator's binding.
    pub async fn stats_with_queries(&self) -> Result<QueueStats, HandlerError> {
        Ok(self.collect_stats(true).await?)
    }
}
