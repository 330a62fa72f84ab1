//! FetchOrchestrator: the durable queue between origins and the executor. It records each
//! request, hands it to the executor (which acknowledges at once), and keeps an alarm as the
//! backstop: a request whose result has not come back by its deadline gets a `Backstop` error
//! at its origin, so no handler waits forever and no entry stays behind.

use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::executor::{FetchExecutorClient, OriginDeliveryClient};
use super::messages::{FetchJob, OriginRef};
use super::{now_ms, FetchError, FetchErrorKind, RequestId};
use crate::entrypoint;
use crate::rpc::{log_error, CallError, HandlerError};

const QUEUE: &str = "q:";
/// A backstop delivery that cannot reach its origin is tried this often before the entry is
/// dropped (logged): an origin that stays unreachable that long is gone.
const MAX_DELIVERY_TRIES: u32 = 5;
const DELIVERY_RETRY_MS: f64 = 5_000.0;
/// How many recent dispatch durations `stats` reports.
const RECENT_DISPATCHES: usize = 4096;

#[durable_object]
pub struct FetchOrchestrator {
    state: State,
    env: Env,
    /// The alarm time this instance last set (ms), so most enqueues need not read it.
    alarm_at: Cell<Option<f64>>,
    /// How long recent dispatches waited for the executor's acknowledgement (ms), newest last.
    /// In memory only: an observability aid, reset when the instance is.
    recent_dispatch_ms: RefCell<VecDeque<f64>>,
    /// Queue writes not yet handed to storage (`None`: delete), by request id. Calls arriving
    /// together commit their writes in one storage transaction instead of one each.
    unflushed: RefCell<BTreeMap<RequestId, Option<QueueEntry>>>,
    /// Whether a call is committing `unflushed` (the others leave their writes to it).
    flushing: Cell<bool>,
}

/// One request the orchestrator is waiting on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: RequestId,
    pub method: String,
    pub url: String,
    pub origin: OriginRef,
    pub enqueued_ms: f64,
    pub deadline_ms: f64,
    /// Backstop deliveries that failed to reach the origin.
    pub delivery_tries: u32,
}

/// What `stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    pub pending: u32,
    /// Age of the oldest pending request (ms), 0 when none.
    pub oldest_age_ms: f64,
    /// Requests waiting for their result, and those past their deadline whose backstop could
    /// not reach the origin yet.
    pub in_flight: u32,
    pub overdue: u32,
    pub items: Vec<QueueEntry>,
    /// How long recent dispatches (up to 4096, newest last) waited for the executor's
    /// acknowledgement, in ms: the orchestrator's hold time per request.
    pub recent_dispatch_ms: Vec<f64>,
}

impl DurableObject for FetchOrchestrator {
    fn new(state: State, env: Env) -> Self {
        FetchOrchestrator {
            state,
            env,
            alarm_at: Cell::new(None),
            recent_dispatch_ms: RefCell::default(),
            unflushed: RefCell::default(),
            flushing: Cell::new(false),
        }
    }

    /// `GET` on the orchestrator answers its stats as JSON (handy with `wrangler dev`).
    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        let stats = self
            .stats()
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        Response::from_json(&stats)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm_at.set(None);
        self.backstop().await?;
        Response::ok("")
    }
}

impl FetchOrchestrator {
    fn record_dispatch(&self, ms: f64) {
        let mut recent = self.recent_dispatch_ms.borrow_mut();
        if recent.len() == RECENT_DISPATCHES {
            recent.pop_front();
        }
        recent.push_back(ms);
    }

    /// The queue: what storage holds, with the writes not flushed yet applied on top.
    async fn entries(&self) -> worker::Result<Vec<QueueEntry>> {
        let map = self
            .state
            .storage()
            .list_with_options(worker::ListOptions::new().prefix(QUEUE))
            .await?;
        let mut entries: BTreeMap<RequestId, QueueEntry> = map
            .values()
            .into_iter()
            .filter_map(|v| serde_wasm_bindgen::from_value::<QueueEntry>(v.ok()?).ok())
            .map(|e| (e.id.clone(), e))
            .collect();
        for (id, write) in self.unflushed.borrow().iter() {
            match write {
                Some(entry) => entries.insert(id.clone(), entry.clone()),
                None => entries.remove(id),
            };
        }
        Ok(entries.into_values().collect())
    }

