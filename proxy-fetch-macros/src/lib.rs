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
    let mut item: syn::ItemImpl = match syn::parse(input) {
        Ok(item) => item,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                "#[entrypoint] goes on an impl block: `#[entrypoint] impl MyType { async fn ... }`",
            );
            return e.to_compile_error().into();
        }
    };
    let mut errors = Errors::default();
    let args = match syn::parse::<attr::EntrypointArgs>(args) {
        Ok(args) => Some(args),
        Err(e) => {
            errors.push_error(e);
            None
        }
    };
    let parsed = args.and_then(|args| ast::parse(args, &item, &mut errors));
    if let Some(ep) = &parsed {
        valid::check(ep, &mut errors);
    }
    ast::strip_method_attrs(&mut item);
    match (errors.0, parsed) {
        (None, Some(ep)) => expand::expand(&item, &ep).into(),
        // Keep the user's impl so that one mistake does not cascade into "method not found".
        (Some(e), _) => {
            let mut out = item.into_token_stream();
            out.extend(e.to_compile_error());
            out.into()
        }
        (None, None) => item.into_token_stream().into(),
    }
}
