//! One fetch of the upstream with the global `fetch`, a timeout that aborts it, and a body
//! read that stops at the size limit instead of buffering whatever the upstream sends.

use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::rpc::js::get;
use crate::system::policy::ExecutorPolicy;
use crate::system::{ProxyFetchOptions, ProxyRequest, Redirect};

pub(crate) struct Fetched {
    pub status: u16,
    pub status_text: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub url: String,
}

pub(crate) enum AttemptError {
    Network(String),
    Timeout,
    TooLarge(u64),
    /// A redirect led outside the executor's policy or `allowed_hosts`, or there were too many.
    Refused(String),
}

/// Redirects followed for a request under an allow-list, as browsers do at most.
const MAX_REDIRECTS: u32 = 20;

/// A JS failure of the attempt: `Timeout` when it is the attempt's signal that fired (the
/// runtime rejects the fetch and its body reads with the signal's `TimeoutError`).
fn failed(e: JsValue) -> AttemptError {
    if get(&e, "name").is_ok_and(|n| n.as_string().as_deref() == Some("TimeoutError")) {
        AttemptError::Timeout
    } else {
        AttemptError::Network(message(&e))
    }
}

fn message(e: &JsValue) -> String {
    get(e, "message")
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

mod js {
    use wasm_bindgen::prelude::*;

    // One fetch, its headers and its body, read in one call: each value crossing between JS
    // and Wasm costs a call of its own, and a result has a few dozen (every header, every
    // chunk, each awaited promise).
    #[wasm_bindgen(inline_js = r#"
export async function fetchOnce(url, method, headers, body, redirect, signal, limit) {
  const response = await fetch(url, { method, headers: JSON.parse(headers), body, redirect, signal });
  const got = [];
  for (const [name, value] of response.headers) got.push(name, value);
  const declared = response.headers.get("content-length");
  const length = declared === null || !/^[0-9]+$/.test(declared) ? null : Number(declared);
  const reply = { status: response.status, statusText: response.statusText, url: response.url,
    headers: got.join("\n"), body: undefined, tooLarge: false };
  if (response.body === null) {
    // No body (HEAD, 204, 304), whatever length is declared.
    reply.body = new Uint8Array(0);
    return reply;
  }
  if (length !== null && length > limit) {
    response.body.cancel().catch(() => {});
    reply.tooLarge = true;
    return reply;
  }
  if (length !== null && !response.headers.has("content-encoding")) {
    // A declared, unencoded length within the limit: the body cannot outgrow it.
    reply.body = new Uint8Array(await response.arrayBuffer());
  } else {
    const reader = response.body.getReader();
    const chunks = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!(value instanceof Uint8Array)) throw new TypeError("a chunk of the body is not bytes");
      size += value.byteLength;
      if (size > limit) {
        reader.cancel().catch(() => {});
        reply.tooLarge = true;
        return reply;
      }
      chunks.push(value);
    }
    if (chunks.length === 1) {
      reply.body = chunks[0];
    } else {
      reply.body = new Uint8Array(size);
      let at = 0;
      for (const c of chunks) { reply.body.set(c, at); at += c.byteLength; }
    }
  }
  return reply;
}
export function timeoutSignal(ms) { return AbortSignal.timeout(ms); }
"#)]
    extern "C" {
        /// Fetches `url` (`headers`: the JSON text of its `[name, value]` pairs; `body`:
        /// `undefined` for none) and reads the response whole, giving up once the body passes
        /// `limit` bytes (declared or read): `{status, statusText, url, headers, body,
        /// tooLarge}`, `headers` as names and values joined by newlines (which neither holds).
        #[wasm_bindgen(js_name = fetchOnce)]
        #[allow(clippy::too_many_arguments)]
        pub fn fetch_once(
            url: &str,
            method: &str,
            headers: &str,
            body: &JsValue,
            redirect: &str,
            signal: &JsValue,
            limit: f64,
        ) -> js_sys::Promise;
        /// `AbortSignal.timeout(ms)`.
        #[wasm_bindgen(js_name = timeoutSignal, catch)]
        pub fn timeout_signal(ms: f64) -> Result<JsValue, JsValue>;
    }
}

