//! In-process calls for native tests: the generated client calls the implementation directly,
//! but every value still makes the trip through serde, as it would across the RPC boundary.

use serde::{de::DeserializeOwned, Serialize};

use super::{CallError, RpcError, RpcErrorKind};

fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> Result<T, String> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())
}

pub fn arg<T: Serialize + DeserializeOwned>(
    method: &str,
    name: &str,
    value: T,
) -> Result<T, RpcError> {
    round_trip(&value).map_err(|e| RpcError::bad_argument(method, name, e))
}

pub fn result<T, E>(method: &str, result: Result<T, E>) -> Result<T, CallError<E>>
where
    T: Serialize + DeserializeOwned,
    E: Serialize + DeserializeOwned,
{
    let bad = |e: String| CallError::Rpc(RpcError::new(RpcErrorKind::BadReturn, method, e));
    match result {
        Ok(value) => round_trip(&value).map_err(bad),
        Err(error) => Err(CallError::Handler(round_trip(&error).map_err(bad)?)),
    }
}

/// A `#[wait_until]` method called in process runs to completion before the call returns
/// (there is no background to hand it to); its error is logged, as in the runtime.
pub fn ack<E: std::fmt::Display>(label: &str, result: Result<(), E>) -> Result<(), RpcError> {
    if let Err(e) = result {
        super::serve::log_error(&format!("{label} failed in wait_until: {e}"));
    }
    Ok(())
}

/// What a local client answers in a wasm build, where calls go over RPC.
pub fn unavailable(method: &str) -> RpcError {
    RpcError::new(
        RpcErrorKind::Remote,
        method,
        "local clients are for native tests; in a worker, build the client from env or a stub",
    )
}
