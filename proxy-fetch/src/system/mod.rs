//! The proxy-fetch system: an origin Durable Object hands a slow fetch to the
//! [`FetchExecutor`] (a Worker entrypoint that acknowledges at once and works under
//! `ctx.waitUntil`), directly or through the [`FetchOrchestrator`] (a Durable Object queue); the
//! result comes back to a handler of the origin. ARCHITECTURE.md draws the flows.
//!
//! One module per role; the roles depend on [`protocol`] and the shared modules, not on each
//! other:
//! - `origin/`: starting a request, the ledger of pending requests, receiving a delivery, the
//!   sweep (the origin's alarm).
//! - `fetch/`: the fetch itself (policy, retries, body limit, delivery batching), which any
//!   host runs; `executor`: its `waitUntil` host, the `FetchExecutorEntrypoint`; `consumer`:
//!   its queue host, the long path (fetches longer than the `waitUntil` window).
//! - `orchestrator`: the durable queue of the orchestrated flow.
//! - [`protocol`]: the messages and the RPC methods each role serves.
//! - Shared: `error`, `options`, `policy` (the executor's policy), `types` (requests, results),
//!   `storage` (paging, alarms), `batch` (group commit), `concurrent` (futures side by side).

mod batch;
mod concurrent;
mod consumer;
#[cfg(not(target_arch = "wasm32"))]
mod dts;
mod error;
mod executor;
mod fetch;
mod options;
mod orchestrator;
mod origin;
mod policy;
pub mod protocol;
mod refusal;
mod storage;
mod strict;
mod types;
mod wire;

pub use consumer::QUEUE_VAR;
pub use error::ProxyFetchError;
pub use executor::{ExecutorHealth, FetchExecutor, FetchExecutorClient};
pub use options::{
    parse_retry_after, Attempt, Budget, Durability, FetchPath, Flow, InvalidOption,
    ProxyFetchOptions, RetryPolicy, DELIVERY_RESERVE_MS, FETCH_BUDGET_MS, INVOCATION_BUDGET_MS,
    LONG_DELIVERY_RESERVE_MS, LONG_FETCH_BUDGET_MS, MAX_ATTEMPTS, MAX_BODY_LIMIT,
};
pub use orchestrator::{FetchOrchestrator, FetchOrchestratorClient, QueueItem, QueueStats};
#[doc(hidden)]
pub use origin::OriginHandlers;
pub use origin::{alarm, cancel, pending, proxy_fetch, Continuation, ProxyFetchOrigin};
pub use policy::{ExecutorLimits, ExecutorPolicy, POLICY_VAR};
pub use protocol::DeliveryOutcome;
pub use types::{
    FetchError, FetchErrorKind, FetchResult, ProxyRequest, ProxyResponse, Redirect, RequestId,
};

use crate::rpc::js;
pub(crate) use consumer::serve_queue;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use dts::described;
pub(crate) use origin::{serve_alarm, serve_claim, serve_delivery};

/// Milliseconds since the epoch. In workerd the clock advances only across I/O, which is
/// what every duration here spans.
pub(crate) fn now_ms() -> f64 {
    worker::Date::now().as_millis() as f64
}

/// `bytes` random bytes from `crypto.getRandomValues`, as hex. The bytes are taken from a
/// pool the isolate fills [`RANDOM_POOL`] bytes at a time: one call into JS per 16 ids or
/// tokens, not one each.
pub(crate) fn random_hex(bytes: usize) -> Result<String, ProxyFetchError> {
    thread_local! {
        static POOL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // No borrow of the pool is held across the call into JS, which might call back in.
    if POOL.with(|pool| pool.borrow().len()) < bytes {
        let fresh = random_bytes(RANDOM_POOL.max(bytes))?;
        POOL.with(|pool| *pool.borrow_mut() = fresh);
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool.len().checked_sub(bytes).ok_or_else(|| {
            ProxyFetchError::Storage("the random bytes were taken meanwhile".into())
        })?;
        let hex = hex(&pool[at..]);
        // Each byte is used once.
        pool.truncate(at);
        Ok(hex)
    })
}

/// `bytes` in lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect()
}

/// Random bytes drawn at once by [`random_hex`].
const RANDOM_POOL: usize = 256;

fn random_bytes(bytes: usize) -> Result<Vec<u8>, ProxyFetchError> {
    let crypto = js::get(&js_sys::global(), "crypto")
        .map_err(|_| ProxyFetchError::Storage("no crypto global".into()))?;
    let buffer = js_sys::Uint8Array::new_with_length(bytes as u32);
    let filled = js::get(&crypto, "getRandomValues")
        .ok()
        .and_then(|f| wasm_bindgen::JsCast::dyn_into::<js_sys::Function>(f).ok())
        .map(|f| f.call1(&crypto, &buffer).is_ok())
        .unwrap_or(false);
    if !filled {
        return Err(ProxyFetchError::Storage(
            "crypto.getRandomValues unavailable".into(),
        ));
    }
    Ok(buffer.to_vec())
}

/// The class of binding `name` of `env` (`DurableObjectNamespace`, `Fetcher`, ...; "" when
/// there is none or it has no class name).
pub(crate) fn binding_class(env: &wasm_bindgen::JsValue, name: &str) -> String {
    use wasm_bindgen::JsValue;
    js_sys::Reflect::get(env, &JsValue::from_str(name))
        .and_then(|v| js::get(&v, "constructor"))
        .and_then(|c| js::get(&c, "name"))
        .ok()
        .and_then(|n| n.as_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}
