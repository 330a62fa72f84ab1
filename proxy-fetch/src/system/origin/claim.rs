//! The long path's claim (`__proxyFetchClaim`): the queue consumer asks the origin before it
//! fetches a request, so that a message the queue delivers twice, or again after its consumer
//! died, never has a request sent that may not be sent twice, and never runs a handler twice.
//!
//! - No record: `Done` (delivered, cancelled, never started here).
//! - Never claimed: `Fetch` (with the body, when the message left it here).
//! - A live claim (claimed less than the request's worst case and delivery reserve ago) and the
//!   message's first delivery: `InFlight` (a duplicate message).
//! - Claimed before, and the claim is no longer live or the queue redelivers (its consumer
//!   failed): an idempotent request is fetched again (`Fetch`, at most
//!   [`MAX_DISPATCHES`] claims); any other gets `Backstop` here and now (`Refused`).
//!
//! A claim is stored through the origin's writer (claims, deliveries and the sweep never race)
//! and moves the request's due time to the end of the claimed window.

use js_sys::{Array, Promise};
use wasm_bindgen::{JsCast, JsValue};

use super::ledger::{self, body_key};
use super::receive::deliver_error;
use super::writer::{change_from, find};
use super::{Held, ProxyFetchOrigin, CLAIMED};
use crate::rpc::{log_error, HandlerError, RpcError, RpcErrorKind};
use crate::system::concurrent;
use crate::system::protocol::{
    same_secret, Claim, ClaimRequest, OriginClient, FORBIDDEN, MAX_CLAIMS_PER_CALL, MAX_DISPATCHES,
    RETRY,
};
use crate::system::refusal;
use crate::system::{now_ms, FetchErrorKind};

const METHOD: &str = "origin.__proxyFetchClaim";

/// The origin's claim method (`protocol::Origin::claim`), as the generated export calls it.
pub(crate) fn serve_claim<O: ProxyFetchOrigin>(
    origin: Result<&'static O, RpcError>,
    _ctx: JsValue,
    args: JsValue,
) -> Promise {
    let method = OriginClient::CLAIM.js_name();
    let call = origin.and_then(|origin| {
        let args = crate::rpc::Args::new(method, args, 1)?;
        // Counted before anything is decoded.
        let count = args.raw(0).dyn_into::<Array>().map_or(0, |a| a.length());
        if count as usize > MAX_CLAIMS_PER_CALL {
            let message = format!("{count} claims in one call; at most {MAX_CLAIMS_PER_CALL}");
            refusal::refused(METHOD, "a claim call", &message);
            return Err(RpcError::new(
                RpcErrorKind::BadArgument,
                method,
                format!("argument `claims`: {message}"),
            ));
        }
        let claims: Vec<ClaimRequest> = args.get(0, "claims").inspect_err(|e| {
            refusal::refused(METHOD, "a claim call", &e.message);
        })?;
        Ok(claim_all(origin, claims))
    });
    crate::rpc::serve::awaited(method, call)
}

async fn claim_all<O: ProxyFetchOrigin>(
    origin: &O,
    claims: Vec<ClaimRequest>,
) -> Result<Vec<Result<Claim, HandlerError>>, HandlerError> {
    let each = claims.iter().map(|c| claim(origin, c));
    Ok(concurrent::all(each, usize::MAX).await)
}

/// One claim.
async fn claim<O: ProxyFetchOrigin>(origin: &O, c: &ClaimRequest) -> Result<Claim, HandlerError> {
    let retry = |e: String| HandlerError::new(RETRY, format!("origin storage: {e}"));
    let id = c.id.as_str();
    let Some(record) = find(origin, id).await.map_err(|e| retry(e.to_string()))? else {
        return Ok(Claim::Done);
    };
    // The token first: a claim that does not carry it changes nothing.
    if !same_secret(&c.token, &record.job.token) {
        refusal::refused(
            METHOD,
            &format!("request {id}"),
            "the claim does not carry the request's token",
        );
        return Err(HandlerError::new(
            FORBIDDEN,
            format!("the claim for request {id} does not carry its token"),
        ));
    }
    // One claim of a request at a time in this instance: a second one meanwhile is a duplicate.
    let Some(_held) = Held::take(&CLAIMED, origin, &format!("claim\n{id}")) else {
        return Ok(Claim::InFlight);
    };
    // Read again under the hold: a claim or delivery that ended meanwhile changed it.
    let found = find(origin, id).await.map_err(|e| retry(e.to_string()))?;
    let Some(mut record) = found.filter(|r| r.job.token == record.job.token) else {
        return Ok(Claim::Done);
    };
    let now = now_ms();
    let options = &record.job.options;
    let window = (options.worst_case_ms() + options.budget().delivery_ms) as f64;
    let live = record.claimed_ms.is_some_and(|at| now < at + window);
    if live && c.attempts <= 1 {
        return Ok(Claim::InFlight);
    }
    let fetch = record.claims == 0 || (record.job.may_resend() && record.claims < MAX_DISPATCHES);
    if !fetch {
        drop(_held);
        let age = now - record.created_ms;
        let message = record.job.backstop_message(age, "the start");
        deliver_error(origin, id, FetchErrorKind::Backstop, message, true)
            .await
            .map_err(|e| retry(e.to_string()))?;
        return Ok(Claim::Refused);
    }
    let body = if c.want_body {
        if record.body_apart {
            let stored = origin
                .state()
                .storage()
                .get::<serde_bytes::ByteBuf>(&body_key(id))
                .await
                .map_err(|e| retry(e.to_string()))?;
            match stored {
                Some(body) => Some(body),
                None => {
                    log_error(&format!(
                        "proxy-fetch {id}: its body is missing; not fetched"
                    ));
                    return Err(HandlerError::new(
                        "no_body",
                        format!("request {id}'s body is missing at its origin"),
                    ));
                }
            }
        } else {
            record.job.request.body.clone()
        }
    } else {
        None
    };
    let read = record.clone();
    record.claims += 1;
    record.claimed_ms = Some(now);
    record.due_ms = now + window + options.backstop_grace_ms as f64;
    let due = record.due_ms;
    // Only over the record it read: a sweep that changed it meanwhile is not undone.
    if !change_from(origin, id, &read, record)
        .await
        .map_err(retry)?
    {
        return Err(retry(format!("request {id} changed while it was claimed")));
    }
    if let Err(e) = ledger::arm(origin.state(), O::OWN_ALARM, due).await {
        log_error(&format!(
            "proxy-fetch {id}: the origin's alarm was not set for its claim: {e}"
        ));
    }
    Ok(Claim::Fetch { body })
}
