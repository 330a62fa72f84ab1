//! How generated exports reach the Rust value they serve: a Worker entrypoint built for one
//! call, or the workers-rs Durable Object that the JS wrapper owns. This module holds the
//! crate's only `unsafe` and its invariant:
//!
//! **The JS wrapper owns a Durable Object's Rust value for as long as its Wasm instance
//! lives.** The wrapper class (`durableObject` in `js/runtime.js`) builds the wasm-bindgen
//! object on first use, keeps it in `this.inner`, and replaces it only after the Wasm instance
//! it lived in was aborted and replaced, when every future that borrowed it died with that
//! instance. It never frees it; the runtime keeps the wrapper alive while any call into it is
//! pending. So a borrow taken at the start of a call stays valid until the call's future is
//! done, which is what `&'static` stands for here (workers-rs relies on the same for its
//! Durable Objects' `&self` futures). [`durable_self`] and `borrow_object` are the only places
//! that extend a borrow on this ground.

use wasm_bindgen::{JsCast, JsValue};

use super::{RpcError, RpcErrorKind};

/// Builds a `WorkerEntrypoint` handler for one call.
pub fn worker_entrypoint<T: crate::rpc::WorkerEntrypoint>(env: JsValue, ctx: JsValue) -> T {
    T::new(
        env.unchecked_into(),
        worker::Context::new(ctx.unchecked_into()),
    )
}

/// Lets a Durable Object's `&self` into a `'static` handler future.
///
/// # Safety
/// `this` must be a Durable Object's Rust value owned by its JS wrapper (the module's
/// invariant), borrowed for a call into it, and the `'static` borrow used only by that call.
pub unsafe fn durable_self<T>(this: &T) -> &'static T {
    // SAFETY: the caller upholds this module's invariant: the value outlives the call.
    unsafe { &*(this as *const T) }
}

/// How `#[entrypoint(durable_object)]`'s exports reach the workers-rs object: the JS wrapper
/// passes it as a plain JS value, borrowed here. Chosen by autoref specialization,
/// `(&DurableObjectProbe::<T>::new()).borrow_object(..)` with both traits in scope: for a
/// Durable Object, [`ViaDurableObject`]; for any other type the fallback
/// [`NotADurableObject`], so that the one error such a type gets is
/// `assert_durable_object`'s, not one per method about wasm-bindgen's traits.
pub struct DurableObjectProbe<T>(core::marker::PhantomData<fn() -> T>);

impl<T> DurableObjectProbe<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        DurableObjectProbe(core::marker::PhantomData)
    }
}

pub trait ViaDurableObject<T> {
    fn borrow_object(&self, object: &JsValue, method: &'static str)
        -> Result<&'static T, RpcError>;
}

// wasm-bindgen's `convert` traits are its internal ABI; the exact version is pinned
// (Cargo.toml's `wasm-bindgen = "=..."`), and the tests/workerd suites call every
// Durable Object method through this path.
impl<T> ViaDurableObject<T> for DurableObjectProbe<T>
where
    T: worker::DurableObject + ::wasm_bindgen::convert::RefFromWasmAbi + 'static,
    T::Abi: ::wasm_bindgen::convert::WasmAbi<Prim1 = u32, Prim2 = (), Prim3 = (), Prim4 = ()>,
{
    fn borrow_object(
        &self,
        object: &JsValue,
        method: &'static str,
    ) -> Result<&'static T, RpcError> {
        // wasm-bindgen's JS class keeps the Rust object's address in `__wbg_ptr` (0 once freed).
        let ptr = crate::rpc::js::get(object, "__wbg_ptr")
            .ok()
            .and_then(|p| p.as_f64())
            .filter(|p| *p > 0.0 && *p <= u32::MAX as f64)
            .ok_or_else(|| {
                RpcError::new(
                    RpcErrorKind::Remote,
                    method,
                    "the Durable Object's Rust object is gone",
                )
            })?;
        // SAFETY: `ptr` is the address of a live `T`: the wrapper passes `this.rust`, the
        // object wasm-bindgen made for `T` in the current Wasm instance (its getter rebuilt it
        // if the instance was replaced), and a freed object's `__wbg_ptr` is 0, refused above.
        // The borrow is extended to `'static` on the module's invariant.
        unsafe {
            let abi = <T::Abi as ::wasm_bindgen::convert::WasmAbi>::join(ptr as u32, (), (), ());
            let anchor = T::ref_from_abi(abi);
            Ok(durable_self(&*anchor))
        }
    }
}

pub trait NotADurableObject<T> {
    fn borrow_object(&self, object: &JsValue, method: &'static str)
        -> Result<&'static T, RpcError>;
}

/// Only reached in a crate that does not compile (`assert_durable_object` fails).
impl<T> NotADurableObject<T> for &DurableObjectProbe<T> {
    fn borrow_object(&self, _: &JsValue, method: &'static str) -> Result<&'static T, RpcError> {
        Err(RpcError::new(
            RpcErrorKind::Remote,
            method,
            "not a Durable Object",
        ))
    }
}

/// Fails to compile, at the user's `durable_object`, unless `T` is a Durable Object.
pub fn assert_durable_object<T: IsDurableObject>() {}

#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Durable Object, so #[entrypoint(durable_object)] cannot serve its methods",
    label = "not a workers-rs Durable Object",
    note = "declare it with workers-rs `#[durable_object]` and `impl DurableObject for {Self}`, or \
            serve its methods from a Worker entrypoint: #[entrypoint] or #[entrypoint(name = \"...\")]"
)]
pub trait IsDurableObject {}

impl<T: worker::DurableObject> IsDurableObject for T {}
pub fn assert_worker_entrypoint<T: crate::rpc::WorkerEntrypoint>() {}
