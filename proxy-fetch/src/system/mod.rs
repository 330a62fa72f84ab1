//! The proxy-fetch system: an origin Durable Object hands a slow fetch to the
//! [`FetchExecutor`] (a Worker entrypoint that acknowledges at once and works under
//! `ctx.waitUntil`), directly or through the [`FetchOrchestrator`] (a Durable Object queue); the
//! result comes back to a handler of the origin.
//!
//! - [`protocol`]: the messages and the RPC methods each role serves; the roles below depend
//!   on it, not on each other.
//! - `origin`: `proxy_fetch`, delivery, cancel, the origin's alarm; `ledger`: how it keeps
//!   its pending requests.
//! - `orchestrator`, `executor`: the two other roles.
//! - `options`, `policy`, `types`, `http`: what they share.

mod batch;
mod concurrent;
#[cfg(not(target_arch = "wasm32"))]
mod dts;
mod executor;
mod http;
mod ledger;
mod options;
mod orchestrator;
mod origin;
mod policy;
pub mod protocol;
mod strict;
mod types;

pub use executor::{ExecutorHealth, FetchExecutor, FetchExecutorClient};
pub use options::{
    parse_retry_after, Attempt, Flow, InvalidOption, ProxyFetchOptions, RetryPolicy,
    DELIVERY_RESERVE_MS, FETCH_BUDGET_MS, INVOCATION_BUDGET_MS, MAX_BODY_LIMIT,
};
pub use orchestrator::{FetchOrchestrator, FetchOrchestratorClient, QueueItem, QueueStats};
pub use origin::{
    alarm, cancel, pending, proxy_fetch, Continuation, ProxyFetchError, ProxyFetchOrigin,
};
pub use policy::{ExecutorPolicy, POLICY_VAR};
pub use protocol::DeliveryOutcome;
pub use types::{
    FetchError, FetchErrorKind, FetchResult, ProxyRequest, ProxyResponse, Redirect, RequestId,
};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use dts::described;
pub(crate) use origin::{checked_deliveries, deliver_all};

/// Milliseconds since the epoch. In workerd the clock advances only across I/O, which is
/// what every duration here spans.
pub(crate) fn now_ms() -> f64 {
    worker::Date::now().as_millis() as f64
}
