//! Test worker: a named entrypoint, a default entrypoint, a Durable Object with RPC methods,
//! and routes that let the tests drive Rust callers.

use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
use serde::{Deserialize, Serialize};
use worker::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct Greeting {
    pub name: String,
    pub times: u32,
    #[serde(with = "serde_bytes")]
    #[cfg_attr(not(target_arch = "wasm32"), ts(type = "Uint8Array"))]
    pub blob: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct Reply {
    pub text: String,
    #[serde(with = "serde_bytes")]
    #[cfg_attr(not(target_arch = "wasm32"), ts(type = "Uint8Array"))]
    pub blob: Vec<u8>,
}

/// 128-bit integers: they cross RPC as BigInt (tests/workerd/typescript.test.mjs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct Wide {
    pub big: u128,
    pub negative: i128,
}

/// A 64-bit integer (crosses as a number) beside a type of 128-bit ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct WideReply {
    pub wide: Wide,
    pub doubled: u64,
}

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
    /// Greets `g.name`, `g.times` times, and echoes the bytes reversed.
    pub async fn greet(
        &self,
        g: Greeting,
        suffix: String,
    ) -> std::result::Result<Reply, HandlerError> {
        if g.times == 0 {
            return Err(HandlerError::new(
                "zero_times",
                format!("cannot greet {} zero times", g.name),
            ));
        }
        let text = vec![format!("hello {}{suffix}", g.name); g.times as usize].join(" ");
        let mut blob = g.blob;
        blob.reverse();
        Ok(Reply { text, blob })
    }

    /// `w.big + 1`, `w.negative - 1` and `2 * n`; an overflow is an error.
    pub async fn wide(&self, w: Wide, n: u64) -> std::result::Result<WideReply, HandlerError> {
        let overflow = || HandlerError::new("overflow", "out of range");
        Ok(WideReply {
            wide: Wide {
                big: w.big.checked_add(1).ok_or_else(overflow)?,
                negative: w.negative.checked_sub(1).ok_or_else(overflow)?,
            },
            doubled: n.checked_mul(2).ok_or_else(overflow)?,
        })
    }

    /// `n` itself: a 128-bit argument and result.
    pub async fn echo_u128(&self, n: u128) -> std::result::Result<u128, HandlerError> {
        Ok(n)
    }

    /// Waits `ms` then writes `value` into the `Counter` named `key`: the caller is answered first.
    #[wait_until]
    pub async fn record_later(
        &self,
        key: String,
        value: u32,
        ms: u32,
    ) -> std::result::Result<(), HandlerError> {
        Delay::from(std::time::Duration::from_millis(ms as u64)).await;
        if key == "fail" {
            return Err(HandlerError::new(
                "refused",
                "the key `fail` is refused after the acknowledgement",
            ));
        }
        let counter = CounterClient::from_name(&self.env, "COUNTER", &key)?;
        counter.set(value).await?;
        Ok(())
    }
}

pub struct Crasher;

impl WorkerEntrypoint for Crasher {
    fn new(_env: Env, _ctx: Context) -> Self {
        Crasher
    }
}

/// Counts `tick` calls in the Wasm instance's memory: a fresh instance starts again at 1.
static TICKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Panics on purpose. Built as usual (panic = "abort") a panic aborts the Wasm instance, and the
/// caller must hear of it at once while the next call gets a fresh instance; built with
/// PF_PANIC_UNWIND=1 it fails only its own call (tests/workerd/panic-unwind.mjs).
#[entrypoint(name = "CrasherEntrypoint")]
impl Crasher {
    pub async fn explode(&self, after_ms: u32) -> std::result::Result<(), HandlerError> {
        Delay::from(std::time::Duration::from_millis(after_ms as u64)).await;
        panic!("the test panics on purpose");
    }

    /// Acknowledged at once; panics `after_ms` later, under `ctx.waitUntil`.
    #[wait_until]
    pub async fn explode_later(&self, after_ms: u32) -> std::result::Result<(), HandlerError> {
        Delay::from(std::time::Duration::from_millis(after_ms as u64)).await;
        panic!("the test panics on purpose in the background");
    }

    /// Answers `ms` after waiting `ms`: a call that is in flight while another one panics.
    pub async fn nap(&self, ms: u32) -> std::result::Result<u32, HandlerError> {
        Delay::from(std::time::Duration::from_millis(ms as u64)).await;
        Ok(ms)
    }

