//! The origin's alarm: the backstop of the direct flow and the last resort of both. Requests
//! past their due time are dispatched again (direct flow: idempotent ones, within their max
//! age; orchestrated: queued again, which the orchestrator ignores when it has them) or get a
//! final `Backstop` error; then an origin's own alarm runs.

use js_sys::Promise;
use wasm_bindgen::JsValue;

use super::dispatch::{batches, dispatch_all, due_after, execute, held_queued, recover, NotTaken};
use super::ledger::{self, body_key, PendingRecord, RowPages};
use super::receive::deliver_error;
use super::writer::{change_from, find};
use super::ProxyFetchOrigin;
use crate::rpc::{log_error, RpcError};
use crate::system::concurrent;
use crate::system::protocol::{FetchJob, MAX_DISPATCHES};
use crate::system::{now_ms, FetchErrorKind, ProxyFetchError};

/// How long the sweep waits before trying again what it could not do now.
const SWEEP_RETRY_MS: f64 = 5_000.0;

/// The jobs the sweep sends again go once this many are collected (6 calls of 6), or once
/// their bodies take [`RESEND_BYTES`]; at most [`RESEND_CALLS`] calls at a time.
const RESEND_JOBS: usize = 36;
const RESEND_BYTES: usize = 16 * 1024 * 1024;
const RESEND_CALLS: usize = 6;

/// The origin's alarm as the generated export calls it, with the origin it borrowed.
pub(crate) fn serve_alarm<O: ProxyFetchOrigin>(origin: Result<&'static O, RpcError>) -> Promise {
    let origin = match origin {
        Ok(origin) => origin,
        Err(e) => return Promise::reject(&js_sys::Error::new(&e.to_string())),
    };
    let alarm = async move {
        alarm(origin)
            .await
            .map(|()| JsValue::UNDEFINED)
            .map_err(|e| js_sys::Error::new(&e.to_string()).into())
    };
    // Built with `panic = "unwind"` (docs/panics.md), a panic fails this alarm run only.
    #[cfg(all(target_arch = "wasm32", panic = "unwind"))]
    let alarm = crate::rpc::serve::unwind::caught(alarm, |panic| {
        Err(js_sys::Error::new(&format!("proxy-fetch's alarm panicked: {panic}")).into())
    });
    wasm_bindgen_futures::future_to_promise(alarm)
}

/// The origin's alarm: requests past their due time are dispatched again (direct flow,
/// idempotent, within their max age) or get a final `Backstop` error; then, for an origin
/// with an alarm of its own, that alarm runs.
pub async fn alarm<O: ProxyFetchOrigin>(origin: &O) -> worker::Result<()> {
    let object = ledger::instance(origin.state());
    ledger::set_alarm(&object, None);
    let swept = sweep(origin).await;
    let own = if O::OWN_ALARM {
        Some(worker::DurableObject::alarm(origin).await)
    } else {
        None
    };
    match swept {
        Ok(Some(next)) => ledger::arm(origin.state(), O::OWN_ALARM, next).await?,
        Ok(None) => {}
        Err(e) => {
            log_error(&format!("proxy-fetch: the origin's sweep failed: {e}"));
            ledger::arm(origin.state(), O::OWN_ALARM, now_ms() + SWEEP_RETRY_MS).await?;
        }
    }
    match own {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Acts on every overdue request; returns the next due time, if any request is left.
async fn sweep<O: ProxyFetchOrigin>(origin: &O) -> Result<Option<f64>, ProxyFetchError> {
    let now = now_ms();
    for (id, refused) in ledger::take_unsent(origin.state()) {
        unsent(origin, &id, refused, now).await;
    }
    let mut next: Option<f64> = None;
    let mut later = |t: f64| next = Some(next.map_or(t, |n: f64| n.min(t)));
    // Jobs counted and stored as sent: sent before the sweep returns, whatever ends it.
    let mut resends: Vec<(Resend, FetchJob)> = Vec::new();
    let mut failed = None;
    let mut pages = RowPages::new();
    loop {
        let page = match pages.next(origin.state()).await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                failed = Some(ProxyFetchError::storage(e));
                break;
            }
        };
        for (key, row) in page {
            let row = match row {
                Ok(row) => row,
                Err(value) => {
                    // Said once: the row leaves the ledger, so no later sweep meets it.
                    match ledger::set_aside(origin.state(), &key, value).await {
                        Ok(aside) => log_error(&format!(
                            "proxy-fetch: ledger row {key} cannot be decoded: its requests get \
                             no result; moved to {aside}"
                        )),
                        Err(e) => log_error(&format!(
                            "proxy-fetch: ledger row {key} cannot be decoded, and was not moved \
                             aside ({e}); the next sweep tries again"
                        )),
                    }
                    continue;
                }
            };
            for (id, record) in row.into_records() {
                if record.due_ms > now {
                    later(record.due_ms);
                    continue;
                }
                if let Some(due) = overdue(origin, &id, record, now, &mut resends).await {
                    later(due);
                }
                let bytes: usize = resends
                    .iter()
                    .map(|(_, job)| job.request.body.as_ref().map_or(0, |b| b.len()))
                    .sum();
                if resends.len() >= RESEND_JOBS || bytes >= RESEND_BYTES {
                    let sent = resend_all(origin, std::mem::take(&mut resends), now).await;
                    sent.into_iter().flatten().for_each(&mut later);
                }
            }
        }
    }
    let sent = resend_all(origin, resends, now).await;
    sent.into_iter().flatten().for_each(&mut later);
    match failed {
        Some(e) => Err(e),
        None => Ok(next),
    }
}

