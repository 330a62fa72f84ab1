//! How jobs and results cross a call: each as one [`Packed`] item, the JSON text of everything
//! but its body, and the body beside it (bytes, never JSON). Decoding the field-by-field form
//! (a JS object per struct, a crossing between JS and Wasm per field) took about an eighth of
//! the CPU of the bench's burst; one string per job or result costs a crossing each.
//!
//! The packed methods (`executeFetchesPacked`, `__proxyFetchDeliverPacked`) take this form. The
//! earlier ones (`executeFetches`, `__proxyFetchDeliver`) stay served, and a sender whose peer
//! does not serve the packed method (a worker of an earlier build, during a deploy) calls the
//! earlier one for [`OLDER_PEER_MS`] ([`packed_for`], [`lacked_packed`]).

use std::cell::RefCell;

use js_sys::{Array, Object, Reflect, Uint8Array};
use serde::Serialize;
use wasm_bindgen::JsValue;

use super::protocol::{ExecutorClient, FetchJob, OriginRef, Packed, QueueRef};
use super::{now_ms, FetchError, FetchResult, ProxyFetchOptions, Redirect, RequestId};
use crate::rpc::{js, CallError, HandlerError, RpcError, RpcErrorKind};

/// Checks the JSON texts of one call before any is parsed: their structure (every `[`, `{`
/// and `,`) counts against the parts a decoded call may have
/// ([`MAX_PARTS`](crate::rpc::MAX_PARTS)), as a call of JS objects does; a text of many small
/// values would otherwise take many times its size in memory once parsed.
pub(crate) fn check_texts<'a>(texts: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut parts: usize = 0;
    for text in texts {
        parts += 1 + text
            .bytes()
            .filter(|b| matches!(b, b'[' | b'{' | b','))
            .count();
        if parts > crate::rpc::MAX_PARTS as usize {
            return Err(format!("more than {} nested values", crate::rpc::MAX_PARTS));
        }
    }
    Ok(())
}

/// A sender that found its peer without the packed method calls the earlier one this long
/// before it asks again (the peer's worker may have been deployed meanwhile).
pub(crate) const OLDER_PEER_MS: f64 = 60_000.0;

impl Packed {
    /// The job this item carries. Its body crosses beside the JSON: one in the JSON is refused.
    pub fn into_job(self) -> Result<FetchJob, String> {
        let mut job: FetchJob = serde_json::from_str(&self.json).map_err(|e| e.to_string())?;
        if job.request.body.is_some() {
            return Err("the request's body is in the JSON text; it goes beside it".into());
        }
        job.request.body = self.body;
        Ok(job)
    }
}

/// A [`FetchJob`] without its request's body, encoded from borrowed parts.
#[derive(Serialize)]
struct JobHead<'a> {
    id: &'a RequestId,
    token: &'a str,
    request: RequestHead<'a>,
    origin: &'a OriginRef,
    queue: &'a Option<QueueRef>,
    options: &'a ProxyFetchOptions,
}

/// A [`ProxyRequest`](super::ProxyRequest) without its body.
#[derive(Serialize)]
struct RequestHead<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a [(String, String)],
    redirect: &'a Redirect,
}

/// A [`protocol::Delivery`](super::protocol::Delivery) without its response's body.
#[derive(Serialize)]
struct DeliveryHead<'a> {
    result: Result<ResponseHead<'a>, &'a FetchError>,
    token: &'a str,
    again: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    lost_on_crash: bool,
}

/// A [`ProxyResponse`](super::ProxyResponse) without its body: the fields the origin's
/// `ResponseShape` reads.
#[derive(Serialize)]
struct ResponseHead<'a> {
    request_id: &'a RequestId,
    status: u16,
    status_text: &'a str,
    headers: &'a [(String, String)],
    url: &'a str,
    attempts: u32,
    duration_ms: f64,
}

/// A packed item as a JS object: `{json, body}` (no `body` key without one).
fn item(json: String, body: Option<&[u8]>) -> JsValue {
    let item = Object::new();
    // Setting a property on a fresh object cannot fail.
    let _ = Reflect::set(&item, &js::name("json"), &JsValue::from_str(&json));
    if let Some(body) = body {
        let _ = Reflect::set(&item, &js::name("body"), &Uint8Array::from(body));
    }
    item.into()
}

