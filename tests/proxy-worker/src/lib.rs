//! The worker the proxy-fetch tests run against in workerd. `Inbox` is the demo's origin with
//! test hooks (a handler that fails on purpose, body checksums, a count of deliveries);
//! `Clock` is an origin with an alarm of its own beside proxy-fetch's.

use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{
    entrypoint, Continuation, FetchResult, ProxyFetchOptions, ProxyFetchOrigin, ProxyRequest,
    RequestId,
};
use serde::{Deserialize, Serialize};
use worker::*;

proxy_fetch::serve_system!();

fn now() -> f64 {
    Date::now().as_millis() as f64
}

/// What `start` reports: the request id, and how long the origin was held starting it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Started {
    pub request_id: RequestId,
    pub hold_ms: f64,
    pub started_at_ms: f64,
}

/// One result as the origin filed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Filed {
    pub request_id: RequestId,
    pub tag: String,
    /// `"response"` or the error kind (`"Timeout"`, `"Network"`, ...).
    pub outcome: String,
    pub status: Option<u16>,
    pub body_len: usize,
    /// Sum of the body's bytes mod 2^32: enough to tell a corrupted body.
    pub body_checksum: u32,
    pub text: String,
    pub attempts: u32,
    pub fetch_ms: f64,
    pub arrived_at_ms: f64,
    /// How many times a result for this request reached the handler.
    pub deliveries: u32,
}

async fn file(storage: &Storage, result: &FetchResult, tag: &str) -> Result<()> {
    let id = match result {
        Ok(r) => r.request_id.clone(),
        Err(e) => e.request_id.clone(),
    };
    let key = format!("filed:{id}");
    let deliveries = storage
        .get::<Filed>(&key)
        .await?
        .map_or(0, |f| f.deliveries)
        + 1;
    let filed = match result {
        Ok(r) => Filed {
            request_id: id,
            tag: tag.into(),
            outcome: "response".into(),
            status: Some(r.status),
            body_len: r.body.len(),
            body_checksum: r
                .body
                .iter()
                .fold(0u32, |sum, b| sum.wrapping_add(*b as u32)),
            text: r
                .text()
                .map(|t| t.chars().take(4096).collect())
                .unwrap_or_default(),
            attempts: r.attempts,
            fetch_ms: r.duration_ms,
            arrived_at_ms: now(),
            deliveries,
        },
        Err(e) => Filed {
            request_id: id,
            tag: tag.into(),
            outcome: format!("{:?}", e.kind),
            status: None,
            body_len: 0,
            body_checksum: 0,
            text: e.message.clone(),
            attempts: e.attempts,
            fetch_ms: 0.0,
            arrived_at_ms: now(),
            deliveries,
        },
    };
    storage.put(&key, &filed).await
}

/// Starts a proxied fetch from `origin` and says how long the origin was held.
async fn start<O: ProxyFetchOrigin>(
    origin: &O,
    request: ProxyRequest,
    continuation: Continuation<O, String>,
    options: &ProxyFetchOptions,
) -> std::result::Result<Started, HandlerError> {
    let started_at_ms = now();
    let request_id = proxy_fetch::proxy_fetch(origin, request, continuation, options).await?;
    Ok(Started {
        request_id,
        hold_ms: now() - started_at_ms,
        started_at_ms,
    })
}

async fn filed(storage: &Storage) -> Result<Vec<Filed>> {
    let map = storage
        .list_with_options(ListOptions::new().prefix("filed:"))
        .await?;
    Ok(map
        .values()
        .into_iter()
        .filter_map(|v| serde_wasm_bindgen::from_value(v.ok()?).ok())
        .collect())
}

#[durable_object]
pub struct Inbox {
    state: State,
    env: Env,
}

impl DurableObject for Inbox {
    fn new(state: State, env: Env) -> Self {
        Inbox { state, env }
    }

    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::from_json(&filed(&self.state.storage()).await?)
    }
}

impl ProxyFetchOrigin for Inbox {
    fn state(&self) -> &State {
        &self.state
    }
    fn env(&self) -> &Env {
        &self.env
    }
}

#[entrypoint(durable_object, origin)]
impl Inbox {
    /// Starts a proxied fetch; its result goes to `on_response` with `tag`.
    pub async fn start(
        &self,
        request: ProxyRequest,
        options: ProxyFetchOptions,
        tag: String,
    ) -> std::result::Result<Started, HandlerError> {
        start(
            self,
            request,
            Continuation::new(InboxClient::ON_RESPONSE, tag),
            &options,
        )
        .await
    }

