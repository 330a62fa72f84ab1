//! proxy-fetch demo: the `Inbox` Durable Object (src/inbox.rs) asks for a slow fetch and goes on
//! with its life; the result arrives later at its `on_response` handler, which files it in
//! storage. This file is the worker around it: its HTTP routes.
//!
//! - `POST /inbox/<name>/fetch` with `{"url": ..., "tag": ..., "flow": "direct"}` starts a
//!   proxied fetch (`flow`: `direct`, the default, or `orchestrated`).
//! - `GET /inbox/<name>/results` lists what arrived.
//! - `GET /orchestrator` shows the orchestrator's queue (query strings redacted).

use proxy_fetch::rpc::HandlerError;
use proxy_fetch::system::FetchOrchestratorClient;
use proxy_fetch::{Flow, ProxyFetchOptions, ProxyRequest};
use serde::Deserialize;
use worker::*;

mod inbox;
pub use inbox::{Filed, Inbox, InboxClient, Started};

// The orchestrator and the executor come with the library; this worker serves them (its
// wrangler.toml binds them): the build exports their classes only where this line is.
proxy_fetch::serve_system!();

impl Inbox {
    /// What `on_response` does after filing a result: nothing more in the demo. (The tests run
    /// this same Inbox with their hooks here instead: tests/proxy-worker/src/lib.rs.)
    async fn after_filing(&self, _filed: &Filed) -> std::result::Result<(), HandlerError> {
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
