//! Receiving a delivery: the result's shape checked before anything else, the token checked
//! against the request's record, the request claimed against a racing delivery, the handler
//! run, the record removed.
//!
//! Handlers run at least once: the record goes only after the handler returned, so if the
//! instance dies while the handler runs, the sender (executor, orchestrator, or this origin's
//! alarm) delivers the result again, and the handler can tell by the request id.

use js_sys::{Array, Promise, Uint8Array};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::ledger::{self, Take};
use super::writer::{change, find, find_with};
use super::{Held, ProxyFetchOrigin, CLAIMED};
use crate::rpc::{log_error, HandlerError, RpcError};
use crate::system::concurrent;
use crate::system::protocol::{
    deliver_method, same_secret, DeliveryOutcome, FORBIDDEN, MAX_DELIVERIES_PER_CALL, RETRY,
};
use crate::system::{refusal, wire};
use crate::system::{
    FetchError, FetchErrorKind, FetchResult, ProxyFetchError, ProxyResponse, RequestId,
};

/// A handler that keeps crashing its instance gets its result this often, then it is dropped.
const MAX_HANDLER_RUNS: u32 = 5;

/// The origin's delivery method (`protocol::Origin::deliver`), as the generated export calls
/// it with the origin it borrowed: checks every delivery in full (a malformed one is refused
/// before it consumes a request), then hands each result to its handler (a body is copied
/// into Wasm memory only then).
pub(crate) fn serve_delivery<O: ProxyFetchOrigin>(
    origin: Result<&'static O, RpcError>,
    args: JsValue,
    packed: bool,
) -> Promise {
    let method = deliver_method(packed);
    let call = origin.and_then(|origin| Ok((origin, crate::rpc::Args::new(method, args, 1)?)));
    let call = call.and_then(|(origin, args)| {
        let deliveries = checked_deliveries(method, &args, packed)?;
        Ok(deliver_all(origin, deliveries))
    });
    crate::rpc::serve::awaited(method, call)
}

/// A `FetchResult` as the delivery checks it: every field but the body decoded (a 10 MiB body
/// is not copied into Wasm memory only to be checked: it is copied once, when its handler
/// runs).
#[derive(Deserialize)]
struct ResponseShape {
    request_id: RequestId,
    status: u16,
    status_text: String,
    headers: Vec<(String, String)>,
    url: String,
    attempts: u32,
    duration_ms: f64,
}

/// A delivery as the origin checks it before any handler runs.
#[derive(Deserialize)]
struct DeliveryShape {
    result: Result<ResponseShape, FetchError>,
    token: String,
    #[serde(default)]
    again: bool,
    #[serde(default)]
    lost_on_crash: bool,
}

/// A [`Packed`](crate::system::protocol::Packed) delivery as the origin reads it: its body
/// left in JS.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
struct PackedItem {
    json: String,
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    body: JsValue,
}

crate::system::strict::strict_serde!(PackedItem);

/// A delivery checked: its request id, token, whether it is sent again, and its result.
struct Checked {
    id: RequestId,
    token: String,
    again: bool,
    lost_on_crash: bool,
    result: Incoming,
}

/// A result on its way to its handler: decoded but for a delivered response's body, which
/// stays in JS until the handler runs (a forged or duplicate delivery never copies it).
pub(super) struct Incoming {
    result: Result<ResponseShape, FetchError>,
    body: Option<Uint8Array>,
}

impl Incoming {
    /// The result in full, its body copied into Wasm memory.
    fn into_result(self) -> FetchResult {
        let body = self.body.map(|b| b.to_vec()).unwrap_or_default();
        self.result.map(|r| ProxyResponse {
            request_id: r.request_id,
            status: r.status,
            status_text: r.status_text,
            headers: r.headers,
            body: ByteBuf::from(body),
            url: r.url,
            attempts: r.attempts,
            duration_ms: r.duration_ms,
        })
    }
}

impl From<FetchError> for Incoming {
    fn from(error: FetchError) -> Self {
        Incoming {
            result: Err(error),
            body: None,
        }
    }
}

