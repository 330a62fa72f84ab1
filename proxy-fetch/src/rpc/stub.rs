//! The caller's side: a JS RPC stub (service binding or Durable Object) and typed calls on it.

use js_sys::{Array, Function, Promise, Reflect};
use serde::de::DeserializeOwned;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::Env;

use super::codec::{error_from_js, from_js};
use super::{CallError, RpcError, RpcErrorKind};

/// A JS object whose methods are RPC calls: a service binding (`Fetcher`) or a Durable Object
/// stub. Cheap to clone.
#[derive(Clone)]
pub struct Stub {
    js: JsValue,
    label: Rc<str>,
}

impl std::fmt::Debug for Stub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stub({})", self.label)
    }
}

/// Looks up a binding for the client constructor `constructor` (`from_env`, `from_name`,
/// `from_id`), which is what an error names as the method: no RPC method was called yet.
fn binding(env: &Env, name: &str, what: &str, constructor: &str) -> Result<JsValue, RpcError> {
    let value = Reflect::get(env, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() {
        return Err(RpcError::new(
            RpcErrorKind::MissingBinding,
            constructor,
            format!("no binding `{name}` in env: declare it as a {what} in wrangler.toml"),
        ));
    }
    Ok(value)
}

/// Calls `target[name](...args)` as a plain JS method call, reporting a throw as `Err`.
fn invoke(target: &JsValue, name: &str, args: &Array) -> Result<JsValue, JsValue> {
    let method: Function = Reflect::get(target, &JsValue::from_str(name))?.dyn_into()?;
    // Reflect.apply, not Function.prototype.call: on an RPC stub `.call` is itself a remote method.
    Reflect::apply(&method, target, args)
}

impl Stub {
    /// A Worker reached through a service binding (`[[services]]` in wrangler.toml).
    pub fn service(env: &Env, binding_name: &str) -> Result<Stub, RpcError> {
        let js = binding(env, binding_name, "[[services]] binding", "from_env")?;
        Ok(Stub {
            js,
            label: binding_name.into(),
        })
    }

    /// The Durable Object named `name` in namespace `binding_name`.
    pub fn durable_object(env: &Env, binding_name: &str, name: &str) -> Result<Stub, RpcError> {
        const METHOD: &str = "from_name";
        let namespace = binding(
            env,
            binding_name,
            "[[durable_objects.bindings]] binding",
            METHOD,
        )?;
        let fail = |e: JsValue| {
            RpcError::new(
                RpcErrorKind::Remote,
                METHOD,
                format!("{binding_name}: {e:?}"),
            )
        };
        let id = invoke(
            &namespace,
            "idFromName",
            &Array::of1(&JsValue::from_str(name)),
        )
        .map_err(fail)?;
        let js = invoke(&namespace, "get", &Array::of1(&id)).map_err(fail)?;
        Ok(Stub {
            js,
            label: format!("{binding_name}/{name}").into(),
        })
    }

    /// The Durable Object with hex id `id` in namespace `binding_name`.
    pub fn durable_object_by_id(env: &Env, binding_name: &str, id: &str) -> Result<Stub, RpcError> {
        const METHOD: &str = "from_id";
        let namespace = binding(
            env,
            binding_name,
            "[[durable_objects.bindings]] binding",
            METHOD,
        )?;
        let fail = |e: JsValue| {
            RpcError::new(
                RpcErrorKind::BadArgument,
                METHOD,
                format!("{binding_name} id `{id}`: {e:?}"),
            )
        };
        let object_id = invoke(
            &namespace,
            "idFromString",
            &Array::of1(&JsValue::from_str(id)),
        )
        .map_err(fail)?;
        let js = invoke(&namespace, "get", &Array::of1(&object_id)).map_err(fail)?;
        Ok(Stub {
            js,
            label: format!("{binding_name}/{id}").into(),
        })
    }

    /// Wraps any JS value whose methods are RPC calls (a stub handed over by JS code).
    pub fn from_js(js: JsValue) -> Stub {
        Stub {
            js,
            label: "stub".into(),
        }
    }

    /// The JS value behind the stub.
    pub fn as_js(&self) -> &JsValue {
        &self.js
    }

    async fn call_raw(&self, method: &str, args: Array) -> Result<JsValue, JsValue> {
        let returned = invoke(&self.js, method, &args)?;
        JsFuture::from(Promise::resolve(&returned)).await
    }

    /// Calls `method` and decodes its result as `T`, or its thrown error as `E`.
    pub async fn call<T: DeserializeOwned, E: DeserializeOwned>(
        &self,
        method: &str,
        args: Array,
    ) -> Result<T, CallError<E>> {
        let value = self
            .call_raw(method, args)
            .await
            .map_err(|e| error_from_js(method, e))?;
        from_js(value).map_err(|e| {
            CallError::Rpc(RpcError::new(
                RpcErrorKind::BadReturn,
                method,
                format!("result: {e}"),
            ))
        })
    }

    /// Calls a `#[wait_until]` method: resolves once the callee acknowledged.
    pub async fn call_ack(&self, method: &str, args: Array) -> Result<(), RpcError> {
        match self.call_raw(method, args).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match error_from_js::<serde::de::IgnoredAny>(method, e) {
                CallError::Rpc(e) => e,
                CallError::Handler(_) => RpcError::new(
                    RpcErrorKind::Remote,
                    method,
                    "the callee failed before acknowledging",
                ),
            }),
        }
    }
}

/// Builds the argument array of a remote call.
pub fn encode_args<const N: usize>(
    values: [Result<JsValue, RpcError>; N],
) -> Result<Array, RpcError> {
    let array = Array::new();
    for value in values {
        array.push(&value?);
    }
    Ok(array)
}
