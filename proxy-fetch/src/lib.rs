//! proxy-fetch: typed RPC for Cloudflare Workers and Durable Objects, and the proxy-fetch
//! system built on it.
//!
//! A Durable Object that awaits a slow API is billed wall-clock time for the whole wait.
//! [`proxy_fetch()`] hands the request to the [`FetchExecutor`](system::FetchExecutor) (a
//! Worker entrypoint that acknowledges at once and fetches under `ctx.waitUntil`), directly
//! ([`Flow::Direct`], the default; the origin's alarm is the backstop) or through the
//! [`FetchOrchestrator`](system::FetchOrchestrator) (a Durable Object queue,
//! [`Flow::Orchestrated`]); the result comes back to a handler of the origin named by a
//! [`Continuation`], once (again only if the origin's instance died while the handler ran):
//!
//! ```ignore
//! #[origin]
//! pub struct Inbox { state: State, env: Env }
//!
//! #[entrypoint(durable_object, origin)]
//! impl Inbox {
//!     pub async fn check(&self, city: String) -> Result<String, HandlerError> {
//!         let continuation = Continuation::new(InboxClient::ON_RESPONSE, city.clone());
//!         let url = format!("https://api.example.com/weather/{city}");
//!         Ok(proxy_fetch(self, url, continuation, &ProxyFetchOptions::default()).await?)
//!     }
//!
//!     async fn on_response(&self, result: FetchResult, city: String) -> Result<(), HandlerError> {
//!         // Ok(ProxyResponse) for any status, or Err(FetchError) with a FetchErrorKind.
//!         Ok(())
//!     }
//! }
//! ```
//!
//! - [`rpc`]: the typed RPC layer [`entrypoint`] generates code for: clients, stubs, errors.
//! - [`system`] (feature `system`, default): origin API, orchestrator, executor, options.
//!
//! The repository README has the whole worker (`Cargo.toml`, `wrangler.toml`, the build), and
//! `tests/ui/pass/readme_origin.rs` compiles that example verbatim.

#![warn(missing_docs)]

// Lets the crate use its own macro, whose output names everything `::proxy_fetch::...`.
extern crate self as proxy_fetch;

pub mod rpc;
#[cfg(feature = "system")]
pub mod system;
mod version;

pub use proxy_fetch_macros::entrypoint;
#[cfg(feature = "system")]
pub use proxy_fetch_macros::origin;
#[cfg(feature = "system")]
pub use system::{
    cancel, pending, proxy_fetch, Continuation, Durability, FetchError, FetchErrorKind,
    FetchOrchestratorClient, FetchPath, FetchResult, Flow, ProxyFetchError, ProxyFetchOptions,
    ProxyFetchOrigin, ProxyRequest, ProxyResponse, RequestId, RetryPolicy,
};

/// Makes this worker serve proxy-fetch's own classes, `FetchOrchestrator` and
/// `FetchExecutorEntrypoint`, and the long path's queue consumer (for the batches of the queue
/// its `PROXY_FETCH_QUEUE` var names): the build exports them from the worker's main module only
/// when the worker says so, once, anywhere in its crate. A worker whose origins use another
/// worker's executor and orchestrator leaves it out. With `proxy-fetch-build --dts` it also
/// declares the two classes' methods for TypeScript callers (docs/typescript.md).
#[cfg(feature = "system")]
#[macro_export]
macro_rules! serve_system {
    () => {
        const _: () = {
            #[$crate::__private::wasm_bindgen(wasm_bindgen = $crate::__private::wasm_bindgen, js_name = "__pf__serve__FetchOrchestrator")]
            pub fn __pf_serve_orchestrator() {}
            #[$crate::__private::wasm_bindgen(wasm_bindgen = $crate::__private::wasm_bindgen, js_name = "__pf__serve__FetchExecutorEntrypoint")]
            pub fn __pf_serve_executor() {}
            /// The long path's queue consumer: the JS runtime's `queue` handler calls it for
            /// batches of the queue named in the `PROXY_FETCH_QUEUE` var.
            #[$crate::__private::wasm_bindgen(wasm_bindgen = $crate::__private::wasm_bindgen, js_name = "__pf__queue__long")]
            pub fn __pf_queue_long(
                batch: $crate::__private::JsValue,
                env: $crate::__private::JsValue,
            ) -> $crate::__private::Promise {
                $crate::__private::consume_long(batch, env)
            }
        };

        /// For `proxy-fetch-build --dts`: the TypeScript declarations of the classes served.
        #[cfg(all(test, not(target_arch = "wasm32")))]
        #[test]
        fn __pf_dts_serve_system() -> ::core::result::Result<(), ::std::string::String> {
            for ep in $crate::__private::system_described() {
                $crate::__private::dts::export(&ep)?;
            }
            ::core::result::Result::Ok(())
        }
    };
}

