//! The `#[entrypoint]` macro of proxy-fetch. Use it through the `proxy-fetch` crate, which
//! documents it and holds everything the generated code calls.
//!
//! Pipeline: `attr.rs` (arguments) -> `ast.rs` (the impl as RPC methods) -> `valid.rs` (rules
//! on names) -> `expand.rs` (generated code).

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::ToTokens;

/// Collects every error so the user sees all of them at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>, usize);

impl Errors {
    pub fn count(&self) -> usize {
        self.1
    }

    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new(span, message));
    }

    pub fn push_error(&mut self, error: syn::Error) {
        self.1 += 1;
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
}

/// See `proxy_fetch::entrypoint` for the documentation.
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
        // Keep the user's item so that one mistake does not cascade into "method not found".
        (Some(e), _) => {
            let mut out = item.into_token_stream();
            out.extend(e.to_compile_error());
            out.into()
        }
        (None, None) => item.into_token_stream().into(),
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
