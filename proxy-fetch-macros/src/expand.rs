//! Code generation only: every decision was made in `ast.rs` and `valid.rs`.
//!
//! Hygiene: every name the generated code binds or defines next to the user's starts with
//! `__pf` (`__PF_METHOD`, `__pf_stub`, `__pf_handler_x`), a prefix `valid.rs` refuses in user
//! method and argument names; the client's own items are reachable through traits
//! (`proxy_fetch::rpc::Client`, ...) and get inherent forwarders only where no RPC method takes
//! the name.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Item};

use crate::ast::{Entrypoint, Helper, Method, Output, Role};
use crate::attr::Kind;

/// The whole expansion of a valid entrypoint.
pub fn expand(item: &Item, ep: &Entrypoint) -> TokenStream {
    let client = client(ep, false);
    let types = method_types(ep);
    let types_ident = types_ident(ep);
    let allow = ep.remote_only.then(|| quote!(#[allow(async_fn_in_trait)]));
    let describe = describe(ep);
    let serve = if ep.remote_only {
        TokenStream::new()
    } else {
        let handlers = match &ep.kind {
            Kind::DurableObject { .. } => durable_object_handlers(ep),
            Kind::DefaultEntrypoint | Kind::NamedEntrypoint(_) => worker_handlers(ep),
        };
        let exports = export_symbols(ep);
        let dts = dts_test(ep);
        quote!(const _: () = { #handlers #exports }; #dts)
    };
    quote! {
        #allow
        #item
        #client
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        struct #types_ident;
        const _: () = { #types #describe };
        #serve
    }
}

/// What is emitted when validation failed: the user's item and a client with the methods'
/// signatures, so that each use of the client adds no error of its own.
pub fn fallback(item: &Item, ep: Option<&Entrypoint>) -> TokenStream {
    // A generic type cannot be named without its parameters: no client then.
    let ep = ep.filter(|ep| {
        ep.generics.is_none() && ep.self_generic_args.is_none() && ep.client != ep.self_ident
    });
    let client = ep.map(|ep| client(ep, true));
    // An origin whose #[entrypoint] failed still has a table of handlers (an empty one), so
    // that `impl ProxyFetchOrigin` adds no error of its own.
    let origin = ep
        .filter(|ep| !ep.remote_only && matches!(ep.kind, Kind::DurableObject { origin: true, .. }))
        .map(|ep| origin_handlers(ep, TokenStream::new()));
    let allow = matches!(item, Item::Trait(_)).then(|| quote!(#[allow(async_fn_in_trait)]));
    quote! {
        #allow
        #item
        #client
        #origin
    }
}

/// `OriginHandlers` for an origin Durable Object, dispatching to `arms`.
fn origin_handlers(ep: &Entrypoint, arms: TokenStream) -> TokenStream {
    let this = &ep.self_ident;
    let binding = crate::ast::screaming_snake(&this.to_string());
    quote! {
        impl ::proxy_fetch::__private::OriginHandlers for #this {
            const INFERRED_BINDING: &'static str = #binding;
            fn dispatch(
                &self,
                method: &str,
                result: ::proxy_fetch::FetchResult,
                data: ::proxy_fetch::__private::JsonValue,
            ) -> ::core::option::Option<::proxy_fetch::__private::Promise> {
                let _ = (&result, &data);
                match method {
                    #arms
                    _ => ::core::option::Option::None,
                }
            }
        }
    }
}

/// The private type that carries each method's argument and result types
/// (`proxy_fetch::__private::{MethodTypes, ArgType}`): private, so that private user types
/// can appear in it.
fn types_ident(ep: &Entrypoint) -> Ident {
    format_ident!("__pf_types_{}", ep.client)
}

fn label(ep: &Entrypoint, m: &Method) -> String {
    format!("{}.{}", ep.self_ident, m.js_name)
}

fn handler_ident(m: &Method) -> Ident {
    format_ident!("__pf_handler_{}", m.rust_name)
}

/// One `MethodTypes<I>` and one `ArgType<I, N>` impl per method and argument: a type that
/// serde cannot carry fails there, once, at the user's type.
fn method_types(ep: &Entrypoint) -> TokenStream {
    let types = types_ident(ep);
    let impls = ep.methods.iter().enumerate().map(|(i, m)| {
        let cfgs = &m.cfgs;
        let Some((ok, err)) = m.result() else {
            return TokenStream::new();
        };
        let ok_ty = quote_spanned!(ok.span()=> type Ok = #ok;);
        let err_ty = quote_spanned!(err.span()=> type Err = #err;);
        let args = m.named_args().into_iter().enumerate().map(|(n, (_, ty))| {
            let t = quote_spanned!(ty.span()=> type T = #ty;);
            quote! {
                #(#cfgs)*
                impl ::proxy_fetch::__private::ArgType<#i, #n> for #types { #t }
            }
        });
        quote! {
            #(#cfgs)*
            impl ::proxy_fetch::__private::MethodTypes<#i> for #types { #ok_ty #err_ty }
            #(#args)*
        }
    });
    quote!(#(#impls)*)
}

/// `proxy_fetch::__private::dts::Describe` for the client, native only: the entrypoint's RPC
/// methods (not continuation handlers) with their JS names, argument names and TypeScript types,
/// for `proxy-fetch-build --dts`. A trait describes itself too, so that proxy-fetch can leave
/// the methods of its protocol traits out of the declarations of the classes serving them.
fn describe(ep: &Entrypoint) -> TokenStream {
    let (kind, name) = match &ep.kind {
        Kind::DefaultEntrypoint => (quote!(Default), "default".to_owned()),
        Kind::NamedEntrypoint(name) => (quote!(Named), name.value()),
        Kind::DurableObject { .. } => (quote!(DurableObject), ep.self_ident.to_string()),
    };
    let rust = ep.self_ident.to_string();
    let client = &ep.client;
    let types = types_ident(ep);
    let dts = quote!(::proxy_fetch::__private::dts);
    let probe = |ty: TokenStream| quote!((&#dts::Probe::<#ty>::new()).ts_type(&mut __pf_types));
    let methods = ep
        .methods
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::Rpc && m.result().is_some())
        .map(|(i, m)| {
            let cfgs = &m.cfgs;
            let js_name = &m.js_name;
            let wait_until = m.wait_until.is_some();
            let docs = doc_text(m);
            let args = m
                .named_args()
                .into_iter()
                .enumerate()
                .map(|(n, (ident, _))| {
                    let arg = ident.to_string();
                    let arg = arg.strip_prefix("r#").unwrap_or(&arg).to_owned();
                    let ty =
                        probe(quote!(<#types as ::proxy_fetch::__private::ArgType<#i, #n>>::T));
                    quote!((#arg, #ty))
                });
            let ok = probe(quote!(<#types as ::proxy_fetch::__private::MethodTypes<#i>>::Ok));
            let err = probe(quote!(<#types as ::proxy_fetch::__private::MethodTypes<#i>>::Err));
            quote! {
                #(#cfgs)*
                if __pf_keep(#js_name) {
                    let __pf_args = [#(#args),*];
                    let __pf_ok = #ok;
                    let __pf_err = #err;
                    __pf_ep.method(#js_name, #wait_until, &__pf_args, __pf_ok, __pf_err, #docs);
                }
            }
        });
    quote! {
        #[cfg(not(target_arch = "wasm32"))]
        impl #dts::Describe for #client {
            #[allow(unused_mut, unused_variables)]
            fn describe_only(__pf_keep: &dyn ::core::ops::Fn(&str) -> bool) -> #dts::Entrypoint {
                #[allow(unused_imports)]
                use #dts::{Fallback as _, ViaTs as _};
                let mut __pf_types = #dts::Types::new();
                let mut __pf_ep = #dts::Entrypoint::new(#dts::Kind::#kind, #name, #rust);
                #(#methods)*
                __pf_ep.types(__pf_types)
            }
        }
    }
}

/// A native `#[test]` that writes the entrypoint's description for `proxy-fetch-build --dts`
/// (`proxy_fetch::__private::dts::export`): a no-op unless that build runs it. Never in the wasm.
fn dts_test(ep: &Entrypoint) -> TokenStream {
    let test = format_ident!("__pf_dts_{}", ep.client);
    let client = &ep.client;
    quote! {
        #[cfg(all(test, not(target_arch = "wasm32")))]
        #[test]
        #[allow(non_snake_case)]
        fn #test() -> ::core::result::Result<(), ::std::string::String> {
            ::proxy_fetch::__private::dts::export(
                &<#client as ::proxy_fetch::__private::dts::Describe>::describe(),
            )
        }
    }
}

/// The method's doc comment, one line per `///` line.
fn doc_text(m: &Method) -> String {
    let lines: Vec<String> = m
        .docs
        .iter()
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join("\n")
}

fn client(ep: &Entrypoint, fallback: bool) -> TokenStream {
    let this = &ep.self_ident;
    let client = &ep.client;
    let taken = |name: &str| {
        ep.methods
            .iter()
            .any(|m| m.role == Role::Rpc && m.rust_name == name)
    };
    let rpc = quote!(::proxy_fetch::rpc);
    let (kind_trait, constructors) = match &ep.kind {
        Kind::DurableObject { .. } => {
            let from_name = (!taken("from_name")).then(|| quote! {
                /// The Durable Object named `name` in the namespace bound as `binding`.
                pub fn from_name(env: &::proxy_fetch::__private::Env, binding: &str, name: &str) -> ::core::result::Result<Self, #rpc::RpcError> {
                    <Self as #rpc::DurableObjectClient>::from_name(env, binding, name)
                }
            });
            let from_id = (!taken("from_id")).then(|| quote! {
                /// The Durable Object with hex id `id` in the namespace bound as `binding`.
                pub fn from_id(env: &::proxy_fetch::__private::Env, binding: &str, id: &str) -> ::core::result::Result<Self, #rpc::RpcError> {
                    <Self as #rpc::DurableObjectClient>::from_id(env, binding, id)
                }
            });
            (quote!(DurableObjectClient), quote!(#from_name #from_id))
        }
        _ => {
            let from_env = (!taken("from_env")).then(|| quote! {
                /// The Worker entrypoint reached through the service binding `binding`.
                pub fn from_env(env: &::proxy_fetch::__private::Env, binding: &str) -> ::core::result::Result<Self, #rpc::RpcError> {
                    <Self as #rpc::ServiceClient>::from_env(env, binding)
                }
            });
            (quote!(ServiceClient), quote!(#from_env))
        }
    };
    let from_stub = (!taken("from_stub")).then(|| {
        quote! {
            /// Calls through an existing RPC stub.
            pub fn from_stub(stub: #rpc::Stub) -> Self {
                <Self as #rpc::Client>::from_stub(stub)
            }
        }
    });
    let stub = (!taken("stub")).then(|| {
        quote! {
            /// The RPC stub behind this client, unless it calls a local implementation.
            pub fn stub(&self) -> ::core::option::Option<&#rpc::Stub> {
                <Self as #rpc::Client>::stub(self)
            }
        }
    });
    // Typed handles on the methods, e.g. to name a proxy-fetch continuation's handler.
    let handle_owner = if ep.remote_only {
        quote!(Self)
    } else {
        quote!(#this)
    };
    // A fallback client leaves out what refers to types it cannot write.
    let plain = |m: &&Method| {
        !fallback
            || (m
                .args
                .iter()
                .all(|a| a.ident.is_some() && crate::valid::is_plain(&a.ty))
                && m.result().is_none_or(|(ok, err)| {
                    crate::valid::is_plain(ok) && crate::valid::is_plain(err)
                }))
    };
    let unique_handle = |m: &&Method| {
        !fallback || {
            let handle = m.handle_name();
            ep.methods
                .iter()
                .filter(|o| o.handle_name() == handle)
                .count()
                == 1
                && !ep
                    .methods
                    .iter()
                    .any(|o| o.role == Role::Rpc && o.rust_name == handle)
        }
    };
    let handles = ep.methods.iter().filter(plain).filter(unique_handle).map(|m| {
        let name = Ident::new(&m.handle_name(), m.ident.span());
        let js_name = &m.js_name;
        let cfgs = &m.cfgs;
        let types = m.named_args().into_iter().map(|(_, ty)| ty);
        let doc = format!("Typed handle on `{}` (JS name `{js_name}`).", m.rust_name);
        quote! {
            #(#cfgs)*
            #[doc = #doc]
            pub const #name: #rpc::Method<#handle_owner, (#(#types,)*)> = #rpc::Method::new(#js_name);
        }
    });
    let methods = ep
        .methods
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::Rpc && plain(m))
        .map(|(i, m)| client_method(ep, i, m, fallback));
    // A trait declares an entrypoint served elsewhere: there is no implementation to call locally.
    let (target, local) = if ep.remote_only {
        (quote!(#rpc::Target<#rpc::RemoteOnly>), TokenStream::new())
    } else {
        let inherent = (!taken("local")).then(|| {
            quote! {
                /// Calls an in-process implementation; values still round-trip through serde.
                pub fn local(this: ::std::rc::Rc<#this>) -> Self {
                    <Self as #rpc::LocalClient>::local(this)
                }
            }
        });
        let local = quote! {
            impl #rpc::LocalClient for #client {
                type Impl = #this;
                fn local(this: ::std::rc::Rc<#this>) -> Self {
                    Self { target: #rpc::Target::Local(this) }
                }
            }
        };
        (
            quote!(#rpc::Target<#this>),
            quote!(#local impl #client { #inherent }),
        )
    };
    let hints = hints(ep);
    let doc = if ep.remote_only {
        format!("Typed RPC client for the entrypoint that the trait [`{this}`] declares, generated by proxy-fetch.")
    } else {
        format!(
            "Typed RPC client for [`{this}`]'s `#[entrypoint]` methods, generated by proxy-fetch.\n\n\
             Each method encodes its arguments, calls the remote method of the same JS name and decodes \
             the result; `local` calls an in-process `{this}` instead (native tests)."
        )
    };
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        pub struct #client {
            target: #target,
        }

        impl #rpc::Client for #client {
            fn from_stub(stub: #rpc::Stub) -> Self {
                Self { target: #rpc::Target::Remote(stub) }
            }
            fn stub(&self) -> ::core::option::Option<&#rpc::Stub> {
                self.target.stub()
            }
        }

        impl #rpc::#kind_trait for #client {}

        #local

        impl #client {
            #constructors
            #from_stub
            #stub
            #(#handles)*
            #(#methods)*
        }

        #hints
    }
}

/// The client's own inherent items besides the RPC methods and handles.
const CLIENT_ITEMS: &[&str] = &[
    "from_name",
    "from_id",
    "from_env",
    "from_stub",
    "stub",
    "local",
];

/// One hint: an item of the client that exists only under a bound that never holds.
struct Hint<'a> {
    /// The item's name on the client: a method or a handle.
    name: String,
    /// What does not hold, e.g. `reset_is_pub`: the trait's name, which rustc shows.
    condition: String,
    item: TokenStream,
    /// The user's method: rustc's note on the unsatisfied bound points there.
    span: Span,
    cfgs: &'a [syn::Attribute],
    message: String,
    label: String,
    note: String,
}

/// Hints on the client for the names a caller may reach for that the macro does not generate:
/// a local helper's method (`client.helper()`) or handle (`XClient::HELPER`, as in
/// `Continuation::new`), a continuation handler's method. Each is an item that exists only
/// where a trait without impls holds (`impl<'pf> XClient where XClient: helper_is_pub<'pf>`), so
/// using it fails with E0599 carrying the trait's `#[diagnostic::on_unimplemented]` message,
/// which says why the item is not there and how to get it, and a note at the method (the bound
/// is spanned there). The lifetime makes the bound non-trivial: a bound that can never hold and
/// names no parameter is refused where it is written.
fn hints(ep: &Entrypoint) -> TokenStream {
    if ep.remote_only {
        return TokenStream::new();
    }
    let origin = matches!(ep.kind, Kind::DurableObject { origin: true, .. });
    let this = ep.self_ident.to_string();
    let this = this.strip_prefix("r#").unwrap_or(&this);
    let client = &ep.client;
    let not_pub_note = |m: &str| {
        format!(
            "the `pub` methods of an `#[entrypoint]` impl are its RPC methods, exported and on \
             its client; the others are local helpers, left as written: make `{m}` `pub` to call \
             it over RPC"
        )
    };
    let mut hints = Vec::new();
    for h in &ep.helpers {
        let m = &h.rust_name;
        let ident = &h.ident;
        if h.has_receiver {
            hints.push(Hint {
                name: m.clone(),
                condition: format!("{m}_is_pub"),
                item: quote!(#[doc(hidden)] pub fn #ident(&self) {}),
                span: ident.span(),
                cfgs: &h.cfgs,
                message: format!(
                    "`{this}::{m}` is not an RPC method: it is not `pub`, so `{client}` has no method `{m}`"
                ),
                label: format!("not a method of `{client}`"),
                note: not_pub_note(m),
            });
        }
        let handle = h.handle_name();
        // An uppercased name that is not an identifier has no handle to hint at.
        let Ok(mut handle_ident) = syn::parse_str::<Ident>(&handle) else {
            continue;
        };
        handle_ident.set_span(ident.span());
        let (condition, message, note) = if origin {
            (
                format!("{m}_takes_FetchResult_first"),
                format!(
                    "`{this}::{m}` is not a continuation handler: {}, so `{client}` has no handle `{handle}`",
                    not_a_handler_because(h)
                ),
                format!(
                    "a continuation handler's first argument after `&self` is the fetch's result, its \
                     type written `FetchResult` (`async fn {m}(&self, result: FetchResult, data: D) -> \
                     Result<(), E>`); `pub` methods have a handle too"
                ),
            )
        } else {
            (
                format!("{m}_is_pub"),
                format!(
                    "`{this}::{m}` is not an RPC method: it is not `pub`, so `{client}` has no handle `{handle}`"
                ),
                not_pub_note(m),
            )
        };
        hints.push(Hint {
            name: handle.clone(),
            condition,
            item: quote!(#[doc(hidden)] pub const #handle_ident: () = ();),
            span: ident.span(),
            cfgs: &h.cfgs,
            message,
            label: format!("no handle `{handle}` on `{client}`"),
            note,
        });
    }
    for m in ep.methods.iter().filter(|m| m.role == Role::Handler) {
        let name = &m.rust_name;
        let ident = &m.ident;
        let handle = m.handle_name();
        hints.push(Hint {
            name: name.clone(),
            condition: format!("{name}_is_an_rpc_method"),
            item: quote!(#[doc(hidden)] pub fn #ident(&self) {}),
            span: ident.span(),
            cfgs: &m.cfgs,
            message: format!(
                "`{this}::{name}` is a continuation handler, not an RPC method: `{client}` has no method `{name}`"
            ),
            label: format!("not a method of `{client}`"),
            note: format!(
                "a method of an origin whose first argument is `FetchResult` is called by proxy-fetch's \
                 delivery with a fetch's result, never over RPC: name it in a `Continuation` with \
                 `{client}::{handle}`; to call it over RPC too, add a `pub` method of another name that \
                 calls it"
            ),
        });
    }

    // A name the client already has (its own items, an RPC method, a handle) gets no hint.
    let mut taken: std::collections::HashSet<String> =
        CLIENT_ITEMS.iter().map(|s| s.to_string()).collect();
    for m in &ep.methods {
        taken.insert(m.handle_name());
        if m.role == Role::Rpc {
            taken.insert(m.rust_name.clone());
        }
    }
    let hints = hints.into_iter().filter(|h| taken.insert(h.name.clone())).map(|h| {
        let Hint { condition, item, span, cfgs, message, label, note, .. } = h;
        let condition =
            syn::parse_str::<Ident>(&condition).unwrap_or_else(|_| format_ident!("Hint"));
        // The bound's trait at the user's method: rustc's note on it points there.
        let mut at_method = condition.clone();
        at_method.set_span(span);
        let bound = quote_spanned!(span=> #client: #at_method<'pf>);
        quote! {
            #(#cfgs)*
            const _: () = {
                #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
                #[allow(non_camel_case_types)]
                #[doc(hidden)]
                pub trait #condition<'pf> {}
                #[allow(dead_code)]
                impl<'pf> #client where #bound {
                    #item
                }
            };
        }
    });
    quote!(#(#hints)*)
}

/// Why a helper of an origin is not a continuation handler, for its hint.
fn not_a_handler_because(h: &Helper) -> String {
    match (&h.first_arg, h.has_receiver) {
        (_, false) => "it takes no `&self`".to_owned(),
        (None, true) => "it takes no argument after `&self`".to_owned(),
        (Some(ty), true) => format!(
            "its first argument is `{}`, not `FetchResult`",
            type_text(ty)
        ),
    }
}

/// A type as the user wrote it, without the spaces a token stream puts between tokens.
fn type_text(ty: &syn::Type) -> String {
    let spaced = quote!(#ty).to_string();
    let mut out = String::new();
    let mut chars = spaced.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            let prev = out.chars().last();
            let next = chars.peek().copied();
            let glued_after = matches!(prev, Some('<' | '&' | '(' | '[' | ':'));
            let glued_before = matches!(next, Some('<' | '>' | ',' | ')' | ']' | ':' | ';'))
                // `Fn(u32)`, but `-> (u32, u32)`
                || (next == Some('(') && prev.is_some_and(|p| p.is_alphanumeric() || p == '_'));
            if glued_after || glued_before {
                continue;
            }
        }
        out.push(c);
    }
    out
}

fn client_method(ep: &Entrypoint, i: usize, m: &Method, fallback: bool) -> TokenStream {
    let ident = &m.ident;
    let js_name = &m.js_name;
    let docs = &m.docs;
    let cfgs = &m.cfgs;
    let args = m.named_args();
    let params = args.iter().map(|(ident, ty)| quote!(#ident: #ty));
    let names: Vec<_> = args.iter().map(|(ident, _)| ident).collect();
    let wait_until = m.wait_until.is_some();
    let (output, extra_doc) = match (m.result(), wait_until) {
        (_, true) => (
            quote!(::core::result::Result<(), ::proxy_fetch::rpc::RpcError>),
            quote! {
                ///
                /// Runs under `ctx.waitUntil` on the callee: resolves once the callee acknowledged,
                /// before the work ends. The work's errors are logged by the callee.
            },
        ),
        (Some((ok, err)), false) => (
            quote!(::core::result::Result<#ok, ::proxy_fetch::rpc::CallError<#err>>),
            quote!(),
        ),
        // Only in a fallback client: the method's return type was refused.
        (None, false) => {
            let ok = match &m.output {
                Output::Other(_, Some(ty)) => quote!(#ty),
                _ => quote!(()),
            };
            (
                quote!(::core::result::Result<#ok, ::proxy_fetch::rpc::RpcError>),
                quote!(),
            )
        }
    };
    let body = if fallback {
        quote! {
            let _ = (#(&#names,)*);
            ::core::result::Result::Err(::proxy_fetch::rpc::RpcError::new(
                ::proxy_fetch::rpc::RpcErrorKind::Remote,
                #js_name,
                "the #[entrypoint] of this client did not compile",
            ).into())
        }
    } else {
        client_body(ep, i, m)
    };
    quote! {
        #(#cfgs)*
        #(#docs)*
        #extra_doc
        #[allow(non_snake_case)]
        pub async fn #ident(&self, #(#params),*) -> #output {
            #body
        }
    }
}

fn client_body(ep: &Entrypoint, i: usize, m: &Method) -> TokenStream {
    let types = types_ident(ep);
    let ident = &m.ident;
    let js_name = &m.js_name;
    let args = m.named_args();
    let names: Vec<_> = args.iter().map(|(ident, _)| ident).collect();
    let encode = args.iter().enumerate().map(|(n, (ident, _))| {
        let name = ident.to_string().trim_start_matches("r#").to_owned();
        quote!(::proxy_fetch::__private::typed::encode_arg::<#types, #i, #n>(__PF_METHOD, #name, &#ident))
    });
    let local_args = args.iter().enumerate().map(|(n, (ident, _))| {
        let name = ident.to_string().trim_start_matches("r#").to_owned();
        quote!(let #ident = ::proxy_fetch::__private::typed::local::arg::<#types, #i, #n>(__PF_METHOD, #name, #ident)?;)
    });
    let encoded = quote!(::proxy_fetch::rpc::encode_args([#(#encode),*])?);
    let (remote, local) = if m.wait_until.is_some() {
        let label = label(ep, m);
        (
            quote!(__pf_stub.call_ack(__PF_METHOD, #encoded).await),
            quote!(::proxy_fetch::__private::typed::local::ack::<#types, #i>(#label, __pf_this.#ident(#(#names),*).await)),
        )
    } else {
        (
            quote!(::proxy_fetch::__private::typed::call::<#types, #i>(__pf_stub, __PF_METHOD, #encoded).await),
            quote!(::proxy_fetch::__private::typed::local::result::<#types, #i>(__PF_METHOD, __pf_this.#ident(#(#names),*).await)),
        )
    };
    if ep.remote_only {
        return quote! {
            const __PF_METHOD: &str = #js_name;
            let __pf_stub = self.target.remote();
            #remote
        };
    }
    // In process calls are for native tests: in a wasm build the branch stays out, and with it
    // a second (JSON) encoding of every argument and result type.
    quote! {
        const __PF_METHOD: &str = #js_name;
        match &self.target {
            ::proxy_fetch::rpc::Target::Remote(__pf_stub) => #remote,
            #[cfg(not(target_arch = "wasm32"))]
            ::proxy_fetch::rpc::Target::Local(__pf_this) => {
                #(#local_args)*
                #local
            }
            #[cfg(target_arch = "wasm32")]
            ::proxy_fetch::rpc::Target::Local(_) => {
                ::core::result::Result::Err(::proxy_fetch::__private::local::unavailable(__PF_METHOD).into())
            }
        }
    }
}

/// The body shared by every handler: decode arguments, then hand the handler's future to
/// `awaited` or `wait_until`. Binds `__pf_ctx` and `__pf_args` from the enclosing function.
fn handler_body(ep: &Entrypoint, i: usize, m: &Method, this: TokenStream) -> TokenStream {
    let types = types_ident(ep);
    let ident = &m.ident;
    let js_name = &m.js_name;
    let args = m.named_args();
    let count = args.len() as u32;
    let names: Vec<_> = args.iter().map(|(ident, _)| ident).collect();
    let decode = args.iter().enumerate().map(|(n, (ident, _))| {
        let name = ident.to_string().trim_start_matches("r#").to_owned();
        quote!(let #ident = ::proxy_fetch::__private::typed::decode_arg::<#types, #i, #n>(&__pf_args, #name)?;)
    });
    let call = quote! {
        (move || {
            let __pf_args = ::proxy_fetch::rpc::Args::new(__PF_METHOD, __pf_args, #count)?;
            #(#decode)*
            let __pf_this = #this;
            ::core::result::Result::Ok(async move { __pf_this.#ident(#(#names),*).await })
        })()
    };
    let serve = if m.wait_until.is_some() {
        let label = label(ep, m);
        quote!(::proxy_fetch::__private::typed::wait_until::<#types, #i>(#label, &__pf_ctx.clone(), #call))
    } else {
        quote!(::proxy_fetch::__private::typed::awaited::<#types, #i>(__PF_METHOD, #call))
    };
    quote! {
        const __PF_METHOD: &str = #js_name;
        #serve
    }
}

/// The body of a continuation handler's dispatch: the result as the delivery decoded it, the
/// data from its record's JSON (`valid.rs` made sure of the two arguments, the first
/// `FetchResult`), the handler's future handed to `awaited`. Binds `__pf_result` and
/// `__pf_data` from the enclosing function.
fn continuation_body(ep: &Entrypoint, i: usize, m: &Method, this: TokenStream) -> TokenStream {
    let types = types_ident(ep);
    let ident = &m.ident;
    let js_name = &m.js_name;
    let args = m.named_args();
    let [(result, _), (data, _)] = args.as_slice() else {
        return quote!(::core::compile_error!(
            "a continuation handler takes `(result: FetchResult, data: D)`"
        ));
    };
    let data_name = data.to_string().trim_start_matches("r#").to_owned();
    quote! {
        const __PF_METHOD: &str = #js_name;
        ::proxy_fetch::__private::typed::awaited::<#types, #i>(__PF_METHOD, (move || {
            let #result = ::proxy_fetch::__private::typed::result_arg::<#types, #i>(__pf_result);
            let #data = ::proxy_fetch::__private::typed::data_arg::<#types, #i>(__PF_METHOD, #data_name, __pf_data)?;
            let __pf_this = #this;
            ::core::result::Result::Ok(async move { __pf_this.#ident(#result, #data).await })
        })())
    }
}

fn wasm_bindgen_attr(js_name: &str) -> TokenStream {
    quote!(#[::proxy_fetch::__private::wasm_bindgen(wasm_bindgen = ::proxy_fetch::__private::wasm_bindgen, js_name = #js_name)])
}

/// The wasm export of an RPC method: `export(first, ctx, args)`, where `first` is what `this`
/// (the value whose method is called) is built from.
fn export_fn(
    ep: &Entrypoint,
    i: usize,
    m: &Method,
    export: &str,
    first: TokenStream,
    this: TokenStream,
) -> TokenStream {
    let attr = wasm_bindgen_attr(export);
    let cfgs = &m.cfgs;
    let fn_ident = handler_ident(m);
    let body = handler_body(ep, i, m, this);
    quote! {
        #(#cfgs)*
        #attr
        #[allow(non_snake_case)]
        pub fn #fn_ident(
            #first: ::proxy_fetch::__private::JsValue,
            __pf_ctx: ::proxy_fetch::__private::JsValue,
            __pf_args: ::proxy_fetch::__private::JsValue,
        ) -> ::proxy_fetch::__private::Promise {
            #body
        }
    }
}

fn worker_handlers(ep: &Entrypoint) -> TokenStream {
    let this = &ep.self_ident;
    let prefix = match &ep.kind {
        Kind::NamedEntrypoint(name) => format!("__pf__ep__{}__", name.value()),
        _ => "__pf__default__".to_owned(),
    };
    let marker = match &ep.kind {
        Kind::NamedEntrypoint(name) => {
            let attr = wasm_bindgen_attr(&format!("__pf__entrypoint__{}", name.value()));
            quote! {
                #attr
                pub fn __pf_entrypoint_marker() {}
            }
        }
        _ => quote!(),
    };
    let handlers = ep.methods.iter().enumerate().map(|(i, m)| {
        let this = quote!(::proxy_fetch::__private::worker_entrypoint::<#this>(__pf_env, __pf_ctx));
        export_fn(
            ep,
            i,
            m,
            &format!("{prefix}{}", m.js_name),
            quote!(__pf_env),
            this,
        )
    });
    let assert_entrypoint = quote_spanned!(this.span()=> ::proxy_fetch::__private::assert_worker_entrypoint::<#this>(););
    quote! {
        const _: fn() = || { #assert_entrypoint };
        #marker
        #(#handlers)*
    }
}

fn durable_object_handlers(ep: &Entrypoint) -> TokenStream {
    let this = &ep.self_ident;
    let (span, origin) = match &ep.kind {
        Kind::DurableObject { span, origin } => (*span, *origin),
        _ => (Span::call_site(), false),
    };
    // The exports receive the workers-rs object as a JS value and borrow it through
    // `DurableObjectProbe`: on a type that is not a Durable Object this adds no error (the
    // fallback is chosen), so the one error is `assert_durable_object`'s.
    let object = quote! {{
        #[allow(unused_imports)]
        use ::proxy_fetch::__private::{NotADurableObject as _, ViaDurableObject as _};
        (&::proxy_fetch::__private::DurableObjectProbe::<#this>::new()).borrow_object(&__pf_self, __PF_METHOD)
    }};
    let from_js = quote!(#object?);
    // SAFETY: the JS wrapper owns this object for the Durable Object's lifetime, see `durable_self`.
    let durable_self = |receiver: TokenStream| quote!(unsafe { ::proxy_fetch::__private::durable_self(#receiver) });
    // RPC methods: free exports `__pf__do__<Class>__<jsName>(object, ctx, args)` that the JS
    // wrapper class forwards to (a class name has no `__` and does not end in `_`, so the
    // prefix belongs to one class). Free functions rather than a
    // `#[wasm_bindgen] impl`, whose code requires wasm-bindgen's traits of the type itself.
    let exports = ep
        .methods
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::Rpc)
        .map(|(i, m)| {
            let export = format!("__pf__do__{this}__{}", m.js_name);
            export_fn(ep, i, m, &export, quote!(__pf_self), from_js.clone())
        });
    let assert_do =
        quote_spanned!(span=> ::proxy_fetch::__private::assert_durable_object::<#this>(););
    let marker = wasm_bindgen_attr(&format!("__pf__durable_object__{this}"));
    let origin_glue = origin.then(|| {
        let continuation_handlers: Vec<_> = ep
            .methods
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Handler)
            .collect();
        let fns = continuation_handlers.iter().map(|(i, m)| {
            let cfgs = &m.cfgs;
            let fn_ident = handler_ident(m);
            let body = continuation_body(ep, *i, m, durable_self(quote!(self)));
            quote! {
                #(#cfgs)*
                #[allow(non_snake_case)]
                fn #fn_ident(
                    &self,
                    __pf_result: ::proxy_fetch::FetchResult,
                    __pf_data: ::proxy_fetch::__private::JsonValue,
                ) -> ::proxy_fetch::__private::Promise {
                    #body
                }
            }
        });
        let arms = continuation_handlers.iter().map(|(_, m)| {
            let js_name = &m.js_name;
            let cfgs = &m.cfgs;
            let fn_ident = handler_ident(m);
            quote!(#(#cfgs)* #js_name => ::core::option::Option::Some(self.#fn_ident(result, data)),)
        });
        let origin_handlers = origin_handlers(ep, quote!(#(#arms)*));
        let deliver_attr = wasm_bindgen_attr(&format!("__pf__do__{this}____proxyFetchDeliver"));
        let deliver_packed_attr =
            wasm_bindgen_attr(&format!("__pf__do__{this}____proxyFetchDeliverPacked"));
        let claim_attr = wasm_bindgen_attr(&format!("__pf__do__{this}____proxyFetchClaim"));
        let alarm_attr = wasm_bindgen_attr(&format!("__pf__alarm__{this}"));

        quote! {
            // Continuation handlers: called by proxy-fetch's delivery only, never exported.
            impl #this {
                #(#fns)*
            }

            #origin_handlers

            #deliver_attr
            pub fn __pf_deliver(
                __pf_self: ::proxy_fetch::__private::JsValue,
                _ctx: ::proxy_fetch::__private::JsValue,
                args: ::proxy_fetch::__private::JsValue,
            ) -> ::proxy_fetch::__private::Promise {
                const __PF_METHOD: &str = "__proxyFetchDeliver";
                ::proxy_fetch::__private::deliver::<#this>(#object, args)
            }

            /// The same with each delivery packed (`__proxyFetchDeliverPacked`).
            #deliver_packed_attr
            pub fn __pf_deliver_packed(
                __pf_self: ::proxy_fetch::__private::JsValue,
                _ctx: ::proxy_fetch::__private::JsValue,
                args: ::proxy_fetch::__private::JsValue,
            ) -> ::proxy_fetch::__private::Promise {
                const __PF_METHOD: &str = "__proxyFetchDeliverPacked";
                ::proxy_fetch::__private::deliver_packed::<#this>(#object, args)
            }

            /// The long path's claim (`__proxyFetchClaim`): the queue consumer asks before it fetches.
            #claim_attr
            pub fn __pf_claim(
                __pf_self: ::proxy_fetch::__private::JsValue,
                ctx: ::proxy_fetch::__private::JsValue,
                args: ::proxy_fetch::__private::JsValue,
            ) -> ::proxy_fetch::__private::Promise {
                const __PF_METHOD: &str = "__proxyFetchClaim";
                ::proxy_fetch::__private::claim::<#this>(#object, ctx, args)
            }

            /// The Durable Object's alarm (the JS wrapper calls this instead of `alarm`).
            #alarm_attr
            pub fn __pf_alarm(__pf_self: ::proxy_fetch::__private::JsValue) -> ::proxy_fetch::__private::Promise {
                const __PF_METHOD: &str = "alarm";
                ::proxy_fetch::__private::origin_alarm::<#this>(#object)
            }
        }
    });
    quote! {
        #marker
        pub fn __pf_durable_object_marker() { #assert_do }

        #(#exports)*
        #origin_glue
    }
}

/// Native builds only: one symbol per JS name the worker exports, named after it, so that two
/// `#[entrypoint]`s claiming the same JS name anywhere in the crate fail to compile with
/// "symbol `proxy_fetch__two_methods_are_called__default__version` is already defined" at the
/// second one (in wasm, the two exports would collide at link time or in the main module).
/// Symbol names must suit a linker version script: letters, digits and `_` only.
fn export_symbols(ep: &Entrypoint) -> TokenStream {
    let symbol = |span: Span, parts: &[&str]| {
        let text = parts.join("__");
        quote_spanned! {span=>
            #[cfg(not(target_arch = "wasm32"))]
            #[unsafe(export_name = #text)]
            static __PF_EXPORT: () = ();
        }
    };
    let class = |span: Span, name: &str| {
        symbol(span, &["proxy_fetch", "two_classes_are_exported_as", name])
    };
    let method = |m: &Method, entrypoint: &str| {
        let cfgs = &m.cfgs;
        let s = symbol(
            m.js_name_span,
            &[
                "proxy_fetch",
                "two_methods_are_called",
                entrypoint,
                &m.js_name,
            ],
        );
        quote!(#(#cfgs)* const _: () = { #s };)
    };
    match &ep.kind {
        Kind::DurableObject { .. } => {
            let s = class(ep.self_ident.span(), &ep.self_ident.to_string());
            quote!(const _: () = { #s };)
        }
        Kind::NamedEntrypoint(name) => {
            let class = class(name.span(), &name.value());
            let methods = ep.methods.iter().map(|m| method(m, &name.value()));
            quote!(const _: () = { #class }; #(#methods)*)
        }
        Kind::DefaultEntrypoint => {
            let methods = ep.methods.iter().map(|m| method(m, "default"));
            quote!(#(#methods)*)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_text_reads_as_written() {
        for written in [
            "String",
            "Vec<u8>",
            "Option<Vec<std::string::String>>",
            "&'static str",
            "&mut [u8; 4]",
            "(u32, String)",
            "Box<dyn Fn(u32) -> (u32, u32)>",
            "HashMap<String, Vec<u8>>",
        ] {
            let ty: syn::Type = syn::parse_str(written).expect("a type");
            assert_eq!(super::type_text(&ty), written);
        }
    }
}
