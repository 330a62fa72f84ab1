//! Benchmark worker: `Probe` is an origin Durable Object that starts proxied fetches and records
//! when each result arrived, and measures the baselines they are compared with (the same fetch
//! awaited in the DO, a no-op RPC to the executor, an RPC of N bytes one way and both ways).
//! `js/main.js` wraps the built classes to count what each request costs (see there).
//!
//! Why `Probe` is not the repository's one origin example (the `Inbox` of
//! examples/demo/src/inbox.rs, which the demo and tests/proxy-worker share): the bench measures
//! the proxying, so
//! - `Probe`'s handler does exactly the work of the awaited baseline it is compared with, in the
//!   same class: one small arrival record keyed by tag (`a:<tag>`), where the Inbox's also keeps
//!   up to 4 KiB of the body's text and sums the body's bytes;
//! - js/main.js knows an arrival by that record's key and leaves those keys out of the storage
//!   counts;
//! - its class also carries the baselines (`awaited`, `direct`, the RPC round trips), which
//!   belong to the bench alone;
//! - and a handler that did more would move BENCHMARKS.md's CPU and DO-time figures, which stay
//!   comparable from commit to commit only while this work stays the same.

use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
use proxy_fetch::system::FetchExecutorClient;
use proxy_fetch::{
    entrypoint, Continuation, FetchResult, ProxyFetchOptions, ProxyFetchOrigin, RequestId,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use worker::*;

proxy_fetch::serve_system!();

fn now() -> f64 {
    Date::now().as_millis() as f64
}

#[durable_object]
pub struct Probe {
    state: State,
    env: Env,
}

impl DurableObject for Probe {
    fn new(state: State, env: Env) -> Self {
        Probe { state, env }
    }

    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::ok("probe")
    }
}

impl ProxyFetchOrigin for Probe {
    fn state(&self) -> &State {
        &self.state
    }
    fn env(&self) -> &Env {
        &self.env
    }
}

#[derive(Serialize, Deserialize)]
pub struct Started {
    pub request_id: RequestId,
    pub tag: String,
    pub started_at_ms: f64,
    pub hold_ms: f64,
}

#[derive(Serialize, Deserialize)]
pub struct Arrival {
    pub tag: String,
    pub request_id: RequestId,
    pub outcome: String,
    pub status: Option<u16>,
    pub body_len: usize,
    pub fetch_ms: f64,
    pub arrived_at_ms: f64,
    pub deliveries: u32,
}

/// What `awaited` reports: when the fetch started and when its result was recorded.
#[derive(Serialize, Deserialize)]
pub struct Awaited {
    pub tag: String,
    pub started_at_ms: f64,
    pub done_at_ms: f64,
}

impl Probe {
    /// Stores an arrival under `a:<tag>`, counting how often this tag arrived. The bench's
    /// storage counters leave `a:` keys out: they are the handler's work, not proxy-fetch's.
    async fn record(&self, mut arrival: Arrival) -> std::result::Result<(), HandlerError> {
        let key = format!("a:{}", arrival.tag);
        let storage = self.state.storage();
        arrival.deliveries = storage
            .get::<Arrival>(&key)
            .await?
            .map_or(0, |a| a.deliveries)
            + 1;
        storage.put(&key, &arrival).await?;
        Ok(())
    }
}

#[entrypoint(durable_object, origin)]
impl Probe {
    pub async fn start(
        &self,
        url: String,
        options: ProxyFetchOptions,
        tag: String,
    ) -> std::result::Result<Started, HandlerError> {
        let started_at_ms = now();
        let continuation = Continuation::new(ProbeClient::ON_RESULT, tag.clone());
        let request_id = proxy_fetch::proxy_fetch(self, url, continuation, &options).await?;
        Ok(Started {
            request_id,
            tag,
            started_at_ms,
            hold_ms: now() - started_at_ms,
        })
    }

    pub async fn on_result(
        &self,
        result: FetchResult,
        tag: String,
    ) -> std::result::Result<(), HandlerError> {
        let arrived_at_ms = now();
        let arrival = match result {
            Ok(r) => Arrival {
                tag,
                request_id: r.request_id,
                outcome: "response".into(),
                status: Some(r.status),
                body_len: r.body.len(),
                fetch_ms: r.duration_ms,
                arrived_at_ms,
                deliveries: 0,
            },
            Err(e) => Arrival {
                tag,
                request_id: e.request_id,
                outcome: format!("{:?}", e.kind),
                status: None,
                body_len: 0,
                fetch_ms: 0.0,
                arrived_at_ms,
                deliveries: 0,
            },
        };
        self.record(arrival).await
    }