async fn fetch_once(
    request: &ProxyRequest,
    signal: &JsValue,
    limit: u64,
) -> Result<Fetched, AttemptError> {
    let headers = serde_json::to_string(&request.headers)
        .map_err(|e| AttemptError::Network(format!("the request's headers: {e}")))?;
    let body = match &request.body {
        Some(body) => Uint8Array::from(&body[..]).into(),
        None => JsValue::UNDEFINED,
    };
    let redirect = match request.redirect {
        Redirect::Follow => "follow",
        Redirect::Manual => "manual",
        Redirect::Error => "error",
    };
    let reply = js::fetch_once(
        &request.url,
        &request.method,
        &headers,
        &body,
        redirect,
        signal,
        limit as f64,
    );
    let reply = JsFuture::from(reply).await.map_err(failed)?;
    if get(&reply, "tooLarge").is_ok_and(|v| v.is_truthy()) {
        return Err(AttemptError::TooLarge(limit));
    }
    let text = |key| {
        get(&reply, key)
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    let joined = text("headers");
    let mut parts = joined.split('\n');
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        headers.push((name.to_owned(), value.to_owned()));
    }
    let body: Uint8Array = get(&reply, "body")
        .map_err(failed)?
        .dyn_into()
        .map_err(|_| AttemptError::Network("the response's body was not read".into()))?;
    Ok(Fetched {
        status: get(&reply, "status")
            .ok()
            .and_then(|s| s.as_f64())
            .unwrap_or(0.0) as u16,
        status_text: text("statusText"),
        headers,
        body: body.to_vec(),
        url: text("url"),
    })
}

/// Without an allow-list the runtime follows redirects itself. With one (the executor's
/// policy, or the job's `allowed_hosts`), they are followed here, one hop at a time, and each
/// hop is checked, so that a redirect cannot lead the executor off the list.
async fn fetch_following(
    request: &ProxyRequest,
    signal: &JsValue,
    options: &ProxyFetchOptions,
    policy: &ExecutorPolicy,
) -> Result<Fetched, AttemptError> {
    let limit = options.max_body_bytes;
    let unrestricted = policy.allows_any() && options.allowed_hosts.is_none();
    if unrestricted || request.redirect != Redirect::Follow {
        return fetch_once(request, signal, limit).await;
    }
    let mut hop = request.clone();
    hop.redirect = Redirect::Manual;
    for _ in 0..MAX_REDIRECTS {
        let fetched = fetch_once(&hop, signal, limit).await?;
        let location = matches!(fetched.status, 301 | 302 | 303 | 307 | 308)
            .then(|| {
                fetched
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            })
            .flatten();
        let Some((_, location)) = location else {
            return Ok(fetched);
        };
        let next = worker::Url::parse(&hop.url)
            .and_then(|base| base.join(location))
            .map_err(|e| {
                AttemptError::Network(format!("bad redirect location `{location}`: {e}"))
            })?;
        policy
            .check(&next)
            .map_err(|why| AttemptError::Refused(format!("redirect refused: {why}")))?;
        let host = next.host_str().unwrap_or_default();
        if !options.host_allowed(host) {
            return Err(AttemptError::Refused(format!(
                "redirect to host `{host}` is not in allowed_hosts"
            )));
        }
        // As the Fetch standard does: 303, and 301/302 after a POST, continue as a GET.
        if fetched.status == 303 || (matches!(fetched.status, 301 | 302) && hop.method == "POST") {
            hop.method = "GET".into();
            hop.body = None;
        }
        // Credentials go only to the origin they were written for: a hop to another origin
        // (scheme, host or port) drops them, as browsers do with `Authorization`.
        let same_origin =
            worker::Url::parse(&hop.url).is_ok_and(|from| from.origin() == next.origin());
        if !same_origin {
            hop.headers.retain(|(name, _)| !is_credential(name));
        }
        hop.url = next.to_string();
    }
    Err(AttemptError::Refused(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// Fetches once (following redirects); after `timeout_ms` the request and its body stream are
/// aborted (by the runtime's own timer: `AbortSignal.timeout`).
pub(crate) async fn attempt(
    request: &ProxyRequest,
    options: &ProxyFetchOptions,
    policy: &ExecutorPolicy,
    timeout_ms: u64,
) -> Result<Fetched, AttemptError> {
    let signal = js::timeout_signal(timeout_ms as f64).map_err(failed)?;
    fetch_following(request, &signal, options, policy).await
}

/// Headers that carry credentials for the origin they were written for.
fn is_credential(name: &str) -> bool {
    ["authorization", "cookie", "proxy-authorization"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}
