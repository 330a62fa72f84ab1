//! Typed RPC between a named Worker entrypoint and a Durable Object, with `#[entrypoint]` and
//! no proxy-fetch system (docs/rpc.md): `GET /greet/<name>` calls `Greeter.greet`, which calls
//! the `Counter` Durable Object named `<name>`, which calls `Greeter.phrase` back.

use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{CallError, HandlerError, WorkerEntrypoint};
use serde::{Deserialize, Serialize};
use worker::*;

/// Arguments and results are serde types; JS callers see plain objects.
#[derive(Debug, Serialize, Deserialize)]
pub struct Greeting {
    pub text: String,
    pub visits: u32,
}

/// A named entrypoint: `export class GreeterEntrypoint extends WorkerEntrypoint` in the built
/// worker, built anew for each call with the worker's `env` (and `ctx`).
pub struct Greeter {
    env: Env,
}

impl WorkerEntrypoint for Greeter {
    fn new(env: Env, _ctx: Context) -> Self {
        Greeter { env }
    }
}

#[entrypoint(name = "GreeterEntrypoint")]
impl Greeter {
    /// Counts the visit in the `Counter` named `name` and greets.
    pub async fn greet(&self, name: String) -> std::result::Result<Greeting, HandlerError> {
        if name.is_empty() {
            return Err(HandlerError::new("empty_name", "a greeting needs a name"));
        }
        let counter = CounterClient::from_name(&self.env, "COUNTER", &name)?;
        Ok(counter.visit(name).await?)
    }

    /// The text of a greeting (the Durable Object calls this back).
    pub async fn phrase(&self, name: String, visits: u32) -> std::result::Result<String, HandlerError> {
        Ok(match visits {
            1 => format!("Hello, {name}!"),
            n => format!("Welcome back, {name} (visit {n})."),
        })
    }
}

/// A Durable Object with RPC methods: `export class Counter extends DurableObject`.
#[durable_object]
pub struct Counter {
    state: State,
    env: Env,
}

impl DurableObject for Counter {
    fn new(state: State, env: Env) -> Self {
        Counter { state, env }
    }

    // A Durable Object still answers `fetch` (workers-rs asks for it); RPC is the methods below.
    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::ok(format!("{} visits", self.visits().await?))
    }
}

#[entrypoint(durable_object)]
impl Counter {
    /// Adds one visit, and asks the entrypoint for the greeting's text.
    pub async fn visit(&self, name: String) -> std::result::Result<Greeting, HandlerError> {
        let visits = self.visits().await? + 1;
        self.state.storage().put("visits", visits).await?;
        let greeter = GreeterClient::from_env(&self.env, "GREETER")?;
        let text = greeter.phrase(name, visits).await?;
        Ok(Greeting { text, visits })
    }

    pub async fn visits(&self) -> std::result::Result<u32, HandlerError> {
        Ok(self.state.storage().get("visits").await?.unwrap_or(0))
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let path: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    let greeter = GreeterClient::from_env(&env, "GREETER")?;
    match path.as_slice() {
        ["greet", name] => match greeter.greet(name.to_string()).await {
            Ok(greeting) => Response::from_json(&greeting),
            // The handler's own error, typed: its kind and message crossed RPC intact.
            Err(CallError::Handler(e)) => Response::error(format!("{}: {}", e.kind, e.message), 400),
            // The call itself failed (binding, payload, runtime).
            Err(CallError::Rpc(e)) => Response::error(e.to_string(), 500),
        },
        _ => Response::error("try GET /greet/<name>", 404),
    }
}