    /// The baseline of the burst: the same fetch awaited in the DO, then the same handler
    /// work as `on_result` (one arrival record), so the two bursts differ only in the proxying.
    pub async fn awaited(
        &self,
        url: String,
        tag: String,
    ) -> std::result::Result<Awaited, HandlerError> {
        let started_at_ms = now();
        let mut response = Fetch::Url(
            url.parse()
                .map_err(|e| HandlerError::new("url", format!("{e}")))?,
        )
        .send()
        .await?;
        let body = response.bytes().await?;
        let done_at_ms = now();
        self.record(Arrival {
            tag: tag.clone(),
            request_id: String::new(),
            outcome: "response".into(),
            status: Some(response.status_code()),
            body_len: body.len(),
            fetch_ms: done_at_ms - started_at_ms,
            arrived_at_ms: done_at_ms,
            deliveries: 0,
        })
        .await?;
        Ok(Awaited {
            tag,
            started_at_ms,
            done_at_ms,
        })
    }

    pub async fn arrivals(&self) -> std::result::Result<Vec<Arrival>, HandlerError> {
        let map = self
            .state
            .storage()
            .list_with_options(ListOptions::new().prefix("a:"))
            .await?;
        Ok(map
            .values()
            .into_iter()
            .filter_map(|v| serde_wasm_bindgen::from_value(v.ok()?).ok())
            .collect())
    }

    pub async fn pending(&self) -> std::result::Result<Vec<RequestId>, HandlerError> {
        Ok(proxy_fetch::pending(self).await?)
    }

    /// The thing proxy-fetch exists to avoid: awaiting the fetch (and its body) in the DO.
    pub async fn direct(&self, url: String) -> std::result::Result<f64, HandlerError> {
        let start = now();
        let mut response = Fetch::Url(
            url.parse()
                .map_err(|e| HandlerError::new("url", format!("{e}")))?,
        )
        .send()
        .await?;
        response.bytes().await?;
        Ok(now() - start)
    }

    /// `n` sequential no-op RPC round trips to the executor entrypoint, in ms each.
    pub async fn noop_rpc(&self, n: u32) -> std::result::Result<Vec<f64>, HandlerError> {
        let executor = FetchExecutorClient::from_env(&self.env, "FETCH_EXECUTOR")?;
        let mut times = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let start = now();
            executor.health().await?;
            times.push(now() - start);
        }
        Ok(times)
    }

    /// `n` sequential no-op RPC round trips to the executor, each sent just after a storage
    /// write (so it waits for the write to be on disk, as a job does), in ms each.
    pub async fn gated_rpc(&self, n: u32) -> std::result::Result<Vec<f64>, HandlerError> {
        let executor = FetchExecutorClient::from_env(&self.env, "FETCH_EXECUTOR")?;
        let storage = self.state.storage();
        let mut times = Vec::with_capacity(n as usize);
        for i in 0..n {
            let start = now();
            let (written, answered) =
                futures_util::future::join(storage.put("gate", i), executor.health()).await;
            written?;
            answered?;
            times.push(now() - start);
        }
        Ok(times)
    }

    /// One RPC round trip carrying `bytes` bytes each way, in ms.
    pub async fn echo_rpc(&self, bytes: u32) -> std::result::Result<f64, HandlerError> {
        let echo = EchoClient::from_env(&self.env, "ECHO")?;
        let data = ByteBuf::from(vec![7u8; bytes as usize]);
        let start = now();
        let back = echo.echo(data).await?;
        let elapsed = now() - start;
        if back.len() != bytes as usize {
            return Err(HandlerError::new("echo", "length changed"));
        }
        Ok(elapsed)
    }

    /// One RPC call carrying `bytes` bytes one way (the answer is their count), in ms: the
    /// baseline of a 10 MiB result, which travels once, executor -> origin.
    pub async fn send_rpc(&self, bytes: u32) -> std::result::Result<f64, HandlerError> {
        let echo = EchoClient::from_env(&self.env, "ECHO")?;
        let data = ByteBuf::from(vec![7u8; bytes as usize]);
        let start = now();
        let received = echo.sink(data).await?;
        let elapsed = now() - start;
        if received != bytes {
            return Err(HandlerError::new("sink", "length changed"));
        }
        Ok(elapsed)
    }
}

pub struct Echo;

impl WorkerEntrypoint for Echo {
    fn new(_env: Env, _ctx: Context) -> Self {
        Echo
    }
}

#[entrypoint(name = "EchoEntrypoint")]
impl Echo {
    pub async fn echo(&self, data: ByteBuf) -> std::result::Result<ByteBuf, HandlerError> {
        Ok(data)
    }

    /// Takes the bytes and answers only their count.
    pub async fn sink(&self, data: ByteBuf) -> std::result::Result<u32, HandlerError> {
        Ok(data.len() as u32)
    }
}

#[event(fetch)]
async fn fetch(_req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    Response::ok("proxy-fetch bench worker")
}
