//! Values cross the RPC boundary as structured-clone values: serde types become plain JS
//! objects (maps too), `serde_bytes` buffers become `Uint8Array`, so JS callers see natural values.

use js_sys::{Array, Reflect};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Display;
use wasm_bindgen::{JsCast, JsValue};

use super::{RpcError, RpcErrorKind};

/// Own property of a thrown `Error` that carries a handler's serialized error.
const HANDLER_ERROR_PROP: &str = "proxyFetchHandlerError";
/// Own property of a thrown `Error` that carries an [`RpcError`].
const RPC_ERROR_PROP: &str = "proxyFetchRpcError";

pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, String> {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    value.serialize(&serializer).map_err(|e| e.to_string())
}

/// Values nested deeper than this are refused before decoding: a recursive type (e.g.
/// `serde_json::Value`) nested thousands deep would overflow the Wasm stack while decoding,
/// and that aborts the instance with every call in it.
pub const MAX_DEPTH: u32 = 128;
/// Values with more nested parts than this are refused (a structured clone may share one
/// object many times over, which a walk would visit again each time).
pub(crate) const MAX_PARTS: u32 = 1_000_000;

/// Checks what decoding cannot: nesting depth (arrays, objects, maps and sets: serde decodes
/// any iterable), the number of parts (counted before they are listed), and strings, keys
/// included, that are not valid Unicode (a lone surrogate would otherwise become U+FFFD, so two
/// different JS strings could decode alike).
/// The walk runs in JS: from Wasm, each value it looks at would cost calls across the
/// boundary (it took 6.8% of the CPU of the bench's 1,000-request burst that way).
fn check_shape(value: &JsValue) -> Result<(), String> {
    match shape::check_shape(value, MAX_DEPTH, MAX_PARTS) {
        None => Ok(()),
        Some(problem) => Err(problem),
    }
}

mod shape {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(inline_js = r#"
export function checkShape(value, maxDepth, maxParts) {
  const stack = [value, 0];
  let parts = 0;
  // Counted before they are walked: a sparse array's length costs nothing to send.
  const tooMany = (n) => parts + stack.length / 2 + n > maxParts;
  const tooManyParts = `more than ${maxParts} nested values`;
  while (stack.length > 0) {
    const depth = stack.pop();
    const v = stack.pop();
    if (++parts > maxParts) return tooManyParts;
    if (typeof v === "string") {
      if (!v.isWellFormed()) return "a string is not valid Unicode (lone surrogate)";
      continue;
    }
    if (v === null || typeof v !== "object" || v instanceof Uint8Array) continue;
    if (depth >= maxDepth) return `nested deeper than ${maxDepth} levels`;
    if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) continue;
    if (Array.isArray(v)) {
      if (tooMany(v.length)) return tooManyParts;
      for (const child of v) stack.push(child, depth + 1);
    } else if (v instanceof Map) {
      if (tooMany(2 * v.size)) return tooManyParts;
      for (const [key, child] of v) stack.push(key, depth + 1, child, depth + 1);
    } else if (v instanceof Set) {
      if (tooMany(v.size)) return tooManyParts;
      for (const child of v) stack.push(child, depth + 1);
    } else {
      // Keys are strings serde decodes too (a map's keys, a struct's field names).
      for (const key in v) {
        if (!Object.hasOwn(v, key)) continue;
        if (!key.isWellFormed()) return "a string is not valid Unicode (lone surrogate)";
        stack.push(v[key], depth + 1);
      }
    }
  }
  return undefined;
}
"#)]
    extern "C" {
        /// `undefined` when `value` is fine, else what is wrong with it.
        #[wasm_bindgen(js_name = checkShape)]
        pub fn check_shape(value: &JsValue, max_depth: u32, max_parts: u32) -> Option<String>;
    }
}

/// Decodes a JS value, naming the path of the field that did not fit (`headers[2].name`).
/// The path is tracked only once a value failed to decode, in a second decode that fails
/// alike: tracking copies every field name into Wasm memory (3% of the CPU of the bench's
/// burst), which a value that fits does not need.
#[cfg(feature = "field-paths")]
pub(crate) fn from_js<T: DeserializeOwned>(value: JsValue) -> Result<T, String> {
    check_shape(&value)?;
    let plain = match serde_wasm_bindgen::from_value(value.clone()) {
        Ok(decoded) => return Ok(decoded),
        Err(e) => e,
    };
    let deserializer = serde_wasm_bindgen::Deserializer::from(value);
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Err(e) => {
            let path = e.path().to_string();
            Err(if path == "." {
                e.inner().to_string()
            } else {
                format!("field `{path}`: {}", e.inner())
            })
        }
        // Not expected (decoding is deterministic): the first decode's error stands.
        Ok(_) => Err(plain.to_string()),
    }
}

