//! Errors: what `proxy_fetch`, `cancel` and `pending` return. Every role reports through these
//! types; none needs another role's module to name an error.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::options::InvalidOption;
use crate::rpc::{HandlerError, RpcError};

/// Why `proxy_fetch` or `cancel` could not do what was asked. When `proxy_fetch` returns one,
/// no handler will run for the request and nothing of it stays stored; only a start whose
/// storage failed after its job went out may have reached the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyFetchError {
    /// The URL or method cannot be fetched.
    InvalidRequest(String),
    /// An option is out of range.
    InvalidOptions(InvalidOption),
    /// `allowed_hosts` does not allow the URL's host.
    Rejected(String),
    /// A binding the request needs is missing from env; the message names the option to set.
    MissingBinding(String),
    /// The executor (direct flow) or the orchestrator could not be reached or refused the job.
    Dispatch(RpcError),
    /// The origin's storage failed, or the continuation data could not be serialized.
    Storage(String),
    /// The request needs the long path (its `timeout_ms` is above what the executor's
    /// `waitUntil` window can honour, or `path` is `Long`) and env has no queue producer
    /// binding `binding`: nothing was stored, nothing sent.
    LongPathUnavailable {
        /// The request's `timeout_ms`.
        timeout_ms: u64,
        /// The most the short path can give one attempt
        /// ([`FETCH_BUDGET_MS`](super::FETCH_BUDGET_MS)).
        window_ms: u64,
        /// The queue binding that is missing ([`ProxyFetchOptions::queue_binding`](super::ProxyFetchOptions::queue_binding)).
        binding: String,
    },
}

impl ProxyFetchError {
    /// A `Storage` error from anything that says what went wrong.
    pub(crate) fn storage(e: impl fmt::Display) -> Self {
        ProxyFetchError::Storage(e.to_string())
    }
}

impl fmt::Display for ProxyFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyFetchError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            ProxyFetchError::InvalidOptions(e) => write!(f, "invalid options: {e}"),
            ProxyFetchError::Rejected(m) => write!(f, "rejected by policy: {m}"),
            ProxyFetchError::MissingBinding(m) => write!(f, "missing binding: {m}"),
            ProxyFetchError::Dispatch(e) => write!(f, "could not dispatch: {e}"),
            ProxyFetchError::Storage(m) => write!(f, "origin storage: {m}"),
            ProxyFetchError::LongPathUnavailable {
                timeout_ms,
                window_ms,
                binding,
            } => write!(
                f,
                "long path unavailable: timeout_ms {timeout_ms} needs the queue consumer (the \
                 waitUntil path gives an attempt at most {window_ms} ms), but env has no queue \
                 binding `{binding}`; add [[queues.producers]] binding = \"{binding}\" to \
                 wrangler.toml or set ProxyFetchOptions::queue_binding"
            ),
        }
    }
}

impl std::error::Error for ProxyFetchError {}

impl From<ProxyFetchError> for worker::Error {
    fn from(e: ProxyFetchError) -> Self {
        worker::Error::RustError(e.to_string())
    }
}

impl From<ProxyFetchError> for HandlerError {
    fn from(e: ProxyFetchError) -> Self {
        let code = match &e {
            ProxyFetchError::InvalidRequest(_) => "invalid_request",
            ProxyFetchError::InvalidOptions(_) => "invalid_options",
            ProxyFetchError::Rejected(_) => "rejected",
            ProxyFetchError::MissingBinding(_) => "missing_binding",
            ProxyFetchError::Dispatch(_) => "dispatch",
            ProxyFetchError::Storage(_) => "storage",
            ProxyFetchError::LongPathUnavailable { .. } => "long_path_unavailable",
        };
        HandlerError::new(code, e.to_string())
    }
}
