//! What every generated client can do, as traits: `#[entrypoint]` also generates inherent
//! methods of the same names that forward here, except where a user's RPC method takes the
//! name (an RPC method `from_name` makes `XClient::from_name` the RPC call; the constructor
//! stays reachable as `<XClient as DurableObjectClient>::from_name`).

use std::rc::Rc;
use worker::Env;

use super::{RpcError, Stub};

/// A generated client: typed methods over an RPC [`Stub`].
pub trait Client: Sized {
    /// Calls through an existing RPC stub.
    fn from_stub(stub: Stub) -> Self;
    /// The RPC stub behind this client, unless it calls a local implementation.
    fn stub(&self) -> Option<&Stub>;
}

/// The client of a Durable Object's `#[entrypoint(durable_object)]` methods.
pub trait DurableObjectClient: Client {
    /// The Durable Object named `name` in the namespace bound as `binding`.
    fn from_name(env: &Env, binding: &str, name: &str) -> Result<Self, RpcError> {
        Stub::durable_object(env, binding, name).map(Self::from_stub)
    }

    /// The Durable Object with hex id `id` in the namespace bound as `binding`.
    fn from_id(env: &Env, binding: &str, id: &str) -> Result<Self, RpcError> {
        Stub::durable_object_by_id(env, binding, id).map(Self::from_stub)
    }
}

/// The client of a Worker entrypoint (default or named), reached through a service binding.
pub trait ServiceClient: Client {
    /// The Worker entrypoint reached through the service binding `binding`.
    fn from_env(env: &Env, binding: &str) -> Result<Self, RpcError> {
        Stub::service(env, binding).map(Self::from_stub)
    }
}

/// A client that can call an in-process implementation (native tests); values still
/// round-trip through serde.
pub trait LocalClient: Client {
    /// The type whose `#[entrypoint]` methods the client calls.
    type Impl;
    /// A client whose calls go straight to `this`.
    fn local(this: Rc<Self::Impl>) -> Self;
}
