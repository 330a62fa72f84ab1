//! The `#[entrypoint]` macro of proxy-fetch. Use it through the `proxy-fetch` crate, which
//! documents it and holds everything the generated code calls.
//!
//! Pipeline: `attr.rs` (arguments) -> `ast.rs` (the item as RPC methods, as written) ->
//! `valid.rs` (every rule, each failure at its token) -> `expand.rs` (generated code).

#![warn(missing_docs)]

mod ast;
mod attr;
mod expand;
mod names;
mod origin;
mod valid;

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::ToTokens;

/// Collects every error so the user sees all of them at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new(span, message));
    }

    pub fn push_error(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
}

/// Turns the methods of an impl block into RPC methods of a Worker entrypoint or Durable
/// Object, and generates a typed client for callers.
///
/// ```ignore
/// use proxy_fetch::entrypoint;
/// use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
/// use worker::{Context, Env};
///
/// pub struct Executor { env: Env }
///
/// impl WorkerEntrypoint for Executor {
///     fn new(env: Env, _ctx: Context) -> Self { Executor { env } }
/// }
///
/// #[entrypoint(name = "ExecutorEntrypoint")]
/// impl Executor {
///     /// Answered at once; the body runs under `ctx.waitUntil`, its errors are logged.
///     #[wait_until]
///     pub async fn execute(&self, job: Job) -> Result<(), HandlerError> { Ok(()) }
///
///     /// Awaited: the caller gets the value, or `CallError::Handler(e)` with this `e`.
///     pub async fn health(&self) -> Result<String, HandlerError> { Ok("ok".into()) }
///
///     /// Not `pub`: a local helper, left as written, neither exported nor on the client.
///     fn helper(&self) -> u32 { 1 }
/// }
///
/// // Generated: `ExecutorClient` with `from_env(&env, "BINDING")`, `from_stub`, `local`,
/// // the same methods (`execute` -> `Result<(), RpcError>`, `health` ->
/// // `Result<String, CallError<HandlerError>>`) and typed handles `EXECUTE`, `HEALTH`.
/// let executor = ExecutorClient::from_env(&env, "EXECUTOR")?;
/// executor.execute(job).await?;
/// ```
///
/// Arguments (`#[entrypoint(...)]`):
/// - none: methods of the worker's default entrypoint;
/// - `name = "JsClassName"`: a named `WorkerEntrypoint` (wrangler `entrypoint = "JsClassName"`);
/// - `durable_object`: RPC methods of the workers-rs Durable Object of this type; its client has
///   `from_name`, `from_id`; add `origin` when it receives proxy-fetch results;
/// - `client = "TypeName"`: the client's name (default `<Type>Client`).
///
/// Which methods are RPC methods: in an impl block, the `pub` ones (exported, with a client
/// method and a typed handle `<Client>::METHOD_NAME`); the others (private, `pub(crate)`,
/// `pub(super)`) are local helpers, left untouched. With `origin`, a method whose first
/// argument's type is `FetchResult` is a continuation handler, whatever its visibility: it keeps
/// its typed handle (for `Continuation::new`) and its entry in the table proxy-fetch's delivery
/// dispatches on, but it is not exported and has no client method. A caller reaching for what
/// is not there (a helper's method or handle on the client, a handler's method) gets a compile
/// error that says why, with a note at the method (hints generated on the client, see
/// `expand.rs`).
///
/// On a trait, only the client is generated: for an entrypoint implemented in JS or elsewhere.
/// Every method of the trait is an RPC method, and a default body is refused (it would never run).
///
/// Method rules (each a compile error with its fix, see `tests/ui/fail`): `async fn`, `&self`,
/// no generics, plain-named owned arguments that are serde types (no reference, `impl Trait`,
/// `Self` or borrowed lifetime at any depth), a `Result<T, E>` return with `T` and `E` serde
/// types and `E: Display`, `Result<(), E>` with `#[wait_until]`, JS names (camelCase of the Rust
/// name without `r#`, or `#[rpc(name = "...")]`) unique and not in `proxy-fetch/js/names.json`.
/// `#[cfg]` on a method gates everything generated for it. Names starting with `__pf` are
/// reserved; any other argument name works, and a method may take a client constructor's name
/// (`from_name`, `stub`, ...), which then stays reachable through its trait
/// (`proxy_fetch::rpc::{Client, DurableObjectClient, ServiceClient, LocalClient}`).
#[proc_macro_attribute]
pub fn entrypoint(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item: syn::Item = match syn::parse(input) {
        Ok(item @ (syn::Item::Impl(_) | syn::Item::Trait(_))) => item,
        Ok(other) => return not_an_impl(syn::spanned::Spanned::span(&other)),
        Err(e) => return not_an_impl(e.span()),
    };
    let mut errors = Errors::default();
    let args = match syn::parse::<attr::EntrypointArgs>(args) {
        Ok(args) => Some(args),
        Err(e) => {
            errors.push_error(e);
            None
        }
    };
    let parsed = args.and_then(|args| match &item {
        syn::Item::Impl(i) => ast::parse(args, i, &mut errors),
        syn::Item::Trait(t) => Some(ast::parse_remote(args, t, &mut errors)),
        _ => None,
    });
    if let Some(ep) = &parsed {
        valid::check(ep, &mut errors);
    }
    ast::strip_method_attrs(&mut item);
    match (errors.0, parsed) {
        (None, Some(ep)) => expand::expand(&item, &ep).into(),
        // Keep the user's item, and a client with the methods' signatures, so that one mistake
        // does not cascade into "method not found" at every use.
        (Some(e), parsed) => {
            let mut out = expand::fallback(&item, parsed.as_ref());
            out.extend(e.to_compile_error());
            out.into()
        }
        (None, None) => item.into_token_stream().into(),
    }
}

