//! What travels between origin, orchestrator and executor.

use serde::{Deserialize, Serialize};

use super::{ProxyFetchOptions, ProxyRequest, RequestId};

/// Where a result goes back to: the origin Durable Object's namespace binding and hex id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginRef {
    pub binding: String,
    pub id: String,
}

/// One proxied fetch, from the origin through the orchestrator to the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchJob {
    pub id: RequestId,
    pub request: ProxyRequest,
    pub origin: OriginRef,
    /// Name of the orchestrator instance that tracks this request.
    pub shard: String,
    pub options: ProxyFetchOptions,
}
