//! One fetch of the upstream with the global `fetch`, a timeout that aborts it, and a body
//! read that stops at the size limit instead of buffering whatever the upstream sends.

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::rpc::js::{get, name};
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

fn call(target: &JsValue, method: &'static str, args: &Array) -> Result<JsValue, JsValue> {
    let f: Function = get(target, method)?.dyn_into()?;
    Reflect::apply(&f, target, args)
}

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

fn init(request: &ProxyRequest, signal: &JsValue) -> Result<Object, JsValue> {
    let init = Object::new();
    Reflect::set(&init, &name("method"), &request.method.as_str().into())?;
    let headers = Array::new();
    for (k, v) in &request.headers {
        headers.push(&Array::of2(&k.as_str().into(), &v.as_str().into()));
    }
    Reflect::set(&init, &name("headers"), &headers)?;
    if let Some(body) = &request.body {
        Reflect::set(&init, &name("body"), &Uint8Array::from(&body[..]))?;
    }
    let redirect = serde_json::to_value(request.redirect)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    Reflect::set(
        &init,
        &name("redirect"),
        &redirect.unwrap_or_else(|| "follow".into()).into(),
    )?;
    Reflect::set(&init, &name("signal"), signal)?;
    Ok(init)
}

async fn read_headers(response: &JsValue) -> Result<Vec<(String, String)>, JsValue> {
    let entries = call(&get(response, "headers")?, "entries", &Array::new())?;
    let mut headers = Vec::new();
    for pair in js_sys::try_iter(&entries)?.into_iter().flatten() {
        let pair: Array = pair?.dyn_into()?;
        headers.push((
            pair.get(0).as_string().unwrap_or_default(),
            pair.get(1).as_string().unwrap_or_default(),
        ));
    }
    Ok(headers)
}

/// Reads the body chunk by chunk, giving up as soon as it passes `limit`.
async fn read_body(response: &JsValue, limit: u64) -> Result<Vec<u8>, AttemptError> {
    let body = get(response, "body").map_err(failed)?;
    if body.is_null() || body.is_undefined() {
        return Ok(Vec::new());
    }
    let reader = call(&body, "getReader", &Array::new()).map_err(failed)?;
    let mut out = Vec::new();
    loop {
        let read = call(&reader, "read", &Array::new()).map_err(failed)?;
        let chunk = JsFuture::from(js_sys::Promise::resolve(&read))
            .await
            .map_err(failed)?;
        if get(&chunk, "done").map_err(failed)?.is_truthy() {
            return Ok(out);
        }
        let bytes: Uint8Array = get(&chunk, "value").map_err(failed)?.unchecked_into();
        if out.len() as u64 + bytes.length() as u64 > limit {
            let _ = call(&reader, "cancel", &Array::new());
            return Err(AttemptError::TooLarge(limit));
        }
        let start = out.len();
        out.resize(start + bytes.length() as usize, 0);
        bytes.copy_to(&mut out[start..]);
    }
}

async fn fetch_once(
    request: &ProxyRequest,
    signal: &JsValue,
    limit: u64,
) -> Result<Fetched, AttemptError> {
    let init = init(request, signal).map_err(failed)?;
    let promise = call(
        &js_sys::global(),
        "fetch",
        &Array::of2(&request.url.as_str().into(), &init),
    )
    .map_err(failed)?;
    let response = JsFuture::from(js_sys::Promise::resolve(&promise))
        .await
        .map_err(failed)?;
    let headers = read_headers(&response).await.map_err(failed)?;
    let declared = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        if let Ok(body) = get(&response, "body") {
            let _ = call(&body, "cancel", &Array::new());
        }
        return Err(AttemptError::TooLarge(limit));
    }
    // With a declared, unencoded length within the limit the body cannot outgrow it: read it
    // whole in one call instead of chunk by chunk.
    let encoded = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-encoding"));
    let body = if declared.is_some() && !encoded {
        let buffer = call(&response, "arrayBuffer", &Array::new()).map_err(failed)?;
        let buffer = JsFuture::from(js_sys::Promise::resolve(&buffer))
            .await
            .map_err(failed)?;
        Uint8Array::new(&buffer).to_vec()
    } else {
        read_body(&response, limit).await?
    };
    Ok(Fetched {
        status: get(&response, "status")
            .ok()
            .and_then(|s| s.as_f64())
            .unwrap_or(0.0) as u16,
        status_text: get(&response, "statusText")
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default(),
        headers,
        body,
        url: get(&response, "url")
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default(),
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
    let signal = timeout_signal(timeout_ms).map_err(failed)?;
    fetch_following(request, &signal, options, policy).await
}

fn timeout_signal(ms: u64) -> Result<JsValue, JsValue> {
    let class = get(&js_sys::global(), "AbortSignal")?;
    call(
        &class,
        "timeout",
        &Array::of1(&JsValue::from_f64(ms as f64)),
    )
}

/// Headers that carry credentials for the origin they were written for.
fn is_credential(name: &str) -> bool {
    ["authorization", "cookie", "proxy-authorization"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}