/// A direct-flow job the sweep sends again, counted and stored as sent ([`overdue`]).
struct Resend {
    id: String,
    /// The record as stored, counting this dispatch.
    record: PendingRecord,
    /// Its dispatch count before.
    sent_before: u32,
}

/// Sends the jobs of `resends` to their executors together, in calls of up to 6 side by side
/// (a busy executor holds the alarm for one round of the origin's tries, not one per job),
/// and acts on each outcome as for a lone job; returns when to look at each request again.
async fn resend_all<O: ProxyFetchOrigin>(
    origin: &O,
    resends: Vec<(Resend, FetchJob)>,
    now: f64,
) -> Vec<Option<f64>> {
    let (resends, jobs): (Vec<Resend>, Vec<FetchJob>) = resends.into_iter().unzip();
    let (calls, call_of) = batches(jobs);
    let env = origin.env();
    let sent = concurrent::all(
        calls.into_iter().map(|jobs| execute(env, jobs)),
        RESEND_CALLS,
    )
    .await;
    let each = resends.into_iter().zip(call_of).map(|(resend, call)| {
        let outcome = sent.get(call).cloned().unwrap_or_else(|| {
            Err(NotTaken::Refused(ProxyFetchError::storage(
                "the job was not sent",
            )))
        });
        resent(origin, resend, outcome, now)
    });
    // Side by side: the records they restore share the writer's rounds.
    concurrent::all(each, usize::MAX).await
}

/// Acts on the outcome of a job sent again: returns when to look at its request again.
async fn resent<O: ProxyFetchOrigin>(
    origin: &O,
    resend: Resend,
    outcome: Result<(), NotTaken>,
    now: f64,
) -> Option<f64> {
    let Resend {
        id,
        mut record,
        sent_before,
    } = resend;
    let due = record.due_ms;
    let e = match outcome {
        Ok(()) => return Some(due),
        // It may have reached the executor, and may not be sent twice: counted, as the
        // executor's loss would be.
        Err(NotTaken::Unknown(e)) if !record.job.may_resend() => {
            log_error(&format!(
                "proxy-fetch {id}: dispatch again failed without the executor's answer ({e}); \
                 it may have been sent, so it is not sent again"
            ));
            return Some(due);
        }
        Err(not_taken) => not_taken.into_error(),
    };
    log_error(&format!("proxy-fetch {id}: dispatch again failed: {e}"));
    // A dispatch the executor did not take (or one of a request that may be sent twice) does
    // not count.
    let known = record.clone();
    record.dispatches = sent_before;
    record.due_ms = now + SWEEP_RETRY_MS;
    if let Err(e) = change_from(origin, &id, &known, record).await {
        log_error(&format!(
            "proxy-fetch {id}: its dispatch count was not restored: {e}"
        ));
    }
    Some(now + SWEEP_RETRY_MS)
}

