//! The callee's side: what a generated handler export does with its decoded call.

use js_sys::{Function, Promise};
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
    let answer = async move {
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
    };
    // Built with `panic = "unwind"`, a panic in the handler fails this call only: the caller
    // gets a `Remote` error naming the method and the panic, and the instance lives on.
    #[cfg(all(target_arch = "wasm32", panic = "unwind"))]
    let answer = unwind::caught(answer, move |panic| {
        log_error(&format!("{method} panicked: {panic}"));
        Err(rpc_error_to_js(&RpcError::new(
            RpcErrorKind::Remote,
            method,
            format!("the handler panicked: {panic}"),
        )))
    });
    future_to_promise(answer)
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
    let background = async move {
        if let Err(e) = work.await {
            log_error(&format!("{label} failed in wait_until: {e}"));
        }
        Ok(JsValue::UNDEFINED)
    };
    #[cfg(all(target_arch = "wasm32", panic = "unwind"))]
    let background = unwind::caught(background, move |panic| {
        log_error(&format!("{label} panicked in wait_until: {panic}"));
        Ok(JsValue::UNDEFINED)
    });
    let background = future_to_promise(background);
    if let Err(e) = extend_lifetime(ctx, &background) {
        // The work is already running; without waitUntil it may be cut short, so say so.
        log_error(&format!(
            "{label}: ctx.waitUntil unavailable ({e:?}); work runs unprotected"
        ));
    }
    Promise::resolve(&JsValue::UNDEFINED)
}

/// Only in builds with `panic = "unwind"` (see docs/panics.md): each poll of a handler's future
/// runs inside `catch_unwind`, so a panic ends that future alone.
#[cfg(all(target_arch = "wasm32", panic = "unwind"))]
pub(crate) mod unwind {
    use std::any::Any;
    use std::future::Future;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// `work`, with a panic in any of its polls turned into `on_panic(message)`. The panicked
    /// future is dropped and never polled again. `AssertUnwindSafe`: nothing outside the
    /// future observes its state after the panic (it is dropped), and state it shares with
    /// other calls (a Durable Object's fields) is the handler's to keep consistent, as it
    /// must be with `?` returns too.
    pub fn caught<F, P>(work: F, on_panic: P) -> AssertUnwindSafe<CatchPanic<F, P>>
    where
        F: Future,
        P: FnOnce(String) -> F::Output,
    {
        AssertUnwindSafe(CatchPanic {
            work: Some(Box::pin(work)),
            on_panic: Some(on_panic),
        })
    }

    pub struct CatchPanic<F, P> {
        work: Option<Pin<Box<F>>>,
        on_panic: Option<P>,
    }

    // Both fields are boxed or never pinned.
    impl<F, P> Unpin for CatchPanic<F, P> {}

    impl<F, P> Future for CatchPanic<F, P>
    where
        F: Future,
        P: FnOnce(String) -> F::Output,
    {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            let this = &mut *self;
            let Some(work) = this.work.as_mut() else {
                return Poll::Pending; // already finished; a conforming executor never gets here
            };
            match catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(out)) => {
                    this.work = None;
                    Poll::Ready(out)
                }
                Err(payload) => {
                    this.work = None;
                    match this.on_panic.take() {
                        Some(on_panic) => Poll::Ready(on_panic(message(payload.as_ref()))),
                        None => Poll::Pending,
                    }
                }
            }
        }
    }

    fn message(payload: &(dyn Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_owned()
        }
    }
}

fn extend_lifetime(ctx: &JsValue, promise: &Promise) -> Result<JsValue, JsValue> {
    let wait_until: Function = super::js::get(ctx, "waitUntil")?.dyn_into()?;
    wait_until.call1(ctx, promise)
}

/// Logs to the Workers console (`console.error`), or to stderr in native tests.
pub fn log_error(message: &str) {
    #[cfg(target_arch = "wasm32")]
    worker::console_error!("{}", message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{message}");
}
