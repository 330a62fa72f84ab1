//! The item as the macro sees it: an `Entrypoint` with one `Method` per RPC method or
//! continuation handler. Parsing records what the user wrote; `valid.rs` decides what is
//! allowed, `expand.rs` what it becomes.

use proc_macro2::Span;
use quote::format_ident;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, Item, ItemImpl, ItemTrait, Meta, Pat,
    PathArguments, ReturnType, Signature, TraitItem, Type, Visibility,
};

use crate::attr::{EntrypointArgs, Kind, RpcArgs};
use crate::Errors;

pub struct Entrypoint {
    pub kind: Kind,
    pub self_ident: Ident,
    pub client: Ident,
    /// RPC methods and continuation handlers, in the order written (helpers are left out).
    pub methods: Vec<Method>,
    /// The methods left as written (not `pub`, not continuation handlers): the client gets a
    /// hint for each, so that reaching for one says why it is not there.
    pub helpers: Vec<Helper>,
    /// Declared by a trait: the handlers live elsewhere, only the client is generated.
    pub remote_only: bool,
    /// `impl Trait for Type`: the trait's path.
    pub trait_impl: Option<Span>,
    /// Generic parameters on the impl or trait.
    pub generics: Option<Span>,
    /// Generic arguments on the impl's type (`impl Wrapper<u32>`).
    pub self_generic_args: Option<Span>,
    /// Macro invocations inside the block: their expansion cannot be seen.
    pub macros: Vec<Span>,
    /// `#[wait_until]` or `#[rpc]` on a method that is not an RPC method (not `pub`).
    pub attrs_on_helpers: Vec<(Span, String)>,
    /// `unsafe`/`extern`/`const` or default bodies (traits) on methods.
    pub bad_fn_qualifiers: Vec<(Span, &'static str)>,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Role {
    /// Exported, with a client method.
    Rpc,
    /// A continuation handler of an origin Durable Object: dispatched by proxy-fetch only.
    Handler,
}

pub struct Method {
    pub role: Role,
    pub ident: Ident,
    /// The Rust name without `r#`.
    pub rust_name: String,
    /// The name JS callers use: camelCase of the Rust name, or `#[rpc(name = "...")]`.
    pub js_name: String,
    pub js_name_span: Span,
    pub wait_until: Option<Span>,
    /// `#[wait_until(...)]` with arguments.
    pub wait_until_args: Option<Span>,
    /// Second `#[wait_until]` or `#[rpc]` on the same method.
    pub duplicate_attrs: Vec<Span>,
    /// `#[cfg_attr(..., wait_until)]`: the macro cannot evaluate the condition.
    pub cfg_attr_ours: Vec<Span>,
    pub docs: Vec<Attribute>,
    /// `#[cfg(...)]` attributes: they gate everything generated for the method.
    pub cfgs: Vec<Attribute>,
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
            Output::Other(..) => None,
        }
    }

    /// The name of its typed handle on the client: `on_response` -> `ON_RESPONSE`.
    pub fn handle_name(&self) -> String {
        self.rust_name.to_uppercase()
    }
}

/// A method of the impl block that is neither an RPC method nor a continuation handler.
pub struct Helper {
    pub ident: Ident,
    /// The Rust name without `r#`.
    pub rust_name: String,
    /// Takes `self` in some form: a client method of its name is what a caller would write.
    pub has_receiver: bool,
    /// The type of its first argument after the receiver: what made it not a handler.
    pub first_arg: Option<Type>,
    pub cfgs: Vec<Attribute>,
}

impl Helper {
    /// The name its typed handle would have: `on_response` -> `ON_RESPONSE`.
    pub fn handle_name(&self) -> String {
        self.rust_name.to_uppercase()
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
    /// Anything else: the span to point at, and the type written (if any).
    Other(Span, Option<Box<Type>>),
}

const OURS: &[&str] = &["wait_until", "rpc"];

fn is_ours(attr: &Attribute) -> bool {
    OURS.iter().any(|name| attr.path().is_ident(name))
}

/// `#[cfg_attr(pred, wait_until)]`: one of our attributes under a condition.
fn cfg_attr_holds_ours(attr: &Attribute) -> bool {
    if !attr.path().is_ident("cfg_attr") {
        return false;
    }
    let Meta::List(list) = &attr.meta else {
        return false;
    };
    let tokens = list.tokens.to_string();
    OURS.iter().any(|name| {
        tokens
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == *name)
    })
}