/// Decodes a JS value (without the `field-paths` feature: serde's message alone).
#[cfg(not(feature = "field-paths"))]
pub(crate) fn from_js<T: DeserializeOwned>(value: JsValue) -> Result<T, String> {
    check_shape(&value)?;
    serde_wasm_bindgen::from_value(value).map_err(|e| e.to_string())
}

/// Encodes one argument of a remote call.
pub fn encode_arg<T: Serialize>(method: &str, name: &str, value: &T) -> Result<JsValue, RpcError> {
    to_js(value).map_err(|e| {
        RpcError::new(
            RpcErrorKind::BadArgument,
            method,
            format!("argument `{name}` could not be encoded: {e}"),
        )
    })
}

/// The positional arguments a JS wrapper hands to a generated handler.
pub struct Args {
    method: &'static str,
    values: Array,
}

impl Args {
    /// Checks the argument count; extra or missing arguments are a caller's mistake.
    pub fn new(method: &'static str, values: JsValue, expected: u32) -> Result<Args, RpcError> {
        let values: Array = values.dyn_into().map_err(|_| {
            RpcError::new(
                RpcErrorKind::BadArgument,
                method,
                "arguments must arrive as an array",
            )
        })?;
        if values.length() != expected {
            return Err(RpcError::new(
                RpcErrorKind::BadArgument,
                method,
                format!("expected {expected} argument(s), got {}", values.length()),
            ));
        }
        Ok(Args { method, values })
    }

    /// The argument as it arrived, undecoded.
    pub fn raw(&self, index: u32) -> JsValue {
        self.values.get(index)
    }

    /// The argument at `index` (named `name` in errors), decoded.
    pub fn get<T: DeserializeOwned>(&self, index: u32, name: &str) -> Result<T, RpcError> {
        from_js(self.values.get(index)).map_err(|e| RpcError::bad_argument(self.method, name, e))
    }
}

fn js_error(message: &str, prop: &str, payload: Result<JsValue, String>) -> JsValue {
    let error = js_sys::Error::new(message);
    if let Ok(payload) = payload {
        // Setting a property on a fresh Error cannot fail; if it did, the message still stands.
        let _ = Reflect::set(&error, &JsValue::from_str(prop), &payload);
    }
    error.into()
}

/// A handler's `Err(e)` as a thrown JS `Error`: the message is `e`'s Display (what a JS caller
/// reads), the serialized `e` rides along so a Rust caller gets its typed error back.
pub(crate) fn handler_error_to_js<E: Serialize + Display>(error: &E) -> JsValue {
    js_error(&error.to_string(), HANDLER_ERROR_PROP, to_js(error))
}

pub(crate) fn rpc_error_to_js(error: &RpcError) -> JsValue {
    js_error(&error.to_string(), RPC_ERROR_PROP, to_js(error))
}

/// Turns whatever a call threw into the caller's typed error.
pub(crate) fn error_from_js<E: DeserializeOwned>(
    method: &str,
    thrown: JsValue,
) -> super::CallError<E> {
    use super::CallError;
    let prop = |name: &str| {
        Reflect::get(&thrown, &JsValue::from_str(name))
            .ok()
            .filter(|v| !v.is_undefined())
    };
    if let Some(payload) = prop(HANDLER_ERROR_PROP) {
        return match from_js(payload) {
            Ok(e) => CallError::Handler(e),
            Err(e) => CallError::Rpc(RpcError::new(
                RpcErrorKind::BadReturn,
                method,
                format!("the handler's error could not be decoded: {e}"),
            )),
        };
    }
    if let Some(payload) = prop(RPC_ERROR_PROP) {
        if let Ok(e) = from_js::<RpcError>(payload) {
            return CallError::Rpc(e);
        }
    }
    let message = prop("message")
        .and_then(|m| m.as_string())
        .or_else(|| thrown.as_string())
        .unwrap_or_else(|| format!("{thrown:?}"));
    let kind = if message.contains("does not implement the method")
        || message.contains("is not a function")
    {
        RpcErrorKind::NoSuchMethod
    } else {
        RpcErrorKind::Remote
    };
    CallError::Rpc(RpcError::new(kind, method, message))
}
