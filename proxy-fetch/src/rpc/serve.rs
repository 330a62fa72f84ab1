//! The callee's side: what a generated handler export does with its decoded call.

use js_sys::{Function, Promise, Reflect};
use serde::Serialize;
use std::fmt::Display;
use std::future::Future;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::future_to_promise;

use super::codec::{handler_error_to_js, rpc_error_to_js, to_js};
use super::{RpcError, RpcErrorKind};

/// Runs an awaited method: the caller's promise settles with the handler's result.
pub fn awaited<F, T, E>(method: &'static str, call: Result<F, RpcError>) -> Promise
where
    F: Future<Output = Result<T, E>> + 'static,
    T: Serialize,
    E: Serialize + Display,
{
    let work = match call {
        Ok(work) => work,
        Err(e) => return Promise::reject(&rpc_error_to_js(&e)),
    };
    future_to_promise(async move {
        match work.await {
            Ok(value) => to_js(&value).map_err(|e| {
                rpc_error_to_js(&RpcError::new(
                    RpcErrorKind::BadReturn,
                    method,
                    format!("result could not be encoded: {e}"),
                ))
            }),
            Err(error) => Err(handler_error_to_js(&error)),
        }
    })
}

/// Runs a `#[wait_until]` method: arguments are checked now (a bad payload is the caller's
/// error), then the work goes to `ctx.waitUntil` and the caller is acknowledged at once.
/// The work's error cannot reach the caller any more, so it is logged with the method's name.
pub fn wait_until<F, E>(label: &'static str, ctx: &JsValue, call: Result<F, RpcError>) -> Promise
where
    F: Future<Output = Result<(), E>> + 'static,
    E: Display,
{
    let work = match call {
        Ok(work) => work,
        Err(e) => return Promise::reject(&rpc_error_to_js(&e)),
    };
    let background = future_to_promise(async move {
        if let Err(e) = work.await {
            log_error(&format!("{label} failed in wait_until: {e}"));
        }
        Ok(JsValue::UNDEFINED)
    });
    if let Err(e) = extend_lifetime(ctx, &background) {
        // The work is already running; without waitUntil it may be cut short, so say so.
        log_error(&format!(
            "{label}: ctx.waitUntil unavailable ({e:?}); work runs unprotected"
        ));
    }
    Promise::resolve(&JsValue::UNDEFINED)
}

fn extend_lifetime(ctx: &JsValue, promise: &Promise) -> Result<JsValue, JsValue> {
    let wait_until: Function = Reflect::get(ctx, &JsValue::from_str("waitUntil"))?.dyn_into()?;
    wait_until.call1(ctx, promise)
}

/// Logs to the Workers console (`console.error`), or to stderr in native tests.
pub fn log_error(message: &str) {
    #[cfg(target_arch = "wasm32")]
    worker::console_error!("{}", message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{message}");
}