    /// Files every result; the tag `fail-handler` makes it fail after filing, `panic-once`
    /// crashes the instance after filing, the first time only, `panic-always` every time.
    pub async fn on_response(
        &self,
        result: FetchResult,
        tag: String,
    ) -> std::result::Result<(), HandlerError> {
        let storage = self.state.storage();
        file(&storage, &result, &tag).await?;
        if tag == "fail-handler" {
            return Err(HandlerError::new("test", "this handler fails on purpose"));
        }
        if tag == "panic-always" {
            panic!("the handler crashes its instance on purpose, every time");
        }
        if tag == "panic-once" && storage.get::<bool>("panicked").await?.is_none() {
            storage.put("panicked", true).await?;
            panic!("the handler crashes its instance on purpose");
        }
        Ok(())
    }

    pub async fn results(&self) -> std::result::Result<Vec<Filed>, HandlerError> {
        Ok(filed(&self.state.storage()).await?)
    }

    pub async fn cancel(&self, request_id: RequestId) -> std::result::Result<bool, HandlerError> {
        Ok(proxy_fetch::cancel(self, &request_id).await?)
    }

    pub async fn pending(&self) -> std::result::Result<Vec<RequestId>, HandlerError> {
        Ok(proxy_fetch::pending(self).await?)
    }
}

/// An origin with an alarm of its own: `ring_in(ms)` sets it, `alarm()` counts its runs.
#[durable_object]
pub struct Clock {
    state: State,
    env: Env,
}

impl DurableObject for Clock {
    fn new(state: State, env: Env) -> Self {
        Clock { state, env }
    }

    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::ok("clock")
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let due: Option<f64> = storage.get("own-alarm-due").await?;
        if due.is_some_and(|d| d <= now()) {
            let rings = storage.get::<u32>("rings").await?.unwrap_or(0) + 1;
            storage.put("rings", rings).await?;
            storage.delete("own-alarm-due").await?;
        } else if let Some(due) = due {
            // proxy-fetch's alarm came first: ours is still to come (proxy-fetch re-arms for
            // the earlier of its next and ours afterwards).
            if storage.get_alarm().await?.is_none_or(|at| at as f64 > due) {
                storage.set_alarm((due - now()).max(0.0) as i64).await?;
            }
        }
        Response::ok("")
    }
}

impl ProxyFetchOrigin for Clock {
    fn state(&self) -> &State {
        &self.state
    }
    fn env(&self) -> &Env {
        &self.env
    }
    const OWN_ALARM: bool = true;
}

#[entrypoint(durable_object, origin)]
impl Clock {
    /// Sets the Clock's own alarm `ms` from now.
    pub async fn ring_in(&self, ms: u32) -> std::result::Result<(), HandlerError> {
        let storage = self.state.storage();
        let due = now() + ms as f64;
        storage.put("own-alarm-due", due).await?;
        // Beside proxy-fetch, an origin only ever moves its alarm earlier.
        if storage.get_alarm().await?.is_none_or(|at| at as f64 > due) {
            storage.set_alarm(ms as i64).await?;
        }
        Ok(())
    }

    /// How often the Clock's own alarm found its time had come.
    pub async fn rings(&self) -> std::result::Result<u32, HandlerError> {
        Ok(self.state.storage().get::<u32>("rings").await?.unwrap_or(0))
    }

    pub async fn start(
        &self,
        request: ProxyRequest,
        options: ProxyFetchOptions,
        tag: String,
    ) -> std::result::Result<Started, HandlerError> {
        start(
            self,
            request,
            Continuation::new(ClockClient::ON_RESPONSE, tag),
            &options,
        )
        .await
    }

    pub async fn on_response(
        &self,
        result: FetchResult,
        tag: String,
    ) -> std::result::Result<(), HandlerError> {
        Ok(file(&self.state.storage(), &result, &tag).await?)
    }

    pub async fn results(&self) -> std::result::Result<Vec<Filed>, HandlerError> {
        Ok(filed(&self.state.storage()).await?)
    }

    pub async fn pending(&self) -> std::result::Result<Vec<RequestId>, HandlerError> {
        Ok(proxy_fetch::pending(self).await?)
    }
}

#[event(fetch)]
async fn fetch(_req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    Response::ok("proxy-test-worker: driven over RPC by tests/workerd")
}