    /// How many times `tick` ran in this Wasm instance, this call included.
    pub async fn tick(&self) -> std::result::Result<u32, HandlerError> {
        Ok(TICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
}

/// A second named entrypoint with a method of the same name: the two must not collide.
pub struct Admin;

impl WorkerEntrypoint for Admin {
    fn new(_env: Env, _ctx: Context) -> Self {
        Admin
    }
}

#[entrypoint(name = "AdminEntrypoint")]
impl Admin {
    pub async fn greet(
        &self,
        g: Greeting,
        suffix: String,
    ) -> std::result::Result<Reply, HandlerError> {
        Ok(Reply {
            text: format!("admin sees {}{suffix}", g.name),
            blob: Vec::new(),
        })
    }
}

/// Methods of the worker's default entrypoint.
pub struct Root;

impl WorkerEntrypoint for Root {
    fn new(_env: Env, _ctx: Context) -> Self {
        Root
    }
}

#[entrypoint]
impl Root {
    pub async fn version(&self) -> std::result::Result<String, HandlerError> {
        Ok("rpc-test-worker 1".into())
    }
}

#[durable_object]
pub struct Counter {
    state: State,
    /// Calls of `explode` and `explosions` on this Rust object (memory only, not storage).
    explosions: std::cell::Cell<u32>,
}

// Built with panic = "unwind", wasm-bindgen asks every exported class to be `RefUnwindSafe`
// (a `Cell` is not): a caught panic cannot leave this plain counter half-written.
#[cfg(all(target_arch = "wasm32", panic = "unwind"))]
impl std::panic::RefUnwindSafe for Counter {}

impl DurableObject for Counter {
    fn new(state: State, _env: Env) -> Self {
        Counter {
            state,
            explosions: std::cell::Cell::new(0),
        }
    }

    async fn fetch(&self, _req: Request) -> Result<Response> {
        let value = self.read().await?;
        Response::ok(format!("counter={value}"))
    }
}

impl Counter {
    async fn read(&self) -> Result<u32> {
        Ok(self.state.storage().get::<u32>("value").await?.unwrap_or(0))
    }
}

#[entrypoint(durable_object)]
impl Counter {
    pub async fn set(&self, value: u32) -> std::result::Result<u32, HandlerError> {
        self.state.storage().put("value", value).await?;
        Ok(value)
    }

    pub async fn get(&self) -> std::result::Result<u32, HandlerError> {
        Ok(self.read().await?)
    }

    /// Counts the call in memory, then panics on purpose.
    pub async fn explode(&self) -> std::result::Result<(), HandlerError> {
        self.explosions.set(self.explosions.get() + 1);
        panic!("the Durable Object panics on purpose");
    }

    /// How many times `explode` ran on this Rust object.
    pub async fn explosions(&self) -> std::result::Result<u32, HandlerError> {
        Ok(self.explosions.get())
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let q = |k: &str| {
        url.query_pairs()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
    };
    match url.path() {
        "/" => Response::ok("hello from Rust in workerd"),
        // On purpose, for tests/workerd/panic-unwind.mjs: a panic in the fetch handler itself.
        "/panic-fetch" => panic!("the test's fetch handler panics on purpose"),
        "/greet" => {
            let greeter = GreeterClient::from_env(&env, "GREETER")?;
            let g = Greeting {
                name: q("name").unwrap_or_default(),
                times: q("times").and_then(|t| t.parse().ok()).unwrap_or(1),
                blob: vec![1, 2, 3],
            };
            match greeter.greet(g, "!".into()).await {
                Ok(reply) => Response::ok(format!("{} {:?}", reply.text, reply.blob)),
                Err(e) => Response::error(format!("{e:?}"), 500),
            }
        }
        "/record-later" => {
            let greeter = GreeterClient::from_env(&env, "GREETER")?;
            let key = q("key").unwrap_or_default();
            let start = Date::now().as_millis();
            greeter.record_later(key.clone(), 7, 300).await?;
            let ack_ms = Date::now().as_millis() - start;
            let counter = CounterClient::from_name(&env, "COUNTER", &key)?;
            let at_ack = counter.get().await?;
            Response::ok(format!("ack_ms={ack_ms} value_at_ack={at_ack}"))
        }
        "/explode" => {
            // A Rust caller of a method that panics: what it gets back (panic-unwind.mjs).
            let crasher = CrasherClient::from_env(&env, "CRASHER")?;
            match crasher.explode(10).await {
                Ok(()) => Response::ok("no panic"),
                Err(e) => Response::ok(format!("{e:?}")),
            }
        }
        "/counter" => {
            let counter = CounterClient::from_name(&env, "COUNTER", &q("key").unwrap_or_default())?;
            Response::ok(format!("{}", counter.get().await?))
        }
        "/js-math" => {
            let math = JsMathClient::from_env(&env, "JS_MATH")?;
            let sum = math.add(2, 40).await?;
            let described = math
                .describe(Greeting {
                    name: "rust".into(),
                    times: 1,
                    blob: vec![0, 255],
                })
                .await?;
            let failed = match math.fail().await {
                Err(proxy_fetch::rpc::CallError::Rpc(e)) => format!("{:?}: {}", e.kind, e.message),
                other => format!("unexpected: {other:?}"),
            };
            Response::ok(format!(
                "sum={sum} text={} blob={:?} failed={failed}",
                described.text, described.blob
            ))
        }
        "/missing-binding" => match GreeterClient::from_env(&env, "NOPE") {
            Err(e) => Response::ok(format!("{:?}: {}\n{e}", e.kind, e.message)),
            Ok(_) => Response::error("binding unexpectedly present", 500),
        },
        _ => Response::error("not found", 404),
    }
}

/// An entrypoint written in JS (tests/workerd/js-peer.js), called from Rust.
#[entrypoint(name = "JsMath")]
pub trait JsMath {
    async fn add(&self, a: i32, b: i32) -> std::result::Result<i32, HandlerError>;
    /// Returns the argument with `seen: true` added.
    async fn describe(&self, g: Greeting) -> std::result::Result<Reply, HandlerError>;
    async fn fail(&self) -> std::result::Result<(), HandlerError>;
}