/// A request whose job the executor did not take after its start was answered
/// (`dispatch::send_unawaited`): refused for a binding its worker lacks, its handler gets the
/// refusal; otherwise its dispatch does not count, and it is due now (the sweep that follows
/// sends it again: the executor took nothing, or it may be sent twice).
async fn unsent<O: ProxyFetchOrigin>(origin: &O, id: &str, refused: Option<String>, now: f64) {
    let record = match find(origin, id).await {
        Ok(Some(record)) => record,
        // Its result came after all, or its start failed.
        Ok(None) => return,
        Err(e) => {
            log_error(&format!(
                "proxy-fetch {id}: not read by the sweep ({e}); it is sent again at its due time"
            ));
            return;
        }
    };
    let done = match refused {
        Some(why) => deliver_error(origin, id, FetchErrorKind::Rejected, why, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => {
            let mut again = record.clone();
            again.dispatches = again.dispatches.saturating_sub(1);
            again.due_ms = now;
            // Not made when the record changed meanwhile: only a delivery changes it, so the
            // executor had the job after all.
            change_from(origin, id, &record, again).await.map(|_| ())
        }
    };
    if let Err(e) = done {
        log_error(&format!(
            "proxy-fetch {id}: the executor did not take it, and the sweep could not act on it \
             now ({e}); the backstop does at its due time"
        ));
    }
}

/// Stores `record` if the record stored is still `known` (then `known` becomes it).
async fn store<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    known: &mut PendingRecord,
    record: &PendingRecord,
) -> Result<bool, String> {
    let made = change_from(origin, id, known, record.clone()).await?;
    if made {
        *known = record.clone();
    }
    Ok(made)
}

