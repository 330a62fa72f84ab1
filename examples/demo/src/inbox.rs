//! The demo's origin, `Inbox`: a Durable Object that asks for slow fetches and goes on with its
//! life; each result arrives later at its `on_response` handler, which files it in storage.
//!
//! This is the repository's one origin example. examples/demo serves it, and the proxy-fetch
//! tests run against this same file: tests/proxy-worker includes it as a module
//! (`#[path = ".../examples/demo/src/inbox.rs"] mod inbox;`). Each crate that includes it
//! defines `Inbox::after_filing` beside it, the one thing that differs: the demo does nothing
//! there, the test worker puts its test hooks there (a handler that fails, one that crashes).
//! The benchmark's origin (bench/worker) is a different one; bench/worker/src/lib.rs says why.

use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{
    entrypoint, origin, Continuation, FetchResult, ProxyFetchOptions, ProxyFetchOrigin,
    ProxyRequest, RequestId,
};
use serde::{Deserialize, Serialize};
use worker::*;

/// The origin: `#[origin]` makes it a Durable Object proxy-fetch delivers to.
#[origin]
pub struct Inbox {
    state: State,
    env: Env,
}

/// What `start` reports: the request id, and how long the Inbox was held starting it.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct Started {
    pub request_id: RequestId,
    pub hold_ms: f64,
    pub started_at_ms: f64,
}

/// One result as the Inbox filed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
// TypeScript declarations (docs/typescript.md); a `None` crosses RPC as `undefined`.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Filed {
    pub request_id: RequestId,
    pub tag: String,
    /// `"response"` or the error kind (`"Timeout"`, `"Network"`, ...).
    pub outcome: String,
    pub status: Option<u16>,
    pub body_len: usize,
    /// The sum of the body's bytes mod 2^32: enough to tell a body that changed on the way.
    pub body_checksum: u32,
    pub text: String,
    pub attempts: u32,
    pub fetch_ms: f64,
    pub arrived_at_ms: f64,
    /// How many times this request's result reached the handler: 1, or more if the instance
    /// died while the handler ran (the result then comes again).
    pub deliveries: u32,
}

fn now() -> f64 {
    Date::now().as_millis() as f64
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
        let continuation = Continuation::new(InboxClient::ON_RESPONSE, tag);
        start(self, request, continuation, &options).await
    }

    /// The continuation: called with the response or the error (at least once: should the
    /// instance die while it runs, the result comes again; filing by request id makes a second
    /// run harmless, and counts it).
    pub async fn on_response(
        &self,
        result: FetchResult,
        tag: String,
    ) -> std::result::Result<(), HandlerError> {
        let filed = file(&self.state.storage(), &result, &tag).await?;
        self.after_filing(&filed).await
    }

    /// Everything filed so far.
    pub async fn results(&self) -> std::result::Result<Vec<Filed>, HandlerError> {
        Ok(filed(&self.state.storage()).await?)
    }

    /// Cancels a request: `on_response` gets `Cancelled` now, and a late response is dropped.
    pub async fn cancel(&self, request_id: RequestId) -> std::result::Result<bool, HandlerError> {
        Ok(proxy_fetch::cancel(self, &request_id).await?)
    }

    /// Requests still waiting for their result.
    pub async fn pending(&self) -> std::result::Result<Vec<RequestId>, HandlerError> {
        Ok(proxy_fetch::pending(self).await?)
    }

    /// Forgets everything filed (the demo's reset).
    pub async fn clear(&self) -> std::result::Result<(), HandlerError> {
        let map = self
            .state
            .storage()
            .list_with_options(ListOptions::new().prefix("filed:"))
            .await?;
        let keys: Vec<String> = map
            .keys()
            .into_iter()
            .filter_map(|k| k.ok()?.as_string())
            .collect();
        self.state.storage().delete_multiple(keys).await?;
        Ok(())
    }
}

/// Starts a proxied fetch from `origin` and says how long the origin was held (any origin of
/// the crate may use it: tests/proxy-worker's `Clock` does).
pub(crate) async fn start<O: ProxyFetchOrigin>(
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

/// Files a result under `filed:<request id>`, counting how often it came; returns the record.
pub(crate) async fn file(storage: &Storage, result: &FetchResult, tag: &str) -> Result<Filed> {
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
    storage.put(&key, &filed).await?;
    Ok(filed)
}

/// Every result filed in `storage`.
pub(crate) async fn filed(storage: &Storage) -> Result<Vec<Filed>> {
    let map = storage
        .list_with_options(ListOptions::new().prefix("filed:"))
        .await?;
    Ok(map
        .values()
        .into_iter()
        .filter_map(|v| serde_wasm_bindgen::from_value(v.ok()?).ok())
        .collect())
}