/// Used by code that `#[entrypoint]` generates. Not a public API: it changes without notice.
/// Only re-exports: what the generated code calls lives in the module of its role.
#[doc(hidden)]
pub mod __private {
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::rpc::dts;
    /// What `serve_system!()` declares to TypeScript callers.
    #[cfg(all(feature = "system", not(target_arch = "wasm32")))]
    pub fn system_described() -> Vec<dts::Entrypoint> {
        crate::system::described()
    }
    pub use crate::rpc::local;
    pub use crate::rpc::object::{
        assert_durable_object, assert_worker_entrypoint, durable_self, worker_entrypoint,
        DurableObjectProbe, IsDurableObject, NotADurableObject, ViaDurableObject,
    };
    pub use crate::rpc::typed::{self, ArgType, MethodTypes};
    #[cfg(feature = "system")]
    pub use crate::system::OriginHandlers;
    #[cfg(feature = "system")]
    pub use serde_json::Value as JsonValue;

    /// An origin's RPC method results arrive through: `__proxyFetchDeliver(deliveries)`.
    #[cfg(feature = "system")]
    pub fn deliver<O: crate::ProxyFetchOrigin>(
        origin: Result<&'static O, crate::rpc::RpcError>,
        args: JsValue,
    ) -> Promise {
        crate::system::serve_delivery(origin, args, false)
    }

    /// The same with each delivery packed: `__proxyFetchDeliverPacked(deliveries)`.
    #[cfg(feature = "system")]
    pub fn deliver_packed<O: crate::ProxyFetchOrigin>(
        origin: Result<&'static O, crate::rpc::RpcError>,
        args: JsValue,
    ) -> Promise {
        crate::system::serve_delivery(origin, args, true)
    }

    /// An origin's claim method for the long path's consumer: `__proxyFetchClaim(claims)`.
    #[cfg(feature = "system")]
    pub fn claim<O: crate::ProxyFetchOrigin>(
        origin: Result<&'static O, crate::rpc::RpcError>,
        ctx: JsValue,
        args: JsValue,
    ) -> Promise {
        crate::system::serve_claim(origin, ctx, args)
    }

    /// The long path's queue consumer (`serve_system!()` exports it): never rejects.
    #[cfg(feature = "system")]
    pub fn consume_long(batch: JsValue, env: JsValue) -> Promise {
        crate::system::serve_queue(batch, env)
    }

    /// An origin's alarm: proxy-fetch's backstop, then the origin's own alarm if it has one.
    #[cfg(feature = "system")]
    pub fn origin_alarm<O: crate::ProxyFetchOrigin>(
        origin: Result<&'static O, crate::rpc::RpcError>,
    ) -> Promise {
        crate::system::serve_alarm(origin)
    }
    pub use ::wasm_bindgen;
    pub use ::wasm_bindgen::prelude::wasm_bindgen;
    pub use ::wasm_bindgen::{JsCast, JsValue};
    pub use js_sys::{Array, Promise};
    pub use serde::{de::DeserializeOwned, Serialize};
    pub use worker::Result as WorkerResult;
    pub use worker::{durable_object, DurableObject, Env, Request, Response, State};
}
