//! Typed RPC between Workers and Durable Objects, the layer `#[entrypoint]` generates code for.
//!
//! - [`Stub`]: a service binding or Durable Object stub, called with typed arguments.
//! - [`Target`]: what a generated client talks to: a remote [`Stub`] or, in native tests, the
//!   implementation itself.
//! - [`CallError`], [`RpcError`], [`HandlerError`]: what a call can fail with.
//! - [`Client`], [`DurableObjectClient`], [`ServiceClient`], [`LocalClient`]: what every
//!   generated client can do.
//! - [`WorkerEntrypoint`]: how a named or default entrypoint builds its handler per call.

mod client;
mod codec;
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod dts;
mod error;
pub(crate) mod js;
#[doc(hidden)]
pub mod local;
#[doc(hidden)]
pub mod object;
pub(crate) mod serve;
mod stub;
#[doc(hidden)]
pub mod typed;

pub use client::{Client, DurableObjectClient, LocalClient, ServiceClient};
pub use codec::{encode_arg, Args};
pub use error::{CallError, HandlerError, RpcError, RpcErrorKind};
pub use serve::log_error;
pub use stub::{encode_args, Stub};

use std::marker::PhantomData;
use std::rc::Rc;

#[cfg(feature = "system")]
pub(crate) use codec::from_js as from_js_value;
#[cfg(feature = "system")]
pub(crate) use codec::to_js as to_js_value;
#[cfg(feature = "system")]
pub(crate) use codec::MAX_PARTS;

/// A typed handle on an RPC method of `T` taking `Args` (a tuple), generated for every
/// `#[entrypoint]` method as `<Client>::METHOD_NAME`. proxy-fetch uses it to name a
/// continuation's handler so that the compiler checks it exists and takes the right types.
pub struct Method<T, Args> {
    js_name: &'static str,
    _types: PhantomData<fn() -> (T, Args)>,
}

impl<T, Args> Method<T, Args> {
    #[doc(hidden)]
    pub const fn new(js_name: &'static str) -> Self {
        Method {
            js_name,
            _types: PhantomData,
        }
    }

    /// The method's JS name.
    pub fn js_name(&self) -> &'static str {
        self.js_name
    }
}

impl<T, Args> Clone for Method<T, Args> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, Args> Copy for Method<T, Args> {}

/// A type whose `#[entrypoint]` methods are served by a Worker entrypoint. The runtime builds
/// one value per incoming call from the entrypoint's `env` and `ctx`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has #[entrypoint] methods but does not implement `WorkerEntrypoint`",
    label = "the runtime builds a `{Self}` for each call",
    note = "add `impl proxy_fetch::rpc::WorkerEntrypoint for {Self} {{ fn new(env: Env, ctx: Context) -> Self {{ ... }} }}`, \
            or use #[entrypoint(durable_object)] if `{Self}` is a Durable Object"
)]
pub trait WorkerEntrypoint: 'static {
    /// The handler of one incoming call, from the entrypoint's `env` and `ctx`.
    fn new(env: worker::Env, ctx: worker::Context) -> Self;
}

/// Where a generated client sends its calls.
pub enum Target<T> {
    /// Over RPC, to a Worker or Durable Object.
    Remote(Stub),
    /// In process, straight to an implementation (native tests).
    Local(Rc<T>),
}

impl<T> Target<T> {
    /// The stub, unless calls go to a local implementation.
    pub fn stub(&self) -> Option<&Stub> {
        match self {
            Target::Remote(stub) => Some(stub),
            Target::Local(_) => None,
        }
    }
}

/// The implementation type of a client generated from a trait: it has none, so such a client
/// is always remote.
pub enum RemoteOnly {}

impl Target<RemoteOnly> {
    /// The stub: a client generated from a trait always calls over RPC.
    pub fn remote(&self) -> &Stub {
        match self {
            Target::Remote(stub) => stub,
            Target::Local(never) => match **never {},
        }
    }
}

impl<T> Clone for Target<T> {
    fn clone(&self) -> Self {
        match self {
            Target::Remote(stub) => Target::Remote(stub.clone()),
            Target::Local(this) => Target::Local(Rc::clone(this)),
        }
    }
}

impl<T> std::fmt::Debug for Target<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Remote(stub) => stub.fmt(f),
            Target::Local(_) => f.write_str("Local"),
        }
    }
}
