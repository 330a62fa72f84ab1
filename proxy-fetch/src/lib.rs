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
    cancel, pending, proxy_fetch, Continuation, FetchError, FetchErrorKind,
    FetchOrchestratorClient, FetchResult, Flow, ProxyFetchError, ProxyFetchOptions,
    ProxyFetchOrigin, ProxyRequest, ProxyResponse, RequestId, RetryPolicy,
};

/// Makes this worker serve proxy-fetch's own classes, `FetchOrchestrator` and
/// `FetchExecutorEntrypoint`: the build exports them from the worker's main module only when
/// the worker says so, once, anywhere in its crate. A worker whose origins use another
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
    pub use crate::rpc::typed::{self, ArgType, MethodTypes};
    pub use ::wasm_bindgen;
    pub use ::wasm_bindgen::prelude::wasm_bindgen;
    pub use ::wasm_bindgen::{JsCast, JsValue};
    pub use js_sys::{Array, Promise};
    pub use serde::{de::DeserializeOwned, Serialize};
    pub use worker::Result as WorkerResult;
    pub use worker::{durable_object, DurableObject, Env, Request, Response, State};

    /// Builds a `WorkerEntrypoint` handler for one call.
    pub fn worker_entrypoint<T: crate::rpc::WorkerEntrypoint>(env: JsValue, ctx: JsValue) -> T {
        T::new(
            env.unchecked_into(),
            worker::Context::new(ctx.unchecked_into()),
        )
    }

    /// Lets a Durable Object's `&self` into a `'static` handler future.
    ///
    /// # Safety
    /// The object must outlive the future. The runtime keeps a Durable Object's Rust value (owned
    /// by its JS wrapper) alive while any call into it is pending, as workers-rs also relies on.
    pub unsafe fn durable_self<T>(this: &T) -> &'static T {
        &*(this as *const T)
    }

    /// What `#[entrypoint(durable_object, origin)]` generates for a proxy-fetch origin.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` receives proxy-fetch results but its #[entrypoint] is not marked `origin`",
        note = "write #[entrypoint(durable_object, origin)] on `{Self}`'s handler impl"
    )]
    pub trait OriginHandlers {
        /// The origin's binding when `ProxyFetchOptions::origin_binding` is not set.
        const INFERRED_BINDING: &'static str;
        /// Calls the RPC method `method` (JS name) with `args`; `None` if there is none.
        fn dispatch(&self, method: &str, ctx: JsValue, args: JsValue) -> Option<Promise>;
    }

    /// The RPC method results arrive through: `__proxyFetchDeliver(deliveries)`.
    #[cfg(feature = "system")]
    pub fn deliver<O: crate::ProxyFetchOrigin>(
        origin: Result<&'static O, crate::rpc::RpcError>,
        ctx: JsValue,
        args: JsValue,
    ) -> Promise {
        const METHOD: &str = "__proxyFetchDeliver";
        // Checked in full to refuse a malformed result before it consumes the request; each
        // result then goes on to its handler as it came (a large body is not copied).
        let call = origin.and_then(|origin| Ok((origin, crate::rpc::Args::new(METHOD, args, 1)?)));
        let call = call.and_then(|(origin, args)| {
            let deliveries = crate::system::checked_deliveries(&args)?;
            Ok(crate::system::deliver_all(origin, ctx, deliveries))
        });
        crate::rpc::serve::awaited(METHOD, call)
    }

    /// An origin's alarm: proxy-fetch's backstop, then the origin's own alarm if it has one.
    #[cfg(feature = "system")]
    pub fn origin_alarm<O: crate::ProxyFetchOrigin>(
        origin: Result<&'static O, crate::rpc::RpcError>,
    ) -> Promise {
        let origin = match origin {
            Ok(origin) => origin,
            Err(e) => return Promise::reject(&js_sys::Error::new(&e.to_string())),
        };
        let alarm = async move {
            crate::system::alarm(origin)
                .await
                .map(|()| JsValue::UNDEFINED)
                .map_err(|e| js_sys::Error::new(&e.to_string()).into())
        };
        // Built with `panic = "unwind"` (docs/panics.md), a panic fails this alarm run only.
        #[cfg(all(target_arch = "wasm32", panic = "unwind"))]
        let alarm = crate::rpc::serve::unwind::caught(alarm, |panic| {
            Err(js_sys::Error::new(&format!("proxy-fetch's alarm panicked: {panic}")).into())
        });
        wasm_bindgen_futures::future_to_promise(alarm)
    }

    /// How `#[entrypoint(durable_object)]`'s exports reach the workers-rs object: the JS wrapper
    /// passes it as a plain JS value, borrowed here. Chosen by autoref specialization,
    /// `(&DurableObjectProbe::<T>::new()).borrow_object(..)` with both traits in scope: for a
    /// Durable Object, [`ViaDurableObject`]; for any other type the fallback
    /// [`NotADurableObject`], so that the one error such a type gets is
    /// `assert_durable_object`'s, not one per method about wasm-bindgen's traits.
    pub struct DurableObjectProbe<T>(core::marker::PhantomData<fn() -> T>);

    impl<T> DurableObjectProbe<T> {
        #[allow(clippy::new_without_default)]
        pub const fn new() -> Self {
            DurableObjectProbe(core::marker::PhantomData)
        }
    }

    pub trait ViaDurableObject<T> {
        fn borrow_object(
            &self,
            object: &JsValue,
            method: &'static str,
        ) -> Result<&'static T, crate::rpc::RpcError>;
    }

    // wasm-bindgen's `convert` traits are its internal ABI; the exact version is pinned
    // (Cargo.toml's `wasm-bindgen = "=..."`), and the tests/workerd suites call every
    // Durable Object method through this path.
    impl<T> ViaDurableObject<T> for DurableObjectProbe<T>
    where
        T: worker::DurableObject + ::wasm_bindgen::convert::RefFromWasmAbi + 'static,
        T::Abi: ::wasm_bindgen::convert::WasmAbi<Prim1 = u32, Prim2 = (), Prim3 = (), Prim4 = ()>,
    {
        fn borrow_object(
            &self,
            object: &JsValue,
            method: &'static str,
        ) -> Result<&'static T, crate::rpc::RpcError> {
            // wasm-bindgen's JS class keeps the Rust object's address in `__wbg_ptr` (0 once freed).
            let ptr = js_sys::Reflect::get(object, &JsValue::from_str("__wbg_ptr"))
                .ok()
                .and_then(|p| p.as_f64())
                .filter(|p| *p > 0.0 && *p <= u32::MAX as f64)
                .ok_or_else(|| {
                    crate::rpc::RpcError::new(
                        crate::rpc::RpcErrorKind::Remote,
                        method,
                        "the Durable Object's Rust object is gone",
                    )
                })?;
            // SAFETY: `ptr` is the live object of the JS class wasm-bindgen made for `T` (the
            // wrapper passes `this.rust`; wasm-bindgen's guard replaced a dead instance). The
            // borrow is extended to `'static` as `durable_self` explains.
            unsafe {
                let abi =
                    <T::Abi as ::wasm_bindgen::convert::WasmAbi>::join(ptr as u32, (), (), ());
                let anchor = T::ref_from_abi(abi);
                Ok(durable_self(&*anchor))
            }
        }
    }

    pub trait NotADurableObject<T> {
        fn borrow_object(
            &self,
            object: &JsValue,
            method: &'static str,
        ) -> Result<&'static T, crate::rpc::RpcError>;
    }

    /// Only reached in a crate that does not compile (`assert_durable_object` fails).
    impl<T> NotADurableObject<T> for &DurableObjectProbe<T> {
        fn borrow_object(
            &self,
            _: &JsValue,
            method: &'static str,
        ) -> Result<&'static T, crate::rpc::RpcError> {
            Err(crate::rpc::RpcError::new(
                crate::rpc::RpcErrorKind::Remote,
                method,
                "not a Durable Object",
            ))
        }
    }

    /// Fails to compile, at the user's `durable_object`, unless `T` is a Durable Object.
    pub fn assert_durable_object<T: IsDurableObject>() {}

    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a Durable Object, so #[entrypoint(durable_object)] cannot serve its methods",
        label = "not a workers-rs Durable Object",
        note = "declare it with workers-rs `#[durable_object]` and `impl DurableObject for {Self}`, or \
                serve its methods from a Worker entrypoint: #[entrypoint] or #[entrypoint(name = \"...\")]"
    )]
    pub trait IsDurableObject {}

    impl<T: worker::DurableObject> IsDurableObject for T {}
    pub fn assert_worker_entrypoint<T: crate::rpc::WorkerEntrypoint>() {}
}