/// Acts on one overdue request; returns when to look at it again, if it stays. A direct-flow
/// job to send again is counted and stored as sent, and added to `resends` ([`resend_all`]).
async fn overdue<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    listed: PendingRecord,
    now: f64,
    resends: &mut Vec<(Resend, FetchJob)>,
) -> Option<f64> {
    // The record as it is now, not as the page listed it: a delivery, a claim or another
    // change may have come while the sweep acted on the requests before it.
    let mut record = match find(origin, id).await {
        Ok(Some(record)) => record,
        Ok(None) => return None,
        Err(e) => {
            log_error(&format!("proxy-fetch {id}: not read by the sweep: {e}"));
            return Some(now + SWEEP_RETRY_MS);
        }
    };
    if record.due_ms > now {
        return Some(record.due_ms);
    }
    drop(listed);
    // What is stored, as far as the sweep knows: each change it makes is made only if no other
    // change overtook it (then the request is looked at again by a later sweep).
    let mut known = record.clone();
    let options = &record.job.options;
    let age = now - record.created_ms;
    let budget = due_after(options);
    let orchestrated = record.job.queue.is_some();
    let redispatch = if orchestrated {
        // The orchestrator retries and re-dispatches; it is asked by the request's ticket,
        // and the job is shipped again only when it does not hold it (a start a crash cut
        // short), and only if it may be sent again.
        age + budget < options.max_age() as f64
    } else if options.is_long() {
        // Long path: a job no consumer claimed was never fetched (lost in the queue), so any
        // method goes again; a claimed one only if it may be sent twice.
        (record.claims == 0 || record.job.may_resend())
            && record.dispatches < MAX_DISPATCHES
            && age + budget < options.max_age() as f64
    } else {
        // Its executor was lost: the backstop's one rule, which the orchestrator follows too.
        record.job.dispatch_again(record.dispatches, age, budget)
    };
    let mut missing = None;
    if redispatch {
        let sent_before = record.dispatches;
        record.due_ms = now + budget;
        let due = record.due_ms;
        if orchestrated {
            match store(origin, id, &mut known, &record).await {
                Ok(true) => {}
                Ok(false) => return Some(now + SWEEP_RETRY_MS),
                Err(e) => {
                    log_error(&format!("proxy-fetch {id}: not asked after: {e}"));
                    return Some(now + SWEEP_RETRY_MS);
                }
            }
            match held_queued(origin.env(), &record.job).await {
                Ok(true) => return Some(due),
                Ok(false) => {}
                Err(e) => {
                    log_error(&format!(
                        "proxy-fetch {id}: the orchestrator was not asked after it: {e}"
                    ));
                    return Some(now + SWEEP_RETRY_MS);
                }
            }
        }
        if !orchestrated || record.job.may_resend() {
            match job_with_body(origin, id, &record).await {
                Ok(Some(job)) => {
                    let sent = if orchestrated {
                        recover(origin.env(), job).await
                    } else {
                        // Counted once the executor acknowledged it; stored first, so a
                        // result racing the send finds the record.
                        record.dispatches += 1;
                        match store(origin, id, &mut known, &record).await {
                            Ok(true) => {}
                            Ok(false) => return Some(now + SWEEP_RETRY_MS),
                            Err(e) => {
                                log_error(&format!("proxy-fetch {id}: not dispatched again: {e}"));
                                return Some(now + SWEEP_RETRY_MS);
                            }
                        }
                        if !options.is_long() {
                            let resend = Resend {
                                id: id.to_owned(),
                                record,
                                sent_before,
                            };
                            resends.push((resend, job));
                            return None;
                        }
                        dispatch_all(origin.env(), vec![job]).await.map(|()| true)
                    };
                    match sent {
                        Ok(true) => return Some(due),
                        // The orchestrator does not have it, and it may not be sent again:
                        // the handler gets `Backstop` below.
                        Ok(false) => {}
                        Err(e) => {
                            log_error(&format!("proxy-fetch {id}: dispatch again failed: {e}"));
                            // A dispatch the executor did not take (or one of a request that
                            // may be sent twice) does not count.
                            record.dispatches = sent_before;
                            record.due_ms = now + SWEEP_RETRY_MS;
                            if let Err(e) = store(origin, id, &mut known, &record).await {
                                log_error(&format!(
                                    "proxy-fetch {id}: its dispatch count was not restored: {e}"
                                ));
                            }
                            return Some(now + SWEEP_RETRY_MS);
                        }
                    }
                }
                Ok(None) => missing = Some("its request body is missing from storage"),
                Err(e) => {
                    log_error(&format!(
                        "proxy-fetch {id}: its body was not read ({e}); not sent again yet"
                    ));
                    return Some(now + SWEEP_RETRY_MS);
                }
            }
        }
    }
    let mut message = record.job.backstop_message(age, "the start");
    if let Some(why) = missing {
        // It cannot be sent again: no use waiting for its max age.
        log_error(&format!(
            "proxy-fetch {id}: {why}; its handler gets Backstop now"
        ));
        message = format!("{message}; {why}, so it cannot be sent again");
    }
    match deliver_error(origin, id, FetchErrorKind::Backstop, message, true).await {
        Ok(_) => None,
        Err(e) => {
            log_error(&format!("proxy-fetch {id}: backstop not delivered: {e}"));
            Some(now + SWEEP_RETRY_MS)
        }
    }
}

/// The record's job with its body: read from its own key when it is kept apart (the one place
/// such a body is read). `None` when that key is gone.
async fn job_with_body<O: ProxyFetchOrigin>(
    origin: &O,
    id: &str,
    record: &PendingRecord,
) -> worker::Result<Option<FetchJob>> {
    let mut job = record.job.clone();
    if record.body_apart {
        match origin
            .state()
            .storage()
            .get::<serde_bytes::ByteBuf>(&body_key(id))
            .await?
        {
            Some(body) => job.request.body = Some(body),
            None => return Ok(None),
        }
    }
    Ok(Some(job))
}
