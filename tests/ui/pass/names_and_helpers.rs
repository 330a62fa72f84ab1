//! Any name the user picks works: arguments named like generated locals, methods named like
//! the client's own items, raw identifiers; `pub` methods are RPC methods and the others stay
//! local helpers; `#[cfg]` gates a method with its client method, handle and export.
#![allow(clippy::wrong_self_convention)] // RPC methods named like the client's constructors
use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{
    Client, DurableObjectClient, HandlerError, LocalClient, ServiceClient, WorkerEntrypoint,
};
use serde::{Deserialize, Serialize};
use worker::{durable_object, Context, DurableObject, Env, Request, Response, State};

pub struct Names {
    calls: std::cell::Cell<u32>,
}

impl WorkerEntrypoint for Names {
    fn new(_env: Env, _ctx: Context) -> Self {
        Names {
            calls: std::cell::Cell::new(0),
        }
    }
}

/// Not serde: only a method that is compiled out may mention it.
pub struct NotSerde;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Echo {
    pub env: String,
    pub ctx: String,
    pub args: u32,
    pub this: u32,
    pub stub: u32,
}

#[entrypoint(name = "NamesEntrypoint")]
impl Names {
    /// Arguments named like the generated code's locals.
    #[allow(non_snake_case)]
    pub async fn echo(
        &self,
        env: String,
        ctx: String,
        args: u32,
        this: u32,
        stub: u32,
        METHOD: u32,
    ) -> Result<Echo, HandlerError> {
        let _ = METHOD;
        self.count();
        Ok(Echo {
            env,
            ctx,
            args,
            this,
            stub,
        })
    }

    /// Methods named like the client's own items.
    pub async fn stub(&self, target: u32) -> Result<u32, HandlerError> {
        Ok(target + 1)
    }

    pub async fn local(&self) -> Result<String, HandlerError> {
        Ok("local".into())
    }

    pub async fn from_env(&self, from_stub: String) -> Result<String, HandlerError> {
        Ok(from_stub)
    }

    pub async fn from_stub(&self) -> Result<u32, HandlerError> {
        Ok(self.calls.get())
    }

    /// Raw identifiers: JS calls it `type`, with an argument `match`.
    pub async fn r#type(&self, r#match: u32) -> Result<u32, HandlerError> {
        Ok(r#match * 2)
    }

    /// Compiled out, with everything generated for it (its argument type is not even serde).
    #[cfg(any())]
    pub async fn gone(&self, value: NotSerde) -> Result<(), HandlerError> {
        let _ = value;
        Ok(())
    }

    #[cfg(any(unix, target_family = "wasm"))]
    pub async fn kept(&self) -> Result<String, HandlerError> {
        Ok("kept".into())
    }

    #[cfg_attr(any(unix, target_family = "wasm"), allow(unused_variables))]
    pub async fn with_cfg_attr(&self, unused: u32) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Local helpers: not exported, no client method, any signature.
    fn count(&self) {
        self.calls.set(self.calls.get() + 1);
    }

    pub(crate) fn crate_helper(&mut self, _not_serde: &NotSerde) -> u32 {
        self.calls.get()
    }

    #[allow(dead_code)]
    fn associated() -> u32 {
        7
    }
}

#[durable_object]
pub struct Registry {
    state: State,
}

impl DurableObject for Registry {
    fn new(state: State, _env: Env) -> Self {
        Registry { state }
    }

    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        Response::ok("registry")
    }
}

/// A Durable Object whose RPC methods take the client's constructor names.
#[entrypoint(durable_object)]
impl Registry {
    pub async fn from_name(&self, name: String) -> Result<String, HandlerError> {
        self.state.storage().put("name", &name).await?;
        Ok(name)
    }

    pub async fn from_id(&self) -> Result<Option<String>, HandlerError> {
        Ok(self.state.storage().get::<String>("name").await?)
    }
}

pub async fn callers(env: &Env) -> Result<String, Box<dyn std::error::Error>> {
    // `from_env` and `from_stub` are RPC methods here: the constructors are the traits'.
    let names = <NamesClient as ServiceClient>::from_env(env, "NAMES")?;
    let echo = names.echo("e".into(), "c".into(), 1, 2, 3, 4).await?;
    let next = names.stub(41).await?;
    let local = names.local().await?;
    let from_env = names.from_env("x".into()).await?;
    let typed = names.r#type(21).await?;
    let kept = names.kept().await?;
    names.with_cfg_attr(0).await?;
    let calls = names.from_stub().await?;
    let _ = <NamesClient as Client>::stub(&names);
    let _ = names.count();
    let _ = (NamesClient::TYPE, NamesClient::KEPT, NamesClient::STUB);
    let registry = <RegistryClient as DurableObjectClient>::from_name(env, "REGISTRY", "r")?;
    let stored = registry.from_name("reg".into()).await?;
    let read = registry.from_id().await?;
    Ok(format!(
        "{echo:?} {next} {local} {from_env} {typed} {kept} {calls} {stored} {read:?}"
    ))
}

/// The client can have items of its own, even named like a helper: the compile-time hint the
/// macro puts there for `count` (and its handle `COUNT`) gives way to them.
impl NamesClient {
    pub fn count(&self) -> u32 {
        Self::COUNT
    }

    pub const COUNT: u32 = 1;
}

/// In process, the helpers are still the type's own methods.
pub fn local_client() -> NamesClient {
    let mut names = Names::new_for_tests();
    let _ = names.crate_helper(&NotSerde);
    <NamesClient as LocalClient>::local(std::rc::Rc::new(names))
}

impl Names {
    fn new_for_tests() -> Self {
        Names {
            calls: std::cell::Cell::new(0),
        }
    }
}

#[allow(dead_code)]
fn main() {}
