//! The impl block as the macro sees it: one `Method` per RPC method. Parsing records facts;
//! `valid.rs` decides what is allowed.

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
}

pub struct Method {
    pub ident: Ident,
    /// The name JS callers use: camelCase of the Rust name, or `#[rpc(name = "...")]`.
    pub js_name: String,
    pub js_name_span: Span,
    pub wait_until: Option<Span>,
    pub args: Vec<Arg>,
    pub ok: Type,
    pub err: Type,
    pub docs: Vec<Attribute>,
}

pub struct Arg {
    pub ident: Ident,
    pub ty: Type,
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

pub fn parse(args: EntrypointArgs, item: &ItemImpl, errors: &mut Errors) -> Option<Entrypoint> {
    if let Some((_, trait_path, _)) = &item.trait_ {
        errors.push(
            trait_path.span(),
            "#[entrypoint] goes on an inherent impl (`impl MyType { ... }`), not on a trait impl: \
             RPC methods are the type's own",
        );
    }
    if !item.generics.params.is_empty() {
        errors.push(
            item.generics.span(),
            "#[entrypoint] cannot be generic: the runtime builds one concrete type per entrypoint; \
             use a concrete type (or a type alias of one)",
        );
    }
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
    let client = args
        .client
        .unwrap_or_else(|| format_ident!("{}Client", self_ident));
    let methods = item
        .items
        .iter()
        .filter_map(|impl_item| match impl_item {
            ImplItem::Fn(f) => parse_method(&f.sig, &f.attrs, errors),
            _ => None,
        })
        .collect();
    Some(Entrypoint {
        kind: args.kind,
        self_ident,
        client,
        methods,
        remote_only: false,
    })
}

/// A trait under `#[entrypoint]` declares an entrypoint implemented elsewhere (in JS, or in
/// another worker): only a client is generated.
pub fn parse_remote(args: EntrypointArgs, item: &ItemTrait, errors: &mut Errors) -> Entrypoint {
    if !item.generics.params.is_empty() {
        errors.push(
            item.generics.span(),
            "an #[entrypoint] trait cannot be generic: a remote caller cannot choose a type",
        );
    }
    let client = args
        .client
        .unwrap_or_else(|| format_ident!("{}Client", item.ident));
    let methods = item
        .items
        .iter()
        .filter_map(|trait_item| match trait_item {
            TraitItem::Fn(f) => parse_method(&f.sig, &f.attrs, errors),
            _ => None,
        })
        .collect();
    Entrypoint {
        kind: args.kind,
        self_ident: item.ident.clone(),
        client,
        methods,
        remote_only: true,
    }
}

fn parse_method(sig: &Signature, attrs: &[Attribute], errors: &mut Errors) -> Option<Method> {
    let errors_before = errors.count();

    let mut wait_until = None;
    let mut rpc_name = None;
    for attr in attrs {
        if attr.path().is_ident("wait_until") {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                errors.push(attr.span(), "#[wait_until] takes no arguments");
            }
            wait_until = Some(attr.span());
        } else if attr.path().is_ident("rpc") {
            match attr.parse_args::<RpcArgs>() {
                Ok(a) => rpc_name = Some(a.name),
                Err(e) => errors.push_error(e),
            }
        }
    }

    if sig.asyncness.is_none() {
        errors.push(sig.fn_token.span, "RPC methods are async: write `async fn`");
    }
    if !sig.generics.params.is_empty() {
        errors.push(
            sig.generics.span(),
            "RPC methods cannot be generic: a remote caller cannot choose a type; use concrete types",
        );
    }
    if let Some(v) = &sig.variadic {
        errors.push(v.span(), "RPC methods cannot be variadic");
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) if r.mutability.is_some() && r.reference.is_some() => errors.push(
            r.span(),
            "RPC methods take `&self`, not `&mut self`: calls may overlap, so keep mutable state in \
             storage or a `RefCell`",
        ),
        Some(FnArg::Receiver(r)) if r.reference.is_none() => errors.push(
            r.span(),
            "RPC methods take `&self`, not `self` by value: the handler is shared by every call",
        ),
        Some(FnArg::Receiver(r)) => errors.push(r.span(), "RPC methods take `&self`"),
        _ => errors.push(
            sig.ident.span(),
            "RPC methods take `&self` first; move associated functions (no `self`) to another impl block",
        ),
    }

    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(pt) = input else { continue };
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                errors.push(
                    other.span(),
                    "RPC arguments must be plain names (`msg: FetchMessage`): patterns have no name to \
                     report in a payload error; destructure inside the body",
                );
                continue;
            }
        };
        match &*pt.ty {
            Type::Reference(r) => errors.push(
                r.span(),
                "RPC arguments are owned values decoded from the caller's payload: take `T`, not `&T`",
            ),
            Type::ImplTrait(t) => errors.push(
                t.span(),
                "RPC arguments need a concrete type that serde can decode: `impl Trait` has none",
            ),
            _ => {}
        }
        args.push(Arg {
            ident,
            ty: (*pt.ty).clone(),
        });
    }

    let (ok_ty, err_ty) = match result_types(&sig.output) {
        Some(types) => types,
        None => {
            errors.push(
                match &sig.output {
                    ReturnType::Default => sig.ident.span(),
                    ReturnType::Type(_, ty) => ty.span(),
                },
                "RPC methods return `Result<T, E>` with both types written out (T and E serde types, E: \
                 Display): the caller needs to decode both; e.g. `-> Result<Health, HandlerError>`",
            );
            return None;
        }
    };
    if wait_until.is_some() && !is_unit(&ok_ty) {
        errors.push(
            ok_ty.span(),
            "a #[wait_until] method returns `Result<(), E>`: the caller is answered before the work \
             ends, so there is no value to send; remove #[wait_until] to return a value",
        );
    }

    let (js_name, js_name_span) = match rpc_name {
        Some(lit) => (lit.value(), lit.span()),
        None => (camel_case(&sig.ident.to_string()), sig.ident.span()),
    };
    let docs = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    (errors.count() == errors_before).then(|| Method {
        ident: sig.ident.clone(),
        js_name,
        js_name_span,
        wait_until,
        args,
        ok: ok_ty,
        err: err_ty,
        docs,
    })
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments) -> `(T, E)`.
fn result_types(output: &ReturnType) -> Option<(Type, Type)> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(p) = &**ty else { return None };
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

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
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
