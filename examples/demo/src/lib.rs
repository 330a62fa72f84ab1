//! proxy-fetch demo: the `Inbox` Durable Object asks for a slow fetch and goes on with its life;
//! the result arrives later at its `on_response` handler, which files it in storage.
//!
//! - `POST /inbox/<name>/fetch` with `{"url": ..., "tag": ..., "flow": "direct"}` starts a
//!   proxied fetch (`flow`: `direct`, the default, or `orchestrated`).
//! - `GET /inbox/<name>/results` lists what arrived.
//! - `GET /orchestrator` shows the orchestrator's queue (query strings redacted).

use proxy_fetch::rpc::HandlerError;
use proxy_fetch::system::FetchOrchestratorClient;
use proxy_fetch::{
    entrypoint, origin, Continuation, FetchResult, Flow, ProxyFetchOptions, ProxyRequest, RequestId,
};
use serde::{Deserialize, Serialize};
use worker::*;

// The orchestrator and the executor come with the library; this worker serves them (its
// wrangler.toml binds them): the build exports their classes only where this line is.
proxy_fetch::serve_system!();

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
    pub text: String,
    pub attempts: u32,
    pub fetch_ms: f64,
    pub arrived_at_ms: f64,
}

#[entrypoint(durable_object, origin)]
impl Inbox {
    /// Starts a proxied fetch; its result goes to `on_response` with `tag`.
    pub async fn start(
        &self,
        request: ProxyRequest,
        options: ProxyFetchOptions,
        tag: String,
    ) -> Result<Started, HandlerError> {
        let started_at_ms = Date::now().as_millis() as f64;
        let continuation = Continuation::new(InboxClient::ON_RESPONSE, tag);
        let request_id = proxy_fetch::proxy_fetch(self, request, continuation, &options).await?;
        let hold_ms = Date::now().as_millis() as f64 - started_at_ms;
        Ok(Started {
            request_id,
            hold_ms,
            started_at_ms,
        })
    }

    /// The continuation: called with the response or the error (at least once: should the
    /// instance die while it runs, the result comes again; filing by request id makes a second
    /// run harmless).
    pub async fn on_response(&self, result: FetchResult, tag: String) -> Result<(), HandlerError> {
        let id = match &result {
            Ok(r) => r.request_id.clone(),
            Err(e) => e.request_id.clone(),
        };
        let key = format!("filed:{id}");
        let filed = match &result {
            Ok(r) => Filed {
                request_id: id,
                tag: tag.clone(),
                outcome: "response".into(),
                status: Some(r.status),
                body_len: r.body.len(),
                text: r
                    .text()
                    .map(|t| t.chars().take(4096).collect())
                    .unwrap_or_default(),
                attempts: r.attempts,
                fetch_ms: r.duration_ms,
                arrived_at_ms: Date::now().as_millis() as f64,
            },
            Err(e) => Filed {
                request_id: id,
                tag: tag.clone(),
                outcome: format!("{:?}", e.kind),
                status: None,
                body_len: 0,
                text: e.message.clone(),
                attempts: e.attempts,
                fetch_ms: 0.0,
                arrived_at_ms: Date::now().as_millis() as f64,
            },
        };
        self.state.storage().put(&key, &filed).await?;
        Ok(())
    }

    /// Everything filed so far.
    pub async fn results(&self) -> Result<Vec<Filed>, HandlerError> {
        let map = self
            .state
            .storage()
            .list_with_options(ListOptions::new().prefix("filed:"))
            .await?;
        Ok(map
            .values()
            .into_iter()
            .filter_map(|v| serde_wasm_bindgen::from_value(v.ok()?).ok())
            .collect())
    }

    /// Cancels a request: `on_response` gets `Cancelled` now, and a late response is dropped.
    pub async fn cancel(&self, request_id: RequestId) -> Result<bool, HandlerError> {
        Ok(proxy_fetch::cancel(self, &request_id).await?)
    }

    /// Requests still waiting for their result.
    pub async fn pending(&self) -> Result<Vec<RequestId>, HandlerError> {
        Ok(proxy_fetch::pending(self).await?)
    }

    /// Forgets everything filed (the demo's reset).
    pub async fn clear(&self) -> Result<(), HandlerError> {
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

#[derive(Deserialize)]
struct StartBody {
    url: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// `"direct"` (the default) or `"orchestrated"`.
    #[serde(default)]
    flow: Option<Flow>,
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["inbox", name, "fetch"]) => {
            let body: StartBody = req.json().await?;
            let mut options = ProxyFetchOptions::default();
            if let Some(ms) = body.timeout_ms {
                options.timeout_ms = ms;
            }
            if let Some(flow) = body.flow {
                options.flow = flow;
            }
            let inbox = InboxClient::from_name(&env, "INBOX", name)?;
            let started = inbox
                .start(ProxyRequest::get(body.url), options, body.tag)
                .await?;
            Response::from_json(&started)
        }
        (Method::Get, ["inbox", name, "results"]) => {
            let inbox = InboxClient::from_name(&env, "INBOX", name)?;
            Response::from_json(&inbox.results().await?)
        }
        (Method::Get, ["orchestrator"]) => {
            let orchestrator =
                FetchOrchestratorClient::from_name(&env, "FETCH_ORCHESTRATOR", "singleton")?;
            Response::from_json(&orchestrator.stats().await?)
        }
        _ => Response::error(
            "not found: try POST /inbox/<name>/fetch {\"url\": ...}",
            404,
        ),
    }
}
