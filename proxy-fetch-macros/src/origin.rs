//! `#[origin]` on a struct: a proxy-fetch origin Durable Object in one piece. It is the
//! struct-side half of an origin; `#[entrypoint(durable_object, origin)]` on its impl block is
//! the other. Parse (the struct's `State` and `Env` fields) -> validate -> expand (workers-rs
//! `#[durable_object]`, `DurableObject`, `ProxyFetchOrigin`).

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Fields, ItemStruct, Member, Type};

use crate::Errors;

/// What `#[origin]` reads off the struct.
struct Origin {
    state: Member,
    env: Member,
    /// Every other field, set to `Default::default()` by the generated constructor.
    others: Vec<(Member, Span)>,
}

/// The last path segment of a field's type, e.g. `State` for `worker::State`.
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

fn parse(item: &ItemStruct, errors: &mut Errors) -> Option<Origin> {
    let Fields::Named(fields) = &item.fields else {
        errors.push(
            item.ident.span(),
            "#[origin] goes on a struct with named fields, e.g. `struct Inbox { state: State, env: Env }`",
        );
        return None;
    };
    let (mut state, mut env, mut others) = (None, None, Vec::new());
    for field in &fields.named {
        let member = Member::Named(field.ident.clone()?);
        let slot = match type_name(&field.ty).as_deref() {
            Some("State") => &mut state,
            Some("Env") => &mut env,
            _ => {
                others.push((member, field.ty.span()));
                continue;
            }
        };
        if slot.is_some() {
            errors.push(
                field.ty.span(),
                "a second field of this type: #[origin] fills exactly one `State` and one `Env`",
            );
        } else {
            *slot = Some(member);
        }
    }
    let missing = |what: &str| {
        format!("#[origin] needs a field of type `{what}` (the Durable Object's, given to its constructor), e.g. `{}: {what}`", what.to_lowercase())
    };
    if state.is_none() {
        errors.push(item.ident.span(), missing("State"));
    }
    if env.is_none() {
        errors.push(item.ident.span(), missing("Env"));
    }
    if !item.generics.params.is_empty() {
        errors.push(
            item.generics.span(),
            "a Durable Object cannot be generic: remove the type parameters",
        );
    }
    Some(Origin {
        state: state?,
        env: env?,
        others,
    })
}

pub fn origin(args: TokenStream, item: ItemStruct) -> TokenStream {
    let mut errors = Errors::default();
    if !args.is_empty() {
        errors.push(args.span(), "#[origin] takes no arguments");
    }
    let parsed = parse(&item, &mut errors);
    let (Some(origin), None) = (parsed, errors.0.as_ref()) else {
        let error = errors.0.map(|e| e.to_compile_error());
        return quote!(#item #error);
    };
    let this = &item.ident;
    let Origin { state, env, others } = origin;
    let defaults = others
        .iter()
        .map(|(member, span)| quote_spanned!(*span=> #member: ::core::default::Default::default()));
    let not_found = format!("{this} serves RPC, not HTTP fetch");
    quote! {
        #[::proxy_fetch::__private::durable_object]
        #item

        impl ::proxy_fetch::__private::DurableObject for #this {
            fn new(state: ::proxy_fetch::__private::State, env: ::proxy_fetch::__private::Env) -> Self {
                Self { #state: state, #env: env, #(#defaults,)* }
            }

            async fn fetch(&self, _request: ::proxy_fetch::__private::Request) -> ::proxy_fetch::__private::WorkerResult<::proxy_fetch::__private::Response> {
                ::proxy_fetch::__private::Response::error(#not_found, 404)
            }
        }

        impl ::proxy_fetch::ProxyFetchOrigin for #this {
            fn state(&self) -> &::proxy_fetch::__private::State {
                &self.#state
            }
            fn env(&self) -> &::proxy_fetch::__private::Env {
                &self.#env
            }
        }
    }
}
