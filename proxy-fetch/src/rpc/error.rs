//! Errors of an RPC call, kept apart from the errors a handler returns on purpose.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong on the way to or from a handler (the handler's own `Err` is
/// [`CallError::Handler`] instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub enum RpcErrorKind {
    /// The binding named by the caller is not in `env` (check the wrangler configuration).
    MissingBinding,
    /// The target has no such method (old deployment, wrong entrypoint, typo in a JS caller).
    NoSuchMethod,
    /// An argument could not be encoded by the caller or decoded by the callee.
    BadArgument,
    /// The value the callee returned could not be decoded by the caller.
    BadReturn,
    /// The call failed in the runtime or in a callee that is not proxy-fetch code
    /// (network error between isolates, a JS exception, an evicted or crashed callee).
    Remote,
}

/// A failed RPC call that never produced the handler's own result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct RpcError {
    /// What failed: the encoding, the decoding or the call itself.
    pub kind: RpcErrorKind,
    /// The JS name of the method called, e.g. `executeFetches`.
    pub method: String,
    /// What went wrong, for people.
    pub message: String,
}

impl RpcError {
    /// An error of `kind` in a call of `method` (its JS name).
    pub fn new(kind: RpcErrorKind, method: &str, message: impl Into<String>) -> Self {
        RpcError {
            kind,
            method: method.to_owned(),
            message: message.into(),
        }
    }

    /// Argument `name` of a call of `method` could not be decoded: `why`.
    pub(crate) fn bad_argument(method: &str, name: &str, why: impl fmt::Display) -> Self {
        RpcError::new(
            RpcErrorKind::BadArgument,
            method,
            format!("argument `{name}`: {why}"),
        )
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rpc `{}` failed ({:?}): {}",
            self.method, self.kind, self.message
        )
    }
}

impl std::error::Error for RpcError {}

/// The error of a generated client method: either the handler ran and returned `Err(E)`, or
/// the call itself failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError<E> {
    /// The handler's own error, decoded into the type the handler returns.
    Handler(E),
    /// The call did not reach the handler, or its result could not be read.
    Rpc(RpcError),
}

impl<E> CallError<E> {
    /// The handler's error, if the handler ran and failed.
    pub fn handler(&self) -> Option<&E> {
        match self {
            CallError::Handler(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }

    /// The transport error, if the call itself failed.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            CallError::Handler(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }
}

impl<E> From<RpcError> for CallError<E> {
    fn from(e: RpcError) -> Self {
        CallError::Rpc(e)
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Handler(e) => e.fmt(f),
            CallError::Rpc(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for CallError<E> {}

impl<E: fmt::Display> From<CallError<E>> for worker::Error {
    fn from(e: CallError<E>) -> Self {
        worker::Error::RustError(e.to_string())
    }
}

impl From<RpcError> for worker::Error {
    fn from(e: RpcError) -> Self {
        worker::Error::RustError(e.to_string())
    }
}

/// A ready-made error type for handlers: a machine-readable `kind` and a message.
///
/// Any `Serialize + DeserializeOwned + Display` type works as a handler's error; this one is
/// convenient because `?` converts `worker::Error`, `serde_json::Error` and [`RpcError`] into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
pub struct HandlerError {
    /// A machine-readable kind, e.g. `"worker"` for a converted `worker::Error`.
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
}

impl HandlerError {
    /// An error of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<HandlerError> for worker::Error {
    fn from(e: HandlerError) -> Self {
        worker::Error::RustError(e.to_string())
    }
}

impl From<worker::Error> for HandlerError {
    fn from(e: worker::Error) -> Self {
        HandlerError::new("worker", e.to_string())
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        HandlerError::new("json", e.to_string())
    }
}

impl From<RpcError> for HandlerError {
    fn from(e: RpcError) -> Self {
        HandlerError::new(format!("rpc.{:?}", e.kind), e.to_string())
    }
}

impl<E: fmt::Display> From<CallError<E>> for HandlerError {
    fn from(e: CallError<E>) -> Self {
        match e {
            CallError::Handler(e) => HandlerError::new("handler", e.to_string()),
            CallError::Rpc(e) => e.into(),
        }
    }
}
