//! The item as the macro sees it: an `Entrypoint` with one `Method` per RPC method. Parsing
//! records what the user wrote; `valid.rs` decides what is allowed, `expand.rs` what it becomes.

use proc_macro2::Span;
use quote::format_ident;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, Item, ItemImpl, ItemTrait, Pat,
    PathArguments, ReturnType, Signature, TraitItem, Type,
};

use crate::attr::{EntrypointArgs, Kind, RpcArgs};
use crate::Errors;

pub struct Entrypoint {
    pub kind: Kind,
    pub self_ident: Ident,
    pub client: Ident,
    pub methods: Vec<Method>,
    /// Declared by a trait: the handlers live elsewhere, only the client is generated.
    pub remote_only: bool,
    /// `impl Trait for Type`: the trait's path.
    pub trait_impl: Option<Span>,
    /// Generic parameters on the impl or trait.
    pub generics: Option<Span>,
}

pub struct Method {
    pub ident: Ident,
    /// The name JS callers use: camelCase of the Rust name, or `#[rpc(name = "...")]`.
    pub js_name: String,
    pub js_name_span: Span,
    pub wait_until: Option<Span>,
    /// `#[wait_until(...)]` with arguments.
    pub wait_until_args: Option<Span>,
    pub docs: Vec<Attribute>,
    pub fn_token: Span,
    pub is_async: bool,
    pub generics: Option<Span>,
    pub variadic: Option<Span>,
    pub receiver: Receiver,
    pub args: Vec<Arg>,
    pub output: Output,
}

impl Method {
    /// The arguments with their names: all of them once `valid.rs` found nothing wrong, which
    /// is the only time `expand.rs` runs.
    pub fn named_args(&self) -> Vec<(&Ident, &Type)> {
        self.args
            .iter()
            .filter_map(|a| Some((a.ident.as_ref()?, &a.ty)))
            .collect()
    }

    /// `(T, E)` of the `Result<T, E>` it returns: present once `valid.rs` found nothing wrong.
    pub fn result(&self) -> Option<(&Type, &Type)> {
        match &self.output {
            Output::Result { ok, err } => Some((&**ok, &**err)),
            Output::Other(_) => None,
        }
    }
}

pub enum Receiver {
    /// `&self`, the one allowed.
    Ref,
    RefMut(Span),
    Value(Span),
    /// `self: Box<Self>` and other typed receivers.
    Typed(Span),
    /// No receiver: the span of the method's name.
    Missing(Span),
}

pub struct Arg {
    /// `None` for a pattern (`(a, b): (u32, u32)`).
    pub ident: Option<Ident>,
    pub pat_span: Span,
    pub ty: Type,
}

pub enum Output {
    Result {
        ok: Box<Type>,
        err: Box<Type>,
    },
    /// Anything else: the span to point at.
    Other(Span),
}

fn is_ours(attr: &Attribute) -> bool {
    attr.path().is_ident("wait_until") || attr.path().is_ident("rpc")
}

/// Removes this macro's method attributes so the item compiles as the user wrote it.
pub fn strip_method_attrs(item: &mut Item) {
    match item {
        Item::Impl(item) => item.items.iter_mut().for_each(|i| {
            if let ImplItem::Fn(f) = i {
                f.attrs.retain(|a| !is_ours(a));
            }
        }),
        Item::Trait(item) => item.items.iter_mut().for_each(|i| {
            if let TraitItem::Fn(f) = i {
                f.attrs.retain(|a| !is_ours(a));
            }
        }),
        _ => {}
    }
}

fn generics_span(generics: &syn::Generics) -> Option<Span> {
    (!generics.params.is_empty()).then(|| generics.span())
}

/// `None` only when the impl's type is not a plain name: there is nothing to name a client after.
pub fn parse(args: EntrypointArgs, item: &ItemImpl, errors: &mut Errors) -> Option<Entrypoint> {
    let self_ident = match &*item.self_ty {
        Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            p.path.segments[0].ident.clone()
        }
        other => {
            errors.push(
                other.span(),
                "#[entrypoint] expects `impl TypeName { ... }` with a plain type name",
            );
            return None;
        }
    };
    let methods = item
        .items
        .iter()
        .filter_map(|impl_item| match impl_item {
            ImplItem::Fn(f) => Some(parse_method(&f.sig, &f.attrs, errors)),
            _ => None,
        })
        .collect();
    Some(Entrypoint {
        kind: args.kind,
        client: args
            .client
            .unwrap_or_else(|| format_ident!("{}Client", self_ident)),
        self_ident,
        methods,
        remote_only: false,
        trait_impl: item.trait_.as_ref().map(|(_, path, _)| path.span()),
        generics: generics_span(&item.generics),
    })
}

