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

use super::batch::{self, add_to_group, Batcher, Reply};
use super::concurrent;
use super::fetch::{verdicts, Verdict};
use super::protocol::{
    into_calls, row_name, Delivery, ExecutorClient, FetchJob, OriginClient, Ticket, BAD_JOB, BUSY,
    FORBIDDEN, MAX_JOBS_PER_CALL, MAX_JOBS_PER_ENQUEUE, MISSING_BINDING,
};
use super::refusal;
use super::storage::{self, Pages};
use super::{now_ms, wire, FetchError, FetchErrorKind, FetchResult, RequestId};
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
    /// Every change to the queue's rows goes through it: changes asked for while a round
    /// writes wait for the next, which writes each row they touch once.
    writer: Batcher<EditBatch>,
}

// Built with `panic = "unwind"` (docs/panics.md), wasm-bindgen requires every exported class to
// be `RefUnwindSafe`. The orchestrator's interior mutability is `alarm_at`, a
// `Cell<Option<f64>>` caching the alarm it last set, which a caught panic cannot leave
// half-written, and `writer`, whose round marks itself done when dropped, however it ended.
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

/// The keys an entry keeps apart from its row: its body and its held result, if it has them.
fn apart_keys(entry: &QueueEntry) -> Vec<String> {
    let id = &entry.job.id;
    let body = entry.body_apart.then(|| format!("{BODY}{id}"));
    let held = entry.held.then(|| format!("{HELD}{id}"));
    body.into_iter().chain(held).collect()
}

/// The row that holds request `id`'s entry: the requests one round of an origin started
/// together have ids `<random>~<n>` and share row `q:<random>~` (so a burst costs a row write
/// per round, not per request); a request with an id of the caller's has a row of its own.
fn row_key(id: &str) -> String {
    format!("{QUEUE}{}", row_name(id))
}

/// What an edit does to the entry it names.
enum Action {
    /// Leaves the row as it is.
    Keep,
    /// Stores this entry in place of the one there (or adds it).
    Put(Box<QueueEntry>),
    /// Removes the entry, and what it keeps apart.
    Remove,
}

/// The entry as an edit found it (`None`: not queued), or why the edit was refused.
type Found = Result<Option<QueueEntry>, HandlerError>;

/// Edits asked for together, applied in one round of the writer.
struct EditBatch {
    edits: Vec<RowEdit>,
    done: Reply<()>,
}

/// Decides what to do with an entry, from the entry as it is when the writer applies it.
type Decide = Box<dyn FnOnce(Option<&QueueEntry>) -> Result<Action, HandlerError>>;

/// A change to the entry of request `id`, decided from the entry as it is when the writer
/// applies it (never from a copy read before, which another change may have overtaken).
struct RowEdit {
    id: RequestId,
    edit: Decide,
    reply: Reply<Found>,
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
            writer: Batcher::new(),
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

fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

impl FetchOrchestrator {
    /// Calls `f` on every entry, a page of rows at a time.
    async fn each(&self, mut f: impl FnMut(QueueEntry)) -> worker::Result<()> {
        let storage = self.state.storage();
        let mut pages = Pages::new(QUEUE);
        while let Some(page) = pages.next(&storage).await? {
            for (key, value) in page {
                match serde_wasm_bindgen::from_value::<Vec<QueueEntry>>(value) {
                    Ok(row) => row.into_iter().for_each(&mut f),
                    Err(e) => log_error(&format!("proxy-fetch: unreadable queue row {key}: {e}")),
                }
            }
        }
        Ok(())
    }

    /// The entries of row `key` as stored.
    async fn read_row(&self, key: &str) -> worker::Result<Vec<QueueEntry>> {
        Ok(self.state.storage().get(key).await?.unwrap_or_default())
    }

    /// The entry of request `id` as stored, if it is queued.
    async fn read_entry(&self, id: &str) -> worker::Result<Option<QueueEntry>> {
        let row = self.read_row(&row_key(id)).await?;
        Ok(row.into_iter().find(|e| e.job.id == id))
    }