    async fn queued(&self, id: &str) -> worker::Result<bool> {
        if let Some(write) = self.unflushed.borrow().get(id) {
            return Ok(write.is_some());
        }
        let key = format!("{QUEUE}{id}");
        Ok(self
            .state
            .storage()
            .get::<QueueEntry>(&key)
            .await?
            .is_some())
    }

    /// Puts (`Some`) or deletes (`None`) the queue entry of `id`. One call at a time commits:
    /// it waits a timer tick for the calls arriving with it, then commits everything written
    /// so far in one transaction, again until nothing is left.
    async fn write(&self, id: &str, entry: Option<QueueEntry>) -> worker::Result<()> {
        self.unflushed.borrow_mut().insert(id.to_owned(), entry);
        if self.flushing.replace(true) {
            return Ok(());
        }
        // Should this call be dropped midway, the next write takes over the committing.
        struct Flushing<'a>(&'a Cell<bool>);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _flushing = Flushing(&self.flushing);
        worker::Delay::from(Duration::ZERO).await;
        loop {
            let batch = std::mem::take(&mut *self.unflushed.borrow_mut());
            if batch.is_empty() {
                return Ok(());
            }
            self.commit(batch).await?;
        }
    }

    async fn commit(&self, batch: BTreeMap<RequestId, Option<QueueEntry>>) -> worker::Result<()> {
        let puts = js_sys::Object::new();
        let mut deletes = Vec::new();
        for (id, write) in batch {
            let key = format!("{QUEUE}{id}");
            match write {
                Some(entry) => {
                    let value =
                        crate::rpc::to_js_value(&entry).map_err(worker::Error::RustError)?;
                    js_sys::Reflect::set(&puts, &key.into(), &value)?;
                }
                None => deletes.push(key),
            }
        }
        let storage = self.state.storage();
        if js_sys::Object::keys(&puts).length() > 0 {
            storage.put_multiple_raw(puts).await?;
        }
        if !deletes.is_empty() {
            storage.delete_multiple(deletes).await?;
        }
        Ok(())
    }

    /// Makes sure the alarm fires no later than `at`.
    async fn arm(&self, at: f64) -> worker::Result<()> {
        let storage = self.state.storage();
        let current = match self.alarm_at.get() {
            Some(t) => Some(t),
            None => storage.get_alarm().await?.map(|t| t as f64),
        };
        if current.is_none_or(|t| at < t) {
            // An integer is an offset from now for workers-rs, not a timestamp.
            storage.set_alarm((at - now_ms()).max(0.0) as i64).await?;
            self.alarm_at.set(Some(at));
        } else {
            self.alarm_at.set(current);
        }
        Ok(())
    }

    /// Delivers an error of `kind` to the entry's origin: `true` when the origin has its
    /// result now (or had one already), `false` when it could not be reached.
    async fn tell_origin(&self, entry: &QueueEntry, kind: FetchErrorKind, message: String) -> bool {
        let error = FetchError::new(&entry.id, kind, message);
        let origin =
            match OriginDeliveryClient::from_id(&self.env, &entry.origin.binding, &entry.origin.id)
            {
                Ok(origin) => origin,
                Err(e) => {
                    log_error(&format!(
                        "proxy-fetch {}: origin unreachable: {e}",
                        entry.id
                    ));
                    return false;
                }
            };
        match origin.deliver(Err(error)).await {
            Ok(_) | Err(CallError::Handler(_)) => true,
            Err(CallError::Rpc(e)) => {
                log_error(&format!(
                    "proxy-fetch {}: could not deliver {kind:?} to the origin: {e}",
                    entry.id
                ));
                false
            }
        }
    }

    async fn backstop(&self) -> worker::Result<()> {
        let now = now_ms();
        let mut next: Option<f64> = None;
        for mut entry in self.entries().await? {
            if entry.deadline_ms > now {
                next = Some(next.map_or(entry.deadline_ms, |n: f64| n.min(entry.deadline_ms)));
                continue;
            }
            let message = format!(
                "no result {} ms after it was queued (executor lost?)",
                (now - entry.enqueued_ms).round()
            );
            if self
                .tell_origin(&entry, FetchErrorKind::Backstop, message)
                .await
            {
                self.write(&entry.id, None).await?;
            } else if entry.delivery_tries + 1 >= MAX_DELIVERY_TRIES {
                log_error(&format!(
                    "proxy-fetch {}: origin unreachable {MAX_DELIVERY_TRIES} times; dropped",
                    entry.id
                ));
                self.write(&entry.id, None).await?;
            } else {
                entry.delivery_tries += 1;
                entry.deadline_ms = now + DELIVERY_RETRY_MS;
                next = Some(next.map_or(entry.deadline_ms, |n: f64| n.min(entry.deadline_ms)));
                self.write(&entry.id.clone(), Some(entry)).await?;
            }
        }
        if let Some(at) = next {
            self.arm(at).await?;
        }
        Ok(())
    }
}