/// Checks the deliveries of a `__proxyFetchDeliver` call, or of a `__proxyFetchDeliverPacked`
/// one (`packed`): each result but its body decoded, the body only for being bytes. A malformed
/// call is refused whole, and logged.
fn checked_deliveries(
    method: &'static str,
    args: &crate::rpc::Args,
    packed: bool,
) -> Result<Vec<Checked>, RpcError> {
    let who = format!("origin.{method}");
    let refuse = |message: String| {
        refusal::refused(&who, "a delivery call", &message);
        RpcError::bad_argument(method, "deliveries", message)
    };
    // Counted before anything is decoded.
    let raw = args.raw(0);
    let raw: Array = match raw.dyn_into::<Array>() {
        Ok(raw) if raw.length() as usize > MAX_DELIVERIES_PER_CALL => {
            return Err(refuse(format!(
                "{} results in one call; at most {MAX_DELIVERIES_PER_CALL}",
                raw.length()
            )))
        }
        Ok(raw) => raw,
        Err(_) => Array::new(),
    };
    let decoded = |e: RpcError| {
        refusal::refused(&who, "a delivery call", &e.message);
        e
    };
    // Each delivery's shape, and where its body is: the JS value its bytes must be in.
    let shapes: Vec<(DeliveryShape, JsValue)> = if packed {
        let items: Vec<PackedItem> = args.get(0, "deliveries").map_err(decoded)?;
        wire::check_texts(items.iter().map(|i| i.json.as_str())).map_err(refuse)?;
        let mut shapes = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let shape: DeliveryShape = serde_json::from_str(&item.json)
                .map_err(|e| refuse(format!("field `[{i}].json`: {e}")))?;
            shapes.push((shape, item.body));
        }
        shapes
    } else {
        let shapes: Vec<DeliveryShape> = args.get(0, "deliveries").map_err(decoded)?;
        let field = |value: &JsValue, name: &'static str| {
            crate::rpc::js::get(value, name).unwrap_or(JsValue::UNDEFINED)
        };
        shapes
            .into_iter()
            .enumerate()
            .map(|(i, shape)| {
                let body = match &shape.result {
                    Ok(_) => field(&field(&field(&raw.get(i as u32), "result"), "Ok"), "body"),
                    Err(_) => JsValue::UNDEFINED,
                };
                (shape, body)
            })
            .collect()
    };
    let at = |i: usize| {
        if packed {
            format!("[{i}].body")
        } else {
            format!("[{i}].result.Ok.body")
        }
    };
    let mut checked = Vec::with_capacity(shapes.len());
    for (i, (shape, body)) in shapes.into_iter().enumerate() {
        let (id, body) = match &shape.result {
            Err(e) if body.is_undefined() => (e.request_id.clone(), None),
            Err(_) => {
                return Err(refuse(format!(
                    "field `{}`: a failed result has no body",
                    at(i)
                )))
            }
            Ok(response) => {
                let Ok(body) = body.dyn_into::<Uint8Array>() else {
                    return Err(refuse(format!("field `{}`: expected a Uint8Array", at(i))));
                };
                (response.request_id.clone(), Some(body))
            }
        };
        checked.push(Checked {
            id,
            token: shape.token,
            again: shape.again,
            lost_on_crash: shape.lost_on_crash,
            result: Incoming {
                result: shape.result,
                body,
            },
        });
    }
    Ok(checked)
}

/// Hands each checked delivery to [`deliver`], side by side: one outcome per delivery.
async fn deliver_all<O: ProxyFetchOrigin>(
    origin: &O,
    deliveries: Vec<Checked>,
) -> Result<Vec<Result<DeliveryOutcome, HandlerError>>, HandlerError> {
    let each = deliveries.into_iter().map(|d| async move {
        if d.lost_on_crash {
            deliver_kept(origin, &d.id, &d.token, d.result).await
        } else {
            deliver(origin, &d.id, Some(&d.token), d.result, d.again).await
        }
    });
    Ok(concurrent::all(each, usize::MAX).await)
}