/// A proxy-fetch origin Durable Object from its struct alone: workers-rs `#[durable_object]`,
/// a `DurableObject` impl (its constructor fills the `State` and `Env` fields, every other field
/// with `Default::default()`; `fetch` answers 404: the object serves RPC) and the
/// `ProxyFetchOrigin` impl. With `#[entrypoint(durable_object, origin)]` on its methods that is
/// the whole origin:
///
/// ```ignore
/// #[origin]
/// pub struct Inbox { state: State, env: Env }
///
/// #[entrypoint(durable_object, origin)]
/// impl Inbox { /* pub RPC methods, continuation handlers */ }
/// ```
///
/// An origin with its own `fetch` or `alarm` implements `DurableObject` and `ProxyFetchOrigin`
/// itself instead (see `ProxyFetchOrigin::OWN_ALARM`).
#[proc_macro_attribute]
pub fn origin(args: TokenStream, input: TokenStream) -> TokenStream {
    match syn::parse::<syn::ItemStruct>(input) {
        Ok(item) => origin::origin(args.into(), item).into(),
        Err(e) => syn::Error::new(
            e.span(),
            "#[origin] goes on the struct of a Durable Object, e.g. `#[origin] pub struct Inbox { state: State, env: Env }`",
        )
        .to_compile_error()
        .into(),
    }
}

fn not_an_impl(span: Span) -> TokenStream {
    syn::Error::new(
        span,
        "#[entrypoint] goes on an impl block (`#[entrypoint] impl MyType { async fn ... }`), or on a \
         trait that declares an entrypoint implemented elsewhere",
    )
    .to_compile_error()
    .into()
}

/// Internal to proxy-fetch: adds `#[serde(remote = "Self")]` to a type that `strict_serde!`
/// makes refuse unknown keys (proxy-fetch/src/system/strict.rs). Written as an attribute below
/// `derive(ts_rs::TS)` and above `derive(Serialize, Deserialize)`, it is seen by serde's derives
/// only: ts-rs (which does nothing with `remote`) would print a warning for it at every build.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn __serde_remote_self(args: TokenStream, input: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(Span::call_site(), "takes no arguments")
            .to_compile_error()
            .into();
    }
    // Last of the attributes, so after the derive that introduces `serde`.
    match syn::parse::<syn::DeriveInput>(input) {
        Ok(mut item) => {
            item.attrs
                .push(syn::parse_quote!(#[serde(remote = "Self")]));
            item.into_token_stream().into()
        }
        Err(e) => e.to_compile_error().into(),
    }
}
