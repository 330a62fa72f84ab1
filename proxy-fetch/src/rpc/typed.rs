//! The argument and result types of each `#[entrypoint]` method, declared once by generated
//! code as associated types of the client (`MethodTypes<I>`, `ArgType<I, N>` for method `I`,
//! argument `N`), so that a type serde cannot carry is reported once, at the user's type,
//! instead of once per generated use. Every function here is generic over those declarations
//! and so never repeats the check.

use js_sys::{Array, Promise};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Display;
use std::future::Future;
use wasm_bindgen::JsValue;

use super::{Args, CallError, RpcError, Stub};

/// Result types of method `I`: `Result<Ok, Err>`.
pub trait MethodTypes<const I: usize> {
    type Ok: Serialize + DeserializeOwned;
    type Err: Serialize + DeserializeOwned + Display;
}

/// Type of argument `N` of method `I`.
pub trait ArgType<const I: usize, const N: usize> {
    type T: Serialize + DeserializeOwned;
}

pub fn encode_arg<C: ArgType<I, N>, const I: usize, const N: usize>(
    method: &str,
    name: &str,
    value: &C::T,
) -> Result<JsValue, RpcError> {
    super::encode_arg(method, name, value)
}

pub fn decode_arg<C: ArgType<I, N>, const I: usize, const N: usize>(
    args: &Args,
    name: &str,
) -> Result<C::T, RpcError> {
    args.get(N as u32, name)
}

pub async fn call<C: MethodTypes<I>, const I: usize>(
    stub: &Stub,
    method: &str,
    args: Array,
) -> Result<C::Ok, CallError<C::Err>> {
    stub.call(method, args).await
}

pub fn awaited<C: MethodTypes<I>, const I: usize>(
    method: &'static str,
    call: Result<impl Future<Output = Result<C::Ok, C::Err>> + 'static, RpcError>,
) -> Promise {
    super::serve::awaited(method, call)
}

pub fn wait_until<C: MethodTypes<I>, const I: usize>(
    label: &'static str,
    ctx: &JsValue,
    call: Result<impl Future<Output = Result<(), C::Err>> + 'static, RpcError>,
) -> Promise {
    super::serve::wait_until(label, ctx, call)
}

/// A continuation handler's result argument, handed on as the delivery decoded it. Bound to
/// `FetchResult`: a handler is one because its first argument is.
#[cfg(feature = "system")]
pub fn result_arg<C: ArgType<I, 0, T = crate::system::FetchResult>, const I: usize>(
    result: crate::system::FetchResult,
) -> C::T {
    result
}

/// A continuation handler's data argument, from the JSON value its request's record keeps
/// (no trip through JS).
#[cfg(feature = "system")]
pub fn data_arg<C: ArgType<I, 1>, const I: usize>(
    method: &str,
    name: &str,
    data: serde_json::Value,
) -> Result<C::T, RpcError> {
    serde_json::from_value(data).map_err(|e| RpcError::bad_argument(method, name, e))
}

/// In-process calls (native tests).
pub mod local {
    use super::*;

    pub fn arg<C: ArgType<I, N>, const I: usize, const N: usize>(
        method: &str,
        name: &str,
        value: C::T,
    ) -> Result<C::T, RpcError> {
        crate::rpc::local::arg(method, name, value)
    }

    pub fn result<C: MethodTypes<I>, const I: usize>(
        method: &str,
        result: Result<C::Ok, C::Err>,
    ) -> Result<C::Ok, CallError<C::Err>> {
        crate::rpc::local::result(method, result)
    }

    pub fn ack<C: MethodTypes<I>, const I: usize>(
        label: &str,
        result: Result<(), C::Err>,
    ) -> Result<(), RpcError> {
        crate::rpc::local::ack(label, result)
    }
}
