//! Every supported shape of #[entrypoint] in one crate, as a user would write them.
use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use worker::{durable_object, Context, DurableObject, Env, Request, Response, State};

#[derive(Serialize, Deserialize)]
pub struct Message {
    pub url: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub headers: HashMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum MyError {
    Busy { retry_after_ms: u32 },
    Gone,
}

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

pub struct Executor {
    env: Env,
}

impl WorkerEntrypoint for Executor {
    fn new(env: Env, _ctx: Context) -> Self {
        Executor { env }
    }
}

/// A named entrypoint with awaited and wait_until methods.
#[entrypoint(name = "ShapesExecutorEntrypoint")]
impl Executor {
    /// Runs in the background.
    #[wait_until]
    pub async fn execute_fetch(&self, msg: Message) -> Result<(), HandlerError> {
        let _ = (&self.env, msg.url);
        Ok(())
    }

    pub async fn health(&self) -> Result<String, HandlerError> {
        Ok("ok".into())
    }

    pub async fn many_args(
        &self,
        a: u32,
        b: Option<String>,
        c: Vec<u8>,
        d: (i64, bool),
    ) -> Result<u64, MyError> {
        let _ = (b, c, d);
        Ok(a as u64)
    }

    #[rpc(name = "custom_name")]
    pub async fn renamed(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

pub struct Admin;

impl WorkerEntrypoint for Admin {
    fn new(_env: Env, _ctx: Context) -> Self {
        Admin
    }
}

/// A second entrypoint in the same worker with a method of the same name: no collision.
#[entrypoint(name = "AdminEntrypoint", client = "AdminApi")]
impl Admin {
    pub async fn health(&self) -> Result<String, HandlerError> {
        Ok("admin ok".into())
    }
}

pub struct Root;

impl WorkerEntrypoint for Root {
    fn new(_env: Env, _ctx: Context) -> Self {
        Root
    }
}

/// Methods on the worker's default entrypoint.
#[entrypoint]
impl Root {
    pub async fn version(&self) -> Result<String, HandlerError> {
        Ok("1".into())
    }
}

#[durable_object]
pub struct Origin {
    state: State,
}

impl DurableObject for Origin {
    fn new(state: State, _env: Env) -> Self {
        Origin { state }
    }

    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        Response::ok("origin")
    }
}

/// Durable Object RPC methods.
#[entrypoint(durable_object)]
impl Origin {
    pub async fn on_result(&self, request_id: String, status: u16) -> Result<(), HandlerError> {
        let _ = (&self.state, request_id, status);
        Ok(())
    }

    #[wait_until]
    pub async fn cleanup(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// An entrypoint implemented elsewhere (JS, another worker): only a client.
#[entrypoint(name = "JsThing")]
pub trait JsThing {
    async fn add(&self, a: i32, b: i32) -> Result<i32, HandlerError>;
    #[wait_until]
    async fn log(&self, line: String) -> Result<(), HandlerError>;
}

/// A Durable Object implemented elsewhere.
#[entrypoint(durable_object)]
pub trait RemoteRoom {
    async fn join(&self, who: String) -> Result<u32, HandlerError>;
}

/// Calls every method through the generated clients; the pass worker (tests/pass-worker)
/// serves this from workerd.
pub async fn callers(env: &Env) -> Result<String, Box<dyn std::error::Error>> {
    let executor = ExecutorClient::from_env(env, "SHAPES_EXECUTOR")?;
    let msg = Message {
        url: "http://127.0.0.1/".into(),
        body: vec![1, 2],
        headers: HashMap::new(),
    };
    executor.execute_fetch(msg).await?;
    let health: String = executor.health().await?;
    let many: u64 = executor.many_args(1, None, vec![], (1, true)).await?;
    executor.renamed().await?;
    let admin: String = AdminApi::from_env(env, "ADMIN")?.health().await?;
    let version: String = RootClient::from_env(env, "SELF")?.version().await?;
    let origin = OriginClient::from_name(env, "ORIGIN", "a")?;
    origin.on_result("id".into(), 200).await?;
    origin.cleanup().await?;
    let bad_id = OriginClient::from_id(env, "ORIGIN", "00ff").is_err();
    let sum: i32 = JsThingClient::from_env(env, "JS")?.add(1, 2).await?;
    JsThingClient::from_env(env, "JS")?.log("x".into()).await?;
    let joined: u32 = RemoteRoomClient::from_name(env, "ROOM", "r")?
        .join("me".into())
        .await?;
    Ok(format!(
        "{health} {many} {admin} {version} bad_id_refused={bad_id} {sum} {joined}"
    ))
}

#[allow(dead_code)]
fn main() {}