fn job_json(job: &FetchJob) -> Result<String, String> {
    let request = &job.request;
    let head = JobHead {
        id: &job.id,
        token: &job.token,
        request: RequestHead {
            method: &request.method,
            url: &request.url,
            headers: &request.headers,
            redirect: &request.redirect,
        },
        origin: &job.origin,
        queue: &job.queue,
        options: &job.options,
    };
    serde_json::to_string(&head).map_err(|e| e.to_string())
}

/// `job` as an item of `executeFetchesPacked` (its body copied into JS once).
pub(crate) fn job_to_js(job: &FetchJob) -> Result<JsValue, String> {
    Ok(item(
        job_json(job)?,
        job.request.body.as_ref().map(|b| b.as_slice()),
    ))
}

/// The JSON text of a delivery of `result` (with the request's `token`).
pub(crate) fn delivery_json(
    result: &FetchResult,
    token: &str,
    again: bool,
    lost_on_crash: bool,
) -> Result<String, String> {
    let head = DeliveryHead {
        result: result.as_ref().map(|r| ResponseHead {
            request_id: &r.request_id,
            status: r.status,
            status_text: &r.status_text,
            headers: &r.headers,
            url: &r.url,
            attempts: r.attempts,
            duration_ms: r.duration_ms,
        }),
        token,
        again,
        lost_on_crash,
    };
    serde_json::to_string(&head).map_err(|e| e.to_string())
}

/// A delivery of `result` as an item of `__proxyFetchDeliverPacked` (a response's body copied
/// into JS once). [`mark_again`] changes it for a delivery sent again.
pub(crate) fn delivery_to_js(
    result: &FetchResult,
    token: &str,
    again: bool,
    lost_on_crash: bool,
) -> Result<JsValue, String> {
    let json = delivery_json(result, token, again, lost_on_crash)?;
    Ok(item(json, result.as_ref().ok().map(|r| r.body.as_slice())))
}

