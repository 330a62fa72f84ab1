//! Arguments of `#[entrypoint(...)]` and of the method attributes `#[wait_until]`, `#[rpc(...)]`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitStr, Token};

/// What the impl block's methods are served by.
#[derive(Clone)]
pub enum Kind {
    /// The worker's default entrypoint (`export default`).
    DefaultEntrypoint,
    /// A named `WorkerEntrypoint` class, e.g. `FetchExecutorEntrypoint`.
    NamedEntrypoint(LitStr),
    /// The Durable Object class of the impl's type; `origin`: it receives proxy-fetch results.
    DurableObject { span: Span, origin: bool },
}

pub struct EntrypointArgs {
    pub kind: Kind,
    pub client: Option<Ident>,
}

enum Arg {
    Name(LitStr),
    DurableObject(Ident),
    Origin(Ident),
    Client(Ident),
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        match key.to_string().as_str() {
            "name" => {
                input.parse::<Token![=]>()?;
                Ok(Arg::Name(input.parse()?))
            }
            "client" => {
                input.parse::<Token![=]>()?;
                let lit: LitStr = input.parse()?;
                Ok(Arg::Client(lit.parse().map_err(|_| {
                    syn::Error::new(lit.span(), "`client` must name a Rust type, e.g. client = \"ExecutorClient\"")
                })?))
            }
            "durable_object" => Ok(Arg::DurableObject(key)),
            "origin" => Ok(Arg::Origin(key)),
            _ => Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown argument `{key}`; #[entrypoint] takes `name = \"JsClassName\"` (a named \
                     WorkerEntrypoint), `durable_object` (methods of a Durable Object), `origin` (with `durable_object`: it \
                     receives proxy-fetch results) and `client = \"TypeName\"`"
                ),
            )),
        }
    }
}

impl Parse for EntrypointArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let args = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        let mut name = None;
        let mut durable_object = None;
        let mut client = None;
        let mut origin = None;
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        for arg in args {
            let twice = |what: &str, span: Span| {
                syn::Error::new(span, format!("`{what}` given twice: remove one"))
            };
            match arg {
                Arg::Name(lit) if name.is_some() => push(twice("name", lit.span())),
                Arg::Name(lit) => name = Some(lit),
                Arg::DurableObject(key) if durable_object.is_some() => {
                    push(twice("durable_object", key.span()))
                }
                Arg::DurableObject(key) => durable_object = Some(key),
                Arg::Origin(key) if origin.is_some() => push(twice("origin", key.span())),
                Arg::Origin(key) => origin = Some(key),
                Arg::Client(ident) if client.is_some() => push(twice("client", ident.span())),
                Arg::Client(ident) => client = Some(ident),
            }
        }
        let kind = match (name, durable_object) {
            (Some(name), Some(key)) => {
                push(syn::Error::new(
                    key.span(),
                    "a Durable Object's RPC methods belong to its class: remove `name` or `durable_object`",
                ));
                Kind::NamedEntrypoint(name)
            }
            (Some(name), None) => Kind::NamedEntrypoint(name),
            (None, Some(key)) => Kind::DurableObject {
                span: key.span(),
                origin: origin.is_some(),
            },
            (None, None) => Kind::DefaultEntrypoint,
        };
        if let (Some(key), false) = (&origin, matches!(kind, Kind::DurableObject { .. })) {
            push(syn::Error::new(
                key.span(),
                "`origin` marks a Durable Object that receives proxy-fetch results: write #[entrypoint(durable_object, origin)]",
            ));
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(EntrypointArgs { kind, client }),
        }
    }
}

/// `#[rpc(name = "jsName")]` on a method.
pub struct RpcArgs {
    pub name: LitStr,
}

impl Parse for RpcArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        if key != "name" {
            return Err(syn::Error::new(
                key.span(),
                format!("unknown argument `{key}`; #[rpc] takes `name = \"jsMethodName\"`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let name = input.parse()?;
        if !input.is_empty() {
            return Err(input.error("#[rpc] takes only `name = \"jsMethodName\"`"));
        }
        Ok(RpcArgs { name })
    }
}