#[entrypoint(durable_object)]
impl FetchOrchestrator {
    /// Queues `job` and hands it to the executor. Acknowledged at once, so the origin is not
    /// held; if the executor cannot be reached, the origin receives a `Dispatch` error instead.
    #[wait_until]
    pub async fn enqueue(&self, job: FetchJob) -> Result<(), HandlerError> {
        let now = now_ms();
        let entry = QueueEntry {
            id: job.id.clone(),
            method: job.request.method.clone(),
            url: job.request.url.clone(),
            origin: job.origin.clone(),
            enqueued_ms: now,
            deadline_ms: now + job.options.backstop_after_ms() as f64,
            delivery_tries: 0,
        };
        let binding = job.options.executor_binding.clone();
        // Dispatch before writing: a write holds back messages sent after it until it is on
        // disk (the output gate), and the executor's acknowledgement need not wait for that.
        // The entry is in the queue (`unflushed`) within this same turn, before a completion
        // can be processed.
        let dispatch = async {
            let executor = FetchExecutorClient::from_env(&self.env, &binding)?;
            let acked = executor.execute_fetch(job).await;
            self.record_dispatch(now_ms() - now);
            acked
        };
        let persist = async {
            self.write(&entry.id, Some(entry.clone())).await?;
            self.arm(entry.deadline_ms).await
        };
        let (dispatched, persisted) = futures_util::future::join(dispatch, persist).await;
        if let Err(e) = persisted {
            log_error(&format!(
                "proxy-fetch {}: not queued, no backstop for it: {e}",
                entry.id
            ));
        }
        if let Err(e) = dispatched {
            let message = format!("executor `{binding}` not reached: {}", e.message);
            if self
                .tell_origin(&entry, FetchErrorKind::Dispatch, message)
                .await
            {
                self.write(&entry.id, None).await?;
            }
        }
        Ok(())
    }

    /// The executor delivered the result: the request is done.
    pub async fn complete(&self, id: RequestId) -> Result<(), HandlerError> {
        self.write(&id, None).await?;
        Ok(())
    }

    /// Stops watching a request (the origin cancelled it). Returns whether it was queued.
    pub async fn forget(&self, id: RequestId) -> Result<bool, HandlerError> {
        let queued = self.queued(&id).await?;
        self.write(&id, None).await?;
        Ok(queued)
    }

    /// Pending count, age of the oldest, counts per state, and the entries.
    pub async fn stats(&self) -> Result<QueueStats, HandlerError> {
        let now = now_ms();
        let items = self.entries().await?;
        let overdue = items.iter().filter(|e| e.delivery_tries > 0).count() as u32;
        Ok(QueueStats {
            pending: items.len() as u32,
            oldest_age_ms: items
                .iter()
                .map(|e| now - e.enqueued_ms)
                .fold(0.0, f64::max),
            in_flight: items.len() as u32 - overdue,
            overdue,
            items,
            recent_dispatch_ms: self.recent_dispatch_ms.borrow().iter().copied().collect(),
        })
    }
}
