//! The worker the proxy-fetch tests run against in workerd. `Inbox` is the demo's origin itself
//! (examples/demo/src/inbox.rs, included below, so the tests run the code the demo shows), with
//! the test hooks of `after_filing` beside it: a handler that fails on purpose, one that crashes
//! its instance. `Clock` is an origin with an alarm of its own beside proxy-fetch's: it writes
//! `impl DurableObject` and `impl ProxyFetchOrigin` itself, as such an origin must.
//! src/main.js wraps both Durable Objects' classes to inject storage faults.

use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{
    entrypoint, Continuation, FetchResult, ProxyFetchOptions, ProxyFetchOrigin, ProxyRequest,
    RequestId,
};
use worker::*;

#[path = "../../../examples/demo/src/inbox.rs"]
mod inbox;
use inbox::{file, filed, start, Filed, Started};
pub use inbox::{Inbox, InboxClient};

proxy_fetch::serve_system!();

fn now() -> f64 {
    Date::now().as_millis() as f64
}

impl Inbox {
    /// The test hooks, run by the Inbox's `on_response` after it filed a result: the tag
    /// `fail-handler` makes the handler fail, `panic-once` crashes the instance (the first time
    /// only: the result then comes again, and the second run files it and returns),
    /// `panic-always` crashes it every time.
    async fn after_filing(&self, filed: &Filed) -> std::result::Result<(), HandlerError> {
        match filed.tag.as_str() {
            "fail-handler" => Err(HandlerError::new("test", "this handler fails on purpose")),
            "panic-always" => panic!("the handler crashes its instance on purpose, every time"),
            "panic-once" => {
                let storage = self.state().storage();
                if storage.get::<bool>("panicked").await?.is_none() {
                    storage.put("panicked", true).await?;
                    panic!("the handler crashes its instance on purpose");
                }
                Ok(())
            }
            _ => Ok(()),
        }
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
        file(&self.state.storage(), &result, &tag).await?;
        Ok(())
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