/// Removes this macro's method attributes so the item compiles as the user wrote it.
pub fn strip_method_attrs(item: &mut Item) {
    let strip =
        |attrs: &mut Vec<Attribute>| attrs.retain(|a| !is_ours(a) && !cfg_attr_holds_ours(a));
    match item {
        Item::Impl(item) => item.items.iter_mut().for_each(|i| {
            if let ImplItem::Fn(f) = i {
                strip(&mut f.attrs);
            }
        }),
        Item::Trait(item) => item.items.iter_mut().for_each(|i| {
            if let TraitItem::Fn(f) = i {
                strip(&mut f.attrs);
            }
        }),
        _ => {}
    }
}

fn generics_span(generics: &syn::Generics) -> Option<Span> {
    (!generics.params.is_empty()).then(|| generics.span())
}

fn qualifiers(sig: &Signature, out: &mut Vec<(Span, &'static str)>) {
    if let Some(t) = &sig.constness {
        out.push((t.span, "RPC methods cannot be `const fn`"));
    }
    if let Some(t) = &sig.unsafety {
        out.push((
            t.span,
            "RPC methods cannot be `unsafe`: a remote caller cannot uphold a safety contract; \
             make the method safe and use `unsafe` inside it",
        ));
    }
    if let Some(abi) = &sig.abi {
        out.push((abi.span(), "RPC methods use the Rust ABI: remove `extern`"));
    }
}

/// Is the first argument (after `self`) a `FetchResult`?
fn takes_fetch_result(sig: &Signature) -> bool {
    let first = sig.inputs.iter().find_map(|input| match input {
        FnArg::Typed(pt) => Some(&*pt.ty),
        FnArg::Receiver(_) => None,
    });
    matches!(first, Some(Type::Path(p))
        if p.path.segments.last().is_some_and(|s| s.ident == "FetchResult"))
}

/// `None` only when the impl's type is not a plain name: there is nothing to name a client after.
pub fn parse(args: EntrypointArgs, item: &ItemImpl, errors: &mut Errors) -> Option<Entrypoint> {
    let mut self_generic_args = None;
    let self_ident = match &*item.self_ty {
        Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            let segment = &p.path.segments[0];
            if !segment.arguments.is_none() {
                self_generic_args = Some(segment.arguments.span());
            }
            segment.ident.clone()
        }
        other => {
            errors.push(
                other.span(),
                "#[entrypoint] expects `impl TypeName { ... }` with a plain type name",
            );
            return None;
        }
    };
    let origin = matches!(args.kind, Kind::DurableObject { origin: true, .. });
    let mut methods = Vec::new();
    let mut macros = Vec::new();
    let mut attrs_on_helpers = Vec::new();
    let mut helpers = Vec::new();
    let mut bad_fn_qualifiers = Vec::new();
    for impl_item in &item.items {
        match impl_item {
            ImplItem::Fn(f) => {
                let role = if origin && takes_fetch_result(&f.sig) {
                    Role::Handler
                } else if matches!(f.vis, Visibility::Public(_)) || item.trait_.is_some() {
                    Role::Rpc
                } else {
                    for attr in f
                        .attrs
                        .iter()
                        .filter(|a| is_ours(a) || cfg_attr_holds_ours(a))
                    {
                        attrs_on_helpers.push((attr.span(), f.sig.ident.unraw().to_string()));
                    }
                    helpers.push(parse_helper(&f.sig, &f.attrs));
                    continue;
                };
                qualifiers(&f.sig, &mut bad_fn_qualifiers);
                methods.push(parse_method(role, &f.sig, &f.attrs, errors));
            }
            ImplItem::Macro(m) => macros.push(m.mac.path.span()),
            _ => {}
        }
    }
    Some(Entrypoint {
        kind: args.kind,
        client: args
            .client
            .unwrap_or_else(|| format_ident!("{}Client", self_ident.unraw())),
        self_ident,
        methods,
        helpers,
        remote_only: false,
        trait_impl: item.trait_.as_ref().map(|(_, path, _)| path.span()),
        generics: generics_span(&item.generics),
        self_generic_args,
        macros,
        attrs_on_helpers,
        bad_fn_qualifiers,
    })
}

