//! The long path's host of [`super::fetch`]: a Cloudflare Queue consumer. A request whose
//! attempts need more than the executor's `waitUntil` window is sent by its origin as a
//! [`LongJob`] message to the queue; its consumer invocation (15 minutes of wall clock in
//! production) claims each job from its origin (`__proxyFetchClaim`), fetches the claimed ones
//! with the same code as the executor ([`fetch::run`] under [`Budget::QUEUE`]), delivers the
//! results the same way, and acknowledges the messages.
//!
//! It never throws: worker 0.8.7's `#[event(queue)]` glue panics on an `Err` (which aborts the
//! Wasm instance), so this is proxy-fetch's own export, which the JS runtime's `queue` handler
//! calls for batches of the queue named in the worker's [`QUEUE_VAR`] var.
//!
//! - A message that does not decode (or of another version) is logged and acknowledged: the
//!   origin's alarm settles its request.
//! - Claims answered `Done`, `InFlight` or `Refused`, or refused for the token, are
//!   acknowledged unfetched; a claim call that failed (origin unreachable, its storage
//!   failing) gets `retry` with a delay: nothing was fetched yet.
//! - Claimed messages are acknowledged after the run, whatever their delivery did: a retry
//!   would fetch again; an undelivered result is the origin's alarm's case.

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use worker::Env;

use super::options::Budget;
use super::protocol::{
    Claim, ClaimRequest, LongJob, OriginClient, OriginRef, FORBIDDEN, LONG_JOB_VERSION,
    MAX_CLAIMS_PER_CALL, MAX_JOBS_PER_CALL,
};
use super::{concurrent, fetch, now_ms, refusal};
use crate::rpc::{log_error, CallError};

/// The var that names the queue whose batches proxy-fetch's consumer takes (the JS runtime
/// hands other queues' batches to the worker's own `#[event(queue)]`).
pub const QUEUE_VAR: &str = "PROXY_FETCH_QUEUE";

/// Longest delay of a message whose claim failed (s).
const MAX_RETRY_DELAY_S: u32 = 60;

/// Who refuses a message or job, in the log line.
const CONSUMER: &str = "proxy-fetch queue consumer";

/// The consumer as the export that `serve_system!()` makes calls it: `batch` is the runtime's
/// `MessageBatch`. The promise always resolves.
pub(crate) fn serve_queue(batch: JsValue, env: JsValue) -> Promise {
    let work = async move {
        consume(&batch, env.unchecked_into()).await;
        Ok(JsValue::UNDEFINED)
    };
    #[cfg(all(target_arch = "wasm32", panic = "unwind"))]
    let work = crate::rpc::serve::unwind::caught(work, |panic| {
        log_error(&format!("proxy-fetch's queue consumer panicked: {panic}"));
        Ok(JsValue::UNDEFINED)
    });
    wasm_bindgen_futures::future_to_promise(work)
}

/// A message of the batch, with the job it carries.
struct Taken {
    message: JsValue,
    long: LongJob,
    attempts: u32,
}

fn get(value: &JsValue, name: &'static str) -> JsValue {
    crate::rpc::js::get(value, name).unwrap_or(JsValue::UNDEFINED)
}

/// Calls `message.<method>(...args)`, logging a failure (the message then comes again).
fn settle(message: &JsValue, method: &'static str, args: &Array) {
    let done = get(message, method)
        .dyn_into::<Function>()
        .and_then(|f| Reflect::apply(&f, message, args));
    if let Err(e) = done {
        log_error(&format!(
            "proxy-fetch queue consumer: message.{method}() failed: {e:?}"
        ));
    }
}

fn ack(message: &JsValue) {
    settle(message, "ack", &Array::new());
}

/// Back to the queue, delivered again after `delay_s` seconds.
fn retry(message: &JsValue, delay_s: u32) {
    let options = js_sys::Object::new();
    let _ = Reflect::set(
        &options,
        &crate::rpc::js::name("delaySeconds"),
        &JsValue::from(delay_s),
    );
    settle(message, "retry", &Array::of1(&options));
}

/// The delay before a message whose claim failed is delivered again: doubling per attempt.
fn retry_delay(attempts: u32) -> u32 {
    1u32.checked_shl(attempts.saturating_sub(1))
        .unwrap_or(MAX_RETRY_DELAY_S)
        .min(MAX_RETRY_DELAY_S)
}