    /// Applies `edit` to the entry of request `id` in the writer's next round; returns the entry
    /// as it was found.
    async fn edit(
        &self,
        id: RequestId,
        edit: impl FnOnce(Option<&QueueEntry>) -> Result<Action, HandlerError> + 'static,
    ) -> Found {
        let mut found = self.edit_all(vec![(id, Box::new(edit) as Decide)]).await;
        found
            .pop()
            .unwrap_or_else(|| Err(HandlerError::new("storage", "the queue's writer stopped")))
    }

    /// Applies `edits` together, in one round of the writer (a row they share is written
    /// once); returns the entries as they were found, in order.
    async fn edit_all(&self, edits: Vec<(RequestId, Decide)>) -> Vec<Found> {
        let mut answers = Vec::with_capacity(edits.len());
        let mut queued = Vec::with_capacity(edits.len());
        for (id, edit) in edits {
            let (reply, answer) = batch::reply();
            queued.push(RowEdit { id, edit, reply });
            answers.push(answer);
        }
        let (done, round) = batch::reply();
        // The round answers each edit, and the batch once it ran.
        let batch = EditBatch {
            edits: queued,
            done,
        };
        self.writer
            .submit(batch, round, |batches| async move {
                let mut edits = Vec::new();
                let mut done = Vec::with_capacity(batches.len());
                for batch in batches {
                    edits.extend(batch.edits);
                    done.push(batch.done);
                }
                self.write_rows(edits).await;
                done.into_iter().for_each(|d| d.send(()));
            })
            .await;
        let mut found = Vec::with_capacity(answers.len());
        for answer in answers {
            found.push(answer.await.unwrap_or_else(|| {
                Err(HandlerError::new("storage", "the queue's writer stopped"))
            }));
        }
        found
    }

    /// Stores `entry` in place of `read`, the entry of its request as the caller read it, if
    /// that is still the one stored: `false` when another change overtook it (or the request is
    /// done), which the caller must not undo.
    async fn replace(&self, read: &QueueEntry, entry: QueueEntry) -> worker::Result<bool> {
        let found = self
            .edit(entry.job.id.clone(), replacing(read.clone(), entry))
            .await
            .map_err(to_worker)?;
        Ok(found.as_ref() == Some(read))
    }

    /// Removes the entries of `entries`' requests (a start that failed).
    async fn forget_all(&self, entries: &[QueueEntry]) {
        let removes = entries
            .iter()
            .map(|e| {
                (
                    e.job.id.clone(),
                    Box::new(|_: Option<&QueueEntry>| Ok(Action::Remove)) as Decide,
                )
            })
            .collect();
        for removed in self.edit_all(removes).await {
            if let Err(e) = removed {
                log_error(&format!(
                    "proxy-fetch: a failed enqueue's entry not removed: {e}"
                ));
            }
        }
    }

    /// Removes the entry of request `id` (and what it keeps apart); `None` if it was not queued.
    async fn remove(&self, id: &str) -> Found {
        self.edit(id.to_owned(), |_| Ok(Action::Remove)).await
    }

    /// One round of the writer: each row `edits` touch is read, edited and written once; what
    /// removed entries kept apart goes after.
    async fn write_rows(&self, edits: Vec<RowEdit>) {
        let mut rows: Vec<(String, Vec<RowEdit>)> = Vec::new();
        for edit in edits {
            add_to_group(&mut rows, row_key(&edit.id), edit);
        }
        let writes = rows
            .into_iter()
            .map(|(key, edits)| self.write_row(key, edits));
        concurrent::all(writes, usize::MAX).await;
    }