/// A trait under `#[entrypoint]` declares an entrypoint implemented elsewhere (in JS, or in
/// another worker): only a client is generated, and every method is an RPC method.
pub fn parse_remote(args: EntrypointArgs, item: &ItemTrait, errors: &mut Errors) -> Entrypoint {
    let mut methods = Vec::new();
    let mut macros = Vec::new();
    let mut bad_fn_qualifiers = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                if let Some(body) = &f.default {
                    bad_fn_qualifiers.push((
                        body.brace_token.span.join(),
                        "a default body in an #[entrypoint] trait never runs: the trait only declares \
                         an entrypoint served elsewhere, and calls go over RPC; remove the body (end \
                         the declaration with `;`)",
                    ));
                }
                qualifiers(&f.sig, &mut bad_fn_qualifiers);
                methods.push(parse_method(Role::Rpc, &f.sig, &f.attrs, errors));
            }
            TraitItem::Macro(m) => macros.push(m.mac.path.span()),
            _ => {}
        }
    }
    Entrypoint {
        kind: args.kind,
        client: args
            .client
            .unwrap_or_else(|| format_ident!("{}Client", item.ident.unraw())),
        self_ident: item.ident.clone(),
        methods,
        helpers: Vec::new(),
        remote_only: true,
        trait_impl: None,
        generics: generics_span(&item.generics),
        self_generic_args: None,
        macros,
        attrs_on_helpers: Vec::new(),
        bad_fn_qualifiers,
    }
}

fn parse_helper(sig: &Signature, attrs: &[Attribute]) -> Helper {
    Helper {
        ident: sig.ident.clone(),
        rust_name: sig.ident.unraw().to_string(),
        has_receiver: matches!(sig.inputs.first(), Some(FnArg::Receiver(_))),
        first_arg: sig.inputs.iter().find_map(|input| match input {
            FnArg::Typed(pt) => Some((*pt.ty).clone()),
            FnArg::Receiver(_) => None,
        }),
        cfgs: attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"))
            .cloned()
            .collect(),
    }
}

fn parse_method(role: Role, sig: &Signature, attrs: &[Attribute], errors: &mut Errors) -> Method {
    let mut wait_until = None;
    let mut wait_until_args = None;
    let mut rpc_name = None;
    let mut rpc_seen = false;
    let mut duplicate_attrs = Vec::new();
    let mut cfg_attr_ours = Vec::new();
    for attr in attrs {
        if attr.path().is_ident("wait_until") {
            if wait_until.is_some() {
                duplicate_attrs.push(attr.span());
            }
            wait_until = Some(attr.span());
            if !matches!(attr.meta, Meta::Path(_)) {
                wait_until_args = Some(attr.span());
            }
        } else if attr.path().is_ident("rpc") {
            if rpc_seen {
                duplicate_attrs.push(attr.span());
                continue;
            }
            rpc_seen = true;
            match attr.parse_args::<RpcArgs>() {
                Ok(a) => rpc_name = Some(a.name),
                Err(e) => errors.push_error(e),
            }
        } else if cfg_attr_holds_ours(attr) {
            cfg_attr_ours.push(attr.span());
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
        None => match &sig.output {
            ReturnType::Default => Output::Other(sig.ident.span(), None),
            ReturnType::Type(_, ty) => Output::Other(ty.span(), Some(ty.clone())),
        },
    };
    let rust_name = sig.ident.unraw().to_string();
    let (js_name, js_name_span) = match rpc_name {
        Some(lit) => (lit.value(), lit.span()),
        None => (camel_case(&rust_name), sig.ident.span()),
    };
    Method {
        role,
        ident: sig.ident.clone(),
        rust_name,
        js_name,
        js_name_span,
        wait_until,
        wait_until_args,
        duplicate_attrs,
        cfg_attr_ours,
        docs: attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        cfgs: attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"))
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
        let prev = i.checked_sub(1).and_then(|p| chars.get(p).copied());
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
    let mut out = "_".repeat(snake.len() - trimmed.len());
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