/// Marks an encoded delivery (`item`, from [`delivery_to_js`]) as sent again: its JSON text
/// anew, its body as it is.
pub(crate) fn mark_again(
    item: &JsValue,
    result: &FetchResult,
    token: &str,
    lost_on_crash: bool,
) -> Result<(), String> {
    let json = delivery_json(result, token, true, lost_on_crash)?;
    Reflect::set(item, &js::name("json"), &JsValue::from_str(&json))
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// One call of `jobs` to `executor` (behind `binding`): `executeFetchesPacked`, the jobs
/// encoded once into `packed` for every try, or `executeFetches` with the jobs as they are when
/// the executor lacks the packed method.
pub(crate) async fn execute_fetches(
    executor: &ExecutorClient,
    binding: &str,
    jobs: &[FetchJob],
    packed: &mut Option<Array>,
) -> Result<(), CallError<HandlerError>> {
    let method = ExecutorClient::EXECUTE_FETCHES_PACKED.js_name();
    if packed_for(binding) {
        if packed.is_none() {
            let items = jobs
                .iter()
                .map(job_to_js)
                .collect::<Result<Vec<JsValue>, String>>()
                .map_err(|e| CallError::Rpc(RpcError::bad_argument(method, "jobs", e)))?;
            *packed = Some(items.into_iter().collect());
        }
        if let (Some(items), Some(stub)) = (packed.as_ref(), executor.stub()) {
            let answer = stub
                .call::<(), HandlerError>(method, Array::of1(items))
                .await;
            if !lacked_packed(binding, &answer) {
                return answer;
            }
        }
    }
    executor.execute_fetches(jobs.to_vec()).await
}

thread_local! {
    /// Peers (by binding) that lacked the packed method, and until when to call the earlier one.
    static OLDER: RefCell<Vec<(String, f64)>> = const { RefCell::new(Vec::new()) };
}

/// Whether to call the packed method of the peer behind `binding`: not if it lacked it within
/// the last [`OLDER_PEER_MS`].
pub(crate) fn packed_for(binding: &str) -> bool {
    let now = now_ms();
    OLDER.with(|older| {
        let mut older = older.borrow_mut();
        older.retain(|(_, until)| *until > now);
        !older.iter().any(|(b, _)| b == binding)
    })
}

/// Whether `answer`, to a packed call through `binding`, says the peer lacks the packed
/// method: if so, the earlier one is called for [`OLDER_PEER_MS`], this call's again included.
pub(crate) fn lacked_packed<T, E>(binding: &str, answer: &Result<T, CallError<E>>) -> bool {
    let lacked = matches!(answer, Err(CallError::Rpc(e)) if e.kind == RpcErrorKind::NoSuchMethod);
    if lacked {
        older_peer(binding);
    }
    lacked
}

fn older_peer(binding: &str) {
    let until = now_ms() + OLDER_PEER_MS;
    OLDER.with(|older| {
        let mut older = older.borrow_mut();
        match older.iter_mut().find(|(b, _)| b == binding) {
            Some(entry) => entry.1 = until,
            None => older.push((binding.to_owned(), until)),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::{FetchErrorKind, ProxyRequest, ProxyResponse};
    use serde_bytes::ByteBuf;

    fn job() -> FetchJob {
        let options = ProxyFetchOptions {
            allowed_hosts: Some(vec!["example.com".into()]),
            origin_binding: Some("INBOX".into()),
            ..ProxyFetchOptions::default()
        };
        FetchJob {
            id: "r~1".into(),
            token: "ab".repeat(16),
            request: ProxyRequest::post("https://example.com/a?b=1", b"body".to_vec())
                .header("x-a", "1")
                .redirect(Redirect::Manual),
            origin: OriginRef {
                binding: "INBOX".into(),
                id: "00ff".into(),
            },
            queue: Some(QueueRef {
                binding: "Q".into(),
                shard: "s".into(),
            }),
            options,
        }
    }

    /// `value` as JSON, its `body` at `path` left out: what a head must encode.
    fn without_body<T: Serialize>(value: &T, path: &[&str]) -> serde_json::Value {
        let mut value = serde_json::to_value(value).unwrap();
        let mut at = &mut value;
        for key in path {
            at = at.get_mut(*key).unwrap();
        }
        at.as_object_mut().unwrap().remove("body").unwrap();
        value
    }

    #[test]
    fn a_job_head_is_the_job_but_its_body_and_the_item_gives_the_job_back() {
        let job = job();
        let json = job_json(&job).unwrap();
        let head: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(head, without_body(&job, &["request"]));
        let packed = Packed {
            json,
            body: job.request.body.clone(),
        };
        assert_eq!(packed.into_job().unwrap(), job);
    }

    #[test]
    fn a_body_in_the_json_text_is_refused() {
        let job = job();
        let packed = Packed {
            json: serde_json::to_string(&job).unwrap(),
            body: None,
        };
        assert!(packed
            .into_job()
            .unwrap_err()
            .contains("body is in the JSON"));
    }

    #[test]
    fn a_delivery_head_is_the_delivery_but_its_body() {
        let response = ProxyResponse {
            request_id: "r~1".into(),
            status: 201,
            status_text: "Created".into(),
            headers: vec![("a".into(), "b".into())],
            body: ByteBuf::from(b"x".to_vec()),
            url: "https://example.com/".into(),
            attempts: 2,
            duration_ms: 3.5,
        };
        let delivery = crate::system::protocol::Delivery {
            result: Ok(response),
            token: "t".into(),
            again: true,
            lost_on_crash: true,
        };
        let json = delivery_json(&delivery.result, "t", true, true).unwrap();
        let head: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(head, without_body(&delivery, &["result", "Ok"]));

        let error: FetchResult = Err(FetchError::new("r~2", FetchErrorKind::Timeout, "slow"));
        let json = delivery_json(&error, "t", false, false).unwrap();
        let delivery = crate::system::protocol::Delivery {
            result: error,
            token: "t".into(),
            again: false,
            lost_on_crash: false,
        };
        let back: crate::system::protocol::Delivery = serde_json::from_str(&json).unwrap();
        assert_eq!(back, delivery);
    }
}