    async fn write_row(&self, key: String, edits: Vec<RowEdit>) {
        let mut row = match self.read_row(&key).await {
            Ok(row) => row,
            Err(e) => {
                let e = HandlerError::from(e);
                edits
                    .into_iter()
                    .for_each(|edit| edit.reply.send(Err(e.clone())));
                return;
            }
        };
        let mut changed = false;
        let mut apart = Vec::new();
        let mut answers = Vec::with_capacity(edits.len());
        for RowEdit { id, edit, reply } in edits {
            let at = row.iter().position(|e| e.job.id == id);
            let found = at.and_then(|i| row.get(i)).cloned();
            match edit(found.as_ref()) {
                Err(e) => answers.push((reply, Err(e))),
                Ok(action) => {
                    match (action, at) {
                        (Action::Keep, _) | (Action::Remove, None) => {}
                        (Action::Put(entry), Some(i)) => {
                            if let Some(slot) = row.get_mut(i) {
                                *slot = *entry;
                            }
                            changed = true;
                        }
                        (Action::Put(entry), None) => {
                            row.push(*entry);
                            changed = true;
                        }
                        (Action::Remove, Some(i)) => {
                            apart.extend(apart_keys(&row.remove(i)));
                            changed = true;
                        }
                    }
                    answers.push((reply, Ok(found)));
                }
            }
        }
        let storage = self.state.storage();
        let written = match (changed, row.is_empty()) {
            (false, _) => Ok(()),
            (true, true) => storage.delete(&key).await.map(|_| ()),
            (true, false) => storage.put(&key, &row).await,
        };
        if let Err(e) = written {
            let e = HandlerError::from(e);
            answers
                .into_iter()
                .for_each(|(reply, _)| reply.send(Err(e.clone())));
            return;
        }
        if !apart.is_empty() {
            // Left behind, it is storage kept for nothing, never a request: logged.
            if let Err(e) = storage.delete_multiple(apart.clone()).await {
                log_error(&format!(
                    "proxy-fetch: queue keys {apart:?} not removed: {e}"
                ));
            }
        }
        answers
            .into_iter()
            .for_each(|(reply, answer)| reply.send(answer));
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
        self.send_each(jobs)
            .await
            .into_iter()
            .try_for_each(|(_, sent)| sent)
    }