/// A trait under `#[entrypoint]` declares an entrypoint implemented elsewhere (in JS, or in
/// another worker): only a client is generated.
pub fn parse_remote(args: EntrypointArgs, item: &ItemTrait, errors: &mut Errors) -> Entrypoint {
    let methods = item
        .items
        .iter()
        .filter_map(|trait_item| match trait_item {
            TraitItem::Fn(f) => Some(parse_method(&f.sig, &f.attrs, errors)),
            _ => None,
        })
        .collect();
    Entrypoint {
        kind: args.kind,
        client: args
            .client
            .unwrap_or_else(|| format_ident!("{}Client", item.ident)),
        self_ident: item.ident.clone(),
        methods,
        remote_only: true,
        trait_impl: None,
        generics: generics_span(&item.generics),
    }
}

fn parse_method(sig: &Signature, attrs: &[Attribute], errors: &mut Errors) -> Method {
    let mut wait_until = None;
    let mut wait_until_args = None;
    let mut rpc_name = None;
    for attr in attrs {
        if attr.path().is_ident("wait_until") {
            wait_until = Some(attr.span());
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                wait_until_args = Some(attr.span());
            }
        } else if attr.path().is_ident("rpc") {
            match attr.parse_args::<RpcArgs>() {
                Ok(a) => rpc_name = Some(a.name),
                Err(e) => errors.push_error(e),
            }
        }
    }

    let mut inputs = sig.inputs.iter();
    let receiver = match inputs.next() {
        Some(FnArg::Receiver(r)) if r.colon_token.is_some() => Receiver::Typed(r.span()),
        Some(FnArg::Receiver(r)) if r.reference.is_none() => Receiver::Value(r.span()),
        Some(FnArg::Receiver(r)) if r.mutability.is_some() => Receiver::RefMut(r.span()),
        Some(FnArg::Receiver(_)) => Receiver::Ref,
        _ => {
            // Without a receiver the first input is an argument like the others.
            inputs = sig.inputs.iter();
            Receiver::Missing(sig.ident.span())
        }
    };
    let args = inputs
        .filter_map(|input| match input {
            FnArg::Typed(pt) => Some(Arg {
                ident: match &*pt.pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                        Some(p.ident.clone())
                    }
                    _ => None,
                },
                pat_span: pt.pat.span(),
                ty: (*pt.ty).clone(),
            }),
            FnArg::Receiver(_) => None,
        })
        .collect();

    let output = match result_types(&sig.output) {
        Some((ok, err)) => Output::Result {
            ok: Box::new(ok),
            err: Box::new(err),
        },
        None => Output::Other(match &sig.output {
            ReturnType::Default => sig.ident.span(),
            ReturnType::Type(_, ty) => ty.span(),
        }),
    };
    let (js_name, js_name_span) = match rpc_name {
        Some(lit) => (lit.value(), lit.span()),
        None => (camel_case(&sig.ident.to_string()), sig.ident.span()),
    };
    Method {
        ident: sig.ident.clone(),
        js_name,
        js_name_span,
        wait_until,
        wait_until_args,
        docs: attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        fn_token: sig.fn_token.span,
        is_async: sig.asyncness.is_some(),
        generics: generics_span(&sig.generics),
        variadic: sig.variadic.as_ref().map(|v| v.span()),
        receiver,
        args,
        output,
    }
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments) -> `(T, E)`.
fn result_types(output: &ReturnType) -> Option<(Type, Type)> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(p) = &**ty else {
        return None;
    };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return None;
    };
    let mut types = generics.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let (ok, err) = (types.next()?, types.next()?);
    types.next().is_none().then_some((ok, err))
}

/// `WeatherDo` -> `WEATHER_DO`, `HTTPServer` -> `HTTP_SERVER`: the conventional binding name.
pub fn screaming_snake(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if boundary {
            out.push('_');
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// `execute_fetch` -> `executeFetch`; leading underscores are kept.
pub fn camel_case(snake: &str) -> String {
    let trimmed = snake.trim_start_matches('_');
    let mut out = String::from(&snake[..snake.len() - trimmed.len()]);
    let mut upper = false;
    for c in trimmed.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