/// Runs the handler of request `id` with `result`, then deletes the request's record. `token`
/// must be the request's (`None`: the origin delivers to itself).
///
/// Handlers run at least once: the record goes only after the handler returned, so if the
/// instance dies while the handler runs, the sender (executor, orchestrator, or this origin's
/// alarm) delivers the result again, and the handler can tell by the request id. A delivery
/// sent again (`count_run`: after a call that got no answer, or from the origin's alarm)
/// counts the handler's run in the record before it starts it, so a handler that keeps
/// crashing its instance runs at most [`MAX_HANDLER_RUNS`] times, whichever flow carries it.
pub(super) async fn deliver<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    token: Option<&str>,
    result: Incoming,
    count_run: bool,
) -> Result<DeliveryOutcome, HandlerError> {
    let retry = |e: String| HandlerError::new(RETRY, format!("origin storage: {e}"));
    // The token is checked before the request is claimed: a delivery that does not carry it
    // must not hold the claim, or the real one would be turned away meanwhile.
    let found = find_with(origin, id, |record| record.job.token.clone())
        .await
        .map_err(|e| retry(e.to_string()))?;
    let Some(stored_token) = found else {
        return Ok(DeliveryOutcome::Duplicate);
    };
    if token.is_some_and(|t| !same_secret(t, &stored_token)) {
        refusal::refused(
            "origin.__proxyFetchDeliver",
            &format!("request {id}"),
            "the delivery does not carry the request's token",
        );
        return Err(HandlerError::new(
            FORBIDDEN,
            format!("the delivery for request {id} does not carry its token"),
        ));
    }
    let Some(_claim) = Held::take(&CLAIMED, origin, id) else {
        // Another delivery of this result runs its handler now. A sender tries again later
        // (and then finds it settled); the origin's own deliveries (cancel, backstop) are moot.
        return match token {
            Some(_) => Err(HandlerError::new(
                RETRY,
                format!("request {id} is being delivered"),
            )),
            None => Ok(DeliveryOutcome::Duplicate),
        };
    };
    // Read again under the claim: a delivery that ended meanwhile removed the record.
    let found = find(origin, id).await.map_err(|e| retry(e.to_string()))?;
    let Some(mut record) = found.filter(|r| r.job.token == stored_token) else {
        return Ok(DeliveryOutcome::Duplicate);
    };
    if record.handler_runs >= MAX_HANDLER_RUNS {
        log_error(&format!(
            "proxy-fetch {id}: handler `{}` was started {} times without finishing (its \
             instance crashed?); result dropped",
            record.handler, record.handler_runs
        ));
        change(origin, id, None).await.map_err(retry)?;
        return Ok(DeliveryOutcome::Delivered);
    }
    if count_run {
        record.handler_runs += 1;
        change(origin, id, Some(record.clone()))
            .await
            .map_err(retry)?;
    }
    run_handler(
        origin,
        id,
        &record.handler,
        record.data,
        result.into_result(),
    )
    .await;
    // Until the record is gone the result is not delivered: the sender tries again, and the
    // handler runs again (at least once), rather than the record staying for the backstop.
    change(origin, id, None).await.map_err(|e| {
        retry(format!(
            "the handler ran, but the record could not be removed: {e}"
        ))
    })?;
    Ok(DeliveryOutcome::Delivered)
}

/// Runs the result of a request started `LostOnCrash` ([`ledger::Kept`]): it goes to its
/// handler if this instance holds the request, once (taken before the handler runs); a result
/// for a request this instance does not hold is logged as lost and dropped.
async fn deliver_kept<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    token: &str,
    result: Incoming,
) -> Result<DeliveryOutcome, HandlerError> {
    match ledger::take_kept(origin.state(), id, Some(token)) {
        Take::Taken(kept) => {
            run_handler(origin, id, &kept.handler, kept.data, result.into_result()).await;
            Ok(DeliveryOutcome::Delivered)
        }
        Take::WrongToken => {
            refusal::refused(
                "origin.__proxyFetchDeliver",
                &format!("request {id}"),
                "the delivery does not carry the request's token",
            );
            Err(HandlerError::new(
                FORBIDDEN,
                format!("the delivery for request {id} does not carry its token"),
            ))
        }
        Take::NotHeld => {
            refusal::refused(
                "origin.__proxyFetchDeliver",
                &format!("the LostOnCrash result of request {id}"),
                "this instance does not hold the request: it was delivered already, or the \
                 instance that started it is gone (crash, reset, eviction); the result is lost",
            );
            Ok(DeliveryOutcome::Duplicate)
        }
    }
}

/// Runs `handler` of the origin with the result of request `id` and its `data`; a failure is
/// logged.
pub(super) async fn run_handler<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    handler: &str,
    data: serde_json::Value,
    result: FetchResult,
) {
    let Some(promise) = origin.dispatch(handler, result, data) else {
        log_error(&format!(
            "proxy-fetch {id}: the origin has no handler `{handler}` (renamed since the request started?)"
        ));
        return;
    };
    if let Err(e) = JsFuture::from(promise).await {
        let message = crate::rpc::js::get(&e, "message")
            .ok()
            .and_then(|m| m.as_string());
        log_error(&format!(
            "proxy-fetch {id}: handler `{handler}` failed: {}",
            message.unwrap_or_else(|| format!("{e:?}"))
        ));
    }
}

/// Delivers an error made here (cancel, backstop) to the request's own handler.
pub(super) async fn deliver_error<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    kind: FetchErrorKind,
    message: String,
    count_run: bool,
) -> Result<DeliveryOutcome, ProxyFetchError> {
    let error = FetchError::new(id, kind, message);
    deliver(origin, id, None, error.into(), count_run)
        .await
        .map_err(|e| ProxyFetchError::storage(e.message))
}