    /// [`send`](Self::send), saying how each call went: the ids of its jobs, and its outcome.
    async fn send_each(&self, jobs: Vec<FetchJob>) -> Vec<(Vec<RequestId>, Result<(), NotSent>)> {
        let (calls, _) = into_calls(jobs, |job| {
            Some((job.options.executor_binding.clone(), MAX_JOBS_PER_CALL))
        });
        let sends = calls.into_iter().map(|jobs| async move {
            let ids: Vec<RequestId> = jobs.iter().map(|j| j.id.clone()).collect();
            let binding = jobs
                .first()
                .map(|j| j.options.executor_binding.clone())
                .unwrap_or_default();
            let sent = match ExecutorClient::from_env(&self.env, &binding) {
                Err(e) => Err(NotSent::Failed(e.to_string())),
                Ok(executor) => wire::execute_fetches(&executor, &binding, &jobs, &mut None)
                    .await
                    .map_err(|e| match e {
                        CallError::Handler(h) if h.kind == BUSY => NotSent::Busy(h.message),
                        CallError::Handler(h) if h.kind == MISSING_BINDING => {
                            NotSent::MissingBinding(h.message)
                        }
                        e => NotSent::Failed(format!("executor `{binding}` not reached: {e}")),
                    }),
            };
            (ids, sent)
        });
        concurrent::all(sends, usize::MAX).await
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
    async fn overdue(&self, entry: QueueEntry, now: f64) -> worker::Result<Option<f64>> {
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
                let mut sent = entry.clone();
                sent.dispatches += 1;
                sent.due_ms = now + budget;
                let due = sent.due_ms;
                if !self.replace(&entry, sent.clone()).await? {
                    // Changed meanwhile (done, or a result handed over): looked at again.
                    return Ok(Some(now + RETRY_BASE_MS));
                }
                if let Err(e) = self.send(vec![job]).await {
                    match e {
                        NotSent::Busy(why) => log_error(&format!(
                            "proxy-fetch {id}: executor busy, sent later: {why}"
                        )),
                        e => log_error(&format!("proxy-fetch {id}: dispatch again failed: {e}")),
                    }
                    // Only a dispatch the executor acknowledged counts.
                    let mut unsent = entry;
                    unsent.due_ms = now + RETRY_BASE_MS;
                    let due = unsent.due_ms;
                    self.replace(&sent, unsent).await?;
                    return Ok(Some(due));
                }
                return Ok(Some(due));
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
            self.remove(&id).await.map_err(to_worker)?;
            return Ok(None);
        }
        if age >= max_age + RETRY_CAP_MS {
            // The origin's own sweep delivers the final error when it can.
            log_error(&format!(
                "proxy-fetch {id}: origin unreachable past the max age; left to the origin's sweep"
            ));
            self.remove(&id).await.map_err(to_worker)?;
            return Ok(None);
        }
        let wait =
            (RETRY_BASE_MS * 2f64.powi(entry.delivery_tries.min(16) as i32)).min(RETRY_CAP_MS);
        let mut later = entry.clone();
        later.delivery_tries += 1;
        later.due_ms = now + wait;
        let due = later.due_ms;
        // A change that came meanwhile (a result handed over) is kept: looked at again soon.
        Ok(Some(if self.replace(&entry, later).await? {
            due
        } else {
            now + RETRY_BASE_MS
        }))
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

/// Stores `entry` in place of `read` if that is still the entry stored.
fn replacing(
    read: QueueEntry,
    entry: QueueEntry,
) -> impl FnOnce(Option<&QueueEntry>) -> Result<Action, HandlerError> {
    move |found| {
        Ok(match found {
            Some(found) if *found == read => Action::Put(Box::new(entry)),
            _ => Action::Keep,
        })
    }
}

/// Removes the entry `ticket` names, if the ticket proves the right to (`method` refuses it).
fn removing(
    method: &'static str,
    ticket: Ticket,
) -> impl FnOnce(Option<&QueueEntry>) -> Result<Action, HandlerError> {
    move |found| match found {
        Some(entry) => admitted(method, &ticket, entry).map(|()| Action::Remove),
        None => Ok(Action::Keep),
    }
}

/// Whether `ticket` proves the right to act on `entry`: refused `forbidden` if not.
fn admitted(method: &str, ticket: &Ticket, entry: &QueueEntry) -> Result<(), HandlerError> {
    if ticket.admits(&entry.job) {
        Ok(())
    } else {
        Err(forbidden(
            method,
            &ticket.id,
            "the ticket does not carry the request's token",
        ))
    }
}

/// A refused edit's error as a storage error of the backstop's.
fn to_worker(e: HandlerError) -> worker::Error {
    worker::Error::RustError(e.to_string())
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
        let Some(entry) = self.read_entry(&ticket.id).await? else {
            return Ok(None);
        };
        admitted(method, ticket, &entry)?;
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
        // Entries, and the bodies kept apart from them (the jobs keep theirs, to be sent now).
        let mut entries = Vec::with_capacity(jobs.len());
        let mut bodies = Vec::new();
        for job in &jobs {
            let (entry, body) = QueueEntry::new(job.clone(), now, 1);
            if let Some(body) = body {
                bodies.push((format!("{BODY}{}", job.id), body));
            }
            entries.push(entry);
        }
        // Each entry added unless its request is queued: the same request queued again (its
        // origin's sweep) is left as it is; another origin's request under the same id is
        // refused, as this queue knows requests by id. The entries of one row are written
        // together, once.
        let adds = entries
            .iter()
            .map(|entry| {
                let new = entry.clone();
                let add = move |known: Option<&QueueEntry>| match known {
                    None => Ok(Action::Put(Box::new(new))),
                    Some(known)
                        if Ticket::of(&new.job).admits(&known.job)
                            && known.job.origin == new.job.origin =>
                    {
                        Ok(Action::Keep)
                    }
                    Some(_) => Err(refuse(
                        "conflict",
                        "enqueue",
                        &new.job.id,
                        "already queued here for another origin or with another token: an id \
                         must be unique among the origins that share an orchestrator instance",
                    )),
                };
                (entry.job.id.clone(), Box::new(add) as Decide)
            })
            .collect();
        let added = self.edit_all(adds).await;
        let mut fresh = Vec::with_capacity(entries.len());
        let mut refused = None;
        for (entry, added) in entries.into_iter().zip(added) {
            match added {
                Ok(None) => fresh.push(entry),
                Ok(Some(_)) => {}
                Err(e) => refused = Some(e),
            }
        }
        if let Some(e) = refused {
            // None of the call is queued: what this call added goes again.
            self.forget_all(&fresh).await;
            return Err(e);
        }
        // The bodies of the entries this call added (never another's: an id queued already
        // keeps its body), before the jobs go out.
        let body_puts = bodies
            .iter()
            .filter(|(k, _)| fresh.iter().any(|e| *k == format!("{BODY}{}", e.job.id)))
            .map(|(k, b)| storage.put(k, b));
        let stored: Result<(), _> = concurrent::all(body_puts, usize::MAX)
            .await
            .into_iter()
            .collect();
        if let Err(e) = stored {
            self.forget_all(&fresh).await;
            return Err(e.into());
        }
        let Some(due) = fresh.iter().map(|e| e.due_ms).reduce(f64::min) else {
            return Ok(());
        };
        self.arm(due).await?;
        // The executor's call leaves only once these writes are on disk (the output gate), so
        // an executor never works on a request the queue could lose.
        let send: Vec<FetchJob> = jobs
            .into_iter()
            .filter(|j| fresh.iter().any(|e| e.job.id == j.id))
            .collect();
        let outcomes = self.send_each(send).await;
        if outcomes.iter().all(|(_, sent)| sent.is_err()) {
            let failed = outcomes.iter().find_map(|(_, sent)| match sent {
                Err(NotSent::MissingBinding(why)) => {
                    Some(HandlerError::new(MISSING_BINDING, why.clone()))
                }
                Err(NotSent::Failed(why)) => Some(HandlerError::new("dispatch", why.clone())),
                _ => None,
            });
            if let Some(e) = failed {
                // Nothing of the call went out: none of it is queued.
                self.forget_all(&fresh).await;
                return Err(e);
            }
        }
        // The jobs of a call that did not go out (busy, or failed while others went) are kept,
        // with no dispatch counted, and sent again by the backstop soon (whatever their method,
        // as the upstream never saw them); the jobs of the others are being fetched.
        let unsent: Vec<RequestId> = outcomes
            .into_iter()
            .filter_map(|(ids, sent)| {
                sent.err().map(|e| {
                    log_error(&format!(
                        "proxy-fetch: {} request(s) not sent now, sent again soon: {e}",
                        ids.len()
                    ));
                    ids
                })
            })
            .flatten()
            .collect();
        if unsent.is_empty() {
            return Ok(());
        }
        let retry = now + RETRY_BASE_MS;
        let later = fresh
            .into_iter()
            .filter(|e| unsent.contains(&e.job.id))
            .map(|entry| {
                let mut later = entry.clone();
                later.dispatches = 0;
                later.due_ms = retry;
                (
                    entry.job.id.clone(),
                    Box::new(replacing(entry, later)) as Decide,
                )
            })
            .collect();
        self.edit_all(later)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        self.arm(retry).await?;
        Ok(())
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
        // In one round of the writer: a row they share is written once.
        let removes = tickets
            .into_iter()
            .map(|ticket| {
                (
                    ticket.id.clone(),
                    Box::new(removing("complete", ticket)) as Decide,
                )
            })
            .collect();
        let mut refused = Ok(());
        for done in self.edit_all(removes).await {
            if let Err(e) = done {
                refused = Err(e);
            }
        }
        refused
    }

    /// Stops watching a request (the origin cancelled it). Returns whether it was queued.
    pub async fn forget(&self, ticket: Ticket) -> Result<bool, HandlerError> {
        let found = self
            .edit(ticket.id.clone(), removing("forget", ticket))
            .await?;
        Ok(found.is_some())
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
        // Checked before the result is stored: a forged ticket stores nothing.
        if self.entry("undelivered", &ticket).await?.is_none() {
            return Ok(());
        }
        let now = now_ms();
        // Kept apart from the entry, so listing the queue never loads it.
        let held_key = format!("{HELD}{}", ticket.id);
        let storage = self.state.storage();
        storage.put(&held_key, &result).await?;
        let due = now + RETRY_BASE_MS;
        let kept = self
            .edit(ticket.id.clone(), move |found| match found {
                Some(entry) => {
                    admitted("undelivered", &ticket, entry)?;
                    let mut entry = entry.clone();
                    entry.held = true;
                    entry.result = None;
                    entry.due_ms = due;
                    Ok(Action::Put(Box::new(entry)))
                }
                None => Ok(Action::Keep),
            })
            .await?;
        if kept.is_none() {
            // Completed meanwhile: the result is not needed.
            storage.delete(&held_key).await?;
            return Ok(());
        }
        self.arm(due).await?;
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