/// One batch: decode, claim, fetch, acknowledge.
async fn consume(batch: &JsValue, env: Env) {
    let started = now_ms();
    let messages = get(batch, "messages")
        .dyn_into::<Array>()
        .unwrap_or_default();
    let mut taken = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if i >= MAX_JOBS_PER_CALL {
            // Beyond the connections one invocation may hold open: the next batch takes it.
            retry(&message, 0);
            continue;
        }
        let attempts = get(&message, "attempts").as_f64().unwrap_or(1.0).max(1.0) as u32;
        match crate::rpc::from_js_value::<LongJob>(get(&message, "body")) {
            Ok(long) if long.v == LONG_JOB_VERSION => taken.push(Taken {
                message,
                long,
                attempts,
            }),
            Ok(long) => {
                refusal::refused(
                    CONSUMER,
                    &format!("job {}", long.job.id),
                    &format!(
                        "message version {} (this build reads {LONG_JOB_VERSION}); acknowledged \
                         unfetched, the origin's backstop settles it",
                        long.v
                    ),
                );
                ack(&message);
            }
            Err(e) => {
                refusal::refused(
                    CONSUMER,
                    "a message",
                    &format!("not a LongJob ({e}); acknowledged, never retried"),
                );
                ack(&message);
            }
        }
    }
    // One claim call per origin.
    let mut by_origin: Vec<(OriginRef, Vec<Taken>)> = Vec::new();
    for t in taken {
        match by_origin
            .iter_mut()
            .find(|(o, group)| *o == t.long.job.origin && group.len() < MAX_CLAIMS_PER_CALL)
        {
            Some((_, group)) => group.push(t),
            None => by_origin.push((t.long.job.origin.clone(), vec![t])),
        }
    }
    let claims = by_origin
        .into_iter()
        .map(|(origin, group)| claim(&env, origin, group));
    let claimed: Vec<Taken> = concurrent::all(claims, usize::MAX)
        .await
        .into_iter()
        .flatten()
        .collect();
    if claimed.is_empty() {
        return;
    }
    let (jobs, messages): (Vec<_>, Vec<_>) =
        claimed.into_iter().map(|t| (t.long.job, t.message)).unzip();
    let held = fetch::shares(&jobs);
    fetch::run(&env, CONSUMER, jobs, held, started, &Budget::QUEUE).await;
    for message in &messages {
        ack(message);
    }
}

/// Claims `group`'s jobs from their origin; returns those to fetch (with their bodies), having
/// acknowledged or retried the others.
async fn claim(env: &Env, origin: OriginRef, group: Vec<Taken>) -> Vec<Taken> {
    let requests: Vec<ClaimRequest> = group
        .iter()
        .map(|t| ClaimRequest {
            id: t.long.job.id.clone(),
            token: t.long.job.token.clone(),
            attempts: t.attempts,
            want_body: t.long.body_at_origin.is_some(),
        })
        .collect();
    let answer = match OriginClient::from_id(env, &origin.binding, &origin.id) {
        Ok(client) => client.claim(requests).await,
        Err(e) => Err(CallError::Rpc(e)),
    };
    let answers = match answer {
        Ok(answers) if answers.len() == group.len() => answers,
        other => {
            let why = match other {
                Ok(a) => format!("{} answers for {} claims", a.len(), group.len()),
                Err(e) => e.to_string(),
            };
            for t in &group {
                log_error(&format!(
                    "proxy-fetch {}: claim failed ({why}); the message comes again",
                    t.long.job.id
                ));
                retry(&t.message, retry_delay(t.attempts));
            }
            return Vec::new();
        }
    };
    let mut fetch = Vec::new();
    for (mut t, answer) in group.into_iter().zip(answers) {
        match answer {
            Ok(Claim::Fetch { body }) => {
                if t.long.body_at_origin.is_some() {
                    t.long.job.request.body = body;
                }
                fetch.push(t);
            }
            Ok(Claim::Done | Claim::InFlight | Claim::Refused) => ack(&t.message),
            Err(e) if e.kind == FORBIDDEN => {
                log_error(&format!(
                    "proxy-fetch {}: the origin refused the message's token: {e}",
                    t.long.job.id
                ));
                ack(&t.message);
            }
            Err(e) if e.kind == super::protocol::RETRY => {
                log_error(&format!(
                    "proxy-fetch {}: claim failed ({e}); the message comes again",
                    t.long.job.id
                ));
                retry(&t.message, retry_delay(t.attempts));
            }
            Err(e) => {
                log_error(&format!(
                    "proxy-fetch {}: the origin refused the claim ({e}); acknowledged, the \
                     origin's backstop settles it",
                    t.long.job.id
                ));
                ack(&t.message);
            }
        }
    }
    fetch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_claim_comes_again_after_a_doubling_delay_up_to_a_minute() {
        assert_eq!(retry_delay(1), 1);
        assert_eq!(retry_delay(2), 2);
        assert_eq!(retry_delay(4), 8);
        assert_eq!(retry_delay(7), 60);
        assert_eq!(retry_delay(100), 60);
        assert_eq!(retry_delay(0), 1);
    }
}
