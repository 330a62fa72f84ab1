//! FetchOrchestrator: the durable queue between origins and the executor. It records each
//! request, hands it to the executor (which acknowledges at once), and keeps an alarm as the
//! backstop: a request whose result has not come back by its deadline gets a `Backstop` error
//! at its origin, so no handler waits forever and no entry stays behind.

use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::executor::{FetchExecutorClient, OriginDeliveryClient};
use super::messages::{FetchJob, OriginRef};
use super::origin::now_ms;
use super::{FetchError, FetchErrorKind, RequestId};
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

    async fn entries(&self) -> worker::Result<Vec<QueueEntry>> {
        let map = self
            .state
            .storage()
            .list_with_options(worker::ListOptions::new().prefix(QUEUE))
            .await?;
        Ok(map
            .values()
            .into_iter()
            .filter_map(|v| serde_wasm_bindgen::from_value(v.ok()?).ok())
            .collect())
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

    /// Delivers `error` to the entry's origin. Ok(true) when the origin has its result now (or
    /// had one already); Ok(false) when it could not be reached.
    async fn tell_origin(&self, entry: &QueueEntry, kind: FetchErrorKind, message: String) -> bool {
        let error = FetchError {
            request_id: entry.id.clone(),
            kind,
            message,
            attempts: 0,
        };
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
        let storage = self.state.storage();
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
            let key = format!("{QUEUE}{}", entry.id);
            if self
                .tell_origin(&entry, FetchErrorKind::Backstop, message)
                .await
            {
                storage.delete(&key).await?;
            } else if entry.delivery_tries + 1 >= MAX_DELIVERY_TRIES {
                log_error(&format!(
                    "proxy-fetch {}: origin unreachable {MAX_DELIVERY_TRIES} times; dropped",
                    entry.id
                ));
                storage.delete(&key).await?;
            } else {
                entry.delivery_tries += 1;
                entry.deadline_ms = now + DELIVERY_RETRY_MS;
                next = Some(next.map_or(entry.deadline_ms, |n: f64| n.min(entry.deadline_ms)));
                storage.put(&key, &entry).await?;
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
    async fn enqueue(&self, job: FetchJob) -> Result<(), HandlerError> {
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
        let key = format!("{QUEUE}{}", job.id);
        let binding = job.options.executor_binding.clone();
        // Dispatch before writing: a write holds back messages sent after it until it is on
        // disk (the output gate), and the executor's acknowledgement need not wait for that.
        // The entry is written in this same turn, before a completion can be processed.
        let dispatch = async {
            let executor = FetchExecutorClient::from_env(&self.env, &binding)?;
            let acked = executor.execute_fetch(job).await;
            self.record_dispatch(now_ms() - now);
            acked
        };
        let persist = async {
            self.state.storage().put(&key, &entry).await?;
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
                self.state.storage().delete(&key).await?;
            }
        }
        Ok(())
    }

    /// The executor delivered the result: the request is done.
    async fn complete(&self, id: RequestId) -> Result<(), HandlerError> {
        self.state.storage().delete(&format!("{QUEUE}{id}")).await?;
        Ok(())
    }

    /// Stops watching a request (the origin cancelled it). Returns whether it was queued.
    async fn forget(&self, id: RequestId) -> Result<bool, HandlerError> {
        Ok(self.state.storage().delete(&format!("{QUEUE}{id}")).await?)
    }

    /// Pending count, age of the oldest, counts per state, and the entries.
    async fn stats(&self) -> Result<QueueStats, HandlerError> {
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
